"""The direct ingest loop's own bookkeeping (smsflow/ingest/loop.py), without a broker: how it takes a batch,
carries a refused commit forward, and lets go of a partition. The loop against a real broker (restore, the
switch from the Faust agent, kill -9) is tests/e2e/test_ingest_loop.py."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from smsflow.config import Config
from smsflow.ingest.loop import (
    CLOSE_COMMIT_WAIT_S,
    COMMIT_INTERVAL_S,
    DirectIngest,
    PartitionState,
    ingest_group,
)
from smsflow.ingest.processor import ingest_settings
from smsflow.pace import Pace
from smsflow.schemas import RAW_TOPIC


class FakeConsumer:
    """Records commits; refuses the first ``refuse`` of them as a rebalance would (ILLEGAL_GENERATION)."""

    def __init__(self, refuse: int = 0, queued: list[Any] | None = None, arriving: Any = None) -> None:
        self.refuse = refuse
        self.commits: list[dict[int, int]] = []
        self.queued = list(queued or [])
        self.arriving = arriving
        self.calls: list[tuple[str, Any]] = []
        self.after_first: list[Any] = []  # what arrives with the first record poll() waited for
        self.sent: list[dict[int, int]] = []  # asynchronous commits, as sent
        self.answers: list[tuple[bool, list[TopicPartition]]] = []
        self.on_commit: Any = None

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        """A synchronous commit raises when refused; an asynchronous one is answered (to the loop's
        ``on_commit``) inside the next ``consume``/``poll``, as librdkafka does."""
        refused = self.refuse > 0
        self.refuse -= refused
        if asynchronous:
            self.sent.append({tp.partition: tp.offset for tp in offsets})
            self.answers.append((refused, offsets))
            return
        if refused:
            raise KafkaException(KafkaError(KafkaError.ILLEGAL_GENERATION))
        self.commits.append({tp.partition: tp.offset for tp in offsets})

    def answer(self) -> None:
        """Serve the answers to the asynchronous commits sent so far."""
        answers, self.answers = self.answers, []
        for refused, offsets in answers:
            if refused:
                self.on_commit(KafkaError(KafkaError.ILLEGAL_GENERATION), offsets)
            else:
                self.commits.append({tp.partition: tp.offset for tp in offsets})
                self.on_commit(None, offsets)

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        self.answer()
        self.calls.append(("consume", (num_messages, timeout)))
        out, self.queued = self.queued[:num_messages], self.queued[num_messages:]
        return out

    def poll(self, timeout: float) -> Any:
        self.answer()
        self.calls.append(("poll", timeout))
        first, self.arriving = self.arriving, None
        if first is not None:
            self.queued = [*self.queued, *self.after_first]
        return first


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def later(loop: DirectIngest, seconds: float = COMMIT_INTERVAL_S) -> None:
    loop.clock.now += seconds  # type: ignore[attr-defined]


@pytest.fixture
def loop() -> DirectIngest:
    cfg = Config()
    # no broker: librdkafka clients connect lazily, and nothing here produces or consumes for real
    settings = ingest_settings(cfg)
    d = DirectIngest(cfg, "127.0.0.1:9", serde=None, settings=settings, batch_max=4, clock=Clock())
    d.consumer.close()
    for p in (3, 4):
        d.partitions[p] = PartitionState(committed=0)
    return d


def _fake(loop: DirectIngest, **kw: Any) -> FakeConsumer:
    fake = FakeConsumer(**kw)
    fake.on_commit = loop._on_commit
    loop.consumer = fake  # type: ignore[assignment]
    return fake


def test_a_commit_is_sent_without_waiting_and_counts_once_answered(loop: DirectIngest) -> None:
    fake = _fake(loop)
    assert loop._commit({3: 10}) is True
    assert fake.sent == [{3: 10}] and fake.commits == []
    assert loop.partitions[3].committed == 0  # sent is not stored: ticks and expiry wait for the answer
    fake.answer()
    assert fake.commits == [{3: 10}] and loop.partitions[3].committed == 10
    assert loop.stats.commits == 1 and not loop._uncommitted


def test_batches_flushed_while_a_commit_is_in_flight_go_together_in_the_next(loop: DirectIngest) -> None:
    fake = _fake(loop)
    loop._commit({3: 10})
    assert loop._commit({3: 12}) is False and loop._commit({4: 5}) is False  # one commit in flight at a time
    assert fake.sent == [{3: 10}]
    fake.answer()
    assert loop.partitions[3].committed == 10 and loop._uncommitted == {3: 12, 4: 5}
    assert loop._commit({}) is False  # answered, but the last one left less than COMMIT_INTERVAL_S ago
    later(loop)
    assert loop._commit({}) is True
    assert fake.sent == [{3: 10}, {3: 12, 4: 5}]
    fake.answer()
    assert (loop.partitions[3].committed, loop.partitions[4].committed) == (12, 5)


def test_a_refused_commit_is_carried_to_the_next_one(loop: DirectIngest) -> None:
    clock = loop.clock
    fake = _fake(loop, refuse=1)
    loop._commit({3: 10})
    fake.answer()  # refused (a rebalance): not stored, and the loop does not pretend it is
    assert loop.partitions[3].committed == 0 and loop.stats.commit_failures == 1
    # the next batch only touched partition 4; partition 3's offset goes with it, after a short pause
    assert loop._commit({4: 5}) is False and fake.sent == [{3: 10}]
    clock.now += 1
    assert loop._commit({}) is True
    assert fake.sent[-1] == {3: 10, 4: 5}
    fake.answer()
    assert fake.commits == [{3: 10, 4: 5}]
    assert loop.partitions[3].committed == 10 and loop.partitions[4].committed == 5
    assert loop._commit({}) is True and len(fake.sent) == 2  # nothing left to commit


def test_an_unanswered_commit_is_sent_again(loop: DirectIngest) -> None:
    clock = loop.clock
    fake = _fake(loop)
    loop._commit({3: 10})
    fake.answers.clear()  # the answer never comes
    clock.now += 5
    assert loop._commit({3: 11}) is False
    clock.now += 60
    assert loop._commit({}) is True and fake.sent == [{3: 10}, {3: 11}]
    fake.answer()
    assert loop.partitions[3].committed == 11


def test_a_revoked_partition_commits_what_is_not_committed_yet_before_it_goes(loop: DirectIngest) -> None:
    fake = _fake(loop, refuse=1)
    loop._commit({3: 10, 4: 7})
    fake.answer()  # refused
    loop._commit({3: 11})  # waits out the pause after a refusal
    loop._on_revoke(fake, [TopicPartition(RAW_TOPIC, 3)])  # type: ignore[arg-type]
    assert fake.commits == [{3: 11}]  # synchronously, inside the callback: stored before he goes
    assert 3 not in loop.partitions and 4 in loop.partitions and loop._uncommitted == {4: 7}


def _closable(loop: DirectIngest, fake: FakeConsumer) -> None:
    loop.producer = type("P", (), {"flush": lambda self, t: 0})()  # type: ignore[assignment]
    fake.close = lambda: loop._on_revoke(fake, [TopicPartition(RAW_TOPIC, p) for p in (3, 4)])  # type: ignore[arg-type,attr-defined]


def test_close_commits_what_waited_for_the_commit_in_flight(loop: DirectIngest) -> None:
    fake = _fake(loop)
    _closable(loop, fake)
    loop._commit({3: 10})
    loop._commit({4: 5})  # waits for the one in flight
    loop.close()
    # the answer to the first, then one more for what waited: nothing is left for the next owner to replay
    assert fake.sent == [{3: 10}, {4: 5}] and fake.commits == fake.sent
    assert (loop.stats.commits, loop.stats.commit_failures) == (2, 0)


def test_close_after_a_failure_commits_nothing_more(loop: DirectIngest) -> None:
    fake = _fake(loop)
    _closable(loop, fake)
    loop._commit({3: 10})
    loop._commit({4: 5})
    loop.close(commit=False)  # the broker may be gone: no commit, no wait; the restart replays them
    assert fake.sent == [{3: 10}] and fake.commits == []


def test_close_waits_a_bounded_time_for_an_answer(loop: DirectIngest) -> None:
    fake = _fake(loop)
    _closable(loop, fake)
    loop._commit({3: 10})
    fake.answers.clear()
    fake.answer = lambda: setattr(loop.clock, "now", loop.clock.now + 1)  # type: ignore[attr-defined,method-assign]
    loop.close()  # never answered: gives up after CLOSE_COMMIT_WAIT_S
    assert loop.clock.now <= 1000 + CLOSE_COMMIT_WAIT_S + 2  # type: ignore[attr-defined]
    assert fake.sent == [{3: 10}] and fake.commits == []  # and no synchronous commit in the revocation


def test_close_against_a_refusing_group_backs_off_then_gives_up(loop: DirectIngest) -> None:
    fake = _fake(loop, refuse=1000)
    _closable(loop, fake)
    loop._commit({3: 10})
    served = fake.answer

    def answer_and_wait() -> None:  # each poll serves the answers and takes 50 ms
        served()
        loop.clock.now += 0.05  # type: ignore[attr-defined]

    fake.answer = answer_and_wait  # type: ignore[method-assign]
    loop.close()
    # tried again only after each refusal's pause (0.1 s, 0.2 s, ...), not at every poll; then gone
    assert 3 <= len(fake.sent) <= 12 and fake.commits == []
    assert loop.clock.now <= 1000 + CLOSE_COMMIT_WAIT_S + 1  # type: ignore[attr-defined]


def test_an_answer_to_an_earlier_commit_leaves_the_one_in_flight(loop: DirectIngest) -> None:
    fake = _fake(loop)
    loop._commit({3: 10})
    first = fake.answers.pop()
    later(loop, 60)  # unanswered: sent again, with what came since
    loop._commit({3: 12})
    fake.answers.insert(0, first)  # the first answer arrives late, before the second's
    fake.answers, second = fake.answers[:1], fake.answers[1:]
    fake.answer()
    assert loop.partitions[3].committed == 10 and loop._committing == {3: 12}
    fake.answers = second
    fake.answer()
    assert loop.partitions[3].committed == 12 and loop._committing is None and not loop._uncommitted


def test_a_lost_partition_drops_its_uncommitted_offsets(loop: DirectIngest) -> None:
    clock = loop.clock
    fake = _fake(loop, refuse=1)
    loop._commit({3: 10})
    fake.answer()
    loop._on_lost(fake, [TopicPartition(RAW_TOPIC, 3)])  # type: ignore[arg-type]
    clock.now += 1
    # not ours any more: committing it would overwrite its new owner's progress
    assert loop._commit({4: 2}) is True
    assert fake.sent[-1] == {4: 2}


def test_an_answer_for_a_partition_gone_meanwhile_changes_nothing(loop: DirectIngest) -> None:
    fake = _fake(loop)
    loop._commit({3: 10, 4: 1})
    loop._on_lost(fake, [TopicPartition(RAW_TOPIC, 3)])  # type: ignore[arg-type]
    fake.answer()
    assert 3 not in loop.partitions and loop.partitions[4].committed == 1 and not loop._uncommitted


def test_offsets_of_a_partition_revoked_mid_batch_are_not_committed(loop: DirectIngest) -> None:
    fake = _fake(loop)
    del loop.partitions[3]
    loop._commit({3: 10, 4: 1})
    assert fake.sent == [{4: 1}]


def test_a_batch_is_what_is_fetched_never_a_wait_for_more(loop: DirectIngest) -> None:
    # records already fetched: taken at once, up to batch_max, without waiting
    fake = FakeConsumer(queued=list("abcdef"))
    loop.consumer = fake  # type: ignore[assignment]
    assert loop.next_batch() == list("abcd")
    assert fake.calls == [("consume", (4, 0))]
    # nothing fetched: one wait for the first record, then what came with it, without waiting again
    fake = FakeConsumer(arriving="x")
    fake.after_first = ["y", "z"]
    loop.consumer = fake  # type: ignore[assignment]
    assert loop.next_batch() == ["x", "y", "z"]
    assert [c[0] for c in fake.calls] == ["consume", "poll", "consume"]
    assert fake.calls[2] == ("consume", (3, 0))
    assert 0 < fake.calls[1][1] <= 0.2  # the wait is bounded (ticks and a stop are noticed)


class TrickleConsumer(FakeConsumer):
    """A consume that waits (timeout > 0) gets what ``trickle`` says arrives meanwhile, and the wait takes
    the clock forward by its whole timeout unless it filled up first."""

    def __init__(self, clock: Clock, trickle: list[Any], **kw: Any) -> None:
        super().__init__(**kw)
        self.clock = clock
        self.trickle = list(trickle)

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        out = super().consume(num_messages, timeout)
        if timeout > 0 and len(out) < num_messages:
            got, self.trickle = (
                self.trickle[: num_messages - len(out)],
                self.trickle[num_messages - len(out) :],
            )
            out = [*out, *got]
            if len(out) < num_messages:
                self.clock.now += timeout
        return out


def _feed(pace: Pace, per_s: float, seconds: float) -> None:
    """Batches every 10 ms at ``per_s`` records per second for ``seconds``, as handle_batch counts them."""
    for _ in range(round(seconds / 0.01)):
        pace.clock.now += 0.01  # type: ignore[attr-defined]
        pace.count(round(per_s * 0.01))


def _busy(loop: DirectIngest, per_s: float) -> None:
    """A second of traffic at ``per_s`` records per second (ticks kept up with meanwhile)."""
    _feed(loop.pace, per_s, 1.0)
    loop._last_tick = loop.clock()


def test_a_quiet_loop_never_holds_a_batch_open(loop: DirectIngest) -> None:
    # below ingest_gather_above_per_s (400/s by default): the batch is what has arrived, as before
    _busy(loop, 300)
    fake = TrickleConsumer(loop.clock, trickle=["late"], queued=["a", "b"])  # type: ignore[arg-type]
    loop.consumer = fake  # type: ignore[assignment]
    assert loop.next_batch() == ["a", "b"]
    assert fake.calls == [("consume", (4, 0))]


def test_a_busy_loop_holds_its_batch_open_for_the_gather_window(loop: DirectIngest) -> None:
    _busy(loop, 1000)
    fake = TrickleConsumer(loop.clock, trickle=["c"], queued=["a", "b"])  # type: ignore[arg-type]
    loop.consumer = fake  # type: ignore[assignment]
    t0 = loop.clock()
    assert loop.next_batch() == ["a", "b", "c"]
    # one wait for the rest of the batch, as long as worker.ingest_gather_ms (10 ms), and no longer
    assert fake.calls == [("consume", (4, 0)), ("consume", (2, pytest.approx(0.010)))]
    assert loop.clock() - t0 == pytest.approx(0.010)
    # a batch that fills up ends the wait at once
    fake = TrickleConsumer(loop.clock, trickle=["c", "d", "e"], queued=["a", "b"])  # type: ignore[arg-type]
    loop.consumer = fake  # type: ignore[assignment]
    t0 = loop.clock()
    assert loop.next_batch() == ["a", "b", "c", "d"]
    assert loop.clock() == t0
    # and a full batch waits for nothing
    fake = TrickleConsumer(loop.clock, trickle=["x"], queued=list("abcdef"))  # type: ignore[arg-type]
    loop.consumer = fake  # type: ignore[assignment]
    assert loop.next_batch() == list("abcd")
    assert len(fake.calls) == 1


def test_the_gather_never_delays_a_tick(loop: DirectIngest) -> None:
    _busy(loop, 1000)
    loop._last_tick = loop.clock() - loop.tick_interval_s + 0.004  # the next tick is due in 4 ms
    fake = TrickleConsumer(loop.clock, trickle=[], queued=["a"])  # type: ignore[arg-type]
    loop.consumer = fake  # type: ignore[assignment]
    assert loop.next_batch() == ["a"]
    assert fake.calls[1] == ("consume", (3, pytest.approx(0.004)))


def test_gathering_off_waits_for_nothing() -> None:
    cfg = Config(worker={"ingest_gather_ms": 0})
    d = DirectIngest(
        cfg, "127.0.0.1:9", serde=None, settings=ingest_settings(cfg), batch_max=4, clock=Clock()
    )
    d.consumer.close()
    _busy(d, 100_000)
    fake = TrickleConsumer(d.clock, trickle=["late"], queued=["a"])  # type: ignore[arg-type]
    d.consumer = fake  # type: ignore[assignment]
    assert d.next_batch() == ["a"]
    assert len(fake.calls) == 1


def test_pace_follows_the_rate_both_ways() -> None:
    clock = Clock()
    pace = Pace(0.01, 400, clock)
    assert pace.window_s() == 0  # nothing counted yet
    _feed(pace, 300, 2.0)  # steady below the threshold
    assert pace.window_s() == 0
    # a burst is seen within a tenth of a second, before its first whole period ends
    _feed(pace, 1000, 0.1)
    assert pace.window_s() == 0.01
    _feed(pace, 1000, 2.0)
    assert pace.rate == pytest.approx(1000, rel=0.05) and pace.window_s() == 0.01
    # traffic falls to 50/s: off again within a period and a half
    _feed(pace, 100, 0.75)
    assert pace.window_s() == 0
    # a long silence: the first batch after it is not a burst, however large
    clock.now += 60
    pace.count(100)
    assert pace.window_s() == 0


def test_the_first_batch_after_a_busy_spell_and_a_pause_does_not_wait() -> None:
    """The rate of the last whole period must not outlive the period: a lone SMS a second after a burst
    ended is asked about before it is counted."""
    clock = Clock()
    pace = Pace(0.01, 400, clock)
    _feed(pace, 2000, 1.0)
    assert pace.window_s() == 0.01
    clock.now += 1.0  # the burst is over; nothing counted since
    assert pace.window_s() == 0


def test_pace_sees_a_lone_multipart_pair_as_quiet() -> None:
    clock = Clock()
    pace = Pace(0.01, 400, clock)
    for _ in range(100):  # 50 SMS/s, 20% of them two segments arriving together
        clock.now += 0.02
        pace.count(2 if _ % 5 == 0 else 1)
        assert pace.window_s() == 0


def test_the_gather_settings_are_validated_by_name() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="ingest_gather_ms"):
        Config(worker={"ingest_gather_ms": 500})
    with pytest.raises(ValidationError, match="ingest_gather_above_per_s"):
        Config(worker={"ingest_gather_above_per_s": 0})


def test_the_loop_has_its_own_group() -> None:
    assert ingest_group("smsflow") == "smsflow-ingest" != "smsflow"


@pytest.mark.parametrize(
    ("worker", "field"),
    [({"standby_replicas": 1}, "worker.standby_replicas"), ({"store": "rocksdb"}, "worker.store")],
)
def test_settings_the_loop_does_not_do_are_refused_by_name(worker: dict[str, Any], field: str) -> None:
    from smsflow.config import ConfigError
    from smsflow.roles import refuse_unsupported_loop_settings

    with pytest.raises(ConfigError, match=field):
        refuse_unsupported_loop_settings(Config(worker=worker))
    refuse_unsupported_loop_settings(Config())  # the defaults are fine


class _Undecodable:
    def decode(self, topic: str, value: bytes) -> dict[str, Any]:
        raise ValueError("not an Avro record of ours")


class _Rec:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return []


def test_a_flood_of_records_that_do_not_decode_is_each_quarantined_but_logged_once(
    loop: DirectIngest, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer of sms.raw.v1 that is not ours (or a replay of a bad stretch): every record is quarantined
    with its reason, and the log says it once, not once per record."""
    from smsflow.ingest import loop as loop_module

    loop_module._floods._kinds.clear()  # no earlier test's line of the same kind holds this one back
    loop.serde = _Undecodable()  # type: ignore[assignment]
    kept: list[str] = []
    loop._quarantine = lambda raw, reason, origin, partition: kept.append(reason)  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="smsflow.ingest.loop"):
        for offset in range(300):
            loop.handle_record(_Rec(b"\x00garbage"), 3, offset)
    assert len(kept) == 300 and all(r.startswith("record does not decode") for r in kept)
    assert [r.getMessage() for r in caplog.records] == [
        "sms.raw.v1 3:0 does not decode: not an Avro record of ours"
    ]
