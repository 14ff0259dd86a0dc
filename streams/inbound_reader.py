"""sms.inbound.v1 read for the deliver stage by a confluent-kafka consumer of its own, not by Faust's.

``worker.inbound_reader: direct``. The deliver stage's handling of each message is unchanged
(``DeliverStage._deliver_one``: subscriptions, holdings, the engine, events, retry records); only who reads
the topic and commits its offsets changes. Why (ADR 0007, "Step 3: what it settles"): Faust's aiokafka
consumer encodes and parses every one of the worker's ~55 partitions in Python on every fetch round, ~2-3 ms
of a core per round here; at a low rate every SMS is a round of its own. librdkafka's fetch sessions make a
round a few microseconds, and its batches need no per-record hand-over through Faust's conductor.

How it keeps the deliver agent's guarantees:

- **Commit only what is durable, in order.** Each record is acked by ``_deliver_one`` once every target's
  outcome was handed to the producer; ``AckedPrefix`` keeps, per partition, the offsets read and the ones
  acked, and only the contiguous acked prefix is committable. Before a commit the worker's producer is
  flushed (acks=all), so every output of those records is stored first (Invariant A, docs/consistency.md).
  A crash replays the records after the committed offset; their webhooks carry the same webhook-id.
- **Bounded work in flight**: a record is taken only with a slot of the stage's gate
  (``MAX_EVENTS_IN_FLIGHT``); the poll thread waits for it, so a slow endpoint backs the reader up no further
  than the gate (and the sender defers a message that waits longer than its timeout for an endpoint slot).
- **Overload stays in Kafka**: a record is taken only while fewer than ``LoopLoad.limit`` are in flight, a
  bound between 512 and the gate's size that halves whenever the event loop is saturated and grows while it
  is not (``smsflow.event_loop.LoopLoad``). Offered more than the worker's CPU can deliver, the gate would
  otherwise fill with seconds of queue, messages would wait past their endpoint-slot timeout and be
  deferred to the retry topic, and each deferral is more work (measured: 1,000 SMS/s offered, 29,000
  deferrals, 177 instead of 261 SMS/s delivered). A loop idle while records wait (slow or hanging
  endpoints) is not saturated: the bound climbs to the gate's size and slow endpoints only hold gate slots.
- **Rebalances**: its own group ``<app_id>-deliver`` (cooperative-sticky, static membership with the worker's
  instance id + ``-deliver``). A revoked partition's records in flight get up to ``REVOKE_WAIT_S`` to finish;
  then its acked prefix is committed (after a flush) and it is forgotten; what was still in flight is read
  again by the new owner. A partition this group never committed starts where the Faust group (``app_id``)
  committed it, so a switch from the deliver agent re-delivers nothing that agent had committed.
- **Never both readers**: the worker refuses to start with ``direct`` while members of the Faust group read
  sms.inbound.v1, and with ``faust`` while members of ``<app_id>-deliver`` do (smsflow/roles.py).

One thread polls (every call on the consumer happens in it, rebalance callbacks and commits included); the
records go to the worker's event loop, where the stage handles them as the agent did.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

from smsflow.event_loop import LoopLoad
from smsflow.ingest.loop import group_committed
from smsflow.schemas import INBOUND_TOPIC

log = logging.getLogger(__name__)

REVOKE_WAIT_S = 10.0  # records in flight of a revoked partition: how long they may take to finish
# records in flight a saturated loop still takes (~1-2 s of a saturated worker's delivery)
SATURATED_IN_FLIGHT = 512
COMMIT_INTERVAL_S = 1.0


def deliver_group(app_id: str) -> str:
    """The direct reader's consumer group (Faust's group is ``app_id``)."""
    return f"{app_id}-deliver"


def inbound_reader_group(app_id: str, reader: str) -> str:
    """The consumer group that reads sms.inbound.v1 for the deliver stage with ``worker.inbound_reader`` =
    ``reader``: the direct reader's, or Faust's (``app_id``)."""
    return deliver_group(app_id) if reader == "direct" else app_id


class AckedPrefix:
    """Per partition: the offsets read, in order, and which of them are acked; what may be committed is the
    next offset after the contiguous acked prefix (as Faust's ``Consumer._new_offset`` does)."""

    def __init__(self) -> None:
        self._read: dict[int, deque[int]] = {}
        self._acked: dict[int, set[int]] = {}
        self._next: dict[int, int] = {}  # partition -> next offset after the acked prefix (not yet committed)
        self._last: dict[int, int] = {}  # partition -> the last offset read

    def read(self, partition: int, offset: int) -> bool:
        """Track a record; False when it is not after the last one read of its partition (read again)."""
        last = self._last.get(partition)
        if last is not None and offset <= last:
            return False
        self._last[partition] = offset
        self._read.setdefault(partition, deque()).append(offset)
        return True

    def ack(self, partition: int, offset: int) -> None:
        q = self._read.get(partition)
        if not q:
            return  # the partition was forgotten (revoked) meanwhile
        acked = self._acked.setdefault(partition, set())
        acked.add(offset)
        while q and q[0] in acked:
            done = q.popleft()
            acked.discard(done)
            self._next[partition] = done + 1

    def in_flight(self, partition: int) -> int:
        return len(self._read.get(partition, ()))

    def committable(self, partitions: Iterable[int] | None = None) -> dict[int, int]:
        """Partition -> offset to commit, for the partitions whose acked prefix moved since ``committed``."""
        ps = self._next if partitions is None else {p: self._next[p] for p in partitions if p in self._next}
        return dict(ps)

    def committed(self, offsets: dict[int, int]) -> None:
        for p, o in offsets.items():
            if self._next.get(p) == o:
                del self._next[p]

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._read.pop(p, None)
            self._acked.pop(p, None)
            self._next.pop(p, None)
            self._last.pop(p, None)


@dataclass
class ReaderStats:
    records: int = 0
    read_again: int = 0
    commits: int = 0
    commit_failures: int = 0
    assignments: int = 0
    revocations: int = 0
    revoked_in_flight: int = 0
    in_flight: int = 0  # records taken whose handling has not finished
    in_flight_limit: int = 0  # LoopLoad.limit, as last seen (at each record taken, and while waiting)
    saturated_waits: int = 0  # times a record waited for the in-flight bound (the loop was saturated)
    saturated_wait_s: float = 0.0


@dataclass
class _Msg:
    partition: int
    offset: int


@dataclass
class _Event:
    """What ``DeliverStage._deliver_one`` reads of a Faust event."""

    value: bytes | None
    headers: list[tuple[str, bytes]]
    message: _Msg


class InboundReader:
    """Reads sms.inbound.v1 and hands each record to ``handle(stream, event)`` (the stage's
    ``_deliver_one``) with a slot of ``gate`` taken; ``flush`` makes every output handed to the producer
    so far durable (the Faust producer's flush)."""

    def __init__(
        self,
        bootstrap: str,
        app_id: str,
        handle: Callable[[Any, Any], Any],
        gate: asyncio.Semaphore,
        spawn: Callable[[Any], None],
        flush: Callable[[], Any],
        *,
        session_timeout_s: float = 10.0,
        heartbeat_interval_s: float = 1.0,
        instance_id: str | None = None,
        batch_max: int = 500,
        commit_interval_s: float = COMMIT_INTERVAL_S,
        consumer_conf: dict[str, Any] | None = None,
        on_failure: Callable[[str], None] | None = None,
        topic: str = INBOUND_TOPIC,
        revoke_wait_s: float = REVOKE_WAIT_S,
        load: LoopLoad | None = None,
        max_in_flight: int = 4096,
    ) -> None:
        """``max_in_flight``: the slots of ``gate`` (the bound's ceiling)."""
        self.load = load if load is not None else LoopLoad(SATURATED_IN_FLIGHT, max_in_flight)
        self.revoke_wait_s = revoke_wait_s
        self.topic = topic
        self.bootstrap = bootstrap
        self.on_failure = on_failure  # the worker's watchdog: a reader that cannot read ends the process
        self.app_id = app_id
        self.handle = handle
        self.gate = gate
        self.spawn = spawn
        self.flush = flush
        self.batch_max = batch_max
        self.commit_interval_s = commit_interval_s
        self.acks = AckedPrefix()
        self.stats = ReaderStats()
        self.assigned: set[int] = set()
        self.ready = False
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._to_commit: dict[int, int] = {}  # flushed and ready, committed by the poll thread
        self._lock = threading.Lock()
        self.failed: BaseException | None = None
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": deliver_group(app_id),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": int(session_timeout_s * 1000),
            "heartbeat.interval.ms": int(heartbeat_interval_s * 1000),
            "fetch.wait.max.ms": 500,
        }
        if instance_id:
            conf["group.instance.id"] = f"{instance_id}-deliver"
        conf.update(consumer_conf or {})
        self._conf = conf
        self.consumer: Consumer | None = None

    def not_ready(self) -> str | None:
        """Why this reader cannot deliver yet (the worker's readiness, streams/liveness.py), or None. A worker
        whose reader never joins its group (broker ACLs, a group coordinator that never answers) stays not
        ready and, after ``worker.max_not_ready_s``, exits so that its partitions move on."""
        if self.failed is not None:
            return f"the inbound reader failed: {self.failed!r}"
        if not self.ready:
            return f"the inbound reader has not joined group {deliver_group(self.app_id)} yet"
        return None

    # ---- the event loop's side ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Start the poll thread, then commit the acked prefix every ``commit_interval_s`` until stopped."""
        self._loop = asyncio.get_running_loop()
        self._running = True
        self.consumer = Consumer(self._conf)
        sampler = asyncio.ensure_future(self.load.run())
        self._thread = threading.Thread(target=self._poll_thread, name="inbound-reader", daemon=True)
        self._thread.start()
        try:
            while self._running:
                await asyncio.sleep(self.commit_interval_s)
                await self.prepare_commit()
                if self.failed is not None:
                    raise RuntimeError(f"inbound reader: the poll thread failed: {self.failed}")
        finally:
            self._running = False
            sampler.cancel()

    async def prepare_commit(self, partitions: Iterable[int] | None = None) -> dict[int, int]:
        """Flush the producer, then hand the acked prefix (as it was before the flush) to the poll thread."""
        # a late ack of a partition revoked meanwhile may leave an entry behind: never ours to commit
        offsets = {p: o for p, o in self.acks.committable(partitions).items() if p in self.assigned}
        if not offsets:
            return {}
        await self.flush()
        with self._lock:
            for p, o in offsets.items():
                self._to_commit[p] = max(o, self._to_commit.get(p, o))
        return offsets

    async def stop(self) -> None:
        """Stop reading; what is acked by now is flushed and committed; the consumer leaves its group."""
        if self._thread is None:
            return
        await self.prepare_commit()
        self._running = False
        await asyncio.to_thread(self._thread.join, 30)

    async def stop_on_shutdown(self, app: Any, **kwargs: Any) -> None:
        """The worker's ``on_before_shutdown`` hook."""
        await self.stop()

    async def _accept(self, records: list[Any]) -> None:
        """A batch from the poll thread: each record gets a slot of the gate and a task of the stage."""
        stream = _AckingStream(self)
        for rec in records:
            err = rec.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("inbound reader: consumer error: %s", err)
                continue
            partition, offset = rec.partition(), rec.offset()
            if partition not in self.assigned:
                continue  # revoked inside the same poll
            if not self.acks.read(partition, offset):
                self.stats.read_again += 1
                continue
            self.stats.records += 1
            if self.stats.in_flight >= self.load.limit:
                await self._wait_while_saturated()
            await self.gate.acquire()
            event = _Event(rec.value(), rec.headers() or [], _Msg(partition, offset))
            self.stats.in_flight += 1
            self.load.observe(self.stats.in_flight)
            self.stats.in_flight_limit = self.load.limit
            self.spawn(self._handled(stream, event))

    async def _handled(self, stream: _AckingStream, event: _Event) -> None:
        try:
            await self.handle(stream, event)
        finally:
            self.stats.in_flight -= 1

    async def _wait_while_saturated(self) -> None:
        """Until fewer than ``LoopLoad.limit`` records are in flight (they finish, or the loop has room)."""
        t0 = time.monotonic()
        self.stats.saturated_waits += 1
        while self.stats.in_flight >= self.load.limit:
            self.stats.in_flight_limit = self.load.limit
            await asyncio.sleep(self.load.interval_s / 5)
        self.stats.in_flight_limit = self.load.limit
        self.stats.saturated_wait_s += time.monotonic() - t0

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        """Run ``coro`` on the event loop from the poll thread and wait for it."""
        assert self._loop is not None
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except FutureTimeout:
            fut.cancel()
            raise

    # ---- the poll thread ---------------------------------------------------------------------------------
    def _poll_thread(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        try:
            consumer.subscribe(
                [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
            while self._running:
                self._commit_ready()
                first = consumer.poll(0.2)
                if first is None:
                    continue
                records = [first, *consumer.consume(self.batch_max - 1, timeout=0)]
                self._call(self._accept(records))
            self._commit_ready()
        except BaseException as exc:  # a worker that reads nothing must not look alive: the watchdog ends it
            log.exception("inbound reader: poll thread failed")
            self.failed = exc
            if self.on_failure is not None and self._running:
                self.on_failure(f"the inbound reader stopped: {exc!r}")
        finally:
            try:
                consumer.close()  # leaves the group; the revocation callback commits what is ready
            except (KafkaException, RuntimeError) as exc:
                log.warning("inbound reader: consumer close: %s", exc)

    def _commit_ready(self) -> bool:
        with self._lock:
            pending, self._to_commit = self._to_commit, {}
        pending = {p: o for p, o in pending.items() if p in self.assigned}
        if not pending:
            return True
        assert self.consumer is not None
        offsets = [TopicPartition(self.topic, p, o) for p, o in pending.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # stored outputs, offsets not: tried again with the next commit (or replayed by the next owner,
            # under the same webhook-ids)
            self.stats.commit_failures += 1
            log.warning("inbound reader: commit of %s failed: %s", pending, exc)
            with self._lock:
                for p, o in pending.items():
                    self._to_commit[p] = max(o, self._to_commit.get(p, o))
            return False
        self.stats.commits += 1
        self.acks.committed(pending)
        return True

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        ps = sorted(tp.partition for tp in partitions if tp.topic == self.topic)
        self.stats.assignments += 1
        committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=30)}
        never = [p for p in ps if committed.get(p, OFFSET_INVALID) < 0]
        if never:
            for p, o in self._faust_committed(never).items():
                if o >= 0:
                    committed[p] = o
        self.acks.forget(ps)
        self.assigned.update(ps)
        consumer.incremental_assign(
            [TopicPartition(self.topic, p, committed.get(p, OFFSET_INVALID)) for p in ps]
        )
        self.ready = True
        if ps:
            log.warning(
                "inbound reader: assigned %s (start offsets %s)", ps, {p: committed.get(p) for p in ps}
            )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        ps = [tp.partition for tp in partitions if tp.topic == self.topic]
        self.stats.revocations += 1
        if ps and self._loop is not None and not self._loop.is_closed():
            try:
                self._call(self._drain(ps), self.revoke_wait_s + 30)
            except Exception as exc:  # the loop is gone or the flush failed: the new owner replays them
                log.warning("inbound reader: revoking %s without a final commit: %s", ps, exc)
            self._commit_ready()
        self._forget(ps, "revoked")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget([tp.partition for tp in partitions if tp.topic == self.topic], "lost")

    def _forget(self, ps: list[int], why: str) -> None:
        # ``assigned`` first: an ack arriving from the event loop from now on is for a partition not ours
        for p in ps:
            self.assigned.discard(p)
            self.stats.revoked_in_flight += self.acks.in_flight(p)
        self.acks.forget(ps)
        with self._lock:
            for p in ps:
                self._to_commit.pop(p, None)
        if ps:
            log.warning("inbound reader: partitions %s %s", sorted(ps), why)

    async def _drain(self, ps: list[int]) -> None:
        """A revocation: let the partitions' records in flight finish (bounded), then flush and hand their
        acked prefix to the poll thread's commit."""
        deadline = time.monotonic() + self.revoke_wait_s
        while any(self.acks.in_flight(p) for p in ps) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.prepare_commit(ps)

    def _faust_committed(self, ps: list[int]) -> dict[int, int]:
        """Where the Faust worker's group (``app_id``) committed these partitions of sms.inbound.v1: a switch
        from the deliver agent starts where it stopped."""
        return group_committed(self.bootstrap, self.app_id, self.topic, ps)


class _AckingStream:
    """The ``stream.ack(event)`` that ``DeliverStage._deliver_one`` calls, for the reader's records."""

    def __init__(self, reader: InboundReader) -> None:
        self.reader = reader

    async def ack(self, event: _Event) -> None:
        if event.message.partition in self.reader.assigned:
            self.reader.acks.ack(event.message.partition, event.message.offset)
