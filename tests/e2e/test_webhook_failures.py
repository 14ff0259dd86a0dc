"""Issue 5: webhook endpoints that fail in scripted ways, on a real broker with the real worker process.

Each endpoint is its own local aiohttp server (one over TLS with a CA made for the test). Every message must
end delivered or dead-lettered, the events on sms.delivery.v1 (read back with confluent-kafka's
AvroDeserializer) and the records on sms.webhook.dlq.v1 must tell what happened, and a healthy endpoint must
not be slowed down by the others. The outage test keeps one endpoint down while traffic flows, then brings it
back.
"""

from __future__ import annotations

import asyncio
import ssl
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from devkit.local.jvm import free_port
from devkit.simulator.traffic import TrafficMix
from smsflow.delivery.signing import generate_secret
from smsflow.schemas import DELIVERY_TOPIC, OPS_TOPIC, WEBHOOK_DLQ_TOPIC
from smsflow.subscriptions.model import BatchConfig, SigningSecret, Subscription
from smsflow.subscriptions.secretbox import ENV_KEYS, SecretBox
from smsflow.subscriptions.topic_store import TopicSubscriptionStore
from tests.kafka_read import avro_values, read_topic
from tests.tls_certs import make_ca, server_context

pytestmark = pytest.mark.e2e

# ---------------------------------------------------------------- scripted endpoints


@dataclass
class Hit:
    webhook_id: str
    n: int  # 1-based: the how-manieth request for this webhook-id at this endpoint
    t: float  # time.monotonic() at arrival
    status: int
    # time.time() at arrival: a retry is due at a wall-clock time (the retry record is durable and read by any
    # worker), so "not before it is due" is a statement about wall-clock times; the VM's wall clock may be
    # stepped against its monotonic one (seen once on CI: a retry 1.89 s after the 429 by time.monotonic,
    # scheduled 2.0 s after it by the wall clock)
    wall: float = 0.0


Script = Callable[[int], Awaitable[web.Response]]


