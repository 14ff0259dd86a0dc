"""One delivery attempt end to end: send, judge, schedule, watch the endpoint, say what to publish.

This is the seam the Kafka delivery agent calls. It does no Kafka I/O itself: the returned
:class:`DeliveryOutcome` says which events to publish on ``sms.delivery.v1``, whether to put the messages on a
delay topic (and for when) or on the dead-letter topic, and whether the endpoint was disabled.

Events come in two kinds (the state machine is in docs/webhooks.md). ``attempt_events`` record what one
request did: ``sent`` when the endpoint answered with a status outside 2xx, ``failed`` when no answer came
(timeout, refused, TLS, DNS, blocked, not sendable). A 2xx is recorded once, as ``delivered``. ``events``
record the decision that follows: ``delivered``, ``retry_scheduled``, ``expired``, ``dead_lettered``,
``endpoint_disabled``. A deferred attempt (no slot free, nothing sent) has no attempt event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from smsflow.delivery.events import AttemptResult, DeliveryEvent, DeliveryState, FailureKind
from smsflow.delivery.policy import Action, EndpointCircuit, RetryDecision, RetryPolicy, circuit_key
from smsflow.delivery.sender import WebhookSender, webhook_id_for
from smsflow.subscriptions.model import Subscription, WebhookEndpoint, redact_url, utcnow
from smsflow.subscriptions.store import SubscriptionStore


@dataclass(frozen=True)
class DeliveryOutcome:
    result: AttemptResult | None  # None when nothing was attempted (endpoint disabled)
    decision: RetryDecision
    events: list[DeliveryEvent] = field(default_factory=list)
    disabled_reason: str | None = None  # set when this attempt switched the endpoint off
    attempt_events: list[DeliveryEvent] = field(default_factory=list)
    # set when the next attempt goes at once to another endpoint (the double list's local rule)
    next_endpoint: WebhookEndpoint | None = None
    # the endpoint switched off alone (the subscription's other endpoints keep receiving); None: all of it
    disabled_endpoint: str | None = None

    @property
    def all_events(self) -> list[DeliveryEvent]:
        """Everything to publish, in order: what the request did, then what was decided."""
        return [*self.attempt_events, *self.events]


class DeliveryEngine:
    def __init__(
        self,
        sender: WebhookSender,
        *,
        policy: RetryPolicy | None = None,
        circuit: EndpointCircuit | None = None,
        store: SubscriptionStore | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sender = sender
        self.policy = policy or RetryPolicy()
        self.circuit = circuit or EndpointCircuit()
        self._store = store
        self._clock = clock
        self._disable_lock = asyncio.Lock()
        if store is not None:
            store.add_listener(self._on_subscription_change)

    async def _on_subscription_change(self, subscription_id: str, sub: Subscription | None) -> None:
        if sub is None:
            self.sender.forget(subscription_id)
            for key in self.circuit.keys_of(subscription_id):
                self.circuit.reset(key)
        elif sub.enabled:
            for ep in [sub.main_endpoint, *sub.endpoints]:
                key = circuit_key(sub.id, ep.id)
                snapshot = self.circuit.snapshot(key)
                if snapshot and snapshot.get("tripped") and sub.endpoint_enabled(ep.id):
                    self.circuit.reset(key)  # re-enabled by an operator: start a fresh streak

    async def attempt(
        self,
        sub: Subscription,
        messages: list[dict[str, Any]],
        attempt: int,
        first_attempt_at: datetime,
        trace_headers: Mapping[str, str] | None = None,
        endpoint: WebhookEndpoint | None = None,
        failover: Callable[[AttemptResult], tuple[WebhookEndpoint, str] | None] | None = None,
    ) -> DeliveryOutcome:
        """Deliver ``messages`` (one, or a batch) to ``sub`` as attempt number ``attempt`` (1-based), at
        ``endpoint`` (default: the subscription's own url). ``failover`` names the endpoint (and why) to
        try at once, instead of waiting for the retry schedule, after a failed attempt
        (``smsflow.delivery.failover``)."""
        now = self._clock()
        if not sub.enabled:
            reason = f"endpoint disabled: {sub.disabled_reason or 'by request'}"
            decision = RetryDecision(Action.DEAD_LETTER, DeliveryState.FAILED, reason)
            events = [
                DeliveryEvent(
                    ts=now,
                    state=state,
                    message_id=str(m["message_id"]),
                    subscription_id=sub.id,
                    webhook_id=webhook_id_for(sub, messages),
                    attempt=attempt,
                    error=reason,
                    url=redact_url(sub.url),
                    batch_size=len(messages),
                )
                for state in (DeliveryState.FAILED, DeliveryState.DEAD_LETTERED)
                for m in messages
            ]
            return DeliveryOutcome(None, decision, events)

        result = await self.sender.deliver(sub, messages, attempt, trace_headers, endpoint)
        now = self._clock()
        decision = self.policy.decide(result, first_attempt_at, now)
        if decision.disable_endpoint and _others_enabled(sub, result.endpoint_id):
            # a 410 from one endpoint: that endpoint goes, the message and the other endpoints stay
            decision = self.policy.retry_elsewhere(result, first_attempt_at, now, decision.reason)
            decision = replace(decision, disable_endpoint=True)
        hop = failover(result) if failover is not None and decision.action is Action.RETRY else None
        if hop is not None and decision.next_attempt != attempt:  # not after DEFERRED: nothing was sent
            decision = replace(
                decision, delay_s=0.0, next_attempt_at=now, reason=f"{decision.reason}; {hop[1]}"
            )
        else:
            hop = None
        events = [
            DeliveryEvent.from_attempt(
                result,
                decision.state,
                mid,
                next_attempt_at=decision.next_attempt_at,
                error=None if decision.action is Action.DONE else decision.reason,
                ts=now,
            )
            for mid in result.message_ids
        ]
        attempt_events = []
        if not result.ok and result.failure is not FailureKind.DEFERRED:
            state = DeliveryState.SENT if result.status_code is not None else DeliveryState.FAILED
            attempt_events = [
                DeliveryEvent.from_attempt(result, state, mid, ts=now) for mid in result.message_ids
            ]
        trip = self.circuit.record_attempt(result, now)
        disabled_reason = decision.reason if decision.disable_endpoint else None
        if trip is None and decision.action is Action.DEAD_LETTER:
            trip = self.circuit.record_dead_letter(circuit_key(sub.id, result.endpoint_id), now)
        if disabled_reason is None and trip is not None:
            disabled_reason = trip.reason
        disabled_endpoint = None
        if disabled_reason is not None:
            which = result.endpoint_id if _others_enabled(sub, result.endpoint_id) else None
            switched = await self._disable(sub.id, disabled_reason, now, which)
            if switched is None:
                disabled_reason = None  # another attempt (e.g. a concurrent 410) switched it off already
            else:
                disabled_endpoint = switched or None
        if disabled_reason is not None:
            events.append(
                DeliveryEvent.from_attempt(
                    result,
                    DeliveryState.ENDPOINT_DISABLED,
                    result.message_ids[0],
                    error=disabled_reason,
                    ts=now,
                )
            )
        return DeliveryOutcome(
            result,
            decision,
            events,
            disabled_reason,
            attempt_events,
            next_endpoint=hop[0] if hop else None,
            disabled_endpoint=disabled_endpoint,
        )

    async def _disable(
        self, subscription_id: str, reason: str, now: datetime, endpoint_id: str | None = None
    ) -> str | None:
        """Switch the endpoint off in the store: ``endpoint_id`` alone while the subscription has another
        endpoint on, else the whole subscription. Returns the endpoint id switched off alone, "" for the whole
        subscription, None when nothing changed: only the call that made the change publishes the
        ``endpoint_disabled`` event (and the operational event), however many attempts agree."""
        if self._store is None:
            return endpoint_id or ""
        async with self._disable_lock:
            current = await self._store.get(subscription_id)
            if current is None or not current.enabled:
                return None
            if endpoint_id is not None and _others_enabled(current, endpoint_id):
                if not current.endpoint_enabled(endpoint_id):
                    return None
                off = {**current.disabled_endpoints, endpoint_id: reason}
                update = {"disabled_endpoints": off, "updated_at": now}
                await self._store.put(current.model_copy(update=update))
                return endpoint_id
            await self._store.put(
                current.model_copy(update={"enabled": False, "disabled_reason": reason, "updated_at": now})
            )
            return ""


def _others_enabled(sub: Subscription, endpoint_id: str | None) -> bool:
    """Whether the subscription has an endpoint on besides ``endpoint_id``: then only that one goes off."""
    return endpoint_id is not None and any(ep.id != endpoint_id for ep in sub.enabled_endpoints())
