"""The webhook payload and sms.inbound.v1 carry the destination's calling code, type and operator, and
the InboundMessage schema change stays readable both ways (old readers, old records)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro

from smsflow.ingest.origin import RecordOrigin
from smsflow.ingest.processor import IngestProcessor, IngestSettings
from smsflow.payload import webhook_payload
from tests.avro_check import encode, parsed_schema
from tests.factories import deliver_sm_bytes, raw_record

SCHEMAS = Path(__file__).resolve().parents[2] / "data" / "schemas"
# The schema as first published, and as it was before the destination's calling code and type.
OLD_SCHEMAS = ["inbound_message.v1-initial.avsc", "inbound_message.v2-enriched.avsc"]


def _inbound(dest: str, dest_ton: int, region: str) -> dict:
    proc = IngestProcessor({}, {}, IngestSettings(default_regions={"c1": region}))
    text = "【京东】您的验证码是 825959。".encode("utf-16-be")
    pdu = deliver_sm_bytes("1069012345", dest, text, 8, source_ton=0, dest_ton=dest_ton)
    record = raw_record(pdu, "1069012345", dest, 8, source_ton=0, dest_ton=dest_ton)
    outs = proc.on_raw(record, RecordOrigin("sms.raw.v1", 0, 1), None)
    assert [o.kind for o in outs] == ["inbound"]
    return outs[0].record


def test_payload_names_the_destinations_calling_code_type_and_operator() -> None:
    payload = webhook_payload(_inbound("13812345678", 2, "CN"))
    assert payload["to_number"] == "+8613812345678"
    assert (payload["to_country_code"], payload["to_calling_code"]) == ("CN", 86)
    assert (payload["to_type"], payload["to_operator"]) == ("mobile", "China Mobile")
    assert payload["otp"] == "825959"
    json.dumps(payload)  # a webhook body: JSON all the way down


def test_hong_kong_destination() -> None:
    payload = webhook_payload(_inbound("85291234567", 1, "HK"))
    assert (payload["to_country_code"], payload["to_calling_code"], payload["to_type"]) == (
        "HK",
        852,
        "mobile",
    )


def test_old_readers_read_new_records_and_the_new_reader_reads_old_ones() -> None:
    record = _inbound("13812345678", 2, "CN")
    written = encode(record, "inbound_message.avsc")
    for old_name in OLD_SCHEMAS:
        old = fastavro.parse_schema(json.loads((SCHEMAS / old_name).read_text()))
        read = fastavro.schemaless_reader(io.BytesIO(written), parsed_schema("inbound_message.avsc"), old)
        assert read["otp"] == "825959" and "to_type" not in read, old_name
        # and a record an old writer wrote reads with today's schema, the new fields at their defaults
        old_record = {k: v for k, v in record.items() if k in {f["name"] for f in old["fields"]}}
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, old, old_record)
        buffer.seek(0)
        new = fastavro.schemaless_reader(buffer, old, parsed_schema("inbound_message.avsc"))
        assert (new["to_calling_code"], new["to_type"]) == (None, None) and new["otp"] == "825959"
