"""Which carrier route an outbound segment goes to: the double list's answer for the destination.

The destination's policy is `RoutingSection.for_number` (its own number, else the longest prefix, else its
country). The scope's state says which list is active; with no state yet the primary is. The worker knows it
as the scope's latest decision on sms.routes.decisions.v1 (an `ActiveList`: the active list and each route's
latest state, the decision's evidence); the double-list stage's own `ScopeState` carries the same. Candidates,
in order:

1. the active list's routes, then the other list's ("same route, then the secondary list": a segment
   whose retries on one route are exhausted moves on, and when the active list is used up, to the other);
2. within a list, healthy before not-yet-scored before degraded, keeping the configured order among equals;
   routes the scope's latest health calls down are left out (a submit to them fails anyway and costs time);
3. routes this segment already gave up on (`tried`) are left out.

No candidate left is a `NoRoute` with the reason; the caller keeps the segment queued and asks again on the
next decision or at its retry time, until its validity expires.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from smsflow.delivery.failover import ActiveList
from smsflow.routing.decisions import ScopeState
from smsflow.routing.health import HealthState
from smsflow.routing.model import ListName, RoutingSection

_ORDER = {HealthState.HEALTHY: 0, None: 1, HealthState.DEGRADED: 2}


@dataclass(frozen=True)
class RouteChoice:
    route_id: str
    carrier: str
    list_name: ListName
    scope: str


@dataclass(frozen=True)
class NoRoute:
    reason: str


def route_candidates(
    routing: RoutingSection,
    states: Mapping[str, ScopeState | ActiveList],
    destination: str,
    country: str | None,
    tried: Collection[str] = (),
) -> list[RouteChoice] | NoRoute:
    policy = routing.for_number(destination, country)
    if policy is None:
        return NoRoute(f"no routing policy covers {destination} (country {country or 'unknown'})")
    scope = policy.scope.key
    state = states.get(scope)
    active = state.active if state is not None else ListName.PRIMARY
    out: list[RouteChoice] = []
    for name in (active, active.other):
        ranked = []
        for position, rid in enumerate(policy.routes(name)):
            hs = _health(state, rid)
            if rid in tried or hs is HealthState.DOWN:
                continue
            ranked.append((_ORDER[hs], position, rid))
        for _, _, rid in sorted(ranked):
            carrier = routing.route(rid).carrier or rid
            out.append(RouteChoice(rid, carrier, name, scope))
    if not out:
        return NoRoute(f"every route of {scope} is down or was already tried for this segment")
    return out


def _health(state: ScopeState | ActiveList | None, route_id: str) -> HealthState | None:
    """The route's latest health in the scope's state; None: not scored yet."""
    if isinstance(state, ActiveList):
        return state.route_states.get(route_id)
    record = state.health.get(route_id) if state is not None else None
    return record.state if record is not None else None
