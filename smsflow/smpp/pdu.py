"""Table-driven SMPP 3.4 PDU codec (with SMPP 5.0 TLVs).

Each PDU's mandatory body is declared once, as data, in `PDU_SPECS`; `encode_pdu` and `decode_pdu` read the
declaration. Adding a PDU is adding a `PduSpec`. Every rejection is a `PduError` carrying the command_status
to answer with, and a sentence saying what was wrong.

Decoding is strict where framing depends on it (lengths, NUL terminators, the TLV stream) and keeps every
octet it was given: c-octet strings are decoded as Latin-1 (SMPP says ASCII; carriers do not always comply,
and Latin-1 maps each octet to one code point so a re-encode is byte-exact); unknown TLVs are kept in order.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property

from .constants import (
    HEADER_LENGTH,
    RESPONSE_BIT,
    CommandId,
    CommandStatus,
    TlvTag,
    resp_id,
)
from .tlv import TLV_SPECS, Tlv, TlvSpec, make_tlv, tlv_name, tlv_value

__all__ = [
    "PDU_SPECS",
    "CString",
    "FramingError",
    "Integer",
    "OctetString",
    "Pdu",
    "PduError",
    "PduReader",
    "PduSpec",
    "Tlv",
    "decode_pdu",
    "encode_pdu",
    "generic_nack",
    "make_tlv",
]

ParamValue = int | str | bytes
S = CommandStatus

# ----------------------------------------------------------------------------------------------------------
# Errors


class PduError(Exception):
    """A PDU that cannot be decoded (or built), with the SMPP command_status to answer it with.

    `command_id` and `sequence_number` are set whenever the 16-octet header could be read, so the caller can
    address its answer; `reply()` builds that answer.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        command_id: int | None = None,
        sequence_number: int | None = None,
        *,
        header: bool = False,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.command_id = command_id
        self.sequence_number = sequence_number
        self.header = header
        """True when the header itself is bad (command_length, command_id): answered with generic_nack."""

    def __str__(self) -> str:
        return f"{_status_name(self.status)}: {self.reason}"

    def reply(self) -> Pdu | None:
        """The PDU to send back, or None when the offending PDU was itself a response.

        SMPP 3.4 section 4.3 answers an invalid command_length or unknown command_id with generic_nack; any
        other error in a request is answered by the request's own response carrying the status.
        """
        seq = self.sequence_number or 0
        if self.command_id is None or self.header:
            return generic_nack(self.status, seq)
        if self.command_id & RESPONSE_BIT:
            return None
        if self.status in (S.ESME_RINVCMDLEN, S.ESME_RINVCMDID) or resp_id(self.command_id) not in PDU_SPECS:
            return generic_nack(self.status, seq)
        return Pdu(self.command_id, 0, seq).make_response(self.status)


class FramingError(PduError):
    """A command_length that makes the byte stream unframeable (always ESME_RINVCMDLEN).

    `pdus` holds the complete PDUs that preceded the bad header in the same `feed()` call: handle them before
    answering. `resumable` is True when the length is only too large (the stream can continue once that many
    octets are skipped with `PduReader.skip_bad_pdu()`); a length below 16 leaves no way to find the next PDU.
    """

    def __init__(
        self,
        reason: str,
        command_id: int | None,
        sequence_number: int | None,
        pdus: list[bytes],
        resumable: bool,
    ) -> None:
        super().__init__(S.ESME_RINVCMDLEN, reason, command_id, sequence_number, header=True)
        self.pdus = pdus
        self.resumable = resumable


def _status_name(status: int) -> str:
    try:
        return CommandStatus(status).name
    except ValueError:
        return f"status 0x{status:08x}"


# ----------------------------------------------------------------------------------------------------------
# Field declarations


@dataclass(frozen=True)
class CString:
    """A NUL-terminated string. `max_length` counts the NUL, as the spec tables do."""

    name: str
    max_length: int
    status: int = S.ESME_RSYSERR
    """The command_status for a value that is too long or not terminated."""
    lengths: tuple[int, ...] | None = None
    """Exact lengths allowed (without NUL), e.g. (0, 16) for absolute/relative times. Checked on encode."""


