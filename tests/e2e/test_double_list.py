"""Issue 11: the double list on a real broker, with the real connector and worker processes.

Two simulated carriers (accounts acct0 and acct1 of one simulated SMSC) serve one HK pool: route ``hk-a``
(carrier-0) is the primary list of ``prefix:+8526``, ``hk-b`` (carrier-1) the secondary. The connector probes
both through the carriers' test numbers; faults are injected in the simulator the way an operator would
(``smsflow simulator fault set``). Decisions are read back from sms.routes.decisions.v1 as any client would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest

from devkit.simulator.faults import parse_fault
from devkit.simulator.traffic import LogicalSms
from smsflow.api.apikeys import ApiKeyStore
from smsflow.schemas import OPS_TOPIC, ROUTE_DECISIONS_TOPIC, ROUTE_HEALTH_TOPIC
from tests.e2e.test_webhook_api import cli, wait_api_up
from tests.e2e.test_webhook_failures import free_port
from tests.kafka_read import avro_values, read_topic

pytestmark = pytest.mark.e2e

SCOPE = "prefix:+8526"
TEST_NUMBER = "+85230009999"


def routing(hold_down_s: int = 60, window: dict[str, int] | None = None, **thresholds: Any) -> dict[str, Any]:
    return {
        "window": window or {},  # the defaults (60 s window, 10 s step) unless a scenario says otherwise
        "probe_interval_s": 2,
        "report_interval_s": 1,
        "routes": [
            {
                "id": f"hk-{x}",
                "kind": "carrier",
                "carrier": f"carrier-{i}",
                "pool": ["+8526"],
                "test_numbers": [TEST_NUMBER],
                "probe_source": f"+8526000000{i}",
            }
            for i, x in enumerate("ab")
        ],
        "policies": [
            {
                "scope": SCOPE,
                "primary": ["hk-a"],
                "secondary": ["hk-b"],
                "hold_down_s": hold_down_s,
                "thresholds": thresholds,
            }
        ],
    }


def _ms(v: Any) -> int:
    return int(v.timestamp() * 1000) if isinstance(v, dt.datetime) else int(v)


class Topics:
    def __init__(self, p: Any) -> None:
        self.bootstrap, self.registry = p.stack.bootstrap, p.stack.registry_url

    async def decisions(self) -> list[dict[str, Any]]:
        recs = await asyncio.to_thread(avro_values, self.bootstrap, self.registry, ROUTE_DECISIONS_TOPIC)
        return [{**r, "at": _ms(r["at"])} for r in recs]

    async def health(self) -> list[dict[str, Any]]:
        recs = await asyncio.to_thread(avro_values, self.bootstrap, self.registry, ROUTE_HEALTH_TOPIC)
        return [{**r, "window_end": _ms(r["window_end"])} for r in recs]

    async def ops(self) -> list[dict[str, Any]]:
        recs = await asyncio.to_thread(read_topic, self.bootstrap, OPS_TOPIC)
        return [orjson.loads(v) for _, _, _, v in recs if v is not None]

    async def wait(
        self, what: str, read: Callable[[], Any], cond: Callable[[list[dict[str, Any]]], bool], timeout: float
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            recs = await read()
            if cond(recs):
                return list(recs)
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not seen within {timeout:.0f} s; last records: {recs[-6:]}")
            await asyncio.sleep(1.0)


def healthy_with_probes(route: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda recs: any(
        r["route_id"] == route and r["state"] == "healthy" and "probe_latency_ms" in r["figures"]
        for r in recs
    )


class Api:
    """``smsflow api`` started with the pipeline, and an admin key for it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.key = ApiKeyStore().issue(None)[1]  # the bootstrap admin key, from the environment
        self.config = {"host": "127.0.0.1", "port": self.port, "admin_key_env": "E2E_ADMIN_KEY"}
        self.env = {"E2E_ADMIN_KEY": self.key}

    async def get(self, path: str) -> Any:
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.key}"}) as http,
            http.get(self.base + path) as r,
        ):
            assert r.status == 200, await r.text()
            return await r.json()

    async def lookup(self) -> Any:
        return await self.get("/v1/routes/%2B85260001234/active")  # a number the +8526 policy governs


