"""The double list on the webhook side: the endpoint an attempt goes to, and what delivery tells the stage."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiohttp import web
from pydantic import ValidationError
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from smsflow.delivery.active_lists import ActiveLists
from smsflow.delivery.engine import DeliveryEngine
from smsflow.delivery.events import AttemptResult, DeliveryEvent, DeliveryState, FailureKind
from smsflow.delivery.failover import (
    ActiveList,
    choose_endpoint,
    fails_route,
    next_endpoint,
    subscription_policies,
    subscription_policy,
    subscription_routes,
    webhook_attempt,
)
from smsflow.delivery.policy import CircuitConfig, EndpointCircuit, circuit_key
from smsflow.delivery.sender import SenderConfig, WebhookSender
from smsflow.producer import BufferedProducer
from smsflow.routing.health import HealthState
from smsflow.routing.model import ListName, RoutingPolicy, Thresholds
from smsflow.routing.observations import AttemptOutcome
from smsflow.subscriptions.model import (
    Subscription,
    WebhookEndpoint,
    subscription_from_record,
    subscription_to_record,
)
from smsflow.subscriptions.secretbox import SecretBox
from smsflow.subscriptions.store import InMemorySubscriptionStore
from streams.deliver import KafkaDelivery
from tests.unit.delivery.test_sender import LOCAL, Endpoint, msg


@pytest.fixture
async def receivers():
    started: list[Endpoint] = []

    async def make(handler: Any = None) -> Endpoint:
        ep = await Endpoint(handler).start()
        started.append(ep)
        return ep

    yield make
    for ep in started:
        await ep.stop()


async def unavailable(request: web.Request) -> web.Response:
    return web.Response(status=503)


H, D, X = HealthState.HEALTHY, HealthState.DEGRADED, HealthState.DOWN
P, S = ListName.PRIMARY, ListName.SECONDARY


def two_lists(**over: Any) -> Subscription:
    """primary: main, p2; secondary: s1, s2."""
    return Subscription(
        id="sub_1",
        owner="acme",
        url="https://a.example/hook",
        endpoints=[
            WebhookEndpoint(id="p2", role=P, url="https://a2.example/hook"),
            WebhookEndpoint(id="s1", role=S, url="https://b.example/hook"),
            WebhookEndpoint(id="s2", role=S, url="https://b2.example/hook"),
        ],
        **over,
    )


def decision(active: ListName, **states: HealthState) -> ActiveList:
    return ActiveList(active, {f"sub_1.{r}": s for r, s in states.items()})


# (active list or None, route states, endpoint chosen)
CHOICES = [
    (None, {}, "main"),  # no decision yet: the primary list
    (decision(P), {}, "main"),  # no health records: no evidence against anyone
    (decision(P, main=H, p2=H), {}, "main"),
    (decision(P, main=D, p2=H), {}, "p2"),  # first healthy route of the active list
    (decision(P, main=X, p2=D, s1=H), {}, "main"),  # none healthy on the list: stay on its first route
    (decision(S), {}, "s1"),
    (decision(S, s1=X, s2=H), {}, "s2"),
    (decision(S, s1=X, s2=X, main=H), {}, "s1"),  # the stage chose the list; the local rule does not flip it
]


@pytest.mark.parametrize(("active", "_", "expected"), CHOICES)
def test_choice_follows_the_active_list(active, _, expected):
    choice = choose_endpoint(two_lists(), active)
    assert choice.endpoint.id == expected
    assert choice.route_id == f"sub_1.{expected}"
    assert choice.list is (P if expected in ("main", "p2") else S)


def test_a_decision_for_a_list_the_subscription_no_longer_has_falls_back_to_primary():
    sub = Subscription(id="sub_1", owner="acme", url="https://a.example/hook")
    assert sub.endpoint_list(P)[0].id == "main" and sub.endpoint_list(S) == []
    assert choose_endpoint(sub, decision(S)).endpoint.id == "main"


def result(endpoint: str, status: int | None = None, failure: FailureKind | None = None) -> AttemptResult:
    if status is not None and not 200 <= status < 300 and failure is None:
        failure = FailureKind.HTTP_STATUS
    return AttemptResult(
        subscription_id="sub_1",
        webhook_id="msg_1",
        message_ids=["msg_1"],
        attempt=1,
        url="https://x.example/",
        endpoint_id=endpoint,
        route_id=f"sub_1.{endpoint}",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        duration_ms=5.0,
        status_code=status,
        failure=failure,
    )


# (active, failed endpoint, status, failure kind, next endpoint at once or None)
HOPS = [
    (None, "main", 503, None, "p2"),
    (None, "main", None, FailureKind.TIMEOUT, "p2"),
    (None, "main", None, FailureKind.CONNECTION, "p2"),
    (None, "main", None, FailureKind.TLS, "p2"),
    (None, "main", 429, None, "p2"),
    (None, "p2", 500, None, "s1"),  # off the end of the active list: on to the other list
    (None, "s2", 503, None, None),  # nothing after it: the retry schedule, then the decision
    (decision(P, p2=X), "main", 503, None, "s1"),  # skips a route known to be down
    (decision(S), "s1", 503, None, "s2"),
    (decision(S), "s2", None, FailureKind.TIMEOUT, "main"),  # the other list after the active one
    (decision(S), "p2", 503, None, None),
    (None, "main", 400, None, None),  # the receiver's verdict on the message: follow the schedule
    (None, "main", 401, None, None),
    (None, "main", 200, None, None),
    (None, "main", None, FailureKind.DEFERRED, None),  # nothing was sent: not the route's fault
    (None, "gone", 503, None, None),  # the endpoint was removed meanwhile
]


@pytest.mark.parametrize(("active", "failed", "status", "failure", "expected"), HOPS)
def test_local_rule_moves_forward_once(active, failed, status, failure, expected):
    hop = next_endpoint(two_lists(), active, result(failed, status, failure))
    assert (hop.endpoint.id if hop else None) == expected
    if hop:
        assert f"sub_1.{failed} failed" in hop.reason


def test_one_message_passes_over_the_routes_at_most_once_without_waiting():
    """Every route failing: the hops visit each route once, in order, then stop (no ping-pong)."""
    sub, active = two_lists(), decision(P)
    visited = [choose_endpoint(sub, active).endpoint.id]
    while (hop := next_endpoint(sub, active, result(visited[-1], 503))) is not None:
        visited.append(hop.endpoint.id)
    assert visited == ["main", "p2", "s1", "s2"]


@pytest.mark.parametrize(
    ("status", "failure", "expected"),
    [
        (503, None, True),
        (502, None, True),
        (408, None, True),
        (404, None, False),
        (302, FailureKind.REDIRECT, True),
        (None, FailureKind.DNS, True),
        (None, FailureKind.BLOCKED_ADDRESS, True),
        (None, FailureKind.HTTPS_REQUIRED, False),
        (200, FailureKind.INVALID_RESPONSE, True),
    ],
)
def test_which_failures_say_this_route(status, failure, expected):
    assert fails_route(result("main", status, failure)) is expected


def test_decision_record_and_config_route_ids():
    """Evidence may name an endpoint by its own route id or by a config webhook route with its URL."""
    record = {
        "decision_id": "subscription:sub_1#3",
        "active": "primary",
        "evidence": [
            {"route_id": "hook-1", "state": "down"},
            {"route_id": "sub_1.p2", "state": "degraded"},
        ],
    }
    active = ActiveList.from_decision(record, {"hook-1": "https://a.example/hook"})
    assert active.decision_id == "subscription:sub_1#3"
    assert not active.healthy("sub_1.main", "https://a.example/hook")
    assert not active.healthy("sub_1.p2")
    # nothing healthy on the primary list: its first route
    assert choose_endpoint(two_lists(), active).endpoint.id == "main"
    lists = ActiveLists({"hook-1": "https://a.example/hook"})
    lists.apply("subscription:sub_1", {**record, "active": "secondary"})
    lists.apply("prefix:+8526", {**record, "active": "secondary"})  # carrier scopes are not delivery's
    assert len(lists) == 1 and lists.of("sub_1").active is S
    lists.apply("subscription:sub_1", None)
    assert lists.of("sub_1") is None


def test_endpoints_are_validated_and_named():
    with pytest.raises(ValidationError, match=r"endpoints\[0\]\.id: 'main' is the subscription's own url"):
        Subscription(
            owner="a", url="https://a.example/", endpoints=[{"id": "main", "url": "https://b.example/"}]
        )
    with pytest.raises(ValidationError, match="is used twice"):
        Subscription(
            owner="a",
            url="https://a.example/",
            endpoints=[{"id": "b", "url": "https://b.example/"}, {"id": "b", "url": "https://c.example/"}],
        )
    with pytest.raises(ValidationError, match="must be an http:// or https:// URL"):
        Subscription(owner="a", url="https://a.example/", endpoints=[{"id": "b", "url": "ftp://b.example/"}])
    with pytest.raises(ValidationError, match="longer than 64"):
        Subscription(
            id="s" * 60,
            owner="a",
            url="https://a.example/",
            endpoints=[{"id": "b" * 8, "url": "https://b.example/"}],
        )
    sub = Subscription(
        owner="a", url="https://u:pw@a.example/", endpoints=[{"id": "b", "url": "https://u:pw@b.example/"}]
    )
    assert "pw" not in repr(sub)


def test_record_round_trip_keeps_each_endpoints_own_secrets_sealed():
    box = SecretBox({"k1": b"k" * 32})
    sub = two_lists()
    raw = subscription_to_record(sub, box)
    for ep in sub.endpoints:
        assert ep.secrets[0].value.get_secret_value().encode() not in raw
    again = subscription_from_record(raw, box)
    assert again == sub
    assert {ep.id: ep.signing_secrets() for ep in again.endpoints} == {
        ep.id: ep.signing_secrets() for ep in sub.endpoints
    }
    # a record written before endpoints existed: one url is a primary list of one
    old = orjson.loads(raw)
    del old["endpoints"]
    assert subscription_from_record(orjson.dumps(old), box).endpoint_list(P)[0].url == sub.url


def test_policy_for_the_health_stage():
    sub = two_lists()
    policy = subscription_policy(sub)
    assert policy is not None and policy.scope.key == "subscription:sub_1"
    assert policy.primary == ("sub_1.main", "sub_1.p2") and policy.secondary == ("sub_1.s1", "sub_1.s2")
    assert [r.id for r in subscription_routes(sub)] == ["sub_1.main", "sub_1.p2", "sub_1.s1", "sub_1.s2"]
    configured = RoutingPolicy(
        scope="subscription:sub_1", primary=("x",), secondary=("y",), hold_down_s=5, thresholds=Thresholds()
    )
    assert subscription_policy(sub, configured).hold_down_s == 5
    single = Subscription(id="sub_2", owner="acme", url="https://a.example/hook")
    assert subscription_policy(single) is None
    assert [p.scope.key for p in subscription_policies([sub, single])] == ["subscription:sub_1"]


def event(state: DeliveryState, **kw: Any) -> DeliveryEvent:
    kw.setdefault("duration_ms", 12.0)
    return DeliveryEvent(
        ts=datetime(2026, 1, 1, tzinfo=UTC),
        state=state,
        message_id="m",
        subscription_id="sub_1",
        route_id="sub_1.main",
        **kw,
    )


@pytest.mark.parametrize(
    ("ev", "expected"),
    [
        (event(DeliveryState.DELIVERED, status_code=200), AttemptOutcome.SUCCESS),
        (
            event(DeliveryState.SENT, status_code=503, failure=FailureKind.HTTP_STATUS),
            AttemptOutcome.HTTP_ERROR,
        ),
        (
            event(DeliveryState.SENT, status_code=429, failure=FailureKind.HTTP_STATUS),
            AttemptOutcome.THROTTLED,
        ),
        (event(DeliveryState.FAILED, failure=FailureKind.TIMEOUT), AttemptOutcome.TIMEOUT),
        (event(DeliveryState.FAILED, failure=FailureKind.CONNECTION), AttemptOutcome.CONNECT_ERROR),
        (event(DeliveryState.FAILED, failure=FailureKind.TLS), AttemptOutcome.TLS_ERROR),
        (event(DeliveryState.FAILED, failure=FailureKind.DEFERRED), None),  # nothing was sent
        (event(DeliveryState.RETRY_SCHEDULED, status_code=503), None),  # a decision, not a request
        (event(DeliveryState.QUEUED, duration_ms=None), None),
    ],
)
def test_delivery_events_become_webhook_attempts(ev, expected):
    obs = webhook_attempt(ev)
    assert (obs.outcome if obs else None) == expected
    if obs:
        assert obs.route_id == "sub_1.main" and obs.at == 1767225600000 and obs.latency_ms == 12.0


# ---- the engine and the sender: the same webhook-id at every endpoint, each signed with its own secret ----


class _Topic:
    def __init__(self, name: str, sent: list[tuple[str, bytes, bytes]]) -> None:
        self.name, self.sent = name, sent

    async def send(self, key: bytes, value: bytes, headers: Any = None) -> None:
        self.sent.append((self.name, key, value))


def kafka_delivery(engine: DeliveryEngine) -> tuple[KafkaDelivery, list[tuple[str, bytes, bytes]]]:
    """The delivery shell with its Kafka writes captured (what it publishes is the behaviour under test)."""
    sent: list[tuple[str, bytes, bytes]] = []
    ctx = SimpleNamespace(serde=SimpleNamespace(encode=lambda topic, rec: orjson.dumps(rec)))
    kd = KafkaDelivery(ctx, engine, store=None)  # type: ignore[arg-type]
    kd.topics = {
        t: _Topic(t, sent)
        for t in ("sms.delivery.v1", "sms.webhook.retry.v1", "sms.webhook.dlq.v1", "sms.ops.events.v1")
    }
    return kd, sent


def with_dr(primary: Endpoint, secondary: Endpoint) -> Subscription:
    """The primary list is the subscription's url, the secondary list one endpoint ``dr``."""
    return Subscription(
        id="sub_1",
        owner="acme",
        url=primary.url,
        timeout_seconds=2,
        endpoints=[WebhookEndpoint(id="dr", role=S, url=secondary.url)],
    )


