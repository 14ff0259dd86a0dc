"""Resend and recover, for the subscriptions API: find stored messages in Kafka and queue them again.

Both put ordinary retry records (attempt 1, due now) on ``sms.webhook.retry.v1``; the delivery agent sends
them like any retry, signed, under the message id as ``webhook-id``. Each one is preceded by a ``queued``
event on ``sms.delivery.v1``, so the history shows why the message went out again.

Finding one message (resend). ``sms.inbound.v1`` is keyed by destination number, not by message id, so the id
alone does not say where the message is. The delivery history does: ``sms.delivery.v1`` is keyed by message
id, so all events of a message are in one partition, the one the key hashes to (murmur2, the Java client's
partitioner, which Faust's producer and ours both use). The first event there gives the time the message was
matched; the inbound record was written just before that, so the search reads every inbound partition from
``search_window_s`` before that time to a minute after it. Only when that misses (a message that never
matched any subscription has no history) is the whole retained topic read. Record keys and raw bytes are
compared before anything is decoded, so a scan costs little more than reading the bytes.

Tenant isolation: a message is queued for a subscription only if the subscription receives it now — its filter
matches AND its owner holds the message (``holdings.receives``). A resend of a message the subscription does
not receive answers exactly like an unknown message id (404), so ids cannot be probed across tenants.

Recover (``since``): every inbound message stored at or after ``since`` (by record timestamp) that the
subscription receives (filter and holding), except those whose latest delivery state for this subscription
shows it delivered or still in progress (queued, being sent, retry scheduled). So it picks up what was
dead-lettered or expired, and what never reached this subscription (it was disabled, or created later, or
its filter changed).

Recover and the deliver stage. A message the deliver stage has read but not finished has no complete
history yet: its events wait in the worker's outputs producer until the flush that precedes the stage's next
offset commit (up to ~1 s, roles.DELIVERY_OUTPUTS_LINGER_MS), and one it has not read has none at all. Read
then, the history would make recover queue a message the subscription is being sent anyway: a second
delivery. So recover first notes where each inbound partition ends, waits (``settle_s``) until the deliver
stage's group has committed up to there — every message before a committed offset has its events in
``sms.delivery.v1``, Invariant A — and only then reads the history. Where the wait ends first (no worker, or
one far behind) it scans only to the committed offset and reports how many records it left
(``RecoverOutcome.not_examined``): the deliver stage sends those itself when it reads them, to every
subscription that receives them then.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka.partitioner import murmur2
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from smsflow.delivery.records import event_record, queued_event, requeue_record
from smsflow.delivery.scan_slots import ScanSlots
from smsflow.ingest.loop import committed_offsets, group_peer
from smsflow.payload import webhook_payload
from smsflow.producer import AsyncProducer, producer_conf
from smsflow.schemas import DELIVERY_TOPIC, INBOUND_TOPIC, WEBHOOK_RETRY_TOPIC
from smsflow.serde import Serde
from smsflow.subscriptions.holdings import Holding, receives
from smsflow.subscriptions.model import Subscription

log = logging.getLogger(__name__)

# Latest states after which recover queues a message again; any other state means delivered or in progress.
REQUEUE_AFTER = frozenset({"dead_lettered", "expired"})
# Not a state of the message's delivery: emitted alongside the attempt that disabled the endpoint.
OPERATIONAL_STATES = frozenset({"endpoint_disabled"})
CHUNK = 500

Ranges = dict[int, tuple[int, int]]  # partition -> [start, end) offsets


@dataclass(frozen=True)
class RecoverOutcome:
    queued: int  # messages queued again
    not_examined: int  # inbound records past the deliver stage's committed offsets, left to it


async def settled_ends(
    starts: dict[int, int],
    ends: dict[int, int],
    committed: Callable[[list[int]], Awaitable[dict[int, int]]],
    timeout_s: float,
    *,
    interval_s: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> dict[int, int]:
    """Per inbound partition, where recover's scan may end: ``ends`` once the deliver stage's group has
    committed that far (``committed(partitions)``: its offsets, negative where it never committed), asked
    every ``interval_s``; after ``timeout_s``, the committed offset (not below ``starts``) where it has not.
    Partitions with nothing to scan (start >= end) are not waited for. Waits without holding a thread or a
    scan slot: a recover that waits for a lagging worker keeps nobody else waiting."""
    waiting = [p for p in ends if starts.get(p, 0) < ends[p]]
    deadline = clock() + timeout_s
    got: dict[int, int] = {}
    while waiting:
        got = await committed(waiting)
        waiting = [p for p in waiting if got.get(p, -1) < ends[p]]
        if not waiting or clock() >= deadline:
            break
        await sleep(interval_s)
    out = dict(ends)
    for p in waiting:
        out[p] = min(ends[p], max(starts.get(p, 0), got.get(p, -1)))
    return out


class _ScanAbandoned(Exception):
    """Raised in recover's scan thread when nobody will take what it finds any more."""


