"""What makes two SMS "the same", and the sliding window in which a second copy is dropped.

Identity of an SMS (``message_fingerprint``): sender (E.164 where it is a number, else the alphanumeric
sender as sent), recipient (E.164), the text class (text vs binary) and the complete decoded text (or bytes).
Deliberately *not* part of it: the carrier, route, bind, segmentation, data_coding within a text class, the
UDH reference — those differ between a message and its copy over a second route.

Why this avoids false positives: two senders with the same OTP template differ in sender; the same sender's
new OTP differs in text; a legitimate repeat of the same text is dropped only inside the window (default
10 min, configurable), which is the trade-off every carrier-retransmission filter makes. Messages flagged
incomplete are fingerprinted with their missing-part list, so a later complete copy is not dropped.

A second, finer identity guards multipart messages: after a message completes, its parts stay in the
reassembly table (one key per part, ``smsflow/ingest/reassembly.py``) for the same window, so a late
retransmitted *segment* is dropped instead of starting a new partial message that would surface later as
"incomplete".

The window is measured in carrier time (each record's ``received_at``), not in the worker's wall clock at
processing time, so reprocessing the same records after a crash takes the same decisions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SeenEntry:
    """A message remembered in the dedup window: the value of table ``ingest-seen`` (key = fingerprint).

    ``origin``: text of the origin the message was completed under (smsflow/ingest/origin.py); ``at``: its
    carrier time in ms, the window's start; ``partition``: of sms.raw.v1, for expiry per partition. The table
    keeps the short keys it always had (``o``, ``at``, ``p``), so a restarted worker reads older entries.
    """

    origin: str
    at: int
    partition: int

    def to_table(self) -> dict[str, Any]:
        return {"o": self.origin, "at": self.at, "p": self.partition}

    @classmethod
    def from_table(cls, value: dict[str, Any]) -> SeenEntry:
        return cls(str(value.get("o", "")), int(value["at"]), int(value.get("p", -1)))


def message_fingerprint(from_id: str, to_id: str, is_binary: bool, body: str, missing: list[int]) -> str:
    h = hashlib.sha256()
    for part in (from_id, to_id, "b" if is_binary else "t", body, ",".join(map(str, missing))):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return "m:" + h.hexdigest()[:32]


def message_id(fingerprint: str, origin: str) -> str:
    """The id a message is delivered under (also its webhook-id).

    Derived from the fingerprint and the Kafka position of the record that completed the message, so
    reprocessing the same records after a crash yields the same id, while the same text legitimately sent
    again later (a new record) gets a new one.
    """
    digest = hashlib.sha256(f"{fingerprint}@{origin}".encode()).digest()[:15]
    return "msg_" + _b32(digest)


def _b32(data: bytes) -> str:
    import base64

    return base64.b32encode(data).decode().rstrip("=").lower()
