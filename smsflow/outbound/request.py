"""An outbound SMS request as the API accepts it: checked field by field, every problem named by its path.

- `to`: the destination, a number that reads as E.164 (national forms are refused: there is no region to
  read them in).
- `from`: either a number of the owner's holdings (E.164, compared normalised) or an alphanumeric sender of
  1-11 GSM characters with at least one letter (3GPP TS 23.040's alphanumeric TP-OA holds 11 septets; all
  digits would read as a number on the handset) that the owner holds (`sender_ids`).
- `text`: must encode in at most `MAX_SEGMENTS` parts (see encode.py).
- `callback_url`: optional http(s) URL; the webhook engine checks the address (SSRF rules) when it calls.
- `validity_s`: 60 s to 72 h, default 48 h: past it the carrier drops the message and the status is expired.
- `priority`: otp (first), transactional, bulk.
- `idempotency_key`: the API's Idempotency-Key header, 1-128 visible ASCII characters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from smsflow.numbers import normalize_number
from smsflow.outbound.encode import EncodeError, encode_message
from smsflow.sms import gsm0338

Priority = Literal["otp", "transactional", "bulk"]
PRIORITY_RANK: dict[str, int] = {"otp": 0, "transactional": 1, "bulk": 2}
"""Lower goes first: an OTP is useless a minute late, a newsletter is not."""

SenderKind = Literal["number", "alphanumeric"]

MIN_VALIDITY_S = 60
MAX_VALIDITY_S = 72 * 3600
DEFAULT_VALIDITY_S = 48 * 3600
ALPHANUMERIC_MAX = 11
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,128}")
_LETTER = re.compile(r"[^\W\d_]")


@dataclass(frozen=True)
class FieldError:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class OutboundRequest:
    message_id: str
    owner: str
    to: str
    """E.164."""
    sender: str
    """E.164 for a number, verbatim for an alphanumeric sender."""
    sender_kind: SenderKind
    text: str
    callback_url: str | None
    validity_s: int
    priority: Priority
    idempotency_key: str | None
    accepted_at_ms: int

    @property
    def expires_at_ms(self) -> int:
        return self.accepted_at_ms + self.validity_s * 1000


def read_request(
    body: Mapping[str, object],
    *,
    message_id: str,
    owner: str,
    holdings: Collection[str] | Callable[[str], bool],
    sender_ids: Callable[[str], bool] | None,
    now_ms: int,
    idempotency_key: str | None = None,
) -> OutboundRequest | list[FieldError]:
    """The request, or every field error found (not just the first, so a client fixes them in one go).
    `holdings` are the E.164 numbers the owner may send from, or a test of an E.164 number (a holding
    of prefixes too: `Holding.holds_number`); `sender_ids` tests an alphanumeric sender
    (`Holding.holds_sender_id`), None lets any through (`api.alphanumeric_senders: any`)."""
    errors: list[FieldError] = []
    known = {"to", "from", "text", "callback_url", "validity_s", "priority"}
    errors += [FieldError(k, "unknown field") for k in body if k not in known]

    to = _destination(body.get("to"), errors)
    sender, sender_kind = _sender(body.get("from"), holdings, sender_ids, errors)
    text = _text(body.get("text"), errors)
    callback = _callback(body.get("callback_url"), errors)
    validity = _validity(body.get("validity_s", DEFAULT_VALIDITY_S), errors)
    priority = body.get("priority", "transactional")
    if priority not in PRIORITY_RANK:
        errors.append(FieldError("priority", f"must be one of {', '.join(PRIORITY_RANK)}"))
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        errors.append(FieldError("Idempotency-Key", "must be 1-128 visible ASCII characters"))
    if errors:
        return errors
    assert to is not None and sender is not None and sender_kind is not None and text is not None
    return OutboundRequest(
        message_id=message_id,
        owner=owner,
        to=to,
        sender=sender,
        sender_kind=sender_kind,
        text=text,
        callback_url=callback,
        validity_s=validity,
        priority=priority,  # type: ignore[arg-type]  # checked against PRIORITY_RANK above
        idempotency_key=idempotency_key,
        accepted_at_ms=now_ms,
    )


def _destination(value: object, errors: list[FieldError]) -> str | None:
    if not isinstance(value, str) or not value.strip():
        errors.append(FieldError("to", "required: the destination number in E.164 (+85291234567)"))
        return None
    if not value.strip().startswith("+"):
        errors.append(
            FieldError("to", f"{value!r} is not in E.164: it must start with + and the country code")
        )
        return None
    e164 = normalize_number(value, ton=1).e164
    if e164 is None:
        errors.append(FieldError("to", f"{value!r} is not a valid E.164 number"))
    return e164


def _sender(
    value: object,
    holdings: Collection[str] | Callable[[str], bool],
    sender_ids: Callable[[str], bool] | None,
    errors: list[FieldError],
) -> tuple[str | None, SenderKind | None]:
    if not isinstance(value, str) or not value.strip():
        errors.append(FieldError("from", "required: a number or an alphanumeric sender ID you hold"))
        return None, None
    value = value.strip()
    if _LETTER.search(value):
        if len(value) > ALPHANUMERIC_MAX:
            errors.append(
                FieldError("from", f"an alphanumeric sender has at most {ALPHANUMERIC_MAX} characters")
            )
        elif not gsm0338.is_gsm7(value) or gsm0338.septet_count(value) != len(value):
            errors.append(
                FieldError("from", "an alphanumeric sender uses GSM default-alphabet characters only")
            )
        elif sender_ids is not None and not sender_ids(value):
            errors.append(
                FieldError(
                    "from",
                    f"{value!r} is not one of your sender IDs (an operator adds it to your holding: "
                    "sender_ids)",
                )
            )
        else:
            return value, "alphanumeric"
        return None, None
    e164 = normalize_number(value, ton=1).e164
    if e164 is None:
        errors.append(FieldError("from", f"{value!r} is neither an E.164 number nor an alphanumeric sender"))
        return None, None
    held = (
        holdings(e164) if callable(holdings) else e164 in {normalize_number(h, ton=1).e164 for h in holdings}
    )
    if not held:
        errors.append(FieldError("from", f"{e164} is not one of your numbers"))
        return None, None
    return e164, "number"


def _text(value: object, errors: list[FieldError]) -> str | None:
    if not isinstance(value, str):
        errors.append(FieldError("text", "required: the message text"))
        return None
    try:
        encode_message(value, ref=0)
    except EncodeError as exc:
        errors.append(FieldError("text", exc.reason))
        return None
    return value


def _callback(value: object, errors: list[FieldError]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append(FieldError("callback_url", "must be a URL string"))
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        errors.append(FieldError("callback_url", "must be an absolute http(s) URL"))
        return None
    return value


def _validity(value: object, errors: list[FieldError]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append(FieldError("validity_s", "must be a whole number of seconds"))
        return DEFAULT_VALIDITY_S
    if not MIN_VALIDITY_S <= value <= MAX_VALIDITY_S:
        errors.append(FieldError("validity_s", f"must be {MIN_VALIDITY_S}-{MAX_VALIDITY_S} seconds"))
    return value
