"""The records the outbound stages hand each other, as JSON on Kafka.

- `Submission` on `sms.outbound.submit.v1`, keyed by carrier id: one segment, encoded and ready for
  submit_sm, with the ordered routes to try (the double list's answer when the worker chose). The connector
  that owns the carrier's binds submits it; when that route is used up it writes the same submission again,
  keyed by the next route's carrier (`handed_over`), so "same route, then the secondary list" needs no
  second decision.
- Ledger entries on `sms.outbound.ledger.v1`, keyed by message id (so the worker's status table is
  co-partitioned with it): the message's `Plan` (written by the worker, before any submission), the
  submission ledger's `Intent` (acknowledged before the submit_sm goes out) and `Outcome` (after its resp),
  a `GiveUp` when every route is used up, and each `ReceiptMatch` (a receipt correlated to a segment).
  The status of a message is the fold of its entries (`smsflow.outbound.status`).

JSON, like the other internal ledgers (sms.webhook.attempts.v1): these records are ours alone; the
customer-facing contracts (requests, statuses) are Avro.
"""

from __future__ import annotations

import base64
import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import orjson

from smsflow.outbound.ledger import Intent, Outcome

SUBMIT_TOPIC = "sms.outbound.submit.v1"
# The customer a submission is for, as a header of its record on the submit topic (not in the record: a
# connector that predates it reads the record unchanged): the connector shares a carrier fairly between them.
OWNER_HEADER = "smsflow-owner"
LEDGER_TOPIC = "sms.outbound.ledger.v1"
UNMATCHED_RECEIPTS_TOPIC = "sms.outbound.receipts.unmatched.v1"
SUBMISSION_FORMAT = "smsflow.submission/1"
LEDGER_FORMAT = "smsflow.outbound-ledger/1"


@dataclass(frozen=True)
class Candidate:
    route_id: str
    carrier: str


@dataclass(frozen=True)
class Submission:
    message_id: str
    seq: int
    parts: int
    destination: str
    sender: str
    sender_kind: str
    data_coding: int
    esm_class: int
    short_message: bytes
    priority: str
    expires_at_ms: int
    ref: int | None
    candidates: tuple[Candidate, ...]
    position: int = 0
    """Which candidate this copy of the submission is for."""

    @property
    def route(self) -> Candidate:
        return self.candidates[self.position]

    def handed_over(self) -> Submission | None:
        """The submission for the next route, or None when every route was tried."""
        if self.position + 1 >= len(self.candidates):
            return None
        return replace(self, position=self.position + 1)

    def to_json(self) -> bytes:
        doc = asdict(self)
        doc["short_message"] = base64.b64encode(self.short_message).decode("ascii")
        doc["format"] = SUBMISSION_FORMAT
        return orjson.dumps(doc)

    @classmethod
    def from_json(cls, raw: bytes) -> Submission:
        """The submission a record holds, or ValueError naming the first field that is missing, of the
        wrong type or outside what a submit_sm can carry: the connector must never start on a record it
        cannot finish (an exception there would hold its partition's commit point)."""
        doc = orjson.loads(raw)
        if not isinstance(doc, dict) or doc.pop("format", None) != SUBMISSION_FORMAT:
            raise ValueError(f"not a {SUBMISSION_FORMAT} record")
        return cls(**_checked_submission(doc))


_PRIORITIES = frozenset(("otp", "transactional", "bulk"))  # smsflow.outbound.request.PRIORITY_RANK
_DIGITS = re.compile(r"\+?[0-9]{1,20}")
_LATIN1 = re.compile(r"[\x20-\x7e\xa0-\xff]{1,20}")  # our PDU encoder writes C-Octet Strings as Latin-1
# every carrier that may submit is a candidate (streams/outbound.py)
MAX_CANDIDATES = 1024
# datetime's last millisecond (9999-12-31T23:59:59.999Z): the validity_period is written from it
_MAX_TIME_MS = 253_402_300_799_999


def _int(doc: dict[str, Any], name: str, low: int, high: int) -> int:
    value = doc.get(name)
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{name}: an integer from {low} to {high} required, got {value!r:.40}")
    return value


def _str(doc: dict[str, Any], name: str, pattern: re.Pattern[str] | None = None, most: int = 128) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= most:
        raise ValueError(f"{name}: a string of 1 to {most} characters required, got {value!r:.40}")
    if pattern is not None and pattern.fullmatch(value) is None:
        raise ValueError(f"{name}: {value!r:.40} is not what a submit_sm can carry")
    return value


