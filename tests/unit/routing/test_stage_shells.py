"""The stage's pure shells around the double list (issue 11): HealthFeed, ScopeDesk, AttemptReader."""

from __future__ import annotations

import json
from typing import Any

from smsflow.routing.attempts import AttemptReader
from smsflow.routing.decisions import DecisionKind
from smsflow.routing.feed import HealthFeed
from smsflow.routing.health import HealthState
from smsflow.routing.model import ListName, parse_policies
from smsflow.routing.observations import (
    AttemptOutcome,
    BindRefused,
    ProbeReturned,
    ProbeSent,
    SessionBound,
    observation_record,
    observations_of,
    traffic_report,
)
from smsflow.routing.scopes import ScopeDesk, scopes_of
from tests.routing_factories import SCOPE, S, record

T0 = 1_700_000_000_000 // 10_000 * 10_000  # a step boundary


def section(**kw: Any) -> Any:
    return parse_policies(
        {
            "routes": [
                {"id": "pa", "kind": "carrier", "carrier": "a", "pool": ["+8526"]},
                {"id": "sb", "kind": "carrier", "carrier": "b", "pool": ["+8526"]},
                {"id": "hook-1", "kind": "webhook", "url": "http://127.0.0.1:1/one"},
            ],
            "policies": [{"scope": SCOPE, "primary": ["pa"], "secondary": ["sb"], "hold_down_s": 30}],
            **kw,
        }
    )


def connector(obs: Any) -> dict[str, Any]:
    return observation_record(obs, "connector:a")


def test_observation_records_round_trip_and_traffic_is_counters() -> None:
    for obs in (
        SessionBound("pa", T0, "a#0"),
        BindRefused("pa", T0, "a#1", "no"),
        ProbeSent("pa", T0, "pa:1"),
    ):
        back = observations_of(observation_record(obs))
        assert back[0].route_id == "pa" and type(back[0]) is type(obs)
    report = traffic_report("pa", T0, ok=7, temporary_errors=2, errors=1, bound=["a#0"])
    assert len(observations_of(report)) == 10


def test_a_refused_bind_turns_the_route_down_and_the_scope_fails_over() -> None:
    sec = section()
    feed = HealthFeed(sec, start=T0, grace_ms=0)
    desk = ScopeDesk(sec, sec.policies[0])
    state = desk.initial()
    records = []
    for route, carrier in (("pa", "a"), ("sb", "b")):
        records += feed.on_record(traffic_report(route, T0 + 100, 5, 0, 0, [f"{carrier}#0"], "connector"), 1)
    records += feed.on_record(traffic_report("sb", T0 + 100, 5, 0, 0, ["b#0"], "connector"), 2)
    records += feed.on_tick(T0 + 10 * S)
    # the primary's carrier drops the session and refuses binds
    lost = observation_record(BindRefused("pa", T0 + 12 * S, "a#0", "0x0D"), "connector:a")
    records += feed.on_record({**lost, "kind": "session_lost"}, 3)
    records += feed.on_record(lost, 4)
    for t in range(11, 20):
        for route in ("pa", "sb"):
            bound = [] if route == "pa" else ["b#0"]
            records += feed.on_record(
                traffic_report(route, T0 + t * S, 0, 0, 0, bound, "connector"), 10 + t * 2
            )
        records += feed.on_tick(T0 + t * S)
    records += feed.on_tick(T0 + 20 * S)
    decisions = []
    for rec in records:
        state, out = desk.on_health(state, rec)
        decisions += out
    assert [d.kind for d in decisions] == [DecisionKind.FAILOVER]
    assert decisions[0].at == T0 + 20 * S  # the first window that ends after the failure
    assert state.active is ListName.SECONDARY
    assert "bound_sessions=0" in decisions[0].reason


def test_a_replayed_observation_is_not_counted_twice_after_restore() -> None:
    sec = section()
    feed = HealthFeed(sec, start=T0, grace_ms=0)
    feed.on_record(connector(ProbeSent("pa", T0 + 1 * S, "pa:1")), 0)
    feed.on_record(connector(ProbeReturned("pa", T0 + 2 * S, "pa:1")), 1)
    saved = json.loads(json.dumps(feed.snapshot()))
    again = HealthFeed(sec, start=T0 + 5 * S, grace_ms=0)
    again.restore(saved)
    assert again.on_record(connector(ProbeReturned("pa", T0 + 2 * S, "pa:1")), 1) == []
    pa = next(r for r in again.on_tick(T0 + 10 * S) if r.route_id == "pa")
    assert pa.figures["probe_latency_ms"] == 1000.0
    assert pa.figures["probes_resolved"] == 1.0