async def test_primary_503_goes_to_the_secondary_at_once_with_the_same_webhook_id(receivers):
    primary, secondary = await receivers(unavailable), await receivers()
    sub = with_dr(primary, secondary)
    async with WebhookSender(SenderConfig(address_policy=LOCAL)) as sender:
        kd, sent = kafka_delivery(DeliveryEngine(sender))
        await kd.attempt(sub, [msg()], 1, datetime.now(UTC), None)
    (p_headers, p_body, _), (s_headers, s_body, _) = primary.requests[0], secondary.requests[0]
    assert p_headers["webhook-id"] == s_headers["webhook-id"] == "msg_0001"
    # each endpoint verifies with its own secret only
    main_secret = sub.secrets[0].value.get_secret_value()
    dr_secret = sub.endpoints[0].secrets[0].value.get_secret_value()
    assert Webhook(main_secret).verify(p_body, p_headers) == msg()
    assert Webhook(dr_secret).verify(s_body, s_headers) == msg()
    with pytest.raises(WebhookVerificationError):
        Webhook(main_secret).verify(s_body, s_headers)
    events = [orjson.loads(v) for t, _, v in sent if t == "sms.delivery.v1"]
    assert [(e["state"], e["attempt"], e["route_id"]) for e in events] == [
        ("sent", 1, "sub_1.main"),
        ("retry_scheduled", 1, "sub_1.main"),
        ("delivered", 2, "sub_1.dr"),
    ]
    assert "next route sub_1.dr (secondary) at once" in events[1]["error"]
    assert not [t for t, _, _ in sent if t == "sms.webhook.retry.v1"]  # no retry record: done in this call
    assert kd.stats["failovers"] == 1 and kd.stats["delivered"] == 1


