"""The connector submit path's pieces that need no SMSC: the OTP-first window, the commit point, the PDU."""

import asyncio
from typing import Any

from connectors.smpp.submit import PriorityWindow, _Progress, submit_pdu
from smsflow.outbound.submission import Candidate, Submission
from smsflow.smpp.pdu import decode_pdu, encode_pdu


async def test_the_window_lets_otp_in_before_bulk_that_waited_longer():
    window = PriorityWindow(1)
    await window.acquire(2)  # the one slot is taken
    order: list[str] = []

    async def wait(name: str, rank: int) -> None:
        await window.acquire(rank)
        order.append(name)
        window.release()

    bulk = asyncio.create_task(wait("bulk", 2))
    await asyncio.sleep(0)
    otp = asyncio.create_task(wait("otp", 0))
    await asyncio.sleep(0)
    window.release()
    await asyncio.gather(bulk, otp)
    assert order == ["otp", "bulk"] and window.free == 1


def test_offsets_commit_only_past_the_finished_prefix():
    p = _Progress()
    for off in (5, 6, 7):
        p.take(off)
    p.finish(6)
    assert p.commit_point() is None  # 5 is still in flight: a crash must replay it
    p.finish(5)
    assert p.commit_point() == 7
    p.finish(7)
    assert p.commit_point() == 8


def test_submit_sm_carries_the_segment_as_encoded():
    sub = Submission(
        "m",
        1,
        2,
        "+85291234567",
        "ACME",
        "alphanumeric",
        8,
        0x40,
        b"\x05\x00\x03\x07\x02\x01\x4f\x60",
        "otp",
        1_796_000_000_000,
        7,
        (Candidate("route-0", "carrier-0"),),
    )
    pdu = decode_pdu(encode_pdu(submit_pdu(sub, sub.expires_at_ms)))
    p = pdu.params
    assert (p["source_addr"], p["source_addr_ton"], p["destination_addr"]) == ("ACME", 5, "85291234567")
    assert (p["esm_class"], p["data_coding"], p["short_message"]) == (0x40, 8, sub.short_message)
    assert p["registered_delivery"] == 1 and p["priority_flag"] == 1
    assert p["validity_period"] == "261130005320000+"  # absolute, UTC (2026-11-30 00:53:20)


async def test_copies_of_one_segment_are_never_submitted_at_once():
    """A worker replay can put a segment on the submit topic twice; each copy must read the ledger only after
    the previous one is done with it, also a copy that arrives while another copy is still waiting."""
    from connectors.smpp.submit import SubmitPath
    from smsflow.config import OutboundConfig

    path = SubmitPath("t", "127.0.0.1:9", [], {}, None, OutboundConfig())  # type: ignore[arg-type]
    running = peak = 0

    async def submit(sub, owner=None):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    path._submit = submit  # type: ignore[method-assign]
    sub = Submission(
        "m", 1, 1, "+852", "ACME", "alphanumeric", 0, 0, b"hi", "otp", 1, None, (Candidate("r", "c"),)
    )
    first = asyncio.create_task(path._take_submission(sub))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(path._take_submission(sub))  # waits for the first
    await asyncio.sleep(0.06)  # the first is done, the second is submitting
    third = asyncio.create_task(path._take_submission(sub))
    await asyncio.gather(first, second, third)
    assert peak == 1


