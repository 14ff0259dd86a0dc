"""Which of a subscription's endpoints carries a webhook, and what delivery tells the double list.

A subscription's endpoints are routes (``RouteKind.WEBHOOK``, id ``<subscription id>.<endpoint id>``) on its
primary and secondary list; its scope is ``subscription:<id>`` (docs/double-list.md, webhook section).

The choice has two parts:

1. **Follow the decision.** An attempt goes to the first route of the scope's active list (the latest record
   of ``sms.routes.decisions.v1``) that the decision's evidence does not show degraded or down; if every
   route of the active list is, to the list's first route (the stage chose to stay on that list, e.g. both
   degraded).
   No decision yet: the primary list is active.
2. **Do not wait for the next window.** The decision moves with the health windows (seconds to a minute). When
   an attempt fails in a way that says "this route", not "this message" (no answer, a timeout, a refused or
   broken connection, TLS, DNS, a 5xx, 429 or 408, a redirect or an unreadable answer), the next attempt goes
   at once to the next route after it in the order active list then other list, skipping routes known to be
   unhealthy. Only forward: when no route is left after the failed one, the next attempt waits for the retry
   schedule and goes where the decision says. So one message makes at most one pass over the routes without
   waiting, and a retry never ping-pongs between two failing endpoints.

Everything here is pure (no Kafka, no clock), so the choice is unit-tested table by table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from smsflow.delivery.events import AttemptResult, DeliveryEvent, DeliveryState, FailureKind
from smsflow.routing.health import HealthState
from smsflow.routing.model import (
    ListName,
    PolicySource,
    Route,
    RouteKind,
    RoutingPolicy,
    RoutingSection,
    Scope,
    ScopeKind,
    Thresholds,
)
from smsflow.routing.observations import AttemptOutcome, WebhookAttempt
from smsflow.subscriptions.model import Subscription, WebhookEndpoint, redact_url


def subscription_scope(subscription_id: str) -> str:
    """The scope key of a subscription's decisions: ``subscription:<id>``."""
    return f"{ScopeKind.SUBSCRIPTION.value}:{subscription_id}"


@dataclass(frozen=True)
class ActiveList:
    """What delivery needs of a scope's latest decision: the active list and each route's latest state.

    A route is known by its id: the endpoint's own (``<subscription>.<endpoint>``), or the id of a webhook
    route of the ``routing`` config section with the endpoint's URL (``route_urls``), which is how a policy
    written in the config names a subscription's endpoints."""

    active: ListName = ListName.PRIMARY
    route_states: Mapping[str, HealthState] = field(default_factory=dict)
    decision_id: str | None = None
    url_states: Mapping[str, HealthState] = field(default_factory=dict)

    @classmethod
    def from_decision(
        cls, record: Mapping[str, Any], route_urls: Mapping[str, str] | None = None
    ) -> ActiveList:
        """From a ``RouteDecision`` record (schemas/route_decision.avsc); ``route_urls``: config route id ->
        URL of the webhook routes of the ``routing`` section."""
        states = {
            str(ev["route_id"]): HealthState(ev["state"])
            for ev in record.get("evidence") or ()
            if ev.get("state") in HealthState.__members__.values()
        }
        urls = route_urls or {}
        by_url = {urls[r]: state for r, state in states.items() if r in urls}
        decision_id = str(record.get("decision_id") or "") or None
        return cls(ListName(record["active"]), states, decision_id, by_url)

    def healthy(self, route_id: str, url: str | None = None) -> bool:
        """Not known to be degraded or down: a route without a record yet has no evidence against it."""
        state = self.route_states.get(route_id)
        if state is None and url is not None:
            state = self.url_states.get(redact_url(url))
        return state is None or state is HealthState.HEALTHY


NO_DECISION = ActiveList()


@dataclass(frozen=True)
class EndpointChoice:
    endpoint: WebhookEndpoint
    route_id: str
    list: ListName  # the list the endpoint is on
    reason: str


def endpoint_order(sub: Subscription, active: ActiveList) -> list[tuple[ListName, WebhookEndpoint]]:
    """The active list's endpoints, then the other list's: the order the local rule moves forward in.

    Endpoints switched off alone (a 410, a tripped circuit) are left out; when the active list has no endpoint
    left (a decision for a secondary list the subscription no longer has, or its endpoints switched off), the
    other list comes first."""

    def usable(name: ListName) -> list[WebhookEndpoint]:
        return [ep for ep in sub.endpoint_list(name) if sub.endpoint_enabled(ep.id)]

    first = active.active if usable(active.active) else active.active.other
    order = [(name, ep) for name in (first, first.other) for ep in usable(name)]
    # every endpoint switched off can only be a subscription switched off as a whole: its main endpoint
    # stands for it (the engine dead-letters without sending)
    return order or [(ListName.PRIMARY, sub.main_endpoint)]