async def test_after_failover_decision_a_message_goes_straight_to_the_secondary(receivers):
    primary, secondary = await receivers(), await receivers()
    sub = with_dr(primary, secondary)
    async with WebhookSender(SenderConfig(address_policy=LOCAL)) as sender:
        kd, _ = kafka_delivery(DeliveryEngine(sender))
        kd.active_lists.apply(
            "subscription:sub_1", {"decision_id": "subscription:sub_1#1", "active": "secondary"}
        )
        await kd.attempt(sub, [msg()], 1, datetime.now(UTC), None)
    assert not primary.requests and len(secondary.requests) == 1


async def test_every_route_failing_schedules_one_retry_on_the_active_list(receivers):
    primary, secondary = await receivers(unavailable), await receivers(unavailable)
    sub = with_dr(primary, secondary)
    async with WebhookSender(SenderConfig(address_policy=LOCAL)) as sender:
        kd, sent = kafka_delivery(DeliveryEngine(sender))
        await kd.attempt(sub, [msg()], 1, datetime.now(UTC), None)
    assert len(primary.requests) == len(secondary.requests) == 1
    (retry,) = [orjson.loads(v) for t, _, v in sent if t == "sms.webhook.retry.v1"]
    # two attempts made; the third waits for the schedule (no immediate ping-pong back to the primary)
    assert retry["attempt"] == 3 and retry["due_at"] > retry["first_at"]
    assert kd.stats["retry_scheduled"] == 1 and kd.stats["failovers"] == 1


