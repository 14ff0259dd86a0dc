"""The ingest stage as plain logic: raw PDU record in; canonical messages, receipts and quarantine out.

``IngestProcessor`` holds no Kafka code. It reads and writes two mapping-like stores — the Faust tables
``partials`` (reassembly, one key per part: ``smsflow/ingest/reassembly.py``) and ``seen`` (dedup window) in
production, plain dicts in unit tests — and returns what to publish. The Faust agent in
``streams/ingest.py`` is a thin shell around it, so every rule here is tested without a broker and behaves
the same inside the stream.

Every decision is a function of the input records and their order within a partition, never of the wall
clock at processing time nor of how far the tables had been flushed before a crash (docs/consistency.md):
- ids: ``message_id(fingerprint, origin)``, origin = the raw record that completed the message (for a
  multipart SMS, the part with the highest supplier offset) or a synthetic origin built from record times;
- time: the dedup window and reassembly timeouts compare carrier receive times (``received_at``), and expiry
  runs on the partition's stream time (the highest ``received_at`` processed), as Kafka Streams' stream-time
  punctuation does; only an idle, caught-up partition lets the wall clock advance it;
- state the tables hold may run *ahead* of the committed offset (never behind: the agent's producer is
  drained before every commit), so a replayed record finds its own effects and re-derives the same outputs.
"""

from __future__ import annotations

import base64
import collections
import heapq
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from smsflow.carriers import ReceiptIdForm, alphabet_overrides, looks_like_receipt_text, receipt_id_decimal
from smsflow.enrich import enrich
from smsflow.ingest.dedup import DedupWindow, SeenEntry, message_fingerprint, message_id
from smsflow.ingest.origin import RecordOrigin
from smsflow.ingest.quarantine import Source, quarantine_record
from smsflow.ingest.reassembly import (
    Assembled,
    PartialHeader,
    PartStore,
    Segment,
    assemble,
    part_digest,
    payload_size,
    reassembly_key,
    single,
)
from smsflow.ingest.receipts import is_receipt, parse_receipt
from smsflow.numbers.handoff import handed
from smsflow.records import DeliveryReceipt, InboundMessage
from smsflow.smpp.constants import CommandId, TlvTag
from smsflow.smpp.pdu import PduError, decode_pdu
from smsflow.sms.text import DefaultAlphabet, TextDecodeError, decode_text
from smsflow.sms.udh import UdhError, concat_from_sar, concat_info, parse_udh

if TYPE_CHECKING:
    from smsflow.config import Config

# The longest legal SMS is 255 segments; message_payload carries at most 65,535 octets per PDU.
MAX_SEGMENTS = 255


@dataclass(frozen=True)
class IngestSettings:
    reassembly_timeout_ms: int = 60_000
    incomplete_policy: str = "emit"  # emit | dead_letter
    dedup_window_ms: int = 600_000
    default_regions: dict[str, str | None] = field(default_factory=dict)  # carrier id -> region
    gsm_default_alphabets: dict[str, str] = field(default_factory=dict)  # carrier id -> gsm7|ascii|latin1
    # carrier profiles (smsflow/carriers.py), by carrier id: data_coding map, receipt id form, text receipts
    alphabet_overrides: dict[str, dict[int, str]] = field(default_factory=dict)
    receipt_id_forms: dict[str, ReceiptIdForm] = field(default_factory=dict)
    receipts_in_text: frozenset[str] = frozenset()
    max_segments: int = MAX_SEGMENTS  # a multipart SMS announcing more parts is quarantined
    max_message_bytes: int = 65_536  # reassembled user data beyond this is quarantined
    # Carrier clocks (received_at is stamped by each connector) may disagree a little; expiry waits this much
    # longer than the window so a record stamped slightly in the past still meets its state.
    clock_skew_ms: int = 5_000


