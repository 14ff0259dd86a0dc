"""Issue 2: a carrier's deliver_sm reaches a customer webhook, once, intact, signed — on a real broker."""

from __future__ import annotations

import asyncio

import pytest

from devkit.simulator.traffic import LogicalSms, TrafficMix

pytestmark = pytest.mark.e2e


def _expected(accepted: list[LogicalSms]) -> dict[str, LogicalSms]:
    return {s.text: s for s in accepted}


async def test_messages_arrive_once_intact_and_signed(pipeline) -> None:
    p = await pipeline(carriers=2, dup_ratio=0.1)
    p.start()
    await p.smsc.wait_bound(60)
    mix = TrafficMix(seed=11, multipart_ratio=0.3)
    n = 150
    for _ in range(n):
        p.smsc.enqueue(mix.next())
    assert await p.smsc.drain(120), p.logs()
    assert p.smsc.stats.logical_accepted == n
    await p.wait_delivered(n, 60)
    await asyncio.sleep(2)  # anything extra (a duplicate delivered as a new message) would show up now
    got = list(p.receiver.log.messages.values())
    assert len(got) == n, "every SMS exactly once (by webhook-id)"
    bodies = sorted(m["body"] for m in got)
    assert bodies == sorted(s.text for s in p.smsc.accepted), "text intact, no duplicates as new messages"
    assert p.receiver.log.bad_signatures == 0
    by_text = _expected(p.smsc.accepted)
    for m in got:
        src = by_text[m["body"]]
        assert m["from_number"] == "+" + src.source
        assert m["to_number"] == "+" + src.dest
        assert m["otp"] == src.extra["otp"]
        hdrs = p.receiver.log.headers[m["message_id"]]
        assert hdrs["webhook-id"] == m["message_id"]
        assert hdrs["webhook-signature"].startswith("v1,")
        assert hdrs.get("traceparent", "").startswith("00-")
    assert p.smsc.stats.retransmissions > 0, "the carrier did retransmit; those were dropped as duplicates"


async def test_broker_outage_temporary_errors_then_everything_arrives(pipeline) -> None:
    p = await pipeline(carriers=1)
    p.start()
    await p.smsc.wait_bound(60)
    mix = TrafficMix(seed=5, multipart_ratio=0.0)
    for _ in range(20):
        p.smsc.enqueue(mix.next())
    await p.wait_delivered(20, 90)
    p.stack.kafka.kill()  # the broker dies mid-run
    for _ in range(30):
        p.smsc.enqueue(mix.next())
    # while Kafka is down the connector must answer ESME_RX_T_APPN, never ESME_ROK
    deadline = asyncio.get_running_loop().time() + 60
    while p.smsc.stats.temp_errors == 0 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
    assert p.smsc.stats.temp_errors > 0, p.logs()
    acked_during_outage = p.smsc.stats.logical_accepted
    await asyncio.sleep(3)
    assert p.smsc.stats.logical_accepted == acked_during_outage, "nothing acknowledged that is not stored"
    await asyncio.to_thread(p.stack.kafka.start)
    await asyncio.to_thread(p.stack.kafka.wait_ready, 90)
    assert await p.smsc.drain(180), p.logs()
    await p.wait_delivered(50, 180)
    assert sorted(m["body"] for m in p.receiver.log.messages.values()) == sorted(
        s.text for s in p.smsc.accepted
    )
