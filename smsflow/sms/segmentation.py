"""Split a text into the deliver_sm/submit_sm parts a carrier would send (for the simulator and tests).

Limits per part, in octets of SMPP user data (GSM 7-bit travels unpacked, one septet per octet, so for it
octets are septets):

    alphabet            single   UDH 8-bit ref   UDH 16-bit ref / SAR
    GSM 7-bit, IA5        160        153              152
    8-bit (Latin-1 ...)   140        134              133
    UCS-2                 140        134              132

SAR parts use the 16-bit-reference sizes: the SMSC turns them into a UDH with IEI 0x08 on the air.
"single" sends one part of up to 254 octets (SMPP's short_message limit; some SMSCs do exactly that), and
"payload" puts the whole text in one message_payload TLV. A text that fits the single-part limit is sent as
one plain part whatever the method.

Parts end on character boundaries (a GSM escape or a UTF-16 surrogate pair stays whole) unless
`split_anywhere=True`, which cuts at the octet limit as some carriers do, splitting an escape or a pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from smsflow.sms.text import DefaultAlphabet, TextEncodeError, encode_text, interpret_data_coding
from smsflow.sms.udh import (
    TAG_SAR_MSG_REF_NUM,
    TAG_SAR_SEGMENT_SEQNUM,
    TAG_SAR_TOTAL_SEGMENTS,
    ConcatInfo,
    build_udh,
    concat_ie,
)

Method = Literal["udh8", "udh16", "sar", "payload", "single"]

TAG_MESSAGE_PAYLOAD = 0x0424
ESM_UDHI = 0x40
SHORT_MESSAGE_MAX = 254

# (single, udh8, udh16/sar) per alphabet class
_LIMITS = {
    "7bit": (160, 153, 152),
    "8bit": (140, 134, 133),
    "ucs2": (140, 134, 132),
}


class SegmentationError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Segment:
    short_message: bytes
    esm_class: int
    tlvs: tuple[tuple[int, bytes], ...] = field(default=())
    """(tag, value) pairs to send as TLVs: SAR parameters or message_payload."""
    seq: int = 1
    total: int = 1


def split_for_smpp(
    text: str,
    data_coding: int,
    method: Method,
    ref: int = 0,
    *,
    split_anywhere: bool = False,
    default_alphabet: DefaultAlphabet = "gsm7",
) -> list[Segment]:
    """The parts to send `text` with, in order. Raises `SegmentationError` if it cannot be sent so."""
    try:
        encoding = interpret_data_coding(data_coding, default_alphabet).encoding
        data = encode_text(text, data_coding, default_alphabet=default_alphabet)
    except (TextEncodeError, ValueError) as exc:
        raise SegmentationError(
            f"cannot encode the text for data_coding 0x{data_coding:02X}: {exc}"
        ) from None
    single, udh8, udh16 = _LIMITS[_alphabet_class(encoding)]

    if method == "payload":
        if len(data) > 0xFFFF:
            raise SegmentationError(f"{len(data)} octets exceed message_payload's 65535")
        return [Segment(b"", 0, ((TAG_MESSAGE_PAYLOAD, data),))]
    if method == "single":
        if len(data) > SHORT_MESSAGE_MAX:
            raise SegmentationError(f"{len(data)} octets exceed short_message's {SHORT_MESSAGE_MAX}")
        return [Segment(data, 0)]
    if method not in ("udh8", "udh16", "sar"):
        raise SegmentationError(f"unknown method {method!r}")
    ref_bits: Literal[8, 16] = 8 if method == "udh8" else 16
    if not 0 <= ref < 1 << ref_bits:
        raise SegmentationError(f"reference {ref} does not fit in {ref_bits} bits")
    if len(data) <= single:
        return [Segment(data, 0)]

    limit = udh8 if method == "udh8" else udh16
    if split_anywhere or encoding == "binary":
        chunks = [data[i : i + limit] for i in range(0, len(data), limit)]
    else:
        chunks = _chunks_on_characters(text, data_coding, default_alphabet, limit)
    total = len(chunks)
    if total > 255:
        raise SegmentationError(f"{total} parts needed; at most 255 can be concatenated")

    segments = []
    for seq, chunk in enumerate(chunks, start=1):
        if method == "sar":
            tlvs = (
                (TAG_SAR_MSG_REF_NUM, ref.to_bytes(2, "big")),
                (TAG_SAR_TOTAL_SEGMENTS, bytes([total])),
                (TAG_SAR_SEGMENT_SEQNUM, bytes([seq])),
            )
            segments.append(Segment(chunk, 0, tlvs, seq, total))
        else:
            udh = build_udh([concat_ie(ConcatInfo(ref, total, seq, ref_bits))])
            segments.append(Segment(udh + chunk, ESM_UDHI, (), seq, total))
    return segments


def _alphabet_class(encoding: str) -> str:
    if encoding in ("gsm7", "ascii"):
        return "7bit"
    return "ucs2" if encoding == "ucs2" else "8bit"


def _chunks_on_characters(text: str, data_coding: int, alphabet: DefaultAlphabet, limit: int) -> list[bytes]:
    """Greedy split on character boundaries (a str character is a whole code point: a GSM escape pair or a
    UTF-16 surrogate pair is never cut)."""
    if interpret_data_coding(data_coding, alphabet).encoding in _STATEFUL:
        return _chunks_stateful(text, data_coding, alphabet, limit)
    chunks: list[bytes] = []
    current = bytearray()
    for ch in text:
        unit = encode_text(ch, data_coding, default_alphabet=alphabet)
        if len(current) + len(unit) > limit:
            chunks.append(bytes(current))
            current = bytearray()
        current += unit
    if current:
        chunks.append(bytes(current))
    return chunks


_STATEFUL = {"iso2022_jp"}


def _chunks_stateful(text: str, data_coding: int, alphabet: DefaultAlphabet, limit: int) -> list[bytes]:
    """Each chunk is encoded on its own, so every part of a shift-state encoding stands alone."""
    chunks: list[bytes] = []
    start = 0
    while start < len(text):
        end, encoded = start, b""
        while end < len(text):
            candidate = encode_text(text[start : end + 1], data_coding, default_alphabet=alphabet)
            if len(candidate) > limit:
                break
            encoded, end = candidate, end + 1
        if end == start:
            raise SegmentationError(f"character {text[start]!r} alone exceeds {limit} octets")
        chunks.append(encoded)
        start = end
    return chunks