async def test_a_hanging_primary_does_not_take_the_secondarys_slots(receivers):
    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.Response(status=204)

    primary, secondary = await receivers(hang), await receivers()
    sub = with_dr(primary, secondary).model_copy(update={"max_in_flight": 1})
    async with WebhookSender(SenderConfig(address_policy=LOCAL, max_queue_wait_s=0.2)) as sender:
        stuck = asyncio.ensure_future(sender.deliver(sub, [msg(1)], 1))
        await asyncio.sleep(0.2)  # the primary's only slot is taken
        blocked = await sender.deliver(sub, [msg(2)], 1)
        assert blocked.failure is FailureKind.DEFERRED
        dr = await sender.deliver(sub, [msg(2)], 2, endpoint=sub.endpoint("dr"))
        assert dr.ok and dr.route_id == "sub_1.dr" and dr.endpoint_id == "dr"
        await stuck


def test_cli_endpoint_options():
    from smsflow.cli import _endpoints

    assert _endpoints("secondary", ["dr=https://dr.example/h?a=b", "https://x.example/h?a=b"]) == [
        {"id": "dr", "role": "secondary", "url": "https://dr.example/h?a=b"},
        {"id": "s2", "role": "secondary", "url": "https://x.example/h?a=b"},
    ]


async def test_pings_go_to_the_endpoints_without_traffic_and_report_their_health(receivers):
    from smsflow.delivery.pings import EndpointPinger, idle_endpoints

    primary, secondary = await receivers(unavailable), await receivers()
    sub = with_dr(primary, secondary)
    single = Subscription(id="sub_2", owner="acme", url=secondary.url)
    lists = ActiveLists()
    published: list[Any] = []

    async def subscriptions() -> list[Subscription]:
        return [sub, single]

    async def publish(obs: Any) -> None:
        published.append(obs)

    assert [ep.id for ep in idle_endpoints(sub, lists)] == ["dr"]  # the primary gets the traffic
    assert idle_endpoints(single, lists) == []  # no double list: nothing to judge
    lists.apply("subscription:sub_1", {"decision_id": "subscription:sub_1#1", "active": "secondary"})
    async with WebhookSender(SenderConfig(address_policy=LOCAL)) as sender:
        pinger = EndpointPinger(sender, subscriptions, lambda: lists, publish)
        (obs,) = await pinger.ping_once()
    assert published == [obs]
    assert (obs.route_id, obs.outcome) == ("sub_1.main", AttemptOutcome.HTTP_ERROR)  # the failed-over primary
    assert not secondary.requests
    ((headers, body, _),) = primary.requests
    ping = Webhook(sub.secrets[0].value.get_secret_value()).verify(body, headers)
    assert ping["type"] == "smsflow.ping" and headers["webhook-id"].startswith("ping_sub_1.main_")


