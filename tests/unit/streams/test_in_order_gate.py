"""The ingest stage processes a partition's records in log order only (streams/offsets.py ``InOrderGate``).

Faust can drop a run of fetched records on the way to the agent while handing on the ones after it. If the
later records were processed first and the dropped ones afterwards (the guard's re-read), an SMS whose two
copies (a retransmission, a second route) straddle the run would be emitted under two ids: the dedup rule
"seen at or after this record = a replay of this record" assumes log order (docs/consistency.md). The CI
failure this guards against: tests/e2e/test_crash_consistency.py::test_kill_one_of_two_workers_repeatedly,
"1 SMS delivered under two webhook-ids", on a loaded machine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from weakref import WeakSet

from streams.offsets import InOrderGate, forget_message


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_records_in_log_order_pass_from_the_committed_offset() -> None:
    gate = InOrderGate()
    assert [gate.admit(0, o, committed=40) for o in (40, 41, 42)] == [True, True, True]


def test_a_record_after_a_dropped_run_waits_and_the_run_then_passes_in_order() -> None:
    gate = InOrderGate()
    assert gate.admit(0, 40, committed=40)
    # 41-43 dropped by the fetch; 44 and 45 arrive: refused (they wait for the re-read)
    assert not gate.admit(0, 44, committed=41)
    assert not gate.admit(0, 45, committed=41)
    # the guard's re-read from 41 brings them all, in order
    assert [gate.admit(0, o, committed=41) for o in (41, 42, 43, 44, 45)] == [True] * 5


def test_the_first_record_after_an_assignment_must_be_the_committed_one() -> None:
    gate = InOrderGate()
    assert not gate.admit(3, 12, committed=10)
    assert gate.admit(3, 10, committed=10)
    # no commit yet (a new group reading from the earliest offset): whatever comes first
    assert gate.admit(4, 500, committed=None)


def test_an_earlier_record_is_a_replay_and_passes() -> None:
    gate = InOrderGate()
    for o in (10, 11, 12):
        assert gate.admit(0, o, committed=10)
    # a seek back (a re-read): processed again, as after a restart; the order continues from there
    assert gate.admit(0, 11, committed=10)
    assert not gate.admit(0, 13, committed=10)
    assert gate.admit(0, 12, committed=10)
    assert gate.admit(0, 13, committed=10)


def test_partitions_are_independent_and_a_revoked_one_starts_from_the_committed_offset() -> None:
    gate = InOrderGate()
    assert gate.admit(0, 5, committed=5)
    assert gate.admit(1, 9, committed=9)
    assert not gate.admit(0, 7, committed=6)
    gate.forget(0)
    assert gate.admit(0, 7, committed=7)  # the new assignment's committed offset


def test_a_gap_that_never_comes_back_is_given_up_after_the_bound() -> None:
    # records deleted by retention while the group was away: hold, but not for good
    clock = Clock()
    gate = InOrderGate(give_up_s=60.0, clock=clock)
    assert not gate.admit(0, 300, committed=100)
    clock.now += 59
    assert not gate.admit(0, 300, committed=100)
    clock.now += 2
    assert gate.admit(0, 300, committed=100)
    assert gate.admit(0, 301, committed=100)


@dataclass(eq=False)
class Message:
    offset: int
    acked: bool = False


@dataclass
class Consumer:
    _unacked_messages: Any = field(default_factory=WeakSet)


def test_a_refused_record_is_let_go_unacked_so_the_commit_cannot_pass_it() -> None:
    consumer = Consumer()
    refused, kept = Message(44), Message(40)
    consumer._unacked_messages.add(refused)
    consumer._unacked_messages.add(kept)
    forget_message(consumer, refused)
    # Faust's ack on the way out of the batch skips a message marked acked: it never enters the acked
    # offsets; and it no longer counts as "taken" for the stalled-partition guard, whose tail check re-reads
    assert refused.acked
    assert set(consumer._unacked_messages) == {kept}
