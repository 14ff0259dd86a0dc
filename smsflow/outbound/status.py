"""The status of an outbound message, per segment and overall.

Per segment:

    queued ──submit_sm written──▶ submitted ──submit_sm_resp OK──▶ sent ──receipt──▶ delivered
       │                              │                              │               failed
       │                              └─resp with a permanent error──┼──────────────▶ rejected
       └────────── validity passed (any non-final state) ────────────┴──────────────▶ expired

Final states are delivered, failed, rejected, expired. Receipts and timers can arrive late, twice, or out
of order (a receipt before the submit_sm_resp is read, an EXPIRED from our own timer then a DELIVRD from the
carrier), so the final states are ordered by how much they prove, and a segment keeps the strongest one it
has seen:

    delivered  >  failed  >  rejected  >  expired

"delivered" is proof that the handset has it; a carrier's definite failure says more than a refusal at
submit time, and "expired" is the weakest: often our own timer's guess. A weaker outcome after a stronger
one is ignored (not an error: it is a late report); a stronger one after a weaker one replaces it and is
published as a new transition with the reason. Because the result is the maximum of what was seen, any
order and any duplication of the same receipts give the same final status.

Overall: delivered when every segment is; when every segment is final and some is not delivered, the
strongest failure among them (one lost part loses the message); otherwise queued (nothing submitted yet),
sent (every unfinished segment was accepted by the carrier) or submitted.

Illegal transitions are refused with a reason: a receipt or a submit_sm_resp for a segment with no submit
recorded, a submit of a segment the carrier already accepted or that is final, two carrier ids for one
segment, a segment number outside the message, a receipt state that SMPP does not define. A new attempt of
a segment still `submitted` (no resp: a timeout or a restart) is allowed: that is the ledger's retry.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

SegmentState = Literal["queued", "submitted", "sent", "delivered", "failed", "rejected", "expired"]
FINAL: dict[str, int] = {"expired": 1, "rejected": 2, "failed": 3, "delivered": 4}
"""Final states by strength (see the module notes)."""
PROGRESS: dict[str, int] = {"queued": 0, "submitted": 1, "sent": 2}

# SMPP message_state names (smsflow.ingest.receipts.MESSAGE_STATES and the text form's stat:) to what they
# end in; None: not final (the message is still on its way, or the carrier does not know yet).
RECEIPT_STATES: dict[str, SegmentState | None] = {
    "DELIVRD": "delivered",
    "DELIVERED": "delivered",
    "UNDELIV": "failed",
    "UNDELIVERABLE": "failed",
    "FAILED": "failed",
    "DELETED": "failed",
    "REJECTD": "rejected",
    "REJECTED": "rejected",
    "EXPIRED": "expired",
    "ENROUTE": None,
    "ACCEPTD": None,
    "ACCEPTED": None,
    "UNKNOWN": None,
    "SKIPPED": None,
}


@dataclass(frozen=True)
class Submitted:
    """The submit_sm was written to the carrier (the ledger intent is stored before this). `attempt` counts
    from 1; a later attempt of a segment still `submitted` is a retry the ledger's policy decided on."""

    seq: int
    at_ms: int
    route: str
    attempt: int = 1


@dataclass(frozen=True)
class Accepted:
    """submit_sm_resp with command_status 0: the carrier's message id."""

    seq: int
    at_ms: int
    carrier_message_id: str


@dataclass(frozen=True)
class Refused:
    """submit_sm_resp with a permanent error (transient ones are retried by the connector, not reported)."""

    seq: int
    at_ms: int
    command_status: int


@dataclass(frozen=True)
class ReceiptReceived:
    seq: int
    at_ms: int
    state: str
    """The receipt's message_state name as smsflow.ingest.receipts gives it (DELIVRD, UNDELIV, ...)."""
    error_code: str | None = None


@dataclass(frozen=True)
class GaveUp:
    """Nothing more will be tried for the segment (every route refused it for now, or none could take it):
    rejected from any state that is not final, submitted or not."""

    seq: int
    at_ms: int
    reason: str


@dataclass(frozen=True)
class ValidityChecked:
    """The clock, given as an event: past the validity, every unfinished segment is expired."""

    at_ms: int


Event = Submitted | Accepted | Refused | ReceiptReceived | GaveUp | ValidityChecked


@dataclass(frozen=True)
class SegmentStatus:
    seq: int
    state: SegmentState = "queued"
    carrier_message_id: str | None = None
    route: str | None = None
    attempt: int = 0
    detail: str | None = None
    """The SMPP status or receipt error behind a failure, for people and callbacks."""
    at_ms: int | None = None


@dataclass(frozen=True)
class Transition:
    seq: int | None
    """The segment that moved; None when only the message as a whole is reported."""
    old: str
    new: str
    reason: str
    at_ms: int


@dataclass(frozen=True)
class Rejection:
    """An event refused as impossible; the status is unchanged."""

    reason: str


