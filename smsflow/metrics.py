"""Prometheus metrics: each process serves /metrics on its own port when ``metrics.<role>_port`` is set."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

CONNECTOR_PDUS = Counter(
    "smsflow_connector_pdus_total",
    "deliver_sm/data_sm received, by carrier and answer",
    ["carrier", "answer"],
)
CONNECTOR_STORE_SECONDS = Histogram(
    "smsflow_connector_store_seconds",
    "time from PDU received to Kafka acknowledged (what the carrier waits for)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class StatsCollector(Collector):
    """Exposes the counters of a dataclass of ints (e.g. the ingest stage's Stats) as Prometheus counters."""

    def __init__(self, prefix: str, doc: str, get: Callable[[], Any]) -> None:
        self.prefix, self.doc, self.get = prefix, doc, get

    def collect(self) -> Iterator[CounterMetricFamily]:
        stats = self.get()
        if stats is None:
            return
        items = stats.items() if isinstance(stats, dict) else dataclasses.asdict(stats).items()
        for name, value in items:
            if isinstance(value, int):
                yield CounterMetricFamily(f"{self.prefix}_{name}", f"{self.doc}: {name}", value=value)


def serve(port: int | None, host: str = "127.0.0.1") -> None:
    if port:
        start_http_server(port, addr=host)


def register_stats(prefix: str, doc: str, get: Callable[[], Any]) -> None:
    REGISTRY.register(StatsCollector(prefix, doc, get))