async def test_ledger_entries_and_hand_overs_are_retried_until_the_broker_stores_them(monkeypatch):
    """Nothing goes on without its record stored: a broker that refuses twice delays the intent (and so the
    submit_sm behind it) and the hand-over to the next route; it loses neither."""
    from connectors.smpp.submit import SubmitPath
    from smsflow.config import OutboundConfig
    from smsflow.outbound.ledger import Intent
    from smsflow.outbound.submission import LEDGER_TOPIC, SUBMIT_TOPIC, Carried, owner_of, read_ledger

    class FlakyProducer:
        def __init__(self) -> None:
            self.refusals = 0
            self.stored: list[tuple[str, bytes, str]] = []
            self.headers: list[object] = []

        async def send(self, topic: str, value: bytes, key: str, headers: object = None) -> None:
            if self.refusals < 2:
                self.refusals += 1
                raise RuntimeError("broker unavailable")
            self.refusals = 0  # the next record is refused twice again
            self.stored.append((topic, value, key))
            self.headers.append(headers)

    waits: list[float] = []

    async def no_wait(s: float) -> None:
        waits.append(s)

    producer = FlakyProducer()
    path = SubmitPath("t", "127.0.0.1:9", [], {}, producer, OutboundConfig())  # type: ignore[arg-type]
    monkeypatch.setattr(asyncio, "sleep", no_wait)
    intent = Intent("m", 1, 1, "r0", "+852", None, 5)
    await path._write("m", Carried(intent, "c0"))
    sub = Submission(
        "m", 1, 1, "+852", "ACME", "alphanumeric", 0, 0, b"hi", "otp", 1, None,
        (Candidate("r0", "c0"), Candidate("r1", "c1")),
    )  # fmt: skip
    await path._hand_over(sub, 0x58, "refused for now", "acme")

    (ledger_topic, value, key), (submit_topic, handed, carrier) = producer.stored
    assert (ledger_topic, key, read_ledger(value)) == (LEDGER_TOPIC, "m", Carried(intent, "c0"))
    assert (submit_topic, carrier) == (SUBMIT_TOPIC, "c1")
    assert Submission.from_json(handed).route == Candidate("r1", "c1")
    assert owner_of(producer.headers[1]) == "acme"  # the next route's connector shares it fairly too
    assert waits == [0.2, 0.4, 0.2, 0.4]  # backing off, and the ledger holds the intent once stored
    assert path._ledger_of(("m", 1)).segments[("m", 1)][0].intent == intent


def test_taken_on_bounds_each_carrier_and_lets_otp_past_parked_bulk():
    from connectors.smpp.submit import TakenOn

    taken: TakenOn[str] = TakenOn(lambda lane: 2, parked_max=3)
    assert taken.offer("slow", 2, "b1") and taken.offer("slow", 2, "b2")
    assert not taken.offer("slow", 2, "b3") and not taken.offer("slow", 2, "b4")  # parked
    assert taken.offer("fast", 2, "f1")  # another carrier's: started at once
    assert not taken.offer("slow", 0, "otp") and taken.full  # parked, ahead of b3 and b4
    assert taken.finished("slow") == "otp"  # in the finished one's place: still 2 running
    assert taken.finished("slow") == "b3" and taken.finished("slow") == "b4" and not taken.full
    assert taken.running == {"slow": 2, "fast": 1}
    assert taken.finished("slow") is None and taken.finished("slow") is None
    assert taken.finished("fast") is None and taken.running == {} and taken.parked == 0
    assert taken.offer("slow", 2, "b5")


def test_taken_on_shares_a_carrier_fairly_between_customers():
    """Start-time fair queuing among a carrier's waiting records: a customer's flood delays another's segment
    by one of its own per turn, not by all of them; priority comes first."""
    from connectors.smpp.submit import TakenOn

    taken: TakenOn[str] = TakenOn(lambda lane: 1, parked_max=100)
    assert taken.offer("c", 2, "running")
    for i in range(5):
        assert not taken.offer("c", 2, f"m{i}", "mallory")
    assert not taken.offer("c", 2, "a0", "alice")
    assert not taken.offer("c", 2, "a1", "alice")
    order = [taken.finished("c") for _ in range(3)]
    assert order == ["m0", "a0", "m1"]
    assert not taken.offer("c", 2, "b0", "bob")  # arrives late: its turn is the next one, not the last
    assert not taken.offer("c", 0, "m-otp", "mallory")  # OTP first, whoever waits
    order = [taken.finished("c") for _ in range(6)]
    assert order == ["m-otp", "a1", "m2", "b0", "m3", "m4"]
    assert taken.finished("c") is None and taken.parked == 0 and not taken._last and not taken._turn


