"""Avro in the Confluent wire format, through any Confluent-compatible schema registry.

We use confluent-kafka's own ``AvroSerializer``/``AvroDeserializer`` so that what we write is exactly what
kcat, Kafka Connect, ksqlDB and every Confluent client read. Schemas are registered once at start-up (a
blocking HTTP call, never on the event loop's hot path: later calls hit the client's cache).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from smsflow.schemas import TOPIC_SCHEMAS, schema_for_topic


def registry_client(url: str, credentials: tuple[str, str] | None = None) -> SchemaRegistryClient:
    """``credentials``: user and password for the registry's basic auth (``Config.registry_credentials``)."""
    conf: dict[str, Any] = {"url": url}
    if credentials is not None:
        conf["basic.auth.user.info"] = f"{credentials[0]}:{credentials[1]}"
    return SchemaRegistryClient(conf)


def _to_millis(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    return value


class TopicCodec:
    """Serialize/deserialize the value records of one topic."""

    def __init__(self, client: SchemaRegistryClient, topic: str) -> None:
        self.topic = topic
        schema = schema_for_topic(topic)
        self._ctx = SerializationContext(topic, MessageField.VALUE)
        self._ser = AvroSerializer(client, schema, conf={"auto.register.schemas": True})
        # Reader schema = our current contract, so older writer versions resolve into it.
        self._de = AvroDeserializer(client, schema)

    def encode(self, record: Mapping[str, Any]) -> bytes:
        out = self._ser(record, self._ctx)
        assert out is not None
        return out

    def decode(self, data: bytes) -> dict[str, Any]:
        rec = self._de(data, self._ctx)
        if not isinstance(rec, dict):
            raise ValueError(f"{self.topic}: record is not an Avro record")
        # fastavro returns datetimes for timestamp-millis; the domain uses epoch millis throughout.
        return {k: _to_millis(v) for k, v in rec.items()}


class Serde:
    """One codec per topic, built lazily, sharing one registry client."""

    def __init__(self, client: SchemaRegistryClient) -> None:
        self.client = client
        self._codecs: dict[str, TopicCodec] = {}

    def codec(self, topic: str) -> TopicCodec:
        c = self._codecs.get(topic)
        if c is None:
            c = self._codecs[topic] = TopicCodec(self.client, topic)
        return c

    def encode(self, topic: str, record: Mapping[str, Any]) -> bytes:
        return self.codec(topic).encode(record)

    def decode(self, topic: str, data: bytes) -> dict[str, Any]:
        return self.codec(topic).decode(data)

    def warm_up(self, topics: list[str] | None = None) -> None:
        """Register every contract now so the first message pays no registry round trip."""
        for topic in topics or list(TOPIC_SCHEMAS):
            self.client.register_schema(f"{topic}-value", self.codec(topic)._ser._schema)


Encoder = Callable[[dict[str, Any]], bytes]
