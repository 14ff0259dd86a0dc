"""The fetcher's hand-over of records to the agents (streams/handoff.py): inline when it cannot block, through
Faust's ``wait_first`` (which a rebalance can abandon) whenever it could."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP
from mode.utils.queues import FlowControlEvent

import streams.handoff as handoff
from streams.handoff import handoff_cannot_block, prompt_wait_first

RAW = TP("sms.raw.v1", 3)


@dataclass
class FakeQueue:
    is_full: bool = False

    def full(self) -> bool:
        return self.is_full


@dataclass
class FakeConsumer:
    """What the hand-over looks at: the consumer's flow flags, the app's flow control, producer buffer and
    the channels each partition's records go to."""

    flow_active: bool = True
    suspend_flow: asyncio.Event = field(default_factory=asyncio.Event)
    queue: FakeQueue = field(default_factory=FakeQueue)
    app: Any = None

    def __post_init__(self) -> None:
        self.app = SimpleNamespace(
            flow_control=FlowControlEvent(),
            producer=SimpleNamespace(buffer=SimpleNamespace(size=0, max_messages=100)),
            topics=SimpleNamespace(_tp_index={RAW: [SimpleNamespace(queue=self.queue)]}),
        )
        self.app.flow_control.resume()


def message(tp: TP = RAW) -> Any:
    return SimpleNamespace(tp=tp, offset=7)


def test_a_hand_over_that_cannot_block() -> None:
    assert handoff_cannot_block(FakeConsumer(), message())
    # a partition no channel subscribes to: nothing to put anywhere
    assert handoff_cannot_block(FakeConsumer(), message(TP("other", 0)))


def test_every_way_a_hand_over_can_block_is_seen() -> None:
    c = FakeConsumer(flow_active=False)
    assert not handoff_cannot_block(c, message())
    c = FakeConsumer()
    c.suspend_flow.set()  # a rebalance began
    assert not handoff_cannot_block(c, message())
    c = FakeConsumer()
    c.app.flow_control.suspend()  # the conductor's acquire_flow_control would wait
    assert not handoff_cannot_block(c, message())
    c = FakeConsumer()
    c.app.producer.buffer.size = 101  # the conductor's wait_until_producer_ebb would wait
    assert not handoff_cannot_block(c, message())
    c = FakeConsumer(queue=FakeQueue(is_full=True))  # the channel's put would wait
    assert not handoff_cannot_block(c, message())


async def _drain_call(consumer: FakeConsumer, delivered: list[int]) -> Any:
    """The call as Faust's fetch loop makes it: ``wait_first(callback(message), suspend_flow.wait())``,
    with a callback whose parameter is named ``message`` like the conductor's."""

    async def on_message(message: Any) -> None:
        delivered.append(message.offset)

    return await prompt_wait_first(consumer, on_message(message()), consumer.suspend_flow.wait())


async def test_inline_when_it_cannot_block_faust_path_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    through_faust: list[int] = []

    async def faust_wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
        through_faust.append(len(coros))
        for c in coros:
            c.close()

    monkeypatch.setattr(handoff, "FAUST_WAIT_FIRST", faust_wait_first)
    delivered: list[int] = []
    c = FakeConsumer()
    await _drain_call(c, delivered)
    assert delivered == [7] and through_faust == []  # inline: the record reached its channel at once
    c.queue.is_full = True
    await _drain_call(c, delivered)
    assert delivered == [7] and through_faust == [2]  # could block: Faust's wait_first, abandonable


async def test_inline_needs_no_turn_of_the_event_loop() -> None:
    # The point of the patch: another task gets no turn between the call and the record's arrival.
    delivered: list[int] = []
    others: list[str] = []

    async def other() -> None:
        others.append("ran")

    task = asyncio.ensure_future(other())
    await _drain_call(FakeConsumer(), delivered)
    assert delivered == [7] and others == []
    await task


async def test_other_calls_go_to_faust_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    async def faust_wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
        seen.append(timeout)
        for c in coros:
            c.close()

    monkeypatch.setattr(handoff, "FAUST_WAIT_FIRST", faust_wait_first)

    async def job() -> None:
        return None

    c = FakeConsumer()
    await prompt_wait_first(c, job(), c.suspend_flow.wait(), timeout=1.0)  # a timeout: not the fetch loop
    await prompt_wait_first(c, job(), job())  # not a suspend_flow wait
    assert seen == [1.0, None]
