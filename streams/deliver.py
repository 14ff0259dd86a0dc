"""Delivery agents: sms.inbound.v1 x subscriptions -> signed webhook POSTs; retries; dead letters; events.

Concurrency inside one actor, with explicit acks (never ``agent(concurrency>1)``, faust-streaming #606): each
inbound event starts one task per matching subscription and is acked when every one of them has reached a
durable outcome — delivered, handed to the retry topic, or dead-lettered. Faust commits only the contiguous
acked prefix of a partition, so a crash replays exactly the events whose outcome was not yet durable, and
their webhooks carry the same webhook-id as before.

A slow or dead endpoint cannot hold others up: the sender gives each endpoint its own slots; a message that
cannot get one in time is moved to the retry topic ("deferred") instead of occupying the worker.

Batched subscriptions (``sub.batch``): the message joins that subscription's open batch, and its inbound
event stays unacked until the batch's POST has a durable outcome, so the ack discipline is the same as for
single messages; the batch is sent when full or when its first message has waited ``max_wait_ms``.

Retries ride on ``sms.webhook.retry.v1``. Its agent holds each record (unacked) until it is due, so records
due at different times for different endpoints never wait for one another and nothing sleeps in a consumer
loop. After the last attempt a message goes to ``sms.webhook.dlq.v1`` with the reason. Record formats:
``smsflow.delivery.records``. A record due in hours holds its partition's committed offset back, so a restart
reads the records behind it again: the attempts ledger (``smsflow.delivery.attempts``, ADR 0005) says which of
them were already carried out, and those are acked without sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import faust
import orjson
from opentelemetry import trace
from opentelemetry.context import Context

from smsflow.delivery.active_lists import ActiveLists, FollowedActiveLists
from smsflow.delivery.attempts import AttemptLedger, ledger_key, ledger_value
from smsflow.delivery.callbacks import CallbackTarget
from smsflow.delivery.circuits import CircuitStore, circuit_config
from smsflow.delivery.dispatcher import BatchDispatcher
from smsflow.delivery.effects import attempt_effects
from smsflow.delivery.engine import DeliveryEngine
from smsflow.delivery.events import AttemptResult, DeliveryEvent, DeliveryState
from smsflow.delivery.failover import (
    ActiveList,
    EndpointChoice,
    choose_endpoint,
    keep_listed,
    lists_routes,
    next_endpoint,
    route_of_endpoint,
    webhook_route_urls,
    with_subscription_lists,
)
from smsflow.delivery.pings import EndpointPinger
from smsflow.delivery.policy import EndpointCircuit
from smsflow.delivery.readings import RetryReadings
from smsflow.delivery.records import (
    dead_letter_record,
    event_record,
    from_ms,
    queued_event,
    retry_messages,
)
from smsflow.ingest.quarantine import Source, quarantine_record
from smsflow.logsummary import SummarizedLog
from smsflow.payload import webhook_payload
from smsflow.producer import BufferedProducer
from smsflow.routing.attempts import AttemptReader
from smsflow.routing.model import RoutingSection
from smsflow.routing.observations import AttemptTally, WebhookAttempt
from smsflow.schemas import (
    DELIVERY_TOPIC,
    INBOUND_TOPIC,
    OPS_TOPIC,
    QUARANTINE_TOPIC,
    ROUTE_DECISIONS_TOPIC,
    ROUTE_OBSERVATIONS_TOPIC,
    WEBHOOK_ATTEMPTS_TOPIC,
    WEBHOOK_DLQ_TOPIC,
    WEBHOOK_RETRY_TOPIC,
)
from smsflow.subscriptions.holdings import receives
from smsflow.subscriptions.model import Subscription, WebhookEndpoint, utcnow
from smsflow.subscriptions.store import SubscriptionStore
from smsflow.telemetry import (
    LINKED_TRACES_ATTR,
    context_from_headers,
    http_headers_from_context,
    tracer,
)
from streams.context import StreamContext

log = logging.getLogger(__name__)
_floods = SummarizedLog(log)  # per-record lines a flood would repeat (smsflow/logsummary.py)
_tracer = tracer("smsflow.streams.deliver")

MAX_EVENTS_IN_FLIGHT = 4096
MAX_RETRIES_WAITING = 100_000
# How often the webhook attempts tallied for the double-list stage are written: well inside its 1 s grace
# for late records (smsflow.routing.feed.GRACE_MS), and each route costs a record per interval, not per POST.
OBSERVATIONS_INTERVAL_S = 0.25
# Outputs sent at once instead of with the commit's flush (the outputs producer lingers until it, up to 1 s,
# smsflow.roles): records that are rare and that an operator or a test reads as they happen.
_SENT_AT_ONCE = frozenset({QUARANTINE_TOPIC, WEBHOOK_DLQ_TOPIC})


class KafkaDelivery:
    """Runs the delivery engine's decisions against Kafka: events, retry records, dead letters, ops events."""

    def __init__(
        self,
        ctx: StreamContext,
        engine: DeliveryEngine,
        store: SubscriptionStore,
        producer: BufferedProducer | None = None,
        routing: RoutingSection | None = None,
    ) -> None:
        """``producer``: writes every output (events, retry records, dead letters, quarantine) instead of
        Faust's producer; the worker's producer flush, which precedes every offset commit, flushes it too
        (``SmsflowApp.flush_with_producer``). ``routing``: the config's section; when it runs the double-list
        stage, every attempt made on one of its webhook routes is written as an observation for it."""
        self.ctx = ctx
        self.engine = engine
        self.store = store
        self.producer = producer
        self._names: dict[str, str] = {}  # output -> its Kafka topic's name
        self.topics: dict[str, Any] = {}
        self.stats = {"delivered": 0, "retry_scheduled": 0, "dead_lettered": 0, "attempts": 0, "failovers": 0}
        # which list each subscription uses now (sms.routes.decisions.v1); empty = every primary list
        self.active_lists: ActiveLists = ActiveLists()
        # With a double-list stage configured, the attempts it judges webhook routes by are written here as
        # they are made (sms.routes.observations.v1), not read back from sms.delivery.v1 by the stage: that
        # re-read cost every SMS a Faust record and a decode in the worker, though few events are on a route
        # (docs/double-list.md, "Webhook attempts").
        self.routing = routing
        self.attempt_reader: AttemptReader | None = None
        # the attempts not written yet, per route and health step: one record each (flush_observations)
        self.attempt_tally: AttemptTally | None = None
        self._observations_written = asyncio.Lock()  # a commit's flush waits for the timer's writes
        if routing is not None and routing.stage_runs:
            self.attempt_reader = AttemptReader(routing)
            self.attempt_tally = AttemptTally(routing.window.step_ms)
        self._attempt_routes_stale = True  # subscriptions' lists add routes (with_subscription_lists)
        # the subscriptions with a secondary list (lists_routes), by id: read whole once, then kept by the
        # store's change notices (None: not read yet)
        self._listed: dict[str, Subscription] | None = None
        if self.attempt_reader is not None:
            store.add_listener(self._subscriptions_changed)

    async def _send(
        self, topic: str, key: str, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        if self.producer is None:
            await self.topics[topic].send(key=key.encode(), value=value, headers=headers)
            return
        name = self._names.get(topic)
        if name is None:
            name = self._names[topic] = self.topics[topic].get_topic_name()
        await self.producer.send(name, value, key.encode(), headers)
        if topic in _SENT_AT_ONCE:
            await self.producer.push()  # rare, and an operator reads them: not after the commit's linger

    async def event(self, ev: DeliveryEvent) -> None:
        record = event_record(ev)
        await self._send(DELIVERY_TOPIC, ev.message_id, self.ctx.serde.encode(DELIVERY_TOPIC, record))
        if self.attempt_reader is not None:
            try:
                await self._observe(record)
            except Exception:  # health is a by-product of delivery: its failure must not fail the delivery
                log.exception("deliver: an attempt of %s not written for the double list", ev.message_id)

    async def _observe(self, record: dict[str, Any]) -> None:
        """The webhook attempt ``record`` (a delivery event) is, for the double-list stage, if it was made on
        one of its webhook routes: tallied per route and step and written by ``flush_observations`` (by the
        same producer, before the offsets it came from are committed: Invariant A, as for the event)."""
        reader, routing, tally = self.attempt_reader, self.routing, self.attempt_tally
        assert reader is not None and routing is not None and tally is not None
        if self._attempt_routes_stale:
            self._attempt_routes_stale = False  # before the await: a change while it reads marks it again
            if self._listed is None:
                try:
                    subs = await self.store.list()
                except Exception:
                    self._attempt_routes_stale = True  # read again with the next attempt
                    raise
                self._listed = {sub.id: sub for sub in subs if lists_routes(sub)}
            reader.use(with_subscription_lists(routing, self._listed.values()))
        attempt = reader.attempt(record)
        if attempt is not None:
            tally.add(attempt)

    def observe(self, attempt: WebhookAttempt) -> None:
        """An attempt made outside delivery (an endpoint ping) for the double-list stage, with the others."""
        if self.attempt_tally is not None:
            self.attempt_tally.add(attempt)

    async def flush_observations(self, push: bool = False) -> None:
        """Write the tallied attempts (a record per route and health step) to sms.routes.observations.v1.

        Called every ``OBSERVATIONS_INTERVAL_S`` with ``push`` (inside the health stage's grace for late
        records: the records are sent at once, not after the outputs producer's linger, which waits for the
        next commit) and before each flush that precedes an offset commit. A record that cannot be written
        is logged and dropped: health is a by-product of delivery, and a failed write must not fail the
        commit of what was delivered."""
        tally = self.attempt_tally
        if tally is None:
            return
        written = 0
        # One writer at a time: a commit's flush that came while the timer's records were still being handed
        # to the producer (a full local queue makes that wait) must not flush the producer before them.
        async with self._observations_written:
            for rec in tally.take(source="worker"):
                try:
                    value = self.ctx.serde.encode(ROUTE_OBSERVATIONS_TOPIC, rec)
                    await self._send(ROUTE_OBSERVATIONS_TOPIC, str(rec["route_id"]), value)
                    written += 1
                except Exception:
                    route = rec["route_id"]
                    log.exception("deliver: the attempts on %s not written for the double list", route)
        if push and written and self.producer is not None:
            # sends the delivery events lingering with them too; a failure stays for the commit's flush
            await self.producer.push()

    async def _subscriptions_changed(self, subscription_id: str, sub: Subscription | None) -> None:
        if self._listed is None:
            return  # not read yet: the first attempt reads every subscription
        if keep_listed(self._listed, subscription_id, sub):
            self._attempt_routes_stale = True

    async def quarantine(self, value: bytes, partition: int, offset: int, reason: str) -> None:
        """An inbound record that cannot be read: keep it with the reason, do not block the partition."""
        record = quarantine_record(
            "deliver",
            reason,
            received_at=int(time.time() * 1000),
            pdu=value,
            source=Source(INBOUND_TOPIC, partition, offset),
        )
        await self._send(QUARANTINE_TOPIC, INBOUND_TOPIC, self.ctx.serde.encode(QUARANTINE_TOPIC, record))

    async def targets(self, msg: dict[str, Any]) -> list[Subscription]:
        """Enabled subscriptions whose filter matches AND whose owner holds the message (holdings.py)."""
        return self.store.match_index().targets(msg)

    def receives(self, sub: Subscription, msg: dict[str, Any]) -> bool:
        return receives(sub, self.store.holding_of(sub.owner), msg)

    async def queued(self, sub: Subscription, message_id: str) -> None:
        await self.event(queued_event(sub, message_id))

    async def attempt(
        self,
        sub: Subscription,
        messages: list[dict[str, Any]],
        attempt: int,
        first_at: dt.datetime,
        parent: Context | None,
        links: Sequence[trace.Link] = (),
    ) -> None:
        """One POST (one message, or a batch) and everything that follows from it; returns once the outcome
        is handed to the producer (Faust flushes it before committing any offset).

        The endpoint follows the subscription's double list (``smsflow.delivery.failover``): the active list's
        first healthy route; after a failure that says "this route", the next route at once, in this call."""
        active = self.active_lists.of(sub.id)
        choice: EndpointChoice | None = choose_endpoint(sub, active)
        while choice is not None:
            hop = await self._attempt_on(sub, messages, attempt, first_at, parent, links, choice, active)
            if hop is None:
                return
            choice, attempt = hop

    async def _attempt_on(
        self,
        sub: Subscription,
        messages: list[dict[str, Any]],
        attempt: int,
        first_at: dt.datetime,
        parent: Context | None,
        links: Sequence[trace.Link],
        choice: EndpointChoice,
        active: ActiveList | None,
    ) -> tuple[EndpointChoice, int] | None:
        """One attempt at ``choice``; the next endpoint and attempt number when the local rule moves on."""
        mid = str(messages[0]["message_id"])
        hops: list[EndpointChoice] = []

        def failover(result: AttemptResult) -> tuple[WebhookEndpoint, str] | None:
            hop = next_endpoint(sub, active, result)
            if hop is None:
                return None
            hops.append(hop)
            return hop.endpoint, hop.reason

        with _tracer.start_as_current_span(
            "webhook POST",
            context=parent,
            kind=trace.SpanKind.CLIENT,
            links=list(links),
            attributes={
                "smsflow.message_id": mid,
                "smsflow.subscription": sub.id,
                "smsflow.attempt": attempt,
                "smsflow.batch_size": len(messages),
                "smsflow.route.id": choice.route_id,
                "smsflow.route.list": str(choice.list),
                "smsflow.route.choice": choice.reason,
                **({"smsflow.route.decision": active.decision_id} if active and active.decision_id else {}),
                "http.request.method": "POST",
                **_endpoint_attributes(choice.endpoint.url),
                **_linked_traces(links),
            },
        ) as span:
            outcome = await self.engine.attempt(
                sub,
                messages,
                attempt,
                first_at,
                http_headers_from_context(),
                endpoint=choice.endpoint,
                failover=failover,
            )
            self.stats["attempts"] += 1
            result, decision = outcome.result, outcome.decision
            if result is not None and result.status_code is not None:
                span.set_attribute("http.response.status_code", result.status_code)
            span.set_attribute("smsflow.decision", str(decision.action))
            if result is None or not result.ok:
                span.set_status(trace.StatusCode.ERROR, decision.reason)
                span.set_attribute("smsflow.failure", decision.reason)
            headers = _trace_headers()
        effects = attempt_effects(sub, messages, attempt, first_at, outcome, can_fail_over=bool(hops))
        for ev in effects.events:
            await self.event(ev)
        for w in effects.writes:
            await self._send(w.topic, w.key, w.value, headers if w.traced else None)
        if outcome.disabled_reason is not None:
            which = sub.route_id(outcome.disabled_endpoint) if outcome.disabled_endpoint else sub.id
            log.warning("endpoint %s disabled: %s", which, outcome.disabled_reason)
        if effects.fail_over:
            # the local rule: the next attempt goes to the next route now, in this call (the caller's event
            # or retry record stays unacked until it has a durable outcome, as for any attempt)
            assert decision.next_attempt is not None
            self.stats["failovers"] += 1
            return hops[-1], decision.next_attempt
        for name, n in effects.counts.items():
            self.stats[name] += n
        return None

    async def dead_letter_unsent(
        self, subscription_id: str, messages: list[dict[str, Any]], attempt: int, reason: str
    ) -> None:
        """Messages that cannot be attempted at all (their subscription was deleted)."""
        for m in messages:
            mid = str(m["message_id"])
            await self.event(
                DeliveryEvent(
                    state=DeliveryState.DEAD_LETTERED,
                    message_id=mid,
                    subscription_id=subscription_id,
                    attempt=attempt,
                    error=reason,
                    batch_size=len(messages),
                )
            )
            record = dead_letter_record(
                subscription_id, m, attempts=attempt - 1, reason=reason, state="dead_lettered"
            )
            await self._send(WEBHOOK_DLQ_TOPIC, mid, orjson.dumps(record))
        self.stats["dead_lettered"] += len(messages)


def _trace_headers() -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in http_headers_from_context().items()]