def _checked_submission(doc: dict[str, Any]) -> dict[str, Any]:
    """The fields of a submit-topic record, typed and within SMPP 3.4's limits, or ValueError naming one.
    Fields this version does not know are left out (a newer worker's record is still submitted, as a newer
    reader of an Avro record does; before, such a record raised and was lost)."""
    out: dict[str, Any] = {"message_id": _str(doc, "message_id")}
    out["parts"] = _int(doc, "parts", 1, 255)
    out["seq"] = _int(doc, "seq", 1, out["parts"])
    out["destination"] = _str(doc, "destination", _DIGITS, 21)
    out["sender_kind"] = doc.get("sender_kind")
    if out["sender_kind"] not in ("number", "alphanumeric"):
        raise ValueError(f"sender_kind: number or alphanumeric required, got {out['sender_kind']!r:.40}")
    pattern = _LATIN1 if out["sender_kind"] == "alphanumeric" else _DIGITS
    out["sender"] = _str(doc, "sender", pattern, 21)
    out["data_coding"] = _int(doc, "data_coding", 0, 255)
    out["esm_class"] = _int(doc, "esm_class", 0, 255)
    body = doc.get("short_message")
    try:
        out["short_message"] = base64.b64decode(body, validate=True)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError("short_message: base64 required") from None
    if len(out["short_message"]) > 254:
        raise ValueError(f"short_message: {len(out['short_message'])} octets; a submit_sm carries 254")
    out["priority"] = doc.get("priority")
    if out["priority"] not in _PRIORITIES:
        raise ValueError(f"priority: one of otp, transactional, bulk required, got {out['priority']!r:.40}")
    out["expires_at_ms"] = _int(doc, "expires_at_ms", 0, _MAX_TIME_MS)
    out["ref"] = None if doc.get("ref") is None else _int(doc, "ref", 0, 65_535)
    routes = doc.get("candidates")
    if not isinstance(routes, list) or not 0 < len(routes) <= MAX_CANDIDATES:
        raise ValueError(f"candidates: a list of 1 to {MAX_CANDIDATES} routes required")
    candidates = []
    for i, c in enumerate(routes):
        if not isinstance(c, dict) or set(c) != {"route_id", "carrier"}:
            raise ValueError(f"candidates[{i}]: route_id and carrier required")
        candidates.append(Candidate(_str(c, "route_id"), _str(c, "carrier")))
    out["candidates"] = tuple(candidates)
    out["position"] = _int(doc, "position", 0, len(candidates) - 1) if "position" in doc else 0
    return out


def submission_identity(raw: bytes) -> tuple[str, int] | None:
    """The message id and segment number of a submit-topic record that does not read as a submission, when
    those two do: the segment can then be given up (its customer told) rather than only skipped."""
    try:
        doc = orjson.loads(raw)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    mid, seq = doc.get("message_id"), doc.get("seq")
    if isinstance(mid, str) and 0 < len(mid) <= 128 and type(seq) is int and 1 <= seq <= 255:
        return mid, seq
    return None


@dataclass(frozen=True)
class Plan:
    """What the worker made of a request: the status stage starts the message's status from it."""

    message_id: str
    owner: str
    parts: int
    expires_at_ms: int
    callback_url: str | None
    at_ms: int
    no_route: str | None = None
    """Why no route could take the message (it is rejected at once), else None."""


@dataclass(frozen=True)
class Abandoned:
    """Every route was tried for the segment: it is rejected with the last SMPP status."""

    message_id: str
    seq: int
    at_ms: int
    command_status: int
    reason: str


@dataclass(frozen=True)
class ReceiptMatch:
    message_id: str
    seq: int
    at_ms: int
    state: str
    error_code: str | None
    carrier: str
    receipt_id: str


@dataclass(frozen=True)
class Carried:
    """A submission ledger record with the carrier it went to (receipt ids are only unique per carrier)."""

    record: Intent | Outcome
    carrier: str


LedgerEntry = Plan | Carried | Abandoned | ReceiptMatch
_KINDS: dict[str, type[Any]] = {
    "plan": Plan,
    "intent": Intent,
    "outcome": Outcome,
    "giveup": Abandoned,
    "receipt": ReceiptMatch,
}
Kind = Literal["plan", "intent", "outcome", "giveup", "receipt"]


def ledger_value(entry: LedgerEntry) -> bytes:
    if isinstance(entry, Carried):
        kind = "intent" if isinstance(entry.record, Intent) else "outcome"
        doc = {**asdict(entry.record), "carrier": entry.carrier}
    else:
        kind = next(k for k, t in _KINDS.items() if isinstance(entry, t))
        doc = asdict(entry)
    # "entry", not "kind": an Outcome has a field of that name
    return orjson.dumps({"format": LEDGER_FORMAT, "entry": kind, **doc})


def read_ledger(raw: bytes) -> LedgerEntry:
    doc = orjson.loads(raw)
    if doc.pop("format", None) != LEDGER_FORMAT:
        raise ValueError(f"not a {LEDGER_FORMAT} record")
    kind = doc.pop("entry")
    if kind in ("intent", "outcome"):
        carrier = doc.pop("carrier")
        return Carried(_KINDS[kind](**doc), carrier)
    if kind not in _KINDS:
        raise ValueError(f"unknown ledger record kind {kind!r}")
    entry: LedgerEntry = _KINDS[kind](**doc)
    return entry


def owner_headers(owner: str | None) -> list[tuple[str, bytes]] | None:
    """The submit record's headers that name its customer (``OWNER_HEADER``), if known."""
    return [(OWNER_HEADER, owner.encode())] if owner else None


def owner_of(headers: Any) -> str | None:
    """The customer a submit record's headers name (confluent-kafka's list of pairs, or a dict), or None (a
    record from before the header)."""
    for name, value in headers.items() if isinstance(headers, dict) else headers or ():
        if name == OWNER_HEADER and value:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return None
