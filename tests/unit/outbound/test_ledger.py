"""The submission ledger: restarts at any point never submit a segment twice (policy hold), and never lose
one that had not reached a carrier."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsflow.outbound.ledger import (
    ESME_RTHROTTLED,
    GiveUp,
    Intent,
    Ledger,
    LedgerPolicy,
    Outcome,
    Refusal,
    Submit,
    Wait,
    status_event,
)
from smsflow.outbound.references import ReferenceBook, RefExhausted
from smsflow.outbound.status import MessageStatus, ReceiptReceived, Rejection

T = 1_000_000


def intent(seq: int = 1, attempt: int = 1, at: int = T, ref: int | None = 7) -> Intent:
    return Intent("m1", seq, attempt, "hk-a", "+85291234567", ref, at)


def outcome(
    kind: str, seq: int = 1, attempt: int = 1, at: int = T + 10, status: int | None = None
) -> Outcome:
    mid = "AB12" if kind == "accepted" else None
    return Outcome("m1", seq, attempt, kind, at, mid, status)  # type: ignore[arg-type]


def fold(*records: Intent | Outcome) -> Ledger:
    ledger = Ledger()
    for r in records:
        result = ledger.add(r)
        assert not isinstance(result, Refusal), result.reason
        ledger = result
    return ledger


HOLD = LedgerPolicy()


@pytest.mark.parametrize(
    ("records", "now", "step"),
    [
        ((), T, Submit(1, T, "no submit recorded")),
        ((intent(), outcome("accepted")), T, Wait("accepted as AB12: waiting for the receipt")),
        ((intent(), outcome("refused", status=0x0B)), T, GiveUp("refused with status 0x0000000B")),
        (
            (intent(), outcome("retryable", status=ESME_RTHROTTLED)),
            T,
            Submit(2, T + 10 + 1000, "retry after 0x00000058"),
        ),
        (
            (
                intent(attempt=1),
                outcome("retryable", status=0x58),
                intent(attempt=2),
                outcome("retryable", attempt=2, at=T + 2000, status=0x58),
            ),
            T,
            Submit(3, T + 2000 + 5000, "retry after 0x00000058"),
        ),
        ((intent(),), T + 5, Wait("attempt 1 outcome unknown; not submitted again (policy hold)")),
        (
            (intent(), outcome("timeout")),
            T + 5,
            Wait("attempt 1 outcome unknown; not submitted again (policy hold)"),
        ),
        ((intent(),), T + HOLD.unknown_grace_ms, GiveUp("submit outcome unknown for attempt 1 via hk-a")),
    ],
)
def test_next_step(records: tuple[Intent | Outcome, ...], now: int, step: object) -> None:
    assert fold(*records).next_step("m1", 1, HOLD, now) == step


def test_retries_stop_at_max_attempts() -> None:
    policy = LedgerPolicy(max_attempts=2)
    ledger = fold(
        intent(attempt=1),
        outcome("retryable", status=0x14),
        intent(attempt=2),
        outcome("retryable", attempt=2, status=0x14),
    )
    step = ledger.next_step("m1", 1, policy, T)
    assert isinstance(step, GiveUp) and "after 2 attempts" in step.reason


def test_resubmit_policy_submits_an_unknown_segment_again() -> None:
    step = fold(intent()).next_step("m1", 1, LedgerPolicy(unknown="resubmit"), T + 5)
    assert isinstance(step, Submit) and step.attempt == 2


def test_a_late_resp_replaces_a_timeout_but_not_the_other_way_round() -> None:
    ledger = fold(intent(), outcome("timeout"), outcome("accepted"))
    assert isinstance(ledger.next_step("m1", 1, HOLD, T), Wait)
    refused = ledger.add(outcome("timeout", at=T + 99))
    assert isinstance(refused, Refusal) and "already ended accepted" in refused.reason


def test_replayed_records_change_nothing_and_orphans_are_refused() -> None:
    ledger = fold(intent(), outcome("accepted"))
    assert fold(intent(), outcome("accepted"), intent(), outcome("accepted")) == ledger
    orphan = Ledger().add(outcome("accepted"))
    assert isinstance(orphan, Refusal) and "no intent" in orphan.reason
    clash = ledger.add(Intent("m1", 1, 1, "other-route", "+85291234567", 7, T))
    assert isinstance(clash, Refusal)


def test_intents_rebuild_the_reference_book() -> None:
    ledger = fold(
        intent(seq=1, ref=0, at=T),
        intent(seq=2, ref=0, at=T),
        Intent("m2", 1, 1, "r", "+85291234567", 1, T + 1),
    )
    book = ReferenceBook()
    for dest, ref, at in ledger.reference_uses():
        book = book.record(dest, ref, at)
    result = book.allocate("+85291234567", T + 2)
    assert not isinstance(result, RefExhausted) and result[1] == 2


def test_the_ledger_drives_the_status() -> None:
    records: list[Intent | Outcome] = [
        intent(seq=1),
        outcome("retryable", seq=1, status=ESME_RTHROTTLED),
        intent(seq=1, attempt=2, at=T + 1010),
        outcome("accepted", seq=1, attempt=2, at=T + 1020),
        intent(seq=2),
        outcome("refused", seq=2, status=0x0B),
    ]
    status = MessageStatus.new("m1", 2, T + 3_600_000)
    for rec in records:
        event = status_event(rec)
        if event is not None:
            result = status.apply(event)
            assert not isinstance(result, Rejection), result.reason
            status = result[0]
    assert [(s.state, s.attempt, s.carrier_message_id) for s in status.segments] == [
        ("sent", 2, "AB12"),
        ("rejected", 1, None),
    ]
    assert status.segments[1].detail == "submit_sm_resp status 0x0000000B"
    result = status.apply(ReceiptReceived(1, T + 5000, "DELIVRD"))
    assert not isinstance(result, Rejection)
    assert result[0].overall == "rejected"  # one part refused: the message is not delivered


@dataclass
class World:
    """A worker, a carrier and the ledger topic. Only the ledger and the carrier survive a crash."""

    ledger: Ledger = field(default_factory=Ledger)
    carrier: list[tuple[int, int]] = field(default_factory=list)  # (seq, attempt) as the carrier saw them
    ops: int = 0

    def tick(self, crash_at: set[int]) -> None:
        self.ops += 1
        if self.ops in crash_at:
            raise Crash


class Crash(Exception):
    pass


def run_worker(
    world: World, parts: int, policy: LedgerPolicy, crash_at: set[int], throttle: set[int], now: int
) -> None:
    for seq in range(1, parts + 1):
        while True:
            step = world.ledger.next_step("m1", seq, policy, now)
            if not isinstance(step, Submit):
                break
            now = max(now, step.not_before_ms)
            world.tick(crash_at)
            added = world.ledger.add(Intent("m1", seq, step.attempt, "r", "+852", None, now))
            assert not isinstance(added, Refusal)
            world.ledger = added
            world.tick(crash_at)
            world.carrier.append((seq, step.attempt))
            world.tick(crash_at)
            status = ESME_RTHROTTLED if world.ops in throttle else 0
            added = world.ledger.add(
                Outcome("m1", seq, step.attempt, policy.classify(status), now, "X", status)
            )
            assert not isinstance(added, Refusal)
            world.ledger = added


@settings(max_examples=300, deadline=None)
@given(
    parts=st.integers(1, 4),
    crash_at=st.sets(st.integers(1, 40), max_size=4),
    throttle=st.sets(st.integers(1, 40), max_size=3),
    unknown=st.sampled_from(["hold", "resubmit"]),
)
def test_kill_at_any_point_and_restart(
    parts: int, crash_at: set[int], throttle: set[int], unknown: str
) -> None:
    policy = LedgerPolicy(unknown=unknown, max_attempts=10)  # type: ignore[arg-type]
    world = World()
    for _restart in range(len(crash_at) + 1):
        try:
            run_worker(world, parts, policy, crash_at, throttle, T)
            break
        except Crash:
            continue
    last = {seq: world.ledger.segments[("m1", seq)][-1] for seq in range(1, parts + 1)}  # none lost
    accepted = {seq for seq, a in last.items() if a.outcome is not None and a.outcome.kind == "accepted"}
    unknown_segments = set(range(1, parts + 1)) - accepted
    for seq in range(1, parts + 1):
        sent_attempts = [a for s, a in world.carrier if s == seq]
        assert sent_attempts == sorted(set(sent_attempts)), "an attempt reached the carrier twice"
        throttled = sum(
            1 for a in world.ledger.segments[("m1", seq)] if a.outcome and a.outcome.kind == "retryable"
        )
        if policy.unknown == "hold":
            # at most once, apart from attempts the carrier itself refused for now
            assert len(sent_attempts) <= 1 + throttled
    if policy.unknown == "resubmit":
        assert not unknown_segments, "at-least-once: every segment is accepted in the end"
    else:
        # a segment is only left unknown if a crash hit between its intent and its outcome
        for seq in unknown_segments:
            assert last[seq].outcome is None
            assert isinstance(world.ledger.next_step("m1", seq, policy, T), Wait)
