"""Faust commits only offsets below which every record is acked (a fix of faust-streaming 0.15.3).

ADR 0004 rests on Faust committing the *contiguous* acked prefix of a partition: a record that is not yet
acked (an inbound event whose webhooks are in flight, a retry record waiting until it is due) must hold the
committed offset back, so that a restart reads it again. ``Consumer._new_offset`` gets this wrong by one: it
compares the lowest acked offset with the committed offset, which in Faust is the *next* offset to read, and
lets exactly one unacked record slip (``min(acked) - committed > 1``). With acked ``[102]`` and committed
``101`` (record 101 waiting) it commits 103, and record 101 is never read again: a retry due later was lost
on every restart (found by ``tests/e2e/test_retry_restart.py``). :func:`install` replaces the method with the
same one whose head check is ``min(acked) > committed``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from faust.transport.consumer import Consumer
from faust.utils.functional import consecutive_numbers

log = logging.getLogger(__name__)
_installed = False
FAUST_NEW_OFFSET = Consumer.__dict__["_new_offset"]  # the original, for tests that show the difference


def contiguous_new_offset(self: Any, tp: Any) -> int | None:
    """``Consumer._new_offset`` of faust-streaming 0.15.3, with the gap at the head detected exactly and
    skipped offsets never counted as acked."""
    acked = self._acked[tp]
    if not acked:
        return None
    gaps = self._gap.pop(tp, None)
    if gaps:
        # Faust records offsets its fetch loop jumped over as "no record here" (compaction, transaction
        # markers) and would count them as acked. smsflow's agents read neither compacted nor transactional
        # topics, so a jump means records dropped on the way to the agent (see the guard below): they stay
        # unacked, the commit waits at them and the guard re-reads them.
        spans = ", ".join(f"{g.begin}-{g.end - 1}" for g in sorted(gaps))
        log.warning("%s: the fetch skipped offsets %s; they are not committed unread", tp, spans)
    acked.sort()
    committed = self._committed_offset[tp]
    if committed is not None and acked[0] > committed:
        return None  # the record at the committed offset (the next to read) is not acked yet
    batch = next(consecutive_numbers(acked))
    acked[: len(batch)] = []
    self._acked_index[tp].difference_update(batch)
    return int(batch[-1]) + 1


FAUST_ACK = Consumer.__dict__["ack"]
_skipped_logged: set[tuple[Any, int | None]] = set()  # (tp, generation) whose skips were logged once


def ack_unless_never_taken(self: Any, message: Any) -> bool:
    """``Consumer.ack`` of faust-streaming 0.15.3, except for a record no agent ever took.

    Faust's stream loop skips a record fetched before a rebalance that reaches it after (its generation is
    stale) or while the flow is stopped, and then ACKS it (``value is skipped_value`` -> ``event.ack()``), so
    its offset joins the acked ones and is committed although no agent saw it: an SMS lost for good (found
    by tests/e2e/test_crash_consistency.py's two-worker kill test under load: two records of a partition the
    worker kept across the rebalance were fetched just before it, skipped, acked and committed; nothing in
    sms.inbound.v1, nothing in the dedup table). A record an agent takes is *tracked* first (the loop tracks
    it after the generation check), so an untracked record of an acked topic was never taken: it is left
    unacked, the commit stops at it, and it is read again (the seek after the rebalance, or the guard below:
    later records acked while the one at the committed offset never reached an agent).
    """
    app = self.app
    if (
        not message.tracked
        and not message.acked
        # the stream's skip conditions, still true at the ack that follows the skip (a record Faust acks for
        # a decode error is untracked too, but current: Faust's ack stands)
        and (message.generation_id != app.consumer_generation_id or not app.flow_control.is_active())
        and app.topics.acks_enabled_for(message.topic)
    ):
        key = (message.tp, message.generation_id)
        if key not in _skipped_logged:
            if len(_skipped_logged) > 10_000:
                _skipped_logged.clear()
            _skipped_logged.add(key)
            log.info(
                "%s: record %d fetched before the rebalance (generation %s) was skipped by Faust; "
                "it stays unacked and is read again",
                message.tp,
                message.offset,
                key[1],
            )
        return False
    return bool(FAUST_ACK(self, message))


def install() -> None:
    """Patch Faust's consumer once per process (idempotent)."""
    global _installed
    if not _installed:
        Consumer._new_offset = contiguous_new_offset  # type: ignore[method-assign]
        Consumer.ack = ack_unless_never_taken  # type: ignore[method-assign]
        _installed = True


