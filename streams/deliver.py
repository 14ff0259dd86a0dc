"""Delivery agents: sms.inbound.v1 x subscriptions -> signed webhook POSTs; retries; dead letters; events.

Concurrency inside one actor, with explicit acks (never ``agent(concurrency>1)``, faust-streaming #606): each
inbound event starts one task per matching subscription and is acked when every one of them has reached a
durable outcome — delivered, handed to the retry topic, or dead-lettered. Faust commits only the contiguous
acked prefix of a partition, so a crash replays exactly the events whose outcome was not yet durable, and
their webhooks carry the same webhook-id as before.

A slow or dead endpoint cannot hold others up: the sender gives each endpoint its own slots; a message that
cannot get one in time is moved to the retry topic ("deferred") instead of occupying the worker.

Retries ride on ``sms.webhook.retry.v1``. Its agent holds each record (unacked) until it is due, so records
due at different times for different endpoints never wait for one another and nothing sleeps in a consumer
loop. After the last attempt a message goes to ``sms.webhook.dlq.v1`` with the reason.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any

import faust
import orjson
from opentelemetry import trace

from smsflow.payload import webhook_payload
from smsflow.schemas import DELIVERY_TOPIC, INBOUND_TOPIC, OPS_TOPIC, WEBHOOK_DLQ_TOPIC, WEBHOOK_RETRY_TOPIC
from smsflow.telemetry import context_from_headers, http_headers_from_context, tracer
from smsflow.webhooks.engine import DeliveryEngine
from smsflow.webhooks.model import DeliveryEvent, DeliveryState, Subscription, utcnow
from smsflow.webhooks.policy import Action
from smsflow.webhooks.store import SubscriptionStore
from streams.app import StreamContext

log = logging.getLogger(__name__)
_tracer = tracer("smsflow.streams.deliver")

MAX_EVENTS_IN_FLIGHT = 4096
MAX_RETRIES_WAITING = 100_000


def _ms(t: dt.datetime | None) -> int | None:
    return None if t is None else int(t.timestamp() * 1000)


class KafkaDelivery:
    """Runs the delivery engine's decisions against Kafka: events, retry records, dead letters, ops events."""

    def __init__(self, ctx: StreamContext, engine: DeliveryEngine, store: SubscriptionStore) -> None:
        self.ctx = ctx
        self.engine = engine
        self.store = store
        self.topics: dict[str, Any] = {}
        self.stats = {"delivered": 0, "retry_scheduled": 0, "dead_lettered": 0, "attempts": 0}

    async def _send(
        self, topic: str, key: str, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        await self.topics[topic].send(key=key.encode(), value=value, headers=headers)

    async def event(self, ev: DeliveryEvent) -> None:
        rec = {
            "event_id": ev.event_id,
            "ts": _ms(ev.ts),
            "state": str(ev.state),
            "message_id": ev.message_id,
            "subscription_id": ev.subscription_id,
            "webhook_id": ev.webhook_id,
            "attempt": ev.attempt,
            "status_code": ev.status_code,
            "failure": str(ev.failure) if ev.failure else None,
            "error": ev.error,
            "duration_ms": ev.duration_ms,
            "next_attempt_at": _ms(ev.next_attempt_at),
            "url": ev.url,
            "batch_size": ev.batch_size,
            "response_body": ev.response_body[:1024] if ev.response_body else None,
        }
        await self._send(DELIVERY_TOPIC, ev.message_id, self.ctx.serde.encode(DELIVERY_TOPIC, rec))

    async def targets(self, msg: dict[str, Any]) -> list[Subscription]:
        return [s for s in await self.store.list() if s.enabled and s.matches(msg)]

    async def attempt(
        self, sub: Subscription, payload: dict[str, Any], attempt: int, first_at: dt.datetime, parent: Any
    ) -> None:
        """One POST and everything that follows from it; returns once the outcome is durable in Kafka."""
        mid = payload["message_id"]
        with _tracer.start_as_current_span(
            "webhook POST",
            context=parent,
            kind=trace.SpanKind.CLIENT,
            attributes={
                "smsflow.message_id": mid,
                "smsflow.subscription": sub.id,
                "smsflow.attempt": attempt,
                "http.request.method": "POST",
            },
        ) as span:
            outcome = await self.engine.attempt(
                sub, [payload], attempt, first_at, http_headers_from_context()
            )
            self.stats["attempts"] += 1
            result, decision = outcome.result, outcome.decision
            if result is not None and result.status_code is not None:
                span.set_attribute("http.response.status_code", result.status_code)
            if result is None or not result.ok:
                span.set_status(trace.StatusCode.ERROR, decision.reason)
            headers = _trace_headers()
        for ev in outcome.events:
            await self.event(ev)
        if decision.action is Action.DONE:
            self.stats["delivered"] += 1
        elif decision.action is Action.RETRY:
            self.stats["retry_scheduled"] += 1
            assert decision.next_attempt is not None and decision.next_attempt_at is not None
            record = {
                "subscription_id": sub.id,
                "attempt": decision.next_attempt,
                "due_at": _ms(decision.next_attempt_at),
                "first_at": _ms(first_at),
                "message": payload,
                "reason": decision.reason,
            }
            await self._send(WEBHOOK_RETRY_TOPIC, mid, orjson.dumps(record), headers)
        else:
            self.stats["dead_lettered"] += 1
            record = {
                "subscription_id": sub.id,
                "attempts": attempt,
                "reason": decision.reason,
                "state": str(decision.state),
                "ts": int(time.time() * 1000),
                "message": payload,
            }
            await self._send(WEBHOOK_DLQ_TOPIC, mid, orjson.dumps(record))
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


def _trace_headers() -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in http_headers_from_context().items()]


