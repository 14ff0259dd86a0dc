"""User Data Header (3GPP TS 23.040 section 9.2.3.24) and concatenation info from UDH or SMPP SAR TLVs.

A UDH is a LIST of information elements (IEI, length, data); the concatenation element may be anywhere in
it, next to port numbers, national language shifts or anything else, so it is never read as a fixed prefix.

Invalid concatenation values raise `UdhError` so that the caller can quarantine the segment. (23.040 itself
tells a handset to ignore such an element and show the part as a message of its own; a pipeline that must
deliver each message whole prefers to hold it back.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

IEI_CONCAT_8 = 0x00
IEI_CONCAT_16 = 0x08
IEI_PORT_8 = 0x04
IEI_PORT_16 = 0x05

# SMPP 3.4 section 5.3.2.22-24 (same values as smsflow.smpp.constants.TlvTag; kept here so that domain
# code does not depend on the connector package).
TAG_SAR_MSG_REF_NUM = 0x020C
TAG_SAR_TOTAL_SEGMENTS = 0x020E
TAG_SAR_SEGMENT_SEQNUM = 0x020F


class UdhError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class InformationElement:
    iei: int
    data: bytes


@dataclass(frozen=True)
class ConcatInfo:
    ref: int
    total: int
    seq: int
    ref_bits: Literal[8, 16]


class TlvLike(Protocol):
    @property
    def tag(self) -> int: ...

    @property
    def value(self) -> bytes: ...


def parse_udh(short_message: bytes) -> tuple[list[InformationElement], bytes]:
    """Split user data that starts with a UDH into its information elements and the rest (the text).

    Raises `UdhError` when the header length or an element length runs past its bounds.
    """
    if not short_message:
        raise UdhError("UDHI is set but the user data is empty")
    udhl = short_message[0]
    end = 1 + udhl
    if end > len(short_message):
        raise UdhError(f"UDH length {udhl} exceeds the {len(short_message) - 1} octets that follow it")
    ies: list[InformationElement] = []
    pos = 1
    while pos < end:
        if end - pos < 2:
            raise UdhError(
                f"a stray octet at UDH offset {pos - 1} where an element header (2 octets) should be"
            )
        iei, length = short_message[pos], short_message[pos + 1]
        if pos + 2 + length > end:
            raise UdhError(
                f"element 0x{iei:02X} declares {length} octets but {end - pos - 2} remain in the UDH"
            )
        ies.append(InformationElement(iei, bytes(short_message[pos + 2 : pos + 2 + length])))
        pos += 2 + length
    return ies, bytes(short_message[end:])


def build_udh(ies: Iterable[InformationElement]) -> bytes:
    """The UDH (length octet included) for these information elements."""
    body = bytearray()
    for ie in ies:
        if not 0 <= ie.iei <= 0xFF or len(ie.data) > 0xFF:
            raise UdhError(f"element 0x{ie.iei:X} with {len(ie.data)} octets does not fit a UDH element")
        body += bytes([ie.iei, len(ie.data)]) + ie.data
    if len(body) > 0xFF:
        raise UdhError(f"UDH of {len(body)} octets exceeds 255")
    return bytes([len(body)]) + bytes(body)


def concat_info(ies: Iterable[InformationElement]) -> ConcatInfo | None:
    """Concatenation info from IEI 0x00 (8-bit reference) or 0x08 (16-bit reference); None if neither.

    When the element appears more than once the last one counts (23.040 9.2.3.24: a receiver uses the last
    occurrence of a non-repeatable element). Other elements are skipped.
    """
    found: ConcatInfo | None = None
    for ie in ies:
        if ie.iei == IEI_CONCAT_8:
            if len(ie.data) != 3:
                raise UdhError(f"concatenation element 0x00 must have 3 octets, got {len(ie.data)}")
            found = _checked(ie.data[0], ie.data[1], ie.data[2], 8)
        elif ie.iei == IEI_CONCAT_16:
            if len(ie.data) != 4:
                raise UdhError(f"concatenation element 0x08 must have 4 octets, got {len(ie.data)}")
            found = _checked(int.from_bytes(ie.data[:2], "big"), ie.data[2], ie.data[3], 16)
    return found


def concat_ie(info: ConcatInfo) -> InformationElement:
    """The UDH element that carries `info` (0x00 for an 8-bit reference, 0x08 for 16-bit)."""
    _checked(info.ref, info.total, info.seq, info.ref_bits)
    if info.ref_bits == 8:
        return InformationElement(IEI_CONCAT_8, bytes([info.ref, info.total, info.seq]))
    return InformationElement(IEI_CONCAT_16, info.ref.to_bytes(2, "big") + bytes([info.total, info.seq]))


def concat_from_sar(tlvs: Iterable[TlvLike | tuple[int, bytes]]) -> ConcatInfo | None:
    """Concatenation info from the SMPP SAR TLVs (sar_msg_ref_num, sar_total_segments, sar_segment_seqnum).

    None when none of the three is present; `UdhError` when only some are, or a value is malformed.
    Accepts TLV objects (anything with `.tag` and `.value`) or (tag, value) pairs.
    """
    found: dict[int, bytes] = {}
    for t in tlvs:
        tag, value = t if isinstance(t, tuple) else (t.tag, t.value)
        if tag in (TAG_SAR_MSG_REF_NUM, TAG_SAR_TOTAL_SEGMENTS, TAG_SAR_SEGMENT_SEQNUM):
            found.setdefault(tag, bytes(value))
    if not found:
        return None
    names = {
        TAG_SAR_MSG_REF_NUM: ("sar_msg_ref_num", 2),
        TAG_SAR_TOTAL_SEGMENTS: ("sar_total_segments", 1),
        TAG_SAR_SEGMENT_SEQNUM: ("sar_segment_seqnum", 1),
    }
    for tag, (name, size) in names.items():
        if tag not in found:
            raise UdhError(f"{name} is missing while other SAR parameters are present")
        if len(found[tag]) != size:
            raise UdhError(f"{name} must be {size} octet(s), got {len(found[tag])}")
    ref = int.from_bytes(found[TAG_SAR_MSG_REF_NUM], "big")
    return _checked(ref, found[TAG_SAR_TOTAL_SEGMENTS][0], found[TAG_SAR_SEGMENT_SEQNUM][0], 16)


def _checked(ref: int, total: int, seq: int, ref_bits: Literal[8, 16]) -> ConcatInfo:
    if ref_bits not in (8, 16) or not 0 <= ref < 1 << ref_bits:
        raise UdhError(f"reference {ref} does not fit in {ref_bits} bits")
    if not 1 <= total <= 255:
        raise UdhError(f"total number of segments is {total}; it must be 1-255")
    if not 1 <= seq <= total:
        raise UdhError(f"segment number {seq} is outside 1..{total}")
    return ConcatInfo(ref, total, seq, ref_bits)


def fill_bits(udh: bytes) -> int:
    """Fill bits between a UDH and packed GSM 7-bit text, to start the text on a septet boundary."""
    return (7 - (len(udh) * 8) % 7) % 7
