"""Receipts never crash ingest: whatever a carrier writes, a receipt record fits its Avro schema."""

from __future__ import annotations

from smsflow.avro_range import INT_MAX, read_count
from smsflow.ingest.origin import RecordOrigin
from smsflow.ingest.processor import IngestProcessor, IngestSettings
from smsflow.ingest.receipts import parse_receipt
from tests.avro_check import encode
from tests.factories import deliver_sm_bytes, raw_record

MAX_MESSAGE_ID_CHARS = 64  # SMPP 3.4: message_id is a C-Octet String of at most 65 octets with its NUL


def _receipt_records(text: str, tlvs: list[tuple[int, bytes]] | None = None) -> list[dict]:
    proc = IngestProcessor({}, {}, IngestSettings())
    body, tlvs = text.encode(), list(tlvs or [])
    if len(body) > 254:  # what does not fit short_message travels in message_payload
        body, tlvs = b"", [*tlvs, (0x0424, body)]
    pdu = deliver_sm_bytes("85261234567", "85230001000", body, 0, esm_class=0x04, tlvs=tlvs)
    outs = proc.on_raw(
        raw_record(pdu, "85261234567", "85230001000", 0, 0x04), RecordOrigin("sms.raw.v1", 0, 7), None
    )
    assert [o.kind for o in outs] == ["receipt"]
    for out in outs:
        encode(out.record, "delivery_receipt.avsc")
    return [o.record for o in outs]


def test_counters_above_avro_int_are_null_not_a_crash() -> None:
    (record,) = _receipt_records(
        f"id:1A2B sub:{2**31} dlvrd:99999999999999999999999 submit date:2603031234 stat:DELIVRD err:000"
    )
    assert (record["submitted"], record["delivered"]) == (None, None)
    assert record["state"] == "DELIVRD" and record["message_id"] == "1A2B"


def test_counters_that_fit_are_read() -> None:
    (record,) = _receipt_records(f"id:77 sub:001 dlvrd:{INT_MAX} stat:DELIVRD")
    assert (record["submitted"], record["delivered"]) == (1, INT_MAX)


def test_an_id_of_4000_hex_digits_is_cut_not_a_crash() -> None:
    long_id = "F" * 4000
    (record,) = _receipt_records(f"id:{long_id} sub:001 dlvrd:001 stat:DELIVRD err:000")
    assert record["message_id"] == "F" * MAX_MESSAGE_ID_CHARS
    assert record["message_id_decimal"] == str(int("F" * MAX_MESSAGE_ID_CHARS, 16))
    assert len(record["receipt_id"]) < 200


def test_an_over_long_receipted_message_id_tlv_is_cut() -> None:
    (record,) = _receipt_records("", tlvs=[(0x001E, b"9" * 65 + b"\x00"), (0x0427, bytes([2]))])
    assert record["message_id"] == "9" * 64 and record["state"] == "DELIVRD"


def test_count_reading_refuses_what_is_not_a_plain_counter() -> None:
    assert read_count("001") == 1
    for text in ("", "-1", "+1", "1_000", " 1", "١٢", "9" * 5000, str(2**31), None):
        assert read_count(text) is None, text


def test_parse_receipt_of_digits_beyond_pythons_int_limit() -> None:
    info = parse_receipt("id:" + "1" * 5000 + " sub:" + "9" * 5000, None, None, None)
    assert info.submitted is None and len(info.message_id) == MAX_MESSAGE_ID_CHARS
