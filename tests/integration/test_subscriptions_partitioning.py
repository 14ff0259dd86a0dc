"""Resend finds a message's delivery history by hashing its id to a partition of sms.delivery.v1, and the
API's ``queued`` events must join the worker's in that partition. Both rest on one fact checked here on a real
broker: the API's producer (librdkafka, ``murmur2_random``), Faust's producer (aiokafka's DefaultPartitioner)
and ``redelivery.key_partition`` put a key on the same partition."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from aiokafka.partitioner import DefaultPartitioner

from smsflow.delivery.redelivery import key_partition
from smsflow.producer import AsyncProducer, producer_conf
from smsflow.topics import TopicSpec, ensure_topics

if TYPE_CHECKING:
    from tests.conftest import KafkaUnderTest

pytestmark = pytest.mark.integration


async def test_every_producer_puts_a_message_id_on_the_same_partition(
    kafka: KafkaUnderTest, unique: str
) -> None:
    topic = f"test.partitioning.{unique}"
    partitions = 6
    ensure_topics(kafka.bootstrap, [TopicSpec(topic, partitions)])
    producer = AsyncProducer(producer_conf(kafka.bootstrap, partitioner="murmur2_random"))
    faust_side = DefaultPartitioner()
    try:
        placed = {}
        for i in range(300):
            key = f"msg_{i:04d}x{unique}".encode()
            msg = await producer.send(topic, b"v", key=key)
            placed[key] = msg.partition()
    finally:
        await producer.close()
    everywhere = list(range(partitions))
    assert len(set(placed.values())) == partitions, "keys spread over every partition"
    for key, partition in placed.items():
        assert key_partition(key, partitions) == partition
        assert faust_side(key, everywhere, everywhere) == partition