class _Record:
    def __init__(self, value: bytes, offset: int, owner: str | None = None) -> None:
        from smsflow.outbound.submission import owner_headers

        self._value, self._offset, self._headers = value, offset, owner_headers(owner)

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def error(self) -> None:
        return None

    def topic(self) -> str:
        from smsflow.outbound.submission import SUBMIT_TOPIC

        return SUBMIT_TOPIC

    def value(self) -> bytes:
        return self._value

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


class _Consumer:
    """What the submit path reads: the records given, a batch of up to 200 at a time, then nothing; the
    string "revoke" among them revokes partition 0 (the rebalance callback runs inside consume)."""

    def __init__(self, records: list[Any]) -> None:
        self.records = records
        self.commits: list[dict[int, int]] = []
        self.on_revoke: Any = None

    def subscribe(
        self, topics: list[str], on_assign: Any = None, on_revoke: Any = None, on_lost: Any = None
    ) -> None:
        self.on_assign, self.on_revoke, self.on_lost = on_assign, on_revoke, on_lost

    def consume(self, n: int, timeout: float) -> list[_Record]:
        import time

        from confluent_kafka import TopicPartition

        from smsflow.outbound.submission import SUBMIT_TOPIC

        if self.records and self.records[0] == "revoke":
            self.records.pop(0)
            self.on_revoke(self, [TopicPartition(SUBMIT_TOPIC, 0)])
        batch = []
        while self.records and len(batch) < n and self.records[0] != "revoke":
            batch.append(self.records.pop(0))
        if not batch:
            time.sleep(0.01)
        return batch

    def commit(self, offsets: list, asynchronous: bool) -> None:
        self.commits.append({tp.partition: tp.offset for tp in offsets})

    def close(self) -> None:
        pass


def _carrier(cid: str):  # a carrier with a window of 1: 8 of its segments started at once
    from smsflow.config import CarrierConfig

    return CarrierConfig.model_validate(
        {"id": cid, "route_id": f"r-{cid}", "host": "127.0.0.1", "port": 9, "system_id": "s",
         "password_env": "P", "submit_window": 1}
    )  # fmt: skip


def _segment(mid: str, carrier: str, priority: str = "bulk") -> bytes:
    return Submission(
        mid, 1, 1, "+85260000000", "ACME", "alphanumeric", 0, 0, b"hi", priority, 1, None,
        (Candidate(f"r-{carrier}", carrier),),
    ).to_json()  # fmt: skip