@dataclass(frozen=True)
class Integer:
    name: str
    size: int
    default: int = 0


@dataclass(frozen=True)
class OctetString:
    """Octets whose count is carried by an earlier `Integer` field (sm_length -> short_message)."""

    name: str
    length_field: str
    max_length: int = 254
    status: int = S.ESME_RINVMSGLEN


Field = CString | Integer | OctetString


@dataclass(frozen=True)
class PduSpec:
    command_id: CommandId
    body: tuple[Field, ...] = ()
    tlvs: bool = False
    """Whether optional parameters may follow the mandatory body."""

    @property
    def name(self) -> str:
        return self.command_id.name

    @cached_property
    def length_fields(self) -> frozenset[str]:
        """Integer fields derived from the octet string they measure (not kept in `Pdu.params`)."""
        return frozenset(f.length_field for f in self.body if isinstance(f, OctetString))


# Reusable field groups, named after the spec's tables.
def _addr(prefix: str, max_length: int, status: int) -> tuple[Field, ...]:
    return (Integer(f"{prefix}_ton", 1), Integer(f"{prefix}_npi", 1), CString(prefix, max_length, status))


_SERVICE_TYPE = CString("service_type", 6, S.ESME_RINVSERTYP)
_MESSAGE_ID = CString("message_id", 65, S.ESME_RINVMSGID)
_SCHEDULE = CString("schedule_delivery_time", 17, S.ESME_RINVSCHED, (0, 16))
_VALIDITY = CString("validity_period", 17, S.ESME_RINVEXPIRY, (0, 16))
_SHORT_MESSAGE = (Integer("sm_length", 1), OctetString("short_message", "sm_length"))

_BIND = (
    CString("system_id", 16, S.ESME_RINVSYSID),
    CString("password", 9, S.ESME_RINVPASWD),
    CString("system_type", 13, S.ESME_RINVSYSTYP),
    Integer("interface_version", 1, default=0x34),
    Integer("addr_ton", 1),
    Integer("addr_npi", 1),
    CString("address_range", 41, S.ESME_RBINDFAIL),
)
_BIND_RESP = (CString("system_id", 16, S.ESME_RINVSYSID),)

# submit_sm and deliver_sm share one body (SMPP 3.4 sections 4.4.1 and 4.6.1).
_SM_BODY = (
    _SERVICE_TYPE,
    *_addr("source_addr", 21, S.ESME_RINVSRCADR),
    Integer("dest_addr_ton", 1),
    Integer("dest_addr_npi", 1),
    CString("destination_addr", 21, S.ESME_RINVDSTADR),
    Integer("esm_class", 1),
    Integer("protocol_id", 1),
    Integer("priority_flag", 1),
    _SCHEDULE,
    _VALIDITY,
    Integer("registered_delivery", 1),
    Integer("replace_if_present_flag", 1),
    Integer("data_coding", 1),
    Integer("sm_default_msg_id", 1),
    *_SHORT_MESSAGE,
)

