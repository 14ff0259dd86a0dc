"""Text by data_coding: the coding table, each alphabet, non-BMP UCS-2, properties."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsflow.sms.gsm0338 import DEFAULT_ALPHABET, EXTENSION_TABLE
from smsflow.sms.text import (
    Coding,
    DecodedText,
    TextDecodeError,
    TextEncodeError,
    decode_text,
    encode_text,
    interpret_data_coding,
)


@pytest.mark.parametrize(
    ("dc", "encoding", "message_class"),
    [
        (0x00, "gsm7", None),
        (0x01, "ascii", None),
        (0x02, "binary", None),
        (0x03, "latin1", None),
        (0x04, "binary", None),
        (0x05, "shift_jis", None),
        (0x06, "iso8859_5", None),
        (0x07, "iso8859_8", None),
        (0x08, "ucs2", None),
        (0x0A, "iso2022_jp", None),
        (0x0E, "euc_kr", None),
        # GSM 03.38 general data coding: bit 4 = class present, bits 3-2 = alphabet
        (0x10, "gsm7", 0),
        (0x11, "gsm7", 1),
        (0x12, "gsm7", 2),
        (0x13, "gsm7", 3),
        (0x14, "binary", 0),
        (0x16, "binary", 2),
        (0x18, "ucs2", 0),
        (0x19, "ucs2", 1),
        (0x43, "gsm7", None),  # automatic-deletion group, coded like 00xx
        (0x58, "ucs2", 0),
        (0xC0, "gsm7", None),  # message waiting, discard
        (0xD8, "gsm7", None),  # message waiting, store
        (0xE8, "ucs2", None),  # message waiting, store, UCS-2
        (0xF0, "gsm7", 0),
        (0xF1, "gsm7", 1),
        (0xF2, "gsm7", 2),
        (0xF3, "gsm7", 3),
        (0xF4, "binary", 0),
        (0xF5, "binary", 1),
        (0xF6, "binary", 2),
        (0xF7, "binary", 3),
    ],
)
def test_data_coding_table(dc: int, encoding: str, message_class: int | None) -> None:
    assert interpret_data_coding(dc) == Coding(encoding, message_class)


@pytest.mark.parametrize("dc", [0x09, 0x0B, 0x0C, 0x0D, 0x0F, 0x1C, 0x20, 0x3F, 0x80, 0xBF, 0x100])
def test_reserved_or_unsupported_codings(dc: int) -> None:
    with pytest.raises(TextDecodeError) as info:
        decode_text(b"x", dc)
    assert f"{dc:02X}" in info.value.reason or "octet" in info.value.reason
    with pytest.raises(TextEncodeError):
        encode_text("x", dc)


def test_default_alphabet_for_data_coding_zero() -> None:
    # cloudhopper-smpp PduDecoderTest's deliver_sm carries 40 24 23 21 25 26 2F 3A with data_coding 0: the
    # carrier meant ASCII "@$#!%&/:", which GSM 03.38 reads as "¡¤#!%&/:".
    data = bytes.fromhex("4024232125262f3a")
    assert decode_text(data, 0) == DecodedText("¡¤#!%&/:", "gsm7")
    assert decode_text(data, 0, default_alphabet="ascii") == DecodedText("@$#!%&/:", "ascii")
    assert decode_text(b"caf\xe9", 0, default_alphabet="latin1").text == "café"
    assert decode_text(data, 0xF0, default_alphabet="ascii").encoding == "gsm7"  # explicit GSM stays GSM
    with pytest.raises(ValueError):
        interpret_data_coding(0, "utf8")  # type: ignore[arg-type]


def test_gsm7_with_escapes() -> None:
    data = b"\x1b\x65 10 \x1b\x28ok\x1b\x29"
    assert decode_text(data, 0).text == "€ 10 {ok}"
    assert encode_text("€ 10 {ok}", 0) == data
    assert decode_text(data, 0xF1) == DecodedText("€ 10 {ok}", "gsm7", 1)


def test_latin1_and_ascii() -> None:
    assert decode_text("Ça coûte 5 €?".encode("cp1252")[:-2], 3).text == "Ça coûte 5 "
    assert encode_text("Grüße", 3) == b"Gr\xfc\xdfe"
    assert decode_text(bytes(range(256)), 3).text == "".join(map(chr, range(256)))
    with pytest.raises(TextDecodeError):
        decode_text(b"ok\xe9", 1)
    assert decode_text(b"ok\xe9", 1, errors="replace").text == "ok\ufffd"
    with pytest.raises(TextEncodeError):
        encode_text("€", 3)
    assert encode_text("a€", 3, errors="replace") == b"a?"


def test_ucs2_bmp_and_beyond() -> None:
    text = "Привет 你好 😀 𠀀 👍🏽"  # Cyrillic, CJK, emoji, CJK Ext-B (U+20000), emoji + skin tone
    data = encode_text(text, 8)
    assert data == text.encode("utf-16-be")
    assert bytes.fromhex("d83dde00") in data  # 😀 as a surrogate pair
    assert bytes.fromhex("d840dc00") in data  # U+20000 as a surrogate pair
    assert decode_text(data, 8) == DecodedText(text, "ucs2")
    assert decode_text(bytes.fromhex("D83DDE00"), 0x18).text == "😀"


def test_ucs2_broken_input() -> None:
    with pytest.raises(TextDecodeError) as info:
        decode_text(b"\x00a\x00", 8)
    assert "odd" in info.value.reason
    assert decode_text(b"\x00a\x00", 8, errors="replace").text == "a\ufffd"
    lone_high = bytes.fromhex("0041D83D")  # a segment cut inside a surrogate pair, decoded alone
    with pytest.raises(TextDecodeError):
        decode_text(lone_high, 8)
    assert decode_text(lone_high, 8, errors="replace").text == "A\ufffd"
    with pytest.raises(TextEncodeError):
        encode_text("\ud83d", 8)  # a lone surrogate is not text


def test_binary_is_base64() -> None:
    blob = bytes(range(256))
    for dc in (0x02, 0x04, 0xF5, 0x15):
        decoded = decode_text(blob, dc)
        assert decoded.encoding == "binary"
        assert base64.b64decode(decoded.text) == blob
        assert encode_text(decoded.text, dc) == blob
    assert decode_text(b"\x01", 0xF6).message_class == 2
    with pytest.raises(TextEncodeError):
        encode_text("not base64!", 4)


def test_regional_codings() -> None:
    cases = [
        (0x06, "Привет"),
        (0x07, "שלום"),
        (0x0E, "안녕하세요"),
        (0x05, "こんにちは"),
        (0x0A, "こんにちは"),
    ]
    for dc, text in cases:
        data = encode_text(text, dc)
        assert decode_text(data, dc).text == text
    assert encode_text("Привет", 6) == "Привет".encode("iso8859-5")
    assert encode_text("안녕", 0x0E) == "안녕".encode("euc_kr")


# Properties ----------------------------------------------------------------------------------------------

_gsm_text = st.lists(
    st.sampled_from(
        [c for i, c in enumerate(DEFAULT_ALPHABET) if i != 0x1B] + list(EXTENSION_TABLE.values())
    ),
    max_size=200,
).map("".join)

_REPERTOIRES: list[tuple[int, st.SearchStrategy[str]]] = [
    (0x00, _gsm_text),
    (0xF2, _gsm_text),
    (0x01, st.text(st.characters(max_codepoint=0x7F), max_size=200)),
    (0x03, st.text(st.characters(max_codepoint=0xFF), max_size=200)),
    (0x08, st.text(st.characters(exclude_categories=["Cs"]), max_size=200)),
    (0x06, st.text(st.sampled_from("АБВГДЕЖЗабвгдежзЁё №"), max_size=100)),
    (0x07, st.text(st.sampled_from("אבגדהוזחטיכלמנסעפצקרשת "), max_size=100)),
]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_REPERTOIRES).flatmap(lambda r: st.tuples(st.just(r[0]), r[1])))
def test_text_round_trips_per_coding(case: tuple[int, str]) -> None:
    dc, text = case
    assert decode_text(encode_text(text, dc), dc).text == text


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 255))
def test_arbitrary_bytes_decode_or_raise_text_decode_error(data: bytes, dc: int) -> None:
    try:
        decode_text(data, dc)
    except TextDecodeError:
        pass
    try:
        replaced = decode_text(data, dc, errors="replace")
    except TextDecodeError as e:
        assert "not supported" in e.reason or "reserved" in e.reason  # only the coding itself can fail
    else:
        replaced.text.encode("utf-8")  # no lone surrogates: the text can always be serialised