def choose_endpoint(sub: Subscription, active: ActiveList | None) -> EndpointChoice:
    """Rule 1: the first route of the active list not known to be unhealthy, else the list's first route."""
    decision = active or NO_DECISION
    order = endpoint_order(sub, decision)
    listed = [(name, ep) for name, ep in order if name is order[0][0]]
    for name, ep in listed:
        route = sub.route_id(ep.id)
        if decision.healthy(route, ep.url):
            return EndpointChoice(ep, route, name, f"first healthy route of the active list ({name.value})")
    name, ep = listed[0]
    return EndpointChoice(
        ep, sub.route_id(ep.id), name, f"no healthy route on the active list ({name.value}): its first route"
    )


# A failed attempt that says "this route" rather than "this message".
_ROUTE_FAILURES = frozenset(
    {
        FailureKind.TIMEOUT,
        FailureKind.CONNECTION,
        FailureKind.DNS,
        FailureKind.TLS,
        FailureKind.BLOCKED_ADDRESS,  # the endpoint's address is refused by the egress policy
        FailureKind.REDIRECT,
        FailureKind.INVALID_RESPONSE,
    }
)
# 410: the endpoint asked to stop receiving; the engine switches it off alone when the subscription has others
_ROUTE_STATUSES = frozenset({408, 410, 429})


def fails_route(result: AttemptResult) -> bool:
    """True when the next attempt should not wait on this endpoint: no answer, or a 5xx, 429, 410 or 408.

    Other 4xx answers are the receiver's verdict on the message (a bad signature, a body it refuses): another
    endpoint of the same customer would most likely say the same, so they follow the retry schedule."""
    if result.ok or result.failure is None or result.failure is FailureKind.DEFERRED:
        return False
    if result.failure in _ROUTE_FAILURES:
        return True
    code = result.status_code
    return code is not None and (code >= 500 or code in _ROUTE_STATUSES)


def next_endpoint(
    sub: Subscription, active: ActiveList | None, result: AttemptResult
) -> EndpointChoice | None:
    """Rule 2: the route to try at once after ``result`` failed, or None (then the retry schedule applies)."""
    if not fails_route(result) or result.endpoint_id is None:
        return None
    decision = active or NO_DECISION
    order = endpoint_order(sub, decision)
    at = next((i for i, (_, ep) in enumerate(order) if ep.id == result.endpoint_id), None)
    if at is None:
        return None  # the endpoint was removed meanwhile: the schedule and the decision decide
    failed = sub.route_id(result.endpoint_id)
    why = f"{failed} failed ({result.failure or result.status_code})"
    for name, ep in order[at + 1 :]:
        route = sub.route_id(ep.id)
        if decision.healthy(route, ep.url):
            return EndpointChoice(ep, route, name, f"{why}: next route {route} ({name.value}) at once")
    return None


def webhook_route_urls(section: RoutingSection) -> dict[str, str]:
    """The ``routing`` config section's webhook routes: id -> URL without credentials. A policy written in
    the config names a subscription's endpoints by these ids; delivery matches them to endpoints by URL."""
    return {r.id: redact_url(r.url) for r in section.routes if r.kind is RouteKind.WEBHOOK and r.url}


def route_of_endpoint(route_urls: Mapping[str, str]) -> Callable[[Subscription, WebhookEndpoint], str]:
    """Names an endpoint's route as the health stage knows it: the config route with its URL, else its own."""
    by_url = {url: route for route, url in route_urls.items()}

    def route_of(sub: Subscription, endpoint: WebhookEndpoint) -> str:
        return by_url.get(redact_url(endpoint.url), sub.route_id(endpoint.id))

    return route_of


def subscription_routes(sub: Subscription) -> list[Route]:
    """The subscription's endpoints as webhook routes (URLs without credentials go to the health stage)."""
    return [
        Route(id=sub.route_id(ep.id), kind=RouteKind.WEBHOOK, url=redact_url(ep.url))
        for name in ListName
        for ep in sub.endpoint_list(name)
    ]


def subscription_policy(sub: Subscription, configured: RoutingPolicy | None = None) -> RoutingPolicy | None:
    """The double-list policy a subscription's endpoints make, or None when it has no secondary list.

    Thresholds and hold-down come from a ``routing.policies`` entry for the same scope when the config has
    one (``configured``); its route lists are replaced by the subscription's endpoints, which the API owns."""
    secondary = sub.endpoint_list(ListName.SECONDARY)
    if not secondary:
        return None
    hold_down = configured.hold_down_s if configured else RoutingPolicy.model_fields["hold_down_s"].default
    scope = Scope.model_validate(subscription_scope(sub.id))
    return RoutingPolicy(
        scope=scope,
        primary=tuple(sub.route_id(ep.id) for ep in sub.endpoint_list(ListName.PRIMARY)),
        secondary=tuple(sub.route_id(ep.id) for ep in secondary),
        thresholds=configured.thresholds if configured else Thresholds(),
        hold_down_s=hold_down,
        source=PolicySource.SUBSCRIPTION,
    )