def ingest_settings(cfg: Config) -> IngestSettings:
    """The processor's rules, from the pipeline and carrier sections of the config (both ingest stages: the
    Faust agent and the direct loop, which must not import Faust to get them)."""
    return IngestSettings(
        reassembly_timeout_ms=int(cfg.pipeline.reassembly_timeout_s * 1000),
        incomplete_policy=cfg.pipeline.incomplete_policy,
        dedup_window_ms=int(cfg.pipeline.dedup_window_s * 1000),
        default_regions={c.id: c.default_region for c in cfg.carriers},
        gsm_default_alphabets={c.id: c.gsm_default_alphabet for c in cfg.carriers},
        alphabet_overrides={
            c.id: alphabet_overrides(c.data_coding, c.gsm_default_alphabet) for c in cfg.carriers
        },
        receipt_id_forms={c.id: c.receipts.id_form for c in cfg.carriers},
        receipts_in_text=frozenset(c.id for c in cfg.carriers if c.receipts.in_text),
        max_segments=cfg.pipeline.max_segments,
        max_message_bytes=cfg.pipeline.max_message_bytes,
    )


@dataclass
class Publish:
    """One record to write: ``kind`` is inbound | receipt | quarantine."""

    kind: str
    key: str
    record: Mapping[str, Any]
    traceparents: list[str] = field(default_factory=list)
    encoded: bytes | None = None  # the record's wire value, once the agent has encoded it


class Outputs(list[Publish]):
    """What one input record produced, plus state changes that must wait until those records are durable.

    Closing a partial message as incomplete (timeout, reference wrap) deletes state that a replay would need
    to emit it again; so the agent writes ``self``, waits for the broker's acks, then runs ``after_durable``.
    """

    def __init__(self, items: list[Publish] | None = None) -> None:
        super().__init__(items or [])
        self.after_durable: list[Callable[[], None]] = []

    def extend_outputs(self, other: Outputs) -> None:
        self.extend(other)
        self.after_durable.extend(other.after_durable)

    def apply_deferred(self) -> None:
        steps, self.after_durable = self.after_durable, []
        for step in steps:
            step()


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
    expired_entries: int = 0


def quarantine_publish(
    raw: dict[str, Any], reason: str, origin: RecordOrigin | str, partition: int
) -> Publish:
    """The sms.quarantine.v1 record for one raw record that cannot be processed, and why. ``origin``: the raw
    record's position, or the text of the origin a message was completed under (synthetic for timeouts)."""
    parsed = origin if isinstance(origin, RecordOrigin) else RecordOrigin.parse(origin)
    pdu = raw.get("pdu", b"")
    record = quarantine_record(
        "ingest",
        reason,
        carrier_id=str(raw.get("carrier_id", "")),
        route_id=str(raw.get("route_id", "")),
        session_id=str(raw.get("session_id", "")),
        received_at=int(raw.get("received_at", 0) or 0),
        pdu=pdu if isinstance(pdu, bytes) else b"",
        source=Source(parsed.topic if parsed else None, partition, parsed.offset if parsed else None),
    )
    return Publish("quarantine", str(raw.get("carrier_id", "")), record)


class Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _PartitionClock:
    """Per partition, in memory: stream time, and which stream time the committed offset stands for."""

    stream_time: int | None = None
    last_offset: int | None = None
    # (offset, stream time after it), oldest first; trimmed as commits pass them
    checkpoints: collections.deque[tuple[int, int]] = field(default_factory=collections.deque)
    committed_time: int | None = None


@dataclass
class _PartitionIndex:
    """Rebuilt from the tables on a partition's first tick after (re)assignment, then kept up to date."""

    open: dict[str, int] = field(default_factory=dict)  # rkey -> first
    # (expires at, kind, key): kind "seen" (dedup entry) or "msg" (a closed message's parts and header)
    expiry: list[tuple[int, str, str]] = field(default_factory=list)