_SPECS: tuple[PduSpec, ...] = (
    PduSpec(CommandId.generic_nack),
    PduSpec(CommandId.bind_receiver, _BIND),
    PduSpec(CommandId.bind_receiver_resp, _BIND_RESP, tlvs=True),
    PduSpec(CommandId.bind_transmitter, _BIND),
    PduSpec(CommandId.bind_transmitter_resp, _BIND_RESP, tlvs=True),
    PduSpec(CommandId.bind_transceiver, _BIND),
    PduSpec(CommandId.bind_transceiver_resp, _BIND_RESP, tlvs=True),
    PduSpec(
        CommandId.outbind,
        (CString("system_id", 16, S.ESME_RINVSYSID), CString("password", 9, S.ESME_RINVPASWD)),
    ),
    PduSpec(CommandId.unbind),
    PduSpec(CommandId.unbind_resp),
    PduSpec(CommandId.enquire_link),
    PduSpec(CommandId.enquire_link_resp),
    PduSpec(CommandId.submit_sm, _SM_BODY, tlvs=True),
    # SMPP 5.0 allows TLVs on submit_sm_resp and deliver_sm_resp (e.g. additional_status_info_text).
    PduSpec(CommandId.submit_sm_resp, (_MESSAGE_ID,), tlvs=True),
    PduSpec(CommandId.deliver_sm, _SM_BODY, tlvs=True),
    PduSpec(CommandId.deliver_sm_resp, (_MESSAGE_ID,), tlvs=True),
    PduSpec(
        CommandId.data_sm,
        (
            _SERVICE_TYPE,
            *_addr("source_addr", 65, S.ESME_RINVSRCADR),
            Integer("dest_addr_ton", 1),
            Integer("dest_addr_npi", 1),
            CString("destination_addr", 65, S.ESME_RINVDSTADR),
            Integer("esm_class", 1),
            Integer("registered_delivery", 1),
            Integer("data_coding", 1),
        ),
        tlvs=True,
    ),
    PduSpec(CommandId.data_sm_resp, (_MESSAGE_ID,), tlvs=True),
    PduSpec(CommandId.query_sm, (_MESSAGE_ID, *_addr("source_addr", 21, S.ESME_RINVSRCADR))),
    PduSpec(
        CommandId.query_sm_resp,
        (
            _MESSAGE_ID,
            CString("final_date", 17, S.ESME_RSYSERR, (0, 16)),
            Integer("message_state", 1),
            Integer("error_code", 1),
        ),
    ),
    PduSpec(
        CommandId.cancel_sm,
        (
            _SERVICE_TYPE,
            _MESSAGE_ID,
            *_addr("source_addr", 21, S.ESME_RINVSRCADR),
            Integer("dest_addr_ton", 1),
            Integer("dest_addr_npi", 1),
            CString("destination_addr", 21, S.ESME_RINVDSTADR),
        ),
    ),
    PduSpec(CommandId.cancel_sm_resp),
    PduSpec(
        CommandId.replace_sm,
        (
            _MESSAGE_ID,
            *_addr("source_addr", 21, S.ESME_RINVSRCADR),
            _SCHEDULE,
            _VALIDITY,
            Integer("registered_delivery", 1),
            Integer("sm_default_msg_id", 1),
            *_SHORT_MESSAGE,
        ),
        tlvs=True,  # SMPP 5.0: message_payload may replace short_message
    ),
    PduSpec(CommandId.replace_sm_resp),
    PduSpec(
        CommandId.alert_notification,
        (
            *_addr("source_addr", 65, S.ESME_RINVSRCADR),
            *_addr("esme_addr", 65, S.ESME_RINVDSTADR),
        ),
        tlvs=True,
    ),
)

PDU_SPECS: dict[int, PduSpec] = {int(s.command_id): s for s in _SPECS}

_SAR_TAGS = (TlvTag.sar_msg_ref_num, TlvTag.sar_total_segments, TlvTag.sar_segment_seqnum)

# ----------------------------------------------------------------------------------------------------------
# The PDU value


@dataclass
class Pdu:
    command_id: int
    command_status: int = 0
    sequence_number: int = 0
    params: dict[str, ParamValue] = field(default_factory=dict)
    tlvs: list[Tlv] = field(default_factory=list)

    @property
    def name(self) -> str:
        spec = PDU_SPECS.get(self.command_id)
        return spec.name if spec else f"command_0x{self.command_id:08x}"

    @property
    def is_response(self) -> bool:
        return self.command_id & RESPONSE_BIT != 0

    def tlv(self, tag: int) -> bytes | None:
        """The raw value of the first TLV with this tag."""
        for t in self.tlvs:
            if t.tag == tag:
                return t.value
        return None

    def tlv_value(self, tag: int) -> int | str | bytes | None:
        """The first TLV with this tag, read as its registry entry says (int, str or bytes)."""
        for t in self.tlvs:
            if t.tag == tag:
                return tlv_value(t)
        return None

    def int_param(self, name: str) -> int:
        value = self.params[name]
        if not isinstance(value, int):
            raise TypeError(f"{self.name}.{name} is {type(value).__name__}, not int")
        return value

    def str_param(self, name: str) -> str:
        value = self.params[name]
        if not isinstance(value, str):
            raise TypeError(f"{self.name}.{name} is {type(value).__name__}, not str")
        return value

    def bytes_param(self, name: str) -> bytes:
        value = self.params[name]
        if not isinstance(value, bytes):
            raise TypeError(f"{self.name}.{name} is {type(value).__name__}, not bytes")
        return value

    def make_response(self, command_status: int = 0, params: dict[str, ParamValue] | None = None) -> Pdu:
        """The response to this request, with the same sequence_number.

        Parameters not given take their defaults, so the body is always sent: deliver_sm_resp carries its
        (empty) message_id even with an error status, as SMPP 3.4 section 4.6.2 lays the PDU out.
        """
        spec = PDU_SPECS.get(resp_id(self.command_id))
        if self.is_response or spec is None:
            raise ValueError(f"{self.name} has no response PDU")
        full = _defaults(spec) | dict(params or {})
        return Pdu(spec.command_id, command_status, self.sequence_number, full)