def register_deliver(app: faust.App, ctx: StreamContext) -> None:
    inbound = app.topic(INBOUND_TOPIC, key_serializer="raw", value_serializer="raw")
    retry = app.topic(WEBHOOK_RETRY_TOPIC, key_serializer="raw", value_serializer="raw")
    out = {
        name: app.topic(name, key_serializer="raw", value_serializer="raw")
        for name in (DELIVERY_TOPIC, WEBHOOK_RETRY_TOPIC, WEBHOOK_DLQ_TOPIC, OPS_TOPIC)
    }
    gate = asyncio.Semaphore(MAX_EVENTS_IN_FLIGHT)
    # Waiting retries are cheap sleeping tasks; they get their own bound so they never starve fresh messages.
    retry_gate = asyncio.Semaphore(MAX_RETRIES_WAITING)
    tasks: set[asyncio.Task[None]] = set()

    def engine() -> KafkaDelivery:
        eng: KafkaDelivery = ctx.extras["delivery"]
        eng.topics = out
        return eng

    def spawn(coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    @app.agent(inbound, name="deliver")
    async def deliver(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            await gate.acquire()
            spawn(_deliver_one(stream, event))

    async def _deliver_one(stream: Any, event: Any) -> None:
        try:
            await ctx.subscriptions_ready.wait()
            eng = engine()
            msg = ctx.serde.decode(INBOUND_TOPIC, event.value)
            parent = context_from_headers(event.headers)
            payload = webhook_payload(msg)
            subs = await eng.targets(msg)
            first_at = utcnow()
            with _tracer.start_as_current_span(
                "deliver",
                context=parent,
                kind=trace.SpanKind.CONSUMER,
                attributes={"smsflow.message_id": msg["message_id"], "smsflow.subscriptions": len(subs)},
            ):
                span_ctx = trace.set_span_in_context(trace.get_current_span())
                results = await asyncio.gather(
                    *(eng.attempt(s, payload, 1, first_at, span_ctx) for s in subs), return_exceptions=True
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

    async def _retry_one(stream: Any, event: Any) -> None:
        try:
            await ctx.subscriptions_ready.wait()
            eng = engine()
            rec = orjson.loads(event.value)
            wait = rec["due_at"] / 1000 - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            sub = await eng.store.get(rec["subscription_id"])
            mid = rec["message"]["message_id"]
            parent = context_from_headers(event.headers)
            if sub is None or not sub.enabled:
                reason = (
                    "subscription deleted" if sub is None else f"endpoint disabled: {sub.disabled_reason}"
                )
                await eng.event(
                    DeliveryEvent(
                        state=DeliveryState.DEAD_LETTERED,
                        message_id=mid,
                        subscription_id=rec["subscription_id"],
                        attempt=rec["attempt"],
                        error=reason,
                    )
                )
                await eng._send(
                    WEBHOOK_DLQ_TOPIC, mid, orjson.dumps({**rec, "reason": reason, "state": "dead_lettered"})
                )
            else:
                first_at = dt.datetime.fromtimestamp(rec["first_at"] / 1000, tz=dt.UTC)
                await eng.attempt(sub, rec["message"], rec["attempt"], first_at, parent)
            await stream.ack(event)
        except Exception:
            log.exception("deliver-retry: event %s:%s failed", event.message.partition, event.message.offset)
        finally:
            retry_gate.release()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _drain(app: faust.App, **kwargs: Any) -> None:
        if tasks:
            await asyncio.wait(list(tasks), timeout=10)
