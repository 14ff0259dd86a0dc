"""Every stage's quarantine record comes from one builder and fits the sms.quarantine.v1 contract."""

from __future__ import annotations

import io

import fastavro

from smsflow.ingest.processor import quarantine_publish
from smsflow.ingest.quarantine import Source, quarantine_record
from tests.avro_check import encode, parsed_schema

SCHEMA = "quarantined_pdu.avsc"


def _round_trip(record: dict[str, object]) -> dict[str, object]:
    decoded = fastavro.schemaless_reader(io.BytesIO(encode(record, SCHEMA)), parsed_schema(SCHEMA))
    assert isinstance(decoded, dict)
    return decoded


def test_a_connector_rejection_keeps_the_carrier_answer_and_no_kafka_source() -> None:
    record = quarantine_record(
        "connector", "bad UDH", carrier_id="c1", route_id="r1", session_id="s1", status=0x45, pdu=b"\x01"
    )
    back = _round_trip(record)
    assert back["stage"] == "connector"
    assert back["status"] == 0x45
    assert back["source_topic"] is None and back["source_offset"] is None


def test_a_delivery_quarantine_names_the_inbound_record_it_could_not_read() -> None:
    source = Source("sms.inbound.v1", 3, 42)
    back = _round_trip(quarantine_record("deliver", "does not decode", pdu=b"xx", source=source))
    assert (back["source_topic"], back["source_partition"], back["source_offset"]) == (
        "sms.inbound.v1",
        3,
        42,
    )


def test_an_ingest_quarantine_parses_its_origin_and_keys_by_carrier() -> None:
    raw = {"carrier_id": "c1", "route_id": "r1", "pdu": b"\x00", "received_at": 5}
    item = quarantine_publish(raw, "cannot parse", "sms.raw.v1:2:17", 2)
    assert item.kind == "quarantine" and item.key == "c1"
    back = _round_trip(item.record)
    assert (back["stage"], back["source_topic"], back["source_partition"], back["source_offset"]) == (
        "ingest",
        "sms.raw.v1",
        2,
        17,
    )
    synthetic = quarantine_publish(raw, "expired", "tick|2", 2)
    assert (synthetic.record["source_topic"], synthetic.record["source_partition"]) == (None, 2)
