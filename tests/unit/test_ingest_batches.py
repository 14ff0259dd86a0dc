"""Issue 13: the ingest agent handles raw records in batches. Faust writes a table key's changelog record
to the partition of ``faust.streams.current_event()``; inside a batch of records from several partitions
that must be the record being handled, or a partial/seen entry lands in another partition's changelog and
is lost to the worker that recovers that partition."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import faust.streams

from streams.ingest import IngestStage


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


def test_a_record_that_fails_the_platform_stops_the_batch_there() -> None:
    """A platform failure (WorkerCannotProcess) propagates: the rest of the batch is not handled (nor
    acked), so a restart reads it again from the committed offset."""
    stage = _stage()
    handled: list[int] = []

    async def handle(event: Any) -> None:
        if event.message.offset == 2:
            raise RuntimeError("broker gone")
        handled.append(event.message.offset)

    stage.handle = handle  # type: ignore[method-assign]
    batch = [_event("sms.raw.v1", 0, n) for n in range(4)]
    try:
        asyncio.run(stage.handle_batch(batch))
    except RuntimeError:
        pass
    else:
        raise AssertionError("the failure did not propagate")
    assert handled == [0, 1]
    assert faust.streams.current_event() is None
