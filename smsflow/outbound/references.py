"""Concatenation references per sender and destination, never reused while a handset may still hold parts
of the previous message with that reference.

A handset joins parts by (sender, reference); if two multipart messages of one sender to one destination
share a reference within its reassembly timeout, their parts mix. So a reference stays reserved for
`reuse_after_ms` after its use (default 24 h: longer than any handset's or SMSC's reassembly window we know
of, and than the longest validity we accept). The book is a value: `allocate` returns the new book; the
outbound stage keeps each (sender, destination) pair's state in its changelogged table (`allocate_in`). The
ledger's intents carry destination, reference and time (`Ledger.reference_uses`), enough to rebuild the
references of a destination conservatively (every sender's uses count) if the table were lost.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from smsflow.outbound.expiry import DueSet

RefBits = Literal[8, 16]
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class RefExhausted:
    destination: str
    reason: str


@dataclass(frozen=True)
class DestinationRefs:
    cursor: int = 0
    """Where the next search starts: references go round in order, so the oldest is reused first."""
    used_at: tuple[tuple[int, int], ...] = ()
    """(reference, epoch ms of its last use) for references still inside the reuse window."""


@dataclass(frozen=True)
class ReferenceBook:
    ref_bits: RefBits = 8
    reuse_after_ms: int = DAY_MS
    destinations: dict[str, DestinationRefs] = field(default_factory=dict)

    def allocate(self, destination: str, now_ms: int) -> tuple[ReferenceBook, int] | RefExhausted:
        """The next reference for `destination` that was not used in the last `reuse_after_ms`."""
        size = 1 << self.ref_bits
        refs = self._recent(destination, now_ms)
        busy = dict(refs.used_at)
        for step in range(size):
            candidate = (refs.cursor + step) % size
            if candidate not in busy:
                busy[candidate] = now_ms
                new = DestinationRefs((candidate + 1) % size, tuple(sorted(busy.items())))
                return replace(self, destinations={**self.destinations, destination: new}), candidate
        return RefExhausted(
            destination,
            f"all {size} {self.ref_bits}-bit references to {destination} were used in the last "
            f"{self.reuse_after_ms // 1000} s; use 16-bit references or wait",
        )

    def record(self, destination: str, ref: int, at_ms: int) -> ReferenceBook:
        """Note a use seen in the ledger (on a restart), so that `allocate` will not hand it out again."""
        refs = self.destinations.get(destination, DestinationRefs())
        busy = dict(refs.used_at)
        busy[ref] = max(busy.get(ref, at_ms), at_ms)
        cursor = (ref + 1) % (1 << self.ref_bits) if at_ms >= max(busy.values()) else refs.cursor
        new = DestinationRefs(cursor, tuple(sorted(busy.items())))
        return replace(self, destinations={**self.destinations, destination: new})

    def pruned(self, now_ms: int) -> ReferenceBook:
        """Without the destinations whose references have all aged out (the stage calls it on its tick, so
        the book holds only the last window's destinations)."""
        kept = {}
        for dest in self.destinations:
            refs = self._recent(dest, now_ms)
            if refs.used_at:
                kept[dest] = refs
        return replace(self, destinations=kept)

    def _recent(self, destination: str, now_ms: int) -> DestinationRefs:
        refs = self.destinations.get(destination, DestinationRefs())
        live = tuple((r, t) for r, t in refs.used_at if now_ms - t < self.reuse_after_ms)
        return DestinationRefs(refs.cursor, live)


def refs_key(sender: str, destination: str) -> str:
    """Whose references a message takes: its sender's to its destination. A handset joins the parts of a
    concatenated SM by their originator and reference (3GPP TS 23.040, 9.2.3.24.1), so messages of two
    senders never mix whatever their references, and one sender's traffic to a number cannot use up the
    references another sender needs for it (keyed by destination alone, 256 two-part messages of one tenant
    to a handset made every tenant's multipart message to it refused for 24 h)."""
    return f"{sender}|{destination}"


def allocate_in(
    table: MutableMapping[str, Any], sender: str, destination: str, now_ms: int, ref_bits: RefBits = 8
) -> int | RefExhausted:
    """Allocate the next reference from ``sender`` to ``destination`` in ``table`` (the outbound stage's
    changelogged table: JSON documents ``{"cursor", "used_at"}``) and write the pair's new state back. An
    entry keyed by the destination alone (written before references were per sender) still counts as used."""
    key = refs_key(sender, destination)
    raw = table.get(key)
    if raw is None:
        raw = table.get(destination)
    held = _refs_of(raw) if raw else DestinationRefs()
    got = ReferenceBook(ref_bits=ref_bits, destinations={key: held}).allocate(key, now_ms)
    if isinstance(got, RefExhausted):
        return RefExhausted(
            destination,
            f"all {1 << ref_bits} {ref_bits}-bit references from {sender} to {destination} were used in "
            f"the last {DAY_MS // 1000} s; send it as single messages or wait",
        )
    book, ref = got
    kept = book.destinations[key]
    table[key] = {"cursor": kept.cursor, "used_at": [list(p) for p in kept.used_at]}
    return ref


def _refs_of(doc: dict[str, Any]) -> DestinationRefs:
    return DestinationRefs(doc["cursor"], tuple((int(r), int(t)) for r, t in doc["used_at"]))


def free_at(doc: dict[str, Any], reuse_after_ms: int = DAY_MS) -> int:
    """When every reference of a table entry has aged out, so that the entry itself can go: a pair with no
    entry starts at reference 0, which is then as free as any (its last use is older than the window)."""
    return max((int(t) for _, t in doc.get("used_at", ())), default=0) + reuse_after_ms


def destination_of(key: str) -> str:
    """The destination of a table key (``refs_key``'s, or a destination alone as written before it): the
    key sms.outbound.v1 is partitioned by, so the entry's partition."""
    return key.rsplit("|", 1)[-1]


@dataclass
class RefsIndex:
    """Per partition of the references table, when each entry's references have all aged out (`DueSet`):
    the outbound stage deletes those entries on its tick, so the table holds the pairs used in the last
    `reuse_after_ms`, not every sender and destination ever sent a multipart message. Memory only, as the
    status table's `ExpiryIndex`: built from the table on the first tick after the partition is assigned,
    kept where an entry is written, dropped when the partition is revoked."""

    reuse_after_ms: int = DAY_MS
    partitions: dict[int, DueSet] = field(default_factory=dict)

    def built(self, partition: int) -> bool:
        return partition in self.partitions

    def rebuild(self, partition: int, entries: Iterable[tuple[str, dict[str, Any]]]) -> None:
        self.partitions[partition] = DueSet.of(
            (key, free_at(doc, self.reuse_after_ms)) for key, doc in entries
        )

    def note(self, partition: int, key: str, doc: dict[str, Any]) -> None:
        due = self.partitions.get(partition)
        if due is not None:
            due.set(key, free_at(doc, self.reuse_after_ms))

    def due(self, partition: int, now_ms: int, limit: int = 10_000) -> list[str]:
        due = self.partitions.get(partition)
        return due.pop_due(now_ms, limit) if due is not None else []

    def forget(self, partition: int) -> None:
        self.partitions.pop(partition, None)

    def kept(self, partition: int) -> int:
        due = self.partitions.get(partition)
        return len(due) if due is not None else 0
