"""Faust commits only the contiguous acked prefix (streams/offsets.py): an unacked record at the committed
offset holds the commit back, however many records after it are acked."""

from collections import defaultdict
from typing import Any

import pytest
from intervaltree import IntervalTree

from streams.offsets import FAUST_NEW_OFFSET as ORIGINAL
from streams.offsets import contiguous_new_offset

TP = ("sms.webhook.retry.v1", 0)


class ConsumerState:
    """The attributes ``_new_offset`` reads, as Faust keeps them."""

    def __init__(self, committed: int | None, acked: list[int], gaps: list[tuple[int, int]] = ()) -> None:
        self._committed_offset: dict[Any, int | None] = {TP: committed}
        self._acked: defaultdict[Any, list[int]] = defaultdict(list, {TP: list(acked)})
        self._acked_index: defaultdict[Any, set[int]] = defaultdict(set, {TP: set(acked)})
        self._gap: defaultdict[Any, IntervalTree] = defaultdict(IntervalTree)
        for begin, end in gaps:
            self._gap[TP].addi(begin, end)


@pytest.mark.parametrize(
    "committed, acked, gaps, expected",
    [
        (101, [102], [], None),  # record 101 waits (e.g. a retry due in hours): nothing more is committed
        (101, [102, 103, 104], [], None),
        (101, [101, 102, 104], [], 103),  # up to the first hole
        (None, [5, 6, 7], [], 8),  # nothing committed yet: the first run
        # offsets the fetch jumped over are not "no record here": smsflow's agents read no compacted or
        # transactional topic, so they were dropped on the way to the agent; the commit waits (the guard
        # re-reads them)
        (101, [103], [(101, 103)], None),
        (101, [101, 103], [(102, 103)], 102),
    ],
)
def test_commit_stops_at_the_first_unacked_record(
    committed: int | None, acked: list[int], gaps: list[tuple[int, int]], expected: int | None
) -> None:
    assert contiguous_new_offset(ConsumerState(committed, acked, gaps), TP) == expected


def test_faust_original_lets_one_unacked_record_slip() -> None:
    """Why the fix exists: the original commits past the waiting record 101, so a restart never reads it."""
    assert ORIGINAL(ConsumerState(101, [102]), TP) == 103