def _defaults(spec: PduSpec) -> dict[str, ParamValue]:
    values: dict[str, ParamValue] = {}
    for f in spec.body:
        if isinstance(f, Integer):
            if f.name not in spec.length_fields:
                values[f.name] = f.default
        else:
            values[f.name] = "" if isinstance(f, CString) else b""
    return values


def generic_nack(status: int, sequence_number: int = 0) -> Pdu:
    return Pdu(CommandId.generic_nack, status, sequence_number)


# ----------------------------------------------------------------------------------------------------------
# Decoding

_HEADER = struct.Struct(">IIII")
_Fail = Callable[[int, str], PduError]


def decode_pdu(data: bytes) -> Pdu:
    """Decode one whole PDU (16-octet header included). Raises only `PduError`."""
    data = bytes(data)
    if len(data) < HEADER_LENGTH:
        reason = f"{len(data)} octets is shorter than the 16-octet SMPP header"
        raise PduError(S.ESME_RINVCMDLEN, reason, header=True)
    length, command_id, status, seq = _HEADER.unpack_from(data)
    if length != len(data):
        raise PduError(
            S.ESME_RINVCMDLEN,
            f"command_length says {length} octets but the PDU has {len(data)}",
            command_id,
            seq,
            header=True,
        )
    spec = PDU_SPECS.get(command_id)
    if spec is None:
        raise PduError(
            S.ESME_RINVCMDID, f"unknown command_id 0x{command_id:08x}", command_id, seq, header=True
        )
    pdu = Pdu(command_id, status, seq)
    # SMPP 3.4 (e.g. section 4.4.2) omits the body of a response that carries an error, and some SMSCs send
    # submit_sm_resp/deliver_sm_resp with no body at all: an empty response body means "no parameters".
    if len(data) == HEADER_LENGTH and pdu.is_response:
        return pdu
    _Decoder(spec, pdu, data).run()
    return pdu


