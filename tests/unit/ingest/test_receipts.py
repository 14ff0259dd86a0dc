"""Delivery receipts in ingest: told apart from customer SMS by esm_class or TLV, read from TLVs and text into
one sms.receipts.v1 record, and never a crash: whatever a carrier writes, the record fits its Avro schema."""

from __future__ import annotations

from typing import Any

import pytest

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
    assert info["submitted"] is None and len(info["message_id"]) == MAX_MESSAGE_ID_CHARS


# ---- telling receipts apart, and what a receipt record says ---------------------------------------------
RECEIPTED_MESSAGE_ID, MESSAGE_STATE, NETWORK_ERROR_CODE = 0x001E, 0x0427, 0x0423
DLR_TEXT = (
    "id:1A2B3C sub:001 dlvrd:001 submit date:2603031234 done date:2603031235 stat:DELIVRD err:000 text:Hi"
)


def _ingest(text: bytes, esm_class: int, tlvs: list[tuple[int, bytes]] | None = None) -> list[Any]:
    proc = IngestProcessor({}, {}, IngestSettings())
    pdu = deliver_sm_bytes("85261234567", "85230001000", text, 0, esm_class=esm_class, tlvs=tlvs or [])
    record = raw_record(pdu, "85261234567", "85230001000", 0, esm_class, carrier="hk1", route="hk-a")
    return list(proc.on_raw(record, RecordOrigin("sms.raw.v1", 3, 41), None))


@pytest.mark.parametrize(
    "esm_class",
    [
        0x04,  # SMSC delivery receipt
        0x08,  # SME delivery acknowledgement
        0x10,  # SME manual/user acknowledgement
        0x20,  # intermediate delivery notification
        0x44,  # a receipt with a UDHI bit set: the message-type bits still say receipt
    ],
)
def test_every_receipt_message_type_goes_to_receipts_not_to_customers(esm_class: int) -> None:
    [out] = _ingest(DLR_TEXT.encode(), esm_class)
    assert out.kind == "receipt" and out.record["esm_class"] == esm_class


@pytest.mark.parametrize("esm_class", [0x00, 0x80])  # plain SMS; SMS with a reply path
def test_a_customer_sms_that_reads_like_a_receipt_is_still_an_sms(esm_class: int) -> None:
    [out] = _ingest(DLR_TEXT.encode(), esm_class)
    assert out.kind == "inbound"


def test_a_receipted_message_id_tlv_alone_makes_a_receipt() -> None:
    [out] = _ingest(b"", 0x00, [(RECEIPTED_MESSAGE_ID, b"77AB\x00"), (MESSAGE_STATE, bytes([5]))])
    assert out.kind == "receipt"
    assert (out.record["message_id"], out.record["state"]) == ("77AB", "UNDELIV")


def test_the_receipt_record_carries_the_text_fields_and_where_it_came_from() -> None:
    [out] = _ingest(DLR_TEXT.encode(), 0x04)
    encode(out.record, "delivery_receipt.avsc")
    assert out.record == {
        "receipt_id": "dlr_hk1_1A2B3C_DELIVRD_1700000000000",
        "message_id": "1A2B3C",
        "message_id_decimal": str(0x1A2B3C),  # hex with a-f digits: unambiguous
        "state": "DELIVRD",
        "error_code": "000",
        "submitted": 1,
        "delivered": 1,
        "submit_date": "2603031234",
        "done_date": "2603031235",
        "text": "Hi",
        "from_number": "85261234567",
        "to_number": "85230001000",
        "esm_class": 0x04,
        "carrier_id": "hk1",
        "route_id": "hk-a",
        "received_at": 1_700_000_000_000,
    }
    # every receipt of one MT on one partition of sms.receipts.v1, whichever carrier session brought it
    assert out.key == "1A2B3C"


def test_tlvs_win_over_the_text() -> None:
    tlvs = [(RECEIPTED_MESSAGE_ID, b"FFEE01\x00"), (MESSAGE_STATE, bytes([8]))]
    [out] = _ingest(b"id:999 stat:DELIVRD", 0x04, tlvs)
    assert (out.record["message_id"], out.record["state"]) == ("FFEE01", "REJECTD")


def test_the_network_error_code_tlv_gives_the_error_when_the_text_has_none() -> None:
    gsm_error_11 = bytes([3, 0x00, 0x0B])  # network type 3 (GSM), error 11
    [out] = _ingest(b"id:42 stat:UNDELIV", 0x04, [(NETWORK_ERROR_CODE, gsm_error_11)])
    assert out.record["error_code"] == "3:11"
    [out] = _ingest(b"id:42 stat:UNDELIV err:034", 0x04, [(NETWORK_ERROR_CODE, gsm_error_11)])
    assert out.record["error_code"] == "034"


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("id:5 stat:delivrd", "DELIVRD"),  # any case
        ("id:5 stat:DELIVERED", "DELIVERED"),  # the long spellings some carriers use
        ("id:5", "UNKNOWN"),  # no state at all
        ("id:5 stat:SOMETHINGNEWANDVERYLONG", "SOMETHINGNEWANDV"),  # kept, cut to a bounded length
    ],
)
def test_the_state_as_the_carrier_wrote_it(text: str, state: str) -> None:
    [out] = _ingest(text.encode(), 0x04)
    assert out.record["state"] == state


def test_the_text_field_runs_to_the_end_colons_and_all() -> None:
    [out] = _ingest(b"id:5 stat:DELIVRD err:000 text:Your code: 1234 id:x", 0x04)
    assert out.record["text"] == "Your code: 1234 id:x" and out.record["message_id"] == "5"


def test_a_receipt_without_an_id_is_kept_and_keyed_by_its_carrier() -> None:
    [out] = _ingest(b"stat:EXPIRED err:000", 0x04)
    assert (out.record["message_id"], out.record["message_id_decimal"]) == ("", None)
    assert out.record["state"] == "EXPIRED" and out.key == "hk1"


def test_an_id_of_decimal_digits_gets_no_second_reading_without_a_profile() -> None:
    [out] = _ingest(b"id:1234 stat:DELIVRD", 0x04)
    assert out.record["message_id_decimal"] is None
