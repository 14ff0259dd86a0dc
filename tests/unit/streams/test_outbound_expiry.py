"""The outbound status agent's validity tick: due messages expire, final ones never, and the table is walked
once per assignment of a partition, not on every tick (it held every message ever sent)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from smsflow.outbound.expiry import ExpiryIndex
from smsflow.outbound.submission import Plan, ledger_value
from streams.outbound import LEDGER_TOPIC, OutboundStage, _partition_of

PARTITIONS = 6
PUNCTUATION = "app-outbound-punctuation"
T = 1_000_000


class CountingTable(dict[str, Any]):
    """The status table, counting full walks (a walk per tick was the bug)."""

    walks = 0

    def items(self) -> Any:
        self.walks += 1
        return super().items()


@dataclass
class _Message:
    topic: str
    partition: int
    offset: int = 0


@dataclass
class _Event:
    message: _Message
    key: bytes | None
    value: bytes


class _Stream:
    def __init__(self, events: list[_Event]) -> None:
        self._events = events

    async def events(self) -> AsyncIterator[_Event]:
        for ev in self._events:
            yield ev


@dataclass(frozen=True)
class _TP:
    topic: str
    partition: int


def stage() -> tuple[OutboundStage, CountingTable, list[dict[str, Any]]]:
    s = OutboundStage.__new__(OutboundStage)  # the tick's path only: no app, broker or receipt index
    tracks = CountingTable()
    published: list[dict[str, Any]] = []

    async def publish(records: list[dict[str, Any]]) -> None:
        published.extend(records)

    s.tracks = tracks
    s.punctuation_name = PUNCTUATION
    s.expiry = ExpiryIndex()
    s.ctx = type("Ctx", (), {"partitions": PARTITIONS})()  # type: ignore[assignment]
    s._publish = publish  # type: ignore[method-assign]
    return s, tracks, published


def ids_on(partition: int, n: int) -> Iterator[str]:
    i = 0
    while n:
        mid = f"m{i}"
        i += 1
        if _partition_of(mid, PARTITIONS) == partition:
            n -= 1
            yield mid


def plan(mid: str, partition: int, expires_at_ms: int, no_route: str | None = None) -> _Event:
    entry = Plan(mid, "acme", 1, expires_at_ms, None, T, no_route)
    return _Event(_Message(LEDGER_TOPIC, partition), mid.encode(), ledger_value(entry))


def tick(partition: int, now_ms: int) -> _Event:
    return _Event(_Message(PUNCTUATION, partition), None, json.dumps({"now": now_ms}).encode())


def expired(published: list[dict[str, Any]]) -> list[str]:
    """Messages that ended expired, in order (a message's transitions are one per segment and the overall)."""
    return list(dict.fromkeys(r["message_id"] for r in published if r["overall"] == "expired"))


async def test_due_messages_expire_once_final_ones_never_and_ticks_do_not_walk_the_table() -> None:
    s, tracks, published = stage()
    soon, later, rejected = ids_on(2, 3)
    await s.status(_Stream([plan(soon, 2, T + 1_000), plan(later, 2, T + 5_000)]))
    await s.status(_Stream([plan(rejected, 2, T + 1_000, no_route="no route")]))
    ticks = [tick(2, T + 500), tick(2, T + 2_000), tick(2, T + 3_000), tick(2, T + 6_000), tick(2, T + 9_000)]
    await s.status(_Stream(ticks))
    assert expired(published) == [soon, later]
    assert tracks.walks == 1  # the first tick built the partition's index; the others read only due tracks


async def test_a_track_due_before_the_restart_expires_on_the_first_tick_after_it() -> None:
    s, tracks, published = stage()
    (mid,) = ids_on(4, 1)
    await s.status(_Stream([plan(mid, 4, T + 1_000)]))
    restarted, _, published = stage()
    restarted.tracks.update(tracks)  # the table as recovered from its changelog; the index is memory only
    await restarted.status(_Stream([tick(4, T + 60_000)]))
    assert expired(published) == [mid]


async def test_a_partition_revoked_and_assigned_again_is_rebuilt_from_the_table() -> None:
    s, tracks, published = stage()
    (mid,) = ids_on(1, 1)
    await s.status(_Stream([tick(1, T)]))  # built while the partition has nothing
    await s.on_partitions_revoked(None, {_TP(LEDGER_TOPIC, 1)})
    other, other_tracks, _ = stage()  # another worker writes the track while it is revoked...
    await other.status(_Stream([plan(mid, 1, T + 1_000)]))
    tracks.update(other_tracks)  # ...recovered here when the partition comes back
    await s.status(_Stream([tick(1, T + 2_000)]))
    assert expired(published) == [mid]
