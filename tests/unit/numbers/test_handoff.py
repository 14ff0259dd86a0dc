"""The connector's reading of the addresses, handed to the ingest stage in ``sms.raw.v1`` (handoff.py).

What must hold: a handed-on reading is exactly what the ingest stage would read itself, or it is not used.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.smpp.connector import SmppConnector
from connectors.smpp.session import InboundPdu
from smsflow.ingest.origin import RecordOrigin
from smsflow.ingest.processor import IngestProcessor, IngestSettings
from smsflow.keys import conversation_key
from smsflow.numbers import normalize_number
from smsflow.numbers.handoff import handed, read_pair
from smsflow.smpp.address import Address
from smsflow.smpp.pdu import decode_pdu
from tests.factories import deliver_sm_bytes, raw_record, segment_records
from tests.unit.core.test_carrier_profiles import CapturingSerde, StoringProducer, carrier
from tests.unit.numbers.test_normalize import CASES

ADDRESSES = [
    *dict.fromkeys((c[0], c[1], c[3]) for c in CASES),
    ("", 0, None),
    ("  ", 1, "HK"),
    ("#HSBC", 5, "HK"),
    ("１０６９０", 0, "CN"),  # full-width digits: display is the NFKC form
    ("+852 6123 4567", 0, None),
    ("٦١٢٣٤٥٦٧", 0, "HK"),  # Arabic-Indic digits
]


@pytest.mark.parametrize(("addr", "ton", "region"), ADDRESSES)
def test_a_handed_reading_is_the_reading_itself(addr: str, ton: int, region: str | None) -> None:
    other = "85230001000"
    src, dst, numbers = read_pair(addr, ton, other, 1, region)
    assert (src, dst) == (normalize_number(addr, ton, 0, region), normalize_number(other, 1, 0, region))
    assert handed(numbers, addr, ton, other, 1, region) == (src, dst)
    src2, dst2, numbers2 = read_pair(other, 1, addr, ton, region)
    assert handed(numbers2, other, 1, addr, ton, region) == (src2, dst2)


@settings(max_examples=300, deadline=None)
@given(
    addr=st.text(alphabet=st.sampled_from("0123456789+ -#ABx１٦\u00a0"), max_size=20),
    ton=st.integers(0, 7),
    region=st.sampled_from([None, "HK", "hk", "CN", "US"]),
)
def test_any_address_survives_the_hand_off(addr: str, ton: int, region: str | None) -> None:
    src, _, numbers = read_pair(addr, ton, addr, ton, region)
    assert handed(numbers, addr, ton, addr, ton, region) == (src, src)


def test_key_from_the_handed_reading_is_the_key() -> None:
    from smsflow.keys import conversation_key_of

    for addr, ton, region in ADDRESSES:
        dst = Address(1, 1, "85230001000")
        src_info, dst_info, _ = read_pair(addr, ton, dst.digits, dst.ton, region)
        assert conversation_key_of(src_info, dst_info) == conversation_key(Address(ton, 1, addr), dst, region)


def test_a_reading_made_otherwise_is_not_used() -> None:
    _, _, numbers = read_pair("61234567", 2, "30001000", 2, "HK")
    assert handed(numbers, "61234567", 2, "30001000", 2, "HK") is not None
    assert handed(numbers, "61234567", 2, "30001000", 2, "hk") is not None  # regions compare upper case
    assert handed(numbers, "61234567", 2, "30001000", 2, "CN") is None  # the other process's region differs
    assert handed(numbers, "61234567", 2, "30001000", 2, None) is None
    assert handed(numbers, "61234567", 1, "30001000", 2, "HK") is None  # another TON
    assert handed(numbers, "61234567", 2, "30001001", 2, "HK") is None  # another address
    assert handed(None, "61234567", 2, "30001000", 2, "HK") is None


GOOD = ["HK", ["1", 1, "+1", "mobile", "HK", 852, "HKT"], ["2", 1, None, "short_code", None, None, "unknown"]]


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        "[]",
        '{"region": "HK"}',
        orjson.dumps(["HK", GOOD[1]]).decode(),
        orjson.dumps(["HK", GOOD[1], GOOD[2], 1]).decode(),
        orjson.dumps(["HK", GOOD[1][:6], GOOD[2]]).decode(),
        orjson.dumps(["HK", [*GOOD[1][:3], "planet", *GOOD[1][4:]], GOOD[2]]).decode(),  # no such kind
        json.dumps(["HK", [*GOOD[1][:5], 10**30, GOOD[1][6]], GOOD[2]]),  # huge calling code
        json.dumps(["HK", [*GOOD[1][:5], 1000, GOOD[1][6]], GOOD[2]]),
        json.dumps(["HK", [*GOOD[1][:5], -852, GOOD[1][6]], GOOD[2]]),
        orjson.dumps(["HK", [*GOOD[1][:5], 0, GOOD[1][6]], GOOD[2]]).decode(),
        orjson.dumps(["HK", [*GOOD[1][:5], True, GOOD[1][6]], GOOD[2]]).decode(),  # a bool is no code
        orjson.dumps(["HK", [*GOOD[1][:5], 852.0, GOOD[1][6]], GOOD[2]]).decode(),
        orjson.dumps(["HK", [*GOOD[1][:2], "85261234567", *GOOD[1][3:]], GOOD[2]]).decode(),  # e164 with no +
        orjson.dumps(["HK", [*GOOD[1][:2], 5, *GOOD[1][3:]], GOOD[2]]).decode(),
        orjson.dumps(["HK", [*GOOD[1][:6], None], GOOD[2]]).decode(),  # no operator
        orjson.dumps(["HK", [*GOOD[1][:4], 7, *GOOD[1][5:]], GOOD[2]]).decode(),
        orjson.dumps(["HK", [GOOD[1][0], True, *GOOD[1][2:]], GOOD[2]]).decode(),  # True == 1, but no TON
    ],
)
def test_a_malformed_hand_off_is_read_again_not_trusted(bad: str) -> None:
    assert handed(orjson.dumps(GOOD).decode(), "1", 1, "2", 1, "HK")  # the shape the cases spoil
    assert handed(bad, "1", 1, "2", 1, "HK") is None


# ---- the ingest processor uses it, and only where it fits ------------------------------------------------
def _planted(src: str, dst: str, region: str | None, ton: int = 1) -> str:
    """A hand-off with operators no reading gives: where a message carries them, the hand-off was used."""
    _, _, numbers = read_pair(src, ton, dst, ton, region)
    value = orjson.loads(numbers)
    value[1][6], value[2][6] = "handed-src", "handed-dst"
    return orjson.dumps(value).decode()


def _inbound(records: list[dict[str, Any]], regions: dict[str, str | None]) -> dict[str, Any]:
    proc = IngestProcessor({}, {}, IngestSettings(default_regions=regions))
    out = []
    for off, rec in enumerate(records):
        outs = proc.on_raw(rec, RecordOrigin("sms.raw.v1", 0, off), None)
        outs.apply_deferred()
        out += [p.record for p in outs if p.kind == "inbound"]
    assert len(out) == 1
    return out[0]


def test_single_part_message_takes_the_handed_reading() -> None:
    rec = raw_record(
        deliver_sm_bytes("85261234567", "85230001000", b"code 1234", 0), "85261234567", "85230001000", 0
    )
    plain = _inbound([rec], {"c1": "HK"})
    assert plain["from_operator"] == "HKT"
    used = _inbound([{**rec, "numbers": _planted("85261234567", "85230001000", "HK")}], {"c1": "HK"})
    assert (used["from_operator"], used["to_operator"]) == ("handed-src", "handed-dst")
    assert {k: v for k, v in used.items() if k not in ("from_operator", "to_operator", "completed_at")} == {
        k: v for k, v in plain.items() if k not in ("from_operator", "to_operator", "completed_at")
    }
    # the loop's config reads the carrier's numbers in another region: its own reading wins
    other = _inbound([{**rec, "numbers": _planted("85261234567", "85230001000", "HK")}], {"c1": "CN"})
    assert other["from_operator"] == "HKT"


def test_multipart_message_takes_the_completing_parts_reading_when_its_ton_fits() -> None:
    parts = segment_records("两部分的短信" * 20, 8, "udh8", 9, source="85261234567")
    assert len(parts) == 2
    handed_on = _planted("85261234567", "85230001000", None)
    used = _inbound([{**p, "numbers": handed_on} for p in parts], {})
    assert used["from_operator"] == "handed-src" and used["segment_count"] == 2
    # the first part's TON is the message's; a last part sent with another TON carries a reading of that one
    first, last = parts
    last = {**last, "source_addr_ton": 0, "numbers": _planted("85261234567", "85230001000", None, ton=0)}
    assert _inbound([first, last], {})["from_operator"] == "HKT"


# ---- the connector writes it -----------------------------------------------------------------------------
async def test_connector_hands_on_the_reading_it_keyed_the_record_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PW", "pw")
    c = carrier(default_region="hk")
    serde = CapturingSerde()
    sent: list[Any] = []

    class KeyedProducer(StoringProducer):
        async def send(self, topic: str, value: bytes, key: Any = None, headers: Any = None) -> Any:
            sent.append(key)
            return await super().send(topic, value, key, headers)

    conn = SmppConnector([c], KeyedProducer(), serde)  # type: ignore[arg-type]
    raw = deliver_sm_bytes("61234567", "30001000", b"hi", 0, source_ton=2, dest_ton=2)
    assert await conn.store(c, InboundPdu(decode_pdu(raw), raw, "s", "r", 0)) == 0
    rec = serde.records[0]
    src, dst = handed(rec["numbers"], "61234567", 2, "30001000", 2, "HK") or (None, None)
    assert src == normalize_number("61234567", 2, 0, "HK") and src.e164 == "+85261234567"
    assert dst == normalize_number("30001000", 2, 0, "HK")
    assert sent == [conversation_key(Address(2, 1, "61234567"), Address(2, 1, "30001000"), "HK")]
