"""Which messages' validity is due, per partition of the status table, without walking every track ever.

The validity tick used to read every track in the table (finished ones included) and hash each key to find
its partition: CPU per tick grew with every message ever sent. `ExpiryIndex` keeps, per partition, a heap of
(expires_at_ms, message id) of the tracks that are NOT final, so a tick costs the tracks that are due.

It is memory only: a partition's index is built once from the table's tracks after the partition is
(re)assigned (`rebuild`), kept up to date where tracks are written (`note`), and dropped when the partition is
revoked (`forget`), since another worker may change its tracks meanwhile. A track due while no worker ran is
in the table, so the first tick after recovery rebuilds the index and expires it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class _PartitionIndex:
    heap: list[tuple[int, str]] = field(default_factory=list)
    due_at: dict[str, int] = field(default_factory=dict)
    """The live entry per message: a heap entry that disagrees with it is stale (re-noted or finished)."""


@dataclass
class ExpiryIndex:
    partitions: dict[int, _PartitionIndex] = field(default_factory=dict)

    def built(self, partition: int) -> bool:
        return partition in self.partitions

    def rebuild(self, partition: int, tracks: Iterable[tuple[str, int, bool]]) -> None:
        """The partition's index from its tracks, as (message id, expires_at_ms, final)."""
        index = _PartitionIndex()
        for mid, expires_at_ms, final in tracks:
            if not final:
                index.due_at[mid] = expires_at_ms
                index.heap.append((expires_at_ms, mid))
        heapq.heapify(index.heap)
        self.partitions[partition] = index

    def note(self, partition: int, mid: str, expires_at_ms: int, final: bool) -> None:
        """A track was written. Before the partition is built, it is left to `rebuild`."""
        index = self.partitions.get(partition)
        if index is None:
            return
        if final:
            index.due_at.pop(mid, None)  # its heap entry goes stale and is dropped when it comes due
            return
        if index.due_at.get(mid) != expires_at_ms:
            index.due_at[mid] = expires_at_ms
            heapq.heappush(index.heap, (expires_at_ms, mid))

    def due(self, partition: int, now_ms: int) -> list[str]:
        """The message ids whose validity has passed by `now_ms`, removed from the index (the caller expires
        them, which makes them final). An unbuilt partition has none: build it first."""
        index = self.partitions.get(partition)
        if index is None:
            return []
        out: list[str] = []
        while index.heap and index.heap[0][0] <= now_ms:
            expires_at_ms, mid = heapq.heappop(index.heap)
            if index.due_at.get(mid) == expires_at_ms:
                del index.due_at[mid]
                out.append(mid)
        return out

    def forget(self, partition: int) -> None:
        self.partitions.pop(partition, None)

    def pending(self, partition: int) -> int:
        """Non-final tracks indexed for the partition (for tests and metrics)."""
        index = self.partitions.get(partition)
        return len(index.due_at) if index is not None else 0


__all__ = ["ExpiryIndex"]
