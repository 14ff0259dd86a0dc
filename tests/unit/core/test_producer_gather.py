"""``AsyncProducer``'s gather: while busy, records are handed to librdkafka together at the end of a window.

What must hold: at a low rate nothing waits; while busy every record of the window is produced back to back,
in the order sent (also one sent as the rate falls), each sender still resumes only with its own delivery
report; a sender that gave up is not written; a refused record fails only its sender; a full local queue
loses nothing; ``flush`` writes what the window holds. No broker: librdkafka's producer is replaced by a
recording one (the real one's behaviour is covered by the broker-backed suites)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from smsflow.pace import Pace
from smsflow.producer import HELD_MAX, AsyncProducer, KafkaUnavailable, producer_conf


class FakeMessage:
    def __init__(self, topic: str, value: bytes | None) -> None:
        self._topic, self._value = topic, value

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes | None:
        return self._value


class RecordingProducer:
    """What ``AsyncProducer`` calls on librdkafka's producer; reports are delivered by the test."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes | None, float]] = []
        self.callbacks: list[tuple[Any, FakeMessage]] = []
        self.refuse_topics: set[str] = set()
        self.full_after: int | None = None  # BufferError once this many are queued, until reports free them

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: Any = None,
        on_delivery: Any = None,
        headers: Any = None,
        partition: Any = None,
    ) -> None:
        if topic in self.refuse_topics:
            raise RuntimeError("Unknown topic or partition")
        if self.full_after is not None and len(self.callbacks) >= self.full_after:
            raise BufferError("Local: Queue full")
        self.produced.append((topic, value, asyncio.get_running_loop().time()))
        self.callbacks.append((on_delivery, FakeMessage(topic, value)))

    def deliver_all(self) -> None:
        callbacks, self.callbacks = self.callbacks, []
        for on_delivery, msg in callbacks:
            on_delivery(None, msg)

    def poll(self, timeout: float) -> int:
        import time

        time.sleep(min(timeout, 0.01))
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def __len__(self) -> int:
        return len(self.callbacks)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make(window_s: float = 0.05, above_per_s: float = 400) -> tuple[AsyncProducer, RecordingProducer, Clock]:
    clock = Clock()
    p = AsyncProducer(
        producer_conf(f"127.0.0.1:{closed_port()}", log_level=0), Pace(window_s, above_per_s, clock)
    )
    fake = RecordingProducer()
    p._producer = fake  # type: ignore[assignment]
    return p, fake, clock


def busy(clock: Clock, pace: Pace, per_s: float = 1000, seconds: float = 0.6) -> None:
    """``seconds`` of sends at ``per_s`` as the pace counts them (the fake clock advanced)."""
    for _ in range(int(per_s * seconds)):
        clock.now += 1 / per_s
        pace.count(1)


def make_busy(window_s: float) -> tuple[AsyncProducer, RecordingProducer, Clock, Pace]:
    """A producer whose pace has just seen 1,000 records per second: it gathers."""
    p, fake, clock = make(window_s=window_s)
    assert p._gather is not None
    busy(clock, p._gather)
    return p, fake, clock, p._gather


async def settle(p: AsyncProducer, fake: RecordingProducer, tasks: list[asyncio.Task[Any]]) -> list[Any]:
    while fake.callbacks or not all(t.done() for t in tasks):
        fake.deliver_all()
        await asyncio.sleep(0.005)
    return [t.result() if not t.cancelled() and t.exception() is None else t for t in tasks]


async def close(p: AsyncProducer) -> None:
    p._closed.set()
    await asyncio.to_thread(p._poller.join, 2.0)


async def test_at_a_low_rate_a_record_is_produced_as_it_is_sent() -> None:
    p, fake, _ = make()
    task = asyncio.create_task(p.send("t", b"1", b"k"))
    await asyncio.sleep(0)
    assert [v for _, v, _ in fake.produced] == [b"1"], "a lone SMS waited for company"
    (msg,) = await settle(p, fake, [task])
    assert msg.value() == b"1"
    await close(p)


