"""Pings to the endpoints that get no traffic, so the double list can judge them (docs/double-list.md).

Once a subscription's traffic has failed over, its primary endpoints get no attempts, and an endpoint with
no attempts keeps its last judged figures: without pings a primary that failed would never be seen healthy
again, and the scope would never fail back. Every ``interval_s`` the worker POSTs one signed ping to each
endpoint of a subscription with a secondary list that the choice would not send a message to now
(``choose_endpoint``), and reports each result as a ``WebhookAttempt`` observation.

A ping is an ordinary signed webhook (the endpoint's own secret, its egress checks, its slots) whose body is
``{"type": "smsflow.ping", "message_id": "ping_…", "endpoint": …, "sent_at": …}``: a receiver verifies it like
any webhook and may ignore it (its ``webhook-id`` starts with ``ping_``). Pings never touch customer messages,
delivery events or retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

from smsflow.delivery.active_lists import ActiveLists
from smsflow.delivery.events import AttemptResult
from smsflow.delivery.failover import choose_endpoint, observed_outcome
from smsflow.delivery.sender import WebhookSender
from smsflow.routing.model import ListName
from smsflow.routing.observations import WebhookAttempt
from smsflow.subscriptions.model import Subscription, WebhookEndpoint

log = logging.getLogger(__name__)

PING_TYPE = "smsflow.ping"

RouteOf = Callable[[Subscription, WebhookEndpoint], str]


def own_route(sub: Subscription, endpoint: WebhookEndpoint) -> str:
    return sub.route_id(endpoint.id)


def idle_endpoints(sub: Subscription, lists: ActiveLists) -> list[WebhookEndpoint]:
    """The endpoints a message would not go to now, for a subscription with a double list (else none)."""
    if not sub.enabled or not sub.endpoint_list(ListName.SECONDARY):
        return []
    chosen = choose_endpoint(sub, lists.of(sub.id)).endpoint.id
    return [ep for ep in sub.enabled_endpoints() if ep.id != chosen]  # one switched off asked for nothing


def ping_message(sub: Subscription, endpoint: WebhookEndpoint, now: float) -> dict[str, object]:
    ms = int(now * 1000)
    return {
        "type": PING_TYPE,
        "message_id": f"ping_{sub.route_id(endpoint.id)}_{ms}",
        "subscription_id": sub.id,
        "endpoint": endpoint.id,
        "sent_at": datetime.fromtimestamp(now, UTC).isoformat(),
    }


def ping_observation(route_id: str, result: AttemptResult) -> WebhookAttempt | None:
    """What a ping says about the route; None when nothing was sent (no free slot, not sendable)."""
    outcome = observed_outcome(result.ok, result.status_code, result.failure)
    if outcome is None:
        return None
    at = int(result.started_at.timestamp() * 1000 + result.duration_ms)
    return WebhookAttempt(route_id=route_id, at=at, outcome=outcome, latency_ms=result.duration_ms)


class EndpointPinger:
    def __init__(
        self,
        sender: WebhookSender,
        subscriptions: Callable[[], Awaitable[Iterable[Subscription]]],
        lists: Callable[[], ActiveLists],
        publish: Callable[[WebhookAttempt], Awaitable[None]],
        *,
        interval_s: float = 10.0,
        route_of: RouteOf = own_route,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sender = sender
        self.subscriptions = subscriptions
        self.lists = lists
        self.publish = publish
        self.interval_s = interval_s
        self.route_of = route_of
        self.clock = clock
        self.sent = 0

    async def ping_once(self) -> list[WebhookAttempt]:
        """One round: every idle endpoint of every double-listed subscription, concurrently."""
        lists = self.lists()
        jobs = [(sub, ep) for sub in await self.subscriptions() for ep in idle_endpoints(sub, lists)]
        results = await asyncio.gather(*(self._ping(sub, ep) for sub, ep in jobs))
        return [obs for obs in results if obs is not None]

    async def _ping(self, sub: Subscription, endpoint: WebhookEndpoint) -> WebhookAttempt | None:
        result = await self.sender.deliver(
            sub, [ping_message(sub, endpoint, self.clock())], 1, None, endpoint
        )
        self.sent += 1
        obs = ping_observation(self.route_of(sub, endpoint), result)
        if obs is not None:
            await self.publish(obs)
        return obs

    async def run(self) -> None:
        while True:
            try:
                await self.ping_once()
            except Exception:  # a round that fails (e.g. a Kafka write) must not end the pings
                log.exception("endpoint pings: round failed")
            await asyncio.sleep(self.interval_s)
