"""Splitting text into SMPP parts; the parts, sent as deliver_sm and reassembled, give the text back."""

from __future__ import annotations

import base64
import random
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsflow.smpp.constants import CommandId, TlvTag, has_udhi
from smsflow.smpp.pdu import Pdu, Tlv, decode_pdu, encode_pdu
from smsflow.sms.gsm0338 import DEFAULT_ALPHABET, EXTENSION_TABLE
from smsflow.sms.segmentation import Method, Segment, SegmentationError, split_for_smpp
from smsflow.sms.text import TextDecodeError, decode_text, encode_text
from smsflow.sms.udh import ConcatInfo, concat_from_sar, concat_info, parse_udh


def _user_data(seg: Segment) -> bytes:
    """What a receiver keeps of a part: short_message without its UDH, or message_payload."""
    if seg.esm_class & 0x40:
        return parse_udh(seg.short_message)[1]
    if seg.tlvs and seg.tlvs[0][0] == TlvTag.message_payload:
        return seg.tlvs[0][1]
    return seg.short_message


def _concat(seg: Segment) -> ConcatInfo | None:
    if seg.esm_class & 0x40:
        return concat_info(parse_udh(seg.short_message)[0])
    return concat_from_sar(seg.tlvs)


@pytest.mark.parametrize(
    ("text", "dc", "method", "sizes"),
    [
        ("a" * 160, 0, "udh8", [160]),
        ("a" * 161, 0, "udh8", [153, 8]),
        ("a" * 306, 0, "udh8", [153, 153]),
        ("a" * 161, 0, "udh16", [152, 9]),
        ("a" * 161, 0, "sar", [152, 9]),
        ("é" * 140, 3, "udh8", [140]),
        ("é" * 141, 3, "udh8", [134, 7]),
        ("é" * 141, 3, "udh16", [133, 8]),
        ("ж" * 70, 8, "udh8", [140]),
        ("ж" * 71, 8, "udh8", [134, 8]),
        ("ж" * 71, 8, "udh16", [132, 10]),
        ("x" * 200, 1, "udh8", [153, 47]),
    ],
)
def test_standard_part_sizes(text: str, dc: int, method: Method, sizes: list[int]) -> None:
    segments = split_for_smpp(text, dc, method, ref=7)
    assert [len(_user_data(s)) for s in segments] == sizes
    assert b"".join(_user_data(s) for s in segments) == encode_text(text, dc)
    if len(sizes) > 1:
        assert [(s.seq, s.total) for s in segments] == [(i, len(sizes)) for i in range(1, len(sizes) + 1)]
        bits: Literal[8, 16] = 8 if method == "udh8" else 16
        assert [_concat(s) for s in segments] == [
            ConcatInfo(7, len(sizes), i, bits) for i in (1, 2)[: len(sizes)]
        ]
    else:
        assert segments == [Segment(encode_text(text, dc), 0)]


def test_udh_parts_set_udhi_and_fit_140_octets() -> None:
    segments = split_for_smpp("z" * 400, 3, "udh16", ref=0xABCD)
    assert all(s.esm_class == 0x40 and has_udhi(s.esm_class) for s in segments)
    assert all(len(s.short_message) <= 140 for s in segments)
    assert segments[0].short_message[:7] == bytes.fromhex("060804ABCD0401")


def test_sar_parts_carry_the_three_tlvs() -> None:
    segments = split_for_smpp("a" * 200, 0, "sar", ref=0x0102)
    assert segments[1].tlvs == ((0x020C, b"\x01\x02"), (0x020E, b"\x02"), (0x020F, b"\x02"))
    assert segments[1].esm_class == 0


def test_payload_and_single() -> None:
    text = "Long text " * 100
    [seg] = split_for_smpp(text, 0, "payload")
    assert (seg.short_message, seg.tlvs) == (b"", ((0x0424, encode_text(text, 0)),))
    [single] = split_for_smpp("a" * 254, 0, "single")
    assert len(single.short_message) == 254
    with pytest.raises(SegmentationError):
        split_for_smpp("a" * 255, 0, "single")


def test_gsm_escape_is_kept_whole_unless_split_anywhere() -> None:
    text = "a" * 152 + "€" + "b" * 10  # the escape pair would straddle octet 153
    whole = split_for_smpp(text, 0, "udh8", ref=1)
    assert [len(_user_data(s)) for s in whole] == [152, 12]
    assert not _user_data(whole[0]).endswith(b"\x1b")
    cut = split_for_smpp(text, 0, "udh8", ref=1, split_anywhere=True)
    assert [len(_user_data(s)) for s in cut] == [153, 11]
    assert _user_data(cut[0]).endswith(b"\x1b")
    assert decode_text(_user_data(cut[0]), 0).text.endswith(" ")  # alone, the part shows a space...
    joined = b"".join(_user_data(s) for s in cut)
    assert decode_text(joined, 0).text == text  # ...joined first, it is the euro sign


