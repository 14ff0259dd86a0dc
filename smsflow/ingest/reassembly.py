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
from dataclasses import dataclass, field
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


class PartStore:
    """Reads and writes the per-part reassembly state in one mapping (the ``ingest-partials`` table)."""

    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self.table = table

    def header(self, rkey: str) -> dict[str, Any] | None:
        return self.table.get(header_key(rkey))

    def part(self, rkey: str, seq: int) -> dict[str, Any] | None:
        return self.table.get(part_key(rkey, seq))

    def open(self, rkey: str, seg: Segment, partition: int) -> dict[str, Any]:
        hdr = {
            "p": partition,
            "first": seg.received_at,
            "total": seg.total,
            "dc": seg.data_coding,
            "meta": seg.meta,
            "ies": [[iei, base64.b64encode(data).decode()] for iei, data in seg.other_ies],
            "st": "open",
        }
        self.table[header_key(rkey)] = hdr
        return hdr

    def put_part(self, rkey: str, seg: Segment, offset: int, traceparent: str | None) -> None:
        self.table[part_key(rkey, seg.seq)] = {
            "o": offset,
            "d": part_digest(seg.payload),
            "b": base64.b64encode(seg.payload).decode(),
            "at": seg.received_at,
            "tp": traceparent,
        }

    def held(self, rkey: str, total: int) -> dict[int, dict[str, Any]]:
        """The parts present, by sequence number (a bounded scan: ``total`` is capped at 255)."""
        out: dict[int, dict[str, Any]] = {}
        for seq in range(1, total + 1):
            v = self.table.get(part_key(rkey, seq))
            if v is not None:
                out[seq] = v
        return out

    def close(
        self, rkey: str, hdr: dict[str, Any], state: str, origin: str | None, at: int
    ) -> dict[str, Any]:
        closed = {**hdr, "st": state, "xo": origin, "at": at}
        self.table[header_key(rkey)] = closed
        return closed

    def drop_parts(self, rkey: str, total: int) -> None:
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


def assemble(hdr: dict[str, Any], parts: dict[int, dict[str, Any]]) -> Assembled:
    """Join the held parts in sequence order (all of them, or what there is after a timeout)."""
    total = int(hdr["total"])
    data = b"".join(base64.b64decode(parts[i]["b"]) for i in range(1, total + 1) if i in parts)
    missing = [i for i in range(1, total + 1) if i not in parts]
    # traces in arrival order: the part supplied first (lowest offset) leads
    ordered = sorted(parts.values(), key=lambda v: int(v["o"]))
    tps: list[str] = []
    for v in ordered:
        tp = v.get("tp")
        if tp and tp not in tps:
            tps.append(tp)
    return Assembled(
        payload=data,
        data_coding=int(hdr["dc"]),
        total=total,
        first_received_at=int(hdr["first"]),
        meta=dict(hdr["meta"]),
        traceparents=tps,
        missing=missing,
        other_ies=[(int(i), base64.b64decode(d)) for i, d in hdr.get("ies", [])],
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
    )


def payload_size(parts: dict[int, dict[str, Any]]) -> int:
    return sum(len(v["b"]) * 3 // 4 for v in parts.values())