class IngestProcessor:
    def __init__(
        self,
        partials: MutableMapping[str, Any],
        seen: MutableMapping[str, Any],
        settings: IngestSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.partials = partials
        self.parts = PartStore(partials)
        self.seen = seen
        self.dedup = DedupWindow(seen, settings.dedup_window_ms)
        self.settings = settings
        self.clock = clock
        self.stats = Stats()
        self._clocks: dict[int, _PartitionClock] = {}
        self._index: dict[int, _PartitionIndex] = {}

    def quarantine(
        self, raw: dict[str, Any], reason: str, origin: RecordOrigin | str, partition: int
    ) -> Publish:
        self.stats.quarantined += 1
        return quarantine_publish(raw, reason, origin, partition)

    def stream_time(self, partition: int) -> int | None:
        c = self._clocks.get(partition)
        return None if c is None else c.stream_time

    def last_offset(self, partition: int) -> int | None:
        c = self._clocks.get(partition)
        return None if c is None else c.last_offset

    # ---- raw records ----------------------------------------------------------------------------------
    def on_raw(self, raw: dict[str, Any], position: RecordOrigin, traceparent: str | None) -> Outputs:
        """One record of sms.raw.v1, read at ``position``."""
        self.stats.raw += 1
        partition, offset, origin = position.partition, position.offset, str(position)
        self._advance(partition, offset, raw.get("received_at"))
        try:
            parsed = self._parse(raw)
            if isinstance(parsed, Publish):
                self.stats.receipts += 1
                return Outputs([parsed])
            seg = parsed
            self.stats.segments += 1
            if seg.total > self.settings.max_segments:
                raise Rejected(f"segment count {seg.total} exceeds the cap of {self.settings.max_segments}")
            if not seg.is_multipart:
                if len(seg.payload) > self.settings.max_message_bytes:
                    raise Rejected(
                        f"user data of {len(seg.payload)} octets exceeds the cap of "
                        f"{self.settings.max_message_bytes}"
                    )
                return Outputs(self._complete(single(seg, traceparent), origin, seg.received_at, partition))
            return self._on_part(seg, origin, offset, partition, traceparent)
        except Rejected as exc:
            return Outputs([self.quarantine(raw, exc.reason, position, partition)])

    def _advance(self, partition: int, offset: int, received_at: Any) -> None:
        c = self._clocks.setdefault(partition, _PartitionClock())
        if isinstance(received_at, int) and (c.stream_time is None or received_at > c.stream_time):
            c.stream_time = received_at
        if offset >= 0:
            c.last_offset = offset
            if c.stream_time is not None:
                c.checkpoints.append((offset, c.stream_time))

    def _on_part(
        self, seg: Segment, origin: str, offset: int, partition: int, traceparent: str | None
    ) -> Outputs:
        if len(seg.payload) > self.settings.max_message_bytes:
            raise Rejected(
                f"reassembled user data would exceed the cap of {self.settings.max_message_bytes} octets"
            )
        store = self.parts
        rkey = reassembly_key(seg)
        hdr = store.header(rkey)
        held = store.part(rkey, seg.seq) if hdr is not None else None
        digest = part_digest(seg.payload)
        out = Outputs()
        if hdr is not None and held is not None and held.digest == digest:
            if held.offset >= offset:
                # This very record supplied the part: a replay after a crash, with the table ahead of the
                # committed offset. Re-derive what it did the first time.
                if hdr.state == "done" and hdr.completed_by == origin:
                    parts = store.held(rkey, hdr.total)
                    whole = assemble(hdr, parts, seg.numbers)
                    out += self._complete(whole, origin, seg.received_at, partition, rkey=rkey)
                elif hdr.is_open:
                    out += self._maybe_complete(
                        rkey, hdr, origin, offset, seg.received_at, partition, seg.numbers
                    )
                return out
            # a carrier retransmission of a part we hold (of a message in flight or already delivered)
            self.stats.duplicate_parts += 1
            return out
        if hdr is not None and hdr.is_open:
            late = seg.received_at - hdr.first >= self.settings.reassembly_timeout_ms
            if held is not None or late:
                # What we hold is one message and this part starts the next: the carrier wrapped its
                # reference counter (same part number, other bytes), or this part came after the held
                # message's deadline by carrier time (what a tick would have expired first).
                why = "timeout" if late else "wrap"
                out.extend_outputs(self._close_incomplete(rkey, hdr, partition, why))

                def restart() -> None:
                    self._start(rkey, seg, offset, partition, traceparent)

                out.after_durable.append(restart)
                return out
        elif hdr is not None:
            # a finished message's key reused (reference wrap, or a part after a timeout): its parts go
            store.forget(rkey, hdr.total)
            hdr = None
        if hdr is None:
            hdr = self._start(rkey, seg, offset, partition, traceparent)
            return out
        parts = store.held(rkey, hdr.total)
        before = {s: v for s, v in parts.items() if v.offset < offset}
        if payload_size(before) + len(seg.payload) > self.settings.max_message_bytes:
            raise Rejected(
                f"reassembled user data would exceed the cap of {self.settings.max_message_bytes} octets"
            )
        store.put_part(rkey, seg, offset, traceparent)
        out += self._maybe_complete(rkey, hdr, origin, offset, seg.received_at, partition, seg.numbers)
        return out

    def _start(
        self, rkey: str, seg: Segment, offset: int, partition: int, traceparent: str | None
    ) -> PartialHeader:
        hdr = self.parts.open(rkey, seg, partition)
        self.parts.put_part(rkey, seg, offset, traceparent)
        idx = self._index.get(partition)
        if idx is not None:
            idx.open[rkey] = hdr.first
        return hdr

    def _maybe_complete(
        self,
        rkey: str,
        hdr: PartialHeader,
        origin: str,
        offset: int,
        t: int,
        partition: int,
        numbers: str | None = None,
    ) -> list[Publish]:
        total = hdr.total
        parts = self.parts.held(rkey, total)
        # Complete when every part is held and this record supplied the last of them: parts supplied by
        # later records (a table ahead of a replay) complete the message when that record is replayed.
        if len(parts) < total or max(v.offset for v in parts.values()) != offset:
            return []
        closed = self.parts.close(rkey, hdr, "done", origin, t)
        self._schedule(partition, t, "msg", rkey)
        idx = self._index.get(partition)
        if idx is not None:
            idx.open.pop(rkey, None)
        return self._complete(assemble(closed, parts, numbers), origin, t, partition, rkey=rkey)

    def _close_incomplete(self, rkey: str, hdr: PartialHeader, partition: int, why: str) -> Outputs:
        """Emit what is held as incomplete now; delete it only once that output is durable."""
        total = hdr.total
        parts = self.parts.held(rkey, total)
        deadline = hdr.first + self.settings.reassembly_timeout_ms
        # deterministic: the same partial closes under the same origin whichever record or tick closes it
        origin = f"{why}|{rkey}|{hdr.first}|t"
        out = Outputs(
            self._complete(assemble(hdr, parts), origin, deadline, partition, rkey=rkey, incomplete=True)
        )
        idx = self._index.get(partition)
        if idx is not None:
            idx.open.pop(rkey, None)

        def forget() -> None:
            cur = self.parts.header(rkey)
            if cur is not None and cur.first == hdr.first and cur.is_open:
                # mark first: a cut while the parts are deleted leaves a header that says "already emitted"
                self.parts.close(rkey, cur, "timedout", origin, deadline)
                self.parts.forget(rkey, total)

        out.after_durable.append(forget)
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
        if is_receipt(esm, receipted is not None) or self._receipt_in_text(raw["carrier_id"], esm, ud, dc):
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
            numbers=raw.get("numbers"),
        )

    def _receipt_in_text(self, carrier: str, esm: int, ud: bytes, dc: int) -> bool:
        if carrier not in self.settings.receipts_in_text or esm & 0x40:
            return False
        overrides = self.settings.alphabet_overrides.get(carrier)
        try:
            return looks_like_receipt_text(decode_text(ud, dc, errors="replace", overrides=overrides).text)
        except TextDecodeError:
            return False

    def _receipt(self, raw: dict[str, Any], pdu: Any, ud: bytes, dc: int, receipted: bytes | None) -> Publish:
        overrides = self.settings.alphabet_overrides.get(raw["carrier_id"])
        try:
            text = decode_text(ud, dc, overrides=overrides).text if dc not in (2, 4) else ""
        except TextDecodeError:
            text = ud.decode("latin-1")
        state_tlv = pdu.tlv(TlvTag.message_state)
        reading = parse_receipt(
            text,
            receipted.rstrip(b"\x00").decode("ascii", "replace") if receipted is not None else None,
            state_tlv[0] if state_tlv else None,
            pdu.tlv(TlvTag.network_error_code),
        )
        message_id, state = reading["message_id"], reading["state"]
        record: DeliveryReceipt = {
            **reading,
            "receipt_id": f"dlr_{raw['carrier_id']}_{message_id}_{state}_{raw['received_at']}",
            "message_id_decimal": receipt_id_decimal(
                message_id,
                self.settings.receipt_id_forms.get(raw["carrier_id"], "auto"),
                reading["message_id_decimal"],
            ),
            "from_number": raw["source_addr"],
            "to_number": raw["destination_addr"],
            "esm_class": int(pdu.params.get("esm_class", 0)),
            "carrier_id": raw["carrier_id"],
            "route_id": raw["route_id"],
            "received_at": int(raw["received_at"]),
        }
        return Publish("receipt", message_id or raw["carrier_id"], record)

    # ---- completion, dedup, enrichment ---------------------------------------------------------------
    def _complete(
        self,
        a: Assembled,
        origin: str,
        t: int,
        partition: int,
        rkey: str | None = None,
        incomplete: bool = False,
    ) -> list[Publish]:
        """One whole (or, after a timeout, incomplete) message: dedup by carrier time ``t``, id, record."""
        meta = a.meta
        carrier = meta["carrier_id"]
        alphabet: DefaultAlphabet = self.settings.gsm_default_alphabets.get(carrier, "gsm7")  # type: ignore[assignment]
        errors: Literal["strict", "replace"] = "replace" if incomplete else "strict"
        as_raw = {
            "carrier_id": carrier,
            "route_id": meta["route_id"],
            "received_at": a.first_received_at,
            "pdu": a.payload,
        }
        try:
            decoded = decode_text(
                a.payload,
                a.data_coding,
                default_alphabet=alphabet,
                errors=errors,
                overrides=self.settings.alphabet_overrides.get(carrier),
            )
        except TextDecodeError as exc:
            reason = f"text does not decode as data_coding 0x{a.data_coding:02X}: {exc}"
            return [self.quarantine(as_raw, reason, origin, partition)]
        region = self.settings.default_regions.get(carrier)
        info = enrich(
            decoded.text if decoded.encoding != "binary" else "",
            meta["src"],
            meta["src_ton"],
            meta["src_npi"],
            meta["dst"],
            meta["dst_ton"],
            meta["dst_npi"],
            region,
            numbers=handed(a.numbers, meta["src"], meta["src_ton"], meta["dst"], meta["dst_ton"], region),
        )
        src_id = info.source.e164 or info.source.display
        dst_id = info.destination.e164 or info.destination.display
        fp = message_fingerprint(src_id, dst_id, decoded.encoding == "binary", decoded.text, a.missing)
        seen = self.dedup.check(fp, origin, t)
        if seen == "duplicate":
            self.stats.duplicates += 1
            return []
        if seen == "replay":
            self.stats.replays += 1
        else:
            self.dedup.remember(fp, SeenEntry(origin, t, partition))
            self._schedule(partition, t, "seen", fp)
        mid = message_id(fp, origin)
        if incomplete and self.settings.incomplete_policy == "dead_letter":
            reason = f"incomplete after timeout: missing parts {a.missing} of {a.total}"
            return [self.quarantine(as_raw, reason, origin, partition)]
        self.stats.messages += 1
        if incomplete:
            self.stats.incomplete += 1
        body = base64.b64encode(a.payload).decode() if decoded.encoding == "binary" else decoded.text
        record: InboundMessage = {
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
            # informational, as the schema says (assembled in the stream): the worker's clock, not part of
            # any decision, so a replay may carry another value under the same id
            "completed_at": self._now_ms(),
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
        return [Publish("inbound", dst_id, record, a.traceparents)]

    def _schedule(self, partition: int, t: int, kind: str, key: str) -> None:
        idx = self._index.get(partition)
        if idx is not None:
            heapq.heappush(idx.expiry, (t + self.settings.dedup_window_ms, kind, key))

    # ---- time ---------------------------------------------------------------------------------------
    def on_commit(self, partition: int, committed_offset: int | None) -> None:
        """The consumer committed ``committed_offset`` (the next offset to read) on ``partition``.

        Dedup entries and finished messages may only be deleted once no replay can need them: a replay starts
        at the committed offset, so expiry runs on the stream time of the records *before* it.
        """
        c = self._clocks.get(partition)
        if c is None or committed_offset is None:
            return
        while c.checkpoints and c.checkpoints[0][0] < committed_offset:
            _, c.committed_time = c.checkpoints.popleft()

    def on_tick(
        self, partition: int, caught_up: bool = False, settled: bool = False, now_ms: int | None = None
    ) -> Outputs:
        """Expire what is due in one partition, by its stream time: incomplete messages out, old state away.

        ``caught_up``: nothing of this partition is waiting to be read, so the wall clock may advance its
        stream time (else a last lonely part would never time out when traffic stops). ``settled``: caught up
        and everything read is committed, so no replay can need old state and its expiry may follow the wall
        clock too.
        """
        c = self._clocks.setdefault(partition, _PartitionClock())
        now = c.stream_time
        wall = self._now_ms() if now_ms is None else now_ms
        if caught_up or settled:
            now = wall if now is None else max(now, wall)
        idx = self._index.get(partition)
        if idx is None:
            idx = self._index[partition] = self._rebuild_index(partition)
        out = Outputs()
        if now is not None:
            timeout = self.settings.reassembly_timeout_ms
            for rkey, first in sorted(idx.open.items(), key=lambda kv: kv[1]):
                if first + timeout + self.settings.clock_skew_ms > now:
                    continue
                hdr = self.parts.header(rkey)
                if hdr is None or not hdr.is_open:
                    idx.open.pop(rkey, None)
                    continue
                out.extend_outputs(self._close_incomplete(rkey, hdr, partition, "timeout"))
        safe = c.committed_time
        if settled:
            safe = wall if safe is None else max(safe, wall)
        if safe is not None:
            horizon = safe - self.settings.clock_skew_ms
            while idx.expiry and idx.expiry[0][0] <= horizon:
                _, kind, key = heapq.heappop(idx.expiry)
                self._expire(kind, key, horizon)
        return out

    def _expire(self, kind: str, key: str, horizon: int) -> None:
        window = self.settings.dedup_window_ms
        if kind == "seen":
            # A key re-remembered later has a newer entry further back in the heap; it stays until then.
            if self.dedup.expire(key, horizon):
                self.stats.expired_entries += 1
            return
        hdr = self.parts.header(key)
        if hdr is not None and not hdr.is_open and hdr.closed_at + window <= horizon:
            self.parts.forget(key, hdr.total)
            self.stats.expired_entries += 1

    def _rebuild_index(self, partition: int) -> _PartitionIndex:
        idx = _PartitionIndex()
        window = self.settings.dedup_window_ms
        for k, v in list(self.partials.items()):
            if not k.startswith("h|") or not isinstance(v, dict):
                continue
            hdr = PartialHeader.from_table(v)
            if hdr.partition != partition:
                continue
            rkey = k[2:]
            if hdr.is_open:
                idx.open[rkey] = hdr.first
            else:
                idx.expiry.append((hdr.closed_at + window, "msg", rkey))
        for k, entry in self.dedup.entries_of(partition):
            idx.expiry.append((entry.at + window, "seen", k))
        heapq.heapify(idx.expiry)
        return idx

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def forget_partition(self, partition: int) -> None:
        """Partition revoked: another worker (or a later assignment) rebuilds from the table."""
        self._index.pop(partition, None)
        self._clocks.pop(partition, None)
        self.parts.forget_cached()