def test_a_route_whose_connector_stops_reporting_goes_down_and_comes_back() -> None:
    sec = section(stale_after_windows=2)
    feed = HealthFeed(sec, start=T0, grace_ms=0)
    feed.on_record(traffic_report("pa", T0 + S, 0, 0, 0, ["a#0"], "connector:a"), 0)
    feed.on_record(traffic_report("sb", T0 + S, 0, 0, 0, ["b#0"], "connector:b"), 1)
    assert all(r.state is HealthState.HEALTHY for r in feed.on_tick(T0 + 10 * S))
    offset = 2
    for t in range(11, 31):
        feed.on_record(traffic_report("sb", T0 + t * S, 0, 0, 0, ["b#0"], "connector:b"), offset)
        offset += 1
    late = {r.route_id: r for r in feed.on_tick(T0 + 30 * S)}
    assert late["pa"].state is HealthState.DOWN and late["pa"].figures["bound_sessions"] == 0
    assert late["sb"].state is HealthState.HEALTHY
    feed.on_record(traffic_report("pa", T0 + 31 * S, 0, 0, 0, ["a#0"], "connector:a"), offset)
    back = {r.route_id: r for r in feed.on_tick(T0 + 40 * S)}
    assert back["pa"].figures["bound_sessions"] == 1


def test_health_records_that_stop_arriving_make_the_route_down_on_record_time() -> None:
    sec = section(stale_after_windows=3)
    desk = ScopeDesk(sec, sec.policies[0])
    state = desk.initial()
    kinds = []
    for t in range(10, 80, 10):
        for route in ("pa", "sb") if t <= 20 else ("sb",):  # the primary's records stop after 20 s
            state, out = desk.on_health(state, record(route, t, "healthy"))
            kinds += [d.kind for d in out]
    assert kinds == [DecisionKind.FAILOVER]
    assert state.health["pa"].figures["stale_steps"] >= 3
    assert state.active is ListName.SECONDARY
    assert scopes_of(sec, "pa") == [SCOPE] and scopes_of(sec, "hook-1") == []


def test_delivery_events_become_one_attempt_per_post() -> None:
    reader = AttemptReader(section())
    base = {"url": "http://127.0.0.1:1/one", "webhook_id": "msg_1", "attempt": 1, "ts": T0, "duration_ms": 12}
    first = reader.attempt({**base, "state": "retry_scheduled", "status_code": 503, "failure": "http_status"})
    assert first is not None and first.outcome is AttemptOutcome.THROTTLED and first.route_id == "hook-1"
    assert reader.attempt({**base, "state": "retry_scheduled", "status_code": 503}) is None  # same POST
    timeout = reader.attempt({**base, "attempt": 2, "state": "failed", "failure": "timeout"})
    assert timeout is not None and timeout.outcome is AttemptOutcome.TIMEOUT
    assert reader.attempt({**base, "attempt": 3, "state": "queued"}) is None
    assert reader.attempt({**base, "attempt": 4, "state": "failed", "failure": "deferred"}) is None
    assert reader.attempt({**base, "url": "http://elsewhere/", "attempt": 5, "state": "delivered"}) is None
    ok = reader.attempt({**base, "attempt": 6, "state": "delivered", "status_code": 200})
    assert ok is not None and ok.outcome is AttemptOutcome.SUCCESS


def api_subscription(**over: Any) -> Any:
    """A subscription made through the API: its url (main) on the primary list, ``dr`` on the secondary."""
    from smsflow.routing.model import ListName as L
    from smsflow.subscriptions.model import Subscription, WebhookEndpoint

    fields: dict[str, Any] = {
        "id": "sub_api",
        "owner": "acme",
        "url": "https://main.example.com/sms",
        "endpoints": [WebhookEndpoint(id="dr", role=L.SECONDARY, url="https://dr.example.com/sms")],
        **over,
    }
    return Subscription(**fields)