def test_config_webhook_routes_name_endpoints_by_url():
    from smsflow.delivery.failover import route_of_endpoint, webhook_route_urls
    from smsflow.routing.model import parse_policies

    section = parse_policies(
        {
            "routes": [
                {"id": "hook-1", "kind": "webhook", "url": "https://u:pw@a.example/hook"},
                {"id": "hk-a", "kind": "carrier", "carrier": "c1", "pool": ["+8526"]},
            ]
        }
    )
    urls = webhook_route_urls(section)
    assert urls == {"hook-1": "https://a.example/hook"}  # never the credentials
    route_of = route_of_endpoint(urls)
    sub = two_lists()
    assert route_of(sub, sub.main_endpoint) == "hook-1"  # the stage knows the main endpoint as hook-1
    assert route_of(sub, sub.endpoint("s1")) == "sub_1.s1"


async def gone(request: web.Request) -> web.Response:
    return web.Response(status=410)


async def server_error(request: web.Request) -> web.Response:
    return web.Response(status=500)


# Issue 11: a 410 or a tripped circuit on ONE endpoint of a double-listed subscription switches off that
# endpoint only; the other endpoints keep receiving. A subscription with one endpoint is switched off whole.


def published(sent: list[tuple[str, bytes, bytes]], topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(v) for t, _, v in sent if t == topic]


async def test_410_on_the_primary_disables_that_endpoint_only_and_the_secondary_keeps_receiving(receivers):
    primary, secondary = await receivers(gone), await receivers()
    sub = with_dr(primary, secondary)
    store = InMemorySubscriptionStore([sub])
    async with WebhookSender(SenderConfig(address_policy=LOCAL)) as sender:
        kd, sent = kafka_delivery(DeliveryEngine(sender, store=store))
        await kd.attempt(sub, [msg(1)], 1, datetime.now(UTC), None)
        after = await store.get(sub.id)
        assert after is not None
        await kd.attempt(after, [msg(2)], 1, datetime.now(UTC), None)

    # the message that met the 410 went to the secondary at once; the next one straight there
    assert len(primary.requests) == 1 and len(secondary.requests) == 2
    assert after.enabled and list(after.disabled_endpoints) == ["main"]
    assert "410" in after.disabled_endpoints["main"]
    assert choose_endpoint(after, None).route_id == "sub_1.dr"
    events = published(sent, "sms.delivery.v1")
    assert [(e["state"], e["route_id"]) for e in events if e["message_id"] == "msg_0001"] == [
        ("sent", "sub_1.main"),
        ("retry_scheduled", "sub_1.main"),
        ("endpoint_disabled", "sub_1.main"),
        ("delivered", "sub_1.dr"),
    ]
    assert not published(sent, "sms.webhook.dlq.v1")  # no message is lost to one endpoint's 410
    (ops,) = published(sent, "sms.ops.events.v1")
    assert ops["type"] == "endpoint_disabled" and ops["endpoint_id"] == "main"
    assert kd.stats["delivered"] == 2


async def test_410_on_the_only_endpoint_left_disables_the_subscription(receivers):
    primary, secondary = await receivers(), await receivers(gone)
    sub = with_dr(primary, secondary).model_copy(update={"disabled_endpoints": {"main": "HTTP 410 Gone"}})
    store = InMemorySubscriptionStore([sub])
    async with WebhookSender(SenderConfig(address_policy=LOCAL)) as sender:
        kd, sent = kafka_delivery(DeliveryEngine(sender, store=store))
        await kd.attempt(sub, [msg(1)], 1, datetime.now(UTC), None)
    after = await store.get(sub.id)
    assert after is not None and not after.enabled and "410" in (after.disabled_reason or "")
    assert not primary.requests  # switched off before: never tried again
    assert [d["state"] for d in published(sent, "sms.webhook.dlq.v1")] == ["dead_lettered"]


async def test_410_on_a_single_endpoint_subscription_still_disables_it_whole(receivers):
    only = await receivers(gone)
    sub = Subscription(id="sub_2", owner="acme", url=only.url, timeout_seconds=2)
    store = InMemorySubscriptionStore([sub])
    async with WebhookSender(SenderConfig(address_policy=LOCAL)) as sender:
        outcome = await DeliveryEngine(sender, store=store).attempt(sub, [msg(1)], 1, datetime.now(UTC))
    after = await store.get(sub.id)
    assert after is not None and not after.enabled and not after.disabled_endpoints
    assert outcome.disabled_reason is not None and outcome.disabled_endpoint is None