class _Decoder:
    def __init__(self, spec: PduSpec, pdu: Pdu, data: bytes) -> None:
        self.spec = spec
        self.pdu = pdu
        self.data = data
        self.pos = HEADER_LENGTH
        self.lengths: dict[str, int] = {}

    def fail(self, status: int, reason: str) -> PduError:
        return PduError(status, f"{self.spec.name}: {reason}", self.pdu.command_id, self.pdu.sequence_number)

    def run(self) -> None:
        # integer() and cstring() inlined, with the position in a local: every PDU read from a carrier
        # passes here twice (connector, ingest), ~15 fields each
        data, pos, end = self.data, self.pos, len(self.data)
        params, lengths, length_fields = self.pdu.params, self.lengths, self.spec.length_fields
        for f in self.spec.body:
            if isinstance(f, Integer):
                stop = pos + f.size
                if stop > end:
                    raise self.fail(S.ESME_RINVCMDLEN, f"body ends inside {f.name}")
                value = data[pos] if f.size == 1 else int.from_bytes(data[pos:stop], "big")
                pos = stop
                if f.name in length_fields:
                    lengths[f.name] = value
                else:
                    params[f.name] = value
            elif isinstance(f, CString):
                self.pos = pos
                limit = min(pos + f.max_length, end)
                nul = data.find(b"\x00", pos, limit)
                if nul < 0:
                    self.cstring(f)  # raises the error it names
                params[f.name] = data[pos:nul].decode("latin-1")
                pos = nul + 1
            else:
                self.pos = pos
                params[f.name] = self.octets(f)
                pos = self.pos
        self.pos = pos
        if self.pos < len(self.data):
            if not self.spec.tlvs:
                self.reject_trailing()
            self.pdu.tlvs = self.tlv_stream()

    def integer(self, f: Integer) -> int:
        end = self.pos + f.size
        if end > len(self.data):
            raise self.fail(S.ESME_RINVCMDLEN, f"body ends inside {f.name}")
        value = int.from_bytes(self.data[self.pos : end], "big")
        self.pos = end
        return value

    def cstring(self, f: CString) -> str:
        limit = min(self.pos + f.max_length, len(self.data))
        nul = self.data.find(b"\x00", self.pos, limit)
        if nul < 0:
            if limit - self.pos < f.max_length:
                raise self.fail(S.ESME_RINVCMDLEN, f"body ends inside {f.name} (no NUL terminator)")
            raise self.fail(f.status, f"{f.name} is not NUL-terminated within {f.max_length} octets")
        value = self.data[self.pos : nul].decode("latin-1")
        self.pos = nul + 1
        return value

    def octets(self, f: OctetString) -> bytes:
        length = self.lengths[f.length_field]
        # 255 breaks the spec's 254 limit but frames fine; real SMSCs send it (see cloudhopper-smpp's
        # decodeSubmitSmWith255ByteShortMessage), so it is accepted here and refused only on encode.
        end = self.pos + length
        if end > len(self.data):
            raise self.fail(
                f.status,
                f"{f.length_field} is {length} but only {len(self.data) - self.pos} octets remain",
            )
        value = self.data[self.pos : end]
        self.pos = end
        return value

    def reject_trailing(self) -> None:
        extra = len(self.data) - self.pos
        try:
            tlvs = self.tlv_stream()
        except PduError:
            tlvs = []
        if tlvs:
            raise self.fail(
                S.ESME_ROPTPARNOTALLWD, f"optional parameters are not allowed (got {extra} octets)"
            )
        raise self.fail(S.ESME_RINVCMDLEN, f"{extra} octets follow the end of the body")

    def tlv_stream(self) -> list[Tlv]:
        tlvs: list[Tlv] = []
        data, pos, end = self.data, self.pos, len(self.data)
        while pos < end:
            if end - pos < 4:
                raise self.fail(
                    S.ESME_RINVOPTPARSTREAM,
                    f"{end - pos} stray octets where a TLV header (4 octets) should be",
                )
            tag, length = struct.unpack_from(">HH", data, pos)
            if pos + 4 + length > end:
                raise self.fail(
                    S.ESME_RINVOPTPARSTREAM,
                    f"{tlv_name(tag)} (0x{tag:04x}) declares {length} octets but {end - pos - 4} remain",
                )
            tlv = Tlv(tag, data[pos + 4 : pos + 4 + length])
            spec = TLV_SPECS.get(tag)
            if spec is not None and spec.kind == "int" and spec.sizes and length not in spec.sizes:
                raise self.fail(S.ESME_RINVPARLEN, _bad_size(spec, length))
            tlvs.append(tlv)
            pos += 4 + length
        self.pos = pos
        tags = {x.tag for x in tlvs}
        present = [t for t in _SAR_TAGS if t in tags]
        if present and len(present) != len(_SAR_TAGS):
            missing = ", ".join(t.name for t in _SAR_TAGS if t not in present)
            raise self.fail(S.ESME_RMISSINGOPTPARAM, f"segmentation TLVs are incomplete: {missing} missing")
        return tlvs


def _bad_size(spec: TlvSpec, length: int) -> str:
    sizes = " or ".join(str(s) for s in spec.sizes or ())
    return f"{spec.name} must be {sizes} octets, got {length}"


# ----------------------------------------------------------------------------------------------------------
# Encoding


