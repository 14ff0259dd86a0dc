"""Multipart SMS reassembly state, one table key per part, stored by the ingest agent in a Faust table.

Keys (see docs/consistency.md for why this shape survives any crash)::

    h|<rkey>        header: {"p": partition, "first": ms, "total": n, "dc": data_coding, "meta": {...},
                              "ies": [[iei, b64], ...], "st": "open" | "done" | "timedout",
                              "xo": origin that completed it (when done), "at": record time it closed}
    s|<rkey>|<seq>  one part: {"o": offset of the record that supplied it, "d": digest, "b": b64 payload,
                               "at": record time, "tp": traceparent}

A segment writes one small key, never the whole message again (a 255-part SMS costs 255 part records plus a
few header writes on the changelog, not 255 rewrites of everything held). Each part remembers the offset of
the raw record that supplied it, so the record that completed a message is, whatever the table's flush point
after a crash, the part with the highest supplier offset: a replay re-derives the same completing origin,
hence the same message id. Completed messages keep their parts for the dedup window, so a replayed
completing record can re-emit the message and a carrier's late retransmission of a part is recognised and
dropped.

The reassembly key includes carrier, source, destination, reference size, reference and total, so equal
references from different senders or carriers never mix, while the segments of one message may arrive over
any bind of that carrier, in any order, any number of times. Text is decoded only after the parts are joined,
so a UCS-2 surrogate pair or a GSM 03.38 escape split across a segment boundary decodes right.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass
class Segment:
    carrier_id: str
    route_id: str
    source_addr: str
    dest_addr: str
    data_coding: int
    payload: bytes
    received_at: int
    ref: int | None = None
    ref_bits: int = 0  # 8, 16 (UDH IEI 0x00/0x08), 16 for SAR; 0 = single part
    total: int = 1
    seq: int = 1
    meta: dict[str, Any] = field(default_factory=dict)
    other_ies: list[tuple[int, bytes]] = field(default_factory=list)
    # the raw record's ``numbers`` (the connector's reading of the addresses); never stored in a table
    numbers: str | None = None

    @property
    def is_multipart(self) -> bool:
        return self.total > 1


def reassembly_key(seg: Segment) -> str:
    return f"{seg.carrier_id}|{seg.source_addr}|{seg.dest_addr}|{seg.ref_bits}:{seg.ref}|{seg.total}"


def header_key(rkey: str) -> str:
    return "h|" + rkey


def part_key(rkey: str, seq: int) -> str:
    return f"s|{rkey}|{seq}"


def part_digest(payload: bytes) -> str:
    return hashlib.blake2b(payload, digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class PartialHeader:
    """The ``h|<rkey>`` entry of one multipart message; ``to_table``/``from_table`` keep the stored keys
    (module docstring), so a restarted worker reads what an older one wrote."""

    partition: int
    first: int  # carrier time of the part that opened it (ms)
    total: int
    data_coding: int
    meta: dict[str, Any]
    ies: list[list[Any]]  # other UDH information elements of the opening part: [[iei, base64], ...]
    state: str  # open | done | timedout
    completed_by: str | None = None  # text of the origin it was closed under ("xo")
    closed_at: int = 0  # record time it closed ("at")

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    def to_table(self) -> dict[str, Any]:
        value: dict[str, Any] = {
            "p": self.partition,
            "first": self.first,
            "total": self.total,
            "dc": self.data_coding,
            "meta": self.meta,
            "ies": self.ies,
            "st": self.state,
        }
        if not self.is_open:
            value["xo"] = self.completed_by
            value["at"] = self.closed_at
        return value

    @classmethod
    def from_table(cls, value: dict[str, Any]) -> PartialHeader:
        p = value.get("p")
        return cls(
            partition=int(p) if p is not None else -1,
            first=int(value["first"]),
            total=int(value["total"]),
            data_coding=int(value["dc"]),
            meta=dict(value["meta"]),
            ies=list(value.get("ies", [])),
            state=str(value["st"]),
            completed_by=value.get("xo"),
            closed_at=int(value.get("at", 0) or 0),
        )


@dataclass(frozen=True, slots=True)
class HeldPart:
    """The ``s|<rkey>|<seq>`` entry: one part, and the offset of the raw record that supplied it."""

    offset: int
    digest: str
    payload_b64: str
    at: int
    traceparent: str | None

    def to_table(self) -> dict[str, Any]:
        return {
            "o": self.offset,
            "d": self.digest,
            "b": self.payload_b64,
            "at": self.at,
            "tp": self.traceparent,
        }

    @classmethod
    def from_table(cls, value: dict[str, Any]) -> HeldPart:
        return cls(
            int(value["o"]), str(value["d"]), str(value["b"]), int(value.get("at", 0)), value.get("tp")
        )


@dataclass
class Assembled:
    payload: bytes
    data_coding: int
    total: int
    first_received_at: int
    meta: dict[str, Any]
    traceparents: list[str]
    missing: list[int]
    other_ies: list[tuple[int, bytes]]
    # the ``numbers`` of the raw record that completed it (smsflow/numbers/handoff.py checks they fit)
    numbers: str | None = None


class PartStore:
    """Reads and writes the per-part reassembly state in one mapping (the ``ingest-partials`` table)."""

    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self.table = table
        # The parts of each open message, as the table holds them. Every part asks "what is held?", and
        # reading that from the table is ``total`` lookups: a 255-part SMS cost 130,000 table reads (~0.5 s
        # of the event loop, which every other partition's SMS waited for). The table is written only through
        # this store while this worker owns the partition, so a message's parts are read from it once (its
        # first part after a start or a rebalance) and kept in step with each write after that; a closed
        # message leaves the cache (its parts stay in the table until expiry, read only on replays).
        self._open: dict[str, dict[int, HeldPart]] = {}

    def header(self, rkey: str) -> PartialHeader | None:
        value = self.table.get(header_key(rkey))
        return PartialHeader.from_table(value) if value is not None else None

    def part(self, rkey: str, seq: int) -> HeldPart | None:
        cached = self._open.get(rkey)
        if cached is not None:
            return cached.get(seq)
        value = self.table.get(part_key(rkey, seq))
        return HeldPart.from_table(value) if value is not None else None

    def forget_cached(self) -> None:
        """Partitions moved: another worker may write their tables now; read them afresh when needed."""
        self._open.clear()

    def open(self, rkey: str, seg: Segment, partition: int) -> PartialHeader:
        hdr = PartialHeader(
            partition=partition,
            first=seg.received_at,
            total=seg.total,
            data_coding=seg.data_coding,
            meta=seg.meta,
            ies=[[iei, base64.b64encode(data).decode()] for iei, data in seg.other_ies],
            state="open",
        )
        self.table[header_key(rkey)] = hdr.to_table()
        return hdr

    def put_part(self, rkey: str, seg: Segment, offset: int, traceparent: str | None) -> None:
        part = HeldPart(
            offset,
            part_digest(seg.payload),
            base64.b64encode(seg.payload).decode(),
            seg.received_at,
            traceparent,
        )
        self.table[part_key(rkey, seg.seq)] = part.to_table()
        cached = self._open.get(rkey)
        if cached is not None:
            cached[seg.seq] = part

    def held(self, rkey: str, total: int) -> dict[int, HeldPart]:
        """The parts present, by sequence number (a copy: the caller may keep it across writes)."""
        cached = self._open.get(rkey)
        if cached is None:
            # a bounded scan (``total`` is capped at 255), once per message and process
            cached = {}
            for seq in range(1, total + 1):
                v = self.table.get(part_key(rkey, seq))
                if v is not None:
                    cached[seq] = HeldPart.from_table(v)
            self._open[rkey] = cached
        return dict(cached)

    def close(self, rkey: str, hdr: PartialHeader, state: str, origin: str | None, at: int) -> PartialHeader:
        closed = replace(hdr, state=state, completed_by=origin, closed_at=at)
        self.table[header_key(rkey)] = closed.to_table()
        self._open.pop(rkey, None)
        return closed

    def drop_parts(self, rkey: str, total: int) -> None:
        self._open.pop(rkey, None)
        for seq in range(1, total + 1):
            k = part_key(rkey, seq)
            if k in self.table:
                del self.table[k]

    def forget(self, rkey: str, total: int) -> None:
        """Delete a message's parts, then its header (a cut in between leaves a header saying what to do)."""
        self.drop_parts(rkey, total)
        k = header_key(rkey)
        if k in self.table:
            del self.table[k]