async def test_while_busy_the_windows_records_go_together_in_order_each_sender_with_its_report() -> None:
    p, fake, _, _ = make_busy(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(p.send(f"t{i % 2}", str(i).encode(), b"k")))
        await asyncio.sleep(0.005)
    assert fake.produced == [], "a record was produced before its window ended"
    while not fake.produced:
        await asyncio.sleep(0.005)
    times = [t for _, _, t in fake.produced]
    assert [v for _, v, _ in fake.produced] == [b"0", b"1", b"2", b"3", b"4"]
    assert max(times) - min(times) < 0.005, "the window's records were not produced back to back"
    assert min(times) - started >= 0.045
    assert not any(t.done() for t in tasks), "a sender resumed before its delivery report"
    results = await settle(p, fake, tasks)
    assert [m.value() for m in results] == [b"0", b"1", b"2", b"3", b"4"]
    await close(p)


async def test_a_record_sent_as_the_rate_falls_does_not_overtake_the_held_ones() -> None:
    p, fake, clock, pace = make_busy(0.05)
    first = asyncio.create_task(p.send("t", b"held", b"k"))
    await asyncio.sleep(0)
    clock.now += 5  # a pause: the pace says "not busy" for the next record
    assert pace.window_s() == 0
    second = asyncio.create_task(p.send("t", b"after", b"k"))
    await asyncio.sleep(0)
    assert fake.produced == [], "the record sent after the rate fell overtook the held one"
    await settle(p, fake, [first, second])
    assert [v for _, v, _ in fake.produced] == [b"held", b"after"]
    await close(p)


async def test_a_sender_that_gave_up_is_not_written_and_a_refusal_fails_only_its_sender() -> None:
    p, fake, _, _ = make_busy(0.03)
    fake.refuse_topics = {"gone"}
    keep = asyncio.create_task(p.send("t", b"keep", b"k"))
    gave_up = asyncio.create_task(p.send("t", b"cancelled", b"k"))
    refused = asyncio.create_task(p.send("gone", b"refused", b"k"))
    last = asyncio.create_task(p.send("t", b"last", b"k"))
    await asyncio.sleep(0)
    gave_up.cancel()
    while len(fake.produced) < 2:
        await asyncio.sleep(0.005)
    await settle(p, fake, [keep, last])
    assert [v for _, v, _ in fake.produced] == [b"keep", b"last"]
    with pytest.raises(KafkaUnavailable, match="gone"):
        await refused
    assert gave_up.cancelled()
    await close(p)


async def test_a_full_local_queue_keeps_the_rest_held_and_loses_nothing() -> None:
    p, fake, _, _ = make_busy(0.02)
    fake.full_after = 3
    tasks = [asyncio.create_task(p.send("t", str(i).encode(), b"k")) for i in range(8)]
    await asyncio.sleep(0.05)
    assert len(fake.produced) == 3 and len(p._held) == 5
    results = await settle(p, fake, tasks)  # each delivery frees the queue; the rest follow, in order
    assert [m.value() for m in results] == [str(i).encode() for i in range(8)]
    assert [v for _, v, _ in fake.produced] == [str(i).encode() for i in range(8)]
    await close(p)


async def test_flush_writes_what_the_window_holds() -> None:
    p, fake, _, _ = make_busy(10.0)
    task = asyncio.create_task(p.send("t", b"1", b"k"))
    await asyncio.sleep(0.01)
    assert fake.produced == []
    await p.flush(1.0)
    assert [v for _, v, _ in fake.produced] == [b"1"]
    await settle(p, fake, [task])
    await close(p)


async def test_a_burst_beyond_the_held_bound_is_produced_without_waiting_for_the_window() -> None:
    p, fake, _, _ = make_busy(10.0)
    tasks = [asyncio.create_task(p.send("t", b"x", b"k")) for _ in range(HELD_MAX)]
    await asyncio.sleep(0.05)
    assert len(fake.produced) == HELD_MAX
    await settle(p, fake, tasks)
    await close(p)
