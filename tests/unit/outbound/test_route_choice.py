"""Outbound route choice obeys the double list: active list first, healthy first, down left out."""

from __future__ import annotations

from dataclasses import replace

from smsflow.outbound.route_choice import NoRoute, route_candidates
from smsflow.routing.decisions import ScopeState
from smsflow.routing.model import ListName, RoutingSection, parse_policies
from tests.routing_factories import record

ROUTES = [
    {"id": rid, "kind": "carrier", "carrier": f"carrier-{rid}", "pool": ["+8526"]}
    for rid in ("pa1", "pa2", "sb1", "sb2")
]
SCOPE = "prefix:+8526"


def routing() -> RoutingSection:
    return parse_policies(
        {
            "routes": ROUTES,
            "policies": [{"scope": SCOPE, "primary": ["pa1", "pa2"], "secondary": ["sb1", "sb2"]}],
        }
    )


def order(states: dict[str, ScopeState], tried: tuple[str, ...] = ()) -> list[str] | str:
    result = route_candidates(routing(), states, "+85261234567", "HK", tried)
    return result.reason if isinstance(result, NoRoute) else [c.route_id for c in result]


def test_without_a_decision_the_primary_list_goes_first_in_configured_order() -> None:
    assert order({}) == ["pa1", "pa2", "sb1", "sb2"]


def test_after_a_failover_the_secondary_list_goes_first() -> None:
    state = ScopeState(scope=SCOPE, active=ListName.SECONDARY)
    assert order({SCOPE: state}) == ["sb1", "sb2", "pa1", "pa2"]


def test_healthy_before_unscored_before_degraded_and_down_left_out() -> None:
    health = {
        "pa1": record("pa1", 100, "degraded"),
        "pa2": record("pa2", 100, "healthy"),
        "sb1": record("sb1", 100, "down"),
    }
    assert order({SCOPE: ScopeState(scope=SCOPE, health=health)}) == ["pa2", "pa1", "sb2"]


def test_routes_given_up_on_move_the_segment_to_the_other_list() -> None:
    assert order({}, tried=("pa1", "pa2")) == ["sb1", "sb2"]
    state = replace(
        ScopeState(scope=SCOPE), health={"sb1": record("sb1", 100, "down"), "sb2": record("sb2", 100, "down")}
    )
    reason = order({SCOPE: state}, tried=("pa1", "pa2"))
    assert isinstance(reason, str) and "down or was already tried" in reason


def test_a_destination_no_policy_covers_has_no_route() -> None:
    result = route_candidates(routing(), {}, "+447700900123", "GB")
    assert isinstance(result, NoRoute) and "no routing policy covers +447700900123" in result.reason


def test_the_choice_names_the_carrier_connection_and_list() -> None:
    result = route_candidates(
        routing(), {SCOPE: ScopeState(scope=SCOPE, active=ListName.SECONDARY)}, "+85261234567", "HK"
    )
    assert not isinstance(result, NoRoute)
    first = result[0]
    assert (first.route_id, first.carrier, first.list_name, first.scope) == (
        "sb1",
        "carrier-sb1",
        ListName.SECONDARY,
        SCOPE,
    )
