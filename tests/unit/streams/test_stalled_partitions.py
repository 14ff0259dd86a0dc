"""The stalled-partition guard (streams/offsets.py): a committed offset stuck on a record that never reached
the agent, while later records were acked, is re-read; anything that can happen legitimately is left alone."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from streams.offsets import PartitionView, StalledPartitionGuard, reread_stalled, stalled, stalled_tail


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


def test_a_dropped_tail_is_a_stall_and_records_with_an_agent_or_acked_are_not() -> None:
    # records 100..104 were handed to Faust (position 105), none is with an agent or acked
    assert stalled_tail(PartitionView(committed=100, acked=(), taken=frozenset(), position=105))
    # all read and committed: idle
    assert not stalled_tail(PartitionView(committed=105, acked=(), taken=frozenset(), position=105))
    # on their way: taken by an agent, or acked and not yet committed
    assert not stalled_tail(PartitionView(committed=100, acked=(), taken=frozenset({100}), position=105))
    assert not stalled_tail(PartitionView(committed=100, acked=(), taken=frozenset({99, 103}), position=105))
    # later records with the agent (the ingest gate holds them back until the hole is re-read) while the
    # committed one is not: records reach an agent in log order, so it was dropped
    assert stalled_tail(PartitionView(committed=100, acked=(), taken=frozenset({103, 104}), position=105))
    assert not stalled_tail(PartitionView(committed=100, acked=(100,), taken=frozenset(), position=105))
    # position unknown, or nothing committed yet
    assert not stalled_tail(PartitionView(committed=100, acked=(), taken=frozenset(), position=None))
    assert not stalled_tail(PartitionView(committed=None, acked=(), taken=frozenset(), position=5))


def test_a_tail_stall_is_re_read_again_from_the_same_offset_only_after_the_retry_time() -> None:
    # if the re-read brings nothing (the records are gone: retention), the fetcher resets past them again:
    # a slow retry, not a re-read loop every two checks
    now = [0.0]
    guard = StalledPartitionGuard(checks=2, retry_s=30.0, clock=lambda: now[0])
    view = {"tp": PartitionView(committed=100, acked=(), taken=frozenset(), position=105)}
    assert guard.observe(view) == {}
    assert guard.observe(view) == {"tp": 100}
    for _ in range(5):
        now[0] += 1.0
        assert guard.observe(view) == {}
    now[0] += 30.0
    assert guard.observe(view) == {}
    assert guard.observe(view) == {"tp": 100}
    moved = {"tp": PartitionView(committed=103, acked=(), taken=frozenset(), position=110)}
    assert guard.observe(moved) == {}
    assert guard.observe(moved) == {"tp": 103}


def test_the_guard_waits_for_consecutive_checks_on_the_same_offset() -> None:
    now = [0.0]
    guard = StalledPartitionGuard(checks=3, retry_s=10.0, clock=lambda: now[0])
    view = {"tp": PartitionView(committed=100, acked=(103,), taken=frozenset())}
    assert guard.observe(view) == {}
    assert guard.observe(view) == {}
    assert guard.observe(view) == {"tp": 100}
    # counting starts over after a re-read, and the same offset is re-read again only after retry_s: each
    # re-read stops the whole fetch loop, so a head that is only slow must not cause one every few checks
    for _ in range(8):
        now[0] += 1.0
        assert guard.observe(view) == {}
    now[0] += 2.0
    assert [guard.observe(view) for _ in range(3)] == [{}, {}, {"tp": 100}]


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
class PositionState:
    """aiokafka's per-partition subscription state: the fetcher's position."""

    position: int | None

    @property
    def has_valid_position(self) -> bool:
        return self.position is not None


@dataclass
class FakeConsumer:
    """The private fields of faust-streaming 0.15.3's Consumer the guard reads, and the calls it makes."""

    assigned: set[TP]
    _acked: dict[TP, list[int]]
    _committed_offset: dict[TP, int | None]
    _unacked_messages: list[Message] = field(default_factory=list)
    _gap: dict[TP, Any] = field(default_factory=dict)
    _read_offset: dict[TP, int] = field(default_factory=dict)
    flow_active: bool = True
    calls: list[Any] = field(default_factory=list)
    positions: dict[TP, int] = field(default_factory=dict)

    @property
    def _thread(self) -> Any:
        """``consumer._thread._consumer._subscription.subscription.assignment.state_value(tp)``"""
        positions = self.positions

        class Assignment:
            def state_value(self, tp: TP) -> PositionState | None:
                return PositionState(positions[tp]) if tp in positions else None

        assignment = Assignment()
        subscription = type("S", (), {"assignment": assignment})()
        subs = type("Subs", (), {"subscription": subscription})()
        aiokafka = type("C", (), {"_subscription": subs})()
        return type("T", (), {"_consumer": aiokafka})()

    def assignment(self) -> set[TP]:
        return self.assigned

    def stop_flow(self) -> None:
        self.flow_active = False
        self.calls.append("stop_flow")

    def resume_flow(self) -> None:
        self.flow_active = True
        self.calls.append("resume_flow")

    fail_seek: bool = False
    on_seek: Any = None  # what happens while the seek is awaited (a rebalance begins)

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        """Faust's seek in the consumer thread (a seek from the event loop's thread races the fetcher)."""
        assert not self.flow_active, "the seek happens while the flow is stopped"
        if self.on_seek is not None:
            self.on_seek()
        if self.fail_seek:
            raise KeyError(next(iter(partitions)))
        for tp, offset in partitions.items():
            self.calls.append(("seek", tp, offset))


