"""Issue 5: subscriptions managed through the REST API of a running ``smsflow api`` process (and the CLI that
talks to it) take effect in the running worker without a restart; filters, fan-out, secret rotation, recover
and resend, all on a real broker with the real processes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
import pytest
from standardwebhooks.webhooks import Webhook

from devkit.demo.pipeline import REPO
from devkit.simulator.traffic import TrafficMix
from smsflow.api.apikeys import ApiKeyStore
from smsflow.schemas import DELIVERY_TOPIC
from tests.e2e.test_webhook_failures import (
    ScriptedEndpoint,
    answer,
    delivery_events,
    feed,
    free_port,
    histories,
    read_topic,
    story,
    wait_until,
)

pytestmark = pytest.mark.e2e


async def cli(env: dict[str, str], *args: str) -> Any:
    """``smsflow <args>`` as an operator runs it; its JSON answer."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "smsflow",
        *args,
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, f"smsflow {' '.join(args)}: {err.decode()}"
    text = out.decode().strip()
    return json.loads(text) if text.startswith(("{", "[")) else text


async def wait_api_up(http: aiohttp.ClientSession, base: str, p: Any, timeout: float = 60) -> None:
    """Until ``smsflow api`` answers its health check (fails early if the process died)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with http.get(base + "/healthz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline and p.procs["api"].alive, p.logs()
        await asyncio.sleep(0.3)


async def test_subscriptions_api_changes_a_running_worker(pipeline) -> None:
    _, admin = ApiKeyStore().issue(None, label="e2e admin")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    acme = ScriptedEndpoint("acme", answer(204))
    beta = ScriptedEndpoint("beta", answer(204))
    for ep in (acme, beta):
        await ep.start()
    try:
        p = await pipeline(
            carriers=1,
            api={"host": "127.0.0.1", "port": port, "admin_key_env": "E2E_ADMIN_KEY"},
            extra_env={"E2E_ADMIN_KEY": admin},
            webhooks={"retry_delays_s": [0, 0.5, 1, 2]},
        )
        cli_env = {**p.env, "SMSFLOW_API_KEY": admin, "SMSFLOW_API_URL": base}
        t_start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        p.start("worker", "connector", "api")
        await p.smsc.wait_bound(60)
        async with aiohttp.ClientSession() as http:
            await wait_api_up(http, base, p)

            # no key, or a wrong one: 401; the OpenAPI document is public
            async with http.get(base + "/v1/subscriptions") as r:
                assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
            wrong = {"Authorization": "Bearer sfk_0123456789abcdef_not-the-secret"}
            async with http.get(base + "/v1/subscriptions", headers=wrong) as r:
                assert r.status == 401
            async with http.get(base + "/openapi.json") as r:
                assert r.status == 200 and (await r.json())["openapi"].startswith("3.1")
            auth = {"Authorization": f"Bearer {admin}"}

            # phase 1: only the subscription from the config file exists
            mix = TrafficMix(seed=41, multipart_ratio=0.0)
            await feed(p, mix, 12, rate=20)
            assert await p.smsc.drain(60), p.logs()
            n1 = p.smsc.stats.logical_accepted
            await p.wait_delivered(n1, 60)
            worker_pid = p.procs["worker"].proc.pid

            # what each customer holds (admin key): acme the +852 numbers, beta all of ours (its filter picks
            # by the sender's country, so its messages go to +852 and +86 numbers alike)
            async with http.put(base + "/v1/holdings/acme", json={"prefixes": ["+852"]}, headers=auth) as r:
                assert r.status == 200, await r.text()
            await cli(cli_env, "holdings", "set", "beta", "--prefix", "+852", "--prefix", "+86")
            # acme through the REST API: destinations starting +852
            body = {"owner": "acme", "url": acme.url, "filters": {"destination_prefixes": ["+852"]}}
            async with http.post(base + "/v1/subscriptions", json=body, headers=auth) as r:
                assert r.status == 201, await r.text()
                created = await r.json()
            acme.secret, acme_id = created["secret"], created["id"]
            # beta through the CLI: messages from China that carry an OTP
            out = await cli(
                cli_env, "subscriptions", "create", "--url", beta.url, "--owner", "beta", "--country", "CN",
                "--otp-only",
            )  # fmt: skip
            beta.secret, beta_id = out["secret"], out["id"]
            listed = await cli(cli_env, "subscriptions", "list")
            assert {s["id"] for s in listed["data"]} == {"e2e-hook", acme_id, beta_id}
            assert all("secret" not in s for s in listed["data"])

            # phase 2: the running worker (same process, no restart) fans each message out by the filters
            await asyncio.sleep(1)
            await feed(p, mix, 24, rate=20)
            assert await p.smsc.drain(60), p.logs()
            n2 = p.smsc.stats.logical_accepted - n1
            await p.wait_delivered(n1 + n2, 60)
            msgs = list(p.receiver.log.messages.values())
            phase1, phase2 = msgs[:n1], msgs[n1:]
            want_acme = {m["message_id"] for m in phase2 if m["to_number"].startswith("+852")}
            want_beta = {m["message_id"] for m in phase2 if m["country_code"] == "CN" and m["otp"]}
            assert want_acme and want_beta and want_acme != want_beta
            await wait_until(lambda: acme.delivered() >= want_acme, 30, "acme deliveries", p.logs)
            await wait_until(lambda: beta.delivered() >= want_beta, 30, "beta deliveries", p.logs)
            await asyncio.sleep(1)
            assert acme.delivered() == want_acme and beta.delivered() == want_beta, "exactly what matched"
            assert p.procs["worker"].alive and p.procs["worker"].proc.pid == worker_pid

            # rotate acme's secret: from now on every webhook carries the new and the old signature
            old_secret = acme.secret
            async with http.post(
                f"{base}/v1/subscriptions/{acme_id}/rotate-secret", json={}, headers=auth
            ) as r:
                assert r.status == 200
                rotated = await r.json()
            acme.secret = rotated["secret"]  # the receiver switches to the new secret at once
            assert rotated["previous_valid_until"] is not None
            await asyncio.sleep(1)
            seen = len(acme.requests)
            await feed(p, mix, 12, rate=20)
            assert await p.smsc.drain(60), p.logs()
            await p.wait_delivered(p.smsc.stats.logical_accepted, 60)
            await wait_until(lambda: len(acme.requests) > seen, 30, "acme after rotation", p.logs)
            for raw, headers in acme.requests[seen:]:
                assert len(headers["webhook-signature"].split()) == 2
                Webhook(rotated["secret"]).verify(raw, headers)
                Webhook(old_secret).verify(raw, headers)  # still valid during the overlap

            # recover since the start: the phase-1 messages for +852 never reached acme (it did not exist)
            want_recovered = {m["message_id"] for m in phase1 if m["to_number"].startswith("+852")}
            out = await cli(cli_env, "subscriptions", "recover", acme_id, "--since", t_start.isoformat())
            assert out["queued"] == len(want_recovered) and out["not_examined"] == 0, out
            await wait_until(lambda: acme.delivered() >= want_recovered, 30, "recovered messages", p.logs)

            # resend one message: it arrives again under the same webhook-id; an unknown id is a 404
            again = sorted(want_acme)[0]
            url = f"{base}/v1/messages/{again}/resend"
            async with http.post(url, params={"subscription_id": acme_id}, headers=auth) as r:
                assert r.status == 202, await r.text()
            await wait_until(
                lambda: Counter(h.webhook_id for h in acme.hits)[again] == 2, 30, "resent message", p.logs
            )
            async with http.post(
                f"{base}/v1/messages/msg_unknown/resend", params={"subscription_id": acme_id}, headers=auth
            ) as r:
                assert r.status == 404

            # delete beta through the CLI: it is gone from the list, and gets nothing more
            await cli(cli_env, "subscriptions", "delete", beta_id)
            listed = await cli(cli_env, "subscriptions", "list")
            assert beta_id not in {s["id"] for s in listed["data"]}
        events = delivery_events(p.stack.bootstrap, p.stack.registry_url)
        # the API's events join the worker's in the message's partition (both hash the key with murmur2)
        partitions = {
            part
            for part, _o, key, _v in read_topic(p.stack.bootstrap, DELIVERY_TOPIC)
            if key == again.encode()
        }
        assert len(partitions) == 1, partitions
    finally:
        for ep in (acme, beta):
            await ep.stop()

    assert acme.bad_signatures == 0 and beta.bad_signatures == 0
    hist = histories(events)
    # fan-out: one message, three deliveries, each with its own history
    both = want_acme & want_beta - {again}
    assert both
    for mid in both:
        for sub in ("e2e-hook", acme_id, beta_id):
            assert story(hist[(mid, sub)]) == ["delivered"], (mid, sub)
    # the resent and recovered deliveries say why they were queued again
    resent = hist[(again, acme_id)]
    # first attempted at once (no ``queued``, ADR 0006); the resend is queued, then delivered again
    assert story(resent) == ["delivered", "queued", "delivered"]
    assert resent[1]["error"] == "queued again by resend"
    for mid in want_recovered:
        h = hist[(mid, acme_id)]
        assert story(h) == ["queued", "delivered"] and h[0]["error"].startswith("queued again by recover")


async def recover_during_slow_deliveries(
    pipeline: Any, delay_s: float, count: int, in_flight: int, seed: int, **pipeline_kw: Any
) -> tuple[dict[str, Any], int]:
    """An operator subscription whose endpoint answers after ``delay_s``; ``count`` SMS; once ``in_flight``
    of their deliveries have reached the endpoint (none answered yet), recover since before the start.
    Returns recover's answer and the number of SMS, after checking that each reached the endpoint once."""
    _, admin = ApiKeyStore().issue(None, label="e2e admin")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    slow = ScriptedEndpoint("slow", answer(204, delay_s=delay_s))
    await slow.start()
    api = {"host": "127.0.0.1", "port": port, "admin_key_env": "E2E_ADMIN_KEY", **pipeline_kw.pop("api", {})}
    try:
        p = await pipeline(carriers=1, api=api, extra_env={"E2E_ADMIN_KEY": admin}, **pipeline_kw)
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        p.start("worker", "connector", "api")
        await p.smsc.wait_bound(60)
        auth = {"Authorization": f"Bearer {admin}"}
        async with aiohttp.ClientSession() as http:
            await wait_api_up(http, base, p)
            body = {
                "owner": "operator",
                "url": slow.url,
                "filters": {"destination_prefixes": ["+852", "+86"]},
            }
            async with http.post(base + "/v1/subscriptions", json=body, headers=auth) as r:
                assert r.status == 201, await r.text()
                created = await r.json()
            slow.secret, sub_id = created["secret"], created["id"]
            await asyncio.sleep(1)  # the running worker has the subscription

            await feed(p, TrafficMix(seed=seed, multipart_ratio=0.0), count, rate=50)
            assert await p.smsc.drain(60), p.logs()
            n = p.smsc.stats.logical_accepted
            await wait_until(lambda: len(slow.requests) >= in_flight, 30, "deliveries in flight", p.logs)
            assert not slow.delivered(), "recover must start while the deliveries are in flight"
            async with http.post(
                f"{base}/v1/subscriptions/{sub_id}/recover", json={"since": since.isoformat()}, headers=auth
            ) as r:
                assert r.status == 202, await r.text()
                out = await r.json()
            await wait_until(lambda: len(slow.delivered()) >= n, 60, "every message at the endpoint", p.logs)
            await asyncio.sleep(2)  # anything queued twice would arrive by now
    finally:
        await slow.stop()
    per_id = Counter(h.webhook_id for h in slow.hits)
    assert len(per_id) == n and set(per_id.values()) == {1}, per_id
    assert slow.bad_signatures == 0
    return out, n


