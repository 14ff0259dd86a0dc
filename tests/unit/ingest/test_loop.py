"""The direct ingest loop's own bookkeeping (smsflow/ingest/loop.py), without a broker: how it takes a batch,
carries a refused commit forward, and lets go of a partition. The loop against a real broker (restore, the
switch from the Faust agent, kill -9) is tests/e2e/test_ingest_loop.py."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from smsflow.config import Config
from smsflow.ingest.loop import DirectIngest, PartitionState, ingest_group
from smsflow.ingest.processor import ingest_settings
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

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        assert asynchronous is False
        if self.refuse:
            self.refuse -= 1
            raise KafkaException(KafkaError(KafkaError.ILLEGAL_GENERATION))
        self.commits.append({tp.partition: tp.offset for tp in offsets})

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        self.calls.append(("consume", (num_messages, timeout)))
        out, self.queued = self.queued[:num_messages], self.queued[num_messages:]
        return out

    def poll(self, timeout: float) -> Any:
        self.calls.append(("poll", timeout))
        first, self.arriving = self.arriving, None
        if first is not None:
            self.queued = [*self.queued, *self.after_first]
        return first


@pytest.fixture
def loop() -> DirectIngest:
    cfg = Config()
    # no broker: librdkafka clients connect lazily, and nothing here produces or consumes for real
    d = DirectIngest(cfg, "127.0.0.1:9", serde=None, settings=ingest_settings(cfg), batch_max=4)
    d.consumer.close()
    for p in (3, 4):
        d.partitions[p] = PartitionState(committed=0)
    return d


def test_a_refused_commit_is_carried_to_the_next_one(loop: DirectIngest) -> None:
    loop.consumer = FakeConsumer(refuse=1)  # type: ignore[assignment]
    assert loop._commit({3: 10}) is False
    assert loop.partitions[3].committed == 0  # not stored: the loop does not pretend it is
    # the next batch only touched partition 4; partition 3's offset goes with it
    assert loop._commit({4: 5}) is True
    assert loop.consumer.commits == [{3: 10, 4: 5}]  # type: ignore[attr-defined]
    assert loop.partitions[3].committed == 10 and loop.partitions[4].committed == 5
    assert loop._commit({}) is True and loop.consumer.commits == [{3: 10, 4: 5}]  # type: ignore[attr-defined]


def test_a_revoked_partition_commits_what_was_refused_before_it_goes(loop: DirectIngest) -> None:
    fake = FakeConsumer(refuse=1)
    loop.consumer = fake  # type: ignore[assignment]
    loop._commit({3: 10, 4: 7})
    loop._on_revoke(fake, [TopicPartition(RAW_TOPIC, 3)])  # type: ignore[arg-type]
    assert fake.commits == [{3: 10, 4: 7}]
    assert 3 not in loop.partitions and 4 in loop.partitions


def test_a_lost_partition_drops_its_uncommitted_offsets(loop: DirectIngest) -> None:
    fake = FakeConsumer(refuse=1)
    loop.consumer = fake  # type: ignore[assignment]
    loop._commit({3: 10})
    loop._on_lost(fake, [TopicPartition(RAW_TOPIC, 3)])  # type: ignore[arg-type]
    # not ours any more: committing it would overwrite its new owner's progress
    assert loop._commit({4: 2}) is True
    assert fake.commits == [{4: 2}]


def test_offsets_of_a_partition_revoked_mid_batch_are_not_committed(loop: DirectIngest) -> None:
    fake = FakeConsumer()
    loop.consumer = fake  # type: ignore[assignment]
    del loop.partitions[3]
    loop._commit({3: 10, 4: 1})
    assert fake.commits == [{4: 1}]


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