def _endpoint_attributes(url: str) -> dict[str, Any]:
    """Where a webhook goes, without query string or credentials (either may hold a customer's secret)."""
    parts = urlsplit(url)
    attrs: dict[str, Any] = {"server.address": parts.hostname or "", "url.path": parts.path or "/"}
    with contextlib.suppress(ValueError):
        attrs["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
    return attrs


def _linked_traces(links: Sequence[trace.Link]) -> dict[str, Any]:
    """A batch's other messages, as a tag too: Zipkin v2 shows no span links."""
    ids = sorted({trace.format_trace_id(link.context.trace_id) for link in links})
    return {LINKED_TRACES_ATTR: ids} if ids else {}


DELIVER_OUTPUTS = (
    DELIVERY_TOPIC,
    WEBHOOK_RETRY_TOPIC,
    WEBHOOK_DLQ_TOPIC,
    WEBHOOK_ATTEMPTS_TOPIC,
    OPS_TOPIC,
    QUARANTINE_TOPIC,
    ROUTE_OBSERVATIONS_TOPIC,
)


class DeliverStage:
    """The delivery agents' handlers: fresh inbound messages, due retries, the batch timer, start and drain.

    ``outputs``: the topic of each name in ``DELIVER_OUTPUTS``. The Kafka side of delivery
    (``ctx.delivery``) is set by the worker before the agents start.
    """

    def __init__(self, ctx: StreamContext, outputs: dict[str, faust.TopicT]) -> None:
        self.ctx = ctx
        self.outputs = outputs
        self.ledger = AttemptLedger(ctx.bootstrap)
        self.circuits: list[CircuitStore] = []  # made at start, once the delivery engine exists
        self.followers: list[FollowedActiveLists] = []
        # the attempts ledger and the endpoint circuits are read whole before anything is delivered
        self.state_ready = asyncio.Event()
        self.gate = asyncio.Semaphore(MAX_EVENTS_IN_FLIGHT)
        # Waiting retries are cheap sleeping tasks; they get their own bound so they never starve fresh
        # messages.
        self.retry_gate = asyncio.Semaphore(MAX_RETRIES_WAITING)
        self.tasks: set[asyncio.Task[None]] = set()
        # Retry records being carried out, by (partition, offset): a rebalance (more likely on a loaded
        # machine) hands a partition back while an earlier reading of a record still sleeps here; without
        # this the record was attempted twice.
        self.readings = RetryReadings()
        self.batches = BatchDispatcher(self.engine)

    def engine(self) -> KafkaDelivery:
        eng = self.ctx.delivery
        if eng is None:
            raise RuntimeError("deliver: the worker did not set up delivery (StreamContext.delivery)")
        eng.topics = self.outputs
        return eng

    def spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def batch_timer(self) -> None:
        """A task: sends batches when full or due."""
        await self.batches.run()

    async def observations_timer(self) -> None:
        """A task: with a double-list stage configured, writes the webhook attempts tallied since the last
        time, every ``OBSERVATIONS_INTERVAL_S`` (the stage counts a record up to 1 s late in its window)."""
        if not self.ctx.config.routing.stage_runs:
            return
        while True:
            await asyncio.sleep(OBSERVATIONS_INTERVAL_S)
            if self.ctx.delivery is not None:
                await self.ctx.delivery.flush_observations(push=True)

    async def load_state(self) -> None:
        """A task: reads the attempts ledger and the endpoint circuits whole before anything is delivered."""
        try:
            # The endpoint circuit: thresholds from webhooks.circuit, streaks kept in sms.webhook.circuits.v1
            eng = self.engine().engine
            eng.circuit = EndpointCircuit(circuit_config(self.ctx.config.webhooks.circuit))
            store = CircuitStore(self.ctx.bootstrap, eng.circuit)
            self.circuits.append(store)
            # the double list's decisions: delivery follows each subscription's active list
            serde = self.ctx.serde
            lists = FollowedActiveLists(
                self.ctx.bootstrap,
                lambda v: serde.decode(ROUTE_DECISIONS_TOPIC, v),
                webhook_route_urls(self.ctx.config.routing),
            )
            self.followers.append(lists)
            # Read at the same time (each in its own consumer thread): after a crash every message waits for
            # this, and one after the other cost seconds of a loaded machine (docs/consistency.md).
            await asyncio.gather(self.ledger.start(), store.start(), lists.start())
            self.engine().active_lists = lists
        except Exception as exc:
            # nothing is delivered without them: say so loudly instead of waiting silently
            log.critical(
                "deliver: cannot read the attempts ledger / endpoint circuits / route decisions, "
                "delivering nothing: %s",
                exc,
            )
            raise
        self.state_ready.set()
        if self.ctx.liveness is not None:
            self.ctx.liveness.startup.mark("delivery state loaded (attempts, circuits, route decisions)")

    async def pings(self) -> None:
        """A task: with a double-list stage configured, pings the endpoints that get no traffic now, so the
        stage keeps judging them (a failed-over primary can be seen healthy again: smsflow.delivery.pings)."""
        routing = self.ctx.config.routing
        if not routing.stage_runs:
            return  # no stage to tell
        await self.state_ready.wait()
        kd = self.engine()

        async def publish(obs: WebhookAttempt) -> None:
            kd.observe(obs)  # written with the delivery attempts of its route and step

        pinger = EndpointPinger(
            kd.engine.sender,
            kd.store.list,
            lambda: kd.active_lists,
            publish,
            interval_s=routing.window.step_s,
            route_of=route_of_endpoint(webhook_route_urls(routing)),
        )
        await pinger.run()

    async def deliver(self, stream: faust.StreamT[bytes]) -> None:
        """The agent of sms.inbound.v1: one task per event, acked once every target's outcome is durable."""
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            await self.gate.acquire()
            self.spawn(self._deliver_one(stream, event))

    async def _one_target(
        self,
        eng: KafkaDelivery,
        sub: Subscription,
        payload: dict[str, Any],
        first_at: dt.datetime,
        parent: Context,
    ) -> None:
        if sub.batch is not None:
            # the message waits for its batch (up to max_wait_ms): ``queued`` says it is in progress
            await eng.queued(sub, payload["message_id"])
            await self.batches.submit(sub, payload, first_at, parent)
        else:
            # Attempted at once: its attempt event (delivered, sent or failed, or retry_scheduled when
            # deferred) is the first of its history; a ``queued`` before it would say nothing new and cost
            # one record per delivery (ADR 0006, step 2).
            await eng.attempt(sub, [payload], 1, first_at, parent)

    async def _deliver_one(self, stream: Any, event: Any) -> None:
        try:
            await self.ctx.subscriptions_ready.wait()
            await self.state_ready.wait()
            eng = self.engine()
            try:
                msg = self.ctx.serde.decode(INBOUND_TOPIC, event.value)
            except Exception as exc:  # a poison record must not stall the partition's commits forever
                part, off = event.message.partition, event.message.offset
                _floods.log(
                    "sms.inbound.v1 records that do not decode",
                    logging.ERROR,
                    "sms.inbound.v1 %d:%d does not decode, quarantined: %s",
                    part,
                    off,
                    exc,
                )
                await eng.quarantine(event.value or b"", part, off, f"inbound record does not decode: {exc}")
                await stream.ack(event)
                return
            parent = context_from_headers(event.headers)
            payload = webhook_payload(msg)
            subs = await eng.targets(msg)
            first_at = utcnow()
            with _tracer.start_as_current_span(
                "deliver",
                context=parent,
                kind=trace.SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.source.name": INBOUND_TOPIC,
                    "messaging.kafka.partition": event.message.partition,
                    "messaging.kafka.offset": event.message.offset,
                    "smsflow.message_id": msg["message_id"],
                    "smsflow.carrier": str(msg.get("carrier_id") or ""),
                    "smsflow.route": str(msg.get("route_id") or ""),
                    "smsflow.segment_count": int(msg.get("segment_count") or 1),
                    "smsflow.subscriptions": len(subs),
                },
            ):
                span_ctx = trace.set_span_in_context(trace.get_current_span())
                results: list[BaseException | None]
                if len(subs) == 1:
                    # the common case, one subscription: awaited in this task, not in a task of its own
                    results = [None]
                    try:
                        await self._one_target(eng, subs[0], payload, first_at, span_ctx)
                    except Exception as exc:
                        results = [exc]
                else:
                    results = await asyncio.gather(
                        *(self._one_target(eng, s, payload, first_at, span_ctx) for s in subs),
                        return_exceptions=True,
                    )
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                # Outcome not durable (a Kafka write failed): leave it unacked, so it is redelivered after a
                # restart
                _floods.log(
                    f"deliveries not completed ({type(failed[0]).__name__})",
                    logging.ERROR,
                    "delivery of %s not completed: %s",
                    msg["message_id"],
                    failed[0],
                )
                return
            await stream.ack(event)
        except Exception as exc:
            _floods.log(
                f"deliver events failed ({type(exc).__name__})",
                logging.ERROR,
                "deliver: event %s:%s failed",
                event.message.partition,
                event.message.offset,
                exc_info=True,
            )
        finally:
            self.gate.release()

    async def deliver_retry(self, stream: faust.StreamT[bytes]) -> None:
        """The agent of the retry topic: each record held (unacked) until due, then attempted once."""
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            await self.retry_gate.acquire()
            self.spawn(self._retry_one(stream, event))

    async def _attempted(self, partition: int, offset: int, attempt: int, outcome: str) -> None:
        """Record in the ledger that this retry record is carried out; called once its outcome is handed to
        the producer, before the ack (a crash in between re-sends it once, under the same webhook-id)."""
        key = ledger_key(partition, offset)
        await self.outputs[WEBHOOK_ATTEMPTS_TOPIC].send(key=key, value=ledger_value(attempt, outcome))
        self.ledger.mark(key)

    async def _retry_one(self, stream: Any, event: Any) -> None:
        part, offset = event.message.partition, event.message.offset
        key = (part, offset)
        try:
            # supersedes an earlier reading still asleep; waits for one attempting (its ledger entry decides)
            await self.readings.arrive(key)
            await self.ctx.subscriptions_ready.wait()
            await self.state_ready.wait()
            if self.ledger.done(part, offset):
                # read again after a restart or rebalance (the committed offset was held back by a record
                # due later): its attempt was made and its outcome is durable; sending again would multiply
                await stream.ack(event)
                return
            eng = self.engine()
            rec = orjson.loads(event.value)
            wait = rec["due_at"] / 1000 - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self.readings.start_attempt(key)
            if self.ledger.done(part, offset):  # carried out meanwhile by another reading of the same record
                await stream.ack(event)
                return
            target = rec.get("callback_target")
            sub: Subscription | None
            if target is not None:  # an outbound status callback (streams/callbacks.py): made, not stored
                sub = self.callback_subscription(CallbackTarget.from_record(target))
            else:
                sub = await eng.store.get(rec["subscription_id"])
            messages = retry_messages(rec)
            if sub is None:
                await eng.dead_letter_unsent(
                    rec["subscription_id"], messages, rec["attempt"], "subscription deleted"
                )
                await self._attempted(part, offset, rec["attempt"], "subscription deleted")
                await stream.ack(event)
                return
            # The owner's holding may have shrunk since the message was matched: what it no longer holds
            # is never sent (tenant isolation holds for retries, resends and recovers too).
            # A callback goes to the URL its own message's sender gave: there is no holding to check.
            unheld = [] if target is not None else [m for m in messages if not eng.receives(sub, m)]
            if unheld:
                reason = "no longer held by the subscription's owner, or no longer matches its filter"
                await eng.dead_letter_unsent(sub.id, unheld, rec["attempt"], reason)
                messages = [m for m in messages if eng.receives(sub, m)]
            if messages:
                # A disabled endpoint is the engine's call: it records failed + dead_lettered, sends nothing.
                first_at = from_ms(rec["first_at"])
                await eng.attempt(
                    sub, messages, rec["attempt"], first_at, context_from_headers(event.headers)
                )
            await self._attempted(part, offset, rec["attempt"], "attempted")
            await stream.ack(event)
        except Exception as exc:
            _floods.log(
                f"deliver-retry events failed ({type(exc).__name__})",
                logging.ERROR,
                "deliver-retry: event %s:%s failed",
                event.message.partition,
                event.message.offset,
                exc_info=True,
            )
        finally:
            self.readings.leave(key)
            self.retry_gate.release()

    def callback_subscription(self, target: CallbackTarget) -> Subscription:
        signer = self.ctx.callbacks
        if signer is None:
            raise RuntimeError("deliver: the worker set up no callback signing (StreamContext.callbacks)")
        return signer.subscription(target)

    async def drain(self, app: faust.App, **kwargs: Any) -> None:
        """Before shutdown: send open batches, stop waiting retries, wait for the attempts in flight."""
        await self.batches.drain(timeout=10)
        # not due yet and not acked: read again from the committed offset after the restart
        self.readings.cancel_waiting()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=10)
        if self.ctx.delivery is not None:
            await self.ctx.delivery.flush_observations()  # the last commit's flush stores them
        await self.ledger.stop()
        for store in self.circuits:
            await store.stop()
        for lists in self.followers:
            await lists.stop()