async def hk_pool(
    pipeline: Any, api: Api, routing_cfg: dict[str, Any], metrics: dict[str, Any] | None = None
) -> tuple[Any, Topics]:
    """Two carriers on the HK pool, the worker, the connector and the API; back once both routes are healthy
    and probed (the state machine never fails over to a route it has no record of)."""
    p = await pipeline(
        carriers=2,
        routing=routing_cfg,
        api=api.config,
        extra_env=api.env,
        metrics=metrics,
        test_numbers=[TEST_NUMBER],
        probe_latency_s=0.3,
    )
    p.start("worker", "connector", "api")
    topics = Topics(p)
    await p.smsc.wait_bound(60)
    for route in ("hk-a", "hk-b"):
        await topics.wait(f"{route} healthy, probed", topics.health, healthy_with_probes(route), 120)
    return p, topics


def sms(i: int, tag: str) -> LogicalSms:
    return LogicalSms(f"+8529{i:07d}", "+85260001234", f"double list {tag} {i}", 0)


async def test_primary_binds_refused_fails_over_to_the_secondary_and_no_sms_is_lost(pipeline: Any) -> None:
    """Scenario 1, with the default window (60 s, step 10 s): binds refused and the connection dropped on the
    primary carrier -> decision to the secondary within 15 s; probes carry on through the secondary only;
    SMS from both carriers are each delivered once, those held by the failed carrier once it recovers."""
    api = Api()
    p, topics = await hk_pool(pipeline, api, routing(hold_down_s=30))
    async with aiohttp.ClientSession() as http:
        await wait_api_up(http, api.base, p)
    before = await api.lookup()
    assert before["active_list"] == "primary" and before["route_id"] == "hk-a"

    for i in range(10):
        p.smsc.enqueue(sms(i, "before"), account=f"acct{i % 2}")
    await p.wait_delivered(10, 60)

    faulted_at = time.time()
    p.smsc.set_fault("acct0", parse_fault({"kind": "refuse_binds"}, now=time.monotonic()))
    p.smsc.drop_now("acct0")
    probes_before = p.smsc.submits.summary("acct0")["submits"]
    for i in range(10, 20):  # arrive during the outage: acct0's wait at the carrier, acct1's flow
        p.smsc.enqueue(sms(i, "during"), account=f"acct{i % 2}")

    decisions = await topics.wait(
        "failover", topics.decisions, lambda rs: any(r["kind"] == "failover" for r in rs), 60
    )
    failover = next(r for r in decisions if r["kind"] == "failover")
    switched_s = time.time() - faulted_at
    print(
        f"\nscenario 1: failover decided {switched_s:.1f} s after the fault (decision at = {failover['at']})"
    )
    assert failover["active"] == "secondary" and failover["previous"] == "primary"
    assert "bound_sessions" in failover["reason"] and failover["secondary_state"] == "healthy"
    assert any(e["route_id"] == "hk-a" and e["state"] == "down" for e in failover["evidence"])
    assert switched_s <= 30, f"failover took {switched_s:.1f} s (goal 15 s with the default window)"

    # the number lookup moves with the decision (the API follows the decisions topic)
    deadline = time.monotonic() + 15
    while (after := await api.lookup())["active_list"] != "secondary":
        assert time.monotonic() < deadline, after
        await asyncio.sleep(0.5)
    assert after["route_id"] == "hk-b" and after["carrier"] == "carrier-1"
    assert after["decision_id"] == failover["decision_id"]

    # probes: none through the refusing carrier, they keep going through the secondary
    await asyncio.sleep(5)
    assert p.smsc.submits.summary("acct0")["submits"] == probes_before
    looped_b = p.smsc.submits.summary("acct1")["probes_looped"]
    await asyncio.sleep(5)
    assert p.smsc.submits.summary("acct1")["probes_looped"] > looped_b

    p.smsc.clear_fault("acct0")
    await p.wait_delivered(20, 90)
    texts = sorted(m["body"] for m in p.receiver.log.messages.values())
    assert texts == sorted(sms(i, "before" if i < 10 else "during").text for i in range(20))
    assert not any("smsflow-probe" in t for t in texts)  # probes never reach a customer


def kinds(decisions: list[dict[str, Any]]) -> list[str]:
    return [d["kind"] for d in decisions]


