"""The table followers (smsflow.compacted.CompactedFollower) on a real broker: ``current`` returns only once
every record stored before the call has been applied, which the submit path relies on when it takes over a
partition from another connector (the outcomes that connector wrote just before must be seen)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Message, Producer

from smsflow.compacted import CompactedFollower
from smsflow.topics import TopicSpec, ensure_topics

if TYPE_CHECKING:
    from tests.conftest import KafkaUnderTest

pytestmark = pytest.mark.integration


async def test_current_waits_for_every_record_stored_before_it(kafka: KafkaUnderTest, unique: str) -> None:
    topic = f"t{unique}.ledger"
    ensure_topics(kafka.bootstrap, [TopicSpec(topic, 4)])
    seen: list[bytes] = []

    def slow(msg: Message) -> None:  # a follower that lags: ~1 ms per record
        time.sleep(0.001)
        seen.append(msg.value() or b"")

    producer = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all"})
    for i in range(50):
        producer.produce(topic, f"a{i}".encode(), key=f"k{i % 3}".encode())  # partition 3 may stay empty
    producer.flush(10)
    follower = CompactedFollower(kafka.bootstrap, (topic,), slow, f"follow-{unique}")
    await follower.start(30)
    try:
        assert len(seen) == 50
        await follower.current()  # nothing new: at once
        for i in range(400):
            producer.produce(topic, f"b{i}".encode(), key=f"k{i}".encode())
        producer.flush(10)
        behind = len(seen)
        await follower.current()
        assert behind < 450 <= len(seen)  # it was behind, and caught up before current returned
        expected = [f"a{i}".encode() for i in range(50)] + [f"b{i}".encode() for i in range(400)]
        assert sorted(seen) == sorted(expected)
    finally:
        await follower.stop()
