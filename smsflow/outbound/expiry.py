"""Which messages' validity is due, and which finished tracks may leave the status table, per partition,
without walking every track ever.

The validity tick used to read every track in the table (finished ones included) and hash each key to find
its partition: CPU per tick grew with every message ever sent. `ExpiryIndex` keeps, per partition, a heap of
(expires_at_ms, message id) of the tracks that are NOT final, so a tick costs the tracks that are due.

And the table itself grew with every message ever sent (memory, and the changelog a restarted worker reads
before it works). A final track is kept `retention_ms` after the later of its validity and its last change,
then pruned (`prunable`): by then no ledger entry can still name it (sms.outbound.ledger.v1 keeps 4 days; the
receipts of a message are matched through the outcomes the ledger holds), and its statuses stay in
sms.outbound.status.v1 for the API. A final track can still change (a late receipt turns `expired` into
`delivered`): its prune time moves with it.

It is memory only: a partition's index is built once from the table's tracks after the partition is
(re)assigned (`rebuild`), kept up to date where tracks are written (`note`), and dropped when the partition is
revoked (`forget`), since another worker may change its tracks meanwhile. A track due while no worker ran is
in the table, so the first tick after recovery rebuilds the index and expires it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

# A final track is kept this long after the later of its validity and its last change (see the docstring).
TRACK_RETENTION_MS = 5 * 24 * 3600 * 1000


@dataclass
class DueSet:
    """Keys with a time each, handed out once their time has passed: a heap and the live time per key (a
    heap entry that disagrees with it is stale: the key was set again, or discarded, and is dropped when it
    comes up)."""

    heap: list[tuple[int, str]] = field(default_factory=list)
    at: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, entries: Iterable[tuple[str, int]]) -> DueSet:
        due = cls()
        for key, at in entries:
            due.at[key] = at
        due.heap = [(at, key) for key, at in due.at.items()]
        heapq.heapify(due.heap)
        return due

    def set(self, key: str, at: int) -> None:
        if self.at.get(key) != at:
            self.at[key] = at
            heapq.heappush(self.heap, (at, key))

    def discard(self, key: str) -> None:
        self.at.pop(key, None)

    def pop_due(self, now: int, limit: int | None = None) -> list[str]:
        """The keys whose time is ``now`` or earlier (at most ``limit``), removed."""
        out: list[str] = []
        heap, live = self.heap, self.at
        while heap and heap[0][0] <= now and (limit is None or len(out) < limit):
            at, key = heapq.heappop(heap)
            if live.get(key) == at:
                del live[key]
                out.append(key)
        return out

    def __len__(self) -> int:
        return len(self.at)


@dataclass
class _PartitionIndex:
    due: DueSet = field(default_factory=DueSet)
    """Non-final tracks by expires_at_ms."""
    prune: DueSet = field(default_factory=DueSet)
    """Final tracks by the time they may be deleted."""


# (message id, expires_at_ms, final) or with the track's last change: (..., settled_at_ms)
TrackFacts = tuple[str, int, bool] | tuple[str, int, bool, int]


@dataclass
class ExpiryIndex:
    retention_ms: int = TRACK_RETENTION_MS
    partitions: dict[int, _PartitionIndex] = field(default_factory=dict)

    def built(self, partition: int) -> bool:
        return partition in self.partitions

    def rebuild(self, partition: int, tracks: Iterable[TrackFacts]) -> None:
        """The partition's index from its tracks, as (message id, expires_at_ms, final[, settled_at_ms])."""
        due: list[tuple[str, int]] = []
        prune: list[tuple[str, int]] = []
        for facts in tracks:
            mid, expires_at_ms, final = facts[0], facts[1], facts[2]
            if not final:
                due.append((mid, expires_at_ms))
            else:
                prune.append((mid, self.prune_time(expires_at_ms, facts[3] if len(facts) > 3 else 0)))
        self.partitions[partition] = _PartitionIndex(DueSet.of(due), DueSet.of(prune))

    def prune_time(self, expires_at_ms: int, settled_at_ms: int | None) -> int:
        """When a final track with this validity and last change may be deleted."""
        return max(expires_at_ms, settled_at_ms or 0) + self.retention_ms

    def note(
        self, partition: int, mid: str, expires_at_ms: int, final: bool, settled_at_ms: int | None = None
    ) -> None:
        """A track was written (``settled_at_ms``: its last change). Before the partition is built, it is left
        to `rebuild`."""
        index = self.partitions.get(partition)
        if index is None:
            return
        if final:
            index.due.discard(mid)
            index.prune.set(mid, self.prune_time(expires_at_ms, settled_at_ms))
        else:
            index.prune.discard(mid)
            index.due.set(mid, expires_at_ms)

    def prunable(self, partition: int, now_ms: int, limit: int = 10_000) -> list[str]:
        """Final tracks whose retention has passed by `now_ms` (at most ``limit``: the rest on the next tick),
        removed from the index: the caller deletes them from the table. An unbuilt partition has none."""
        index = self.partitions.get(partition)
        return index.prune.pop_due(now_ms, limit) if index is not None else []

    def due(self, partition: int, now_ms: int) -> list[str]:
        """The message ids whose validity has passed by `now_ms`, removed from the index (the caller expires
        them, which makes them final). An unbuilt partition has none: build it first."""
        index = self.partitions.get(partition)
        return index.due.pop_due(now_ms) if index is not None else []

    def forget(self, partition: int) -> None:
        self.partitions.pop(partition, None)

    def pending(self, partition: int) -> int:
        """Non-final tracks indexed for the partition (for tests and metrics)."""
        index = self.partitions.get(partition)
        return len(index.due) if index is not None else 0

    def kept(self, partition: int) -> int:
        """Final tracks indexed for the partition, waiting for their retention to pass."""
        index = self.partitions.get(partition)
        return len(index.prune) if index is not None else 0


__all__ = ["DueSet", "ExpiryIndex"]
