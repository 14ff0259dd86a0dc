"""Read whole topics the way any client would, for assertions on what the pipeline wrote."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def read_topic(bootstrap: str, topic: str) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """Every record now in ``topic``: (partition, offset, key, value), in offset order per partition."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"e2e-read-{time.time_ns()}",
            "enable.auto.commit": False,
        }
    )
    try:
        parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
        marks = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts}
        ends = {p: hi for p, (_lo, hi) in marks.items()}
        todo = {p for p, (lo, hi) in marks.items() if hi > lo}
        # from the log start offset, which is above 0 once a compacted or expired topic has been cleaned
        c.assign([TopicPartition(topic, p, marks[p][0]) for p in todo])
        out = []
        deadline = time.monotonic() + 30
        while todo and time.monotonic() < deadline:
            for m in c.consume(1000, timeout=0.5):
                if m.error() is None:
                    out.append((m.partition(), m.offset(), m.key(), m.value()))
            for tp in c.position([TopicPartition(topic, p) for p in list(todo)]):
                if tp.offset >= ends[tp.partition]:
                    todo.discard(tp.partition)
        assert not todo, f"{topic}: could not read to the end"
        return sorted(out, key=lambda r: (r[0], r[1]))
    finally:
        c.close()


def avro_values(bootstrap: str, registry_url: str, topic: str) -> list[dict[str, Any]]:
    """Values decoded as any Confluent client would (AvroDeserializer, writer schema from the registry)."""
    de = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
    ctx = SerializationContext(topic, MessageField.VALUE)
    return [de(v, ctx) for _p, _o, _k, v in read_topic(bootstrap, topic) if v is not None]