async def test_a_tripped_circuit_on_one_endpoint_disables_it_alone_and_an_operator_brings_it_back(receivers):
    primary, secondary = await receivers(server_error), await receivers()
    sub = with_dr(primary, secondary)
    store = InMemorySubscriptionStore([sub])
    circuit = EndpointCircuit(CircuitConfig(failing_for_s=0, max_consecutive_dead_letters=None))
    async with WebhookSender(SenderConfig(address_policy=LOCAL)) as sender:
        kd, _ = kafka_delivery(DeliveryEngine(sender, circuit=circuit, store=store))
        await kd.attempt(sub, [msg(1)], 1, datetime.now(UTC), None)
    after = await store.get(sub.id)
    assert after is not None and after.enabled and list(after.disabled_endpoints) == ["main"]
    assert len(secondary.requests) == 1 and kd.stats["delivered"] == 1
    # each endpoint has its own streak: the secondary's success did not clear the primary's
    assert circuit.snapshot(circuit_key("sub_1", "main"))["tripped"]
    assert circuit.snapshot(circuit_key("sub_1", "dr"))["failing_since"] is None
    # the operator re-enables the subscription's endpoints (POST /v1/subscriptions/{id}/enable does this)
    await store.put(after.model_copy(update={"disabled_endpoints": {}}))
    assert circuit.snapshot(circuit_key("sub_1", "main")) is None


@pytest.mark.parametrize(
    ("off", "active", "chosen", "after_chosen_fails"),
    [
        ({"main": "410"}, P, "sub_1.p2", "sub_1.s1"),  # the next endpoint of the same list
        ({"main": "410", "p2": "410"}, P, "sub_1.s1", "sub_1.s2"),  # the list is empty: the other one
        ({"s1": "410", "s2": "410"}, S, "sub_1.main", "sub_1.p2"),  # a decision for a list all switched off
        ({"s1": "circuit"}, S, "sub_1.s2", "sub_1.main"),
    ],
)
def test_endpoints_switched_off_alone_are_skipped(
    off: dict[str, str], active: ListName, chosen: str, after_chosen_fails: str
) -> None:
    sub = two_lists(disabled_endpoints=off)
    lists = ActiveList(active)
    choice = choose_endpoint(sub, lists)
    assert choice.route_id == chosen
    failed = AttemptResult(
        subscription_id="sub_1",
        webhook_id="msg_1",
        message_ids=["msg_1"],
        attempt=1,
        url=choice.endpoint.url,
        endpoint_id=choice.endpoint.id,
        started_at=datetime.now(UTC),
        duration_ms=1,
        status_code=410,
        failure=FailureKind.HTTP_STATUS,
    )
    hop = next_endpoint(sub, lists, failed)
    assert hop is not None and hop.route_id == after_chosen_fails


# ---- what the deliver stage tells the double-list stage: one observation per POST on a webhook route ----

OBSERVATIONS = "sms.routes.observations.v1"


def observing_delivery(
    engine: DeliveryEngine, routing: Any, store: InMemorySubscriptionStore
) -> tuple[KafkaDelivery, list[tuple[str, bytes, bytes]]]:
    sent: list[tuple[str, bytes, bytes]] = []
    ctx = SimpleNamespace(serde=SimpleNamespace(encode=lambda topic, rec: orjson.dumps(rec)))
    kd = KafkaDelivery(ctx, engine, store=store, routing=routing)  # type: ignore[arg-type]
    kd.topics = {
        t: _Topic(t, sent)
        for t in (
            "sms.delivery.v1",
            "sms.webhook.retry.v1",
            "sms.webhook.dlq.v1",
            "sms.ops.events.v1",
            OBSERVATIONS,
        )
    }
    return kd, sent


async def observed(kd: KafkaDelivery, sent: list[tuple[str, bytes, bytes]]) -> list[tuple[str, str]]:
    """(route id, outcome) of each attempt observed so far, once the tally is written: a record per route
    (and health step) with every attempt in it, never a record per POST."""
    await kd.flush_observations()
    out = []
    routes = []
    for topic, key, value in sent:
        if topic == OBSERVATIONS:
            rec = orjson.loads(value)
            assert (
                key.decode() == rec["route_id"]
                and rec["kind"] == "webhook_attempts"
                and rec["source"] == "worker"
            )
            routes.append(rec["route_id"])
            for group in rec["attempts"]:
                out += [(rec["route_id"], group["outcome"])] * len(group["latencies_ms"])
    assert len(routes) == len(set(routes)), "one record per route and step"
    return sorted(out)


async def test_a_batch_post_on_config_webhook_routes_is_one_observation_per_route_attempted(receivers):
    """Routes named by URL in the config: the primary's 503 and the secondary's 2xx are one observation each,
    however many messages the POST carried; the delivery events are written as before."""
    from smsflow.routing.model import parse_policies

    primary, secondary = await receivers(unavailable), await receivers()
    sub = with_dr(primary, secondary)
    routing = parse_policies(
        {
            "routes": [
                {"id": "hook-p", "kind": "webhook", "url": primary.url},
                {"id": "hook-s", "kind": "webhook", "url": secondary.url},
            ],
            "policies": [{"scope": "subscription:sub_1", "primary": ["hook-p"], "secondary": ["hook-s"]}],
        }
    )
    store = InMemorySubscriptionStore()
    await store.put(sub)
    async with WebhookSender(SenderConfig(address_policy=LOCAL)) as sender:
        kd, sent = observing_delivery(DeliveryEngine(sender), routing, store)
        await kd.attempt(sub, [msg(1), msg(2)], 1, datetime.now(UTC), None)
        assert await observed(kd, sent) == [("hook-p", "throttled"), ("hook-s", "success")]
    assert sum(1 for topic, _, _ in sent if topic == "sms.delivery.v1") >= 4  # two messages, two POSTs


