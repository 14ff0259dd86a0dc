"""Issue 11: the double list on a real broker, with the real connector and worker processes.

Two simulated carriers (accounts acct0 and acct1 of one simulated SMSC) serve one HK pool: route ``hk-a``
(carrier-0) is the primary list of ``prefix:+8526``, ``hk-b`` (carrier-1) the secondary. The connector probes
both through the carriers' test numbers; faults are injected in the simulator the way an operator would
(``smsflow simulator fault set``). Decisions are read back from sms.routes.decisions.v1 as any client would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import pytest

from connectors.simulator.faults import parse_fault
from connectors.simulator.traffic import LogicalSms
from smsflow.schemas import ROUTE_DECISIONS_TOPIC, ROUTE_HEALTH_TOPIC
from tests.kafka_read import avro_values

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


def sms(i: int, tag: str) -> LogicalSms:
    return LogicalSms(f"+8529{i:07d}", "+85260001234", f"double list {tag} {i}", 0)


async def test_primary_binds_refused_fails_over_to_the_secondary_and_no_sms_is_lost(pipeline: Any) -> None:
    """Scenario 1, with the default window (60 s, step 10 s): binds refused and the connection dropped on the
    primary carrier -> decision to the secondary within 15 s; probes carry on through the secondary only;
    SMS from both carriers are each delivered once, those held by the failed carrier once it recovers."""
    p = await pipeline(
        carriers=2,
        routing=routing(hold_down_s=30),
        test_numbers=[TEST_NUMBER],
        probe_latency_s=0.3,
    )
    p.start("worker", "connector")
    topics = Topics(p)
    await p.smsc.wait_bound(60)
    for route in ("hk-a", "hk-b"):
        await topics.wait(f"{route} healthy, probed", topics.health, healthy_with_probes(route), 120)

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
