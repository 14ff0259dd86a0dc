"""Issue 9 §1: no tenant receives another tenant's SMS, through any endpoint of the API.

Real broker, real ``smsflow worker``, ``connector`` and ``api`` processes, two customers A and B with their
own owner-scoped API keys. A holds +85230001000; B holds +85230001001 and the prefix +86106. Every
cross-tenant attempt — create, PATCH, list, get, recover, resend — is refused or matches nothing, and B's
webhook never receives a message to A's number. On the code before holdings existed, the first phase fails:
B's key creates a subscription with an empty filter and B's webhook receives A's SMS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from devkit.simulator.traffic import TrafficMix
from smsflow.api.apikeys import ApiKeyStore
from tests.e2e.test_webhook_api import cli, wait_api_up
from tests.e2e.test_webhook_failures import (
    ScriptedEndpoint,
    answer,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.e2e

A_NUMBER, B_NUMBER, B_PREFIX_NUMBER = "+85230001000", "+85230001001", "+8610690001234"


def bodies(ep: ScriptedEndpoint) -> list[dict[str, Any]]:
    """Every message the endpoint was sent (batches flattened), whatever it answered."""
    out: list[dict[str, Any]] = []
    for raw, _headers in ep.requests:
        doc = orjson.loads(raw)
        out.extend(doc if isinstance(doc, list) else [doc])
    return out


class Tenant:
    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http, self.base, self.token = http, base, token

    async def call(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.request(
            method, self.base + path, json=body, params=params, headers=headers
        ) as r:
            return r.status, (await r.json() if r.status != 204 else None)


def tenant_keys(tmp_path: Path) -> tuple[str, str, str, Path]:
    """An admin key's token, tenant a's and tenant b's, and the keys file that gives the API the two tenants'
    keys (the admin key comes from ``E2E_ADMIN_KEY``: ``tenant_api``)."""
    keys = ApiKeyStore()
    _, admin_token = keys.issue(None, label="e2e admin")
    key_a, a_token = keys.issue("a", label="tenant a")
    key_b, b_token = keys.issue("b", label="tenant b")
    keys_file = tmp_path / "keys.jsonl"
    keys_file.write_bytes(b"\n".join(orjson.dumps(k.to_record()) for k in (key_a, key_b)) + b"\n")
    return admin_token, a_token, b_token, keys_file


def tenant_api(port: int, keys_file: Path, admin_token: str) -> dict[str, Any]:
    """The pipeline's ``api`` section and environment for serving the keys of ``tenant_keys``."""
    return {
        "api": {
            "host": "127.0.0.1",
            "port": port,
            "admin_key_env": "E2E_ADMIN_KEY",
            "keys_file": str(keys_file),
        },
        "extra_env": {"E2E_ADMIN_KEY": admin_token},
    }


