"""The worker's topology in one screen: every topic, table, agent and timer, and which handler runs each.

The handlers live in the stage modules (``streams/ingest.py``, ``streams/deliver.py``); this module only
wires them, the way Faust's own examples put app, topics, tables and agents at the top of one file.

    sms.raw.v1 ──┐
    punctuation ─┴─▶ ingest [ingest-partials, ingest-seen] ─▶ sms.inbound.v1 | receipts.v1 | quarantine.v1
        ▲ timer ingest-punctuate: one record per owned partition (drives reassembly timeouts, dedup expiry)
    sms.inbound.v1 ───────▶ deliver       ─▶ webhook POST; sms.delivery.v1 | sms.webhook.retry.v1 | ...dlq.v1
    sms.webhook.retry.v1 ─▶ deliver-retry ─▶ webhook POST; the same, and sms.webhook.attempts.v1 (ledger)
        tasks: batch timer; read the attempts ledger and endpoint circuits; on shutdown: drain

A new stage adds its block here (topics, tables, agents, timers) and its handlers in ``streams/<stage>.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust

from smsflow.ingest.processor import IngestProcessor
from smsflow.schemas import INBOUND_TOPIC, QUARANTINE_TOPIC, RAW_TOPIC, RECEIPTS_TOPIC, WEBHOOK_RETRY_TOPIC
from streams.context import StreamContext
from streams.deliver import DELIVER_OUTPUTS, DeliverStage
from streams.ingest import IngestStage, ingest_settings

# Punctuation (Kafka Streams' name for scheduled work in a Processor): records on an internal topic
# co-partitioned with sms.raw.v1 that drive reassembly timeouts and dedup expiry (ADR 0003). The topic name
# keeps its first spelling so a running deployment's topic stays in use.
PUNCTUATION_RETENTION_S = 3600.0


def punctuation_topic_name(app_id: str) -> str:
    return f"{app_id}-ingest-ticks"


@dataclass(frozen=True)
class Topology:
    """What the worker process needs to know of the topology beyond Faust's own registry."""

    punctuation: faust.TopicT | None  # None without the ingest stage


def _bytes_topic(app: faust.App, *names: str, **kwargs: object) -> faust.TopicT:
    return app.topic(*names, key_serializer="raw", value_serializer="raw", **kwargs)  # type: ignore[arg-type]


def build_topology(app: faust.App, ctx: StreamContext) -> Topology:
    cfg = ctx.config
    punctuation = None
    if "ingest" in ctx.roles:
        # topics
        punctuation_name = punctuation_topic_name(cfg.app_id)
        punctuation = _bytes_topic(
            app, punctuation_name, partitions=ctx.partitions, internal=True, retention=PUNCTUATION_RETENTION_S
        )
        raw_and_punctuation = _bytes_topic(app, RAW_TOPIC, punctuation_name, partitions=ctx.partitions)
        outputs = {
            "inbound": _bytes_topic(app, INBOUND_TOPIC),
            "receipt": _bytes_topic(app, RECEIPTS_TOPIC),
            "quarantine": _bytes_topic(app, QUARANTINE_TOPIC),
        }
        # tables (changelogged, co-partitioned with sms.raw.v1)
        partials = app.Table("ingest-partials", default=None, partitions=ctx.partitions)
        seen = app.Table("ingest-seen", default=None, partitions=ctx.partitions)
        ingest = IngestStage(
            app, ctx, IngestProcessor(partials, seen, ingest_settings(cfg)), outputs, punctuation
        )
        ctx.ingest = ingest.processor
        # agent, timer, rebalance hook
        app.agent(raw_and_punctuation, name="ingest")(ingest.process)
        app.timer(interval=cfg.pipeline.tick_interval_s, name="ingest-punctuate")(ingest.punctuate)
        app.on_partitions_revoked.connect(ingest.on_partitions_revoked)  # type: ignore[arg-type]

    if "deliver" in ctx.roles:
        # topics
        inbound = _bytes_topic(app, INBOUND_TOPIC)
        retry = _bytes_topic(app, WEBHOOK_RETRY_TOPIC)
        deliver = DeliverStage(ctx, {name: _bytes_topic(app, name) for name in DELIVER_OUTPUTS})
        # agents, tasks, shutdown hook (the attempts ledger and circuits are compacted topics it follows)
        app.agent(inbound, name="deliver")(deliver.deliver)
        app.agent(retry, name="deliver-retry")(deliver.deliver_retry)
        app.task(deliver.batch_timer)
        app.task(deliver.load_state)
        app.on_before_shutdown.connect(deliver.drain)  # type: ignore[arg-type]
    return Topology(punctuation)