@dataclass
class FlowControl:
    active: bool = True

    def is_active(self) -> bool:
        return self.active


@dataclass
class Queue:
    """asyncio.Queue's deque of Faust events (each with its message)."""

    _queue: list[Any] = field(default_factory=list)

    def qsize(self) -> int:
        return len(self._queue)


def queued(*messages: Message) -> Queue:
    return Queue([type("Event", (), {"message": m})() for m in messages])


@dataclass(eq=False)
class Channel:
    _queue: Queue | None = None


@dataclass
class Topics:
    """Faust's conductor: which topics agents ack (tables' changelogs are not acked), and the channels
    (agents' queues) subscribed to each topic."""

    _topic_name_index: dict[str, set[Any]] = field(default_factory=dict)

    def acks_enabled_for(self, topic: str) -> bool:
        return not topic.endswith("-changelog")


@dataclass
class App:
    consumer: FakeConsumer
    flow_control: FlowControl = field(default_factory=FlowControl)
    topics: Topics = field(default_factory=Topics)


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


def test_a_partition_whose_tail_never_reached_the_agent_is_re_read_changelogs_and_idle_ones_are_not() -> None:
    tail, idle, log, busy = (
        TP("sms.outbound.requests.v1", 3),
        TP("sms.raw.v1", 0),
        TP("smsflow-dedup-changelog", 0),
        TP("sms.raw.v1", 1),
    )
    consumer = FakeConsumer(
        assigned={tail, idle, log, busy},
        _acked={},
        # a changelog is read by table recovery/standbys and never committed: its position is always ahead
        _committed_offset={tail: 12, idle: 40, log: 0, busy: 7},
        _unacked_messages=[Message(busy, 7), Message(tail, 14)],
        positions={tail: 15, idle: 40, log: 900, busy: 30},
    )
    app = App(consumer)
    guard = StalledPartitionGuard(checks=2)
    assert asyncio.run(reread_stalled(app, guard)) == {}
    assert asyncio.run(reread_stalled(app, guard)) == {tail: 12}
    assert consumer.calls == ["stop_flow", ("seek", tail, 12), "resume_flow"]


def test_a_tail_head_still_queued_for_its_agent_is_not_a_stall() -> None:
    # after a stall the ingest agent's channel holds a backlog of sms.raw.v1 records with the ticks' records
    # behind them: the head of a ticks partition waits there, neither taken nor acked, for seconds
    ticks, raw = TP("app-ingest-ticks", 4), TP("sms.raw.v1", 0)
    consumer = FakeConsumer(
        assigned={ticks, raw}, _acked={}, _committed_offset={ticks: 7, raw: 50}, positions={ticks: 9, raw: 80}
    )
    shared = Channel(queued(*(Message(raw, o) for o in range(50, 80)), Message(ticks, 7), Message(ticks, 8)))
    app = App(consumer, topics=Topics({ticks.topic: {shared}, raw.topic: {shared}}))
    guard = StalledPartitionGuard(checks=2)
    assert [asyncio.run(reread_stalled(app, guard)) for _ in range(4)] == [{}] * 4
    assert consumer.calls == []
    # the queue moved on, and the heads never reached the agent: dropped
    shared._queue = queued(*(Message(raw, o) for o in range(60, 80)), Message(ticks, 8))
    assert asyncio.run(reread_stalled(app, guard)) == {}
    assert asyncio.run(reread_stalled(app, guard)) == {ticks: 7, raw: 50}


def test_a_failed_re_read_is_logged_the_flow_resumes_and_the_timer_does_not_raise(caplog: Any) -> None:
    stuck = TP("sms.raw.v1", 0)
    consumer = FakeConsumer(
        assigned={stuck}, _acked={stuck: [5]}, _committed_offset={stuck: 3}, fail_seek=True
    )
    app = App(consumer)
    guard = StalledPartitionGuard(checks=1)
    assert asyncio.run(reread_stalled(app, guard)) == {}
    assert consumer.flow_active and consumer.calls == ["stop_flow", "resume_flow"]
    assert "failed" in caplog.text


def test_a_failing_check_does_not_raise(caplog: Any) -> None:
    consumer = FakeConsumer(assigned=set(), _acked=None, _committed_offset={})  # type: ignore[arg-type]
    assert asyncio.run(reread_stalled(App(consumer), StalledPartitionGuard(checks=1))) == {}
    assert consumer.calls == [] and "check failed" in caplog.text


def test_a_rebalance_that_begins_during_the_seek_keeps_the_flow_stopped_for_its_recovery() -> None:
    stuck = TP("sms.raw.v1", 0)
    consumer = FakeConsumer(assigned={stuck}, _acked={stuck: [5]}, _committed_offset={stuck: 3})
    app = App(consumer)

    def rebalance_begins() -> None:  # Faust's on_partitions_revoked: stop_flow + flow_control.suspend()
        app.flow_control.active = False

    consumer.on_seek = rebalance_begins
    assert asyncio.run(reread_stalled(app, StalledPartitionGuard(checks=1))) == {stuck: 3}
    assert not consumer.flow_active and consumer.calls == ["stop_flow", ("seek", stuck, 3)]