def encode_pdu(pdu: Pdu) -> bytes:
    """Encode a PDU. Missing parameters take their defaults (0, "", b""); bad values raise `PduError`.

    A response with a non-zero command_status and no parameters or TLVs is sent header-only, as SMPP 3.4
    prescribes for error responses.
    """
    seq = pdu.sequence_number

    def fail(status: int, reason: str) -> PduError:
        return PduError(status, reason, pdu.command_id, seq)

    spec = PDU_SPECS.get(pdu.command_id)
    if spec is None:
        raise fail(S.ESME_RINVCMDID, f"unknown command_id 0x{pdu.command_id:08x}")
    for name, value in (("command_status", pdu.command_status), ("sequence_number", seq)):
        if not 0 <= value <= 0xFFFFFFFF:
            raise fail(S.ESME_RSYSERR, f"{spec.name}: {name} {value} does not fit in 4 octets")
    if pdu.is_response and pdu.command_status != 0 and not pdu.params and not pdu.tlvs:
        return _HEADER.pack(HEADER_LENGTH, pdu.command_id, pdu.command_status, seq)

    known = {f.name for f in spec.body}
    unknown = sorted(set(pdu.params) - known)
    if unknown:
        raise fail(S.ESME_RSYSERR, f"{spec.name} has no parameter {', '.join(unknown)}")

    body = bytearray()
    for f in spec.body:
        if isinstance(f, Integer):
            if f.name in spec.length_fields:
                measured = next(
                    o for o in spec.body if isinstance(o, OctetString) and o.length_field == f.name
                )
                value = len(_octets_value(pdu, measured, fail))
                given = pdu.params.get(f.name, value)
                if given != value:
                    raise fail(measured.status, _mismatch(f, given))
            else:
                value = _int_value(pdu, f, spec, fail)
            body += value.to_bytes(f.size, "big")
        elif isinstance(f, CString):
            body += _cstring_value(pdu, f, spec, fail)
        else:
            body += _octets_value(pdu, f, fail)

    if pdu.tlvs and not spec.tlvs:
        raise fail(S.ESME_ROPTPARNOTALLWD, f"{spec.name} does not take optional parameters")
    body += _encode_tlvs(pdu.tlvs, spec, fail)
    length = HEADER_LENGTH + len(body)
    return _HEADER.pack(length, pdu.command_id, pdu.command_status, seq) + bytes(body)


def _mismatch(f: Integer, given: object) -> str:
    return f"{f.name} {given!r} does not match the length of the octets it measures"


