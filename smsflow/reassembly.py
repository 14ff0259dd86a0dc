"""Multipart SMS reassembly as pure state transitions, stored by the ingest agent in a Faust table.

State for one message in flight is a JSON-able dict (it goes to the table's changelog)::

    {"p": partition, "first": ms, "total": n, "dc": data_coding, "parts": {"1": b64, ...},
     "meta": {...first segment's addressing...}, "tp": [traceparent, ...], "ies": [[iei, b64], ...]}

The reassembly key (``reassembly_key``) includes carrier, source, destination, reference size, reference and
total, so equal references from different senders or carriers never mix, while the segments of one message
may arrive over any bind of that carrier, in any order, any number of times.

Text is decoded only after the parts are joined, so a UCS-2 surrogate pair or a GSM 03.38 escape split across
a segment boundary decodes right.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from enum import Enum
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


def part_digest(payload: bytes) -> str:
    return hashlib.blake2b(payload, digest_size=8).hexdigest()


class Outcome(Enum):
    PENDING = "pending"  # stored, waiting for more parts
    COMPLETE = "complete"  # all parts present: see Assembled
    DUPLICATE_PART = "duplicate_part"  # this exact part was already held: dropped
    CONFLICT = "conflict"  # same seq, different bytes: the carrier reused the reference


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
    part_digests: dict[str, str]


def new_state(seg: Segment, partition: int, traceparent: str | None) -> dict[str, Any]:
    return {
        "p": partition,
        "first": seg.received_at,
        "total": seg.total,
        "dc": seg.data_coding,
        "parts": {},
        "meta": seg.meta,
        "tp": [],
        "ies": [[iei, base64.b64encode(data).decode()] for iei, data in seg.other_ies],
    }


def add_segment(
    state: dict[str, Any] | None, seg: Segment, partition: int, traceparent: str | None
) -> tuple[dict[str, Any], Outcome]:
    """Add one segment. Returns the new state and what happened; never mutates ``state``."""
    st = (
        new_state(seg, partition, traceparent)
        if state is None
        else {**state, "parts": dict(state["parts"]), "tp": list(state["tp"])}
    )
    key = str(seg.seq)
    encoded = base64.b64encode(seg.payload).decode()
    held = st["parts"].get(key)
    if held is not None:
        return st, (Outcome.DUPLICATE_PART if held == encoded else Outcome.CONFLICT)
    st["parts"][key] = encoded
    st["first"] = min(st["first"], seg.received_at)
    if traceparent and traceparent not in st["tp"]:
        st["tp"].append(traceparent)
    if len(st["parts"]) == st["total"]:
        return st, Outcome.COMPLETE
    return st, Outcome.PENDING


def assemble(state: dict[str, Any]) -> Assembled:
    """Join the held parts in sequence order (all of them, or what there is after a timeout)."""
    total = int(state["total"])
    parts: dict[str, str] = state["parts"]
    data = b"".join(base64.b64decode(parts[str(i)]) for i in range(1, total + 1) if str(i) in parts)
    missing = [i for i in range(1, total + 1) if str(i) not in parts]
    return Assembled(
        payload=data,
        data_coding=int(state["dc"]),
        total=total,
        first_received_at=int(state["first"]),
        meta=dict(state["meta"]),
        traceparents=list(state["tp"]),
        missing=missing,
        other_ies=[(int(i), base64.b64decode(d)) for i, d in state.get("ies", [])],
        part_digests={k: part_digest(base64.b64decode(v)) for k, v in parts.items()},
    )


def is_expired(state: dict[str, Any], now_ms: int, timeout_ms: int) -> bool:
    return now_ms - int(state["first"]) >= timeout_ms
