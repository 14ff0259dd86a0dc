"""Issue 13: the ingest agent handles raw records in batches. Faust writes a table key's changelog record
to the partition of ``faust.streams.current_event()``; inside a batch of records from several partitions
that must be the record being handled, or a partial/seen entry lands in another partition's changelog and
is lost to the worker that recovers that partition."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import faust.streams
import pytest

from streams.ingest import IngestStage
from streams.liveness import WorkerCannotProcess


class _Event:
    """Faust refers to the current event weakly, as to its own Event."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.message = SimpleNamespace(topic=topic, partition=partition, offset=offset)


_event = _Event


def _stage() -> IngestStage:
    punctuation = SimpleNamespace(get_topic_name=lambda: "app-ingest-ticks")
    return IngestStage(
        app=None,  # type: ignore[arg-type]
        ctx=None,  # type: ignore[arg-type]
        processor=None,  # type: ignore[arg-type]
        outputs={},
        punctuation=punctuation,  # type: ignore[arg-type]
        batch_max=64,
    )


class _Stream:
    """What the agent sees of Faust's stream: events (not acked by the iteration), ack, and the queue of
    records fetched and not yet handed out."""

    def __init__(self, events: list[Any], waiting_after: dict[int, int]) -> None:
        self.pending = events
        self.acked: list[int] = []
        self.queue = SimpleNamespace(empty=self._empty)
        self.channel = SimpleNamespace(queue=self.queue)
        self._i = 0
        self._waiting_after = waiting_after  # offset -> how many records are queued behind it

    def _empty(self) -> bool:
        return self._waiting_after.get(self.pending[self._i - 1].message.offset, 0) == 0

    def noack(self) -> _Stream:
        return self

    async def events(self) -> Any:
        for event in self.pending:
            self._i += 1
            yield event

    async def ack(self, event: Any) -> bool:
        self.acked.append(event.message.offset)
        return True


def test_a_batch_is_what_is_already_waiting_never_a_wait_for_more() -> None:
    stage = _stage()
    batches: list[list[int]] = []

    async def handle_batch(stream: Any, events: Any) -> None:
        batches.append([e.message.offset for e in events])

    stage.handle_batch = handle_batch  # type: ignore[method-assign]
    events = [_event("sms.raw.v1", 0, n) for n in range(6)]
    # 0 arrives alone; 1 with 2 and 3 queued behind it; 4 alone; 5 alone
    stream = _Stream(events, {1: 2, 2: 1})
    asyncio.run(stage.process(stream))  # type: ignore[arg-type]
    assert batches == [[0], [1, 2, 3], [4], [5]]


def test_each_record_of_a_batch_is_handled_as_the_current_event_in_log_order() -> None:
    stage = _stage()
    seen: list[tuple[str, int, int]] = []
    stream = _Stream([], {})

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
    stream = _Stream([], {})

    async def handle(event: Any) -> None:
        if event.message.offset == 2:
            raise WorkerCannotProcess("broker gone")

    stage.handle = handle  # type: ignore[method-assign]
    batch = [_event("sms.raw.v1", 0, n) for n in range(5)]
    with pytest.raises(WorkerCannotProcess):
        asyncio.run(stage.handle_batch(stream, batch))
    assert stream.acked == [0, 1]
    assert faust.streams.current_event() is None
