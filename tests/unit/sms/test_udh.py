"""User Data Header as a list of elements; concatenation from UDH and from SAR TLVs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsflow.smpp.constants import TlvTag
from smsflow.smpp.pdu import Tlv, decode_pdu, make_tlv
from smsflow.sms.udh import (
    ConcatInfo,
    InformationElement,
    UdhError,
    build_udh,
    concat_from_sar,
    concat_ie,
    concat_info,
    fill_bits,
    parse_udh,
)

IE = InformationElement


def test_8bit_reference() -> None:
    ies, rest = parse_udh(bytes.fromhex("050003CC0201") + b"Hello")
    assert ies == [IE(0x00, b"\xcc\x02\x01")]
    assert rest == b"Hello"
    assert concat_info(ies) == ConcatInfo(ref=0xCC, total=2, seq=1, ref_bits=8)


def test_16bit_reference() -> None:
    ies, rest = parse_udh(bytes.fromhex("060804BEEF0302") + b"x")
    assert concat_info(ies) == ConcatInfo(ref=0xBEEF, total=3, seq=2, ref_bits=16)
    assert rest == b"x"


def test_concatenation_after_other_elements_is_found() -> None:
    # application port addressing (IEI 0x05, WAP push 2948 <- 9200) before the concatenation element
    udh = bytes.fromhex("0B05040B8423F000037F0302")
    ies, rest = parse_udh(udh + b"\x01\x02")
    assert [ie.iei for ie in ies] == [0x05, 0x00]
    assert concat_info(ies) == ConcatInfo(0x7F, 3, 2, 8)
    assert rest == b"\x01\x02"


def test_unknown_and_empty_elements_are_skipped() -> None:
    udh = bytes.fromhex("0A70002403AABBCC2401FF")
    ies, rest = parse_udh(udh + b"t")
    assert ies == [IE(0x70, b""), IE(0x24, b"\xaa\xbb\xcc"), IE(0x24, b"\xff")]
    assert rest == b"t"
    assert concat_info(ies) is None


def test_the_last_concatenation_element_counts() -> None:
    ies = [IE(0x00, b"\x01\x02\x01"), IE(0x08, b"\x00\x09\x04\x03")]
    assert concat_info(ies) == ConcatInfo(9, 4, 3, 16)


def test_zero_length_udh() -> None:
    assert parse_udh(b"\x00text") == ([], b"text")


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"\x05\x00\x03\x01", "exceeds"),
        (bytes.fromhex("050004CC0201") + b"x", "declares 4"),
        (bytes.fromhex("0400030102") + b"x", "declares 3"),
        (bytes.fromhex("040001007F") + b"x", "stray"),
    ],
)
def test_malformed_headers(data: bytes, words: str) -> None:
    with pytest.raises(UdhError) as info:
        parse_udh(data)
    assert words in info.value.reason


@pytest.mark.parametrize(
    "ie",
    [
        IE(0x00, b"\x01\x02"),  # too short
        IE(0x08, b"\x01\x02\x03"),  # too short for a 16-bit reference
        IE(0x00, b"\x01\x00\x00"),  # total 0
        IE(0x00, b"\x01\x02\x00"),  # seq 0
        IE(0x00, b"\x01\x02\x03"),  # seq > total
        IE(0x08, b"\x00\x01\x02\x03"),
    ],
)
def test_invalid_concatenation_is_an_error(ie: InformationElement) -> None:
    with pytest.raises(UdhError):
        concat_info([ie])


def test_sar_tlvs() -> None:
    tlvs = [
        make_tlv(TlvTag.source_network_type, 1),
        make_tlv(TlvTag.sar_msg_ref_num, 0x1234),
        make_tlv(TlvTag.sar_total_segments, 3),
        make_tlv(TlvTag.sar_segment_seqnum, 3),
    ]
    assert concat_from_sar(tlvs) == ConcatInfo(0x1234, 3, 3, 16)
    assert concat_from_sar([(t.tag, t.value) for t in tlvs]) == ConcatInfo(0x1234, 3, 3, 16)
    assert concat_from_sar(tlvs[:1]) is None
    assert concat_from_sar([]) is None


@pytest.mark.parametrize(
    "tlvs",
    [
        [Tlv(0x020C, b"\x00\x01"), Tlv(0x020E, b"\x02")],  # seqnum missing
        [Tlv(0x020C, b"\x01"), Tlv(0x020E, b"\x02"), Tlv(0x020F, b"\x01")],  # ref must be 2 octets
        [Tlv(0x020C, b"\x00\x01"), Tlv(0x020E, b"\x02"), Tlv(0x020F, b"\x03")],  # seq > total
        [Tlv(0x020C, b"\x00\x01"), Tlv(0x020E, b"\x00"), Tlv(0x020F, b"\x00")],  # total 0
    ],
)
def test_bad_sar_tlvs(tlvs: list[Tlv]) -> None:
    with pytest.raises(UdhError):
        concat_from_sar(tlvs)


def test_sar_from_a_decoded_deliver_sm() -> None:
    # smpplib-style deliver_sm with SAR TLVs (sar_msg_ref_num=5, total=2, seq=1), built by smpplib 2.2.4
    raw = bytes.fromhex(
        "0000004100000005000000000000000000000031323300000034353600000000000000000000026869"
        "020c00020005020e000102020f000101001e000461626300"
    )
    assert concat_from_sar(decode_pdu(raw).tlvs) == ConcatInfo(5, 2, 1, 16)


def test_build_and_concat_ie() -> None:
    assert build_udh([concat_ie(ConcatInfo(0xCC, 2, 1, 8))]) == bytes.fromhex("050003CC0201")
    assert build_udh([concat_ie(ConcatInfo(0xBEEF, 3, 2, 16))]) == bytes.fromhex("060804BEEF0302")
    assert build_udh([]) == b"\x00"
    with pytest.raises(UdhError):
        concat_ie(ConcatInfo(256, 2, 1, 8))
    with pytest.raises(UdhError):
        build_udh([IE(0x70, b"x" * 256)])


def test_fill_bits() -> None:
    assert fill_bits(bytes(6)) == 1  # 8-bit-reference concatenation UDH
    assert fill_bits(bytes(7)) == 0  # 16-bit reference
    assert fill_bits(bytes(12)) == 2


_ies = st.lists(st.builds(IE, st.integers(0, 255), st.binary(max_size=30)), max_size=6)


@settings(max_examples=200, deadline=None)
@given(_ies, st.binary(max_size=100))
def test_build_parse_round_trip(ies: list[InformationElement], rest: bytes) -> None:
    assert parse_udh(build_udh(ies) + rest) == (ies, rest)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_udh_error(data: bytes) -> None:
    try:
        ies, rest = parse_udh(data)
        assert data.endswith(rest) and len(rest) == len(data) - 1 - data[0]
        concat_info(ies)
    except UdhError:
        pass