async def test_no_double_list_stage_no_observations(receivers):
    primary, secondary = await receivers(unavailable), await receivers()
    sub = with_dr(primary, secondary)
    store = InMemorySubscriptionStore()
    await store.put(sub)
    async with WebhookSender(SenderConfig(address_policy=LOCAL)) as sender:
        from smsflow.routing.model import RoutingSection

        kd, sent = observing_delivery(DeliveryEngine(sender), RoutingSection(), store)
        assert kd.attempt_reader is None
        await kd.attempt(sub, [msg(1)], 1, datetime.now(UTC), None)
        assert await observed(kd, sent) == [] and any(topic == "sms.delivery.v1" for topic, _, _ in sent)


@contextlib.asynccontextmanager
async def listed_delivery(
    receivers: Any, store: InMemorySubscriptionStore
) -> AsyncIterator[
    tuple[KafkaDelivery, list[tuple[str, bytes, bytes]], Subscription, tuple[Endpoint, Endpoint]]
]:
    """``routing.subscription_lists`` on, ``sub_1`` in ``store`` with a primary answering 503 and a secondary
    ``dr``; yielded once its first attempt has been observed on both routes (the store read once for it)."""
    from smsflow.routing.model import parse_policies

    primary, secondary = await receivers(unavailable), await receivers()
    sub = with_dr(primary, secondary)
    await store.put(sub)
    async with WebhookSender(SenderConfig(address_policy=LOCAL)) as sender:
        kd, sent = observing_delivery(
            DeliveryEngine(sender), parse_policies({"subscription_lists": True}), store
        )
        await kd.attempt(sub, [msg(1)], 1, datetime.now(UTC), None)
        assert await observed(kd, sent) == [("sub_1.dr", "success"), ("sub_1.main", "throttled")]
        yield kd, sent, sub, (primary, secondary)


async def test_subscription_lists_follow_the_store(receivers):
    """``routing.subscription_lists``: a subscription's endpoints are routes while it has a secondary list;
    a change in the store is seen by the next attempt."""
    store = InMemorySubscriptionStore()
    async with listed_delivery(receivers, store) as (kd, sent, sub, _):
        single = sub.model_copy(update={"endpoints": []})  # the secondary list removed: no policy, no routes
        await store.put(single)
        sent.clear()
        await kd.attempt(single, [msg(2)], 1, datetime.now(UTC), None)
        assert await observed(kd, sent) == [] and any(topic == "sms.delivery.v1" for topic, _, _ in sent)


async def test_an_observation_that_cannot_be_made_does_not_fail_the_delivery_event(caplog):
    """Health is a by-product: the delivery event is written, the failure is logged, and the subscriptions
    are read again with the next event."""
    from smsflow.delivery.records import queued_event
    from smsflow.routing.model import parse_policies

    class BrokenStore(InMemorySubscriptionStore):
        reads = 0

        async def list(self, owner: str | None = None) -> list[Subscription]:
            self.reads += 1
            raise RuntimeError("store unreadable")

    sub = Subscription(id="sub_1", owner="acme", url="http://127.0.0.1:1/hook")
    store = BrokenStore()
    kd, sent = observing_delivery(None, parse_policies({"subscription_lists": True}), store)  # type: ignore[arg-type]
    await kd.event(queued_event(sub, "msg_1"))
    assert [topic for topic, _, _ in sent] == ["sms.delivery.v1"]
    assert "not written for the double list" in caplog.text
    await kd.event(queued_event(sub, "msg_2"))
    assert store.reads == 2


async def test_a_commits_flush_waits_for_the_attempts_the_timer_is_still_writing() -> None:
    """Invariant A for the tallied attempts: the timer took them and its write is held (a full producer
    queue); the flush that precedes a commit must not return before they are handed over."""
    from smsflow.routing.model import parse_policies
    from smsflow.routing.observations import AttemptOutcome, WebhookAttempt

    kd, sent = observing_delivery(
        None, parse_policies({"subscription_lists": True}), InMemorySubscriptionStore()
    )  # type: ignore[arg-type]
    release = asyncio.Event()
    topic = kd.topics[OBSERVATIONS]
    plain_send = topic.send

    async def held_send(key: bytes, value: bytes, headers: Any = None) -> None:
        await release.wait()
        await plain_send(key, value, headers)

    topic.send = held_send  # type: ignore[method-assign]
    kd.observe(WebhookAttempt("sub_1.main", 1_700_000_000_000, AttemptOutcome.SUCCESS, 12.0))
    timer = asyncio.ensure_future(kd.flush_observations())
    await asyncio.sleep(0)  # the timer took the tally and waits in its write
    commit = asyncio.ensure_future(kd.flush_observations())
    await asyncio.sleep(0.05)
    assert not commit.done() and sent == []
    release.set()
    await asyncio.gather(timer, commit)
    assert [t for t, _, _ in sent] == [OBSERVATIONS]


