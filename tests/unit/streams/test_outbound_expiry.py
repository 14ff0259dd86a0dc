"""The outbound status agent's validity tick: due messages expire, final ones never, and the table is walked
once per assignment of a partition, not on every tick (it held every message ever sent)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from smsflow.logsummary import SummarizedLog
from smsflow.outbound.expiry import ExpiryIndex
from smsflow.outbound.references import DAY_MS, RefsIndex, allocate_in, refs_key
from smsflow.outbound.submission import Plan, ReceiptMatch, ledger_value
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
    s.skips = SummarizedLog(logging.getLogger("streams.outbound"))
    s.punctuation_name = PUNCTUATION
    s.expiry = ExpiryIndex()
    s.now_ms = lambda: T  # type: ignore[method-assign]
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


def receipt(mid: str, partition: int, at_ms: int) -> _Event:
    entry = ReceiptMatch(mid, 1, at_ms, "delivered", None, "carrier-a", "c-1")
    return _Event(_Message(LEDGER_TOPIC, partition), mid.encode(), ledger_value(entry))


async def test_finished_tracks_leave_the_table_after_their_retention_and_open_ones_stay() -> None:
    s, tracks, _ = stage()
    s.expiry = ExpiryIndex(retention_ms=10_000)
    rejected, expiring, open_ = ids_on(3, 3)
    await s.status(_Stream([plan(rejected, 3, T + 1_000, no_route="no route")]))  # final at T
    await s.status(_Stream([plan(expiring, 3, T + 2_000), plan(open_, 3, T + 100_000)]))
    await s.status(_Stream([tick(3, T + 5_000)]))  # builds the index; `expiring` expires at T + 5 s
    assert set(tracks) == {rejected, expiring, open_}
    await s.status(_Stream([tick(3, T + 10_999)]))
    assert set(tracks) == {rejected, expiring, open_}  # the rejection's validity ran until T + 1 s
    await s.status(_Stream([tick(3, T + 11_000)]))
    assert set(tracks) == {expiring, open_}
    await s.status(_Stream([tick(3, T + 15_000)]))  # expired at T + 5 s: kept until T + 15 s
    assert set(tracks) == {open_}
    await s.status(_Stream([tick(3, T + 99_000)]))
    assert set(tracks) == {open_}  # not final: never pruned before its validity makes it final
    assert tracks.walks == 1  # pruning reads the index, not the table


async def test_a_plan_older_than_the_retention_is_not_tracked_again_nor_are_its_later_entries() -> None:
    s, tracks, published = stage()
    s.expiry = ExpiryIndex(retention_ms=10_000)
    mid, fresh = ids_on(5, 2)
    await s.status(_Stream([plan(mid, 5, T + 1_000), tick(5, T + 2_000)]))  # expired at T + 2 s
    await s.status(_Stream([tick(5, T + 12_000)]))
    assert mid not in tracks
    # a ledger read again from its start (a reset group): the pruned message's plan is older than any track
    # is kept, so its first statuses are not published a second time; its later entries find no track
    s.now_ms = lambda: T + 12_000  # type: ignore[method-assign]
    before = len(published)
    await s.status(_Stream([plan(mid, 5, T + 1_000), receipt(mid, 5, T + 1_500)]))
    assert mid not in tracks and len(published) == before
    # a plan within the retention is tracked as before (the helper plans at T)
    s.now_ms = lambda: T + 9_999  # type: ignore[method-assign]
    await s.status(_Stream([plan(fresh, 5, T + 100_000, no_route="no route")]))
    assert fresh in tracks and published[-1]["message_id"] == fresh


async def test_a_ledger_read_again_logs_a_summary_not_a_line_per_skipped_entry(caplog: Any) -> None:
    s, tracks, published = stage()
    s.expiry = ExpiryIndex(retention_ms=10_000)
    s.now_ms = lambda: T + 100_000  # type: ignore[method-assign]
    clock = [0.0]
    s.skips = SummarizedLog(logging.getLogger("streams.outbound"), interval_s=60, clock=lambda: clock[0])
    old = list(ids_on(0, 500))
    # a reset group reads the ledger from its start: 500 plans past the retention, each with a receipt
    events = [e for mid in old for e in (plan(mid, 0, T + 1_000), receipt(mid, 0, T + 1_500))]
    with caplog.at_level(logging.INFO, logger="streams.outbound"):
        await s.status(_Stream(events))
        lines = [r.getMessage() for r in caplog.records if r.name == "streams.outbound"]
        assert len(lines) == 2  # the first of each kind, as it was
        assert not tracks and not published
        clock[0] = 61.0  # the interval has passed...
        await s.status(_Stream([tick(0, T + 100_000)]))  # ...and the agent's next tick says how many more
    summaries = [r.getMessage() for r in caplog.records if "not logged one by one" in r.getMessage()]
    assert sorted(summaries) == [
        "499 more ledger entries skipped (before_plan) in the last 61 s (not logged one by one)",
        "499 more ledger entries skipped (plan_past_retention) in the last 61 s (not logged one by one)",
    ]


async def test_after_a_restart_the_rebuilt_index_keeps_and_prunes_by_the_tracks_last_change() -> None:
    s, tracks, _ = stage()
    s.expiry = ExpiryIndex(retention_ms=10_000)
    rejected, expired_late = ids_on(0, 2)
    await s.status(_Stream([plan(rejected, 0, T + 1_000, no_route="no route")]))
    # valid until T + 2 s, expired by the tick at T + 5 s: its last change is T + 5 s, kept until T + 15 s
    await s.status(_Stream([plan(expired_late, 0, T + 2_000), tick(0, T + 5_000)]))
    restarted, table, _ = stage()
    restarted.expiry = ExpiryIndex(retention_ms=10_000)
    table.update(tracks)  # the table as recovered from its changelog; the index is memory only
    await restarted.status(_Stream([tick(0, T + 13_000)]))
    assert set(table) == {expired_late}
    await restarted.status(_Stream([tick(0, T + 15_000)]))
    assert set(table) == set()


async def test_the_table_decides_when_the_index_says_a_track_may_go_too_early() -> None:
    s, tracks, _ = stage()
    s.expiry = ExpiryIndex(retention_ms=10_000)
    (mid,) = ids_on(2, 1)
    await s.status(_Stream([tick(2, T), plan(mid, 2, T + 2_000), tick(2, T + 5_000)]))  # last change T + 5 s
    s.expiry.note(2, mid, T + 2_000, True, 0)  # an index behind the table: it would delete at T + 12 s
    await s.status(_Stream([tick(2, T + 12_000)]))
    assert mid in tracks
    await s.status(_Stream([tick(2, T + 15_000)]))
    assert mid not in tracks


def refs_stage() -> tuple[OutboundStage, CountingTable]:
    """The requests agent's tick path: the references table and its index."""
    s = OutboundStage.__new__(OutboundStage)
    s.refs = table = CountingTable()
    s.refs_index = RefsIndex()
    s.punctuation_name = PUNCTUATION
    s.ctx = type("Ctx", (), {"partitions": PARTITIONS})()  # type: ignore[assignment]
    return s, table


