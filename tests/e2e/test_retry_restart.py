"""Issue 9 §2: retries survive a worker restart without multiplying (ADR 0005).

Real broker and worker. An endpoint that always answers 500 gets each message's attempt 1 at once, attempt 2
0.5 s later, and attempt 3 after 45 s; then the message is dead-lettered. Messages arrive 0.67 s apart, so in
each partition of ``sms.webhook.retry.v1`` a later message's attempt-2 record lies behind an earlier message's
attempt-3 record, which waits unacked and holds the committed offset back. The worker is restarted while the
attempt-3 records wait. Before the attempts ledger, the restarted worker read the attempt-2 records behind the
held offset again and sent them again (and scheduled their failures again): more than three requests per
message. Now every message gets exactly three, and one dead letter.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import orjson
import pytest

from devkit.simulator.traffic import TrafficMix
from smsflow.schemas import WEBHOOK_DLQ_TOPIC
from tests.e2e.test_webhook_failures import (
    ScriptedEndpoint,
    answer,
    put_subscriptions,
    read_topic,
    wait_until,
)

pytestmark = pytest.mark.e2e

SCHEDULE = [0, 0.5, 45]  # attempts at 0 s, 0.5 s, 45.5 s
MESSAGES = 20


async def test_worker_restart_mid_schedule_does_not_resend_attempts(pipeline) -> None:
    down = ScriptedEndpoint("down", answer(500))
    await down.start()
    try:
        p = await pipeline(carriers=1, webhooks={"retry_delays_s": SCHEDULE, "retry_jitter": 0})
        p.start("worker", "connector")
        await p.smsc.wait_bound(60)
        await put_subscriptions(p, [down.subscription()])
        # probe until the running worker sends to the new subscription; count only what follows
        mix = TrafficMix(seed=5, multipart_ratio=0.0)
        for _ in range(60):
            p.smsc.enqueue(mix.next())
            await asyncio.sleep(1)
            if down.hits:
                break
        assert down.hits, "the worker never picked up the subscription\n" + p.logs()
        assert await p.smsc.drain(60), p.logs()
        await p.wait_delivered(p.smsc.stats.logical_accepted, 60)
        probes = set(p.receiver.log.messages)
        for _ in range(MESSAGES):
            p.smsc.enqueue(mix.next())
            await asyncio.sleep(1 / 1.5)  # > 0.5 s apart: each one's attempt 2 comes after the earlier's
        assert await p.smsc.drain(60), p.logs()
        await p.wait_delivered(p.smsc.stats.logical_accepted, 60)
        ids = set(p.receiver.log.messages) - probes
        assert len(ids) == MESSAGES

        def hits() -> Counter[str]:
            return Counter(h.webhook_id for h in down.hits)

        await wait_until(lambda: all(hits()[m] >= 2 for m in ids), 60, "attempts 1 and 2", p.logs)
        assert all(hits()[m] == 2 for m in ids), hits()
        await asyncio.sleep(2)  # the attempt-2 outcomes and ledger entries reach the broker

        # restart while the attempt-3 records wait on the retry topic. Stopped in a thread: the endpoint runs
        # on this event loop and must keep answering (an attempt 3 falling due during the worker's shutdown
        # drain is then made and recorded there, like any other).
        restarted = time.monotonic()
        await asyncio.to_thread(p.stop, "worker")
        p.start("worker")
        await wait_until(lambda: all(hits()[m] >= 3 for m in ids), 120, "attempt 3 after the restart", p.logs)

        def dead_letters() -> Counter[str]:
            return Counter(
                orjson.loads(v)["message"]["message_id"]
                for _p, _o, _k, v in read_topic(p.stack.bootstrap, WEBHOOK_DLQ_TOPIC)
                if v is not None
            )

        await wait_until(lambda: set(dead_letters()) >= ids, 60, "dead letters", p.logs)
        await asyncio.sleep(3)  # anything re-sent by the restart would show by now
        counts = hits()
        timeline = {
            m: [f"#{h.n} {h.t - restarted:+.1f}s" for h in down.hits if h.webhook_id == m]
            for m in list(ids)[:3]
        }
        assert {m: counts[m] for m in ids} == dict.fromkeys(ids, 3), (
            f"attempts multiplied by the restart; requests relative to the restart: {timeline}"
        )
        dead = dead_letters()  # the probe messages end dead-lettered too
        assert ids <= set(dead) and set(dead.values()) == {1}, dead
    finally:
        await down.stop()
