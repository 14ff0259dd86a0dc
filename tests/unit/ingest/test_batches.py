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
from faust.types.tuples import ConsumerMessage

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


def test_each_record_of_a_batch_is_handled_as_the_current_event_in_log_order() -> None:
    stage = _stage()
    seen: list[tuple[str, int, int]] = []

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
    asyncio.run(stage.handle_batch(batch))
    assert seen == [(e.message.topic, e.message.partition, e.message.offset) for e in batch]
    assert faust.streams.current_event() is None  # nothing leaks past the batch


def test_records_a_platform_failure_left_unhandled_are_never_acked() -> None:
    """A platform failure (WorkerCannotProcess) propagates and the worker exits to replay from its committed
    offsets. Faust's take_events acks the whole batch on the way out: the record that failed and those after
    it must not reach the consumer's acked set, or a commit before the exit would skip them."""
    stage = _stage()
    handled: list[int] = []

    async def handle(event: Any) -> None:
        if event.message.offset == 2:
            raise WorkerCannotProcess("broker gone")
        handled.append(event.message.offset)

    stage.handle = handle  # type: ignore[method-assign]
    batch = [_RealEvent(n) for n in range(5)]
    with pytest.raises(WorkerCannotProcess):
        asyncio.run(stage.handle_batch(batch))
    assert handled == [0, 1]
    consumer = _AckingConsumer()
    for event in batch:  # what take_events' finally does with the batch
        event.message.ack(consumer)
    assert consumer.acked == [0, 1]
    assert faust.streams.current_event() is None


class _AckingConsumer:
    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, message: ConsumerMessage) -> bool:
        self.acked.append(message.offset)
        return True


class _RealEvent:
    """An event around Faust's own consumer message, whose ack() decides what the consumer may commit."""

    def __init__(self, offset: int) -> None:
        self.message = ConsumerMessage("sms.raw.v1", 0, offset, 0.0, 0, None, b"k", b"v", None)
        self.message.refcount = 1