def assemble(hdr: PartialHeader, parts: dict[int, HeldPart], numbers: str | None = None) -> Assembled:
    """Join the held parts in sequence order (all of them, or what there is after a timeout). ``numbers``: the
    raw record's of the part that completed it (every part has the message's address texts: they are in the
    reassembly key; smsflow/numbers/handoff.py checks the rest)."""
    total = hdr.total
    data = b"".join(base64.b64decode(parts[i].payload_b64) for i in range(1, total + 1) if i in parts)
    missing = [i for i in range(1, total + 1) if i not in parts]
    # traces in arrival order: the part supplied first (lowest offset) leads
    ordered = sorted(parts.values(), key=lambda v: v.offset)
    tps: list[str] = []
    for v in ordered:
        tp = v.traceparent
        if tp and tp not in tps:
            tps.append(tp)
    return Assembled(
        payload=data,
        data_coding=hdr.data_coding,
        total=total,
        first_received_at=hdr.first,
        meta=dict(hdr.meta),
        traceparents=tps,
        missing=missing,
        other_ies=[(int(i), base64.b64decode(d)) for i, d in hdr.ies],
        numbers=numbers,
    )


def single(seg: Segment, traceparent: str | None) -> Assembled:
    return Assembled(
        payload=seg.payload,
        data_coding=seg.data_coding,
        total=1,
        first_received_at=seg.received_at,
        meta=dict(seg.meta),
        traceparents=[traceparent] if traceparent else [],
        missing=[],
        other_ies=list(seg.other_ies),
        numbers=seg.numbers,
    )


def payload_size(parts: dict[int, HeldPart]) -> int:
    return sum(len(v.payload_b64) * 3 // 4 for v in parts.values())
