"""Issue 11, must-show scenario 5: one subscription, a primary and a secondary webhook endpoint, real broker.

The primary answers 503, then times out; every message is delivered, at the secondary, under the same
webhook-id as at the primary. A message that reached both endpoints is allowed only where the primary's
attempt had no known outcome (a timeout: the primary may have processed it without our knowing), and the
503s reach only the secondary. Then decisions on sms.routes.decisions.v1 (written here as the routes stage
writes them: a failover to the secondary, then the failback after the hold-down) move the traffic: after the
failover no message touches the primary, after the failback they go to the primary again.

Figures printed (docs/double-list.md): how long a message waited for the secondary after the primary
failed (the local rule), and how long the worker took to follow a decision.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from typing import Any

import pytest
from aiohttp import web
from confluent_kafka import Producer

from devkit.simulator.traffic import TrafficMix
from smsflow.routing.model import ListName
from smsflow.schemas import OPS_TOPIC, ROUTE_DECISIONS_TOPIC, SUBSCRIPTIONS_TOPIC
from smsflow.serde import Serde, registry_client
from smsflow.subscriptions.model import SigningSecret, Subscription, WebhookEndpoint
from tests.e2e.test_webhook_failures import (
    ScriptedEndpoint,
    delivery_events,
    feed,
    json_records,
    put_subscriptions,
    wait_until,
)
from tests.kafka_read import avro_values

pytestmark = pytest.mark.e2e

SUB = "sub-double"
SCOPE = f"subscription:{SUB}"
TIMEOUT_S = 1.0  # the subscription's request timeout; the primary's "hang" is longer


class Switchable:
    """The primary's behaviour, switched by the test: ok, 503, or processing the message too slowly."""

    def __init__(self) -> None:
        self.mode = "ok"

    async def __call__(self, n: int) -> web.Response:
        if self.mode == "503":
            return web.Response(status=503)
        if self.mode == "slow":
            await asyncio.sleep(TIMEOUT_S + 0.5)  # answered (and processed) after our timeout
        return web.Response(status=204)


def double_listed(
    sub_id: str, primary: ScriptedEndpoint, secondary: ScriptedEndpoint, **over: Any
) -> Subscription:
    """A subscription whose url is ``primary`` and whose secondary list is ``secondary`` (endpoint ``dr``),
    each with its own secret; owner "operator": it receives whatever its filter matches (test_tenancy.py)."""
    dr = WebhookEndpoint(
        id="dr", role=ListName.SECONDARY, url=secondary.url, secrets=[SigningSecret.new(secondary.secret)]
    )
    fields: dict[str, Any] = {
        "id": sub_id,
        "owner": "operator",
        "url": primary.url,
        "secrets": [SigningSecret.new(primary.secret)],
        "endpoints": [dr],
        **over,
    }
    return Subscription(**fields)


async def ok(n: int) -> web.Response:
    return web.Response(status=204)


def write_decision(stack: Any, n: int, active: ListName, kind: str) -> None:
    """A decision as the routes stage writes it (schemas/route_decision.avsc, key = scope)."""
    serde = Serde(registry_client(stack.registry_url))
    record = {
        "decision_id": f"{SCOPE}#{n}",
        "scope": SCOPE,
        "at": int(time.time() * 1000),
        "kind": kind,
        "active": active.value,
        "previous": active.other.value,
        "mode": "auto",
        "both_degraded": False,
        "reason": f"{kind} (written by the test in place of the routes stage)",
        "primary_state": "down" if active is ListName.SECONDARY else "healthy",
        "secondary_state": "healthy",
        "override_pin": None,
        "override_actor": None,
        "override_reason": None,
        "override_expires_at": None,
        "evidence": [],
    }
    producer = Producer({"bootstrap.servers": stack.bootstrap})
    producer.produce(
        ROUTE_DECISIONS_TOPIC, key=SCOPE.encode(), value=serde.encode(ROUTE_DECISIONS_TOPIC, record)
    )
    assert producer.flush(30) == 0