@pytest.mark.parametrize("inbound_reader", ["direct", "faust"])
async def test_recover_while_deliveries_are_in_flight_sends_nothing_twice(
    pipeline, inbound_reader: str
) -> None:
    """Recover run while the deliver stage is still sending to the subscription: those messages have no
    history yet (an unbatched delivery's first event is its outcome), so a recover that read the history at
    once would queue every one of them a second time (it did: 10 of 10, before it waited). It waits for the
    deliver stage's group (its own per reader: ``<app_id>`` or ``<app_id>-deliver``) to commit past them,
    then finds each delivered."""
    out, _ = await recover_during_slow_deliveries(
        pipeline, delay_s=3.0, count=10, in_flight=1, seed=43, inbound_reader=inbound_reader
    )
    assert out["queued"] == 0 and out["not_examined"] == 0, out


async def test_recover_leaves_what_the_deliver_stage_has_not_finished_to_it(pipeline) -> None:
    """A deliver stage far behind (here: held by a 6 s endpoint) past ``api.recover_settle_s``: recover does
    not wait longer, queues nothing it cannot tell about, and says how many inbound records it left; the stage
    then delivers each of them once."""
    out, n = await recover_during_slow_deliveries(
        pipeline, delay_s=6.0, count=6, in_flight=6, seed=44, api={"recover_settle_s": 1}
    )
    assert out["queued"] == 0 and 1 <= out["not_examined"] <= n, out
