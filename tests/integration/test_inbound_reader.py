"""The direct reader of sms.inbound.v1 (streams/inbound_reader.py) on a real broker: it commits only the
acked prefix of each partition, flushes before each commit, and a second reader joining takes partitions
over without losing a record (what it had not acked is read again, never skipped)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from smsflow.topics import TopicSpec, ensure_topics
from streams.inbound_reader import InboundReader, deliver_group

if TYPE_CHECKING:
    from tests.conftest import KafkaUnderTest

pytestmark = pytest.mark.integration

PARTITIONS = 3


async def wait_for(cond, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def produce(bootstrap: str, topic: str, n: int) -> list[tuple[int, int]]:
    """``n`` records, keys spread over the partitions; their (partition, offset)."""
    placed: list[tuple[int, int]] = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(n):
        p.produce(
            topic,
            f"v{i}".encode(),
            f"k{i}".encode(),
            on_delivery=lambda err, m: placed.append((m.partition(), m.offset())),
        )
    assert p.flush(30) == 0
    return placed


def committed(bootstrap: str, group: str, topic: str, partitions: int = PARTITIONS) -> dict[int, int]:
    """What ``group`` committed of ``topic`` (negative: never)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


async def stop(
    ra: InboundReader, rb: InboundReader, ta: asyncio.Task[None], tb: asyncio.Task[None] | None
) -> None:
    """Both readers stopped (commits made, groups left), then their run tasks."""
    await ra.stop()
    await rb.stop()
    ta.cancel()
    if tb is not None:
        tb.cancel()


class Stage:
    """What the deliver stage gives the reader: a handler that acks (unless told to hold a record), its gate
    and spawner, and the producer's flush (counted)."""

    def __init__(self) -> None:
        self.gate = asyncio.Semaphore(100)
        self.tasks: set[asyncio.Task[None]] = set()
        self.handled: Counter[tuple[int, int]] = Counter()
        self.hold: set[tuple[int, int]] = set()
        self.release = asyncio.Event()
        self.flushes = 0

    async def handle(self, stream: Any, event: Any) -> None:
        try:
            where = (event.message.partition, event.message.offset)
            self.handled[where] += 1
            if where in self.hold:
                await self.release.wait()
            await stream.ack(event)
        finally:
            self.gate.release()

    def spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def flush(self) -> None:
        self.flushes += 1

    def reader(self, kafka: KafkaUnderTest, app_id: str, topic: str) -> InboundReader:
        return InboundReader(
            kafka.bootstrap,
            app_id,
            self.handle,
            self.gate,
            self.spawn,
            self.flush,
            commit_interval_s=0.2,
            session_timeout_s=6,
            revoke_wait_s=2.0,
            topic=topic,
        )


async def test_only_the_acked_prefix_is_committed(kafka: KafkaUnderTest, unique: str) -> None:
    topic, app_id = f"t{unique}.sms.inbound.v1", f"app{unique}"
    ensure_topics(kafka.bootstrap, [TopicSpec(topic, PARTITIONS)])
    placed = produce(kafka.bootstrap, topic, 60)
    stage = Stage()
    # one record in the middle of partition 0 does not finish
    held = sorted(o for p, o in placed if p == 0)[5]
    stage.hold.add((0, held))
    reader = stage.reader(kafka, app_id, topic)
    task = asyncio.create_task(reader.run())
    try:
        await wait_for(lambda: sum(stage.handled.values()) == len(placed))
        ends = {p: max(o for q, o in placed if q == p) + 1 for p in range(PARTITIONS)}
        await wait_for(lambda: committed(kafka.bootstrap, deliver_group(app_id), topic) == {**ends, 0: held})
        await asyncio.sleep(0.6)  # three more commit intervals: still not past the held record
        assert committed(kafka.bootstrap, deliver_group(app_id), topic)[0] == held
        assert stage.flushes >= 1  # the producer was flushed before the commits
        stage.release.set()
        await wait_for(lambda: committed(kafka.bootstrap, deliver_group(app_id), topic) == ends)
        assert set(stage.handled.values()) == {1}
    finally:
        await reader.stop()
        task.cancel()


async def test_a_second_reader_takes_partitions_over_without_losing_a_record(
    kafka: KafkaUnderTest, unique: str
) -> None:
    topic, app_id = f"t{unique}.sms.inbound.v1", f"app{unique}"
    ensure_topics(kafka.bootstrap, [TopicSpec(topic, PARTITIONS)])
    first = produce(kafka.bootstrap, topic, 30)
    a, b = Stage(), Stage()
    # a holds one record of each partition, so whatever b is given, b reads that record again
    for p in range(PARTITIONS):
        a.hold.add((p, max(o for q, o in first if q == p)))
    ra, rb = a.reader(kafka, app_id, topic), b.reader(kafka, app_id, topic)
    ta = asyncio.create_task(ra.run())
    tb: asyncio.Task[None] | None = None
    try:
        await wait_for(lambda: sum(a.handled.values()) == len(first))
        tb = asyncio.create_task(rb.run())
        await wait_for(lambda: rb.assigned and len(ra.assigned) + len(rb.assigned) == PARTITIONS)
        a.release.set()  # the held records finish (acked by a only if a still owns their partition)
        second = produce(kafka.bootstrap, topic, 30)
        every = set(first) | set(second)
        await wait_for(lambda: every <= set(a.handled) | set(b.handled))
        ends = {p: max(o for q, o in [*first, *second] if q == p) + 1 for p in range(PARTITIONS)}
        await wait_for(lambda: committed(kafka.bootstrap, deliver_group(app_id), topic) == ends)
        # what b was given of a's unfinished records, it read again; nothing was skipped
        moved = {(p, o) for p, o in a.hold if p in rb.assigned}
        assert moved and moved <= set(b.handled)
        assert rb.stats.assignments >= 1 and ra.stats.revocations >= 1
    finally:
        await stop(ra, rb, ta, tb)


async def test_a_reader_given_no_partition_is_ready_all_the_same(kafka: KafkaUnderTest, unique: str) -> None:
    # a worker beyond the topic's partition count gets an empty assignment: it is ready (it holds nothing),
    # where one that never joined stays not ready and the watchdog ends it (streams/liveness.py)
    topic, app_id = f"t{unique}.sms.inbound.v1", f"app{unique}"
    ensure_topics(kafka.bootstrap, [TopicSpec(topic, 1)])
    a, b = Stage(), Stage()
    ra, rb = a.reader(kafka, app_id, topic), b.reader(kafka, app_id, topic)
    assert ra.not_ready() is not None
    ta = asyncio.create_task(ra.run())
    tb: asyncio.Task[None] | None = None
    try:
        await wait_for(lambda: ra.not_ready() is None)
        tb = asyncio.create_task(rb.run())
        await wait_for(lambda: rb.not_ready() is None)
        assert ra.assigned == {0} and rb.assigned == set()
    finally:
        await stop(ra, rb, ta, tb)
