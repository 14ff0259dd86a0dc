"""The direct ingest loop's commits on a real broker (smsflow/ingest/loop.py): sent without waiting for the
answer, at most one in flight and one per ``COMMIT_INTERVAL_S`` (a trickle of one SMS per batch does not
cost one OffsetCommit each), never ahead of the flush, and at a stop every handled record is committed, so
the next owner starts exactly at the end. The crash side (kill -9 of the loop) is
tests/e2e/test_ingest_loop.py and tests/e2e/test_crash_consistency.py."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from smsflow.config import Config
from smsflow.ingest.loop import COMMIT_INTERVAL_S, DirectIngest, changelog_specs, ingest_group
from smsflow.ingest.processor import ingest_settings
from smsflow.schemas import INBOUND_TOPIC, QUARANTINE_TOPIC, RAW_TOPIC, RECEIPTS_TOPIC
from smsflow.serde import Serde, registry_client
from smsflow.topics import TopicSpec, ensure_topics, partition_count
from tests.factories import segment_records
from tests.integration.test_inbound_reader import committed

if TYPE_CHECKING:
    from tests.conftest import KafkaUnderTest

pytestmark = pytest.mark.integration

SMS = 40


def _ends(bootstrap: str, partitions: int) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "ends"})
    try:
        return {
            p: c.get_watermark_offsets(TopicPartition(RAW_TOPIC, p), timeout=30)[1] for p in range(partitions)
        }
    finally:
        c.close()


def _wait(cond, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def loop_topics(bootstrap: str, registry_url: str, cfg: Config) -> tuple[int, Serde]:
    """The loop's topics and its changelogs on the test broker; the partitions of ``sms.raw.v1`` and a warm
    serde."""
    ensure_topics(
        bootstrap, [TopicSpec(t, 3) for t in (RAW_TOPIC, INBOUND_TOPIC, QUARANTINE_TOPIC, RECEIPTS_TOPIC)]
    )
    partitions = partition_count(bootstrap, RAW_TOPIC)
    ensure_topics(bootstrap, changelog_specs(cfg, partitions))
    serde = Serde(registry_client(registry_url))
    serde.warm_up()
    return partitions, serde


def start_caught_up(loop: DirectIngest, bootstrap: str, partitions: int) -> threading.Thread:
    """Run ``loop`` in a thread of its own until it has read and committed whatever other tests left in
    ``sms.raw.v1``; stopped again if it does not get there."""
    runner = threading.Thread(target=loop.run, name="ingest-loop")
    runner.start()
    try:
        _wait(lambda: loop.ready)
        _wait(lambda: sum(_ends(bootstrap, partitions).values()) <= loop.stats.records)
        _wait(lambda: not loop._uncommitted)
    except BaseException:
        loop.stop()
        runner.join(30)
        raise
    return runner


def test_a_trickle_is_committed_coalesced_and_whole_at_stop(
    kafka: KafkaUnderTest, registry_url: str, unique: str
) -> None:
    cfg = Config(app_id=f"commits{unique}")
    partitions, serde = loop_topics(kafka.bootstrap, registry_url, cfg)
    loop = DirectIngest(cfg, kafka.bootstrap, serde, ingest_settings(cfg), batch_max=50)
    runner = start_caught_up(loop, kafka.bootstrap, partitions)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all", "enable.idempotence": True})
    try:
        # then one SMS at a time, ~25 ms apart
        commits_before, batches_before, started = loop.stats.commits, loop.stats.batches, time.monotonic()
        for i in range(SMS):
            (rec,) = segment_records(f"Your code is {100000 + i}", 0, "single", 0, source=f"8526100{i:04d}")
            producer.produce(RAW_TOPIC, serde.encode(RAW_TOPIC, rec), f"{unique}|{i}".encode())
            producer.flush(10)
            time.sleep(0.025)
        ends = {p: o for p, o in _ends(kafka.bootstrap, partitions).items() if o > 0}
        group = ingest_group(cfg.app_id)
        _wait(
            lambda: (
                {
                    p: o
                    for p, o in committed(kafka.bootstrap, group, RAW_TOPIC, partitions).items()
                    if p in ends
                }
                == ends
            )
        )
        elapsed = time.monotonic() - started
        commits, batches = loop.stats.commits - commits_before, loop.stats.batches - batches_before
        # at most one commit per COMMIT_INTERVAL_S, however many batches the trickle made
        assert 1 <= commits <= elapsed / COMMIT_INTERVAL_S + 2, (commits, batches, elapsed)
        assert loop.stats.commit_failures == 0
        # what the loop holds as committed is what the broker has (ticks and expiry read it)
        _wait(lambda: {p: s.committed for p, s in loop.partitions.items() if p in ends} == ends)
        # the last batches of a trickle are committed once the loop is idle, without more records
        assert not loop._uncommitted and loop._committing is None
    finally:
        loop.stop()
        runner.join(30)
    assert not runner.is_alive()
    got = committed(kafka.bootstrap, ingest_group(cfg.app_id), RAW_TOPIC, partitions)
    assert {p: o for p, o in got.items() if p in ends} == ends