class ScriptedEndpoint:
    """A customer endpoint that answers the n-th request for each webhook-id as ``script(n)`` says, after
    checking the Standard Webhooks signature with the reference verifier."""

    def __init__(self, name: str, script: Script, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.name = name
        self.script = script
        self.ssl_ctx = ssl_ctx
        self.secret = generate_secret()
        self.port = 0
        self.hits: list[Hit] = []
        self.requests: list[tuple[bytes, dict[str, str]]] = []  # signed ones, as received
        self.messages: set[str] = set()  # message ids answered with 2xx (batches counted per element)
        self.bad_signatures = 0
        self._counts: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_ctx else 'http'}://127.0.0.1:{self.port}/{self.name}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            self.bad_signatures += 1
            return web.Response(status=401)
        self.requests.append((body, headers))
        wid = headers["webhook-id"]
        self._counts[wid] += 1
        n = self._counts[wid]
        t, wall = time.monotonic(), time.time()
        resp = await self.script(n)
        self.hits.append(Hit(wid, n, t, resp.status, wall))
        if 200 <= resp.status < 300:
            doc = orjson.loads(body)
            self.messages.update(m["message_id"] for m in (doc if isinstance(doc, list) else [doc]))
        return resp

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post(f"/{self.name}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.ssl_ctx)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def delivered(self) -> set[str]:
        return {h.webhook_id for h in self.hits if 200 <= h.status < 300}

    def subscription(self, **kw: Any) -> Subscription:
        return Subscription(
            # "operator": receives whatever the filter matches, no holding needed (tenancy: test_tenancy.py)
            id=f"sub-{self.name}",
            owner="operator",
            url=self.url,
            secrets=[SigningSecret.new(self.secret)],
            **kw,
        )


def answer(status: int, headers: dict[str, str] | None = None, delay_s: float = 0.0) -> Script:
    async def script(n: int) -> web.Response:
        if delay_s:
            await asyncio.sleep(delay_s)
        return web.Response(status=status, headers=headers)

    return script


def first_then_ok(status: int, headers: dict[str, str] | None = None) -> Script:
    async def script(n: int) -> web.Response:
        return web.Response(status=status if n == 1 else 204, headers=headers if n == 1 else None)

    return script


# ---------------------------------------------------------------- Kafka side


async def put_subscriptions(p: Any, subs: list[Subscription]) -> None:
    """Write subscriptions to sms.subscriptions.v1 as the API does; the running worker picks them up."""
    store = TopicSubscriptionStore(p.stack.bootstrap, box=SecretBox.from_spec(p.env[ENV_KEYS]))
    await store.start()
    try:
        for s in subs:
            await store.put(s)
    finally:
        await store.stop()


def delivery_events(bootstrap: str, registry_url: str) -> list[dict[str, Any]]:
    """sms.delivery.v1 decoded as any Confluent client would (AvroDeserializer against the registry)."""
    return avro_values(bootstrap, registry_url, DELIVERY_TOPIC)


def json_records(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(v) for _p, _o, _k, v in read_topic(bootstrap, topic) if v is not None]


def histories(events: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(message id, subscription id) -> its events in order (one message's events share a partition)."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for ev in events:
        out[(ev["message_id"], ev["subscription_id"])].append(ev)
    return out


def steps(h: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events of one delivery without deferrals (no slot was free, nothing sent) and operational ones."""
    return [
        e
        for e in h
        if e["state"] != "endpoint_disabled"
        and not (e["state"] == "retry_scheduled" and e["failure"] == "deferred")
    ]


def story(h: list[dict[str, Any]]) -> list[str]:
    return [e["state"] for e in steps(h)]


async def wait_until(cond: Callable[[], bool], timeout: float, what: str, logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs()}")
        await asyncio.sleep(0.25)


async def feed(p: Any, mix: TrafficMix, count: int, rate: float) -> None:
    for _ in range(count):
        p.smsc.enqueue(mix.next())
        await asyncio.sleep(1 / rate)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))]


# ---------------------------------------------------------------- tests

SHORT_RETRIES = {"retry_delays_s": [0, 0.5, 1, 2], "retry_jitter": 0.2, "deferred_delay_s": 0.5}


async def test_scripted_failures_end_delivered_or_dead_lettered(pipeline, tmp_path: Path) -> None:
    ca, ca_key, ca_path = make_ca(tmp_path, "trusted")
    other_ca, other_key, _ = make_ca(tmp_path, "unknown")
    endpoints = {
        "flaky": ScriptedEndpoint("flaky", first_then_ok(500)),
        "throttled": ScriptedEndpoint("throttled", first_then_ok(429, {"Retry-After": "2"})),
        "gone": ScriptedEndpoint("gone", answer(410)),
        "slow": ScriptedEndpoint("slow", answer(204, delay_s=0.7)),
        "hang": ScriptedEndpoint("hang", answer(204, delay_s=5)),
        "tls": ScriptedEndpoint("tls", answer(200), server_context(tmp_path, "ok", ca, ca_key)),
        "tls-untrusted": ScriptedEndpoint(
            "tls-untrusted", answer(200), server_context(tmp_path, "bad", other_ca, other_key)
        ),
        "batched": ScriptedEndpoint("batched", first_then_ok(500)),
    }
    extra = {"slow": {"timeout_seconds": 2.0}, "hang": {"timeout_seconds": 1.0}}
    extra["batched"] = {"batch": BatchConfig(max_batch_size=8, max_wait_ms=300)}
    for ep in endpoints.values():
        await ep.start()
    try:
        p = await pipeline(carriers=1, webhooks={**SHORT_RETRIES, "ca_bundle": str(ca_path)})
        p.start()
        await p.smsc.wait_bound(60)
        mix = TrafficMix(seed=23, multipart_ratio=0.0)
        healthy = p.receiver

        # warm-up (the worker may still be starting), then phase 1: the healthy endpoint alone, as a baseline
        await feed(p, mix, 3, rate=15)
        assert await p.smsc.drain(60), p.logs()
        await p.wait_delivered(p.smsc.stats.logical_accepted, 60)
        warm = len(healthy.log.latencies_ms)
        await feed(p, mix, 30, rate=15)
        assert await p.smsc.drain(60), p.logs()
        n1 = p.smsc.stats.logical_accepted  # what the connector stored (it may refuse one while binding)
        await p.wait_delivered(n1, 60)
        baseline = healthy.log.latencies_ms[warm:]

        # phase 2: the scripted endpoints subscribe (every message fans out to all); no restart
        await put_subscriptions(
            p,
            [
                ep.subscription(**{"timeout_seconds": 5.0, **extra.get(name, {})})
                for name, ep in endpoints.items()
            ],
        )
        await asyncio.sleep(2)  # the worker follows the topic within a poll interval
        before = len(healthy.log.latencies_ms)
        await feed(p, mix, 30, rate=15)
        assert await p.smsc.drain(60), p.logs()
        n2 = p.smsc.stats.logical_accepted - n1
        await p.wait_delivered(n1 + n2, 60)
        mids = list(healthy.log.messages)[n1:]
        assert len(mids) == n2 >= 25
        during = healthy.log.latencies_ms[before:]

        for name in ("flaky", "throttled", "slow", "tls", "batched"):
            ep = endpoints[name]
            await wait_until(lambda ep=ep: set(mids) <= ep.messages, 60, f"{name}: all delivered", p.logs)

        def dead_lettered() -> Counter[str]:
            return Counter(r["subscription_id"] for r in json_records(p.stack.bootstrap, WEBHOOK_DLQ_TOPIC))

        await wait_until(
            lambda: dead_lettered()["sub-hang"] >= n2 and dead_lettered()["sub-tls-untrusted"] >= n2,
            90,
            "hang and tls-untrusted dead-lettered",
            p.logs,
        )
        await asyncio.sleep(1)
        events = delivery_events(p.stack.bootstrap, p.stack.registry_url)
        hist = histories(events)
        dlq = json_records(p.stack.bootstrap, WEBHOOK_DLQ_TOPIC)
        ops = json_records(p.stack.bootstrap, OPS_TOPIC)
    finally:
        for ep in endpoints.values():
            await ep.stop()

    # every delivery ends delivered or dead-lettered, and the DLQ holds exactly the latter
    finals = {key: story(h)[-1] for key, h in hist.items()}
    assert set(finals.values()) <= {"delivered", "dead_lettered"}, Counter(finals.values())
    assert {k for k, s in finals.items() if s == "dead_lettered"} == {
        (r["message"]["message_id"], r["subscription_id"]) for r in dlq
    }
    assert all(r["reason"] for r in dlq)
    for ep in endpoints.values():
        assert ep.bad_signatures == 0

    def of(name: str) -> dict[str, list[dict[str, Any]]]:
        return {mid: steps(hist[(mid, f"sub-{name}")]) for mid in mids if (mid, f"sub-{name}") in hist}

    # healthy: one attempt each, before and after the others joined
    # attempted at once: no ``queued`` before the attempt's own event (ADR 0006); batched ones below have it
    for mid in mids:
        assert story(hist[(mid, "e2e-hook")]) == ["delivered"]
    # 500 then OK: the attempt is recorded as sent (with the status), a retry is scheduled, then delivered
    for mid, h in of("flaky").items():
        assert story(h) == ["sent", "retry_scheduled", "delivered"], (mid, h)
        assert h[0]["status_code"] == 500 and h[-1]["attempt"] == 2 and h[-1]["webhook_id"] == mid
    assert len(of("flaky")) == n2
    # 429 with Retry-After: 2 -> the next attempt waits at least 2 s (the schedule alone says 0.5 s)
    throttled = endpoints["throttled"]
    first_hit = {h.webhook_id: h.wall for h in throttled.hits if h.n == 1}
    for mid, h in of("throttled").items():
        assert story(h) == ["sent", "retry_scheduled", "delivered"], (mid, h)
        sched = next(e for e in h if e["state"] == "retry_scheduled")
        assert (sched["next_attempt_at"] - sched["ts"]).total_seconds() >= 1.99
        second = next(x.wall for x in throttled.hits if x.webhook_id == mid and x.n == 2)
        # not before it was due (due_at is kept in whole milliseconds), and 2 s after the 429 arrived
        assert second >= sched["next_attempt_at"].timestamp() - 0.002, (mid, second, sched)
        assert second - first_hit[mid] >= 1.9
    # 410: dead-lettered at once, the endpoint disabled once (event + operational event), nothing sent after
    gone = of("gone")
    assert gone, "at least the first message reached the 410 endpoint"
    for h in gone.values():
        assert story(h) == ["sent", "dead_lettered"] and h[0]["status_code"] == 410
    disabled = [e for e in events if e["state"] == "endpoint_disabled"]
    assert [e["subscription_id"] for e in disabled] == ["sub-gone"], disabled
    assert [o["subscription_id"] for o in ops if o["type"] == "endpoint_disabled"] == ["sub-gone"]
    assert len(endpoints["gone"].hits) == len(gone) < n2, (
        "later messages were not sent to a disabled endpoint"
    )
    # slow but within the timeout: delivered, and the event shows the duration
    for h in of("slow").values():
        assert story(h) == ["delivered"] and h[-1]["duration_ms"] >= 650
    # hangs past the timeout: four timed-out attempts, then the dead-letter topic with the reason
    for mid, h in of("hang").items():
        assert story(h) == [*["failed", "retry_scheduled"] * 3, "failed", "dead_lettered"], (mid, h)
        assert {e["failure"] for e in h if e["state"] == "failed"} == {"timeout"}
        assert "all 4 attempts failed" in h[-1]["error"]
    assert len(of("hang")) == n2
    # TLS: a certificate from the configured CA is accepted; an unknown CA never gets a request
    for h in of("tls").values():
        assert story(h) == ["delivered"]
    for h in of("tls-untrusted").values():
        assert story(h)[-1] == "dead_lettered"
        failed = [e for e in h if e["state"] == "failed"]
        assert len(failed) == 4 and {e["failure"] for e in failed} == {"tls"}
        assert "certificate verify" in failed[0]["error"] or "verification failed" in failed[0]["error"]
    assert endpoints["tls-untrusted"].hits == []
    # batched (arrays of up to 8, 300 ms): each batch answered 500 once, then resent whole under the same id
    batched = endpoints["batched"]
    per_batch = Counter(h.webhook_id for h in batched.hits)
    assert all(w.startswith("batch_") for w in per_batch) and set(per_batch.values()) == {2}
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for raw, headers in batched.requests:
        assert raw.startswith(b"[")
        bodies[headers["webhook-id"]].add(raw)
    assert all(len(b) == 1 for b in bodies.values()), "a retry carries the same batch"
    sizes = []
    for mid, h in of("batched").items():
        assert story(h) == ["queued", "sent", "retry_scheduled", "delivered"], (mid, h)
        assert h[-1]["webhook_id"].startswith("batch_") and h[-1]["attempt"] == 2
        sizes.append(h[-1]["batch_size"])
    assert len(sizes) == n2 and max(sizes) > 1, sizes
    # the healthy endpoint was not slowed down: generous bound (the hanging endpoint's timeout is 1 s)
    print(
        f"\nhealthy latency ms: alone p50={statistics.median(baseline):.1f} p95={pct(baseline, 0.95):.1f} "
        f"max={max(baseline):.1f}; with 8 more endpoints (failing, slow, batched) "
        f"p50={statistics.median(during):.1f} p95={pct(during, 0.95):.1f} max={max(during):.1f}"
    )
    assert max(during) < 1000


@dataclass
class Outage:
    """An endpoint that answers 503 while ``mode == "503"`` and whose server is stopped (connection refused)
    while ``mode == "down"``."""

    ep: ScriptedEndpoint
    mode: str = "up"
    modes: list[tuple[float, str]] = field(default_factory=list)

    async def script(self, n: int) -> web.Response:
        if self.mode == "503":
            return web.Response(status=503, text="scripted outage")
        return web.Response(status=204)

    async def set(self, mode: str) -> None:
        if mode == "down":
            await self.ep.stop()
        elif self.mode == "down":
            await self.ep.start()
        self.mode = mode
        self.modes.append((time.monotonic(), mode))


OUTAGE_503_S = 30.0
OUTAGE_REFUSED_S = 30.0


async def test_endpoint_outage_then_back_nothing_lost(pipeline) -> None:
    """One endpoint answers 503 for 30 s, then refuses connections for 30 s, while traffic flows at 5/s; then
    it comes back. Every message reaches it, none is dead-lettered, and the healthy endpoint is unaffected."""
    outage = Outage(ScriptedEndpoint("outage", answer(204)))
    outage.ep.script = outage.script
    outage.ep.port = free_port()
    await outage.ep.start()
    # the schedule's total (~105 s with jitter) outlasts the 60 s outage; real deployments use hours
    delays = [0, 1, 2, 4, 8, 15, 15, 15, 15, 15, 15]
    try:
        p = await pipeline(carriers=1, webhooks={"retry_delays_s": delays, "deferred_delay_s": 1.0})
        await put_subscriptions(p, [outage.ep.subscription(timeout_seconds=2.0)])
        p.start()
        await p.smsc.wait_bound(60)
        mix = TrafficMix(seed=31, multipart_ratio=0.1)
        await feed(p, mix, 3, rate=15)  # warm-up: the worker may still be starting
        assert await p.smsc.drain(60), p.logs()
        await p.wait_delivered(p.smsc.stats.logical_accepted, 60)
        warm = len(p.receiver.log.latencies_ms)
        rate = 5.0
        t0 = time.monotonic()
        feeding = asyncio.ensure_future(
            feed(p, mix, int(rate * (10 + OUTAGE_503_S + OUTAGE_REFUSED_S + 10)), rate)
        )
        await asyncio.sleep(10)
        await outage.set("503")
        await asyncio.sleep(OUTAGE_503_S)
        await outage.set("down")
        await asyncio.sleep(OUTAGE_REFUSED_S)
        await outage.set("up")
        back = time.monotonic()
        await feeding
        assert await p.smsc.drain(60), p.logs()
        total = p.smsc.stats.logical_accepted
        await p.wait_delivered(total, 60)
        mids = set(p.receiver.log.messages)
        await wait_until(lambda: mids <= outage.ep.delivered(), 90, "outage endpoint caught up", p.logs)
        caught_up = time.monotonic()
        await asyncio.sleep(1)
        dlq = json_records(p.stack.bootstrap, WEBHOOK_DLQ_TOPIC)
        events = delivery_events(p.stack.bootstrap, p.stack.registry_url)
    finally:
        await outage.ep.stop()

    assert len(mids) == total, "every stored SMS reached the healthy endpoint"
    assert outage.ep.delivered() == mids, "and the endpoint that was down, once it was back"
    assert dlq == [], "nothing dead-lettered"
    hist = histories(events)
    assert {story(hist[(m, "sub-outage")])[-1] for m in mids} == {"delivered"}
    attempts = [
        e for e in events if e["subscription_id"] == "sub-outage" and e["state"] in ("sent", "failed")
    ]
    failed_503 = sum(1 for e in attempts if e["status_code"] == 503)
    refused = sum(1 for e in attempts if e["failure"] == "connection")
    assert failed_503 > 0 and refused > 0, "both kinds of outage were seen"
    during = p.receiver.log.latencies_ms[warm:]  # every healthy delivery, the outage included
    print(
        f"\noutage: {total} messages over {back - t0:.0f}s, "
        f"endpoint down {OUTAGE_503_S + OUTAGE_REFUSED_S:.0f}s "
        f"(503 then refused); caught up {caught_up - back:.1f}s after it came back; attempts answered 503: "
        f"{failed_503}, refused: {refused}; healthy latency p50={statistics.median(during):.1f} ms "
        f"p99={pct(during, 0.99):.1f} ms max={max(during):.1f} ms"
    )
    assert max(during) < 1000