_HAND_OVER_CHECK_S = 0.25  # how often a scan thread waiting to hand over a chunk checks it is still wanted


def _log_scan_failure(scanner: asyncio.Future[None]) -> None:
    if not scanner.cancelled() and scanner.exception() is not None:
        log.warning("recover: the abandoned scan failed too: %s", scanner.exception())


def key_partition(key: bytes, partitions: int) -> int:
    """The partition a keyed record lands on (Java client / aiokafka / librdkafka murmur2 partitioner)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Redelivery:
    def __init__(
        self,
        bootstrap: str,
        serde: Serde,
        *,
        holding_of: Callable[[str], Holding | None],
        history_lookback_s: float = 7 * 86400.0,
        search_window_s: float = 3600.0,
        poll_timeout_s: float = 1.0,
        deliver_group: str | None = None,
        settle_s: float = 30.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.serde = serde
        self.holding_of = holding_of  # the owner's current holding (the subscription store's table)
        self.history_lookback_s = history_lookback_s
        self.search_window_s = search_window_s
        self.poll_timeout_s = poll_timeout_s
        # the consumer group of the deliver stage's inbound reader (None: recover does not wait for it)
        self.deliver_group = deliver_group
        self.settle_s = settle_s
        self._producer: AsyncProducer | None = None
        # scans read whole partitions: a few at a time, shared fairly between owners (scan_slots.py)
        self.slots = ScanSlots()

    async def start(self) -> None:
        # murmur2 like Faust's producer, so a queued event joins the message's history partition
        self._producer = AsyncProducer(producer_conf(self.bootstrap, partitioner="murmur2_random"))

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.close()

    # ---- the API callbacks ----

    async def resend(self, message_id: str, sub: Subscription) -> bool:
        """Queue one message for ``sub``; False if it is unknown to it. ``scan_slots.Busy`` when the owner has
        too many requests in progress."""
        async with self.slots.admit(sub.owner):
            async with self.slots.hold(sub.owner):
                msg = await asyncio.to_thread(self.find_message, message_id)
            if msg is None or not self._receives(sub, msg):
                return False
            await self._requeue(sub, [webhook_payload(msg)], "queued again by resend")
        log.info("resend: %s queued for %s", message_id, sub.id)
        return True

    async def recover(self, sub: Subscription, since: dt.datetime) -> RecoverOutcome:
        """Queue again what ``sub`` should have and has not had since ``since`` (module docstring).
        ``scan_slots.Busy`` when the owner has too many requests in progress."""
        since_ms = int(since.timestamp() * 1000)
        async with self.slots.admit(sub.owner):
            # 1. where the inbound messages since then lie, and the deliver stage past them (no slot held)
            in_start, in_end = await asyncio.to_thread(self.inbound_range, since_ms)
            scan_end = await self._settled(in_start, in_end)
            left = sum(in_end[p] - scan_end[p] for p in in_end)
            if left:
                log.warning(
                    "recover: the deliver stage (group %s) has not finished %d inbound records after %.0f s; "
                    "left to it",
                    self.deliver_group,
                    left,
                    self.settle_s,
                )
            # 2. and 3., in the owner's turn for a scan slot
            loop = asyncio.get_running_loop()
            chunks: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(maxsize=4)
            abandoned = threading.Event()  # the queueing side failed or was cancelled: the scan stops

            def hand_over(chunk: list[dict[str, Any]] | None) -> None:
                # blocks the scanning thread while the queue is full: back-pressure, bounded memory; but never
                # after the queueing side is gone (Kafka refused a requeue, the client went away): the thread
                # would wait for a reader that never comes, holding its consumer, for ever
                put = asyncio.run_coroutine_threadsafe(chunks.put(chunk), loop)
                while True:
                    if abandoned.is_set():
                        put.cancel()
                        raise _ScanAbandoned
                    try:
                        put.result(timeout=_HAND_OVER_CHECK_S)
                        return
                    except concurrent.futures.TimeoutError:
                        continue

            def scan() -> None:
                ranges = {p: (in_start[p], scan_end[p]) for p in in_end}
                try:
                    self.recover_scan(sub, since_ms, ranges, hand_over)
                except _ScanAbandoned:
                    return
                finally:
                    if not abandoned.is_set():
                        with contextlib.suppress(_ScanAbandoned):
                            hand_over(None)

            reason = f"queued again by recover since {since.isoformat()}"
            count = 0
            async with self.slots.hold(sub.owner):
                scanner = asyncio.ensure_future(asyncio.to_thread(scan))
                try:
                    while (chunk := await chunks.get()) is not None:
                        await self._requeue(sub, chunk, reason)
                        count += len(chunk)
                except BaseException:
                    abandoned.set()  # the scan thread ends at its next hand-over (and closes its consumer)
                    scanner.add_done_callback(_log_scan_failure)
                    raise
                await scanner  # re-raises a scan failure
        log.info("recover: %d messages since %s queued for %s", count, since.isoformat(), sub.id)
        return RecoverOutcome(queued=count, not_examined=left)

    async def _settled(self, starts: dict[int, int], ends: dict[int, int]) -> dict[int, int]:
        """``settled_ends`` against the deliver stage's group (``ends`` unchanged when there is none)."""
        if self.deliver_group is None:
            return dict(ends)
        group = self.deliver_group
        peer = await asyncio.to_thread(group_peer, self.bootstrap, group)

        def committed(ps: list[int]) -> dict[int, int]:
            try:
                return committed_offsets(peer, INBOUND_TOPIC, ps, timeout=5)
            except KafkaException as exc:  # a coordinator moving or loading: ask again
                log.info("recover: offsets of group %s not read (%s)", group, exc)
                return {}  # nothing known committed: waited for, and left to the stage at the end

        try:
            return await settled_ends(
                starts, ends, lambda ps: asyncio.to_thread(committed, ps), self.settle_s
            )
        finally:
            await asyncio.to_thread(peer.close)

    def _receives(self, sub: Subscription, msg: dict[str, Any]) -> bool:
        return receives(sub, self.holding_of(sub.owner), msg)

    async def _requeue(self, sub: Subscription, payloads: list[dict[str, Any]], reason: str) -> None:
        assert self._producer is not None, "start() first"
        producer = self._producer
        for i in range(0, len(payloads), CHUNK):
            events, records = [], []
            for payload in payloads[i : i + CHUNK]:
                mid = str(payload["message_id"])
                event = self.serde.encode(DELIVERY_TOPIC, event_record(queued_event(sub, mid, error=reason)))
                events.append(producer.send(DELIVERY_TOPIC, event, key=mid.encode()))
                records.append((mid, orjson.dumps(requeue_record(sub.id, payload, reason))))
            # The "queued" events are acked before the retry records exist: the two go to different topics,
            # and sent together the retry record could be delivered and its "delivered" event written
            # before this "queued" one, a history that reads delivered -> queued (seen on a loaded machine).
            await asyncio.gather(*events)
            await asyncio.gather(
                *(producer.send(WEBHOOK_RETRY_TOPIC, rec, key=mid.encode()) for mid, rec in records)
            )

    # ---- blocking scans (run in a thread) ----

    def _consumer(self) -> Consumer:
        return Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"smsflow-api-scan-{uuid.uuid4().hex}",  # assign() only; never commits
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
            }
        )

    def _partitions(self, consumer: Consumer, topic: str) -> list[int]:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise RuntimeError(f"{topic}: topic not found")
        return sorted(meta.partitions)

    def _offsets_at(
        self, consumer: Consumer, topic: str, parts: list[int], ts_ms: int | None
    ) -> dict[int, int]:
        """Per partition: the first offset with a timestamp >= ts_ms (the end if none; the start if None)."""
        out: dict[int, int] = {}
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts}
        if ts_ms is None:
            return {p: lo for p, (lo, _hi) in ends.items()}
        found = consumer.offsets_for_times([TopicPartition(topic, p, ts_ms) for p in parts], timeout=10)
        for tp in found:
            out[tp.partition] = tp.offset if tp.offset >= 0 else ends[tp.partition][1]
        return out

    def _ends(self, consumer: Consumer, topic: str, parts: list[int]) -> dict[int, int]:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}

    def _scan(self, consumer: Consumer, topic: str, ranges: Ranges) -> Iterator[Message]:
        """Every record of ``topic`` in the given offset ranges, partition by partition interleaved."""
        todo = {p: r for p, r in ranges.items() if r[0] < r[1]}
        if not todo:
            return
        consumer.assign([TopicPartition(topic, p, start) for p, (start, _end) in todo.items()])
        try:
            idle_since = time.monotonic()
            while todo:
                batch = consumer.consume(1000, timeout=self.poll_timeout_s)
                for m in batch:
                    p, offset = m.partition(), m.offset()
                    if m.error() is not None or p is None or offset is None:
                        continue
                    rng = todo.get(p)
                    if rng is None or offset >= rng[1]:
                        continue
                    yield m
                if batch:
                    idle_since = time.monotonic()
                # positions also move past transaction markers and compacted gaps, which are never yielded
                done = [
                    tp
                    for tp in consumer.position([TopicPartition(topic, p) for p in list(todo)])
                    if tp.offset >= 0 and tp.offset >= todo[tp.partition][1]
                ]
                for tp in done:
                    todo.pop(tp.partition, None)
                if done:
                    consumer.pause(done)  # stop fetching what lies past the end of the range
                if todo and time.monotonic() - idle_since > 30:
                    raise TimeoutError(f"{topic}: no progress reading partitions {sorted(todo)} for 30s")
        finally:
            consumer.unassign()

    def _first_event_ms(self, consumer: Consumer, message_id: str) -> int | None:
        key = message_id.encode()
        parts = self._partitions(consumer, DELIVERY_TOPIC)
        p = key_partition(key, len(parts))
        since = int((time.time() - self.history_lookback_s) * 1000)
        start = self._offsets_at(consumer, DELIVERY_TOPIC, [p], since)[p]
        end = self._ends(consumer, DELIVERY_TOPIC, [p])[p]
        for m in self._scan(consumer, DELIVERY_TOPIC, {p: (start, end)}):
            if m.key() == key:
                return int(m.timestamp()[1])
        return None

    def _find_inbound(self, consumer: Consumer, message_id: str, ranges: Ranges) -> dict[str, Any] | None:
        needle = message_id.encode()
        for m in self._scan(consumer, INBOUND_TOPIC, ranges):
            value = m.value()
            if value is None or needle not in value:
                continue
            msg = self.serde.decode(INBOUND_TOPIC, value)
            if msg.get("message_id") == message_id:
                return msg
        return None

    def find_message(self, message_id: str) -> dict[str, Any] | None:
        """The decoded ``sms.inbound.v1`` record of ``message_id``, or None if it is not retained."""
        consumer = self._consumer()
        try:
            parts = self._partitions(consumer, INBOUND_TOPIC)
            ends = self._ends(consumer, INBOUND_TOPIC, parts)
            first = self._first_event_ms(consumer, message_id)
            if first is not None:
                lo = self._offsets_at(
                    consumer, INBOUND_TOPIC, parts, first - int(self.search_window_s * 1000)
                )
                hi = self._offsets_at(consumer, INBOUND_TOPIC, parts, first + 60_000)
                near = {p: (lo[p], hi[p]) for p in parts}
                msg = self._find_inbound(consumer, message_id, near)
                if msg is not None:
                    return msg
                log.info("resend: %s not near its first delivery event; reading the whole topic", message_id)
            start = self._offsets_at(consumer, INBOUND_TOPIC, parts, None)
            return self._find_inbound(consumer, message_id, {p: (start[p], ends[p]) for p in parts})
        finally:
            consumer.close()

    def inbound_range(self, since_ms: int) -> tuple[dict[int, int], dict[int, int]]:
        """Per ``sms.inbound.v1`` partition: the first offset at or after ``since_ms``, and its end now."""
        consumer = self._consumer()
        try:
            parts = self._partitions(consumer, INBOUND_TOPIC)
            return self._offsets_at(consumer, INBOUND_TOPIC, parts, since_ms), self._ends(
                consumer, INBOUND_TOPIC, parts
            )
        finally:
            consumer.close()

    def recover_scan(
        self,
        sub: Subscription,
        since_ms: int,
        inbound: Ranges,
        emit: Callable[[list[dict[str, Any]] | None], None],
    ) -> None:
        """Hand ``emit`` chunks of webhook payloads of the messages in the ``inbound`` ranges (the settled
        part of what was stored since ``since_ms``) to queue again for ``sub``."""
        consumer = self._consumer()
        try:
            # 2. this subscription's delivery history since then: the latest state of each message
            parts = self._partitions(consumer, DELIVERY_TOPIC)
            start = self._offsets_at(consumer, DELIVERY_TOPIC, parts, since_ms)
            end = self._ends(consumer, DELIVERY_TOPIC, parts)
            needle = sub.id.encode()
            latest: dict[str, str] = {}
            for m in self._scan(consumer, DELIVERY_TOPIC, {p: (start[p], end[p]) for p in parts}):
                value = m.value()
                if value is None or needle not in value:
                    continue
                ev = self.serde.decode(DELIVERY_TOPIC, value)
                if ev["subscription_id"] == sub.id and ev["state"] not in OPERATIONAL_STATES:
                    latest[ev["message_id"]] = ev["state"]  # one message's events share a partition, in order
            skip = {mid for mid, state in latest.items() if state not in REQUEUE_AFTER}
            # 3. inbound messages since then, up to where the deliver stage finished, that match the filter
            chunk: list[dict[str, Any]] = []
            for m in self._scan(consumer, INBOUND_TOPIC, inbound):
                value = m.value()
                if value is None:
                    continue
                msg = self.serde.decode(INBOUND_TOPIC, value)
                if msg["message_id"] in skip or not self._receives(sub, msg):
                    continue
                chunk.append(webhook_payload(msg))
                if len(chunk) >= CHUNK:
                    emit(chunk)
                    chunk = []
            if chunk:
                emit(chunk)
        finally:
            consumer.close()