# --- the stalled-partition guard -------------------------------------------------------------------------
#
# On a loaded machine, after a worker restart, faust-streaming 0.15.3 sometimes drops a run of fetched records
# between its fetcher and the agent (a getmany batch cut short by a generation change or a flow stop, or
# events skipped as "stale generation"), and no seek follows to read them again. The records after them are
# processed and acked, but the committed offset stays at the first dropped record for good: the dropped ones
# reach the agent only on the next restart (found by tests/e2e/test_outbound.py's kill test: receipts and
# ledger entries left unprocessed, messages wrongly expired; docs/consistency.md). Within one partition a
# stage's agent takes records in order, so "records after the committed offset are acked while the record AT
# it never reached the agent" cannot happen legitimately: the guard looks for exactly that, and when it holds
# on consecutive checks it stops the flow, seeks the partition back to its committed offset and resumes - the
# same re-read a restart would do (every stage is idempotent for re-reads, ADR 0004).


@dataclass(frozen=True)
class PartitionView:
    """What the guard sees of one partition: the committed offset (the next to read), the acked offsets
    above it, and the offsets of records an agent has taken and not yet acked."""

    committed: int | None
    acked: tuple[int, ...]
    taken: frozenset[int]
    # the fetcher's position: records below it were handed to Faust (None when unknown)
    position: int | None = None


def _head_with_agent(view: PartitionView) -> bool:
    """The record at the committed offset, or one before it, is with an agent (a webhook in flight, a retry
    waiting until due): the partition is busy, not stalled."""
    assert view.committed is not None
    return view.committed in view.taken or any(o < view.committed for o in view.taken)


def stalled(view: PartitionView) -> bool:
    """The record at the committed offset never reached an agent, while records after it were acked."""
    if view.committed is None or not view.acked:
        return False
    if min(view.acked) <= view.committed:
        return False  # the head is acked: the next commit moves on
    return not _head_with_agent(view)


def stalled_tail(view: PartitionView) -> bool:
    """The record at the committed offset was handed to Faust (the fetcher's position is past it), yet it is
    neither with an agent nor acked, and nothing after it is acked: a dropped run with no acked record after
    it to show the hole (:func:`stalled` needs one). Records after it may be with an agent: the ingest stage
    refuses those until the hole is re-read (``InOrderGate``), and records reach an agent in log order, so
    a later one taken while the committed one is not means the committed one was dropped."""
    if view.committed is None or view.position is None or view.acked:
        return False
    return view.position > view.committed and not _head_with_agent(view)