async def test_two_tenants_never_see_each_others_sms(pipeline, tmp_path: Path) -> None:
    admin_token, a_token, b_token, keys_file = tenant_keys(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ep_a, ep_b = ScriptedEndpoint("tenant-a", answer(204)), ScriptedEndpoint("tenant-b", answer(204))
    for ep in (ep_a, ep_b):
        await ep.start()
    try:
        p = await pipeline(
            carriers=1,
            **tenant_api(port, keys_file, admin_token),
            webhooks={"retry_delays_s": [0, 0.5, 1, 2]},
        )
        cli_env = {**p.env, "SMSFLOW_API_KEY": admin_token, "SMSFLOW_API_URL": base}
        t_start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        p.start("worker", "connector", "api")
        await p.smsc.wait_bound(60)
        mix = TrafficMix(seed=97, multipart_ratio=0.0)

        def to_number(mid: str) -> str:
            return str(p.receiver.log.messages[mid]["to_number"])

        async def feed(count: int, dest: str | None = None) -> None:
            for _ in range(count):
                sms = mix.next()
                if dest is not None:
                    sms = dataclasses.replace(sms, dest=dest.lstrip("+"))
                p.smsc.enqueue(sms)
                await asyncio.sleep(0.05)

        async def all_delivered() -> set[str]:
            """Wait until the operator's config subscription (which receives everything) has every message."""
            assert await p.smsc.drain(60), p.logs()
            await p.wait_delivered(p.smsc.stats.logical_accepted, 90)
            return set(p.receiver.log.messages)

        async with aiohttp.ClientSession() as http:
            await wait_api_up(http, base, p)
            admin, a, b = (Tenant(http, base, token) for token in (admin_token, a_token, b_token))

            # -- phase 0: B holds nothing yet and asks for "everything" with an empty filter
            status0, created0 = await b.call("POST", "/v1/subscriptions", {"url": ep_b.url})
            if status0 == 201:
                ep_b.secret = created0["secret"]
            await asyncio.sleep(1)
            await feed(12)
            phase0 = await all_delivered()
            a_phase0 = {m for m in phase0 if to_number(m) == A_NUMBER}
            assert a_phase0, "the traffic must include SMS to A's number"
            # bounded wait: on code that leaks, B's copies arrive about when the operator's do
            t_end = time.monotonic() + 3
            while not ep_b.hits and time.monotonic() < t_end:
                await asyncio.sleep(0.1)
            leaked = sorted({m["message_id"] for m in bodies(ep_b)} & a_phase0)
            assert not leaked, f"B's webhook received A's SMS: {leaked}"
            assert status0 == 403 and created0["error"]["code"] == "not_held", created0

            # -- the operator says who holds what: A through the API, B through the CLI
            status, held = await admin.call("PUT", "/v1/holdings/a", {"numbers": [A_NUMBER]})
            assert status == 200 and held["numbers"] == [A_NUMBER], held
            held_by_b = ["--number", B_NUMBER, "--prefix", "+86106", "--sender-id", "BeeBank"]
            await cli(cli_env, "holdings", "set", "b", *held_by_b)
            # a tenant cannot grant itself numbers or another's sender ID, nor read another's holding
            assert (await b.call("PUT", "/v1/holdings/b", {"numbers": [A_NUMBER]}))[0] == 403
            assert (await b.call("PUT", "/v1/holdings/b", {"sender_ids": ["HSBC"]}))[0] == 403
            assert (await b.call("GET", "/v1/holdings/a"))[0] == 404
            status, listed = await b.call("GET", "/v1/holdings")
            assert [h["owner"] for h in listed["data"]] == ["b"]
            assert listed["data"][0]["sender_ids"] == ["BeeBank"]

            # -- create: empty filters now mean "all of my numbers"; reaching beyond is refused by field
            status, sub_a = await a.call("POST", "/v1/subscriptions", {"url": ep_a.url})
            assert status == 201, sub_a
            ep_a.secret = sub_a["secret"]
            status, sub_b = await b.call("POST", "/v1/subscriptions", {"url": ep_b.url})
            assert status == 201, sub_b
            ep_b.secret = sub_b["secret"]
            for filters, field in [
                ({"destination_numbers": [A_NUMBER]}, "filters.destination_numbers.0"),
                ({"destination_prefixes": ["+852"]}, "filters.destination_prefixes.0"),
            ]:
                status, err = await b.call("POST", "/v1/subscriptions", {"url": ep_b.url, "filters": filters})
                assert status == 403 and err["error"]["field"] == field, err
            status, err = await b.call("POST", "/v1/subscriptions", {"url": ep_b.url, "owner": "a"})
            assert status == 403, err
            status, err = await b.call("POST", "/v1/subscriptions", {"url": ep_b.url, "owner": "operator"})
            assert status == 403, err

            # -- PATCH: B cannot widen its own filter to A's number, nor touch A's subscription
            path_a, path_b = f"/v1/subscriptions/{sub_a['id']}", f"/v1/subscriptions/{sub_b['id']}"
            status, err = await b.call("PATCH", path_b, {"filters": {"destination_numbers": [A_NUMBER]}})
            assert status == 403 and err["error"]["field"] == "filters.destination_numbers.0", err
            assert (await b.call("PATCH", path_a, {"url": ep_b.url}))[0] == 404
            assert (await b.call("GET", path_a))[0] == 404
            assert (await b.call("DELETE", path_a))[0] == 404

            # -- list: each sees only its own
            assert [s["id"] for s in (await b.call("GET", "/v1/subscriptions"))[1]["data"]] == [sub_b["id"]]
            assert [s["id"] for s in (await a.call("GET", "/v1/subscriptions"))[1]["data"]] == [sub_a["id"]]
            status, only_a = await b.call("GET", "/v1/subscriptions", params={"owner": "a"})
            assert [s["id"] for s in only_a["data"]] == [sub_b["id"]], "the owner parameter is for admin keys"

            # -- phase 1: probe until the worker has both subscriptions, then traffic to every number
            await feed(1, A_NUMBER)
            await feed(1, B_NUMBER)
            await wait_until(lambda: ep_a.hits and ep_b.hits, 60, "first deliveries to A and B", p.logs)
            before1 = set(p.receiver.log.messages)
            await feed(18)
            phase1 = await all_delivered() - before1
            want_a = {m for m in phase1 if to_number(m) == A_NUMBER}
            want_b = {m for m in phase1 if to_number(m) in (B_NUMBER, B_PREFIX_NUMBER)}
            assert want_a and want_b
            await wait_until(lambda: ep_a.delivered() >= want_a, 60, "A's phase-1 deliveries", p.logs)
            await wait_until(lambda: ep_b.delivered() >= want_b, 60, "B's phase-1 deliveries", p.logs)
            await asyncio.sleep(1)
            assert ep_a.delivered() & phase1 == want_a
            assert ep_b.delivered() & phase1 == want_b

            # -- recover: B cannot recover A's subscription; its own recovers only what B holds
            since = {"since": t_start.isoformat()}
            assert (await b.call("POST", f"{path_a}/recover", since))[0] == 404
            b_phase0 = {m for m in phase0 if to_number(m) in (B_NUMBER, B_PREFIX_NUMBER)}
            status, rec = await b.call("POST", f"{path_b}/recover", since)
            assert status == 202 and rec["queued"] == len(b_phase0), (rec, len(b_phase0))
            await wait_until(lambda: ep_b.delivered() >= b_phase0, 60, "B's recovered messages", p.logs)

            # -- resend: another tenant's message id is a 404 whichever subscription is named, even for
            # an admin key; B's own message is sent again
            a_msg, b_msg = sorted(want_a)[0], sorted(want_b)[0]
            for who, sub_id in [(b, sub_b["id"]), (b, sub_a["id"]), (admin, sub_b["id"])]:
                status, err = await who.call(
                    "POST", f"/v1/messages/{a_msg}/resend", params={"subscription_id": sub_id}
                )
                assert status == 404, (sub_id, err)
            status, _ = await b.call(
                "POST", f"/v1/messages/{b_msg}/resend", params={"subscription_id": sub_b["id"]}
            )
            assert status == 202
            await wait_until(
                lambda: sum(h.webhook_id == b_msg for h in ep_b.hits) == 2, 60, "B's resent message", p.logs
            )

            # -- the number B_NUMBER moves from B to A: B stops receiving it at once. The holdings topic is
            # read in order, so once A receives B_NUMBER's traffic the worker also applied B's removal.
            await cli(cli_env, "holdings", "set", "b", "--prefix", "+86106")
            status, _ = await admin.call("PUT", "/v1/holdings/a", {"numbers": [A_NUMBER, B_NUMBER]})
            assert status == 200
            deadline = time.monotonic() + 60
            while not any(to_number(m) == B_NUMBER for m in ep_a.delivered() if m in p.receiver.log.messages):
                assert time.monotonic() < deadline, "A never received the number it was given\n" + p.logs()
                await feed(1, B_NUMBER)
                await all_delivered()
                await asyncio.sleep(0.5)
            before2 = set(p.receiver.log.messages)
            await feed(12)
            phase2 = await all_delivered() - before2
            moved = {m for m in phase2 if to_number(m) == B_NUMBER}
            still_b = {m for m in phase2 if to_number(m) == B_PREFIX_NUMBER}
            assert moved and still_b
            await wait_until(lambda: ep_a.delivered() >= moved, 60, "the moved number's SMS at A", p.logs)
            await wait_until(lambda: ep_b.delivered() >= still_b, 60, "B's remaining number", p.logs)
            await asyncio.sleep(1)
            assert not ep_b.delivered() & moved, "B still received a number it no longer holds"
    finally:
        for ep in (ep_a, ep_b):
            await ep.stop()

    # over the whole run, B's endpoint was never sent a message to A's number, signed or not
    assert not [m for m in bodies(ep_b) if m["to_number"] == A_NUMBER]
    assert ep_a.bad_signatures == 0 and ep_b.bad_signatures == 0