async def test_a_slow_carriers_backlog_holds_up_no_other_carrier():
    """A carrier whose submits do not finish (its rate, a throttling SMSC, a campaign's backlog): with one
    bound of 2,000 records read and not finished for all carriers, 2,000 of its segments stopped the reading
    of the topic, and another carrier's segments behind them (OTPs too) waited for that backlog. Now each
    carrier starts at most 8 windows' worth; the rest wait in memory, OTP first, and the other carriers'
    segments are read and started at once. Offsets are committed only past the finished prefix."""
    from connectors.smpp import submit
    from connectors.smpp.submit import SubmitPath
    from smsflow.config import OutboundConfig

    path = SubmitPath("t", "127.0.0.1:9", [_carrier("slow"), _carrier("fast")], {}, None, OutboundConfig())  # type: ignore[arg-type]
    assert path._running_per_carrier("slow") == submit.RUNNING_PER_WINDOW == 8
    records = [_Record(_segment(f"bulk{i}", "slow"), i) for i in range(2500)]
    records.append(_Record(_segment("otp-slow", "slow", "otp"), 2500))
    records.append(_Record(_segment("otp-fast", "fast", "otp"), 2501))
    records.append(_Record(b"not a submission", 2502))
    consumer = _Consumer(records)
    started: list[str] = []
    release = {"slow": asyncio.Event(), "fast": asyncio.Event()}
    release["fast"].set()

    async def take(sub: Submission, owner: str | None = None) -> None:
        started.append(sub.message_id)
        await release[sub.route.carrier].wait()

    path._new_consumer = lambda: consumer  # type: ignore[method-assign,assignment,return-value]
    path._take_submission = take  # type: ignore[method-assign]
    task = asyncio.create_task(path._consume())
    try:
        for _ in range(500):
            if "otp-fast" in started:
                break
            await asyncio.sleep(0.01)
        assert "otp-fast" in started  # read past 2,500 of the slow carrier's, and started
        assert [m for m in started if m != "otp-fast"] == [f"bulk{i}" for i in range(8)]
        release["slow"].set()  # the slow carrier's first 8 finish: its OTP goes before its waiting bulk
        for _ in range(500):
            if len(started) == 2502:
                break
            await asyncio.sleep(0.01)
        assert started.index("otp-slow") == 9  # bulk0-7, otp-fast, then otp-slow
        for _ in range(100):
            if consumer.commits and consumer.commits[-1] == {0: 2503}:
                break
            await asyncio.sleep(0.02)
        assert consumer.commits[-1] == {0: 2503}  # every one finished, the unreadable one skipped
    finally:
        path._stopping.set()
        await asyncio.wait_for(task, 5)


async def test_the_submit_path_reads_no_more_while_too_many_wait(monkeypatch):
    """At most PARKED_MAX records wait in memory over all carriers (then one batch more): the consumer is not
    read again until some have started."""
    from connectors.smpp import submit
    from connectors.smpp.submit import SubmitPath
    from smsflow.config import OutboundConfig

    monkeypatch.setattr(submit, "PARKED_MAX", 300)
    path = SubmitPath("t", "127.0.0.1:9", [_carrier("slow")], {}, None, OutboundConfig())  # type: ignore[arg-type]
    consumer = _Consumer([_Record(_segment(f"bulk{i}", "slow"), i) for i in range(1000)])
    release = asyncio.Event()

    async def take(sub: Submission, owner: str | None = None) -> None:
        await release.wait()

    path._new_consumer = lambda: consumer  # type: ignore[method-assign,assignment,return-value]
    path._take_submission = take  # type: ignore[method-assign]
    task = asyncio.create_task(path._consume())
    try:
        for _ in range(500):
            if len(consumer.records) <= 600:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        assert len(consumer.records) == 600  # 2 batches of 200 read: 8 started, 392 waiting (> 300)
        release.set()
        for _ in range(500):
            if not consumer.records:
                break
            await asyncio.sleep(0.01)
        assert not consumer.records
    finally:
        path._stopping.set()
        await asyncio.wait_for(task, 5)


class _Gated:
    """The submit path of one slow carrier (a window of 1: 8 started at once) reading ``records``; each
    segment started (``started``: its id and customer) finishes when the test releases ``gate`` once."""

    def __init__(self, records: list[Any]) -> None:
        from connectors.smpp.submit import SubmitPath
        from smsflow.config import OutboundConfig

        self.path = SubmitPath("t", "127.0.0.1:9", [_carrier("slow")], {}, None, OutboundConfig())  # type: ignore[arg-type]
        self.consumer = _Consumer(records)
        self.started: list[tuple[str, str | None]] = []
        self.gate = asyncio.Semaphore(0)
        self.path._new_consumer = lambda: self.consumer  # type: ignore[method-assign,assignment,return-value]
        self.path._take_submission = self._take  # type: ignore[method-assign]

    async def _take(self, sub: Submission, owner: str | None = None) -> None:
        self.started.append((sub.message_id, owner))
        await self.gate.acquire()

    async def __aenter__(self) -> "_Gated":
        self.task = asyncio.create_task(self.path._consume())
        for _ in range(500):  # until everything is read
            if not self.consumer.records:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        return self

    async def let_finish(self, n: int) -> None:
        for _ in range(n):
            self.gate.release()
            await asyncio.sleep(0.02)

    async def __aexit__(self, *exc: object) -> None:
        self.path._stopping.set()
        for _ in range(len(self.started)):
            self.gate.release()
        await asyncio.wait_for(self.task, 5)


