"""The double-list stage (issue 11, docs/double-list.md): route observations -> health -> per-scope decisions.

Three agents (declared in streams/topology.py), each a thin shell around a pure class of ``smsflow.routing``
(the webhook attempts among the observations are written by the deliver stage as it makes them,
``KafkaDelivery._observe``; the carriers' by the connectors):

- ``routes-health``: sms.routes.observations.v1 + clock ticks -> ``HealthFeed`` -> sms.routes.health.v1. One
  partition: one aggregator closes every route's window together. Its state (the feed's snapshot, with the
  offset of the last observation applied) is in the ``routes-health`` table, so a restart neither loses nor
  double-counts observations;
- ``routes-scoping``: sms.routes.health.v1 -> one copy per scope that lists the route, keyed by scope;
- ``routes-decide``: those copies + sms.routes.overrides.v1 (pins, and a copy of each policy change) ->
  ``ScopeDesk`` (``DoubleList``) -> sms.routes.decisions.v1. ``ScopeState`` per scope lives in the
  ``routes-scopes`` table. Every input carries its own time (a window end, an override's time); nothing here
  reads the wall clock, so re-running over the same health topic gives the same decisions, and a restarted
  worker continues without a spurious flip.

The policies are the config's, replaced or added to by the API's (``PolicyBook`` follows
sms.routes.policies.v1 in every worker: the scoping agent needs them too), then the subscriptions' double
lists. A policy change is applied without a restart: the section is rebuilt at once (the next health copy
of that scope is decided under the new lists), and the decide agent makes the audited ``policy_set`` /
``policy_deleted`` decision from the copy of the change the API also writes to sms.routes.overrides.v1 (no
agent reads a compacted topic: its offset gaps would hold the commit, docs/consistency.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from faust.types import TP
from opentelemetry import context as otel_context

from smsflow.delivery.failover import keep_listed, lists_routes, with_subscription_lists
from smsflow.metrics import (
    ROUTE_ACTIVE,
    ROUTE_BOTH_DEGRADED,
    ROUTE_DECISIONS,
    ROUTE_HEALTH_SCORE,
    ROUTE_HEALTH_STATE,
    ROUTE_PINNED,
)
from smsflow.routing.decisions import Decision, ScopeState, ops_alert
from smsflow.routing.feed import HealthFeed
from smsflow.routing.health import HealthRecord, HealthState
from smsflow.routing.model import (
    ListName,
    PolicyError,
    RoutingSection,
    parse_override,
    with_api_policies,
)
from smsflow.routing.ops_webhook import ops_webhook_sender
from smsflow.routing.policy_book import PolicyBook
from smsflow.routing.policy_changes import POLICY_CHANGE, PolicyChange
from smsflow.routing.scopes import ScopeDesk, scopes_of
from smsflow.schemas import (
    ROUTE_DECISIONS_TOPIC,
    ROUTE_HEALTH_TOPIC,
    ROUTE_OBSERVATIONS_TOPIC,
)
from smsflow.subscriptions.model import Subscription
from smsflow.telemetry import headers_from_context, tracer
from smsflow.topics import TopicSpec
from streams.context import StreamContext
from streams.offsets import InOrderGate, admit_in_order

log = logging.getLogger(__name__)
_tracer = tracer("smsflow.streams.routes")
FEED_KEY = "feed"
# How often the health feed's snapshot is written at most, and after how many records: see health().
SNAPSHOT_INTERVAL_S = 0.1
SNAPSHOT_MAX_PENDING = 1000
SNAPSHOT_SHARE = 0.1  # and further apart when one takes longer than a tenth of that


def ticks_topic_name(app_id: str) -> str:
    return f"{app_id}-routes-ticks"


def scoped_topic_name(app_id: str) -> str:
    return f"{app_id}-routes-scoped"


def routes_topic_specs(app_id: str) -> list[TopicSpec]:
    """The stage's internal topics, created before the worker starts (as ingest's ticks are)."""
    return [
        TopicSpec(ticks_topic_name(app_id), 1, retention_ms=3_600_000),
        TopicSpec(scoped_topic_name(app_id), 1, retention_ms=7 * 86_400_000),
    ]


def show_health(record: HealthRecord) -> None:
    ROUTE_HEALTH_SCORE.labels(record.route_id).set(record.score)
    for state in HealthState:
        ROUTE_HEALTH_STATE.labels(record.route_id, state.value).set(1 if state is record.state else 0)


def show_state(state: ScopeState, decisions: list[Decision]) -> None:
    for name in ListName:
        ROUTE_ACTIVE.labels(state.scope, name.value).set(1 if state.active is name else 0)
    ROUTE_BOTH_DEGRADED.labels(state.scope).set(1 if state.both_degraded else 0)
    ROUTE_PINNED.labels(state.scope).set(1 if state.pinned_by is not None else 0)
    for d in decisions:
        ROUTE_DECISIONS.labels(d.scope, d.kind.value).inc()


@dataclass(frozen=True)
class RoutesTopics:
    """What the stage writes to (the topology declares them)."""

    ticks: faust.TopicT
    scoped: faust.TopicT
    health: faust.TopicT
    decisions: faust.TopicT
    ops: faust.TopicT  # sms.ops.events.v1: the "both degraded" alert, raised and cleared


class RoutesStage:
    """The three agents' handlers and the tick timer; state in the ``routes-health`` table (one key, the
    feed's snapshot) and the ``routes-scopes`` table (``ScopeState`` per scope)."""

    def __init__(
        self, app: faust.App, ctx: StreamContext, topics: RoutesTopics, feed_table: Any, scope_table: Any
    ) -> None:
        self.app = app
        self.ctx = ctx
        self.section = ctx.config.routing
        self.topics = topics
        self.ticks_name = topics.ticks.get_topic_name()
        self.scoped_name = topics.scoped.get_topic_name()
        self.feed_table = feed_table
        self.scope_table = scope_table
        self.desks: dict[str, ScopeDesk] = {}
        self._feed: HealthFeed | None = None
        self.subscriptions: dict[str, Subscription] = {}
        self.lists_ready = asyncio.Event()  # set once the API's policies and subscriptions' lists are used
        self.book = PolicyBook(ctx.bootstrap, "route-policies")
        self.book.listeners.append(self._policy_changed)
        ctx.loading_tasks.append(self.load_policies)
        app.on_before_shutdown.connect(self.close_policies)  # type: ignore[arg-type]
        self.ops_webhook = ops_webhook_sender(self.section)
        # Health windows and a scope's decisions depend on the order of their inputs; after Faust drops a
        # run of fetched records (docs/consistency.md) the later ones must wait for the guard's re-read, as
        # in ingest: the feed would skip the re-read ones as "applied" (their offsets are lower) and judge
        # windows without them (an invented both_degraded after a restart, tests/e2e/test_double_list.py).
        self.in_order = InOrderGate()
        app.on_partitions_revoked.connect(self.on_partitions_revoked)  # type: ignore[arg-type]
        self.use(self.section)

    async def on_partitions_revoked(self, sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        for tp in revoked:
            self.in_order.forget(tp)  # its next owner (this worker too) starts from the committed offset

    def admitted(self, message: Any) -> bool:
        return admit_in_order(self.in_order, self.app.consumer, message, message.tp)

    def merged(self) -> RoutingSection:
        """The config's policies, replaced or added to by the API's, then the subscriptions' lists."""
        section = with_api_policies(self.ctx.config.routing, self.book.api.policies())
        return with_subscription_lists(section, self.subscriptions.values())

    async def load_policies(self) -> None:
        """A loading task: the API's policies read whole before the stage decides anything."""
        await self.book.start()
        self.use(self.merged())

    async def close_policies(self, app: Any, **kwargs: Any) -> None:
        await self.book.stop()
        if self.ops_webhook is not None:
            await self.ops_webhook.close()

    async def _policy_changed(self, change: PolicyChange) -> None:
        self.use(self.merged())
        log.info(
            "routes: policy for %s now %s (v%d)",
            change.scope,
            "deleted" if change.deleted else "set",
            change.version,
        )

    def use(self, section: RoutingSection) -> None:
        """The section to decide by (``merged``: the config's, the API's policies, the subscriptions' lists).
        A scope whose policy did not change keeps its desk; its state is in the table either way."""
        self.section = section
        desks = {}
        for p in section.policies:
            desk = self.desks.get(p.scope.key)
            desks[p.scope.key] = desk if desk is not None and desk.policy == p else ScopeDesk(section, p)
        self.desks = desks
        if self._feed is not None:
            self._feed.set_section(section)

    async def follow_subscriptions(self) -> None:
        """A task: every subscription with a secondary list gets a policy, kept up to date as they change
        through the API (the worker's subscription store follows sms.subscriptions.v1)."""
        await self.book.loaded.wait()
        store = self.ctx.subscriptions
        if store is not None:
            await self.ctx.subscriptions_ready.wait()
            # only those with a secondary list: the rest make no policy (lists_routes)
            self.subscriptions = {sub.id: sub for sub in await store.list() if lists_routes(sub)}
            store.add_listener(self._subscription_changed)
        self.use(self.merged())
        self.lists_ready.set()

    async def _subscription_changed(self, subscription_id: str, sub: Subscription | None) -> None:
        # a subscription with one list, before and after, changes no policy: rebuilding for each of every
        # tenant's changes cost O(all subscriptions)
        if keep_listed(self.subscriptions, subscription_id, sub):
            self.use(self.merged())

    async def feed(self) -> HealthFeed:
        if self._feed is None:
            # the subscriptions' routes first: a snapshot restored without them would forget their windows
            # (a failed-over primary endpoint would look unjudged, i.e. healthy)
            await self.lists_ready.wait()
            self._feed = HealthFeed(self.section, start=int(time.time() * 1000))
            saved = self.feed_table.get(FEED_KEY)
            if saved is not None:
                self._feed.restore(saved)  # after a restart: continue where the changelog says we were
        return self._feed

    async def tick(self) -> None:
        """The timer: the wall clock, for the health agent to close windows with."""
        await self.topics.ticks.send(value=orjson.dumps({"now": int(time.time() * 1000)}), partition=0)

    def observations_read(self, f: HealthFeed) -> bool:
        """Whether every observation written so far was applied. Until then a tick must not close windows:
        after a restart the ticks are recent while the observations still to read are older, and windows
        closed without them would show a route as healthy (or silent) that was not."""
        try:
            highwater = self.app.consumer.highwater(TP(ROUTE_OBSERVATIONS_TOPIC, 0))
        except Exception:  # not fetched yet
            return False
        return highwater is not None and f.offset + 1 >= highwater

    async def publish_health(self, records: list[HealthRecord]) -> None:
        for rec in records:
            value = self.ctx.serde.encode(ROUTE_HEALTH_TOPIC, rec.to_record())
            await self.topics.health.send(key=rec.route_id.encode(), value=value)
            show_health(rec)
        if records:
            # acked before the table says they were made: a crash in between re-makes them (same windows),
            # never loses them
            await self.app.producer.flush()

    async def health(self, stream: faust.StreamT[bytes]) -> None:
        """Observations and ticks -> health records, one per route per step.

        Each record is applied and its health records published at once; the feed's snapshot (the
        ``routes-health`` table) is written after a batch of them, and only then are they acked: at most every
        ``SNAPSHOT_INTERVAL_S`` (or ten times the last snapshot's time, when longer) or after
        ``SNAPSHOT_MAX_PENDING`` records. The snapshot holds every route's windows; written after each record
        it cost O(routes) per record, O(routes²) per second once every route reports (with 100 busy
        double-listed endpoints, more than a core: docs/BENCHMARKS.md, "webhook routes"). A record held for
        the next snapshot waits for the next event after the gap (a tick comes every
        ``pipeline.tick_interval_s``); a crash before its snapshot leaves it unacked, so it is read again
        after the restart and applied to the restored feed, whose offset skips what the snapshot already
        held: counted once either way."""
        pending: list[Any] = []
        written, gap = float("-inf"), SNAPSHOT_INTERVAL_S
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            f = await self.feed()
            msg = event.message
            if msg.topic != self.ticks_name and not self.admitted(msg):
                continue  # let go unacked: read again after the guard's re-read
            pending.append(event)
            try:
                if msg.topic == self.ticks_name:
                    if not self.observations_read(f):
                        records = []  # a backlog after a restart: its own times move the clock, not ours
                    else:
                        records = f.on_tick(int(orjson.loads(event.value)["now"]))
                else:
                    rec = self.ctx.serde.decode(ROUTE_OBSERVATIONS_TOPIC, event.value)
                    records = f.on_record(rec, msg.offset)
            except Exception:
                log.exception("routes: %s %d:%d not applied", msg.topic, msg.partition, msg.offset)
                records = []
            await self.publish_health(records)
            if len(pending) < SNAPSHOT_MAX_PENDING and time.monotonic() - written < gap:
                continue  # acked with the next snapshot
            began = time.monotonic()
            self.feed_table[FEED_KEY] = f.snapshot()
            written = time.monotonic()
            # a snapshot of many routes costs more: space them so they take at most SNAPSHOT_SHARE of the time
            gap = max(SNAPSHOT_INTERVAL_S, (written - began) / SNAPSHOT_SHARE)
            acked, pending = pending, []
            for e in acked:
                await stream.ack(e)

    async def scoping(self, stream: faust.StreamT[bytes]) -> None:
        """Health records -> a copy for each scope whose lists include the route, keyed by scope."""
        async for event in stream.events():
            await self.lists_ready.wait()  # the API's policies first, or their copies are lost
            try:
                rec = self.ctx.serde.decode(ROUTE_HEALTH_TOPIC, event.value)
            except Exception:
                log.exception("routes: a health record does not decode; skipped")
                continue
            for scope in scopes_of(self.section, str(rec["route_id"])):
                value = orjson.dumps({"scope": scope, "health": rec})
                await self.topics.scoped.send(key=scope.encode(), value=value)

    async def publish_decisions(self, state: ScopeState, decisions: list[Decision]) -> None:
        for d in decisions:
            value = self.ctx.serde.encode(ROUTE_DECISIONS_TOPIC, d.to_record())
            # a span of its own, linked to no SMS: a decision is caused by windows, not by one message
            with _tracer.start_as_current_span(
                "route.decision",
                context=otel_context.Context(),
                attributes={
                    "smsflow.scope": d.scope,
                    "smsflow.decision.kind": d.kind.value,
                    "smsflow.decision.active": d.active.value,
                    "smsflow.decision.id": d.decision_id,
                },
            ):
                headers = headers_from_context()
                await self.topics.decisions.send(key=d.scope.encode(), value=value, headers=headers)
            alert = ops_alert(d)
            if alert is not None:
                await self.topics.ops.send(key=d.scope.encode(), value=orjson.dumps(alert))
                if self.ops_webhook is not None:
                    self.ops_webhook.enqueue(alert)
            log.info("route decision %s %s -> %s: %s", d.decision_id, d.kind.value, d.active.value, d.reason)
        if decisions:
            await (
                self.app.producer.flush()
            )  # as for health: a decision is on its topic before the state says so
        show_state(state, decisions)

    def apply_policy(self, change: PolicyChange) -> tuple[str, ScopeState, list[Decision]] | None:
        """A policy change read by the decide agent: the section rebuilt (if the worker's ``PolicyBook`` has
        not seen it yet) and the audited decision, by the policy that decides from now on (or, when nothing
        is left for the scope, by the deleted one)."""
        scope = change.scope
        before = self.desks.get(scope)
        if self.book.api.apply(change):
            self.use(self.merged())
        desk = self.desks.get(scope)
        if desk is None and change.deleted and change.previous is not None:
            desk = ScopeDesk(self.section, change.previous)
        if desk is None:
            desk = before
        if desk is None:
            return None  # deleted, never decided here, nothing to audit against
        state, decisions = desk.on_policy(_state(self.scope_table, desk, scope), change)
        return scope, state, decisions

    async def decide(self, stream: faust.StreamT[bytes]) -> None:
        """Per-scope health copies, overrides and policy changes -> decisions; the scope's state in its
        table."""
        async for event in stream.events():
            await self.lists_ready.wait()  # the API's policies' desks exist before their records are judged
            if not self.admitted(event.message):
                continue
            try:
                body = orjson.loads(event.value)
                if event.message.topic != self.scoped_name and POLICY_CHANGE in body:
                    applied = self.apply_policy(PolicyChange.from_record(body[POLICY_CHANGE]))
                    if applied is None:
                        continue
                    scope, state, decisions = applied
                elif event.message.topic == self.scoped_name:
                    scope, record = str(body["scope"]), HealthRecord.from_record(body["health"])
                    desk = self.desks.get(scope)
                    if desk is None:
                        continue  # a policy removed from the config since
                    state, decisions = desk.on_health(_state(self.scope_table, desk, scope), record)
                else:
                    override = parse_override(body)
                    scope = override.scope.key
                    desk = self.desks.get(scope)
                    if desk is None:
                        log.warning("routes: override for %s, which has no policy; ignored", scope)
                        continue
                    state, decisions = desk.on_override(_state(self.scope_table, desk, scope), override)
            except (PolicyError, ValueError, KeyError, TypeError) as exc:
                log.error("routes: %s %d not applied: %s", event.message.topic, event.message.offset, exc)
                continue
            await self.publish_decisions(state, decisions)
            self.scope_table[scope] = state.to_dict()


def _state(table: Any, desk: ScopeDesk, scope: str) -> ScopeState:
    saved = table.get(scope)
    return desk.initial() if saved is None else ScopeState.from_dict(saved)
