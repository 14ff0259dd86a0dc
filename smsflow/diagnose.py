"""``smsflow diagnose``: read one captured PDU (or a quarantine record) under each candidate carrier setting
and say which reading makes sense, so an operator can pick a new carrier's profile from evidence.

Pure logic; the CLI prints the `Diagnosis`. A reading "makes sense" when it has no undecodable octets, no
control characters other than CR/LF, and no GSM escape left over. Ties go to the standard meaning: a setting
is suggested only when the standard reading is broken and another is clean.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
from dataclasses import dataclass, field

from smsflow.carriers import looks_like_receipt_text
from smsflow.ingest.receipts import is_receipt
from smsflow.smpp.constants import CommandId, TlvTag
from smsflow.smpp.pdu import PduError, decode_pdu
from smsflow.sms.text import TextDecodeError, decode_text, interpret_data_coding
from smsflow.sms.udh import UdhError, concat_from_sar, concat_info, parse_udh

CANDIDATE_ALPHABETS = ("gsm7", "ascii", "latin1", "ucs2")
_JOINERS = "\u200c\u200d\ufffd"  # ZWNJ/ZWJ are part of real emoji and scripts; U+FFFD is counted apart
_DC_IN_REASON = re.compile(r"data_coding 0x([0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class Reading:
    alphabet: str
    text: str
    problems: list[str]
    standard: bool  # the meaning SMPP/GSM 03.38 gives the data_coding value

    @property
    def clean(self) -> bool:
        return not self.problems


@dataclass
class Diagnosis:
    facts: list[str] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = list(self.facts)
        for r in self.readings:
            mark = "ok " if r.clean else "BAD"
            std = " (standard)" if r.standard else ""
            why = f"  -- {'; '.join(r.problems)}" if r.problems else ""
            lines.append(f"  [{mark}] {r.alphabet:<7}{std}: {r.text[:120]!r}{why}")
        lines += [f"=> {s}" for s in self.suggestions] or ["=> no carrier setting needed for this PDU"]
        return "\n".join(lines)


def read_capture(text: str) -> tuple[bytes, str]:
    """Hex (spaces allowed), or a quarantine record (JSON: ``pdu`` in hex or base64, and ``reason``)."""
    text = text.strip()
    reason = ""
    if text.startswith("{"):
        record = json.loads(text)
        reason = str(record.get("reason") or "")
        text = str(record.get("pdu") or "")
    compact = re.sub(r"\s+", "", text)
    try:
        return bytes.fromhex(compact), reason
    except ValueError:
        pass
    try:
        return base64.b64decode(compact, validate=True), reason
    except binascii.Error:
        raise ValueError("not hex, base64 or a JSON quarantine record with a 'pdu' field") from None


def _problems(text: str) -> list[str]:
    out = []
    if (n := text.count("\ufffd")) > 0:
        out.append(f"{n} undecodable")
    controls = sum(1 for c in text if (ord(c) < 0x20 and c not in "\r\n") or 0x7F <= ord(c) < 0xA0)
    if controls:
        out.append(f"{controls} control character(s)")
    # text read in the wrong 16-bit alphabet lands on unassigned, private-use and invisible code points
    odd = sum(1 for c in text if c not in _JOINERS and unicodedata.category(c) in ("Cn", "Co", "Cf"))
    if odd:
        out.append(f"{odd} unassigned/invisible character(s)")
    return out


def readings(user_data: bytes, data_coding: int) -> list[Reading]:
    try:
        standard = interpret_data_coding(data_coding).encoding
    except TextDecodeError:
        standard = None
    names = [standard] if standard else []
    names += [a for a in CANDIDATE_ALPHABETS if a != standard]
    out = []
    for alphabet in names:
        decoded = decode_text(user_data, data_coding, errors="replace", overrides={data_coding: alphabet})
        out.append(Reading(alphabet, decoded.text, _problems(decoded.text), alphabet == standard))
    return out


def diagnose(raw: bytes, reason: str = "", current: dict[int, str] | None = None) -> Diagnosis:
    """What ``raw`` (a whole PDU, or the user data of a quarantined message) says under each setting."""
    d = Diagnosis()
    if reason:
        d.facts.append(f"quarantine reason: {reason}")
    try:
        pdu = decode_pdu(raw)
    except PduError as exc:
        match = _DC_IN_REASON.search(reason)
        if match is None:
            d.facts.append(f"not a PDU we can decode: {exc.reason}")
            if "exceeds" in exc.reason:
                d.suggestions.append(
                    "a PDU above max_pdu_size: raise the carrier's max_pdu_size if it is real"
                )
            return d
        dc = int(match.group(1), 16)
        d.facts.append(f"user data of a quarantined message, data_coding 0x{dc:02X}, {len(raw)} octets")
        _alphabets(d, raw, dc, current)
        return d
    p = pdu.params
    if pdu.command_id not in (CommandId.deliver_sm, CommandId.data_sm):
        d.facts.append(f"{pdu.name}: carries no message")
        return d
    esm, dc = int(p.get("esm_class", 0)), int(p.get("data_coding", 0))
    src, dst = str(p.get("source_addr", "")), str(p.get("destination_addr", ""))
    src_ton, src_npi = int(p.get("source_addr_ton", 0)), int(p.get("source_addr_npi", 0))
    dst_ton, dst_npi = int(p.get("dest_addr_ton", 0)), int(p.get("dest_addr_npi", 0))
    d.facts.append(
        f"{pdu.name} seq {pdu.sequence_number}: esm_class 0x{esm:02X}, data_coding 0x{dc:02X}, "
        f"from {src!r} (TON {src_ton}, NPI {src_npi}) to {dst!r} (TON {dst_ton}, NPI {dst_npi})"
    )
    sm = p.get("short_message", b"")
    assert isinstance(sm, bytes)
    payload = pdu.tlv(TlvTag.message_payload)
    ud = payload if payload is not None else sm
    receipted = pdu.tlv(TlvTag.receipted_message_id)
    if esm & 0x40:
        try:
            elements, ud = parse_udh(ud)
            ci = concat_info(elements)
            d.facts.append(
                f"UDH: {[hex(e.iei) for e in elements]}" + (f", part {ci.seq}/{ci.total}" if ci else "")
            )
        except UdhError as exc:
            d.facts.append(f"UDH does not parse: {exc}")
    else:
        try:
            sar = concat_from_sar(pdu.tlvs)
            if sar is not None:
                d.facts.append(f"SAR: part {sar.seq}/{sar.total} of ref {sar.ref}")
        except UdhError as exc:
            d.facts.append(f"SAR TLVs are broken: {exc}")
    texts = _alphabets(d, ud, dc, current)
    if is_receipt(esm, receipted is not None):
        mid = receipted.rstrip(b"\x00").decode("ascii", "replace") if receipted else ""
        d.facts.append("a delivery receipt" + (f" for id {mid!r}" if mid else ""))
        if mid and re.fullmatch(r"[0-9]+", mid):
            d.suggestions.append(
                f"receipt id {mid!r} has only digits: set receipts.id_form to hex or decimal, as the "
                "carrier's submit_sm_resp ids are (auto gives a digit-only id no decimal reading)"
            )
    elif any(looks_like_receipt_text(t) for t in texts):
        d.suggestions.append(
            "esm_class 0 but the text reads 'id:... stat:...': a receipt the carrier does not flag; "
            "set receipts.in_text: true"
        )
    if p.get("source_addr_ton") == 0 and re.fullmatch(
        r"(?:00|\+)?[1-9][0-9]{10,14}", str(p.get("source_addr"))
    ):
        d.suggestions.append(
            "source TON 0 (unknown) with an international-looking number: if the carrier always sends "
            "international numbers so, set source_ton_npi: {ton: 1, npi: 1}; else set default_region"
        )
    return d


def _alphabets(d: Diagnosis, ud: bytes, dc: int, current: dict[int, str] | None) -> list[str]:
    try:
        coding = interpret_data_coding(dc)
    except TextDecodeError as exc:
        d.facts.append(f"data_coding 0x{dc:02X}: {exc.reason}")
        coding = None
    if coding is not None and coding.encoding == "binary":
        d.facts.append("binary user data (no text): no alphabet applies")
        return []
    rs = readings(ud, dc)
    d.readings = rs
    if current and dc in current:
        d.facts.append(f"the carrier's profile maps data_coding 0x{dc:02X} to {current[dc]}")
    std = next((r for r in rs if r.standard), None)
    clean = [r for r in rs if r.clean]
    if (std is None or not std.clean) and clean:
        best = clean[0]
        if not current or current.get(dc) != best.alphabet:
            d.suggestions.append(
                f"data_coding: {{0x{dc:02X}: {best.alphabet}}}  (reads cleanly; the standard does not)"
            )
    elif std is not None and std.clean and current and current.get(dc) not in (None, std.alphabet):
        d.suggestions.append(
            f"this PDU reads cleanly by the standard ({std.alphabet}); check the profile's "
            f"data_coding 0x{dc:02X} -> {current[dc]} against more samples"
        )
    if not clean:
        d.suggestions.append("no candidate alphabet reads cleanly: the PDU may be corrupt, or binary data")
    return [r.text for r in rs]