async def test_one_customers_flood_on_a_carrier_delays_anothers_segment_by_a_turn():
    """Mallory's 500 segments on a carrier, then Alice's: Alice's starts after Mallory's first turn, not
    after all 500 (the customer is the submit record's `smsflow-owner` header, set by the worker)."""
    records = [_Record(_segment(f"m{i}", "slow"), i, "mallory") for i in range(500)]
    records.append(_Record(_segment("alice", "slow"), 500, "alice"))
    async with _Gated(records) as run:
        assert run.started == [(f"m{i}", "mallory") for i in range(8)]  # the carrier's 8 at once
        await run.let_finish(2)
        assert run.started[8:] == [("m8", "mallory"), ("alice", "alice")]


async def test_a_revocation_returns_only_when_nothing_of_its_partitions_runs_here():
    """Two connectors must never both work on one segment (the ledger serialises one connector's copies
    only), and the next owner gets a partition only when this one's revocation returns. Before, a revocation
    only forgot the waiting segments: the started ones went on here while the next owner read them again.
    Now the waiting ones are forgotten, those that wrote nothing yet (waiting for the carrier's window) are
    cancelled, those in the middle of a submit are waited for, and what finished is committed."""
    from connectors.smpp.submit import SubmitPath
    from smsflow.config import OutboundConfig

    path = SubmitPath("t", "127.0.0.1:9", [_carrier("slow")], {}, None, OutboundConfig())  # type: ignore[arg-type]
    submitting = {"m0": asyncio.Event(), "m1": asyncio.Event()}
    started: list[str] = []
    done: list[str] = []

    async def take(sub: Submission, owner: str | None = None) -> None:
        started.append(sub.message_id)
        if sub.message_id in submitting:  # its intent is stored: it must reach its outcome
            await submitting[sub.message_id].wait()
        else:  # waiting for the window: nothing written
            await path._at_rest(asyncio.Event().wait())
        done.append(sub.message_id)

    class Revoking(_Consumer):
        revoked = False

        def consume(self, n: int, timeout: float) -> list[_Record]:
            revoke = bool(self.records) and self.records[0] == "revoke"
            batch = super().consume(n, timeout)
            self.revoked = self.revoked or revoke
            return batch

    consumer = Revoking([*[_Record(_segment(f"m{i}", "slow"), i) for i in range(20)], "revoke"])
    path._new_consumer = lambda: consumer  # type: ignore[method-assign,assignment,return-value]
    path._take_submission = take  # type: ignore[method-assign]
    task = asyncio.create_task(path._consume())
    try:
        await asyncio.sleep(0.3)
        assert started == [f"m{i}" for i in range(8)]  # the carrier's 8; m8-m19 wait in memory
        assert not consumer.revoked  # m0 and m1 are submitting
        submitting["m1"].set()
        await asyncio.sleep(0.1)
        assert not consumer.revoked and done == ["m1"]
        submitting["m0"].set()
        for _ in range(100):
            if consumer.revoked:
                break
            await asyncio.sleep(0.01)
        assert consumer.revoked and sorted(done) == ["m0", "m1"]
        assert consumer.commits[-1] == {0: 2}  # the finished prefix, committed before the partition goes
        await asyncio.sleep(0.1)
        assert started == [f"m{i}" for i in range(8)] and not path._task_tp  # nothing more, nothing left
    finally:
        path._stopping.set()
        await asyncio.wait_for(task, 5)


