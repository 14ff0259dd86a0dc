"""The submission ledger: what makes "nothing submitted twice by a restart" hold.

Two records per submit attempt of a segment, on sms.outbound.ledger.v1 (keyed by message id, delete policy,
kept 4 days: not compacted, since every entry of a message must stay; docs/outbound.md):

1. `Intent` — written, and acknowledged by the broker (acks=all), BEFORE the submit_sm goes on the wire.
   It carries the route, the attempt number, the destination and the concatenation reference.
2. `Outcome` — written after the submit_sm_resp (accepted with the carrier's id, refused permanently, or
   refused for now: ESME_RTHROTTLED, ESME_RMSGQFUL), or after the resp did not come within the timeout.

The request's offset on sms.outbound.v1 is committed only after its intents are stored, but correctness does
not rest on the offset: a restarted worker re-reads requests and asks the ledger, segment by segment
(`next_step`):

    no intent                          → submit (it never reached a carrier)
    intent + accepted / refused        → nothing to do (wait for the receipt / it is final)
    intent + retryable refusal         → retry after the backoff, up to `max_attempts`, then give up
    intent, no outcome (or a timeout)  → UNKNOWN: the submit_sm may or may not have reached the carrier

The unknown case cannot be resolved from our side: a crash between the intent and the socket write looks
exactly like a crash between the socket write and the resp. `UnknownPolicy` decides: "hold" (the default:
never submit again; the segment fails with the reason "submit outcome unknown" once `unknown_grace_ms` passes
with no receipt to say otherwise) keeps the at-most-once promise; "resubmit" trades it for at-least-once,
for traffic where a lost message is worse than a duplicate (an OTP). Only segments in flight at the crash can
be unknown: at most the session window per bind.

Intents also rebuild the concatenation reference book after a restart (`reference_uses`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from smsflow.outbound.status import Accepted, Event, Refused, Submitted

OutcomeKind = Literal["accepted", "refused", "retryable", "timeout"]
UnknownPolicy = Literal["hold", "resubmit"]

ESME_RMSGQFUL = 0x14
ESME_RTHROTTLED = 0x58


@dataclass(frozen=True)
class Intent:
    message_id: str
    seq: int
    attempt: int
    route: str
    destination: str
    ref: int | None
    at_ms: int


@dataclass(frozen=True)
class Outcome:
    message_id: str
    seq: int
    attempt: int
    kind: OutcomeKind
    at_ms: int
    carrier_message_id: str | None = None
    command_status: int | None = None


@dataclass(frozen=True)
class LedgerPolicy:
    retryable_statuses: frozenset[int] = frozenset({ESME_RMSGQFUL, ESME_RTHROTTLED})
    max_attempts: int = 5
    backoff_ms: tuple[int, ...] = (1_000, 5_000, 30_000, 120_000)
    """Wait before attempt n+1 after a retryable refusal of attempt n (the last value repeats)."""
    unknown: UnknownPolicy = "hold"
    unknown_grace_ms: int = 600_000

    def classify(self, command_status: int) -> OutcomeKind:
        if command_status == 0:
            return "accepted"
        return "retryable" if command_status in self.retryable_statuses else "refused"


@dataclass(frozen=True)
class Attempt:
    intent: Intent
    outcome: Outcome | None = None


@dataclass(frozen=True)
class Refusal:
    reason: str


@dataclass(frozen=True)
class Submit:
    attempt: int
    not_before_ms: int
    why: str


@dataclass(frozen=True)
class Wait:
    why: str


@dataclass(frozen=True)
class GiveUp:
    reason: str


Step = Submit | Wait | GiveUp

SegmentKey = tuple[str, int]


@dataclass(frozen=True)
class Ledger:
    segments: Mapping[SegmentKey, tuple[Attempt, ...]] = field(default_factory=dict)

    def add(self, record: Intent | Outcome) -> Ledger | Refusal:
        """The ledger with `record` folded in. Replayed duplicates change nothing; an outcome without its
        intent, or a second outcome that disagrees with the first, is refused."""
        key = (record.message_id, record.seq)
        attempts = list(self.segments.get(key, ()))
        index = next((i for i, a in enumerate(attempts) if a.intent.attempt == record.attempt), None)
        if isinstance(record, Intent):
            if index is not None:
                if attempts[index].intent == record:
                    return self
                return Refusal(f"{key[0]}#{key[1]} attempt {record.attempt} already has a different intent")
            attempts.append(Attempt(record))
        else:
            if index is None:
                return Refusal(f"{key[0]}#{key[1]} attempt {record.attempt} has an outcome but no intent")
            known = attempts[index].outcome
            if known == record:
                return self
            if known is not None and known.kind != "timeout":
                return Refusal(f"{key[0]}#{key[1]} attempt {record.attempt} already ended {known.kind}")
            # a resp that arrives after our timeout record is the better knowledge: it replaces it
            attempts[index] = replace(attempts[index], outcome=record)
        attempts.sort(key=lambda a: a.intent.attempt)
        return replace(self, segments={**self.segments, key: tuple(attempts)})

    def next_step(self, message_id: str, seq: int, policy: LedgerPolicy, now_ms: int) -> Step:
        attempts = self.segments.get((message_id, seq), ())
        if not attempts:
            return Submit(1, now_ms, "no submit recorded")
        last = attempts[-1]
        n = last.intent.attempt
        outcome = last.outcome
        if outcome is not None and outcome.kind == "accepted":
            return Wait(f"accepted as {outcome.carrier_message_id}: waiting for the receipt")
        if outcome is not None and outcome.kind == "refused":
            return GiveUp(f"refused with status 0x{outcome.command_status or 0:08X}")
        if outcome is not None and outcome.kind == "retryable":
            if n >= policy.max_attempts:
                return GiveUp(
                    f"still refused for now (0x{outcome.command_status or 0:08X}) after {n} attempts"
                )
            wait = policy.backoff_ms[min(n, len(policy.backoff_ms)) - 1]
            return Submit(n + 1, outcome.at_ms + wait, f"retry after 0x{outcome.command_status or 0:08X}")
        # in flight at a crash, or the resp timed out: it may have reached the carrier
        if policy.unknown == "resubmit" and n < policy.max_attempts:
            return Submit(n + 1, now_ms, f"attempt {n} outcome unknown; policy resubmits (at-least-once)")
        if now_ms - last.intent.at_ms >= policy.unknown_grace_ms:
            return GiveUp(f"submit outcome unknown for attempt {n} via {last.intent.route}")
        return Wait(f"attempt {n} outcome unknown; not submitted again (policy hold)")

    def reference_uses(self) -> Iterable[tuple[str, int, int]]:
        """(destination, reference, epoch ms) of every intent, to rebuild `ReferenceBook` after a restart."""
        for attempts in self.segments.values():
            for a in attempts:
                if a.intent.ref is not None:
                    yield a.intent.destination, a.intent.ref, a.intent.at_ms


def status_event(record: Intent | Outcome) -> Event | None:
    """What a ledger record means for the message's status; None for outcomes that end in a retry or an
    unknown (the segment stays submitted until the retry's resp, a receipt or the validity settles it)."""
    if isinstance(record, Intent):
        return Submitted(record.seq, record.at_ms, record.route, record.attempt)
    if record.kind == "accepted" and record.carrier_message_id is not None:
        return Accepted(record.seq, record.at_ms, record.carrier_message_id)
    if record.kind == "refused":
        return Refused(record.seq, record.at_ms, record.command_status or 0)
    return None