def test_surrogate_pair_is_kept_whole_unless_split_anywhere() -> None:
    text = "a" * 66 + "😀" + "b" * 10  # 132 + 4 + 20 octets: the pair would straddle octet 134
    whole = split_for_smpp(text, 8, "udh8")
    assert [len(_user_data(s)) for s in whole] == [132, 24]
    cut = split_for_smpp(text, 8, "udh8", split_anywhere=True)
    assert [len(_user_data(s)) for s in cut] == [134, 22]
    with pytest.raises(TextDecodeError):
        decode_text(_user_data(cut[0]), 8)  # a lone high surrogate
    assert decode_text(b"".join(_user_data(s) for s in cut), 8).text == text


@pytest.mark.parametrize(
    ("text", "dc", "method", "ref"),
    [
        ("a" * 300, 0, "udh8", 256),
        ("a" * 300, 0, "sar", 65536),
        ("a" * 153 * 256, 0, "udh8", 1),  # more than 255 parts
        ("a" * 70_000, 3, "payload", 0),
        ("`", 0, "udh8", 0),  # not in the GSM alphabet
        ("a", 0x0B, "udh8", 0),
        ("a", 0, "carrier-pigeon", 0),
    ],
)
def test_refusals(text: str, dc: int, method: str, ref: int) -> None:
    with pytest.raises(SegmentationError):
        split_for_smpp(text, dc, method, ref)  # type: ignore[arg-type]


def test_binary_and_stateful_codings() -> None:
    blob = bytes(range(256)) * 2
    parts = split_for_smpp(base64.b64encode(blob).decode(), 4, "udh8", ref=3)
    assert [len(_user_data(p)) for p in parts] == [134, 134, 134, 110]
    assert b"".join(_user_data(p) for p in parts) == blob
    jp = "こんにちは世界" * 20
    parts = split_for_smpp(jp, 0x0A, "udh8", ref=3)
    assert all(len(_user_data(p)) <= 134 for p in parts)
    assert "".join(decode_text(_user_data(p), 0x0A).text for p in parts) == jp  # each part stands alone


# Properties: parts -> deliver_sm PDUs on the wire -> decoded -> joined -> the same text ---------------------

_gsm = st.sampled_from(
    [c for i, c in enumerate(DEFAULT_ALPHABET) if i != 0x1B] + list(EXTENSION_TABLE.values())
)
_texts = {
    0x00: st.lists(_gsm, max_size=700).map("".join),
    0x03: st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=500),
    0x08: st.text(st.characters(exclude_categories=["Cs"]), max_size=400),
}


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(_texts)).flatmap(lambda dc: st.tuples(st.just(dc), _texts[dc])),
    st.sampled_from(["udh8", "udh16", "sar", "payload"]),
    st.integers(0, 255),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_parts_over_the_wire_reassemble_to_the_text(
    case: tuple[int, str], method: Method, ref: int, anywhere: bool, rnd: random.Random
) -> None:
    dc, text = case
    segments = split_for_smpp(text, dc, method, ref, split_anywhere=anywhere)
    received: dict[int, bytes] = {}
    order = list(segments)
    rnd.shuffle(order)
    for seg in order:
        pdu = Pdu(
            CommandId.deliver_sm,
            sequence_number=seg.seq,
            params={"esm_class": seg.esm_class, "data_coding": dc, "short_message": seg.short_message},
            tlvs=[Tlv(tag, value) for tag, value in seg.tlvs],
        )
        back = decode_pdu(encode_pdu(pdu))
        assert len(back.bytes_param("short_message")) <= (160 if dc == 0 else 140) or method == "payload"
        payload = back.tlv(TlvTag.message_payload)
        if has_udhi(back.int_param("esm_class")):
            ies, data = parse_udh(back.bytes_param("short_message"))
            info = concat_info(ies)
        else:
            data = payload if payload is not None else back.bytes_param("short_message")
            info = concat_from_sar(back.tlvs)
        if info is None:
            assert len(segments) == 1
            received[1] = data
        else:
            assert (info.ref, info.total) == (ref, len(segments))
            received[info.seq] = data
    joined = b"".join(received[i] for i in sorted(received))
    assert decode_text(joined, dc).text == text