def test_a_subscription_made_through_the_api_gets_the_same_policy_machinery() -> None:
    """Issue 11: API subscriptions with a secondary endpoint are decided by the stage like config policies:
    their endpoints' attempts are judged, the scope fails over on the windows, not only by the local rule."""
    from smsflow.delivery.failover import with_subscription_lists

    sub = api_subscription()
    sec = with_subscription_lists(section(), [sub, api_subscription(id="single", endpoints=[])])
    assert [p.scope.key for p in sec.policies] == [SCOPE, "subscription:sub_api"]  # one list: no policy
    policy = sec.policy("subscription:sub_api")
    assert policy is not None and policy.primary == ("sub_api.main",) and policy.secondary == ("sub_api.dr",)
    assert scopes_of(sec, "sub_api.main") == ["subscription:sub_api"]

    feed = HealthFeed(section(), start=T0, grace_ms=0)
    feed.set_section(sec)  # as the stage does once it has read the subscriptions
    reader = AttemptReader(section())
    reader.use(sec)
    desk = ScopeDesk(sec, policy)
    state, decisions = desk.initial(), []
    offset = 0
    for t in range(1, 40):  # the primary answers 503 to every attempt, the secondary (pinged) 200
        for route, url, status in (("main", sub.url, 503), ("dr", "https://dr.example.com/sms", 204)):
            event = {
                "state": "delivered" if status < 300 else "retry_scheduled",
                "status_code": status,
                "url": url,
                "route_id": f"sub_api.{route}",
                "webhook_id": f"msg_{t}",
                "attempt": 1,
                "ts": T0 + t * S // 2,
                "duration_ms": 5,
            }
            attempt = reader.attempt(event)
            assert attempt is not None and attempt.route_id == f"sub_api.{route}"
            for rec in feed.on_record(observation_record(attempt, "worker"), offset):
                if rec.route_id.startswith("sub_api."):
                    state, out = desk.on_health(state, rec)
                    decisions += out
            offset += 1
    assert [d.kind for d in decisions] == [DecisionKind.FAILOVER]
    assert state.active is ListName.SECONDARY and "success_rate" in decisions[0].reason


def test_the_config_keeps_its_own_policy_for_a_subscription_scope_and_disabled_ones_get_none() -> None:
    from smsflow.delivery.failover import with_subscription_lists

    sec = parse_policies(
        {
            "routes": [
                {"id": "hook-1", "kind": "webhook", "url": "https://main.example.com/sms"},
                {"id": "hook-2", "kind": "webhook", "url": "https://dr.example.com/sms"},
            ],
            "policies": [{"scope": "subscription:sub_api", "primary": ["hook-1"], "secondary": ["hook-2"]}],
        }
    )
    wide = with_subscription_lists(sec, [api_subscription(), api_subscription(id="off", enabled=False)])
    assert wide.policies == sec.policies and wide.routes == sec.routes


def test_the_subscriptions_without_a_secondary_list_add_nothing_to_the_section() -> None:
    """The deliver and routes stages keep only the subscriptions ``lists_routes`` says the section reads:
    the section must come out the same as from every subscription (config policies and routes, disabled
    subscriptions, one-list subscriptions, route ids the config already uses, all mixed)."""
    import random

    from smsflow.delivery.failover import lists_routes, with_subscription_lists
    from smsflow.routing.model import ListName as L
    from smsflow.subscriptions.model import WebhookEndpoint

    sec = parse_policies(
        {
            "routes": [
                {"id": "hook-1", "kind": "webhook", "url": "https://main.example.com/sms"},
                {"id": "hook-2", "kind": "webhook", "url": "https://dr.example.com/sms"},
            ],
            "policies": [{"scope": "subscription:s3", "primary": ["hook-1"], "secondary": ["hook-2"]}],
        }
    )
    rng = random.Random(7)
    for _ in range(200):
        subs = []
        for i in range(rng.randint(0, 8)):
            endpoints = [
                WebhookEndpoint(
                    id=f"e{j}", role=rng.choice([L.PRIMARY, L.SECONDARY]), url=f"https://x{j}.example/"
                )
                for j in range(rng.randint(0, 2))
            ]
            subs.append(api_subscription(id=f"s{i}", enabled=rng.random() < 0.8, endpoints=endpoints))
        rng.shuffle(subs)
        assert with_subscription_lists(sec, [s for s in subs if lists_routes(s)]) == with_subscription_lists(
            sec, subs
        )
