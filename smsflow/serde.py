"""Avro in the Confluent wire format, through any Confluent-compatible schema registry.

What we write is exactly what kcat, Kafka Connect, ksqlDB and every Confluent client read: magic byte 0, the
4-byte schema id the registry gave our contract, then schemaless Avro. Schemas are registered once at start-up
(a blocking HTTP call, never on the event loop's hot path: later calls hit the client's cache).

The hot path does not go through confluent-kafka's ``AvroSerializer``/``AvroDeserializer`` per record: they
re-resolve the subject, look the schema up in the client's caches and run the data-contract rule machinery on
every call (a third of the worker's Avro time). Once the contract's id is known, records are written with a
precompiled fastavro schemaless writer behind a fixed 5-byte header, and records written under that same id
are read back with a precompiled reader. A record under any other id (an older or newer writer version) goes
through ``AvroDeserializer``, which fetches the writer's schema and resolves it into ours.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from smsflow.schemas import TOPIC_SCHEMAS, schema_for_topic

MAGIC_BYTE = 0


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


def _without_logical_types(node: Any) -> Any:
    """The schema with ``logicalType`` dropped: the binary form is the same, and a reader built from it
    returns epoch millis as the plain ``long`` the domain uses, with no datetime to convert back."""
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


class TopicCodec:
    """Serialize/deserialize the value records of one topic."""

    def __init__(self, client: SchemaRegistryClient, topic: str) -> None:
        self.topic = topic
        self.client = client
        schema = schema_for_topic(topic)
        self._ctx = SerializationContext(topic, MessageField.VALUE)
        self._ser = AvroSerializer(client, schema, conf={"auto.register.schemas": True})
        # Reader schema = our current contract, so older writer versions resolve into it.
        self._de = AvroDeserializer(client, schema)
        parsed = orjson.loads(schema)
        self._writer = parse_schema(copy.deepcopy(parsed))
        self._reader = parse_schema(_without_logical_types(parsed))
        self._header: bytes | None = None  # magic byte + our schema id, once the registry gave it

    @property
    def subject(self) -> str:
        return f"{self.topic}-value"

    def register(self) -> int:
        """Register the contract (or find it registered); a blocking call, cached by the client after."""
        # the very Schema object the serializer registers, so both agree on the id in any registry
        schema_id = int(self.client.register_schema(self.subject, self._ser._schema))
        self._header = bytes([MAGIC_BYTE]) + schema_id.to_bytes(4, "big")
        return schema_id

    def encode(self, record: Mapping[str, Any]) -> bytes:
        header = self._header
        if header is None:
            self.register()
            header = self._header
            assert header is not None
        out = io.BytesIO()
        out.write(header)
        schemaless_writer(out, self._writer, record)
        return out.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        header = self._header
        if header is not None and data[:5] == header:
            rec = schemaless_reader(io.BytesIO(data[5:]), self._reader, None)
            if not isinstance(rec, dict):
                raise ValueError(f"{self.topic}: record is not an Avro record")
            return rec
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
        """Register every contract now so the first message pays no registry round trip.

        The round trips run at the same time: a restarted worker does this before it processes anything, and
        one after the other they cost a second or two of a loaded machine (docs/consistency.md)."""
        codecs = [self.codec(topic) for topic in topics or list(TOPIC_SCHEMAS)]
        with ThreadPoolExecutor(max_workers=max(1, len(codecs)), thread_name_prefix="schemas") as pool:
            list(pool.map(TopicCodec.register, codecs))


Encoder = Callable[[dict[str, Any]], bytes]