def _int_value(pdu: Pdu, f: Integer, spec: PduSpec, fail: _Fail) -> int:
    value = pdu.params.get(f.name, f.default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise fail(S.ESME_RSYSERR, f"{spec.name}.{f.name} must be an int, not {type(value).__name__}")
    if not 0 <= value < 1 << (8 * f.size):
        raise fail(S.ESME_RSYSERR, f"{spec.name}.{f.name} {value} does not fit in {f.size} octet(s)")
    return value


def _cstring_value(pdu: Pdu, f: CString, spec: PduSpec, fail: _Fail) -> bytes:
    value = pdu.params.get(f.name, "")
    if isinstance(value, bytes):
        raw = value
    elif isinstance(value, str):
        try:
            raw = value.encode("latin-1")
        except UnicodeEncodeError as exc:
            raise fail(
                f.status, f"{spec.name}.{f.name} has a character outside Latin-1: {exc.reason}"
            ) from None
    else:
        raise fail(S.ESME_RSYSERR, f"{spec.name}.{f.name} must be a str, not {type(value).__name__}")
    if b"\x00" in raw:
        raise fail(f.status, f"{spec.name}.{f.name} contains a NUL octet")
    if len(raw) + 1 > f.max_length:
        raise fail(f.status, f"{spec.name}.{f.name} is {len(raw)} octets; at most {f.max_length - 1} fit")
    if f.lengths is not None and len(raw) not in f.lengths:
        allowed = " or ".join(str(n) for n in f.lengths)
        raise fail(f.status, f"{spec.name}.{f.name} must be {allowed} characters long, got {len(raw)}")
    return raw + b"\x00"


def _octets_value(pdu: Pdu, f: OctetString, fail: _Fail) -> bytes:
    value = pdu.params.get(f.name, b"")
    if not isinstance(value, bytes | bytearray | memoryview):
        raise fail(S.ESME_RSYSERR, f"{f.name} must be bytes, not {type(value).__name__}")
    raw = bytes(value)
    if len(raw) > f.max_length:
        raise fail(
            f.status, f"{f.name} is {len(raw)} octets; at most {f.max_length} fit (use message_payload)"
        )
    return raw


def _encode_tlvs(tlvs: Iterable[Tlv], spec: PduSpec, fail: _Fail) -> bytes:
    out = bytearray()
    for t in tlvs:
        if not isinstance(t, Tlv):
            raise fail(S.ESME_RSYSERR, f"{spec.name}: optional parameters must be Tlv values, not {t!r}")
        if not 0 <= t.tag <= 0xFFFF:
            raise fail(S.ESME_RINVOPTPARSTREAM, f"TLV tag {t.tag:#x} does not fit in 2 octets")
        if len(t.value) > 0xFFFF:
            raise fail(
                S.ESME_RINVPARLEN, f"{tlv_name(t.tag)} value is {len(t.value)} octets; at most 65535 fit"
            )
        tspec = TLV_SPECS.get(t.tag)
        if tspec is not None and tspec.kind == "int" and tspec.sizes and len(t.value) not in tspec.sizes:
            raise fail(S.ESME_RINVPARLEN, _bad_size(tspec, len(t.value)))
        out += struct.pack(">HH", t.tag, len(t.value)) + t.value
    return bytes(out)


# ----------------------------------------------------------------------------------------------------------
# Stream framing


class PduReader:
    """Splits a TCP byte stream into whole PDUs by command_length.

    `feed()` returns the PDUs completed by the new data. A command_length below 16 or above `max_length`
    raises `FramingError` (a `PduError` with ESME_RINVCMDLEN): answer generic_nack, then either close the
    session, or, when `error.resumable`, call `skip_bad_pdu()` to drop the oversized PDU and carry on.
    Until then every `feed()` raises the same error again.
    """

    def __init__(self, max_length: int = 64 * 1024) -> None:
        if max_length < HEADER_LENGTH:
            raise ValueError(f"max_length must be at least {HEADER_LENGTH}")
        self.max_length = max_length
        self._buffer = bytearray()
        self._skip = 0
        self._error: FramingError | None = None
        self._bad_length = 0

    @property
    def buffered(self) -> int:
        """Octets held that do not yet form a whole PDU."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        if self._error is not None:
            e = self._error
            raise FramingError(e.reason, e.command_id, e.sequence_number, [], e.resumable)
        self._drop_skipped()
        pdus: list[bytes] = []
        buf = self._buffer
        while len(buf) >= 4:
            length = int.from_bytes(buf[:4], "big")
            if length < HEADER_LENGTH or length > self.max_length:
                self._error = self._framing_error(length, pdus)
                raise self._error
            if len(buf) < length:
                break
            pdus.append(bytes(buf[:length]))
            del buf[:length]
        return pdus

    def skip_bad_pdu(self) -> None:
        """Discard the oversized PDU that caused the last `FramingError`, including octets yet to arrive."""
        if self._error is None:
            raise ValueError("no framing error to recover from")
        if not self._error.resumable:
            raise ValueError("command_length below 16: the stream cannot be resynchronised")
        self._skip = self._bad_length
        self._error = None
        self._drop_skipped()

    def _drop_skipped(self) -> None:
        if self._skip:
            n = min(self._skip, len(self._buffer))
            del self._buffer[:n]
            self._skip -= n

    def _framing_error(self, length: int, pdus: list[bytes]) -> FramingError:
        buf = self._buffer
        command_id = seq = None
        if len(buf) >= HEADER_LENGTH:
            _, command_id, _, seq = _HEADER.unpack_from(bytes(buf[:HEADER_LENGTH]))
        self._bad_length = length
        if length < HEADER_LENGTH:
            reason = f"command_length {length} is shorter than the 16-octet header"
            return FramingError(reason, command_id, seq, pdus, resumable=False)
        reason = f"command_length {length} exceeds the {self.max_length}-octet limit"
        return FramingError(reason, command_id, seq, pdus, resumable=True)
