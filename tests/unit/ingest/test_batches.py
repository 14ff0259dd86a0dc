"""Issue 13: the ingest agent handles raw records in batches. Faust writes a table key's changelog record
to the partition of ``faust.streams.current_event()``; inside a batch of records from several partitions
that must be the record being handled, or a partial/seen entry lands in another partition's changelog and
is lost to the worker that recovers that partition."""

from __future__ import annotations

import asyncio
from collections import deque
from types import SimpleNamespace
from typing import Any

import faust.streams
import pytest

from streams.ingest import IngestStage
from streams.liveness import WorkerCannotProcess


class _Event:
    """Faust refers to the current event weakly, as to its own Event."""

    def __init__(self, topic: str, partition: int, offset: int, generation: int = 1) -> None:
        self.message = SimpleNamespace(
            topic=topic, partition=partition, offset=offset, generation_id=generation
        )


_event = _Event


class _App:
    """What the batch asks of the app: is the flow on, which consumer generation is current."""

    def __init__(self) -> None:
        self.flow_control = SimpleNamespace(is_active=lambda: True)
        self.consumer_generation_id = 1


def _stage() -> IngestStage:
    punctuation = SimpleNamespace(get_topic_name=lambda: "app-ingest-ticks")
    return IngestStage(
        app=_App(),  # type: ignore[arg-type]
        ctx=None,  # type: ignore[arg-type]
        processor=None,  # type: ignore[arg-type]
        outputs={},
        punctuation=punctuation,  # type: ignore[arg-type]
        batch_max=64,
    )


class _Stream:
    """What the agent sees of Faust's stream: events (not acked by the iteration), ack, and the queue of
    records fetched and not yet handed out (``arrivals``: the records that arrive together)."""

    def __init__(self, arrivals: list[list[Any]]) -> None:
        self.arrivals = arrivals
        self.acked: list[int] = []
        self.queue = SimpleNamespace(_queue=deque(), _errors=deque())
        self.channel = SimpleNamespace(queue=self.queue)

    def noack(self) -> _Stream:
        return self

    async def events(self) -> Any:
        for arrival in self.arrivals:
            self.queue._queue.extend(arrival)
            while self.queue._queue:
                yield self.queue._queue.popleft()

    async def ack(self, event: Any) -> bool:
        self.acked.append(event.message.offset)
        return True


def _handled_batches(stage: IngestStage, stream: _Stream) -> list[list[int]]:
    batches: list[list[int]] = []

    async def handle_batch(stream: Any, events: Any) -> None:
        batches.append([e.message.offset for e in events])

    stage.handle_batch = handle_batch  # type: ignore[method-assign]
    asyncio.run(stage.process(stream))  # type: ignore[arg-type]
    return batches


def test_a_batch_is_what_is_already_waiting_never_a_wait_for_more() -> None:
    e = [_event("sms.raw.v1", 0, n) for n in range(6)]
    # 0 arrives alone; 1, 2 and 3 together; 4 alone; 5 alone
    stream = _Stream([[e[0]], [e[1], e[2], e[3]], [e[4]], [e[5]]])
    assert _handled_batches(_stage(), stream) == [[0], [1, 2, 3], [4], [5]]


def test_a_batch_does_not_wait_behind_a_record_the_stream_will_skip() -> None:
    """Faust's stream skips a record fetched before a rebalance (an older consumer generation) and then
    waits for the next arrival: the records taken before it form a batch of their own, handled at once,
    not held until something else arrives (this fake hands the stale record out, Faust would not)."""
    stage = _stage()
    stage.app.consumer_generation_id = 2  # type: ignore[attr-defined]
    fresh = [_event("sms.raw.v1", 0, n, generation=2) for n in range(3)]
    stale = _event("sms.raw.v1", 0, 9, generation=1)
    batches = _handled_batches(stage, _Stream([[fresh[0], fresh[1], stale], [fresh[2]]]))
    assert batches[0] == [0, 1]


def test_each_record_of_a_batch_is_handled_as_the_current_event_in_log_order() -> None:
    stage = _stage()
    seen: list[tuple[str, int, int]] = []
    stream = _Stream([])

    async def handle(event: Any) -> None:
        current = faust.streams.current_event()
        assert current is event  # what a table write in this handler keys its changelog partition on
        seen.append((event.message.topic, event.message.partition, event.message.offset))
        await asyncio.sleep(0)  # a handler that yields keeps its own current event

    stage.handle = handle  # type: ignore[method-assign]
    batch = [
        _event("sms.raw.v1", 3, 10),
        _event("sms.raw.v1", 1, 7),
        _event("app-ingest-ticks", 3, 2),
        _event("sms.raw.v1", 3, 11),
    ]
    asyncio.run(stage.handle_batch(stream, batch))
    assert seen == [(e.message.topic, e.message.partition, e.message.offset) for e in batch]
    assert stream.acked == [10, 7, 2, 11]  # each once handled
    assert faust.streams.current_event() is None  # nothing leaks past the batch


def test_records_a_platform_failure_left_unhandled_are_never_acked() -> None:
    """A platform failure (WorkerCannotProcess) propagates and the worker exits to replay from its committed
    offsets: the record that failed and those after it in the batch must not be acked, or a commit before
    the exit would skip them."""
    stage = _stage()
    stream = _Stream([])

    async def handle(event: Any) -> None:
        if event.message.offset == 2:
            raise WorkerCannotProcess("broker gone")

    stage.handle = handle  # type: ignore[method-assign]
    batch = [_event("sms.raw.v1", 0, n) for n in range(5)]
    with pytest.raises(WorkerCannotProcess):
        asyncio.run(stage.handle_batch(stream, batch))
    assert stream.acked == [0, 1]
    assert faust.streams.current_event() is None
