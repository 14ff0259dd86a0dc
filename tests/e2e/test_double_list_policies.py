"""Issue 11: routing policies made through the API/CLI, on a real broker with the real connector, worker
and API.

The config names two carrier routes on the HK pool (``hk-a`` on carrier-0, ``hk-b`` on carrier-1) and no
policy. An operator then creates, changes and deletes a policy for ``prefix:+8526`` through the CLI and the
API; the worker's routes stage follows sms.routes.policies.v1, so nothing is restarted for it. A worker killed
with -9 afterwards comes back with the API's policy (it is read back from the topic, not from the config).
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from devkit.simulator.faults import parse_fault
from tests.e2e.test_double_list import SCOPE, Api, hk_pool, kinds, routing
from tests.e2e.test_webhook_api import cli, wait_api_up

pytestmark = pytest.mark.e2e

POLICY_PATH = "/v1/routes/policies/prefix:%2B8526"


async def lookup_status(api: Api) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {api.key}"}) as http,
        http.get(f"{api.base}/v1/routes/%2B85260001234/active") as r,
    ):
        return r.status, await r.json()


async def test_a_policy_made_through_the_api_decides_changes_without_restart_and_survives_one(
    pipeline: Any,
) -> None:
    """Create a policy by CLI for a scope with no config policy -> an audited policy_set decision, and the
    number lookup answers for it; swap its lists by API -> the active route changes at once (version 2);
    kill -9 the worker -> after the restart a fault on the new primary fails over under version 2; delete it
    -> policy_deleted, and the lookup has no policy again."""
    api = Api()
    cfg = routing(hold_down_s=20, window={"size_s": 10, "step_s": 2})
    cfg["policies"] = []  # carrier routes only: every policy comes from the API
    p, topics = await hk_pool(pipeline, api, cfg)
    async with aiohttp.ClientSession() as http:
        await wait_api_up(http, api.base, p)
    assert (await lookup_status(api))[0] == 404  # no policy governs the number yet
    env = {**p.env, "SMSFLOW_ADMIN_API_KEY": api.key, "SMSFLOW_API_URL": api.base}

    # --- create (CLI): decisions appear for the scope; the lookup follows
    made = await cli(
        env,
        *("routes", "policy", "set", SCOPE, "--primary", "hk-a", "--secondary", "hk-b"),
        *("--hold-down", "20", "--threshold", "probe_latency_ms.degraded=4000"),
        *("--reason", "HK pool goes live"),
    )
    assert made["version"] == 1 and made["actor"].startswith("admin (environment) [key ")
    decisions = await topics.wait("policy v1", topics.decisions, lambda rs: "policy_set" in kinds(rs), 60)
    v1 = decisions[-1]
    assert (v1["scope"], v1["policy_source"], v1["policy_version"]) == (SCOPE, "api", 1)
    assert v1["policy_actor"] == made["actor"] and "HK pool goes live" in v1["reason"]
    status, active = await lookup_status(api)
    assert status == 200 and (active["scope"], active["route_id"]) == (SCOPE, "hk-a")

    # --- change (API): the lists swap; the active route changes without a restart
    swapped = {
        "primary": ["hk-b"],
        "secondary": ["hk-a"],
        "hold_down_s": 20,
        "reason": "carrier A costs more",
    }
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {api.key}"}) as http,
        http.put(api.base + POLICY_PATH, json=swapped) as r,
    ):
        assert r.status == 202, await r.text()
        assert (await r.json())["previous"]["primary"] == ["hk-a"]
    decisions = await topics.wait(
        "policy v2", topics.decisions, lambda rs: [d.get("policy_version") for d in rs][-1:] == [2], 60
    )
    status, active = await lookup_status(api)
    assert status == 200 and (active["active_list"], active["route_id"]) == ("primary", "hk-b")
    shown = await cli(env, "routes", "policy", "get", SCOPE)
    assert shown["version"] == 2 and shown["last_change"]["previous"]["primary"] == ["hk-a"]

    # --- a worker restart keeps it: kill -9, and the new primary's carrier then refuses binds
    p.kill("worker")
    p.start("worker")
    restarted_ms = time.time() * 1000
    await topics.wait(
        "health after the restart",
        topics.health,
        lambda rs: any(r["route_id"] == "hk-b" and r["window_end"] > restarted_ms + 2000 for r in rs),
        120,
    )
    p.smsc.set_fault("acct1", parse_fault({"kind": "refuse_binds"}, now=time.monotonic()))
    p.smsc.drop_now("acct1")
    faulted_at = time.time()
    decisions = await topics.wait("failover", topics.decisions, lambda rs: "failover" in kinds(rs), 90)
    failover = decisions[-1]
    print(f"\nAPI policy v2 after a restart: failover {time.time() - faulted_at:.1f} s after the fault")
    assert (failover["active"], failover["policy_version"]) == ("secondary", 2)
    assert any(e["route_id"] == "hk-b" and e["list"] == "primary" for e in failover["evidence"])
    assert kinds(decisions).count("policy_set") == 2  # the copies read again after the restart: no-ops
    status, active = await lookup_status(api)
    assert (active["active_list"], active["route_id"]) == ("secondary", "hk-a")
    p.smsc.clear_fault("acct1")

    # --- delete (CLI): audited; no config policy behind it, so no policy governs the number any more
    gone = await cli(env, "routes", "policy", "delete", SCOPE, "--reason", "HK pool retired")
    assert gone["deleted"] is True and gone["version"] == 3
    decisions = await topics.wait(
        "policy deleted", topics.decisions, lambda rs: "policy_deleted" in kinds(rs), 60
    )
    assert "HK pool retired" in decisions[-1]["reason"] and decisions[-1]["policy_actor"] == gone["actor"]
    assert (await lookup_status(api))[0] == 404