async def test_a_segment_not_yet_submitted_when_the_connector_stops_is_left_to_the_next_run():
    """A segment whose task first ran after the stop began (the last batch read), or that was backing off,
    left `_submit`'s loop as if done: its offset was committed and the message was never submitted (it
    expired; found by the e2e test of a connector stopping mid-traffic). It now ends cancelled: not
    committed, nothing written."""
    from connectors.smpp.submit import SubmitPath
    from smsflow.config import OutboundConfig

    stored = _Stored()
    path = SubmitPath("t", "127.0.0.1:9", [_carrier("c")], {}, stored, OutboundConfig(), stored)  # type: ignore[arg-type]
    sub = Submission.from_json(_segment("m", "c"))
    path._stopping.set()
    task = asyncio.create_task(path._take_guarded(sub, None, ("sms.outbound.submit.v1", 0), 0))
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() and stored.sent == []


async def test_a_stop_lets_a_submit_in_progress_reach_its_outcome_and_leaves_the_waiting_ones():
    """Before, a stop waited 3 s and then cancelled every task, also one between its intent and its outcome
    (that message was then held as unknown and expired)."""
    from connectors.smpp.submit import SubmitPath
    from smsflow.config import OutboundConfig

    path = SubmitPath("t", "127.0.0.1:9", [_carrier("slow")], {}, None, OutboundConfig())  # type: ignore[arg-type]
    outcome_after = asyncio.Event()
    done: list[str] = []

    async def take(sub: Submission, owner: str | None = None) -> None:
        if sub.message_id == "m0":  # submitting: its resp comes 3.5 s after the stop began
            await outcome_after.wait()
        else:
            await path._at_rest(asyncio.Event().wait())
        done.append(sub.message_id)

    consumer = _Consumer([_Record(_segment(f"m{i}", "slow"), i) for i in range(5)])
    path._new_consumer = lambda: consumer  # type: ignore[method-assign,assignment,return-value]
    path._take_submission = take  # type: ignore[method-assign]
    path._task = asyncio.create_task(path._consume())
    await asyncio.sleep(0.2)
    stopping = asyncio.create_task(path.stop())
    await asyncio.sleep(3.5)
    assert not stopping.done()
    outcome_after.set()
    await asyncio.wait_for(stopping, 5)
    assert done == ["m0"] and consumer.commits[-1] == {0: 1}


async def test_a_segment_of_a_revoked_partition_stops_at_its_next_wait():
    """A submit the revocation waited for no longer (a broker that stores nothing) goes on, but stops at
    its next wait instead of writing another intent."""
    from connectors.smpp.submit import SubmitPath
    from smsflow.config import OutboundConfig

    path = SubmitPath("t", "127.0.0.1:9", [], {}, None, OutboundConfig())  # type: ignore[arg-type]
    reached: list[str] = []

    async def segment() -> None:
        await path._at_rest(asyncio.sleep(0))
        reached.append("first wait")
        await asyncio.sleep(0.05)
        await path._at_rest(asyncio.sleep(0))
        reached.append("second wait")

    t = asyncio.create_task(segment())
    path._task_tp[t] = ("sms.outbound.submit.v1", 0)
    await asyncio.sleep(0.01)
    path._revoking.add(("sms.outbound.submit.v1", 0))
    await asyncio.gather(t, return_exceptions=True)
    assert t.cancelled() and reached == ["first wait"]