def subscription_policies(
    subs: Iterable[Subscription], configured: Mapping[str, RoutingPolicy] | None = None
) -> list[RoutingPolicy]:
    """Policies of the subscriptions with a secondary list; ``configured``: config entries by scope key."""
    out = []
    for sub in subs:
        policy = subscription_policy(sub, (configured or {}).get(subscription_scope(sub.id)))
        if policy is not None:
            out.append(policy)
    return out


def lists_routes(sub: Subscription) -> bool:
    """Whether ``with_subscription_lists`` reads anything of ``sub``: an enabled subscription with a
    secondary list. A reader that keeps only these (and rebuilds only when one of them comes or goes or
    changes) gets the same section as from every subscription, for a fraction of the work: most
    subscriptions have one list, and a change of one of those changes nothing here."""
    return sub.enabled and bool(sub.endpoint_list(ListName.SECONDARY))


def keep_listed(listed: dict[str, Subscription], sub_id: str, sub: Subscription | None) -> bool:
    """Apply a store's change notice (``sub`` None: deleted) to ``listed``, the subscriptions ``lists_routes``
    keeps by id; whether ``with_subscription_lists`` over them may now answer differently. A subscription
    with one list before and after changes nothing (every process hears every tenant's changes)."""
    if sub is not None and lists_routes(sub):
        listed[sub_id] = sub
        return True
    return listed.pop(sub_id, None) is not None


def with_subscription_lists(section: RoutingSection, subs: Iterable[Subscription]) -> RoutingSection:
    """``section`` plus a policy (and its webhook routes) for each enabled subscription with a secondary
    list, so that the health stage judges its endpoints and the decision stage decides its scope exactly as
    for a policy written in the config. A subscription scope the config already has a policy for keeps the
    config's policy (its routes name the endpoints by URL). An endpoint switched off alone stays listed (it
    keeps its last judged figures); delivery never sends to it."""
    configured = {p.scope.key for p in section.policies}
    routes = list(section.routes)
    route_ids = {r.id for r in routes}
    policies = list(section.policies)
    for sub in sorted(subs, key=lambda s: s.id):
        policy = subscription_policy(sub)
        if policy is None or not sub.enabled or policy.scope.key in configured:
            continue
        mine = [r for r in subscription_routes(sub) if r.id not in route_ids]
        if len(mine) != len(subscription_routes(sub)):
            continue  # a route id the config uses already: the config's meaning wins
        routes += mine
        route_ids.update(r.id for r in mine)
        policies.append(policy)
    return section.model_copy(update={"routes": tuple(routes), "policies": tuple(policies)})


# What a delivery event says about the route it was made on (sms.delivery.v1 carries every attempt).
_OUTCOME_OF_FAILURE = {
    FailureKind.TIMEOUT: AttemptOutcome.TIMEOUT,
    FailureKind.CONNECTION: AttemptOutcome.CONNECT_ERROR,
    FailureKind.DNS: AttemptOutcome.CONNECT_ERROR,
    FailureKind.BLOCKED_ADDRESS: AttemptOutcome.CONNECT_ERROR,
    FailureKind.TLS: AttemptOutcome.TLS_ERROR,
    FailureKind.REDIRECT: AttemptOutcome.HTTP_ERROR,
    FailureKind.INVALID_RESPONSE: AttemptOutcome.HTTP_ERROR,
}


def webhook_attempt(event: DeliveryEvent) -> WebhookAttempt | None:
    """The health observation of one ``sms.delivery.v1`` event, or None if the event is not an attempt.

    Each request made has exactly one event that says what it did: ``delivered`` (2xx), ``sent`` (an answer
    outside 2xx) or ``failed`` with a failure kind (no answer). ``failed`` without a kind is a decision not to
    send (endpoint disabled); decision events (queued, retry_scheduled, ...) are not attempts. A batch's POST
    has one event per message it carried, so health rates are per message.
    """
    if event.route_id is None or event.duration_ms is None:
        return None
    if event.state is DeliveryState.DELIVERED:
        outcome: AttemptOutcome | None = AttemptOutcome.SUCCESS
    elif event.state is DeliveryState.SENT or event.state is DeliveryState.FAILED:
        outcome = observed_outcome(False, event.status_code, event.failure)
    else:
        return None
    if outcome is None:
        return None
    at = int(event.ts.timestamp() * 1000)
    return WebhookAttempt(route_id=event.route_id, at=at, outcome=outcome, latency_ms=event.duration_ms)


def observed_outcome(ok: bool, status_code: int | None, failure: FailureKind | None) -> AttemptOutcome | None:
    """How one request counts for its route's health; None when nothing was sent (nothing to judge)."""
    if ok:
        return AttemptOutcome.SUCCESS
    if status_code is not None and failure in (FailureKind.HTTP_STATUS, FailureKind.REDIRECT, None):
        # 429 asks us to slow down; a 503's Retry-After is not on the event, so a 503 counts as an error
        return AttemptOutcome.THROTTLED if status_code == 429 else AttemptOutcome.HTTP_ERROR
    return _OUTCOME_OF_FAILURE.get(failure) if failure is not None else None