async def test_latency_failover_kill_recovery_both_degraded_and_override(pipeline: Any) -> None:
    """Scenarios 2 (first part), 6, 4 and 3 in one run, with a short window (10 s, step 2 s) and hold-down
    (20 s):

    - probe latency on the primary raised above the threshold -> failover;
    - the worker killed -9 right after the failover and restarted -> its state comes back from the changelogs:
      no decision is repeated or invented while the fault holds;
    - the primary recovers -> failback only after the hold-down;
    - both carriers slow -> the "both degraded" alert as a decision and as the metric; an operator's pin is
      honoured and audited (actor, reason on the decisions topic), and its expiry gives the scope back to
      auto.
    """
    hold_down_s = 20
    api = Api()
    metrics_port = free_port()
    window = {"size_s": 10, "step_s": 2}
    p, topics = await hk_pool(
        pipeline, api, routing(hold_down_s=hold_down_s, window=window), {"worker_port": metrics_port}
    )

    # --- scenario 2: probe latency above the threshold (5 s) on the primary
    p.smsc.set_fault(
        "acct0", parse_fault({"kind": "probe_latency", "latency_ms": 7000}, now=time.monotonic())
    )
    faulted_at = time.time()
    decisions = await topics.wait("failover", topics.decisions, lambda rs: "failover" in kinds(rs), 90)
    failover = decisions[-1]
    print(f"\nscenario 2: latency failover {time.time() - faulted_at:.1f} s after the fault")
    assert "probe_latency_ms" in failover["reason"] and failover["active"] == "secondary"

    # --- scenario 6: kill -9 mid-failover; the restarted worker carries on from the topics
    p.kill("worker")
    restarted_ms = time.time() * 1000
    p.start("worker")
    await topics.wait(
        "health after the restart",
        topics.health,
        lambda rs: any(r["window_end"] > restarted_ms + 2000 for r in rs),
        120,
    )
    await asyncio.sleep(6)  # a few more windows, all still with the fault
    after_restart = await topics.decisions()
    assert kinds(after_restart) == kinds(decisions), after_restart  # nothing repeated, nothing invented
    ids = [d["decision_id"] for d in after_restart]
    assert len(ids) == len(set(ids))

    # --- scenario 4: recovery; failback only once the primary was healthy for the hold-down
    p.smsc.clear_fault("acct0")
    cleared_at = time.time()
    decisions = await topics.wait("failback", topics.decisions, lambda rs: "failback" in kinds(rs), 120)
    failback = decisions[-1]
    print(f"scenario 4: failback {time.time() - cleared_at:.1f} s after recovery (hold-down {hold_down_s} s)")
    health = await topics.health()
    bad_primary = [r["window_end"] for r in health if r["route_id"] == "hk-a" and r["state"] != "healthy"]
    assert failback["at"] - max(t for t in bad_primary if t <= failback["at"]) >= hold_down_s * 1000
    assert failback["at"] - failover["at"] >= hold_down_s * 1000

    # --- scenario 3: both degraded -> alert (decision + metric); a pin honoured, audited, and it expires
    for account in ("acct0", "acct1"):
        p.smsc.set_fault(
            account, parse_fault({"kind": "probe_latency", "latency_ms": 7000}, now=time.monotonic())
        )
    decisions = await topics.wait("alert", topics.decisions, lambda rs: "both_degraded" in kinds(rs), 90)
    alert = next(d for d in decisions if d["kind"] == "both_degraded")
    assert alert["both_degraded"] and alert["primary_state"] != "healthy" != alert["secondary_state"]
    async with aiohttp.ClientSession() as http:
        await wait_api_up(http, api.base, p)
        async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as r:
            text = await r.text()
    assert 'smsflow_route_both_degraded{scope="prefix:+8526"} 1.0' in text
    # and the operational event, on the topic operators' tooling reads
    ops = await topics.wait("ops alert", topics.ops, lambda rs: bool(rs), 30)
    assert (ops[0]["type"], ops[0]["scope"], ops[0]["decision_id"]) == (
        "routes_both_degraded",
        SCOPE,
        alert["decision_id"],
    )
    assert f'smsflow_route_active{{list="{alert["active"]}",scope="prefix:+8526"}} 1.0' in text

    cli_env = {
        **p.env,
        "SMSFLOW_ADMIN_API_KEY": api.key,
        "SMSFLOW_API_KEY": api.key,
        "SMSFLOW_API_URL": api.base,
    }
    answer = await cli(
        cli_env,
        "routes",
        "override",
        SCOPE,
        "--pin",
        "secondary",
        "--reason",
        "carrier A ticket 42",
        "--expires-in",
        "12",
    )
    assert answer["pin"] == "secondary" and answer["actor"].startswith("admin (environment) [key ")
    decisions = await topics.wait("pin", topics.decisions, lambda rs: "override_set" in kinds(rs), 60)
    pinned = next(d for d in decisions if d["kind"] == "override_set")
    assert pinned["active"] == "secondary" and pinned["mode"] == "pinned"
    assert pinned["override_actor"] == answer["actor"] and pinned["override_reason"] == "carrier A ticket 42"
    status = await cli(cli_env, "routes", "status", SCOPE)
    assert status["active_list"] == "secondary" and status["mode"] == "pinned"

    decisions = await topics.wait("expiry", topics.decisions, lambda rs: "override_expired" in kinds(rs), 60)
    expired = next(d for d in decisions if d["kind"] == "override_expired")
    assert expired["mode"] == "auto" and expired["at"] >= pinned["override_expires_at"].timestamp() * 1000
    # back to auto: both still degraded, and neither list strictly better, so the scope stays where it is
    assert not any(d["kind"] in ("failover", "failback") for d in decisions[decisions.index(expired) :])


