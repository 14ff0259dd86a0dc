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
``smsflow.webhooks.records``. A record due in hours holds its partition's committed offset back, so a restart
reads the records behind it again: the attempts ledger (``smsflow.webhooks.attempts``, ADR 0005) says which of
them were already carried out, and those are acked without sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import faust
import orjson
from opentelemetry import trace
from opentelemetry.context import Context

from smsflow.delivery.active_lists import ActiveLists, FollowedActiveLists
from smsflow.delivery.failover import ActiveList, EndpointChoice, choose_endpoint, next_endpoint
from smsflow.payload import webhook_payload
from smsflow.schemas import (
    DELIVERY_TOPIC,
    INBOUND_TOPIC,
    OPS_TOPIC,
    QUARANTINE_TOPIC,
    ROUTE_DECISIONS_TOPIC,
    WEBHOOK_ATTEMPTS_TOPIC,
    WEBHOOK_DLQ_TOPIC,
    WEBHOOK_RETRY_TOPIC,
)
from smsflow.telemetry import (
    LINKED_TRACES_ATTR,
    context_from_headers,
    http_headers_from_context,
    links_from,
    tracer,
)
from smsflow.webhooks.attempts import AttemptLedger, ledger_key, ledger_value
from smsflow.webhooks.batching import BatchAssembler
from smsflow.webhooks.circuits import CircuitStore, circuit_config
from smsflow.webhooks.engine import DeliveryEngine
from smsflow.webhooks.holdings import receives
from smsflow.webhooks.model import (
    AttemptResult,
    DeliveryEvent,
    DeliveryState,
    Subscription,
    WebhookEndpoint,
    utcnow,
)
from smsflow.webhooks.policy import Action, EndpointCircuit
from smsflow.webhooks.records import (
    dead_letter_record,
    event_record,
    from_ms,
    queued_event,
    retry_messages,
    retry_record,
)
from smsflow.webhooks.sender import webhook_id_for
from smsflow.webhooks.store import SubscriptionStore
from streams.app import StreamContext

log = logging.getLogger(__name__)
_tracer = tracer("smsflow.streams.deliver")

MAX_EVENTS_IN_FLIGHT = 4096
MAX_RETRIES_WAITING = 100_000


