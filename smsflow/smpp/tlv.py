"""Optional parameters (TLVs): the value type, and the registry of tags this codec knows.

A PDU keeps its TLVs as an ordered list of raw (tag, value) pairs, exactly as received, so that unknown and
vendor-specific tags (0x1400-0x3FFF) survive a decode/encode round trip. The registry below adds what the
spec says about known tags: a name, how to read the value, and which lengths are legal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .constants import TlvTag

TlvKind = Literal["int", "cstring", "octets"]


@dataclass(frozen=True)
class Tlv:
    tag: int
    value: bytes


@dataclass(frozen=True)
class TlvSpec:
    tag: int
    name: str
    kind: TlvKind
    sizes: tuple[int, ...] | None = None
    """Legal value lengths in octets; None means any length. Integer TLVs are checked on decode."""

    @property
    def default_size(self) -> int:
        return self.sizes[0] if self.sizes else 1


def _spec(tag: TlvTag, kind: TlvKind, *sizes: int) -> TlvSpec:
    return TlvSpec(int(tag), tag.name, kind, tuple(sizes) or None)


# Sizes are from SMPP 3.4 section 5.3.2 and SMPP 5.0 section 4.8.4. Where the two versions (or the 3.4 text
# and its own tables) disagree, every documented size is accepted.
TLV_SPECS: dict[int, TlvSpec] = {
    s.tag: s
    for s in (
        _spec(TlvTag.dest_addr_subunit, "int", 1),
        _spec(TlvTag.dest_network_type, "int", 1),
        _spec(TlvTag.dest_bearer_type, "int", 1),
        _spec(TlvTag.dest_telematics_id, "int", 2),
        _spec(TlvTag.source_addr_subunit, "int", 1),
        _spec(TlvTag.source_network_type, "int", 1),
        _spec(TlvTag.source_bearer_type, "int", 1),
        _spec(TlvTag.source_telematics_id, "int", 1, 2),
        _spec(TlvTag.qos_time_to_live, "int", 4),
        _spec(TlvTag.payload_type, "int", 1),
        _spec(TlvTag.additional_status_info_text, "cstring"),
        _spec(TlvTag.receipted_message_id, "cstring"),
        _spec(TlvTag.ms_msg_wait_facilities, "int", 1),
        _spec(TlvTag.privacy_indicator, "int", 1),
        _spec(TlvTag.source_subaddress, "octets"),
        _spec(TlvTag.dest_subaddress, "octets"),
        _spec(TlvTag.user_message_reference, "int", 2),
        _spec(TlvTag.user_response_code, "int", 1),
        _spec(TlvTag.source_port, "int", 2),
        _spec(TlvTag.destination_port, "int", 2),
        _spec(TlvTag.sar_msg_ref_num, "int", 2),
        _spec(TlvTag.language_indicator, "int", 1),
        _spec(TlvTag.sar_total_segments, "int", 1),
        _spec(TlvTag.sar_segment_seqnum, "int", 1),
        _spec(TlvTag.sc_interface_version, "int", 1),
        _spec(TlvTag.callback_num_pres_ind, "int", 1),
        _spec(TlvTag.callback_num_atag, "octets"),
        _spec(TlvTag.number_of_messages, "int", 1),
        _spec(TlvTag.callback_num, "octets"),
        _spec(TlvTag.dpf_result, "int", 1),
        _spec(TlvTag.set_dpf, "int", 1),
        _spec(TlvTag.ms_availability_status, "int", 1),
        _spec(TlvTag.network_error_code, "octets"),  # 3 octets: network type, then a 2-octet error code
        _spec(TlvTag.message_payload, "octets"),  # up to 64K octets: longer than short_message's 254
        _spec(TlvTag.delivery_failure_reason, "int", 1),
        _spec(TlvTag.more_messages_to_send, "int", 1),
        _spec(TlvTag.message_state, "int", 1),
        _spec(TlvTag.congestion_state, "int", 1),
        _spec(TlvTag.ussd_service_op, "int", 1),
        _spec(TlvTag.broadcast_channel_indicator, "int", 1),
        _spec(TlvTag.broadcast_content_type, "octets"),
        _spec(TlvTag.broadcast_content_type_info, "octets"),
        _spec(TlvTag.broadcast_message_class, "int", 1),
        _spec(TlvTag.broadcast_rep_num, "int", 2),
        _spec(TlvTag.broadcast_frequency_interval, "octets"),
        _spec(TlvTag.broadcast_area_identifier, "octets"),
        _spec(TlvTag.broadcast_error_status, "int", 4),
        _spec(TlvTag.broadcast_area_success, "int", 1),
        _spec(TlvTag.broadcast_end_time, "cstring"),
        _spec(TlvTag.broadcast_service_group, "octets"),
        _spec(TlvTag.billing_identification, "octets"),
        _spec(TlvTag.source_network_id, "cstring"),
        _spec(TlvTag.dest_network_id, "cstring"),
        _spec(TlvTag.source_node_id, "octets"),
        _spec(TlvTag.dest_node_id, "octets"),
        _spec(TlvTag.dest_addr_np_resolution, "int", 1),
        _spec(TlvTag.dest_addr_np_information, "octets"),
        _spec(TlvTag.dest_addr_np_country, "octets"),
        _spec(TlvTag.display_time, "int", 1),
        _spec(TlvTag.sms_signal, "int", 2),
        _spec(TlvTag.ms_validity, "int", 1, 2, 3, 4),  # 3.4: 1 octet; 5.0 appends an optional time period
        _spec(TlvTag.alert_on_message_delivery, "int", 0, 1),  # 3.4: no value; 5.0: optional 1 octet
        _spec(TlvTag.its_reply_type, "int", 1),
        _spec(TlvTag.its_session_info, "int", 2),
    )
}

TLV_TAGS_BY_NAME: dict[str, int] = {s.name: s.tag for s in TLV_SPECS.values()}


def tlv_name(tag: int) -> str:
    spec = TLV_SPECS.get(tag)
    return spec.name if spec else f"tlv_0x{tag:04x}"


def tlv_value(tlv: Tlv) -> int | str | bytes:
    """The value of a TLV read the way its tag is declared; unknown tags give the raw bytes.

    C-octet strings are read up to the first NUL (a missing terminator is tolerated: some SMSCs omit it in
    receipted_message_id) and decoded as Latin-1, so every octet maps to one code point.
    """
    spec = TLV_SPECS.get(tlv.tag)
    if spec is None or spec.kind == "octets":
        return tlv.value
    if spec.kind == "int":
        if spec.sizes and len(tlv.value) not in spec.sizes:
            raise ValueError(f"{spec.name} must be {_sizes_text(spec.sizes)} octets, got {len(tlv.value)}")
        return int.from_bytes(tlv.value, "big")
    return tlv.value.split(b"\x00", 1)[0].decode("latin-1")


def make_tlv(tag: int | str, value: int | str | bytes) -> Tlv:
    """Build a TLV from a typed value: an int is sized by the registry, a str becomes a c-octet string."""
    if isinstance(tag, str):
        if tag not in TLV_TAGS_BY_NAME:
            raise ValueError(f"unknown TLV name {tag!r}")
        tag = TLV_TAGS_BY_NAME[tag]
    if not 0 <= tag <= 0xFFFF:
        raise ValueError(f"TLV tag {tag:#x} does not fit in 2 octets")
    spec = TLV_SPECS.get(tag)
    if isinstance(value, bytes | bytearray | memoryview):
        return Tlv(tag, bytes(value))
    if isinstance(value, str):
        return Tlv(tag, value.encode("latin-1") + b"\x00")
    size = spec.default_size if spec and spec.kind == "int" else max(1, (value.bit_length() + 7) // 8)
    if value < 0 or value >= 1 << (8 * size):
        raise ValueError(f"{tlv_name(tag)} value {value} does not fit in {size} octet(s)")
    return Tlv(tag, value.to_bytes(size, "big"))


def _sizes_text(sizes: tuple[int, ...]) -> str:
    return " or ".join(str(s) for s in sizes)
