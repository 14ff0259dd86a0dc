"""The precompiled Avro path writes exactly what confluent-kafka's serializer writes, and reads what any
writer version of the contract wrote (records under another schema id resolve through the registry)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from smsflow.schemas import INBOUND_TOPIC, RAW_TOPIC, schema_for_topic
from smsflow.serde import Serde
from tests.factories import inbound_record, raw_record

V1 = Path(__file__).resolve().parents[2] / "data" / "schemas" / "inbound_message.v1-initial.avsc"
CTX_INBOUND = SerializationContext(INBOUND_TOPIC, MessageField.VALUE)


def _client() -> MockSchemaRegistryClient:
    return MockSchemaRegistryClient({"url": "mock://registry"})


def _raw() -> dict[str, Any]:
    return raw_record(
        bytes(range(200)), "85261234567", "85230001000", 8, esm_class=0x40, received_at=1_795_000_000_123
    )


def _inbound() -> dict[str, Any]:
    return inbound_record("msg_1")


def test_bytes_are_confluents_wire_format_and_read_back_with_epoch_millis() -> None:
    client = _client()
    serde = Serde(client)
    serde.warm_up([RAW_TOPIC])
    record = _raw()
    ours = serde.encode(RAW_TOPIC, record)
    theirs = AvroSerializer(client, schema_for_topic(RAW_TOPIC))(
        record, SerializationContext(RAW_TOPIC, MessageField.VALUE)
    )
    assert ours == theirs
    assert (
        ours[0] == 0
        and int.from_bytes(ours[1:5], "big") == client.get_latest_version(f"{RAW_TOPIC}-value").schema_id
    )
    back = serde.decode(RAW_TOPIC, ours)
    assert back == record
    assert isinstance(back["received_at"], int)  # timestamp-millis stays epoch millis, not a datetime


def test_a_codec_used_before_warm_up_registers_its_contract_itself() -> None:
    serde = Serde(_client())
    data = serde.encode(INBOUND_TOPIC, _inbound())
    assert serde.decode(INBOUND_TOPIC, data)["message_id"] == "msg_1"


def test_a_record_of_an_older_writer_version_resolves_into_todays_contract() -> None:
    client = _client()
    subject = f"{INBOUND_TOPIC}-value"
    client.register_schema(subject, Schema(V1.read_text(), "AVRO"))
    old_writer = AvroSerializer(client, V1.read_text(), conf={"auto.register.schemas": True})
    old_bytes = old_writer(_inbound(), CTX_INBOUND)  # fields V1 does not know are not written
    assert old_bytes is not None
    serde = Serde(client)
    serde.warm_up([INBOUND_TOPIC])
    assert old_bytes[1:5] != serde.encode(INBOUND_TOPIC, _inbound())[1:5]  # two versions, two ids
    rec = serde.decode(INBOUND_TOPIC, old_bytes)
    assert rec["body"] == "【京东】您的验证码是 825959。😀"
    assert rec["received_at"] == 1_795_000_000_000 and isinstance(rec["received_at"], int)
    assert rec["to_type"] is None  # a field the old writer did not know: today's default


def test_a_generic_confluent_reader_reads_our_records() -> None:
    client = _client()
    serde = Serde(client)
    data = serde.encode(INBOUND_TOPIC, _inbound())
    generic = AvroDeserializer(client)(data, CTX_INBOUND)
    assert isinstance(generic, dict)
    assert generic["message_id"] == "msg_1" and generic["body"] == _inbound()["body"]
