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

from typing import Any

from faust.transport.consumer import Consumer
from faust.utils.functional import consecutive_numbers

_installed = False
FAUST_NEW_OFFSET = Consumer.__dict__["_new_offset"]  # the original, for tests that show the difference


def contiguous_new_offset(self: Any, tp: Any) -> int | None:
    """``Consumer._new_offset`` of faust-streaming 0.15.3, with the gap at the head detected exactly."""
    acked = self._acked[tp]
    if not acked:
        return None
    max_offset = max(acked)
    gap_for_tp = self._gap[tp]
    if gap_for_tp:
        # offsets known to hold no record (compaction, transaction markers) count as acked
        candidates = sorted(gap_for_tp.overlap(0, max_offset), key=lambda x: x.begin)
        if candidates:
            stuff_to_add: list[int] = []
            for entry in candidates:
                stuff_to_add.extend(range(entry.begin, entry.end))
            new_max_offset = max(stuff_to_add[-1], max_offset + 1)
            acked.extend(stuff_to_add)
            gap_for_tp.chop(0, new_max_offset)
    acked.sort()
    committed = self._committed_offset[tp]
    if committed is not None and acked[0] > committed:
        return None  # the record at the committed offset (the next to read) is not acked yet
    batch = next(consecutive_numbers(acked))
    acked[: len(batch)] = []
    self._acked_index[tp].difference_update(batch)
    return int(batch[-1]) + 1


def install() -> None:
    """Patch Faust's consumer once per process (idempotent)."""
    global _installed
    if not _installed:
        Consumer._new_offset = contiguous_new_offset  # type: ignore[method-assign]
        _installed = True