async def test_primary_503_and_timeouts_go_to_the_secondary_and_decisions_move_traffic(pipeline) -> None:
    behaviour = Switchable()
    primary, secondary = ScriptedEndpoint("primary", behaviour), ScriptedEndpoint("secondary", ok)
    await primary.start()
    await secondary.start()
    try:
        p = await pipeline(carriers=1, webhooks={"retry_delays_s": [0, 0.5, 1, 2], "retry_jitter": 0.2})
        p.start()
        await p.smsc.wait_bound(60)
        await put_subscriptions(p, [double_listed(SUB, primary, secondary, timeout_seconds=TIMEOUT_S)])
        mix = TrafficMix(seed=11, multipart_ratio=0.0)

        async def phase(count: int, rate: float = 10) -> list[str]:
            """Feed ``count`` SMS; the ids the pipeline accepted, once the config's receiver has them."""
            before = len(p.receiver.log.messages)
            accepted = p.smsc.stats.logical_accepted
            await feed(p, mix, count, rate)
            assert await p.smsc.drain(60), p.logs()
            await p.wait_delivered(before + p.smsc.stats.logical_accepted - accepted, 90)
            return list(p.receiver.log.messages)[before:]

        def reached(ids: list[str]) -> bool:
            return set(ids) <= primary.messages | secondary.messages

        # warm-up: the primary healthy, the subscription picked up by the worker
        warm = await phase(3)
        await wait_until(lambda: set(warm) <= primary.messages, 60, "warm-up at the primary", p.logs)
        assert not set(warm) & secondary.messages

        # 1. the primary answers 503: each message goes on at once to the secondary
        behaviour.mode = "503"
        unavailable = await phase(20)
        await wait_until(lambda: reached(unavailable), 60, "503 phase delivered", p.logs)
        assert set(unavailable) <= secondary.messages
        assert not set(unavailable) & primary.messages  # a 503 is not processed: nothing reached both

        # 2. the primary times out (and processes the message late): each is delivered at the secondary
        behaviour.mode = "slow"
        slow = await phase(12, rate=6)
        await wait_until(lambda: set(slow) <= secondary.messages, 60, "timeout phase delivered", p.logs)
        await asyncio.sleep(TIMEOUT_S + 1)  # the primary's late answers land

        # 3. the decision moves the traffic: failover to the secondary, then failback
        behaviour.mode = "ok"
        t_failover = time.monotonic()
        write_decision(p.stack, 1, ListName.SECONDARY, "failover")
        followed_failover = await follow(
            p, phase, lambda mid: mid in secondary.messages and mid not in primary.messages
        )
        failover_s = time.monotonic() - t_failover
        after_failover = await phase(15)
        await wait_until(lambda: set(after_failover) <= secondary.messages, 60, "failover phase", p.logs)
        t_failback = time.monotonic()
        write_decision(p.stack, 2, ListName.PRIMARY, "failback")
        followed_failback = await follow(p, phase, lambda mid: mid in primary.messages)
        failback_s = time.monotonic() - t_failback
        after_failback = await phase(15)
        await wait_until(lambda: set(after_failback) <= primary.messages, 60, "failback phase", p.logs)
        await asyncio.sleep(1)
        events = delivery_events(p.stack.bootstrap, p.stack.registry_url)
    finally:
        await primary.stop()
        await secondary.stop()

    mine = [e for e in events if e["subscription_id"] == SUB]
    # every message delivered exactly once as far as we know (one `delivered` event), the same webhook-id
    # at both endpoints: a receiver behind both can drop the second copy
    delivered = Counter(e["message_id"] for e in mine if e["state"] == "delivered")
    everything = (
        warm + unavailable + slow + followed_failover + after_failover + followed_failback + after_failback
    )
    assert all(delivered[m] == 1 for m in everything), {
        m: delivered[m] for m in everything if delivered[m] != 1
    }
    for ep in (primary, secondary):
        assert ep.bad_signatures == 0  # each endpoint verified with its own secret
        assert all(h.webhook_id in set(everything) for h in ep.hits)

    # reached both: only where the primary's attempt had no known outcome (it timed out)
    both = primary.messages & secondary.messages
    unknown = {
        e["message_id"]
        for e in mine
        if e["state"] == "failed" and e["failure"] == "timeout" and e["route_id"] == f"{SUB}.main"
    }
    assert both <= unknown, both - unknown
    assert both == set(slow), "the primary processed each timed-out message late: those reached both"
    print(f"\nreached both endpoints: {len(both)} of {len(everything)}, all after a timeout at the primary")

    # the local rule: 503 -> the secondary in the same call (attempt 2, no retry delay)
    wait_ms = []
    for mid in unavailable:
        h = [e for e in mine if e["message_id"] == mid]
        assert [(e["state"], e["route_id"]) for e in h if e["state"] != "queued"] == [
            ("sent", f"{SUB}.main"),
            ("retry_scheduled", f"{SUB}.main"),
            ("delivered", f"{SUB}.dr"),
        ], h
        wait_ms.append((h[-1]["ts"] - h[1]["ts"]).total_seconds() * 1000)
    print(
        f"503 at the primary -> delivered at the secondary: median {statistics.median(wait_ms):.0f} ms, "
        f"max {max(wait_ms):.0f} ms after the 503"
    )
    # after the failover decision: straight to the secondary; after the failback: the primary only
    for mid in after_failover:
        assert [e["route_id"] for e in mine if e["message_id"] == mid and e["state"] == "delivered"] == [
            f"{SUB}.dr"
        ]
        assert mid not in primary.messages
    assert not set(after_failback) & secondary.messages
    print(
        f"worker followed the failover decision within {failover_s:.1f} s, "
        f"the failback within {failback_s:.1f} s"
    )
    assert failover_s < 30 and failback_s < 30  # generous: hangs, not speed (figures in the docs)


