"""Webhook attempts for the health stage, read from the delivery events (sms.delivery.v1).

An attempt is an event that carries a duration (a POST was made): ``delivered``, ``failed`` or
``retry_scheduled``. A batch attempt is one event per message with the same webhook-id and attempt number;
``AttemptReader`` counts it once. The endpoint is found by its URL among the configured webhook routes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from smsflow.routing.model import RouteKind, RoutingSection
from smsflow.routing.observations import AttemptOutcome, WebhookAttempt

_ATTEMPT_STATES = frozenset({"delivered", "failed", "retry_scheduled"})
_THROTTLING = frozenset({429, 503})
# failures decided here, before anything reached the endpoint: they say nothing about its health
_LOCAL_FAILURES = frozenset({"deferred", "https_required", "invalid_request", "blocked_address"})


def attempt_outcome(event: Mapping[str, Any]) -> AttemptOutcome:
    status = event.get("status_code")
    if event.get("state") == "delivered" or (status is not None and 200 <= int(status) < 300):
        return AttemptOutcome.SUCCESS
    if status is not None and int(status) in _THROTTLING:
        return AttemptOutcome.THROTTLED
    if status is not None:
        return AttemptOutcome.HTTP_ERROR
    failure = str(event.get("failure") or "")
    if failure == "timeout":
        return AttemptOutcome.TIMEOUT
    if failure == "tls":
        return AttemptOutcome.TLS_ERROR
    return AttemptOutcome.CONNECT_ERROR  # connection, dns, blocked address: the endpoint was not reached


class AttemptReader:
    def __init__(self, section: RoutingSection, remember: int = 4096) -> None:
        self.use(section)
        self._seen: OrderedDict[tuple[str, int, str], None] = OrderedDict()
        self._remember = remember

    def use(self, section: RoutingSection) -> None:
        """The webhook routes to count attempts for: a config route by its URL, else (a subscription's own
        endpoint route) by the route id the delivery event carries."""
        webhooks = [r for r in section.routes if r.kind is RouteKind.WEBHOOK]
        self.route_of_url = {r.url: r.id for r in webhooks if r.url is not None}
        self.route_ids = {r.id for r in webhooks}

    def attempt(self, event: Mapping[str, Any]) -> WebhookAttempt | None:
        if event.get("state") not in _ATTEMPT_STATES or event.get("duration_ms") is None:
            return None
        if str(event.get("failure") or "") in _LOCAL_FAILURES:
            return None
        route_id = self.route_of_url.get(str(event.get("url") or ""))
        if route_id is None and event.get("route_id") in self.route_ids:
            route_id = str(event["route_id"])
        if route_id is None:
            return None
        key = (str(event.get("webhook_id", "")), int(event.get("attempt") or 0), route_id)
        if key in self._seen:
            return None  # another message of the same batch POST
        self._seen[key] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        return WebhookAttempt(route_id, int(event["ts"]), attempt_outcome(event), float(event["duration_ms"]))
