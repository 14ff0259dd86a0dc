"""The embedded registry as confluent-kafka's own clients see it: register, serialize, produce, consume,
deserialize; ids that survive a restart; compatibility enforced; auth when configured."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from devkit.registry import RegistryThread
from smsflow.numbers.handoff import read_pair
from smsflow.topics import TopicSpec, ensure_topics

if TYPE_CHECKING:
    from tests.conftest import KafkaUnderTest

pytestmark = pytest.mark.integration

RAW_PDU = (Path(__file__).resolve().parents[2] / "schemas" / "raw_pdu.avsc").read_text()

V1 = {
    "type": "record",
    "name": "Probe",
    "namespace": "io.smsflow.test",
    "fields": [{"name": "id", "type": "string"}, {"name": "count", "type": "int"}],
}
V2_ADDS_DEFAULTED = {
    **V1,
    "fields": [*V1["fields"], {"name": "country", "type": ["null", "string"], "default": None}],
}
V2_ADDS_REQUIRED = {**V1, "fields": [*V1["fields"], {"name": "operator", "type": "string"}]}
V3_PROMOTES = {**V2_ADDS_DEFAULTED, "fields": [V1["fields"][0], {"name": "count", "type": "long"}]}


def _raw_pdu_record() -> dict[str, Any]:
    return {
        "carrier_id": "hk-csl",
        "route_id": "r1",
        "session_id": "s-1",
        "protocol": "smpp3.4",
        "received_at": 1_767_225_600_000,
        "command_id": 0x00000005,
        "sequence_number": 7,
        "source_addr": "85261234567",
        "source_addr_ton": 1,
        "source_addr_npi": 1,
        "destination_addr": "85230001000",
        "dest_addr_ton": 1,
        "dest_addr_npi": 1,
        "esm_class": 0x40,
        "data_coding": 8,
        "pdu": bytes(range(40)),
        "remote_addr": "127.0.0.1:2775",
        "numbers": read_pair("85261234567", 1, "85230001000", 1, "HK")[2],
    }


def _roundtrip_through_kafka(bootstrap: str, topic: str, payloads: list[bytes]) -> list[bytes]:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for p in payloads:
        producer.produce(topic, value=p)
    assert producer.flush(30) == 0
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"g-{topic}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(got) < len(payloads) and time.monotonic() < deadline:
        got += [m.value() or b"" for m in consumer.consume(100, timeout=0.5) if m.error() is None]
    consumer.close()
    return got


def test_avro_roundtrip_through_kafka(kafka: KafkaUnderTest, registry_url: str, unique: str) -> None:
    topic = f"test.registry.raw.{unique}"
    ensure_topics(kafka.bootstrap, [TopicSpec(topic, 1)])
    client = SchemaRegistryClient({"url": registry_url})
    serializer = AvroSerializer(client, RAW_PDU)  # auto-registers under "<topic>-value"
    record = _raw_pdu_record()
    ctx = SerializationContext(topic, MessageField.VALUE)
    payload = serializer(record, ctx)
    assert payload is not None and payload[0] == 0  # Confluent wire format: magic byte, then the id

    [consumed] = _roundtrip_through_kafka(kafka.bootstrap, topic, [payload])
    schema_id = int.from_bytes(consumed[1:5], "big")
    assert client.get_latest_version(f"{topic}-value").schema_id == schema_id

    # A fresh client (empty cache) must fetch the writer schema by id from the registry.
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
    decoded = deserializer(consumed, ctx)
    # timestamp-millis comes back as an aware datetime, as fastavro reads logical types.
    assert decoded == {**record, "received_at": datetime.fromtimestamp(1_767_225_600, tz=UTC)}


def test_ids_survive_registry_restart(kafka: KafkaUnderTest, unique: str) -> None:
    subject = f"test-restart-{unique}-value"
    first = RegistryThread(kafka.bootstrap)
    url = first.start()
    try:
        client = SchemaRegistryClient({"url": url})
        id1 = client.register_schema(subject, Schema(json.dumps(V1), "AVRO"))
        id2 = client.register_schema(subject, Schema(json.dumps(V2_ADDS_DEFAULTED), "AVRO"))
        # Same schema text under another subject: same global id.
        assert client.register_schema(f"other-{subject}", Schema(json.dumps(V1, indent=2), "AVRO")) == id1
    finally:
        first.stop()

    second = RegistryThread(kafka.bootstrap)
    url2 = second.start()
    try:
        client2 = SchemaRegistryClient({"url": url2})
        assert json.loads(client2.get_schema(id1).schema_str or "") == V1
        assert json.loads(client2.get_schema(id2).schema_str or "") == V2_ADDS_DEFAULTED
        assert client2.get_versions(subject) == [1, 2]
        assert client2.get_latest_version(subject).schema_id == id2
        # Registering again is a lookup, not a new id or version.
        assert client2.register_schema(subject, Schema(json.dumps(V1), "AVRO")) == id1
        assert client2.lookup_schema(subject, Schema(json.dumps(V1), "AVRO")).version == 1
        assert client2.get_versions(subject) == [1, 2]
        # A brand-new schema gets an id no earlier schema had.
        id3 = client2.register_schema(f"new-{subject}", Schema(json.dumps({**V1, "name": "Other"}), "AVRO"))
        assert id3 not in (id1, id2)
    finally:
        second.stop()


def test_compatibility_is_enforced(kafka: KafkaUnderTest, registry_url: str, unique: str) -> None:
    topic = f"test.registry.evolve.{unique}"
    subject = f"{topic}-value"
    ensure_topics(kafka.bootstrap, [TopicSpec(topic, 1)])
    client = SchemaRegistryClient({"url": registry_url})
    assert client.get_compatibility() == "BACKWARD"
    client.register_schema(subject, Schema(json.dumps(V1), "AVRO"))

    # A new field without a default: a new reader could not read old data.
    assert client.test_compatibility(subject, Schema(json.dumps(V2_ADDS_REQUIRED), "AVRO")) is False
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema(subject, Schema(json.dumps(V2_ADDS_REQUIRED), "AVRO"))
    assert err.value.http_status_code == 409 and err.value.error_code == 409
    assert "operator" in err.value.error_message

    # Adding a field with a default is BACKWARD-compatible.
    assert client.test_compatibility(subject, Schema(json.dumps(V2_ADDS_DEFAULTED), "AVRO")) is True
    new_id = client.register_schema(subject, Schema(json.dumps(V2_ADDS_DEFAULTED), "AVRO"))
    assert client.get_versions(subject) == [1, 2]

    ctx = SerializationContext(topic, MessageField.VALUE)
    old_writer = AvroSerializer(client, json.dumps(V1), conf={"auto.register.schemas": False})
    new_writer = AvroSerializer(client, json.dumps(V2_ADDS_DEFAULTED), conf={"auto.register.schemas": False})
    old_bytes = old_writer({"id": "m-1", "count": 1}, ctx)
    new_bytes = new_writer({"id": "m-2", "count": 2, "country": "HK"}, ctx)
    assert old_bytes is not None and new_bytes is not None
    assert int.from_bytes(new_bytes[1:5], "big") == new_id
    consumed = _roundtrip_through_kafka(kafka.bootstrap, topic, [old_bytes, new_bytes])

    # An OLD reader (a consumer not yet upgraded) reads NEW data: the added field is skipped.
    old_reader = AvroDeserializer(SchemaRegistryClient({"url": registry_url}), json.dumps(V1))
    assert [old_reader(b, ctx) for b in consumed] == [{"id": "m-1", "count": 1}, {"id": "m-2", "count": 2}]
    # A NEW reader reads OLD data: the default fills the gap.
    new_reader = AvroDeserializer(SchemaRegistryClient({"url": registry_url}), json.dumps(V2_ADDS_DEFAULTED))
    assert [new_reader(b, ctx) for b in consumed] == [
        {"id": "m-1", "count": 1, "country": None},
        {"id": "m-2", "count": 2, "country": "HK"},
    ]

    # int -> long is a promotion a reader can do; FULL also needs the old schema to read the new data.
    assert client.test_compatibility(subject, Schema(json.dumps(V3_PROMOTES), "AVRO")) is True
    client.set_compatibility(subject, "FULL")
    assert client.get_compatibility(subject) == "FULL"
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema(subject, Schema(json.dumps(V3_PROMOTES), "AVRO"))
    assert err.value.http_status_code == 409


def test_rest_errors_and_soft_delete(registry_url: str, unique: str) -> None:
    subject = f"test-rest-{unique}-value"
    client = SchemaRegistryClient({"url": registry_url})
    with pytest.raises(SchemaRegistryError) as err:
        client.get_latest_version(subject)
    assert (err.value.http_status_code, err.value.error_code) == (404, 40401)
    with pytest.raises(SchemaRegistryError) as err:
        client.get_schema(987654)
    assert (err.value.http_status_code, err.value.error_code) == (404, 40403)

    sid = client.register_schema(subject, Schema(json.dumps(V1), "AVRO"))
    with pytest.raises(SchemaRegistryError) as err:
        client.get_version(subject, 9)
    assert (err.value.http_status_code, err.value.error_code) == (404, 40402)
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema(subject, Schema('{"type": "record", "name": "X"}', "AVRO"))
    assert (err.value.http_status_code, err.value.error_code) == (422, 42201)

    resp = requests.get(f"{registry_url}/schemas/ids/{sid}", timeout=10)
    assert resp.headers["Content-Type"].startswith("application/vnd.schemaregistry.v1+json")
    probe = requests.get(f"{registry_url}/associations/resources/-/{subject}?resourceType=topic", timeout=10)
    assert probe.status_code == 404 and "error_code" in probe.json()

    assert client.delete_version(subject, 1) == 1  # soft: gone from the subject, id still resolves
    assert subject not in client.get_subjects()
    fresh = SchemaRegistryClient({"url": registry_url})  # no cache: ask the server
    assert json.loads(fresh.get_schema(sid).schema_str or "") == V1


def test_basic_auth_when_configured(kafka: KafkaUnderTest, unique: str) -> None:
    with RegistryThread(kafka.bootstrap, username="ops", password="s3cret") as registry:
        assert registry.url is not None
        anonymous = SchemaRegistryClient({"url": registry.url})
        with pytest.raises(SchemaRegistryError) as err:
            anonymous.get_subjects()
        assert err.value.http_status_code == 401
        wrong = SchemaRegistryClient({"url": registry.url, "basic.auth.user.info": "ops:guess"})
        with pytest.raises(SchemaRegistryError):
            wrong.get_subjects()
        client = SchemaRegistryClient({"url": registry.url, "basic.auth.user.info": "ops:s3cret"})
        assert client.register_schema(f"test-auth-{unique}", Schema(json.dumps(V1), "AVRO")) > 0