class StalledPartitionGuard:
    """Counts consecutive stalled checks per partition (same committed offset each time); ``due`` names the
    partitions to re-read once a stall has held for ``checks`` checks in a row. A partition re-read from an
    offset is re-read from the SAME offset again only after ``retry_s``: if the re-read brings nothing
    (retention deleted the records, the fetcher resets past them) or the head is merely slow to reach the
    agent (a starved worker working off a backlog), that is a slow retry, not a re-read every two checks -
    each re-read stops the whole fetch loop, which is costly under exactly that load."""

    def __init__(
        self, checks: int = 3, retry_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.checks = checks
        self._streak: dict[Any, tuple[int, int]] = {}  # tp -> (committed offset, consecutive stalled checks)
        self._reread: dict[Any, tuple[int, float]] = {}  # tp -> (committed offset, when) of the last re-read
        self.retry_s = retry_s
        self._clock = clock

    def observe(self, views: dict[Any, PartitionView]) -> dict[Any, int]:
        due: dict[Any, int] = {}
        streak: dict[Any, tuple[int, int]] = {}
        now = self._clock()
        for tp, view in views.items():
            if not (stalled(view) or stalled_tail(view)):
                continue
            assert view.committed is not None
            last = self._reread.get(tp)
            if last is not None and last[0] == view.committed and now - last[1] < self.retry_s:
                continue
            offset, count = self._streak.get(tp, (view.committed, 0))
            count = count + 1 if offset == view.committed else 1
            if count >= self.checks:
                due[tp] = view.committed
                self._reread[tp] = (view.committed, now)
                count = 0
            streak[tp] = (view.committed, count)
        self._streak = streak
        return due


def fetch_position(consumer: Any, tp: Any) -> int | None:
    """The offset of the next record aiokafka's fetcher will hand to Faust (records below it were handed
    over), read from the consumer thread's subscription state; None when it is unknown (no valid position,
    not assigned, a different driver)."""
    try:
        state = consumer._thread._consumer._subscription.subscription.assignment.state_value(tp)
        return int(state.position) if state is not None and state.has_valid_position else None
    except Exception:  # private fields of aiokafka: an unknown position means "no tail check"
        return None


def queued_offsets(conductor: Any) -> dict[Any, set[int]]:
    """Offsets of records waiting in an agent's channel queue: delivered by the fetch loop, not yet taken by
    the agent's stream (Faust counts a record as taken - ``_unacked_messages`` - only then). After a stall
    (a starved worker, a backlog) the head of a partition can wait there for seconds behind other
    partitions' records (the ingest agent's one channel carries sms.raw.v1 and its ticks); the guard counts
    them as with the agent (private fields of Faust 0.15.3's Conductor and Channel, asyncio.Queue's deque)."""
    queued: dict[Any, set[int]] = {}
    try:
        seen: set[int] = set()
        for channels in list(conductor._topic_name_index.values()):
            for channel in list(channels):
                queue = getattr(channel, "_queue", None)
                if queue is None or id(queue) in seen or not queue.qsize():
                    continue
                seen.add(id(queue))
                for event in list(queue._queue):
                    message = getattr(event, "message", None)
                    if message is not None:
                        queued.setdefault(message.tp, set()).add(message.offset)
    except Exception:  # unknown internals: nothing is known to be queued
        return {}
    return queued


def partition_views(
    consumer: Any, acking: Any = None, queued: dict[Any, set[int]] | None = None
) -> dict[Any, PartitionView]:
    """The guard's view of every partition with acks pending, and of every other assigned partition of a
    topic agents ack (``acking(topic)``; tables' changelogs are not acked and never committed) for the
    tail check (private fields of Faust 0.15.3's Consumer). Records still queued for their agent
    (``queued``, :func:`queued_offsets`) count as taken."""
    taken: dict[Any, set[int]] = {tp: set(offsets) for tp, offsets in (queued or {}).items()}
    for message in list(consumer._unacked_messages):
        if not message.acked:
            taken.setdefault(message.tp, set()).add(message.offset)
    views = {}
    for tp, acked in list(consumer._acked.items()):
        if acked:
            views[tp] = PartitionView(
                committed=consumer._committed_offset[tp],
                acked=tuple(acked),
                taken=frozenset(taken.get(tp, ())),
            )
    if acking is not None:
        for tp in consumer.assignment():
            if tp in views or not acking(tp.topic):
                continue
            committed = consumer._committed_offset.get(tp)
            if committed is None:
                continue
            views[tp] = PartitionView(
                committed=committed,
                acked=(),
                taken=frozenset(taken.get(tp, ())),
                position=fetch_position(consumer, tp),
            )
    return views


async def reread_stalled(app: Any, guard: StalledPartitionGuard) -> dict[Any, int]:
    """One check (a worker timer): re-read every partition whose stall has held long enough. Never raises:
    a failed re-read is logged and tried again on a later check (the guard must not stop a worker)."""
    consumer = app.consumer
    if not app.flow_control.is_active() or not consumer.flow_active:
        return {}  # a rebalance is under way: it seeks to the committed offsets itself
    try:
        views = partition_views(consumer, app.topics.acks_enabled_for, queued_offsets(app.topics))
        due = guard.observe(views)
        assigned = consumer.assignment()
        due = {tp: offset for tp, offset in due.items() if tp in assigned}
    except Exception:
        log.exception("stalled-partition check failed; trying again at the next check")
        return {}
    if not due:
        return {}
    log.warning(
        "records at the committed offset never reached the agent (later ones acked, or none left with it); "
        "re-reading from the committed offset: %s",
        ", ".join(f"{tp.topic}[{tp.partition}]@{offset}" for tp, offset in due.items()),
    )
    consumer.stop_flow()  # cut the fetch loop short, so no record read before the seek is handed on after it
    try:
        # in the consumer's own thread, between two fetches: a seek from this thread raced aiokafka's
        # fetcher (a KeyError in ``fetched_records`` that crashed the worker's Fetcher service, and seeks
        # the next fetch undid; tests/e2e/test_worker_pause.py). The round trip also lets the fetch loop,
        # cut short by the flow stop, park before the read offsets are set below. (The cut drops the rest
        # of its batch for OTHER partitions too; the guard finds those at its next checks. Seeking them
        # back to Faust's read offset was tried and left out: after Faust's own seek to the committed
        # offsets, which a fetch returning while the flow is stopped triggers, that offset means "next to
        # read", not "last handed on", and the seek would skip a record.)
        await consumer.seek_wait(due)
        for tp, offset in due.items():
            consumer._read_offset[tp] = offset  # set again here: the cut loop may have moved it meanwhile
            consumer._gap.pop(tp, None)  # nothing below the re-read may count as "no record here"
    except Exception:
        log.exception("re-reading %s failed; trying again at a later check", list(due))
        return {}
    finally:
        # A rebalance that began while the seek was awaited stopped the flow for itself (and suspended the
        # app's flow control): it resumes both when its recovery is done, not this timer.
        if app.flow_control.is_active():
            consumer.resume_flow()
    return due


# --- processing in log order -------------------------------------------------------------------------------
#
# The ingest stage's ids and dedup rest on every record of a partition being processed in log order, on the
# first pass as on a replay (docs/consistency.md, Invariant B: "seen at or after this record" means "this
# record was processed before"). A run Faust drops on the way to the agent breaks that: the records after it
# are processed first, the dropped ones later (re-read by the guard or a restart), and an SMS whose copies
# straddle the run is emitted under two ids. The gate refuses a record that is not the next one of its
# partition: the record is let go unprocessed and unacked (Faust forgets it), the commit stays at the first
# missing offset, and the guard's tail check re-reads from there. sms.raw.v1 has a record at every offset
# (an idempotent, non-transactional producer writes it; no compaction).


def forget_message(consumer: Any, message: Any) -> None:
    """Let a delivered record go without processing or acking it: Faust's ack (on the way out of the
    agent's batch) skips it, it is no longer "taken", and the commit cannot pass it."""
    message.acked = True
    consumer._unacked_messages.discard(message)


def admit_in_order(gate: InOrderGate, consumer: Any, message: Any, key: Any) -> bool:
    """Whether ``message`` is the next record of its partition (``key`` in ``gate``); if not (records before
    it were dropped on the way to the agent), it is let go unacked and comes again after the guard's
    re-read."""
    if gate.admit(key, message.offset, consumer._committed_offset.get(message.tp)):
        return True
    forget_message(consumer, message)
    return False


class InOrderGate:
    """Per partition, the next offset the agent may process. ``admit`` answers whether a delivered record is
    that one (or an earlier one: a replay after a seek back, processed again as a restart would).

    A gap that persists ``give_up_s`` (the guard re-reads it within seconds) means the records are gone from
    the log (retention deleted them while the group was away): the gate logs it and moves on rather than
    holding the partition for good."""

    def __init__(self, give_up_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.give_up_s = give_up_s
        self._clock = clock
        self._next: dict[Any, int] = {}
        self._gap: dict[Any, tuple[int, float]] = {}  # key -> (missing offset, since)

    def admit(self, key: Any, offset: int, committed: int | None) -> bool:
        expected = self._next.get(key, committed)
        if expected is not None and offset > expected:
            now = self._clock()
            gap = self._gap.get(key)
            if gap is None or gap[0] != expected:
                self._gap[key] = (expected, now)
                log.warning(
                    "%s: record %d arrived before %d (the fetch dropped records on the way to the agent); "
                    "it waits for the re-read from %d",
                    key,
                    offset,
                    expected,
                    expected,
                )
                return False
            if now - gap[1] < self.give_up_s:
                return False
            log.error(
                "%s: offsets %d-%d did not come back in %.0f s (deleted by retention?); processing from %d",
                key,
                expected,
                offset - 1,
                self.give_up_s,
                offset,
            )
        self._gap.pop(key, None)
        self._next[key] = offset + 1
        return True

    def forget(self, key: Any) -> None:
        """The partition was revoked: its next owner (this worker too) starts from the committed offset."""
        self._next.pop(key, None)
        self._gap.pop(key, None)