@dataclass(frozen=True)
class MessageStatus:
    message_id: str
    expires_at_ms: int
    segments: tuple[SegmentStatus, ...]

    @classmethod
    def new(cls, message_id: str, parts: int, expires_at_ms: int) -> MessageStatus:
        return cls(message_id, expires_at_ms, tuple(SegmentStatus(i) for i in range(1, parts + 1)))

    @property
    def overall(self) -> SegmentState:
        return overall_state(tuple(s.state for s in self.segments))

    def apply(self, event: Event) -> tuple[MessageStatus, list[Transition]] | Rejection:
        """The new status and the transitions to publish (empty for a duplicate or a late, weaker report),
        or a `Rejection` for an event that cannot happen."""
        if isinstance(event, ValidityChecked):
            if event.at_ms < self.expires_at_ms:
                return self, []
            changes = [
                (s.seq, replace(s, state="expired", detail="validity period passed", at_ms=event.at_ms))
                for s in self.segments
                if s.state not in FINAL
            ]
            return self._with(changes, "validity period passed", event.at_ms)
        if not 1 <= event.seq <= len(self.segments):
            return Rejection(f"segment {event.seq} is outside 1..{len(self.segments)}")
        seg = self.segments[event.seq - 1]
        step = _segment_step(seg, event)
        if isinstance(step, Rejection):
            return step
        if step is None:
            return self, []
        new, reason = step
        return self._with([(seg.seq, new)], reason, event.at_ms)

    def _with(
        self, changes: list[tuple[int, SegmentStatus]], reason: str, at_ms: int
    ) -> tuple[MessageStatus, list[Transition]]:
        segments = list(self.segments)
        transitions = []
        for seq, new in changes:
            old = segments[seq - 1]
            segments[seq - 1] = new
            if new.state != old.state:  # a recorded carrier id or a retry is state, not a transition
                transitions.append(Transition(seq, old.state, new.state, reason, at_ms))
        status = replace(self, segments=tuple(segments))
        if status.overall != self.overall:
            transitions.append(Transition(None, self.overall, status.overall, reason, at_ms))
        return status, transitions


def _segment_step(seg: SegmentStatus, event: Event) -> tuple[SegmentStatus, str] | Rejection | None:
    """None: nothing changes (a duplicate, or a report weaker than what the segment already has)."""
    if isinstance(event, Submitted):
        if event.attempt == seg.attempt and seg.route is not None:
            return None  # the same attempt read twice (a replay)
        if event.attempt < seg.attempt:
            return None  # an older attempt reported late
        if seg.state in ("queued", "submitted"):
            new = replace(seg, state="submitted", route=event.route, attempt=event.attempt, at_ms=event.at_ms)
            return new, f"submit_sm attempt {event.attempt} via {event.route}"
        return Rejection(f"segment {seg.seq} is already {seg.state}; it is not submitted again")
    if isinstance(event, GaveUp):
        return _final(seg, "rejected", event.reason, event.at_ms)
    if seg.route is None:
        return Rejection(f"segment {seg.seq} has no submit recorded")
    if isinstance(event, Accepted):
        known = seg.carrier_message_id
        if known not in (None, event.carrier_message_id):
            return Rejection(
                f"segment {seg.seq} already has carrier id {known}, not {event.carrier_message_id}"
            )
        if seg.state == "submitted":
            new = replace(seg, state="sent", carrier_message_id=event.carrier_message_id, at_ms=event.at_ms)
            return new, "accepted by the carrier"
        if known is None:  # a receipt or the timer got there first: keep the outcome, remember the id
            return replace(seg, carrier_message_id=event.carrier_message_id), "carrier id recorded"
        return None
    if isinstance(event, Refused):
        return _final(seg, "rejected", f"submit_sm_resp status 0x{event.command_status:08X}", event.at_ms)
    if isinstance(event, ReceiptReceived):
        target = RECEIPT_STATES.get(event.state.upper())
        if target is None:
            if event.state.upper() not in RECEIPT_STATES:
                return Rejection(f"receipt state {event.state!r} is not an SMPP message state")
            return None  # still on its way: nothing a customer needs to hear
        detail = f"receipt {event.state.upper()}" + (f" err:{event.error_code}" if event.error_code else "")
        return _final(seg, target, detail, event.at_ms)
    return None


def _final(
    seg: SegmentStatus, target: SegmentState, detail: str, at_ms: int
) -> tuple[SegmentStatus, str] | None:
    if seg.state in FINAL and FINAL[seg.state] >= FINAL[target]:
        return None
    reason = detail if seg.state not in FINAL else f"{detail} supersedes {seg.state}"
    return replace(seg, state=target, detail=detail, at_ms=at_ms), reason


def overall_state(states: tuple[SegmentState, ...]) -> SegmentState:
    if all(s in FINAL for s in states):
        if all(s == "delivered" for s in states):
            return "delivered"
        return max((s for s in states if s != "delivered"), key=FINAL.__getitem__)
    pending = [s for s in states if s not in FINAL]
    if all(s == "queued" for s in states):
        return "queued"
    return "sent" if all(s == "sent" for s in pending) else "submitted"