def destinations_on(partition: int, n: int) -> list[str]:
    out, i = [], 0
    while len(out) < n:
        to = f"+852910{i:05d}"
        i += 1
        if _partition_of(to, PARTITIONS) == partition:
            out.append(to)
    return out


R = 1_000_000_000  # reference-table times (epoch ms)


async def test_a_tick_deletes_its_partitions_aged_out_entries_only_and_walks_the_table_once() -> None:
    s, table = refs_stage()
    old_here, recent_here = destinations_on(2, 2)
    (old_elsewhere,) = destinations_on(3, 1)
    allocate_in(table, "ACME", old_here, R)
    allocate_in(table, "ACME", old_elsewhere, R)
    allocate_in(table, "ACME", recent_here, R + DAY_MS)  # used again a day later
    table[old_here] = {"cursor": 1, "used_at": [[0, R]]}  # a key by destination alone
    await s.requests(_Stream([tick(2, R + DAY_MS - 1)]))
    assert len(table) == 4
    await s.requests(_Stream([tick(2, R + DAY_MS)]))
    assert set(table) == {refs_key("ACME", old_elsewhere), refs_key("ACME", recent_here)}
    await s.requests(_Stream([tick(2, R + 3 * DAY_MS)]))
    assert set(table) == {refs_key("ACME", old_elsewhere)}  # partition 3 is another tick's
    assert table.walks == 1


async def test_the_table_decides_when_the_index_says_an_entry_may_go_too_early() -> None:
    s, table = refs_stage()
    (to,) = destinations_on(1, 1)
    await s.requests(_Stream([tick(1, R)]))  # built (empty)
    allocate_in(table, "ACME", to, R + DAY_MS)
    key = refs_key("ACME", to)
    s.refs_index.note(1, key, {"cursor": 0, "used_at": [[0, R]]})  # behind the table
    await s.requests(_Stream([tick(1, R + DAY_MS + 10)]))
    assert key in table
    await s.requests(_Stream([tick(1, R + 2 * DAY_MS)]))
    assert key not in table