class _PushCounting(BufferedProducer):
    """The outputs producer's interface, recording instead of producing."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.pushes = 0

    async def send(self, topic: str, value: bytes | None, key: Any = None, headers: Any = None) -> None:
        self.sent.append(topic)

    async def push(self, timeout_s: float = 1.0) -> None:
        self.pushes += 1


async def test_the_timer_pushes_the_observations_it_wrote_past_the_outputs_linger() -> None:
    """The outputs producer lingers until the commit's flush (up to 1 s, smsflow.roles); the double-list
    stage counts an observation only up to 1 s late, so the timer sends what it wrote at once — and only
    when it wrote something (a push with nothing tallied would send the delivery events early for nothing)."""
    from smsflow.routing.model import parse_policies
    from smsflow.routing.observations import AttemptOutcome, WebhookAttempt

    producer = _PushCounting()
    ctx = SimpleNamespace(serde=SimpleNamespace(encode=lambda topic, rec: orjson.dumps(rec)))
    routing = parse_policies({"subscription_lists": True})
    kd = KafkaDelivery(ctx, None, store=InMemorySubscriptionStore(), producer=producer, routing=routing)  # type: ignore[arg-type]
    kd.topics = {OBSERVATIONS: SimpleNamespace(get_topic_name=lambda: OBSERVATIONS)}
    await kd.flush_observations(push=True)
    assert producer.sent == [] and producer.pushes == 0
    kd.observe(WebhookAttempt("sub_1.main", 1_700_000_000_000, AttemptOutcome.SUCCESS, 12.0))
    await kd.flush_observations(push=True)
    assert producer.sent == [OBSERVATIONS] and producer.pushes == 1
    kd.observe(WebhookAttempt("sub_1.main", 1_700_000_001_000, AttemptOutcome.SUCCESS, 12.0))
    await kd.flush_observations()  # a commit's: its own flush follows
    assert producer.sent == [OBSERVATIONS, OBSERVATIONS] and producer.pushes == 1


async def test_a_quarantined_record_is_sent_at_once_a_delivery_event_waits_for_the_commit() -> None:
    """The outputs producer lingers until the commit's flush; a quarantined inbound record (rare, read by an
    operator) is pushed as it is written, a delivery event is not."""
    producer = _PushCounting()
    ctx = SimpleNamespace(serde=SimpleNamespace(encode=lambda topic, rec: orjson.dumps(rec, default=str)))
    kd = KafkaDelivery(ctx, None, store=InMemorySubscriptionStore(), producer=producer)  # type: ignore[arg-type]
    kd.topics = {
        t: SimpleNamespace(get_topic_name=lambda t=t: t) for t in ("sms.quarantine.v1", "sms.delivery.v1")
    }
    await kd.quarantine(b"\x00not avro", 0, 7, "does not decode")
    assert producer.sent == ["sms.quarantine.v1"] and producer.pushes == 1
    await kd.event(DeliveryEvent(state=DeliveryState.DELIVERED, message_id="msg_1", subscription_id="sub_1"))
    assert producer.sent == ["sms.quarantine.v1", "sms.delivery.v1"] and producer.pushes == 1


async def test_a_change_of_a_subscription_with_one_list_costs_the_double_list_nothing(receivers):
    """Every worker hears every tenant's subscription changes. The subscriptions' routes were read again
    (every subscription, sorted, then every one's lists: ~300 ms at 100,000) after any change; now only a
    change of a subscription with a secondary list (before or after) makes them be read, and then from the
    listed ones the stage keeps, not from the store."""

    class CountingStore(InMemorySubscriptionStore):
        reads = 0

        async def list(self, owner: str | None = None) -> list[Subscription]:
            self.reads += 1
            return await super().list(owner)

    store = CountingStore()
    async with listed_delivery(receivers, store) as (kd, sent, _, (primary, secondary)):
        assert store.reads == 1
        for i in range(50):  # other tenants' one-list subscriptions come, change and go
            other = Subscription(id=f"other_{i}", owner=f"t{i}", url="https://t.example/")
            await store.put(other)
            await store.put(other.model_copy(update={"description": "changed"}))
            await store.delete(other.id)
        assert not kd._attempt_routes_stale
        # a subscription gains a secondary list: seen by the next attempt, without reading the store again
        gained = with_dr(primary, secondary).model_copy(update={"id": "sub_2"})
        await store.put(gained)
        assert kd._attempt_routes_stale
        sent.clear()
        await kd.attempt(gained, [msg(2)], 1, datetime.now(UTC), None)
        assert [route for route, _ in await observed(kd, sent)] == ["sub_2.dr", "sub_2.main"]
        assert store.reads == 1
