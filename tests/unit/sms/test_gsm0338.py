"""GSM 03.38: both tables code by code, escape rules, packing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsflow.sms.gsm0338 import (
    DEFAULT_ALPHABET,
    EXTENSION_TABLE,
    GsmDecodeError,
    GsmEncodeError,
    decode_packed,
    decode_unpacked,
    encode_packed,
    encode_unpacked,
    is_gsm7,
    pack_septets,
    septet_count,
    unpack_septets,
)

# The tables written independently of the module, as Unicode scalar values (3GPP TS 23.038 6.2.1 and 6.2.1.1;
# same as unicode.org's GSM0338.TXT except 0x09, where 23.038 shows CAPITAL C WITH CEDILLA). Greek capitals
# are the Greek letters (U+0394 DELTA, U+03A9 OMEGA), not the look-alike math/unit symbols.
DEFAULT_CODEPOINTS = [
    # 0x00-0x0F
    0x0040, 0x00A3, 0x0024, 0x00A5, 0x00E8, 0x00E9, 0x00F9, 0x00EC,
    0x00F2, 0x00C7, 0x000A, 0x00D8, 0x00F8, 0x000D, 0x00C5, 0x00E5,
    # 0x10-0x1F (0x1B is the escape)
    0x0394, 0x005F, 0x03A6, 0x0393, 0x039B, 0x03A9, 0x03A0, 0x03A8,
    0x03A3, 0x0398, 0x039E, None, 0x00C6, 0x00E6, 0x00DF, 0x00C9,
    # 0x20-0x2F
    0x0020, 0x0021, 0x0022, 0x0023, 0x00A4, 0x0025, 0x0026, 0x0027,
    0x0028, 0x0029, 0x002A, 0x002B, 0x002C, 0x002D, 0x002E, 0x002F,
    # 0x30-0x3F
    *range(0x30, 0x40),
    # 0x40-0x5F
    0x00A1, *range(0x41, 0x5B), 0x00C4, 0x00D6, 0x00D1, 0x00DC, 0x00A7,
    # 0x60-0x7F
    0x00BF, *range(0x61, 0x7B), 0x00E4, 0x00F6, 0x00F1, 0x00FC, 0x00E0,
]  # fmt: skip
EXTENSION_CODEPOINTS = {
    0x0A: 0x000C,
    0x14: 0x005E,
    0x28: 0x007B,
    0x29: 0x007D,
    0x2F: 0x005C,
    0x3C: 0x005B,
    0x3D: 0x007E,
    0x3E: 0x005D,
    0x40: 0x007C,
    0x65: 0x20AC,
}


def test_independent_tables_have_the_right_shape() -> None:
    assert len(DEFAULT_CODEPOINTS) == 128
    assert len(EXTENSION_CODEPOINTS) == 10


@pytest.mark.parametrize("code", [c for c in range(128) if c != 0x1B])
def test_every_default_character(code: int) -> None:
    cp = DEFAULT_CODEPOINTS[code]
    assert cp is not None
    ch = chr(cp)
    assert DEFAULT_ALPHABET[code] == ch
    assert encode_unpacked(ch) == bytes([code])
    assert decode_unpacked(bytes([code])) == ch


@pytest.mark.parametrize("code", sorted(EXTENSION_CODEPOINTS))
def test_every_extension_character(code: int) -> None:
    ch = chr(EXTENSION_CODEPOINTS[code])
    assert EXTENSION_TABLE[code] == ch
    assert encode_unpacked(ch) == bytes([0x1B, code])
    assert decode_unpacked(bytes([0x1B, code])) == ch
    assert septet_count(ch) == 2


def test_whole_alphabet_round_trips_as_one_text() -> None:
    text = "".join(chr(cp) for cp in DEFAULT_CODEPOINTS if cp is not None)
    text += "".join(chr(cp) for cp in EXTENSION_CODEPOINTS.values())
    data = encode_unpacked(text)
    assert len(data) == 127 + 2 * 10
    assert decode_unpacked(data) == text
    assert is_gsm7(text)


def test_escape_followed_by_a_code_without_extension_shows_the_main_table() -> None:
    assert decode_unpacked(b"\x1b\x41") == "A"
    assert decode_unpacked(b"\x1b\x0d") == "\r"  # CR2 is shown as CR
    assert decode_unpacked(b"a\x1b\x00b") == "a@b"


def test_double_escape_and_trailing_escape_show_a_space() -> None:
    assert decode_unpacked(b"\x1b\x1b") == " "
    assert decode_unpacked(b"\x1b\x1b\x65") == " e"
    assert decode_unpacked(b"abc\x1b") == "abc "
    assert decode_unpacked(b"\x1b") == " "


def test_octets_above_0x7f() -> None:
    with pytest.raises(GsmDecodeError) as info:
        decode_unpacked(b"ab\x80")
    assert info.value.position == 2
    assert decode_unpacked(b"ab\x80c", errors="replace") == "ab\ufffdc"
    assert decode_unpacked(b"\x1b\xff", errors="replace") == "\ufffd"
    with pytest.raises(GsmDecodeError):
        decode_unpacked(b"\x1b\xff")


def test_unencodable_characters() -> None:
    with pytest.raises(GsmEncodeError) as info:
        encode_unpacked("ab`c")  # the backtick is not in GSM 03.38
    assert info.value.position == 2
    assert encode_unpacked("a`ç😀", errors="replace") == b"a???"
    assert not is_gsm7("ç")  # only the capital is in the table
    assert septet_count("a{€") == 5


# Packing -------------------------------------------------------------------------------------------------


def test_packing_known_vectors() -> None:
    # "hellohello", the packing example used across GSM literature (e.g. Wikipedia "GSM 03.38").
    assert encode_packed("hellohello").hex().upper() == "E8329BFD4697D9EC37"
    assert decode_packed(bytes.fromhex("E8329BFD4697D9EC37"), 10) == "hellohello"
    # "How are you?" from an SMS-DELIVER TPDU (UDL 0x0C) in the SMS PDU toolkit examples.
    assert decode_packed(bytes.fromhex("C8F71D14969741F977FD07"), 12) == "How are you?"
    assert encode_packed("How are you?").hex().upper() == "C8F71D14969741F977FD07"


def test_packing_after_a_udh_uses_fill_bits() -> None:
    # A 6-octet concatenation UDH (48 bits) is followed by 1 fill bit so that text starts on bit 49.
    packed = encode_packed("Hi", fill_bits=1)
    assert packed == bytes([0x48 << 1, 0x69])  # bit 0 is the fill bit, then H (7 bits), then i
    assert decode_packed(packed, 2, fill_bits=1) == "Hi"
    assert unpack_septets(packed, fill_bits=1)[:2] == encode_unpacked("Hi")


def test_seven_octets_hold_eight_septets() -> None:
    seven = encode_packed("1234567")
    assert len(seven) == 7
    assert decode_packed(seven) == "1234567@"  # the documented ambiguity without a count
    assert decode_packed(seven, 7) == "1234567"
    with pytest.raises(GsmDecodeError):
        unpack_septets(seven, 9)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200).map(lambda b: bytes(x & 0x7F for x in b)), st.integers(0, 6))
def test_pack_unpack_round_trip(septets: bytes, fill: int) -> None:
    packed = pack_septets(septets, fill)
    assert len(packed) == (len(septets) * 7 + fill + 7) // 8
    assert unpack_septets(packed, len(septets), fill) == septets


_gsm_chars = st.sampled_from(
    [ch for i, ch in enumerate(DEFAULT_ALPHABET) if i != 0x1B] + list(EXTENSION_TABLE.values())
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_gsm_chars, max_size=300).map("".join))
def test_text_round_trip(text: str) -> None:
    assert decode_unpacked(encode_unpacked(text)) == text
    assert decode_packed(encode_packed(text), septet_count(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_octets_decode_or_raise_gsm_decode_error(data: bytes) -> None:
    try:
        decode_unpacked(data)
    except GsmDecodeError:
        pass
    text = decode_unpacked(data, errors="replace")
    assert len(text) <= len(data)
