"""The worker's producer of delivery outputs (smsflow.producer.BufferedProducer) on a real broker: records
handed over are stored by the time ``flush`` returns, and a record that cannot be stored makes ``flush``
raise, so the offsets of what it came from are never committed (Invariant A, docs/consistency.md).
And the connector's awaited producer (AsyncProducer): ``send`` returns the stored record, raises
``KafkaUnavailable`` for one that cannot be stored, and its acknowledgements reach the loop in batches."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer

from smsflow.producer import AsyncProducer, BufferedProducer, KafkaUnavailable, producer_conf
from smsflow.topics import TopicSpec, ensure_topics

if TYPE_CHECKING:
    from tests.conftest import KafkaUnderTest

pytestmark = pytest.mark.integration


def read_all(bootstrap: str, topic: str, n: int) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{topic}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []
    try:
        for _ in range(60):
            for m in c.consume(1000, timeout=0.5):
                if m.error() is None:
                    got.append((m.key(), m.value(), m.headers() or []))
            if len(got) >= n:
                break
    finally:
        c.close()
    return got


async def test_what_is_handed_over_is_stored_when_flush_returns(kafka: KafkaUnderTest, unique: str) -> None:
    topic = f"t{unique}.sms.delivery.v1"
    ensure_topics(kafka.bootstrap, [TopicSpec(topic, 3)])
    p = BufferedProducer(producer_conf(kafka.bootstrap, **{"linger.ms": 50}))
    for i in range(500):
        headers = [("traceparent", b"00-x")] if i % 2 else None
        await p.send(topic, f"v{i}".encode(), f"k{i % 7}".encode(), headers)
    assert len(p) > 0  # nothing waited for an ack so far
    await p.flush()
    assert len(p) == 0
    got = read_all(kafka.bootstrap, topic, 500)
    assert sorted(v for _, v, _ in got) == sorted(f"v{i}".encode() for i in range(500))
    assert sum(1 for _, _, h in got if h == [("traceparent", b"00-x")]) == 250
    await p.flush()  # nothing pending: returns at once


async def test_a_record_that_cannot_be_stored_makes_flush_raise(kafka: KafkaUnderTest, unique: str) -> None:
    # a topic that does not exist (and is not auto-created): given up on after message.timeout.ms
    conf = producer_conf(kafka.bootstrap, **{"message.timeout.ms": 1500, "allow.auto.create.topics": False})
    p = BufferedProducer(conf)
    await p.send(f"t{unique}.missing", b"v", b"k")
    with pytest.raises(KafkaUnavailable, match=f"t{unique}.missing"):
        await p.flush()
    await p.flush()  # the failure was reported once; nothing is pending now


async def test_awaited_sends_return_their_own_stored_record_and_wake_the_loop_per_batch(
    kafka: KafkaUnderTest, unique: str
) -> None:
    topic = f"t{unique}.sms.raw.v1"
    ensure_topics(kafka.bootstrap, [TopicSpec(topic, 3)])
    p = AsyncProducer(producer_conf(kafka.bootstrap))
    wakes = 0
    plain_drain = p._drain_reports

    def counting_drain() -> None:
        nonlocal wakes
        wakes += 1
        plain_drain()

    p._drain_reports = counting_drain  # type: ignore[method-assign]
    try:
        msgs = await asyncio.gather(*(p.send(topic, f"v{i}".encode(), f"k{i}".encode()) for i in range(600)))
        assert [m.value() for m in msgs] == [f"v{i}".encode() for i in range(600)]
        assert all(m.error() is None and m.offset() >= 0 for m in msgs)
        assert wakes < 600 / 4, f"{wakes} loop wake-ups for 600 acknowledgements"
        got = read_all(kafka.bootstrap, topic, 600)
        assert sorted(v for _, v, _ in got) == sorted(f"v{i}".encode() for i in range(600))
        one = await p.send(topic, b"alone", b"k")  # a lone send after the batch still wakes its sender
        assert one.value() == b"alone"
    finally:
        await p.close()


async def test_an_awaited_send_that_cannot_be_stored_raises_and_the_others_still_return(
    kafka: KafkaUnderTest, unique: str
) -> None:
    topic = f"t{unique}.ok"
    ensure_topics(kafka.bootstrap, [TopicSpec(topic, 1)])
    conf = producer_conf(kafka.bootstrap, **{"message.timeout.ms": 1500, "allow.auto.create.topics": False})
    p = AsyncProducer(conf)
    try:
        results = await asyncio.gather(
            p.send(f"t{unique}.missing", b"v", b"k"),
            *(p.send(topic, f"v{i}".encode(), b"k") for i in range(20)),
            return_exceptions=True,
        )
        assert isinstance(results[0], KafkaUnavailable) and f"t{unique}.missing" in str(results[0])
        assert [m.value() for m in results[1:]] == [f"v{i}".encode() for i in range(20)]  # type: ignore[union-attr]
    finally:
        await p.close()
