"""The one way smsflow writes to Kafka: acks=all, idempotent, bounded linger, awaited from asyncio.

A carrier is acknowledged only after ``send`` returns, i.e. after the broker confirmed the write to all
in-sync replicas. If the write fails or times out ``send`` raises ``KafkaUnavailable`` and the connector
answers the carrier with a temporary error so it retries.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from smsflow.pace import Pace

# Most records held for one gather window: beyond it they are produced at once (a burst needs no window).
HELD_MAX = 512


class KafkaUnavailable(RuntimeError):
    """The record is not stored; the caller must not acknowledge its source."""


def producer_conf(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 2,
        "compression.type": "lz4",
        # Bounded so a carrier (typical response timeout 10-60 s) hears a temporary error from us first.
        "request.timeout.ms": 3000,
        "message.timeout.ms": 5000,
        "socket.connection.setup.timeout.ms": 3000,
        "reconnect.backoff.max.ms": 1000,
        # the Java client's (and aiokafka's) partitioner, so every client puts a key on the same partition
        "partitioner": "murmur2_random",
    }
    conf.update(overrides)
    return conf


class AsyncProducer:
    """confluent-kafka Producer with delivery reports bridged into asyncio futures.

    ``gather``: while records are sent faster than its ``above_per_s`` (the connector at hundreds of SMS per
    second), a record is handed to librdkafka at the end of a window of ``gather.window`` seconds, together
    with every record sent in that window, instead of at once. Each ``produce()`` into an empty partition
    queue wakes librdkafka's broker thread (~20 µs of the caller's CPU against ~4 µs back to back); at lower
    rates nothing waits. It does not save produce requests: librdkafka sends one per partition whatever was
    handed over together (librdkafka#1700; docs/BENCHMARKS.md, 2026-12-04 evening). The order of the records
    is kept (a record never overtakes one held in the window), and ``flush`` sends what is held first.
    """

    def __init__(self, conf: dict[str, Any], gather: Pace | None = None) -> None:
        self._producer = Producer(conf)
        self._closed = threading.Event()
        # Delivery reports, handed to the event loop in batches: one wake-up of the loop (and one loop
        # iteration in which every waiting sender resumes) per batch of acknowledgements, not one each.
        self._reports: deque[tuple[asyncio.Future[Message], BaseException | None, Message]] = deque()
        self._wake_pending = False  # set by the reporting thread, cleared by the loop as it drains
        self._gather = gather
        # Records held for the window: (topic, produce kwargs, the sender's future); one loop's only.
        self._held: list[tuple[str, dict[str, Any], asyncio.Future[Message]]] = []
        self._held_loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Handle | None = None
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-producer-poll", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> Message:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Message] = loop.create_future()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if fut.cancelled():
                return
            exc = None if err is None else KafkaUnavailable(f"{topic}: {err.str()}")
            self._reports.append((fut, exc, msg))
            # A drain already due takes this report too: it clears the flag before it pops, so a report
            # appended while the flag still reads True is popped by that drain.
            if not self._wake_pending:
                self._wake_pending = True
                try:
                    loop.call_soon_threadsafe(self._drain_reports)
                except RuntimeError:  # that loop is closed: nobody awaits there, let the next one wake
                    self._wake_pending = False

        kwargs: dict[str, Any] = {"value": value, "key": key, "on_delivery": on_delivery}
        if headers:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        gather = self._gather
        if gather is not None:
            gather.count(1)
            window = gather.window_s()
            if (self._held or window > 0) and (self._held_loop is None or self._held_loop is loop):
                self._hold(loop, topic, kwargs, fut, window)
                return await fut
        await _produce(self._producer, topic, kwargs)
        return await fut

    def _hold(
        self,
        loop: asyncio.AbstractEventLoop,
        topic: str,
        kwargs: dict[str, Any],
        fut: asyncio.Future[Message],
        window_s: float,
    ) -> None:
        self._held.append((topic, kwargs, fut))
        if self._release is None:
            self._held_loop = loop
            # a record held after the rate fell (window 0) goes with the next loop iteration, in order
            self._release = loop.call_later(window_s, self._release_held)
        elif len(self._held) >= HELD_MAX:
            self._release.cancel()
            self._release = loop.call_soon(self._release_held)

    def _release_held(self) -> None:
        """Produce the held records back to back, in the order they were sent. A record whose sender gave
        up (cancelled) is not written; a refusal other than a full queue fails that record's sender; a full
        local queue keeps the rest held and tries again shortly (back-pressure: nothing is dropped)."""
        self._release = None
        held, produce = self._held, self._producer.produce
        done = 0
        for topic, kwargs, fut in held:
            if not fut.cancelled():
                try:
                    produce(topic, **kwargs)
                except BufferError:  # librdkafka's queue is full: this one and the rest wait a little
                    loop = self._held_loop
                    assert loop is not None
                    self._release = loop.call_later(0.01, self._release_held)
                    break
                except Exception as exc:  # KafkaException for an unknown topic etc.
                    fut.set_exception(KafkaUnavailable(f"{topic}: {exc}"))
            done += 1
        del held[:done]
        if not held:
            self._held_loop = None

    async def flush(self, timeout: float = 10.0) -> int:
        while self._held:  # what the window holds goes first (the caller is on the loop that holds it)
            if self._release is not None:
                self._release.cancel()
            self._release_held()
            if self._held:  # librdkafka's queue is full: let it drain
                await asyncio.sleep(0.01)
        return await asyncio.to_thread(self._producer.flush, timeout)

    async def close(self, timeout: float = 10.0) -> None:
        await self.flush(timeout)
        self._closed.set()
        await asyncio.to_thread(self._poller.join, 2.0)

    def _drain_reports(self) -> None:
        self._wake_pending = False
        reports = self._reports
        loop = asyncio.get_running_loop()
        while reports:
            fut, exc, msg = reports.popleft()
            if fut.get_loop() is not loop:  # a producer shared by two loops: settle it on its own
                fut.get_loop().call_soon_threadsafe(_settle, fut, exc, msg)
            else:
                _settle(fut, exc, msg)


async def _produce(
    producer: Producer, topic: str, kwargs: dict[str, Any], serve_reports: bool = False
) -> None:
    """``producer.produce``, waiting while librdkafka's local queue is full (back-pressure: nothing is
    dropped); ``serve_reports``: poll the delivery reports meanwhile (a producer without a poll thread of
    its own). Any other refusal (an unknown topic, ...) is ``KafkaUnavailable``."""
    while True:
        try:
            producer.produce(topic, **kwargs)
            return
        except BufferError:
            if serve_reports:
                producer.poll(0)
            await asyncio.sleep(0.01)
        except Exception as exc:  # KafkaException for an unknown topic etc.
            raise KafkaUnavailable(f"{topic}: {exc}") from exc


def _settle(fut: asyncio.Future[Message], exc: BaseException | None, msg: Message) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(msg)
    else:
        fut.set_exception(exc)


class BufferedProducer:
    """Records handed to librdkafka without waiting for each one's ack; :meth:`flush` waits until every
    record handed over so far is stored (acks=all) and raises ``KafkaUnavailable`` when any could not be.

    For outputs whose durability is settled by a flush before an offset commit (Invariant A,
    docs/consistency.md) rather than per record: the worker's delivery events, retry records and dead
    letters. Only failures call back (``delivery.report.only.error``), so a stored record costs the event
    loop one ``produce`` call (a few microseconds) and nothing later.
    """

    def __init__(self, conf: dict[str, Any]) -> None:
        self._errors: list[str] = []
        self._lock = threading.Lock()
        self._producer = Producer({**conf, "delivery.report.only.error": True, "on_delivery": self._on_error})

    def _on_error(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            with self._lock:
                self._errors.append(f"{msg.topic()}: {err.str()}")

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Hand a record over (not stored yet: see :meth:`flush`)."""
        kwargs: dict[str, Any] = {"value": value, "key": key}
        if headers:
            kwargs["headers"] = headers
        await _produce(self._producer, topic, kwargs, serve_reports=True)

    def __len__(self) -> int:
        """Records handed over and not stored yet."""
        return len(self._producer)

    async def push(self, timeout_s: float = 1.0) -> None:
        """Send what lingers now and wait up to ``timeout_s`` for it to be stored (librdkafka's flush
        overrides the linger). For records someone waits for sooner than the linger; a record that could not
        be stored is left for :meth:`flush` to report, so the next commit's flush still sees it."""
        if len(self._producer):
            await asyncio.to_thread(self._producer.flush, timeout_s)

    async def flush(self) -> None:
        """Return once every record handed over so far is stored; ``KafkaUnavailable`` if one could not be
        (the caller must not commit the offsets of what those records came from). A record is given up on
        after the producer's ``message.timeout.ms``, so this waits at most about that long."""
        while len(self._producer) and not self._errors:
            await asyncio.to_thread(self._producer.flush, 1.0)
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise KafkaUnavailable(f"not stored: {errors[0]}{more}")
