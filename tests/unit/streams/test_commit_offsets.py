"""Faust commits only the contiguous acked prefix (streams/offsets.py): an unacked record at the committed
offset holds the commit back, however many records after it are acked."""

from collections import defaultdict
from typing import Any

import pytest
from faust.types import TP as TopicPartition
from faust.types import ConsumerMessage
from intervaltree import IntervalTree

from streams.offsets import FAUST_ACK, ack_unless_never_taken, contiguous_new_offset
from streams.offsets import FAUST_NEW_OFFSET as ORIGINAL

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


# --- records Faust skips (fetched before a rebalance) must not be acked ------------------------------------
class FlowControl:
    def __init__(self, active: bool) -> None:
        self.active = active

    def is_active(self) -> bool:
        return self.active


class Topics:
    def acks_enabled_for(self, topic: str) -> bool:
        return topic == "sms.raw.v1"


class App:
    def __init__(self, generation: int, flowing: bool = True) -> None:
        self.consumer_generation_id = generation
        self.flow_control = FlowControl(flowing)
        self.topics = Topics()


class AckingConsumer:
    """The attributes Faust's ``Consumer.ack`` reads and writes."""

    ack = ack_unless_never_taken

    def __init__(self, app: App, committed: int) -> None:
        self.app = app
        self._committed_offset = {RAW: committed}
        self._acked: defaultdict[Any, list[int]] = defaultdict(list)
        self._acked_index: defaultdict[Any, set[int]] = defaultdict(set)
        self._unacked_messages: set[Any] = set()
        self._n_acked = 0
        self._waiting_for_ack = None
        self._gap: defaultdict[Any, IntervalTree] = defaultdict(IntervalTree)


RAW = TopicPartition("sms.raw.v1", 4)


def record(offset: int, generation: int, topic: str = "sms.raw.v1") -> ConsumerMessage:
    return ConsumerMessage(topic, 4, offset, 0.0, 0, None, b"k", b"v", None, generation_id=generation)


def take(consumer: AckingConsumer, message: ConsumerMessage) -> None:
    """What Faust's stream loop does with a record it hands to the agent: track it."""
    message.tracked = True
    consumer._unacked_messages.add(message)


def test_a_record_skipped_as_fetched_before_the_rebalance_is_not_acked_and_holds_the_commit() -> None:
    """The e2e finding: records 27 and 28 fetched in generation 1 reach the stream in generation 2; Faust
    skips them and acks them (``event.ack()``): with the original ack the commit passes them unread."""
    consumer = AckingConsumer(App(generation=2), committed=27)
    stale = [record(27, generation=1), record(28, generation=1)]
    for m in stale:
        assert m.ack(consumer) is False  # Faust's event.ack() -> Message.ack -> Consumer.ack
    assert consumer._acked[RAW] == []
    later = record(29, generation=2)
    take(consumer, later)
    assert later.ack(consumer) is True  # what an agent takes is acked as always
    assert consumer._acked[RAW] == [29]
    consumer._acked_index = defaultdict(set, {RAW: {29}})
    assert contiguous_new_offset(consumer, RAW) is None  # the commit stays at 27: it is read again

    original = AckingConsumer(App(generation=2), committed=27)
    for m in (record(27, generation=1), record(28, generation=1)):
        FAUST_ACK(original, m)
    assert original._acked[RAW] == [27, 28]  # why the patch exists: Faust counts them as done


def test_a_record_skipped_while_the_flow_is_stopped_is_not_acked() -> None:
    consumer = AckingConsumer(App(generation=3, flowing=False), committed=10)
    assert record(10, generation=3).ack(consumer) is False
    assert consumer._acked[RAW] == []


def test_faust_acks_that_stand_are_kept() -> None:
    """A record an agent took (tracked) is acked even after a rebalance (its work is done); an untracked
    record of the current generation (Faust acks one whose key or value did not decode) and records of
    topics without acks are Faust's business."""
    consumer = AckingConsumer(App(generation=2), committed=5)
    taken_before = record(5, generation=1)
    take(consumer, taken_before)
    assert taken_before.ack(consumer) is True
    undecodable = record(6, generation=2)
    assert undecodable.ack(consumer) is True
    assert consumer._acked[RAW] == [5, 6]
    changelog = record(7, generation=1, topic="app-ingest-seen-changelog")
    assert changelog.ack(consumer) is False and changelog.acked  # no acks for that topic, as in Faust