class KafkaDelivery:
    """Runs the delivery engine's decisions against Kafka: events, retry records, dead letters, ops events."""

    def __init__(self, ctx: StreamContext, engine: DeliveryEngine, store: SubscriptionStore) -> None:
        self.ctx = ctx
        self.engine = engine
        self.store = store
        self.topics: dict[str, Any] = {}
        self.stats = {"delivered": 0, "retry_scheduled": 0, "dead_lettered": 0, "attempts": 0, "failovers": 0}
        # which list each subscription uses now (sms.routes.decisions.v1); empty = every primary list
        self.active_lists: ActiveLists = ActiveLists()

    async def _send(
        self, topic: str, key: str, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        await self.topics[topic].send(key=key.encode(), value=value, headers=headers)

    async def event(self, ev: DeliveryEvent) -> None:
        await self._send(
            DELIVERY_TOPIC, ev.message_id, self.ctx.serde.encode(DELIVERY_TOPIC, event_record(ev))
        )

    async def quarantine(self, value: bytes, partition: int, offset: int, reason: str) -> None:
        """An inbound record that cannot be read: keep it with the reason, do not block the partition."""
        record = {
            "stage": "deliver",
            "carrier_id": "",
            "route_id": "",
            "session_id": "",
            "received_at": int(time.time() * 1000),
            "status": 0,
            "reason": reason,
            "pdu": value,
            "source_topic": INBOUND_TOPIC,
            "source_partition": partition,
            "source_offset": offset,
        }
        await self._send(QUARANTINE_TOPIC, INBOUND_TOPIC, self.ctx.serde.encode(QUARANTINE_TOPIC, record))

    async def targets(self, msg: dict[str, Any]) -> list[Subscription]:
        """Enabled subscriptions whose filter matches AND whose owner holds the message (holdings.py)."""
        return [s for s in await self.store.list() if s.enabled and self.receives(s, msg)]

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
        for ev in outcome.all_events:
            await self.event(ev)
        batched = sub.batch is not None or len(messages) > 1
        if decision.action is Action.DONE:
            self.stats["delivered"] += len(messages)
        elif decision.action is Action.RETRY and outcome.next_endpoint is not None and hops:
            # the local rule: the next attempt goes to the next route now, in this call (the caller's event
            # or retry record stays unacked until it has a durable outcome, as for any attempt)
            assert decision.next_attempt is not None
            self.stats["failovers"] += 1
            return hops[-1], decision.next_attempt
        elif decision.action is Action.RETRY:
            self.stats["retry_scheduled"] += len(messages)
            assert decision.next_attempt is not None and decision.next_attempt_at is not None
            record = retry_record(
                sub.id,
                messages,
                attempt=decision.next_attempt,
                due_at=decision.next_attempt_at,
                first_at=first_at,
                reason=decision.reason,
                batched=batched,
            )
            key = webhook_id_for(sub, messages) if batched else mid
            await self._send(WEBHOOK_RETRY_TOPIC, key, orjson.dumps(record), headers)
        else:
            self.stats["dead_lettered"] += len(messages)
            wid = webhook_id_for(sub, messages)
            for m in messages:
                record = dead_letter_record(
                    sub.id,
                    m,
                    attempts=attempt,
                    reason=decision.reason,
                    state=str(decision.state),
                    webhook_id=wid,
                )
                await self._send(WEBHOOK_DLQ_TOPIC, str(m["message_id"]), orjson.dumps(record))
        if outcome.disabled_reason is not None:
            ops = {
                "type": "endpoint_disabled",
                "subscription_id": sub.id,
                "owner": sub.owner,
                "reason": outcome.disabled_reason,
                "ts": int(time.time() * 1000),
            }
            await self._send(OPS_TOPIC, sub.id, orjson.dumps(ops))
            log.warning("endpoint %s disabled: %s", sub.id, outcome.disabled_reason)
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


@dataclass
class _Waiting:
    future: asyncio.Future[None]
    first_at: dt.datetime
    parent: Context | None


class BatchDispatcher:
    """Collects messages of batched subscriptions and sends each batch when it is full or due.

    ``submit`` returns when the batch holding the message has a durable outcome (or raises if it could not be
    made durable), so the caller acks the inbound event only then.
    """

    def __init__(self, delivery_of: Any, assembler: BatchAssembler | None = None) -> None:
        self._delivery_of = delivery_of  # () -> KafkaDelivery, resolved late (the engine is built after us)
        self.assembler = assembler or BatchAssembler()
        self._waiting: defaultdict[str, defaultdict[str, list[_Waiting]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(
        self, sub: Subscription, payload: dict[str, Any], first_at: dt.datetime, parent: Context | None
    ) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[sub.id][str(payload["message_id"])].append(_Waiting(fut, first_at, parent))
        full = self.assembler.add(sub, payload)
        if full is not None:
            self._spawn(sub.id, full)
        else:
            self._wake.set()  # a new deadline may be the nearest
        await fut

    def _spawn(self, subscription_id: str, messages: list[dict[str, Any]]) -> None:
        t = asyncio.ensure_future(self._flush(subscription_id, messages))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _flush(self, subscription_id: str, messages: list[dict[str, Any]]) -> None:
        waiting = self._waiting[subscription_id]
        waiters = [w for m in messages for w in waiting.pop(str(m["message_id"]), [])]
        if not waiting:
            self._waiting.pop(subscription_id, None)
        error: BaseException | None = None
        try:
            kd = self._delivery_of()
            sub = await kd.store.get(subscription_id)
            if sub is None:
                await kd.dead_letter_unsent(subscription_id, messages, 1, "subscription deleted")
            else:
                first_at = min((w.first_at for w in waiters), default=utcnow())
                parents = [w.parent for w in waiters if w.parent is not None]
                parent = parents[0] if parents else None
                await kd.attempt(sub, messages, 1, first_at, parent, links_from(parents[1:]))
        except Exception as exc:
            log.exception("batch for %s (%d messages) not completed", subscription_id, len(messages))
            error = exc
        for w in waiters:
            if w.future.done():
                continue
            if error is None:
                w.future.set_result(None)
            else:
                w.future.set_exception(error)

    async def run(self) -> None:
        """Timer: sends batches whose first message has waited long enough."""
        while True:
            deadline = self.assembler.next_deadline()
            self._wake.clear()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            for sid, messages in self.assembler.due():
                self._spawn(sid, messages)
            await asyncio.sleep(0)  # let submitters run between sweeps

    async def drain(self, timeout: float) -> None:
        """Send every open batch now and wait for them (shutdown)."""
        for sid, messages in self.assembler.drain():
            self._spawn(sid, messages)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)


def register_deliver(app: faust.App, ctx: StreamContext) -> None:
    inbound = app.topic(INBOUND_TOPIC, key_serializer="raw", value_serializer="raw")
    retry = app.topic(WEBHOOK_RETRY_TOPIC, key_serializer="raw", value_serializer="raw")
    out = {
        name: app.topic(name, key_serializer="raw", value_serializer="raw")
        for name in (
            DELIVERY_TOPIC,
            WEBHOOK_RETRY_TOPIC,
            WEBHOOK_DLQ_TOPIC,
            WEBHOOK_ATTEMPTS_TOPIC,
            OPS_TOPIC,
            QUARANTINE_TOPIC,
        )
    }
    ledger = AttemptLedger(ctx.bootstrap)
    circuits: list[CircuitStore] = []  # made at start, once the delivery engine exists
    followers: list[FollowedActiveLists] = []
    # the attempts ledger and the endpoint circuits are read whole before anything is delivered
    state_ready = asyncio.Event()
    gate = asyncio.Semaphore(MAX_EVENTS_IN_FLIGHT)
    # Waiting retries are cheap sleeping tasks; they get their own bound so they never starve fresh messages.
    retry_gate = asyncio.Semaphore(MAX_RETRIES_WAITING)
    tasks: set[asyncio.Task[None]] = set()
    # Retry records being carried out, by (partition, offset): waiting until due, or attempting. A rebalance
    # (more likely on a loaded machine) hands a partition back from its committed offset while the earlier
    # reading of a record still sleeps here; without this the record was attempted twice when due.
    waiting: dict[tuple[int, int], asyncio.Task[Any]] = {}
    attempting: dict[tuple[int, int], asyncio.Task[Any]] = {}

    def engine() -> KafkaDelivery:
        eng: KafkaDelivery = ctx.extras["delivery"]
        eng.topics = out
        return eng

    batches = BatchDispatcher(engine)

    def spawn(coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    @app.task
    async def _batch_timer() -> None:
        await batches.run()

    @app.task
    async def _load_delivery_state() -> None:
        try:
            await ledger.start()
            # The endpoint circuit: thresholds from webhooks.circuit, streaks kept in sms.webhook.circuits.v1
            eng = engine().engine
            eng.circuit = EndpointCircuit(circuit_config(ctx.config.webhooks.circuit))
            store = CircuitStore(ctx.bootstrap, eng.circuit)
            await store.start()
            circuits.append(store)
            # the double list's decisions: delivery follows each subscription's active list
            lists = FollowedActiveLists(ctx.bootstrap, lambda v: ctx.serde.decode(ROUTE_DECISIONS_TOPIC, v))
            await lists.start()
            engine().active_lists = lists
            followers.append(lists)
        except Exception as exc:
            # nothing is delivered without them: say so loudly instead of waiting silently
            log.critical(
                "deliver: cannot read the attempts ledger / endpoint circuits / route decisions, "
                "delivering nothing: %s",
                exc,
            )
            raise
        state_ready.set()

    @app.agent(inbound, name="deliver")
    async def deliver(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            await gate.acquire()
            spawn(_deliver_one(stream, event))

    async def _one_target(
        eng: KafkaDelivery, sub: Subscription, payload: dict[str, Any], first_at: dt.datetime, parent: Context
    ) -> None:
        await eng.queued(sub, payload["message_id"])
        if sub.batch is not None:
            await batches.submit(sub, payload, first_at, parent)
        else:
            await eng.attempt(sub, [payload], 1, first_at, parent)

    async def _deliver_one(stream: Any, event: Any) -> None:
        try:
            await ctx.subscriptions_ready.wait()
            await state_ready.wait()
            eng = engine()
            try:
                msg = ctx.serde.decode(INBOUND_TOPIC, event.value)
            except Exception as exc:  # a poison record must not stall the partition's commits forever
                part, off = event.message.partition, event.message.offset
                log.error("sms.inbound.v1 %d:%d does not decode, quarantined: %s", part, off, exc)
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
                results = await asyncio.gather(
                    *(_one_target(eng, s, payload, first_at, span_ctx) for s in subs), return_exceptions=True
                )
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                # Outcome not durable (a Kafka write failed): leave it unacked, so it is redelivered after a
                # restart
                log.error("delivery of %s not completed: %s", msg["message_id"], failed[0])
                return
            await stream.ack(event)
        except Exception:
            log.exception("deliver: event %s:%s failed", event.message.partition, event.message.offset)
        finally:
            gate.release()

    @app.agent(retry, name="deliver-retry")
    async def deliver_retry(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            await retry_gate.acquire()
            spawn(_retry_one(stream, event))

    async def _attempted(partition: int, offset: int, attempt: int, outcome: str) -> None:
        """Record in the ledger that this retry record is carried out; called once its outcome is handed to
        the producer, before the ack (a crash in between re-sends it once, under the same webhook-id)."""
        key = ledger_key(partition, offset)
        await out[WEBHOOK_ATTEMPTS_TOPIC].send(key=key, value=ledger_value(attempt, outcome))
        ledger.mark(key)

    async def _retry_one(stream: Any, event: Any) -> None:
        part, offset = event.message.partition, event.message.offset
        key = (part, offset)
        me = asyncio.current_task()
        assert me is not None
        try:
            earlier = waiting.pop(key, None)
            if earlier is not None:
                earlier.cancel()  # the same record read again while its earlier reading sleeps: supersede it
            waiting[key] = me  # until it attempts, a later reading of this record supersedes this one
            busy = attempting.get(key)
            if busy is not None:
                await asyncio.wait([busy])  # an earlier reading is attempting it: its ledger entry decides
            await ctx.subscriptions_ready.wait()
            await state_ready.wait()
            if ledger.done(part, offset):
                # read again after a restart or rebalance (the committed offset was held back by a record
                # due later): its attempt was made and its outcome is durable; sending again would multiply
                await stream.ack(event)
                return
            eng = engine()
            rec = orjson.loads(event.value)
            wait = rec["due_at"] / 1000 - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if waiting.get(key) is me:
                del waiting[key]
            attempting[key] = me
            if ledger.done(part, offset):  # carried out meanwhile by another reading of the same record
                await stream.ack(event)
                return
            sub = await eng.store.get(rec["subscription_id"])
            messages = retry_messages(rec)
            if sub is None:
                await eng.dead_letter_unsent(
                    rec["subscription_id"], messages, rec["attempt"], "subscription deleted"
                )
                await _attempted(part, offset, rec["attempt"], "subscription deleted")
                await stream.ack(event)
                return
            # The owner's holding may have shrunk since the message was matched: what it no longer holds
            # is never sent (tenant isolation holds for retries, resends and recovers too).
            unheld = [m for m in messages if not eng.receives(sub, m)]
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
            await _attempted(part, offset, rec["attempt"], "attempted")
            await stream.ack(event)
        except Exception:
            log.exception("deliver-retry: event %s:%s failed", event.message.partition, event.message.offset)
        finally:
            if waiting.get(key) is me:
                del waiting[key]
            if attempting.get(key) is me:
                del attempting[key]
            retry_gate.release()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _drain(app: faust.App, **kwargs: Any) -> None:
        await batches.drain(timeout=10)
        for t in list(waiting.values()):
            t.cancel()  # not due yet and not acked: read again from the committed offset after the restart
        if tasks:
            await asyncio.wait(list(tasks), timeout=10)
        await ledger.stop()
        for store in circuits:
            await store.stop()
        for lists in followers:
            await lists.stop()
