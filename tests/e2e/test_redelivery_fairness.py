"""One tenant's recovers do not hold up another tenant's resend (smsflow/delivery/scan_slots.py).

Real broker, worker, connector and api processes. Tenant A's endpoint answers after 15 s, so while its
deliveries are in flight the deliver stage has not committed past them, and a recover of A's subscription
waits for it (``api.recover_settle_s``, 30 s by default) before it reads the history. A starts two such
recovers. Before, each held one of the API's two scan slots while it waited: B's resend of its own message
waited behind both (about as long as A's deliveries took). Now the wait holds no slot and a tenant runs one
scan at a time, so B's resend is answered while A's recovers are still waiting; and each of them then finds
A's messages delivered (nothing queued twice).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from devkit.simulator.traffic import TrafficMix
from tests.e2e.test_tenancy import A_NUMBER, B_NUMBER, Tenant, tenant_api, tenant_keys
from tests.e2e.test_webhook_api import wait_api_up
from tests.e2e.test_webhook_failures import ScriptedEndpoint, answer, free_port, wait_until

pytestmark = pytest.mark.e2e


async def test_a_tenants_recovers_waiting_for_the_worker_leave_others_resends_alone(
    pipeline, tmp_path: Path
) -> None:
    admin_token, a_token, b_token, keys_file = tenant_keys(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ep_a = ScriptedEndpoint("tenant-a-slow", answer(204, delay_s=15.0))
    ep_b = ScriptedEndpoint("tenant-b", answer(204))
    for ep in (ep_a, ep_b):
        await ep.start()
    try:
        p = await pipeline(
            carriers=1,
            **tenant_api(port, keys_file, admin_token),
        )
        since = {"since": (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).isoformat()}
        p.start("worker", "connector", "api")
        await p.smsc.wait_bound(60)
        mix = TrafficMix(seed=131, multipart_ratio=0.0)

        def send_to(number: str, count: int) -> None:
            for _ in range(count):
                p.smsc.enqueue(dataclasses.replace(mix.next(), dest=number.lstrip("+")))

        async with aiohttp.ClientSession() as http:
            await wait_api_up(http, base, p)
            admin, a, b = (Tenant(http, base, token) for token in (admin_token, a_token, b_token))
            assert (await admin.call("PUT", "/v1/holdings/a", {"numbers": [A_NUMBER]}))[0] == 200
            assert (await admin.call("PUT", "/v1/holdings/b", {"numbers": [B_NUMBER]}))[0] == 200
            # A's endpoint is slow, not failing: its timeout is longer than its answers take
            status, sub_a = await a.call(
                "POST", "/v1/subscriptions", {"url": ep_a.url, "timeout_seconds": 25}
            )
            assert status == 201, sub_a
            ep_a.secret = sub_a["secret"]
            status, sub_b = await b.call("POST", "/v1/subscriptions", {"url": ep_b.url})
            assert status == 201, sub_b
            ep_b.secret = sub_b["secret"]
            await asyncio.sleep(1)  # the running worker has both subscriptions

            # B's message, delivered; then A's, whose deliveries stay in flight for 15 s
            send_to(B_NUMBER, 1)
            await wait_until(lambda: ep_b.delivered(), 60, "B's first delivery", p.logs)
            (b_message,) = ep_b.delivered()
            send_to(A_NUMBER, 3)
            await wait_until(lambda: len(ep_a.requests) >= 3, 60, "A's deliveries in flight", p.logs)
            assert not ep_a.delivered()

            path_a = f"/v1/subscriptions/{sub_a['id']}/recover"
            recovers = [asyncio.create_task(a.call("POST", path_a, since)) for _ in range(2)]
            await asyncio.sleep(1)  # both are waiting for the deliver stage
            assert not any(t.done() for t in recovers)
            started = time.monotonic()
            status, resent = await b.call(
                "POST", f"/v1/messages/{b_message}/resend", params={"subscription_id": sub_b["id"]}
            )
            took = time.monotonic() - started
            assert status == 202, resent
            assert not any(t.done() for t in recovers), (
                f"B's resend (answered in {took:.1f} s) waited until one of A's recovers had finished"
            )
            await wait_until(
                lambda: Counter(h.webhook_id for h in ep_b.hits)[b_message] == 2, 30, "B's resend", p.logs
            )

            for status, out in await asyncio.wait_for(asyncio.gather(*recovers), 90):
                # A's messages were being delivered: found delivered once the stage committed, none queued
                assert status == 202 and out["queued"] == 0 and out["not_examined"] == 0, out
            await wait_until(lambda: len(ep_a.delivered()) == 3, 30, "A's deliveries", p.logs)
            await asyncio.sleep(2)  # anything queued twice would arrive by now
    finally:
        for ep in (ep_a, ep_b):
            await ep.stop()
    assert set(Counter(h.webhook_id for h in ep_a.hits).values()) == {1}
    assert ep_a.bad_signatures == 0 and ep_b.bad_signatures == 0
