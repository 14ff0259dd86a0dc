"""Delivery receipts that arrive as deliver_sm/data_sm, told apart from customer SMS.

A receipt is any deliver_sm whose esm_class message-type bits (``esm_class & 0x3C``) are non-zero — not
only 0x04 — or which carries ``receipted_message_id``. Its fields come from the TLVs when present and
from the de-facto ``id:… sub:… dlvrd:… submit date:… done date:… stat:… err:… text:…`` text otherwise.

Whatever a carrier writes, parsing never raises and every field fits the DeliveryReceipt schema:
counters an Avro int cannot hold are None (``smsflow.avro_range``), and the message id is cut to
``MAX_MESSAGE_ID_CHARS``. The cap is SMPP's own: a message_id (submit_sm_resp, receipted_message_id)
is a C-Octet String of at most 65 octets, 64 characters and the NUL. A longer id cannot be the id of
an MT we sent, so nothing could match it either way; it is kept cut rather than quarantined because
the receipt's state and error still tell operations what the carrier reports, and the id stays a
bounded Kafka key.
"""

from __future__ import annotations

import re

from smsflow.avro_range import read_count
from smsflow.records import ReceiptReading

MAX_MESSAGE_ID_CHARS = 64

MESSAGE_STATES = {
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
    9: "SKIPPED",
}
_STATE_NAMES = set(MESSAGE_STATES.values()) | {"DELIVERED", "UNDELIVERABLE", "REJECTED", "ACCEPTED", "FAILED"}

_HEX = re.compile(r"[0-9A-Fa-f]+")
_HEX_LETTER = re.compile(r"[A-Fa-f]")
_FIELD = re.compile(r"(?P<k>id|sub|dlvrd|submit date|done date|stat|err|text)\s*:\s*", re.IGNORECASE)


def is_receipt(esm_class: int, has_receipted_id: bool = False) -> bool:
    return bool(esm_class & 0x3C) or has_receipted_id


def parse_receipt_text(text: str) -> dict[str, str]:
    """Split ``id:X sub:001 ... text:...`` into fields; ``text`` runs to the end (it may contain colons)."""
    out: dict[str, str] = {}
    matches = list(_FIELD.finditer(text))
    for i, m in enumerate(matches):
        key = m.group("k").lower()
        end = len(text) if key == "text" or i + 1 == len(matches) else matches[i + 1].start()
        out[key] = text[m.end() : end].strip()
        if key == "text":
            break
    return out


def _decimal_of(message_id: str) -> str | None:
    """Carriers send the MT id in hex in one place and decimal in another; give the decimal reading of a
    hex id (only when it is unambiguously hex, i.e. has a-f digits). Ids are capped at 64 characters,
    so the decimal has at most 78 digits: far from Python's int-to-str limit."""
    if len(message_id) > MAX_MESSAGE_ID_CHARS:
        return None
    if _HEX.fullmatch(message_id) and _HEX_LETTER.search(message_id):
        return str(int(message_id, 16))
    return None


def parse_receipt(
    text: str, receipted_message_id: str | None, message_state: int | None, network_error_code: bytes | None
) -> ReceiptReading:
    """The receipt's reading: ``receipted_message_id``, ``message_state`` and ``network_error_code`` (TLVs)
    win over the text's ``id:``, ``stat:`` and ``err:``."""
    fields = parse_receipt_text(text) if text else {}
    mid = (receipted_message_id or fields.get("id") or "").strip()[:MAX_MESSAGE_ID_CHARS]
    state = MESSAGE_STATES.get(message_state or 0) if message_state else None
    if state is None:
        stat = fields.get("stat", "").upper()
        state = stat if stat in _STATE_NAMES else ("UNKNOWN" if not stat else stat[:16])
    err = fields.get("err")
    if err is None and network_error_code and len(network_error_code) == 3:
        err = f"{network_error_code[0]}:{int.from_bytes(network_error_code[1:], 'big')}"
    return {
        "message_id": mid,
        "message_id_decimal": _decimal_of(mid) if mid else None,
        "state": state,
        "error_code": err,
        "submitted": read_count(fields.get("sub")),
        "delivered": read_count(fields.get("dlvrd")),
        "submit_date": fields.get("submit date"),
        "done_date": fields.get("done date"),
        "text": fields.get("text"),
    }
