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
        doc = orjson.loads(raw)
        if doc.pop("format", None) != SUBMISSION_FORMAT:
            raise ValueError(f"not a {SUBMISSION_FORMAT} record")
        doc["short_message"] = base64.b64decode(doc["short_message"])
        doc["candidates"] = tuple(Candidate(**c) for c in doc["candidates"])
        return cls(**doc)


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
