"""The worker's topology in one screen: every topic, table, agent and timer, and which handler runs each.

The handlers live in the stage modules (``streams/ingest.py``, ``streams/deliver.py``); this module only
wires them, the way Faust's own examples put app, topics, tables and agents at the top of one file.

    sms.raw.v1 ──┐
    punctuation ─┴─▶ ingest [ingest-partials, ingest-seen] ─▶ sms.inbound.v1 | receipts.v1 | quarantine.v1
        ▲ timer ingest-punctuate: one record per owned partition (drives reassembly timeouts, dedup expiry)
    sms.inbound.v1 ───────▶ deliver       ─▶ webhook POST; sms.delivery.v1 | sms.webhook.retry.v1 | ...dlq.v1
                                                 | sms.routes.observations.v1 (attempts on a webhook route)
        (worker.inbound_reader: direct — read by streams/inbound_reader.py instead of an agent, same handler)
    sms.webhook.retry.v1 ─▶ deliver-retry ─▶ webhook POST; the same, and sms.webhook.attempts.v1 (ledger)
    sms.outbound.status.v1 ▶ deliver-callbacks ─▶ signed POST to the message's callback_url; the same topics
        tasks: batch timer; endpoint pings; the webhook attempts tallied per route written every 0.25 s;
        drain; from app start (ctx.loading_tasks): read the attempts ledger, circuits, route decisions
    sms.routes.observations.v1 ─┐
    <app>-routes-ticks ─────────┴─▶ routes-health [routes-health] ─▶ sms.routes.health.v1
        ▲ timer routes-tick (the wall clock, to close windows with)
    sms.routes.health.v1 ─────────▶ routes-scoping ─▶ <app>-routes-scoped (a copy per scope, key scope)
    <app>-routes-scoped ────────┐
    sms.routes.overrides.v1 ────┴─▶ routes-decide [routes-scopes] ─▶ sms.routes.decisions.v1
                                                                   | sms.ops.events.v1 (both-degraded alert)
        (the double list: docs/double-list.md)
    sms.outbound.v1 ──────┐
    outbound punctuation ─┴▶ outbound-requests [outbound-refs] ─▶ sms.outbound.ledger.v1 (plan)
                                                              | sms.outbound.submit.v1 (a segment per record)
    sms.outbound.ledger.v1 ┐
    outbound punctuation ──┴▶ outbound-status [outbound-status] ─▶ sms.outbound.status.v1
        ▲ timer outbound-punctuate: one record per owned partition (validity expiry; both tables pruned)
    sms.receipts.v1 ──────▶ outbound-receipts ─▶ sms.outbound.ledger.v1 (receipt) | ...receipts.unmatched.v1
        task: follow the ledger's accepted outcomes (the receipt index); on shutdown: stop following
    every stage ▲ timer reread-stalled: a partition whose committed offset sits on a record Faust dropped
        before the agent while later records were acked is re-read from that offset (streams/offsets.py)

A new stage adds its block here (topics, tables, agents, timers) and its handlers in ``streams/<stage>.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust

from smsflow.ingest.processor import IngestProcessor, ingest_settings
from smsflow.outbound.submission import LEDGER_TOPIC
from smsflow.schemas import (
    INBOUND_TOPIC,
    OPS_TOPIC,
    OUTBOUND_STATUS_TOPIC,
    OUTBOUND_TOPIC,
    QUARANTINE_TOPIC,
    RAW_TOPIC,
    RECEIPTS_TOPIC,
    ROUTE_DECISIONS_TOPIC,
    ROUTE_HEALTH_TOPIC,
    ROUTE_OBSERVATIONS_TOPIC,
    ROUTE_OVERRIDES_TOPIC,
    WEBHOOK_RETRY_TOPIC,
)
from streams import offsets
from streams.callbacks import CallbackStage
from streams.context import StreamContext
from streams.deliver import DELIVER_OUTPUTS, MAX_EVENTS_IN_FLIGHT, DeliverStage
from streams.inbound_reader import InboundReader
from streams.ingest import IngestStage
from streams.outbound import OUTPUTS as OUTBOUND_OUTPUTS
from streams.outbound import OutboundStage
from streams.routes import RoutesStage, RoutesTopics, scoped_topic_name, ticks_topic_name

# Punctuation (Kafka Streams' name for scheduled work in a Processor): records on an internal topic
# co-partitioned with sms.raw.v1 that drive reassembly timeouts and dedup expiry (ADR 0003). The topic name
# keeps its first spelling so a running deployment's topic stays in use.
PUNCTUATION_RETENTION_S = 3600.0

# The stalled-partition guard: a stall must hold this many checks in a row (so 1-2 s) before a re-read. The
# condition cannot hold legitimately, so a short wait is safe; each second of it is hold-back after a restart.
STALL_CHECK_INTERVAL_S = 1.0
STALL_CHECKS = 2


def punctuation_topic_name(app_id: str) -> str:
    return f"{app_id}-ingest-ticks"


def outbound_punctuation_topic_name(app_id: str) -> str:
    return f"{app_id}-outbound-ticks"


@dataclass(frozen=True)
class Topology:
    """What the worker process needs to know of the topology beyond Faust's own registry."""

    punctuation: faust.TopicT | None  # None without the ingest stage
    outbound_punctuation: faust.TopicT | None = None  # None without the outbound stage


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
            app,
            ctx,
            IngestProcessor(partials, seen, ingest_settings(cfg)),
            outputs,
            punctuation,
            batch_max=cfg.worker.ingest_batch_max,
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
        if cfg.worker.inbound_reader == "direct":
            # sms.inbound.v1 read by a consumer of its own (streams/inbound_reader.py), the same handler
            reader = InboundReader(
                ctx.bootstrap,
                cfg.app_id,
                deliver._deliver_one,
                deliver.gate,
                deliver.spawn,
                app.producer.flush,
                session_timeout_s=cfg.worker.session_timeout_s,
                heartbeat_interval_s=cfg.worker.heartbeat_interval_s,
                instance_id=cfg.worker.effective_instance_id(),
                on_failure=lambda reason: ctx.liveness.fail(reason) if ctx.liveness else None,
                max_in_flight=MAX_EVENTS_IN_FLIGHT,
            )
            ctx.inbound_reader = reader
            app.task(reader.run)
            app.on_before_shutdown.connect(reader.stop_on_shutdown)  # type: ignore[arg-type]
        else:
            app.agent(inbound, name="deliver")(deliver.deliver)
        app.agent(retry, name="deliver-retry")(deliver.deliver_retry)
        # outbound status callbacks go through the same engine (streams/callbacks.py)
        callbacks = CallbackStage(ctx, deliver)
        app.agent(_bytes_topic(app, OUTBOUND_STATUS_TOPIC), name="deliver-callbacks")(callbacks.callbacks)
        app.task(deliver.batch_timer)
        app.task(deliver.observations_timer)
        ctx.loading_tasks.append(deliver.load_state)
        app.task(deliver.pings)
        app.on_before_shutdown.connect(deliver.drain)  # type: ignore[arg-type]

    if "routes" in ctx.roles and cfg.routing.stage_runs:
        # topics: observations and ticks on one partition (one aggregator closes every route's windows);
        # the per-scope copies too, so one table holds every scope's state
        ticks_name, scoped_name = ticks_topic_name(cfg.app_id), scoped_topic_name(cfg.app_id)
        topics = RoutesTopics(
            ticks=_bytes_topic(app, ticks_name, partitions=1, internal=True),
            scoped=_bytes_topic(app, scoped_name, partitions=1, internal=True),
            health=_bytes_topic(app, ROUTE_HEALTH_TOPIC),
            decisions=_bytes_topic(app, ROUTE_DECISIONS_TOPIC),
            ops=_bytes_topic(app, OPS_TOPIC),
        )
        # tables
        feed_table = app.Table("routes-health", default=None, partitions=1)
        scope_table = app.Table("routes-scopes", default=None, partitions=1)
        routes = RoutesStage(app, ctx, topics, feed_table, scope_table)
        # agents, timer
        observed = _bytes_topic(app, ROUTE_OBSERVATIONS_TOPIC, ticks_name, partitions=1)
        app.agent(observed, name="routes-health")(routes.health)
        app.agent(_bytes_topic(app, ROUTE_HEALTH_TOPIC), name="routes-scoping")(routes.scoping)
        decide_inputs = _bytes_topic(app, scoped_name, ROUTE_OVERRIDES_TOPIC, partitions=1)
        app.agent(decide_inputs, name="routes-decide")(routes.decide)
        app.timer(interval=cfg.pipeline.tick_interval_s, name="routes-tick")(routes.tick)
        app.task(routes.follow_subscriptions)  # subscriptions' double lists are policies too
    outbound_punctuation = None
    if "outbound" in ctx.roles:
        # topics (the ledger, keyed by message id, is co-partitioned with the status table)
        name = outbound_punctuation_topic_name(cfg.app_id)
        outbound_punctuation = _bytes_topic(
            app, name, partitions=ctx.partitions, internal=True, retention=PUNCTUATION_RETENTION_S
        )
        # requests beside the ticks: the references table is pruned on them, in the agent that owns it
        requests = _bytes_topic(app, OUTBOUND_TOPIC, name, partitions=ctx.partitions)
        ledger_and_punctuation = _bytes_topic(app, LEDGER_TOPIC, name, partitions=ctx.partitions)
        receipts = _bytes_topic(app, RECEIPTS_TOPIC)
        # tables: concatenation references by sender and destination, message tracks by message id
        refs = app.Table("outbound-refs", default=None, partitions=ctx.partitions)
        tracks = app.Table("outbound-status", default=None, partitions=ctx.partitions)
        outputs = {topic: _bytes_topic(app, topic) for topic in OUTBOUND_OUTPUTS}
        outbound = OutboundStage(app, ctx, outputs, refs, tracks, outbound_punctuation)
        # agents, timer, task, shutdown hook
        app.agent(requests, name="outbound-requests")(outbound.requests)
        app.agent(ledger_and_punctuation, name="outbound-status")(outbound.status)
        app.on_partitions_revoked.connect(outbound.on_partitions_revoked)  # type: ignore[arg-type]
        app.agent(receipts, name="outbound-receipts")(outbound.receipts)
        app.timer(interval=max(1.0, cfg.pipeline.tick_interval_s), name="outbound-punctuate")(
            outbound.punctuate
        )
        app.task(outbound.follow_ledger)
        app.on_before_shutdown.connect(outbound.stop)  # type: ignore[arg-type]
    # every stage: re-read a partition whose committed offset is stuck on a record Faust dropped on the way
    # to the agent (streams/offsets.py)
    guard = offsets.StalledPartitionGuard(checks=STALL_CHECKS)

    async def reread_stalled() -> None:
        await offsets.reread_stalled(app, guard)

    app.timer(interval=STALL_CHECK_INTERVAL_S, name="reread-stalled")(reread_stalled)
    return Topology(punctuation, outbound_punctuation)
