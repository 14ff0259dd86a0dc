"""Our topics are readable by any Confluent client, and the canonical schema evolves BACKWARD-compatibly:
a consumer built against the first InboundMessage schema still reads records written with today's."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import requests
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from smsflow.schemas import INBOUND_TOPIC, schema_for_topic
from smsflow.serde import Serde, registry_client
from smsflow.topics import TopicSpec, ensure_topics
from tests.factories import inbound_record

pytestmark = pytest.mark.integration
V1 = Path(__file__).resolve().parent.parent / "data" / "schemas" / "inbound_message.v1-initial.avsc"


def test_old_consumer_reads_new_records_and_registry_agrees(kafka, registry_url, unique) -> None:
    topic = f"{INBOUND_TOPIC}.{unique}"  # own topic/subject, same contract
    client = SchemaRegistryClient({"url": registry_url})
    subject = f"{topic}-value"
    # the schema as first published (v1), then today's: the registry must accept today's as BACKWARD
    client.register_schema(subject, Schema(V1.read_text(), "AVRO"))
    r = requests.post(
        f"{registry_url}/compatibility/subjects/{subject}/versions/latest",
        json={"schema": schema_for_topic(INBOUND_TOPIC)},
        timeout=10,
    )
    assert r.status_code == 200 and r.json()["is_compatible"] is True, r.text

    serde = Serde(registry_client(registry_url))
    codec = serde.codec(INBOUND_TOPIC)
    value = codec._ser(inbound_record("msg_1"), SerializationContext(topic, MessageField.VALUE))
    ensure_topics(kafka.bootstrap, [TopicSpec(topic, 1)])
    p = Producer({"bootstrap.servers": kafka.bootstrap})
    p.produce(topic, value=value, key=b"+85230001000")
    p.flush(10)

    c = Consumer(
        {"bootstrap.servers": kafka.bootstrap, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"}
    )
    c.subscribe([topic])
    msg = None
    for _ in range(60):
        msg = c.poll(1)
        if msg is not None and not msg.error():
            break
    c.close()
    assert msg is not None and not msg.error()
    ctx = SerializationContext(topic, MessageField.VALUE)
    # an old consumer: its reader schema is v1, it knows nothing of the enrichment fields
    old = AvroDeserializer(client, V1.read_text())(msg.value(), ctx)
    assert old["body"] == "【京东】您的验证码是 825959。😀" and old["otp"] == "825959"
    assert "sender_signature" not in old and "to_type" not in old
    # a generic consumer with no schema of its own reads with the writer's schema from the registry
    generic = AvroDeserializer(client)(msg.value(), ctx)
    assert (generic["to_calling_code"], generic["to_type"]) == (852, "fixed_line")
    assert generic["sender_signature"] == "京东" and generic["udh_elements"] == [
        {"iei": 0x24, "data": b"\x01"}
    ]
    # and the wire format is Confluent's: magic byte 0 + 4-byte schema id
    assert msg.value()[0] == 0 and int.from_bytes(msg.value()[1:5], "big") > 0


def test_breaking_change_is_refused(registry_url, unique) -> None:
    subject = f"contract-{unique}-value"
    client = SchemaRegistryClient({"url": registry_url})
    client.register_schema(subject, Schema(schema_for_topic(INBOUND_TOPIC), "AVRO"))
    broken = json.loads(schema_for_topic(INBOUND_TOPIC))
    broken["fields"].append({"name": "mandatory_new", "type": "string"})  # no default: old data unreadable
    r = requests.post(
        f"{registry_url}/subjects/{subject}/versions", json={"schema": json.dumps(broken)}, timeout=10
    )
    assert r.status_code == 409
