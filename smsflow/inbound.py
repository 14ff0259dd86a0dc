"""The ingest stage as plain logic: raw PDU record in; canonical messages, receipts and quarantine out.

``IngestProcessor`` holds no Kafka code. It reads and writes two mapping-like stores — the Faust tables
``partials`` (reassembly) and ``seen`` (dedup window) in production, plain dicts in unit tests — and returns
what to publish. The Faust agent in ``streams/ingest.py`` is a thin shell around it, so every rule here is
tested without a broker and behaves the same inside the stream.
"""

from __future__ import annotations

import base64
import collections
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

from smsflow.dedup import completed_parts_key, message_fingerprint, message_id
from smsflow.enrich import enrich
from smsflow.reassembly import (
    Outcome,
    Segment,
    add_segment,
    assemble,
    is_expired,
    part_digest,
    reassembly_key,
)
from smsflow.receipts import is_receipt, parse_receipt
from smsflow.smpp.constants import CommandId, TlvTag
from smsflow.smpp.pdu import PduError, decode_pdu
from smsflow.sms.text import DefaultAlphabet, TextDecodeError, decode_text
from smsflow.sms.udh import UdhError, concat_from_sar, concat_info, parse_udh


@dataclass(frozen=True)
class IngestSettings:
    reassembly_timeout_ms: int = 60_000
    incomplete_policy: str = "emit"  # emit | dead_letter
    dedup_window_ms: int = 600_000
    default_regions: dict[str, str | None] = field(default_factory=dict)  # carrier id -> region
    gsm_default_alphabets: dict[str, str] = field(default_factory=dict)  # carrier id -> gsm7|ascii|latin1


@dataclass
class Publish:
    """One record to write: ``kind`` is inbound | receipt | quarantine."""

    kind: str
    key: str
    record: dict[str, Any]
    traceparents: list[str] = field(default_factory=list)


@dataclass
class Stats:
    raw: int = 0
    segments: int = 0
    messages: int = 0
    duplicates: int = 0
    duplicate_parts: int = 0
    replays: int = 0
    receipts: int = 0
    quarantined: int = 0
    incomplete: int = 0


def is_replay(seen_origin: str, origin: str) -> bool:
    """Is ``origin`` the reprocessing of records already handled (after a crash), rather than new input?

    Origins are ``<topic>:<partition>:<offset>`` of the record that completed a message (or a synthetic,
    deterministic origin for timeouts). Within one partition records are processed in offset order, so a
    record at or before the one that completed a message can only be seen again because offsets were not
    committed before a crash; a carrier's retransmission is a new record at a later offset.
    """
    if seen_origin == origin:
        return True
    st, _, so = seen_origin.rpartition(":")
    ct, _, co = origin.rpartition(":")
    return st == ct and so.isdigit() and co.isdigit() and int(co) <= int(so)


class Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IngestProcessor:
    def __init__(
        self,
        partials: MutableMapping[str, Any],
        seen: MutableMapping[str, Any],
        settings: IngestSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.partials = partials
        self.seen = seen
        self.settings = settings
        self.clock = clock
        self.stats = Stats()
        # Expiry index for `seen`, per partition, oldest first. Rebuilt from the table for a partition the
        # first time it ticks after (re)assignment, since the table itself is recovered from its changelog.
        self._expiry: dict[int, collections.deque[tuple[int, str]]] = {}

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # ---- raw records ----------------------------------------------------------------------------------
    def on_raw(
        self, raw: dict[str, Any], origin: str, partition: int, traceparent: str | None
    ) -> list[Publish]:
        self.stats.raw += 1
        try:
            parsed = self._parse(raw)
        except Rejected as exc:
            self.stats.quarantined += 1
            return [self._quarantine(raw, exc.reason, origin, partition)]
        if isinstance(parsed, Publish):
            self.stats.receipts += 1
            return [parsed]
        seg = parsed
        self.stats.segments += 1
        if not seg.is_multipart:
            st, _ = add_segment(None, seg, partition, traceparent)
            return self._complete(st, origin, partition, rkey=None)
        rkey = reassembly_key(seg)
        done = self.seen.get(completed_parts_key(rkey))
        if (
            done is not None
            and done["h"].get(str(seg.seq)) == part_digest(seg.payload)
            and not is_replay(done.get("o", ""), origin)
        ):
            # a carrier retransmission of a part of a message already assembled
            self.stats.duplicate_parts += 1
            return []
        held = self.partials.get(rkey)
        st, outcome = add_segment(held, seg, partition, traceparent)
        out: list[Publish] = []
        if outcome is Outcome.DUPLICATE_PART:
            self.stats.duplicate_parts += 1
            return []
        if outcome is Outcome.CONFLICT:
            # Same reference and sequence, different bytes: the carrier wrapped its reference counter. What
            # we hold is one message, this segment starts the next.
            out += self._flush_incomplete(rkey, held, origin, partition)
            st, outcome = add_segment(None, seg, partition, traceparent)
        if outcome is Outcome.COMPLETE:
            if rkey in self.partials:
                del self.partials[rkey]
            out += self._complete(st, origin, partition, rkey=rkey)
        else:
            self.partials[rkey] = st
        return out

    def _parse(self, raw: dict[str, Any]) -> Segment | Publish:
        try:
            pdu = decode_pdu(raw["pdu"])
        except PduError as exc:
            raise Rejected(f"PDU does not decode: {exc.reason}") from None
        if pdu.command_id not in (CommandId.deliver_sm, CommandId.data_sm):
            raise Rejected(f"{pdu.name} carries no message")
        p = pdu.params
        esm = int(p.get("esm_class", 0))
        dc = int(p.get("data_coding", 0))
        sm = p.get("short_message", b"")
        assert isinstance(sm, bytes)
        payload_tlv = pdu.tlv(TlvTag.message_payload)
        if payload_tlv is not None and sm:
            raise Rejected("both short_message and message_payload are set (SMPP 3.4 §5.3.2.32 forbids it)")
        ud = payload_tlv if payload_tlv is not None else sm
        receipted = pdu.tlv(TlvTag.receipted_message_id)
        if is_receipt(esm, receipted is not None):
            return self._receipt(raw, pdu, ud, dc, receipted)
        ies: list[tuple[int, bytes]] = []
        ref: int | None = None
        ref_bits, total, seq = 0, 1, 1
        if esm & 0x40:
            try:
                elements, ud = parse_udh(ud)
                ci = concat_info(elements)
            except UdhError as exc:
                raise Rejected(f"bad user data header: {exc}") from None
            if ci is not None:
                ref, ref_bits, total, seq = ci.ref, ci.ref_bits, ci.total, ci.seq
            ies = [(e.iei, e.data) for e in elements if e.iei not in (0x00, 0x08)]
        else:
            try:
                sar = concat_from_sar(pdu.tlvs)
            except UdhError as exc:
                raise Rejected(f"bad SAR TLVs: {exc}") from None
            if sar is not None:
                ref, ref_bits, total, seq = sar.ref, 16, sar.total, sar.seq
        if ref is not None and total > 1 and not 1 <= seq <= total:
            raise Rejected(f"segment {seq} of {total} is out of range")
        carrier = raw["carrier_id"]
        meta = {
            "carrier_id": carrier,
            "route_id": raw["route_id"],
            "src": raw["source_addr"],
            "src_ton": raw["source_addr_ton"],
            "src_npi": raw["source_addr_npi"],
            "dst": raw["destination_addr"],
            "dst_ton": raw["dest_addr_ton"],
            "dst_npi": raw["dest_addr_npi"],
        }
        return Segment(
            carrier_id=carrier,
            route_id=raw["route_id"],
            source_addr=raw["source_addr"],
            dest_addr=raw["destination_addr"],
            data_coding=dc,
            payload=bytes(ud),
            received_at=int(raw["received_at"]),
            ref=ref,
            ref_bits=ref_bits,
            total=total if ref is not None else 1,
            seq=seq if ref is not None else 1,
            meta=meta,
            other_ies=ies,
        )

    def _receipt(self, raw: dict[str, Any], pdu: Any, ud: bytes, dc: int, receipted: bytes | None) -> Publish:
        try:
            text = decode_text(ud, dc).text if dc not in (2, 4) else ""
        except TextDecodeError:
            text = ud.decode("latin-1")
        state_tlv = pdu.tlv(TlvTag.message_state)
        info = parse_receipt(
            text,
            receipted.rstrip(b"\x00").decode("ascii", "replace") if receipted is not None else None,
            state_tlv[0] if state_tlv else None,
            pdu.tlv(TlvTag.network_error_code),
        )
        record = {
            "receipt_id": f"dlr_{raw['carrier_id']}_{info.message_id}_{info.state}_{raw['received_at']}",
            "message_id": info.message_id,
            "message_id_decimal": info.message_id_decimal,
            "state": info.state,
            "error_code": info.error_code,
            "submitted": info.submitted,
            "delivered": info.delivered,
            "submit_date": info.submit_date,
            "done_date": info.done_date,
            "text": info.text,
            "from_number": raw["source_addr"],
            "to_number": raw["destination_addr"],
            "esm_class": int(pdu.params.get("esm_class", 0)),
            "carrier_id": raw["carrier_id"],
            "route_id": raw["route_id"],
            "received_at": int(raw["received_at"]),
        }
        return Publish("receipt", info.message_id or raw["carrier_id"], record)

    def _quarantine(self, raw: dict[str, Any], reason: str, origin: str, partition: int) -> Publish:
        topic, _, offset = origin.rpartition(":")
        return Publish(
            "quarantine",
            raw.get("carrier_id", ""),
            {
                "stage": "ingest",
                "carrier_id": raw.get("carrier_id", ""),
                "route_id": raw.get("route_id", ""),
                "session_id": raw.get("session_id", ""),
                "received_at": int(raw.get("received_at", 0)),
                "status": 0,
                "reason": reason,
                "pdu": raw.get("pdu", b""),
                "source_topic": topic.rpartition(":")[0] or None,
                "source_partition": partition,
                "source_offset": int(offset) if offset.isdigit() else None,
            },
        )

    # ---- completion, dedup, enrichment ---------------------------------------------------------------
    def _complete(
        self, st: dict[str, Any], origin: str, partition: int, rkey: str | None, incomplete: bool = False
    ) -> list[Publish]:
        a = assemble(st)
        meta = a.meta
        carrier = meta["carrier_id"]
        alphabet: DefaultAlphabet = self.settings.gsm_default_alphabets.get(carrier, "gsm7")  # type: ignore[assignment]
        errors: Literal["strict", "replace"] = "replace" if incomplete else "strict"
        try:
            decoded = decode_text(a.payload, a.data_coding, default_alphabet=alphabet, errors=errors)
        except TextDecodeError as exc:
            self.stats.quarantined += 1
            return [
                self._quarantine(
                    {
                        "carrier_id": carrier,
                        "route_id": meta["route_id"],
                        "received_at": a.first_received_at,
                        "pdu": a.payload,
                    },
                    f"text does not decode as data_coding 0x{a.data_coding:02X}: {exc}",
                    origin,
                    partition,
                )
            ]
        info = enrich(
            decoded.text if decoded.encoding != "binary" else "",
            meta["src"],
            meta["src_ton"],
            meta["src_npi"],
            meta["dst"],
            meta["dst_ton"],
            meta["dst_npi"],
            self.settings.default_regions.get(carrier),
        )
        src_id = info.source.e164 or info.source.display
        dst_id = info.destination.e164 or info.destination.display
        fp = message_fingerprint(src_id, dst_id, decoded.encoding == "binary", decoded.text, a.missing)
        now = self._now_ms()
        out: list[Publish] = []
        prior = self.seen.get(fp)
        replay = prior is not None and is_replay(prior.get("o", ""), origin)
        if prior is not None and not replay and now - int(prior["at"]) < self.settings.dedup_window_ms:
            self.stats.duplicates += 1
            mid = None
        else:
            if replay:
                self.stats.replays += 1
                origin = prior["o"] if prior is not None else origin
            mid = message_id(fp, origin)
            self._remember(fp, {"id": mid, "o": origin, "at": now, "p": partition}, partition, now)
        if rkey is not None and not incomplete:
            self._remember(
                completed_parts_key(rkey),
                {"h": a.part_digests, "o": origin, "at": now, "p": partition},
                partition,
                now,
            )
        if mid is None:
            return out
        if incomplete and self.settings.incomplete_policy == "dead_letter":
            self.stats.quarantined += 1
            return [
                self._quarantine(
                    {
                        "carrier_id": carrier,
                        "route_id": meta["route_id"],
                        "received_at": a.first_received_at,
                        "pdu": a.payload,
                    },
                    f"incomplete after timeout: missing parts {a.missing} of {a.total}",
                    origin,
                    partition,
                )
            ]
        self.stats.messages += 1
        if incomplete:
            self.stats.incomplete += 1
        body = base64.b64encode(a.payload).decode() if decoded.encoding == "binary" else decoded.text
        record = {
            "message_id": mid,
            "from_number": src_id,
            "to_number": dst_id,
            "from_original": meta["src"],
            "to_original": meta["dst"],
            "body": body,
            "encoding": decoded.encoding,
            "data_coding": a.data_coding,
            "segment_count": a.total,
            "incomplete": incomplete,
            "missing_segments": a.missing,
            "received_at": a.first_received_at,
            "completed_at": now,
            "carrier_id": carrier,
            "route_id": meta["route_id"],
            "country_code": info.source.country,
            "otp": info.otp.code if info.otp else None,
            "otp_validity_seconds": info.otp.validity_seconds if info.otp else None,
            "from_type": info.source.kind,
            "from_calling_code": info.source.calling_code,
            "from_operator": info.source.operator,
            "to_country_code": info.destination.country,
            "to_operator": info.destination.operator,
            "to_calling_code": info.destination.calling_code,
            "to_type": info.destination.kind,
            "sender_signature": info.signature,
            "language": info.language,
            "udh_elements": [{"iei": i, "data": d} for i, d in a.other_ies],
        }
        out.append(Publish("inbound", dst_id, record, a.traceparents))
        return out

    def _remember(self, key: str, value: dict[str, Any], partition: int, now: int) -> None:
        self.seen[key] = value
        if partition in self._expiry:
            self._expiry[partition].append((now + self.settings.dedup_window_ms, key))

    def _flush_incomplete(
        self, rkey: str, st: dict[str, Any] | None, origin: str, partition: int
    ) -> list[Publish]:
        if st is None:
            return []
        if rkey in self.partials:
            del self.partials[rkey]
        return self._complete(st, origin + "~incomplete", partition, rkey=rkey, incomplete=True)

    # ---- time ---------------------------------------------------------------------------------------
    def on_tick(self, partition: int, now_ms: int | None = None) -> list[Publish]:
        """Expire what is due in one partition: incomplete messages out, old dedup entries away."""
        now = self._now_ms() if now_ms is None else now_ms
        out: list[Publish] = []
        timeout = self.settings.reassembly_timeout_ms
        expired = [
            (k, v)
            for k, v in list(self.partials.items())
            if v.get("p") == partition and is_expired(v, now, timeout)
        ]
        for rkey, st in expired:
            origin = f"timeout|{rkey}|{st['first']}|t"
            out += self._flush_incomplete(rkey, st, origin, partition)
        q = self._expiry.get(partition)
        if q is None:
            entries = sorted(
                (int(v["at"]) + self.settings.dedup_window_ms, k)
                for k, v in list(self.seen.items())
                if v.get("p") == partition
            )
            q = self._expiry[partition] = collections.deque(entries)
        while q and q[0][0] <= now:
            _, key = q.popleft()
            v = self.seen.get(key)
            # A key re-remembered later has a newer entry further back in the queue; keep it until then.
            if v is not None and int(v["at"]) + self.settings.dedup_window_ms <= now:
                del self.seen[key]
        return out

    def forget_partition(self, partition: int) -> None:
        self._expiry.pop(partition, None)
