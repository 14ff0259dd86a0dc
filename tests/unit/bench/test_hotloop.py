"""The hot-loop prototype's pieces that need no broker: the offsets it commits, and its workload (TrafficMix
stored through the connector's own store path) read back by the ingest processor on its tables (the tables
themselves: tests/unit/ingest/test_tables.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient

from bench.hotloop import CarrierPdus, batch_offsets
from devkit.simulator.traffic import LogicalSms
from smsflow.config import parse_config
from smsflow.ingest.origin import RecordOrigin
from smsflow.ingest.processor import IngestProcessor, ingest_settings
from smsflow.ingest.tables import ChangelogTable
from smsflow.schemas import RAW_TOPIC
from smsflow.serde import Serde


def test_the_batch_commits_the_next_offset_of_each_partition() -> None:
    positions = [("t", 0, 5), ("t", 1, 9), ("t", 0, 6), ("t", 0, 4), ("u", 0, 0)]
    assert batch_offsets(positions) == {("t", 0): 7, ("t", 1): 10, ("u", 0): 1}
    assert batch_offsets([]) == {}


class _Stored:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


class _CapturingProducer:
    """What ``SmppConnector.store`` hands to its producer: (topic, value, key, headers)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, Any, Any]] = []

    async def send(self, topic: str, value: bytes, key: Any = None, headers: Any = None) -> _Stored:
        self.records.append((topic, value, key, headers))
        return _Stored(len(self.records) - 1)


def test_the_workload_is_stored_as_the_connector_stores_it_and_ingest_reassembles_it(
    monkeypatch: Any,
) -> None:
    from connectors.smpp.connector import SmppConnector

    monkeypatch.setenv("T_PW", "pw")
    cfg = parse_config(
        {
            "carriers": [
                {
                    "id": "sim",
                    "route_id": "sim-route",
                    "host": "127.0.0.1",
                    "port": 2775,
                    "system_id": "smsflow",
                    "password_env": "T_PW",
                    "default_region": "HK",
                }
            ]
        }
    )
    serde = Serde(MockSchemaRegistryClient({"url": "mock://hotloop"}))
    producer = _CapturingProducer()
    connector = SmppConnector(cfg.carriers, producer, serde)  # type: ignore[arg-type]
    text = "您的验证码是 825959，请勿泄露。" * 6 + " #42"  # UCS-2, several parts
    sms = LogicalSms("8613812345678", "85230001000", text, 8, "udh8", tag="42")
    single = LogicalSms("85291234567", "85230001000", "Your code is 1234 #43", 0, tag="43")
    source = CarrierPdus(seed=1)
    pdus = source.of(sms) + source.of(single)
    assert len(pdus) > 2

    async def store_all() -> None:
        for p in pdus:
            assert await connector.store(cfg.carriers[0], p) == 0

    asyncio.run(store_all())
    assert len(producer.records) == len(pdus)
    # every segment of one SMS under one key (one partition)
    keys = {key for _, _, key, _ in producer.records[:-1]}
    assert len(keys) == 1

    partials, seen = ChangelogTable(), ChangelogTable()
    processor = IngestProcessor(partials, seen, ingest_settings(cfg))
    bodies = []
    for offset, (topic, value, _, _) in enumerate(producer.records):
        raw = serde.decode(topic, value)
        for item in processor.on_raw(raw, RecordOrigin(RAW_TOPIC, 0, offset), None):
            assert item.kind == "inbound"
            bodies.append(item.record["body"])
    assert bodies == [text, single.text]
    written = {k for _, k, _ in partials.drain()}
    assert (
        any(k.startswith("h|") for k in written) and sum(k.startswith("s|") for k in written) == len(pdus) - 1
    )
    assert len(seen.drain()) == 2  # one dedup entry per message
