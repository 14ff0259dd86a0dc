"""The Faust application: one app, each stage an agent, state in tables with changelogs.

Processing guarantee is at-least-once (Faust's exactly_once is unreliable: faust-streaming #517, #323, #440,
#177). Every effect is idempotent instead: message ids are derived from Kafka positions, so reprocessing
after a crash re-emits the same message under the same id, and receivers drop the copy by webhook-id.
Concurrency lives inside single actors with explicit acks (never ``agent(concurrency>1)``, #606).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust

from smsflow.config import Config
from smsflow.serde import Serde, registry_client


@dataclass
class StreamContext:
    config: Config
    bootstrap: str
    serde: Serde
    partitions: int
    roles: set[str] = field(default_factory=lambda: {"ingest", "deliver"})
    extras: dict[str, Any] = field(default_factory=dict)
    # set once the subscriptions table is loaded: no message is matched against a half-read table
    subscriptions_ready: asyncio.Event = field(default_factory=asyncio.Event)


def build_app(
    config: Config,
    bootstrap: str,
    registry_url: str,
    roles: set[str] | None = None,
    data_dir: str | None = None,
    partitions: int | None = None,
) -> tuple[faust.App, StreamContext]:
    """``partitions``: of sms.raw.v1 on the cluster; ingest tables and ticks are co-partitioned with it."""
    partitions = partitions or config.kafka.partitions
    datadir = Path(data_dir or config.data_dir) / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        config.app_id,
        broker=[f"kafka://{b.strip()}" for b in bootstrap.split(",")],
        store="memory://",
        datadir=str(datadir),
        topic_replication_factor=config.kafka.replication_factor,
        topic_partitions=partitions,
        producer_acks=-1,
        producer_linger_ms=1,
        broker_commit_every=500,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        web_enabled=False,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
    )
    serde = Serde(registry_client(registry_url))
    ctx = StreamContext(config, bootstrap, serde, partitions, roles or {"ingest", "deliver"})
    if "ingest" in ctx.roles:
        from streams.ingest import register_ingest

        register_ingest(app, ctx)
    if "deliver" in ctx.roles:
        from streams.deliver import register_deliver

        register_deliver(app, ctx)
    return app, ctx
