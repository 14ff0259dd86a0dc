"""The local broker is a real Kafka: acks=all idempotent writes are read back, and survive a clean restart
and a crash (SIGKILL)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer

from smsflow.topics import TopicSpec, ensure_topics

if TYPE_CHECKING:
    from tests.conftest import KafkaUnderTest

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "partitioner": "murmur2_random",
        }
    )
    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err)

    for i, value in enumerate(values):
        producer.produce(topic, key=str(i % 7).encode(), value=value, on_delivery=delivered)
    assert producer.flush(30) == 0, "records still queued after 30 s"
    assert failures == []


def _read_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{topic}-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                assert msg.error() is None, msg.error()
                got.append(msg.value() or b"")
    finally:
        consumer.close()
    return got


def test_produce_and_consume_acks_all(kafka: KafkaUnderTest, unique: str) -> None:
    topic = f"test.local.{unique}"
    ensure_topics(kafka.bootstrap, [TopicSpec(topic, 3)])
    values = [f"sms-{i}".encode() for i in range(200)]
    _produce(kafka.bootstrap, topic, values)
    assert sorted(_read_all(kafka.bootstrap, topic, len(values))) == sorted(values)


def test_data_survives_restart_and_crash(kafka: KafkaUnderTest, unique: str) -> None:
    if kafka.local is None:
        pytest.skip("external cluster (KAFKA_BOOTSTRAP_SERVERS): not ours to restart")
    broker = kafka.local
    topic = f"test.restart.{unique}"
    ensure_topics(broker.bootstrap, [TopicSpec(topic, 2, cleanup_policy="delete")])
    first = [f"before-restart-{i}".encode() for i in range(50)]
    _produce(broker.bootstrap, topic, first)

    port = broker.port
    broker.restart()
    assert broker.port == port
    after_restart = _read_all(broker.bootstrap, topic, len(first))
    assert sorted(after_restart) == sorted(first)

    second = [f"before-crash-{i}".encode() for i in range(50)]
    _produce(broker.bootstrap, topic, second)
    broker.kill()
    assert not broker.is_running()
    broker.start()
    broker.wait_ready(timeout=90)
    # Acknowledged with acks=all before the crash: every record is still there, once.
    assert sorted(_read_all(broker.bootstrap, topic, len(first) + len(second))) == sorted(first + second)