async def follow(p: Any, phase: Any, went_right: Any) -> list[str]:
    """Send one SMS at a time until one goes where the new decision says (the worker follows the decisions
    topic within a poll interval); every message sent meanwhile is returned, all of them must be delivered."""
    sent: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ids = await phase(1)
        sent += ids
        await asyncio.sleep(0.3)
        if ids and all(went_right(m) for m in ids):
            return sent
    raise AssertionError(f"the worker did not follow the decision within 60 s\n{p.logs()}")


STAGE_SUB = "sub-staged"
STAGE_SCOPE = f"subscription:{STAGE_SUB}"
WINDOW = {"size_s": 10, "step_s": 2}  # short windows keep the scenario near a minute
HOLD_DOWN_S = 10


def decisions_of(stack: Any, scope: str) -> list[dict[str, Any]]:
    return [
        d
        for d in avro_values(stack.bootstrap, stack.registry_url, ROUTE_DECISIONS_TOPIC)
        if d["scope"] == scope
    ]


@pytest.mark.parametrize("policy_from", ["config", "subscription"])
async def test_the_stage_fails_over_on_503s_and_fails_back_after_the_hold_down(pipeline, policy_from) -> None:
    """With the double-list stage running: the primary endpoint answers 503 -> the stage decides failover,
    then messages go straight to the secondary; the primary recovers (seen through the pings, since it gets no
    traffic) -> failback only once it has been healthy for the hold-down.

    ``config``: the policy is written in the config's ``routing`` section (routes named by URL);
    ``subscription``: no policy in the config, only ``routing.subscription_lists``: the subscription's own
    endpoints (as the API makes them) are the policy, with the default hold-down (60 s)."""
    behaviour = Switchable()
    primary, secondary = ScriptedEndpoint("primary", behaviour), ScriptedEndpoint("secondary", ok)
    await primary.start()
    await secondary.start()
    hold_down_s = HOLD_DOWN_S if policy_from == "config" else 60
    try:
        routing: dict[str, Any] = {
            "window": WINDOW,
            "routes": [
                {"id": "hook-p", "kind": "webhook", "url": primary.url},
                {"id": "hook-s", "kind": "webhook", "url": secondary.url},
            ],
            "policies": [
                {
                    "scope": STAGE_SCOPE,
                    "primary": ["hook-p"],
                    "secondary": ["hook-s"],
                    "hold_down_s": HOLD_DOWN_S,
                }
            ],
        }
        if policy_from == "subscription":
            routing = {"window": WINDOW, "subscription_lists": True}
        p = await pipeline(carriers=1, routing=routing, webhooks={"retry_delays_s": [0, 0.5, 1, 2]})
        p.start()
        await p.smsc.wait_bound(60)
        await put_subscriptions(p, [double_listed(STAGE_SUB, primary, secondary, timeout_seconds=TIMEOUT_S)])
        mix = TrafficMix(seed=13, multipart_ratio=0.0)
        await feed(p, mix, 3, rate=5)
        await wait_until(lambda: len(primary.messages) >= 1, 60, "warm-up at the primary", p.logs)

        # the primary fails: the local rule carries each message to the secondary until the stage decides
        behaviour.mode = "503"
        t_fault = time.monotonic()
        failover: list[dict[str, Any]] = []

        async def traffic_until(cond: Any, what: str, timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while not cond():
                if time.monotonic() > deadline:
                    raise AssertionError(f"no {what} within {timeout}s\n{p.logs()}")
                await feed(p, mix, 3, rate=6)  # 6 SMS/s: enough attempts for the window's rates

        def decided(kind: str) -> bool:
            failover[:] = [d for d in decisions_of(p.stack, STAGE_SCOPE) if d["kind"] == kind]
            return bool(failover)

        await traffic_until(lambda: decided("failover"), "failover decision", 90)
        switch_s = time.monotonic() - t_fault
        assert failover[0]["active"] == "secondary" and "primary" in failover[0]["reason"]

        # after the decision: messages start on the secondary, the primary sees pings only
        await asyncio.sleep(1)
        hits_before = len(primary.hits)
        before = len(p.receiver.log.messages)
        await feed(p, mix, 10, rate=5)
        await p.wait_delivered(before + 10, 60)
        after_failover = list(p.receiver.log.messages)[before:]
        await wait_until(lambda: set(after_failover) <= secondary.messages, 60, "after failover", p.logs)
        straight = [h for h in primary.hits[hits_before:] if not h.webhook_id.startswith("ping_")]
        assert not straight, "no message tried the primary once the stage failed over"

        # the primary recovers: the pings show it healthy; failback only after the hold-down
        behaviour.mode = "ok"
        t_recovered = time.monotonic()
        failback: list[dict[str, Any]] = []

        def failed_back() -> bool:
            failback[:] = [d for d in decisions_of(p.stack, STAGE_SCOPE) if d["kind"] == "failback"]
            return bool(failback)

        await wait_until(failed_back, 60 + 2 * hold_down_s, "failback decision", p.logs)
        failback_s = time.monotonic() - t_recovered
        pings = [h for h in primary.hits if h.webhook_id.startswith("ping_")]
        assert pings, "the idle primary was pinged"
        before = len(p.receiver.log.messages)
        await asyncio.sleep(1)
        await feed(p, mix, 5, rate=5)
        await p.wait_delivered(before + 5, 60)
        after_failback = list(p.receiver.log.messages)[before:]
        await wait_until(lambda: set(after_failback) <= primary.messages, 60, "after failback", p.logs)
    finally:
        await primary.stop()
        await secondary.stop()

    # failback waited for the hold-down (the primary healthy that long), and one failover, one failback
    assert failback_s >= hold_down_s
    kinds = [d["kind"] for d in decisions_of(p.stack, STAGE_SCOPE)]
    assert kinds.count("failover") == 1 and kinds.count("failback") == 1, kinds
    print(
        f"\nstage, policy from the {policy_from} (window {WINDOW['size_s']} s / step {WINDOW['step_s']} s, "
        f"hold-down {hold_down_s} s): "
        f"503s -> failover decision in {switch_s:.1f} s; "
        f"primary healthy again -> failback in {failback_s:.1f} s; "
        f"{len(pings)} pings to the idle primary"
    )


async def gone(n: int) -> web.Response:
    return web.Response(status=410)


async def test_410_from_the_primary_switches_off_that_endpoint_only_and_the_secondary_keeps_receiving(
    pipeline,
) -> None:
    """A 410 Gone from one endpoint of a double-listed subscription: that endpoint goes off alone
    (``disabled_endpoints``), the message that met it and every later one are delivered at the secondary, the
    subscription stays enabled, and the operational event names the endpoint."""
    primary, secondary = ScriptedEndpoint("primary", gone), ScriptedEndpoint("secondary", ok)
    await primary.start()
    await secondary.start()
    try:
        p = await pipeline(carriers=1)
        p.start()
        await p.smsc.wait_bound(60)
        await put_subscriptions(p, [double_listed("sub-gone", primary, secondary)])
        mix = TrafficMix(seed=17, multipart_ratio=0.0)
        await feed(p, mix, 10, rate=5)
        assert await p.smsc.drain(60), p.logs()
        await p.wait_delivered(10, 90)
        first = list(p.receiver.log.messages)
        await wait_until(lambda: set(first) <= secondary.messages, 60, "first batch at the secondary", p.logs)
        met_410 = len(primary.hits)  # those in flight together all met the 410 (and went on to the secondary)
        await asyncio.sleep(1)
        # later messages: straight to the secondary, the primary is switched off
        await feed(p, mix, 10, rate=5)
        assert await p.smsc.drain(60), p.logs()
        await p.wait_delivered(20, 90)
        later = list(p.receiver.log.messages)[10:]
        await wait_until(
            lambda: set(later) <= secondary.messages, 60, "second batch at the secondary", p.logs
        )
        await asyncio.sleep(1)
        subs = [s for s in json_records(p.stack.bootstrap, SUBSCRIPTIONS_TOPIC) if s.get("id") == "sub-gone"]
        ops = json_records(p.stack.bootstrap, OPS_TOPIC)
        events = [
            e
            for e in delivery_events(p.stack.bootstrap, p.stack.registry_url)
            if e["subscription_id"] == "sub-gone"
        ]
    finally:
        await primary.stop()
        await secondary.stop()

    latest = subs[-1]
    assert latest["enabled"] is True and list(latest["disabled_endpoints"]) == ["main"]
    assert "410" in latest["disabled_endpoints"]["main"]
    assert not primary.messages and 1 <= met_410 <= 10  # it answered 410 ...
    assert len(primary.hits) == met_410  # ... and, once switched off, got no more requests
    assert not [e for e in events if e["state"] == "dead_lettered"]
    assert {e["message_id"] for e in events if e["state"] == "delivered"} == set(first + later)
    disabled = [o for o in ops if o.get("type") == "endpoint_disabled"]
    assert [(o["subscription_id"], o["endpoint_id"]) for o in disabled] == [("sub-gone", "main")]
    print(
        f"\n410 at the primary: {met_410} request(s) in flight met it, none after; "
        f"{len(secondary.messages)} messages delivered at the secondary, subscription still enabled"
    )
