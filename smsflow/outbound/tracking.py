"""A message's status as the fold of its ledger entries: what the worker's status table holds per message.

`begin(plan)` starts the track; `fold(track, entry)` applies one entry of `sms.outbound.ledger.v1` (a submit
intent or outcome, a give-up, a matched receipt) and gives the `OutboundStatus` records to publish, numbered
from the track's count so that a replay of the same entries writes the same event ids. Entries that change
nothing (a replay, a late weaker receipt) publish nothing; impossible ones are refused with the reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson

from smsflow.outbound.ledger import status_event
from smsflow.outbound.records import status_record
from smsflow.outbound.status import (
    Event,
    GaveUp,
    MessageStatus,
    ReceiptReceived,
    Rejection,
    SegmentStatus,
    Transition,
    ValidityChecked,
)
from smsflow.outbound.submission import Abandoned, Carried, LedgerEntry, Plan, ReceiptMatch


@dataclass(frozen=True)
class Track:
    owner: str
    callback_url: str | None
    status: MessageStatus
    n: int = 0
    """Transitions published so far (the next event id is message_id#n+1)."""

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, raw: bytes) -> Track:
        return cls.from_dict(orjson.loads(raw))

    def to_dict(self) -> dict[str, Any]:
        """The table's value (Faust tables store JSON documents: bytes would not survive a recovery)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Track:
        st = doc["status"]
        status = MessageStatus(
            st["message_id"], st["expires_at_ms"], tuple(SegmentStatus(**s) for s in st["segments"])
        )
        return cls(doc["owner"], doc["callback_url"], status, doc["n"])

    @property
    def final(self) -> bool:
        return self.status.overall in ("delivered", "failed", "rejected", "expired")

    @property
    def settled_at_ms(self) -> int:
        """When the track last changed (its latest segment time; 0 before any): a final track is kept for a
        while after it (smsflow/outbound/expiry.py)."""
        return max((s.at_ms for s in self.status.segments if s.at_ms is not None), default=0)


def begin(plan: Plan) -> tuple[Track, list[dict[str, Any]]]:
    track = Track(
        plan.owner, plan.callback_url, MessageStatus.new(plan.message_id, plan.parts, plan.expires_at_ms)
    )
    if plan.no_route is None:
        return track, []
    out: list[dict[str, Any]] = []
    for seq in range(1, plan.parts + 1):
        track, records = _apply(track, GaveUp(seq, plan.at_ms, plan.no_route))
        out += records
    return track, out


def fold(track: Track, entry: LedgerEntry) -> tuple[Track, list[dict[str, Any]]] | Rejection:
    event = _event(entry)
    if event is None:
        return track, []
    return _apply(track, event)


def expire(track: Track, now_ms: int) -> tuple[Track, list[dict[str, Any]]]:
    """The validity check, given the time (a tick's, never the wall clock of a replay)."""
    out = _apply(track, ValidityChecked(now_ms))
    return out if not isinstance(out, Rejection) else (track, [])


def _event(entry: LedgerEntry) -> Event | None:
    if isinstance(entry, Carried):
        return status_event(entry.record)
    if isinstance(entry, Abandoned):
        return GaveUp(entry.seq, entry.at_ms, entry.reason)
    if isinstance(entry, ReceiptMatch):
        return ReceiptReceived(entry.seq, entry.at_ms, entry.state, entry.error_code)
    return None  # a plan read again: the track exists already


def _apply(track: Track, event: Event) -> Any:
    out = track.status.apply(event)
    if isinstance(out, Rejection):
        return out
    status, transitions = out
    records = []
    n = track.n
    for t in transitions:
        n += 1
        records.append(status_record(track.owner, status, t, n, track.callback_url))
    return replace(track, status=status, n=n), records


__all__ = ["Track", "Transition", "begin", "expire", "fold"]
