"""What a hostile or broken carrier can send, as hypothesis strategies.

PDUs come three ways: well-formed deliver_sm/data_sm built by our encoder (so the decoder's happy path
and the ingest rules behind it are reached: UDH and SAR multipart, message_payload, receipts by
esm_class or by TLV), the same PDUs mutated (bytes flipped, cut, lengths lied about), and raw bytes.
Records for the ingest processor are filled the way the connector fills them, from the decoded PDU.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import strategies as st

from smsflow.smpp.constants import CommandId, TlvTag
from smsflow.smpp.pdu import Pdu, PduError, Tlv, decode_pdu, encode_pdu

CARRIERS = {"c1": "CN", "c2": "HK", "c3": None}
ADDRESSES = [
    "85261234567",
    "8613812345678",
    "13812345678",
    "1069012345",
    "95588",
    "JD",
    "#HSBC",
    "+852 6123 4567",
]
DATA_CODINGS = [0, 1, 2, 3, 4, 8, 0x10, 0x11, 0x18, 0xF0, 0xF4, 0xF8]
TAGS = [
    TlvTag.message_payload,
    TlvTag.sar_msg_ref_num,
    TlvTag.sar_total_segments,
    TlvTag.sar_segment_seqnum,
    TlvTag.receipted_message_id,
    TlvTag.message_state,
    TlvTag.network_error_code,
    TlvTag.source_port,
    TlvTag.user_message_reference,
]
RECEIPT_STATES = ["DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", "ACCEPTD", "UNKNOWN", "ENROUTE", "x" * 40, ""]

latin1 = st.text(st.characters(max_codepoint=0xFF), max_size=24)
# Texts that reach every enrichment rule: keywords, digits, spaces, brackets, URLs, other scripts.
sms_text = st.text(
    st.sampled_from(list("验证码是为：:【】[] 0123456789 abcXYZ@./-+，。有效期分钟 code is OTP ÄéЁ😀\n\x1b")),
    max_size=200,
) | st.text(max_size=120)


# Long texts made of the words and shapes the enrichment rules look at, past the 1,024-character
# scan window: keywords, digits in every grouping, traps, validities, signatures, URLs, addresses.
TOKENS = [
    "验证码",
    "驗證碼",
    "校验码",
    "动态码",
    "verification code",
    "Your code is",
    "OTP",
    "code",
    "PIN",
    "是",
    "为",
    "：",
    ": ",
    " ",
    "  ",
    "，",
    "。",
    ". ",
    "\n",
    "-",
    "/",
    "+",
    "8102",
    "4719",
    "8 1 0 2",
    "93 27 41",
    "123-456",
    "123 456",
    "G-482019",
    "A7X2K9",
    "482019",
    "2026 11 30",
    "138 1234 5678",
    "2233 3000",
    "1,280.00",
    "¥",
    "HK$",
    "尾号",
    "订单号",
    "call",
    "on",
    "元",
    "分钟",
    "有效期为",
    "5分钟",
    "valid for",
    "10 minutes",
    "半小时",
    "十五分钟",
    "内有效",
    "【京东】",
    "[TikTok]",
    "【",
    "】",
    "<#>",
    "http://x.cn/",
    "www.",
    "a@b.com",
    "@",
    "promo code",
    "退订",
    "Ё",
    "😀",
    "İ",
    "ﷺ",
    "１２３４５６",
]
_token = st.sampled_from(TOKENS) | st.text(max_size=3)
# The length is drawn first: random buffers would otherwise end most lists after a few elements.
long_sms_text = st.integers(0, 600).flatmap(lambda n: st.lists(_token, min_size=n, max_size=n)).map("".join)

number_text = (
    st.integers(0, 10**30).map(str)
    | st.integers(-(2**40), 2**40).map(str)
    | st.sampled_from(["", "001", "abc", "1_000", "١٢٣", "9" * 5000, " 7 "])
)
digits = st.text("0123456789", max_size=12)
# Strategies are built once here, not inside the composites: building one costs more than drawing.
data_coding = st.sampled_from(DATA_CODINGS) | st.integers(0, 255)
octet = st.integers(0, 255)
small = st.integers(0, 5)
extra_tlvs = st.lists(
    st.tuples(st.sampled_from(TAGS) | st.integers(0, 0xFFFF), st.binary(max_size=8)), max_size=2
)
address = st.sampled_from(ADDRESSES) | latin1.filter(lambda a: "\x00" not in a and len(a) <= 20)
source_ton = st.sampled_from([0, 1, 2, 5, 6]) | octet
dest_ton = st.sampled_from([0, 1, 2]) | octet


receipt_id = (
    st.text("0123456789ABCDEFabcdef", min_size=1, max_size=80)
    | st.integers(1, 4000).map(lambda n: "F" * n)
    | st.text(max_size=40)
)


@st.composite
def receipt_text(draw: st.DrawFn) -> str:
    fields = {
        "id": draw(receipt_id),
        "sub": draw(number_text),
        "dlvrd": draw(number_text),
        "submit date": draw(digits),
        "done date": draw(digits),
        "stat": draw(st.sampled_from(RECEIPT_STATES)),
        "err": draw(digits),
        "text": draw(st.text(max_size=30)),
    }
    keys = draw(st.lists(st.sampled_from(list(fields)), unique=True, max_size=len(fields)))
    return " ".join(f"{k}:{fields[k]}" for k in keys)


def _encode_text(text: str, data_coding: int) -> bytes:
    if data_coding == 8:
        return text.encode("utf-16-be", "surrogatepass")
    return text.encode("latin-1", "replace")


@st.composite
def user_data(draw: st.DrawFn) -> tuple[int, int, bytes, list[tuple[int, bytes]]]:
    """(esm_class, data_coding, short message or payload bytes, TLVs) of one message or segment."""
    dc = draw(data_coding)
    kind = draw(st.sampled_from(["text", "udh", "sar", "receipt", "receipt_tlv", "binary"]))
    body = _encode_text(draw(sms_text), dc) if kind != "binary" else draw(st.binary(max_size=300))
    tlvs: list[tuple[int, bytes]] = []
    esm = 0
    if kind == "udh":
        esm = 0x40
        ref_bits = draw(st.sampled_from([8, 16]))
        ref = draw(st.integers(0, 3))
        total, seq = draw(st.integers(0, 4)), draw(st.integers(0, 5))
        ie = bytes([0, 3, ref, total, seq]) if ref_bits == 8 else bytes([8, 4, 0, ref, total, seq])
        extra = draw(st.binary(max_size=6))  # other IEs, or garbage inside the header
        header = ie + extra
        udhl = draw(st.sampled_from([len(header), len(header) + 1, max(0, len(header) - 1), 255]))
        body = bytes([udhl]) + header + body
    elif kind == "sar":
        tlvs += [
            (TlvTag.sar_msg_ref_num, struct.pack(">H", draw(st.integers(0, 3)))),
            (TlvTag.sar_total_segments, bytes([draw(st.integers(0, 4))])),
            (TlvTag.sar_segment_seqnum, bytes([draw(st.integers(0, 5))])),
        ]
    elif kind == "receipt":
        esm = draw(st.sampled_from([0x04, 0x08, 0x20, 0x3C]))
        body = draw(receipt_text()).encode("latin-1", "replace")
        dc = draw(st.sampled_from([0, 1, 3]))
    elif kind == "receipt_tlv":
        esm = draw(st.sampled_from([0, 0x04, 0x20]))
        tlvs += [(TlvTag.receipted_message_id, draw(receipt_id).encode("latin-1", "replace") + b"\x00")]
        tlvs += [(TlvTag.message_state, bytes([draw(octet)]))]
        if draw(st.booleans()):
            tlvs += [(TlvTag.network_error_code, draw(st.binary(min_size=3, max_size=3)))]
    if draw(small) == 0:
        esm = draw(octet)
    tlvs += draw(extra_tlvs)
    if len(body) > 254 or draw(small) == 0:  # SMPP: the long form travels in message_payload
        tlvs.append((TlvTag.message_payload, body))
        body = b""
    return esm, dc, body, tlvs


@st.composite
def well_formed_pdu(draw: st.DrawFn) -> bytes:
    esm, dc, body, tlvs = draw(user_data())
    command = draw(st.sampled_from([CommandId.deliver_sm, CommandId.deliver_sm, CommandId.data_sm]))
    params: dict[str, int | str | bytes] = {
        "source_addr_ton": draw(source_ton),
        "source_addr_npi": draw(octet),
        "source_addr": draw(address),
        "dest_addr_ton": draw(dest_ton),
        "dest_addr_npi": draw(octet),
        "destination_addr": draw(address),
        "esm_class": esm,
        "data_coding": dc,
    }
    if command == CommandId.deliver_sm:
        params["short_message"] = body
    elif body:
        tlvs.append((TlvTag.message_payload, body))
    pdu = Pdu(command, 0, draw(st.integers(1, 2**31 - 1)), params=params, tlvs=[Tlv(t, v) for t, v in tlvs])
    try:
        return encode_pdu(pdu)
    except PduError:
        # The encoder refuses what the wire cannot carry (a TLV of the wrong size): send it anyway.
        return draw(st.binary(min_size=16, max_size=64))


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "cut", "grow", "length"]))
        if how == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif how == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif how == "grow":
            data += draw(st.binary(max_size=16))
        elif how == "length" and len(data) >= 4:
            data[0:4] = struct.pack(">I", len(data))  # keep the frame consistent after a change
    return bytes(data)


pdu_bytes = st.one_of(
    well_formed_pdu(), well_formed_pdu(), mutated(well_formed_pdu()), st.binary(max_size=80)
)


def raw_record(pdu: bytes, carrier: str, received_at: int) -> dict[str, Any]:
    """The RawPdu record the connector writes; for bytes that do not decode (a corrupted topic, another
    producer), the header fields are left at what the connector would not know."""
    try:
        p = decode_pdu(pdu).params
    except PduError:
        p = {}
    return {
        "carrier_id": carrier,
        "route_id": f"r-{carrier}",
        "session_id": "s1",
        "protocol": "smpp3.4",
        "received_at": received_at,
        "command_id": int(CommandId.deliver_sm),
        "sequence_number": 1,
        "source_addr": str(p.get("source_addr", "")),
        "source_addr_ton": int(p.get("source_addr_ton", 0)),
        "source_addr_npi": int(p.get("source_addr_npi", 0)),
        "destination_addr": str(p.get("destination_addr", "")),
        "dest_addr_ton": int(p.get("dest_addr_ton", 0)),
        "dest_addr_npi": int(p.get("dest_addr_npi", 0)),
        "esm_class": int(p.get("esm_class", 0)),
        "data_coding": int(p.get("data_coding", 0)),
        "pdu": pdu,
        "remote_addr": None,
        "numbers": None,
    }


# One partition's traffic: a few conversations, so segments meet their siblings and duplicates.
raw_traffic = st.lists(
    st.tuples(pdu_bytes, st.sampled_from(sorted(CARRIERS)), st.integers(0, 120_000)), min_size=1, max_size=12
)
