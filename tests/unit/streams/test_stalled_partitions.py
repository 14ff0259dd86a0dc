"""The stalled-partition guard (streams/offsets.py): a committed offset stuck on a record that never reached
the agent, while later records were acked, is re-read; anything that can happen legitimately is left alone."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from streams.offsets import PartitionView, StalledPartitionGuard, reread_stalled, stalled


def test_a_dropped_head_with_later_records_acked_is_a_stall() -> None:
    assert stalled(PartitionView(committed=100, acked=(103, 104), taken=frozenset()))


def test_a_head_that_an_agent_holds_is_not_a_stall() -> None:
    # a webhook in flight, a retry record waiting until due: taken, not acked yet
    assert not stalled(PartitionView(committed=100, acked=(101, 102), taken=frozenset({100})))


def test_a_head_that_is_acked_is_not_a_stall() -> None:
    assert not stalled(PartitionView(committed=100, acked=(100, 101), taken=frozenset()))


def test_nothing_acked_or_no_commit_yet_is_not_a_stall() -> None:
    assert not stalled(PartitionView(committed=100, acked=(), taken=frozenset()))
    assert not stalled(PartitionView(committed=None, acked=(5,), taken=frozenset()))


def test_the_guard_waits_for_consecutive_checks_on_the_same_offset() -> None:
    guard = StalledPartitionGuard(checks=3)
    view = {"tp": PartitionView(committed=100, acked=(103,), taken=frozenset())}
    assert guard.observe(view) == {}
    assert guard.observe(view) == {}
    assert guard.observe(view) == {"tp": 100}
    # counting starts over after a re-read
    assert guard.observe(view) == {}


def test_a_stall_that_clears_or_moves_starts_the_count_over() -> None:
    guard = StalledPartitionGuard(checks=2)
    stuck = {"tp": PartitionView(committed=100, acked=(103,), taken=frozenset())}
    assert guard.observe(stuck) == {}
    assert guard.observe({}) == {}  # the head arrived in the meantime
    assert guard.observe(stuck) == {}
    moved = {"tp": PartitionView(committed=104, acked=(107,), taken=frozenset())}
    assert guard.observe(moved) == {}  # a different offset: a new stall, counted from one
    assert guard.observe(moved) == {"tp": 104}


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass
class Message:
    tp: TP
    offset: int
    acked: bool = False


@dataclass
class FakeConsumer:
    """The private fields of faust-streaming 0.15.3's Consumer the guard reads, and the calls it makes."""

    assigned: set[TP]
    _acked: dict[TP, list[int]]
    _committed_offset: dict[TP, int | None]
    _unacked_messages: list[Message] = field(default_factory=list)
    _gap: dict[TP, Any] = field(default_factory=dict)
    flow_active: bool = True
    calls: list[Any] = field(default_factory=list)

    def assignment(self) -> set[TP]:
        return self.assigned

    def stop_flow(self) -> None:
        self.flow_active = False
        self.calls.append("stop_flow")

    def resume_flow(self) -> None:
        self.flow_active = True
        self.calls.append("resume_flow")

    async def seek(self, tp: TP, offset: int) -> None:
        assert not self.flow_active, "the seek happens while the flow is stopped"
        self.calls.append(("seek", tp, offset))


@dataclass
class FlowControl:
    active: bool = True

    def is_active(self) -> bool:
        return self.active


@dataclass
class App:
    consumer: FakeConsumer
    flow_control: FlowControl = field(default_factory=FlowControl)


def test_the_stalled_partition_is_re_read_from_its_committed_offset_and_only_it() -> None:
    stuck, busy, fine = TP("sms.receipts.v1", 0), TP("sms.receipts.v1", 1), TP("sms.raw.v1", 2)
    consumer = FakeConsumer(
        assigned={stuck, busy, fine},
        _acked={stuck: [41, 42], busy: [8, 9], fine: [70]},
        _committed_offset={stuck: 40, busy: 7, fine: 70},
        _unacked_messages=[Message(busy, 7)],
        _gap={stuck: object()},
    )
    app = App(consumer)
    guard = StalledPartitionGuard(checks=2)
    assert asyncio.run(reread_stalled(app, guard)) == {}
    assert asyncio.run(reread_stalled(app, guard)) == {stuck: 40}
    assert consumer.calls == ["stop_flow", ("seek", stuck, 40), "resume_flow"]
    assert stuck not in consumer._gap


def test_no_re_read_during_a_rebalance_or_for_a_partition_no_longer_assigned() -> None:
    stuck = TP("sms.raw.v1", 0)
    consumer = FakeConsumer(assigned={stuck}, _acked={stuck: [5]}, _committed_offset={stuck: 3})
    app = App(consumer, FlowControl(active=False))
    guard = StalledPartitionGuard(checks=1)
    assert asyncio.run(reread_stalled(app, guard)) == {}
    app.flow_control.active = True
    consumer.assigned = set()
    assert asyncio.run(reread_stalled(app, guard)) == {}
    assert consumer.calls == []
