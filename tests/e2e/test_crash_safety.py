"""Issue 3, crash safety: kill -9 the worker, and separately the connector, in the middle of a
multi-thousand-message run with multipart SMS, carrier retransmissions and copies over a second route.
After a restart every SMS is delivered, and no SMS is delivered under two different webhook-ids;
redeliveries (same webhook-id) are counted and reported."""

from __future__ import annotations

import asyncio
import collections

import pytest

from devkit.simulator.traffic import TrafficMix

pytestmark = pytest.mark.e2e
N = 2000


async def _run_with_crash(pipeline, victim: str, seed: int) -> dict[str, int]:
    p = await pipeline(carriers=2, sessions=2, dup_ratio=0.05, cross_route_ratio=0.05, window=32)
    p.start()
    await p.smsc.wait_bound(60)
    mix = TrafficMix(seed=seed, multipart_ratio=0.3)
    for _ in range(N):
        p.smsc.enqueue(mix.next())
    # let a good part through, then crash the victim while traffic is in flight: the worker once a quarter
    # is delivered, the connector once a quarter is stored (the connector runs ahead of delivery)
    if victim == "worker":
        await p.wait_delivered(N // 4, 120)
    else:
        while p.smsc.stats.logical_accepted < N // 4:
            await asyncio.sleep(0.01)
    in_flight = p.smsc.backlog
    p.kill(victim)
    delivered_at_crash = len(p.receiver.log.messages)
    await asyncio.sleep(1.5)
    p.start(victim)
    assert await p.smsc.drain(240), p.logs()
    await p.wait_delivered(N, 240)
    await asyncio.sleep(3)  # let any late extra delivery show up before counting
    msgs = p.receiver.log.messages
    bodies = collections.Counter(m["body"] for m in msgs.values())
    doubled = {b: c for b, c in bodies.items() if c > 1}
    assert not doubled, f"SMS delivered under two webhook-ids: {list(doubled)[:3]}"
    assert sorted(bodies) == sorted(s.text for s in p.smsc.accepted)
    assert len(msgs) == N
    assert p.receiver.log.bad_signatures == 0
    figures = {
        "messages": N,
        "delivered_before_crash": delivered_at_crash,
        "carrier_backlog_at_crash": in_flight,
        "redeliveries_same_webhook_id": p.receiver.log.redeliveries,
        "carrier_retransmissions": p.smsc.stats.retransmissions,
        "cross_route_copies": p.smsc.stats.cross_route_copies,
        "carrier_resends_after_no_answer": p.smsc.stats.sent - p.smsc.stats.acked,
    }
    print(f"\ncrash of {victim}: {figures}")
    return figures


async def test_kill_worker_mid_run(pipeline) -> None:
    figures = await _run_with_crash(pipeline, "worker", seed=21)
    assert figures["delivered_before_crash"] < N


async def test_kill_connector_mid_run(pipeline) -> None:
    figures = await _run_with_crash(pipeline, "connector", seed=22)
    assert figures["carrier_backlog_at_crash"] > 0
    # deliver_sm in flight at the crash got no answer and were sent again by the carrier
    assert figures["carrier_resends_after_no_answer"] > 0
