"""The direct ingest loop's outputs on a real broker: the outputs of one batch go out together, at the batch's
flush, as one produce request per partition they go to — not one request each as they are produced (each of
those also woke the next stage's fetch: docs/BENCHMARKS.md, "Issue 13, the ingest loop's outputs in one
request per batch"). Counted by librdkafka's own statistics of the loop's producer."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Producer

from smsflow.config import Config
from smsflow.ingest.loop import DirectIngest
from smsflow.ingest.processor import ingest_settings
from smsflow.schemas import RAW_TOPIC
from tests.factories import segment_records
from tests.integration.test_ingest_loop_commits import _ends, _wait, loop_topics, start_caught_up

if TYPE_CHECKING:
    from tests.conftest import KafkaUnderTest

pytestmark = pytest.mark.integration

BURST = 60


def test_a_batchs_outputs_go_in_one_produce_request_per_partition(
    kafka: KafkaUnderTest, registry_url: str, unique: str
) -> None:
    cfg = Config(app_id=f"requests{unique}")
    partitions, serde = loop_topics(kafka.bootstrap, registry_url, cfg)
    produce_requests: list[int] = []

    def on_stats(raw: str) -> None:
        stats: dict[str, Any] = json.loads(raw)
        produce_requests.append(sum(b.get("req", {}).get("Produce", 0) for b in stats["brokers"].values()))

    loop = DirectIngest(
        cfg,
        kafka.bootstrap,
        serde,
        ingest_settings(cfg),
        batch_max=100,
        producer_conf={"statistics.interval.ms": 50, "stats_cb": on_stats},
        # no punctuation in the measured window: its expiry of other tests' dedup entries writes changelog
        # tombstones, produce requests that no batch made
        tick_interval_s=3600,
    )

    def requests_so_far() -> int:
        time.sleep(0.2)  # librdkafka queues a reading every 50 ms; poll serves what is queued
        loop.producer.poll(0)
        return produce_requests[-1]

    runner = start_caught_up(loop, kafka.bootstrap, partitions)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all", "enable.idempotence": True})
    try:
        before, batches_before, messages_before = requests_so_far(), loop.stats.batches, loop.stats.produced
        # one conversation (one raw partition, one destination: one inbound partition), appended at once
        for i in range(BURST):
            (rec,) = segment_records(f"Your code is {200000 + i}", 0, "single", 0, source=f"8526200{i:04d}")
            producer.produce(RAW_TOPIC, serde.encode(RAW_TOPIC, rec), f"85230001000|{unique}".encode())
        producer.flush(10)
        _wait(lambda: sum(_ends(kafka.bootstrap, partitions).values()) <= loop.stats.records)
        _wait(lambda: not loop._uncommitted)
        requests, batches = requests_so_far() - before, loop.stats.batches - batches_before
        produced = loop.stats.produced - messages_before
        # each message: its inbound record and its dedup entry (the ingest-seen changelog)
        assert produced >= 2 * BURST
        # per batch: one request for the inbound partition and one for the changelog partition
        assert batches < BURST / 4, f"the burst was read in {batches} batches: not a test of batching"
        assert requests <= 2 * batches, (
            f"{requests} produce requests for {produced} records in {batches} batches"
        )
    finally:
        loop.stop()
        runner.join(30)
    assert not runner.is_alive()