AUTOMATIC = ("failover", "failback", "secondary_unhealthy", "better_list")


@pytest.mark.long
async def test_flapping_probe_latency_for_two_minutes_makes_at_most_the_bounded_decisions(
    pipeline: Any,
) -> None:
    """Scenario 2, second part: the primary's probe latency flips above / below the threshold every 10 s for
    2 minutes. Automatic switches are at least the hold-down H apart, so in any interval T there are at most
    floor(T/H) + 1 of them (docs/double-list.md, "The hysteresis bound"); with H = 20 s over the 2 minutes
    (plus the window and hold-down after it) that is at most 8, whatever the flapping does."""
    hold_down_s, flap_s, period_s = 20, 120, 10
    api = Api()
    window = {"size_s": 10, "step_s": 2}
    p, topics = await hk_pool(pipeline, api, routing(hold_down_s=hold_down_s, window=window))
    started_ms = time.time() * 1000
    slow = parse_fault({"kind": "probe_latency", "latency_ms": 7000}, now=time.monotonic())
    deadline = time.monotonic() + flap_s
    on = False
    while time.monotonic() < deadline:
        on = not on
        if on:
            p.smsc.set_fault("acct0", slow)
        else:
            p.smsc.clear_fault("acct0")
        await asyncio.sleep(period_s)
    p.smsc.clear_fault("acct0")
    await asyncio.sleep(
        10 + 7 + hold_down_s + 15
    )  # the window, the last slow probes, the hold-down, the hops
    ended_ms = time.time() * 1000

    switches = [d for d in await topics.decisions() if d["kind"] in AUTOMATIC]
    times = [d["at"] for d in switches]
    primary = [
        r["state"] for r in await topics.health() if r["route_id"] == "hk-a" and r["window_end"] >= started_ms
    ]
    flips = sum(a != b for a, b in itertools.pairwise(primary))
    span_s = (ended_ms - started_ms) / 1000
    bound = int(span_s // hold_down_s + 1)
    print(
        f"\nflapping {flap_s} s every {period_s} s, H = {hold_down_s} s, {span_s:.0f} s observed: "
        f"primary health changed state {flips} times in {len(primary)} records; "
        f"{len(switches)} automatic decisions {kinds(switches)} (bound {bound}) at "
        f"{[round((t - started_ms) / 1000, 1) for t in times]} s"
    )
    # the flapping reached the health records (else the test would prove nothing) and the decisions did not
    # follow it
    assert flips >= 4 and len(switches) < flips, primary
    assert switches, "the flapping primary never failed over"
    assert all(b - a >= hold_down_s * 1000 for a, b in itertools.pairwise(times))
    assert len(switches) <= bound
    assert switches[-1]["active"] == "primary"  # settled back once the flapping stopped
