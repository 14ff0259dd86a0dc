"""The direct reader's commit rule (streams/inbound_reader.py): only the contiguous acked prefix of each
partition may be committed, whatever order the records' deliveries finish in."""

from __future__ import annotations

import asyncio
import random

from hypothesis import given
from hypothesis import strategies as st

from streams.inbound_reader import AckedPrefix, InboundReader, deliver_group


def test_nothing_is_committable_until_the_first_record_is_acked() -> None:
    a = AckedPrefix()
    for o in (10, 11, 12):
        assert a.read(0, o)
    a.ack(0, 12)
    a.ack(0, 11)
    assert a.committable() == {}
    a.ack(0, 10)
    assert a.committable() == {0: 13}
    assert a.in_flight(0) == 0


def test_a_gap_in_the_offsets_is_not_waited_for() -> None:
    # offsets need not be consecutive (compaction, retention, transaction markers): what was read counts
    a = AckedPrefix()
    for o in (5, 9, 20):
        a.read(3, o)
    a.ack(3, 5)
    a.ack(3, 9)
    assert a.committable() == {3: 10}
    assert a.in_flight(3) == 1


def test_partitions_are_independent_and_a_commit_is_not_repeated() -> None:
    a = AckedPrefix()
    a.read(0, 1)
    a.read(1, 7)
    a.ack(1, 7)
    assert a.committable() == {1: 8}
    a.committed({1: 8})
    assert a.committable() == {}
    a.ack(0, 1)
    assert a.committable([0, 1]) == {0: 2}
    assert a.committable([1]) == {}


def test_a_commit_of_an_older_prefix_keeps_the_newer_one() -> None:
    # the prefix moved on while the producer was flushed for the commit of the older one
    a = AckedPrefix()
    a.read(0, 1)
    a.read(0, 2)
    a.ack(0, 1)
    older = a.committable()
    a.ack(0, 2)
    a.committed(older)
    assert a.committable() == {0: 3}


def test_a_record_read_again_is_refused_and_an_ack_after_forget_is_ignored() -> None:
    a = AckedPrefix()
    assert a.read(0, 4)
    assert not a.read(0, 4)
    assert not a.read(0, 2)
    a.forget([0])
    a.ack(0, 4)  # a delivery of a revoked partition finishing late
    assert a.committable() == {}
    assert a.read(0, 2)  # assigned again: read from the committed offset on


@given(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=60), st.randoms())
def test_property_the_committable_offset_never_passes_an_unacked_record(
    partitions: list[int], rnd: random.Random
) -> None:
    a = AckedPrefix()
    records: list[tuple[int, int]] = []
    next_offset: dict[int, int] = {}
    for p in partitions:
        o = next_offset.get(p, 0) + rnd.randint(1, 3)
        next_offset[p] = o
        assert a.read(p, o)
        records.append((p, o))
    order = records[:]
    rnd.shuffle(order)
    acked: set[tuple[int, int]] = set()
    for rec in order:
        a.ack(*rec)
        acked.add(rec)
        for p, upto in a.committable().items():
            # every record of p below the committable offset is acked
            assert all((p, o) in acked for q, o in records if q == p and o < upto)
            # and the first unacked record of p, if any, is not below it
            unacked = [o for q, o in records if q == p and (q, o) not in acked]
            assert not unacked or min(unacked) >= upto
    assert a.committable() == {p: o + 1 for p, o in next_offset.items()}


def test_the_group_name() -> None:
    assert deliver_group("smsflow") == "smsflow-deliver"


class _Load:
    interval_s = 0.05

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def observe(self, in_memory: int) -> None:
        pass


class _Rec:
    def __init__(self, partition: int, offset: int) -> None:
        self._p, self._o = partition, offset

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return b"x"

    def headers(self) -> list[tuple[str, bytes]]:
        return []


def _reader(load: _Load) -> tuple[InboundReader, list[int], asyncio.Event]:
    started: list[int] = []
    release = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def handle(stream, event) -> None:
        started.append(event.message.offset)
        try:
            await release.wait()
            await stream.ack(event)
        finally:
            gate.release()

    def spawn(coro) -> None:
        t = asyncio.ensure_future(coro)
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    async def flush() -> None:
        return None

    gate = asyncio.Semaphore(4096)
    r = InboundReader(
        "127.0.0.1:1",
        "app",
        handle,
        gate,
        spawn,
        flush,
        load=load,  # type: ignore[arg-type]
    )
    r.assigned.add(0)
    return r, started, release


async def test_a_saturated_loop_takes_no_more_than_the_limit_and_resumes_as_records_finish() -> None:
    load = _Load(3)
    reader, started, release = _reader(load)
    accept = asyncio.ensure_future(reader._accept([_Rec(0, o) for o in range(5)]))
    await asyncio.sleep(0.2)
    assert started == [0, 1, 2] and not accept.done()  # the rest stays in Kafka's order, not in memory
    assert reader.stats.in_flight == 3 and reader.stats.saturated_waits == 1
    release.set()  # records finish: room under the bound although it did not grow
    await asyncio.wait_for(accept, 2)
    await asyncio.sleep(0.05)
    assert started == [0, 1, 2, 3, 4] and reader.stats.in_flight == 0
    assert reader.acks.committable() == {0: 5}


async def test_the_bound_growing_lets_records_in_while_the_others_still_wait() -> None:
    # records waiting on slow endpoints leave the loop idle: the bound grows and more are taken
    load = _Load(3)
    reader, started, release = _reader(load)
    accept = asyncio.ensure_future(reader._accept([_Rec(0, o) for o in range(10)]))
    await asyncio.sleep(0.2)
    assert started == [0, 1, 2]
    load.limit = 64
    await asyncio.wait_for(accept, 2)
    await asyncio.sleep(0.05)
    assert started == list(range(10)) and reader.stats.in_flight == 10
    release.set()