class _Stored:
    """A producer and a serde that keep what they were given (the quarantine record as a dict)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, str]] = []
        self.encoded: list[dict[str, Any]] = []

    async def send(self, topic: str, value: bytes, key: str, headers: object = None) -> None:
        self.sent.append((topic, value, key))

    def encode(self, topic: str, record: dict[str, Any]) -> bytes:
        self.encoded.append(record)
        return b"avro"

    def given_up(self) -> list[Any]:
        from smsflow.outbound.submission import LEDGER_TOPIC, Abandoned, read_ledger

        entries = [read_ledger(v) for t, v, _ in self.sent if t == LEDGER_TOPIC]
        return [e for e in entries if isinstance(e, Abandoned)]


async def _run_until_committed(path: Any, consumer: _Consumer, upto: int) -> None:
    path._new_consumer = lambda: consumer
    task = asyncio.create_task(path._consume())
    try:
        for _ in range(300):
            if (consumer.commits and consumer.commits[-1] == {0: upto}) or task.done():
                break
            await asyncio.sleep(0.01)
        assert not task.done(), f"the submit path stopped: {task.exception()!r}"
        assert consumer.commits[-1] == {0: upto}
    finally:
        path._stopping.set()
        await asyncio.wait_for(task, 5)


async def test_a_record_that_cannot_be_submitted_is_quarantined_given_up_and_committed_past():
    """A submit record with no route (valid JSON; `sub.route` raised IndexError in the read loop itself): the
    whole submit path died, silently, while the connector kept receiving. Now it is kept on sms.quarantine.v1
    with the reason and where it was read, its segment is given up (the customer's status says why) and the
    records behind it are submitted."""
    import orjson

    from connectors.smpp.submit import SubmitPath
    from smsflow.config import OutboundConfig
    from smsflow.schemas import QUARANTINE_TOPIC

    bad = orjson.loads(_segment("bad", "c"))
    bad["candidates"] = []
    records = [_Record(_segment("m0", "c"), 0), _Record(orjson.dumps(bad), 1), _Record(b"\x00junk", 2),
               _Record(_segment("m3", "c"), 3)]  # fmt: skip
    stored = _Stored()
    path = SubmitPath("t", "127.0.0.1:9", [_carrier("c")], {}, stored, OutboundConfig(), stored)  # type: ignore[arg-type]
    started: list[str] = []

    async def take(sub: Submission, owner: str | None = None) -> None:
        started.append(sub.message_id)

    path._take_submission = take  # type: ignore[method-assign]
    await _run_until_committed(path, _Consumer(records), 4)
    assert started == ["m0", "m3"]
    q = stored.encoded
    assert [(r["stage"], r["source_offset"], r["pdu"]) for r in q] == [
        ("submit", 1, orjson.dumps(bad)), ("submit", 2, b"\x00junk")
    ]  # fmt: skip
    assert "candidates" in q[0]["reason"] and [t for t, _, _ in stored.sent].count(QUARANTINE_TOPIC) == 2
    (given_up,) = stored.given_up()  # the junk names no segment: quarantined only
    assert (given_up.message_id, given_up.seq) == ("bad", 1) and "candidates" in given_up.reason
    assert path.refused == 2


async def test_a_segment_the_connector_fails_on_is_given_up_instead_of_holding_the_commit():
    """An exception of ours while submitting one segment left its offset unfinished: the partition's commit
    point stayed there until a restart (which replayed everything behind it, and failed the same way)."""
    from connectors.smpp.submit import SubmitPath
    from smsflow.config import OutboundConfig

    stored = _Stored()
    path = SubmitPath("t", "127.0.0.1:9", [_carrier("c")], {}, stored, OutboundConfig(), stored)  # type: ignore[arg-type]

    async def take(sub: Submission, owner: str | None = None) -> None:
        if sub.message_id == "m1":
            raise RuntimeError("a bug of ours")

    path._take_submission = take  # type: ignore[method-assign]
    await _run_until_committed(path, _Consumer([_Record(_segment(f"m{i}", "c"), i) for i in range(3)]), 3)
    (given_up,) = stored.given_up()
    assert given_up.message_id == "m1" and "RuntimeError: a bug of ours" in given_up.reason
    assert path.refused == 1


async def test_a_segment_that_does_not_encode_is_given_up_before_any_intent():
    """The encoder's refusal came from inside session.request, after the intent was stored: the segment
    looked sent (and, under `hold`, was held as an unknown outcome) though no octet left."""
    from connectors.smpp.submit import SubmitPath
    from smsflow.config import OutboundConfig
    from smsflow.outbound.submission import LEDGER_TOPIC, read_ledger
    from smsflow.smpp.constants import CommandStatus

    stored = _Stored()
    path = SubmitPath("t", "127.0.0.1:9", [_carrier("c")], {}, stored, OutboundConfig(), stored)  # type: ignore[arg-type]
    sub = Submission(
        "m", 1, 1, "+85260000000", "ACME\u4e2d", "alphanumeric", 0, 0, b"hi", "otp", 1, None,
        (Candidate("r-c", "c"),),
    )  # fmt: skip
    await asyncio.wait_for(path._submit(sub), 5)
    (entry,) = [read_ledger(v) for t, v, _ in stored.sent if t == LEDGER_TOPIC]
    assert (entry.message_id, entry.command_status) == ("m", CommandStatus.ESME_RINVSRCADR)
    assert "does not encode" in entry.reason and "Latin-1" in entry.reason


async def test_a_submit_path_that_stopped_on_its_own_says_why():
    """The connector exits (and is restarted) when its submit path ends unasked: before, MTs waited unread
    while the receiving side looked healthy."""
    from connectors.smpp.submit import SubmitPath
    from smsflow.config import OutboundConfig

    path = SubmitPath("t", "127.0.0.1:9", [], {}, None, OutboundConfig())  # type: ignore[arg-type]

    class Broken(_Consumer):
        def consume(self, n: int, timeout: float) -> list[_Record]:
            raise RuntimeError("consumer closed")

    path._new_consumer = lambda: Broken([])  # type: ignore[method-assign,assignment,return-value]
    path._task = asyncio.create_task(path._consume())
    await asyncio.wait({path.ended}, timeout=5)
    assert path.failure() == "RuntimeError: consumer closed"
    path._stopping.set()
    assert path.failure() == "RuntimeError: consumer closed"


async def test_a_finished_segments_ledger_is_kept_small_and_a_copy_of_it_submits_nothing():
    """A connector holds every segment of the ledger topic's 4 days (~1.1 KB each as a full Ledger: ~3.7 GB
    at 10 MT/s): an accepted or refused segment keeps only what a later copy needs."""
    from connectors.smpp.submit import _ACCEPTED, _REFUSED, SubmitPath
    from smsflow.config import OutboundConfig
    from smsflow.outbound.ledger import GiveUp, Intent, Ledger, LedgerPolicy, Outcome, Wait

    stored = _Stored()
    path = SubmitPath("t", "127.0.0.1:9", [_carrier("c")], {}, stored, OutboundConfig(), stored)  # type: ignore[arg-type]
    for mid, kind in (("ok", "accepted"), ("no", "refused"), ("later", "retryable"), ("lost", "timeout")):
        path._fold(Intent(mid, 1, 1, "r-c", "+85260000000", None, 1))
        path._fold(Outcome(mid, 1, 1, kind, 2, "A1" if kind == "accepted" else None, 0x58))
    assert path._ledger_of(("ok", 1)) is _ACCEPTED and path._ledger_of(("no", 1)) is _REFUSED
    assert isinstance(path._ledger_of(("later", 1)), Ledger)  # still deciding: kept whole
    assert isinstance(path._ledger_of(("lost", 1)), Ledger)
    policy = LedgerPolicy()
    assert isinstance(path._ledger_of(("ok", 1)).next_step("ok", 1, policy, 3), Wait)
    assert isinstance(path._ledger_of(("no", 1)).next_step("no", 1, policy, 3), GiveUp)
    path._fold(Outcome("ok", 1, 1, "timeout", 4))  # a late record of a finished segment changes nothing
    assert path._ledger_of(("ok", 1)) is _ACCEPTED
    copy = Submission.from_json(_segment("ok", "c"))
    await asyncio.wait_for(path._submit(copy), 2)  # no bind is up: had it tried, it would wait for one
    assert stored.sent == []
