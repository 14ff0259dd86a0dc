"""The sender against real local HTTP servers that misbehave in scripted ways."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import orjson
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from smsflow.delivery.egress import AddressPolicy
from smsflow.delivery.engine import DeliveryEngine
from smsflow.delivery.events import DeliveryState, FailureKind
from smsflow.delivery.policy import Action, CircuitConfig, EndpointCircuit, RetryPolicy, RetrySchedule
from smsflow.delivery.sender import SenderConfig, WebhookSender
from smsflow.delivery.signing import generate_secret
from smsflow.subscriptions.model import BatchConfig, SigningSecret, Subscription
from smsflow.subscriptions.store import InMemorySubscriptionStore

LOCAL = AddressPolicy(allow=("127.0.0.1/32",))
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Endpoint:
    """A receiver on 127.0.0.1 that records what it got and answers as the test scripts."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler = handler
        self.requests: list[tuple[dict[str, str], bytes, str]] = []
        self.active = 0
        self.max_active = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((dict(request.headers), body, request.path))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.handler is None:
                return web.json_response({"ok": True})
            return await self.handler(request)
        finally:
            self.active -= 1

    async def start(self, ssl_context=None) -> "Endpoint":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}/hook"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def endpoints():
    started: list[Endpoint] = []

    async def make(handler: Handler | None = None, **kw) -> Endpoint:
        ep = await Endpoint(handler).start(**kw)
        started.append(ep)
        return ep

    yield make
    for ep in started:
        await ep.stop()


@pytest.fixture
async def sender():
    async with WebhookSender(SenderConfig(address_policy=LOCAL, aimd_cooldown_s=0)) as s:
        yield s


def msg(i: int = 1, **over):
    m = {
        "message_id": f"msg_{i:04d}",
        "from_number": "+4915112345678",
        "to_number": "+8613800138000",
        "body": "您的验证码是 123456",
        "encoding": "ucs2",
        "country_code": "CN",
        "otp": "123456",
        "route_id": "r1",
        "carrier_id": "c1",
        "received_at": "2026-01-01T00:00:00Z",
    }
    m.update(over)
    return m


def sub_for(ep: Endpoint, **over) -> Subscription:
    over.setdefault("timeout_seconds", 2)
    return Subscription(owner="acme", url=ep.url, **over)


async def test_success_posts_signed_json_with_trace_headers(endpoints, sender):
    ep = await endpoints()
    new, old = generate_secret(), generate_secret()
    sub = sub_for(ep, secrets=[SigningSecret.new(new), SigningSecret.new(old)])
    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "x=1"}
    result = await sender.deliver(sub, [msg()], attempt=1, trace_headers=trace)
    assert result.ok and result.status_code == 200 and result.failure is None
    assert result.response_body == '{"ok": true}' and result.duration_ms > 0
    (headers, body, path) = ep.requests[0]
    assert path == "/hook"
    assert orjson.loads(body) == msg()
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "smsflow/0.1"
    assert headers["webhook-id"] == "msg_0001" == result.webhook_id
    assert headers["traceparent"] == trace["traceparent"] and headers["tracestate"] == "x=1"
    for secret in (new, old):  # both secrets of a rotation verify
        assert Webhook(secret).verify(body, headers) == msg()


async def test_retry_keeps_the_webhook_id(endpoints, sender):
    ep = await endpoints()
    sub = sub_for(ep)
    await sender.deliver(sub, [msg()], 1)
    await sender.deliver(sub, [msg()], 2)
    assert ep.requests[0][0]["webhook-id"] == ep.requests[1][0]["webhook-id"] == "msg_0001"


async def test_server_error_is_a_retryable_failure_with_body_kept(endpoints, sender):
    async def boom(request):
        return web.Response(status=500, text="database down")

    ep = await endpoints(boom)
    engine = DeliveryEngine(sender, policy=RetryPolicy(RetrySchedule(jitter=0)))
    first = datetime.now(UTC)
    out = await engine.attempt(sub_for(ep), [msg()], 1, first)
    assert out.result.status_code == 500 and out.result.failure is FailureKind.HTTP_STATUS
    assert out.result.response_body == "database down"
    assert out.decision.action is Action.RETRY and out.decision.delay_s == 5
    [event] = out.events
    assert event.state is DeliveryState.RETRY_SCHEDULED and event.status_code == 500
    assert event.next_attempt_at is not None and event.message_id == "msg_0001"


async def test_timeout_is_reported_promptly(endpoints, sender):
    async def hang(request):
        await asyncio.sleep(30)
        return web.Response()

    ep = await endpoints(hang)
    t0 = time.monotonic()
    result = await sender.deliver(sub_for(ep, timeout_seconds=0.3), [msg()], 1)
    assert time.monotonic() - t0 < 2
    assert result.failure is FailureKind.TIMEOUT and result.status_code is None
    assert "0.3s" in result.error


async def test_429_with_retry_after_delays_retry_and_throttles_endpoint(endpoints, sender):
    async def busy(request):
        return web.Response(status=429, headers={"Retry-After": "42"})

    ep = await endpoints(busy)
    sub = sub_for(ep, max_in_flight=8)
    engine = DeliveryEngine(sender, policy=RetryPolicy(RetrySchedule(jitter=0)))
    out = await engine.attempt(sub, [msg()], 1, datetime.now(UTC))
    assert out.result.retry_after == "42"
    assert out.decision.action is Action.RETRY and out.decision.delay_s == 42 and out.decision.throttle
    assert sender.gate(sub).capacity == 4  # AIMD halved this endpoint's concurrency


async def test_410_disables_endpoint_and_stops(endpoints, sender):
    async def gone(request):
        return web.Response(status=410)

    ep = await endpoints(gone)
    sub = sub_for(ep)
    store = InMemorySubscriptionStore([sub])
    engine = DeliveryEngine(sender, store=store)
    out = await engine.attempt(sub, [msg()], 1, datetime.now(UTC))
    assert out.decision.action is Action.DEAD_LETTER and out.decision.next_attempt is None
    assert [e.state for e in out.events] == [DeliveryState.DEAD_LETTERED, DeliveryState.ENDPOINT_DISABLED]
    stored = await store.get(sub.id)
    assert not stored.enabled and "410" in stored.disabled_reason
    # while disabled nothing is sent
    out2 = await engine.attempt(stored, [msg(2)], 1, datetime.now(UTC))
    assert out2.result is None and out2.events[0].state is DeliveryState.FAILED
    assert len(ep.requests) == 1


async def test_circuit_trips_and_disables_after_sustained_failure(endpoints, sender):
    async def boom(request):
        return web.Response(status=500)

    ep = await endpoints(boom)
    sub = sub_for(ep)
    store = InMemorySubscriptionStore([sub])
    circuit = EndpointCircuit(CircuitConfig(failing_for_s=None, max_consecutive_dead_letters=2))
    engine = DeliveryEngine(
        sender, policy=RetryPolicy(RetrySchedule(delays_s=(0,))), circuit=circuit, store=store
    )
    first = await engine.attempt(sub, [msg(1)], 1, datetime.now(UTC))
    assert first.disabled_reason is None and first.decision.action is Action.DEAD_LETTER
    second = await engine.attempt(sub, [msg(2)], 1, datetime.now(UTC))
    assert second.disabled_reason == "2 messages in a row were dead-lettered"
    assert second.events[-1].state is DeliveryState.ENDPOINT_DISABLED
    disabled = await store.get(sub.id)
    assert not disabled.enabled and disabled.disabled_reason == second.disabled_reason
    # an operator re-enables it: the failing streak starts afresh
    await store.put(disabled.model_copy(update={"enabled": True, "disabled_reason": None}))
    assert circuit.snapshot(sub.id) is None


async def test_redirect_is_not_followed(endpoints, sender):
    async def redirect(request):
        if request.path == "/elsewhere":
            return web.Response(text="should not be reached")
        raise web.HTTPFound("/elsewhere")

    ep = await endpoints(redirect)
    result = await sender.deliver(sub_for(ep), [msg()], 1)
    assert result.failure is FailureKind.REDIRECT and result.status_code == 302
    assert "/elsewhere" in result.error and "not followed" in result.error
    assert [r[2] for r in ep.requests] == ["/hook"]


async def test_response_body_is_capped(endpoints):
    async def huge(request):
        return web.Response(status=400, body=b"x" * 200_000)

    ep = await endpoints(huge)
    async with WebhookSender(SenderConfig(address_policy=LOCAL, max_response_body_bytes=1024)) as s:
        result = await s.deliver(sub_for(ep), [msg()], 1)
    assert result.status_code == 400 and len(result.response_body) == 1024 and result.response_truncated


async def test_connection_refused_is_retryable(endpoints, sender):
    ep = await endpoints()
    await ep.stop()
    result = await sender.deliver(sub_for(ep), [msg()], 1)
    assert result.failure is FailureKind.CONNECTION and "could not connect" in result.error


async def test_https_only_refuses_plain_http_without_sending(endpoints, sender):
    ep = await endpoints()
    result = await sender.deliver(sub_for(ep, https_only=True), [msg()], 1)
    assert result.failure is FailureKind.HTTPS_REQUIRED and not ep.requests
    d = RetryPolicy().decide(result, datetime.now(UTC))
    assert d.action is Action.DEAD_LETTER


async def test_batch_is_an_array_with_a_stable_batch_id(endpoints, sender):
    ep = await endpoints()
    secret = generate_secret()
    sub = sub_for(
        ep, batch=BatchConfig(max_batch_size=10, max_wait_ms=50), secrets=[SigningSecret.new(secret)]
    )
    batch = [msg(1), msg(2), msg(3)]
    r1 = await sender.deliver(sub, batch, 1)
    r2 = await sender.deliver(sub, batch, 2)
    headers, body, _ = ep.requests[0]
    assert orjson.loads(body) == batch
    assert Webhook(secret).verify(body, headers) == batch
    assert r1.webhook_id.startswith("batch_") and r1.webhook_id == r2.webhook_id == headers["webhook-id"]
    assert r1.message_ids == ["msg_0001", "msg_0002", "msg_0003"]
    single = await sender.deliver(sub, [msg(1)], 1)
    assert orjson.loads(ep.requests[-1][1]) == [msg(1)] and single.webhook_id.startswith("batch_")


async def test_per_endpoint_concurrency_limit(endpoints, sender):
    async def slow(request):
        await asyncio.sleep(0.05)
        return web.Response()

    ep = await endpoints(slow)
    sub = sub_for(ep, max_in_flight=3)
    results = await asyncio.gather(*(sender.deliver(sub, [msg(i)], 1) for i in range(12)))
    assert all(r.ok for r in results)
    assert ep.max_active == 3


async def test_rate_limit_spaces_requests(endpoints, sender):
    ep = await endpoints()
    sub = sub_for(ep, rate_limit_per_second=20)
    t0 = time.monotonic()
    results = await asyncio.gather(*(sender.deliver(sub, [msg(i)], 1) for i in range(30)))
    elapsed = time.monotonic() - t0
    assert all(r.ok for r in results)
    assert elapsed >= 0.4  # 20 at once (burst), then 10 more at 20/s


async def test_dead_endpoint_does_not_delay_a_healthy_one(endpoints, sender):
    async def hang(request):
        await asyncio.sleep(30)
        return web.Response()

    dead = await endpoints(hang)
    healthy = await endpoints()
    sub_a = sub_for(dead, max_in_flight=2, timeout_seconds=1.5)
    sub_b = sub_for(healthy, max_in_flight=2)
    finished: dict[str, float] = {}
    t0 = time.monotonic()

    async def send(sub, i):
        r = await sender.deliver(sub, [msg(i)], 1)
        finished[f"{sub.id}:{i}"] = time.monotonic() - t0
        return r

    a = [asyncio.create_task(send(sub_a, i)) for i in range(6)]
    await asyncio.sleep(0.05)  # A's slots are now full and its queue is long
    b = await asyncio.gather(*(send(sub_b, 100 + i) for i in range(6)))
    b_done = time.monotonic() - t0
    a_requests_meanwhile = len(dead.requests)
    assert all(r.ok for r in b)
    assert b_done < 1.0  # well before A's first timeout (1.5 s)
    assert a_requests_meanwhile == 2  # A never got more than its own two slots
    a_results = await asyncio.gather(*a)
    assert {r.failure for r in a_results} <= {FailureKind.TIMEOUT, FailureKind.DEFERRED}


async def test_full_endpoint_defers_instead_of_waiting_forever(endpoints):
    async def hang(request):
        await asyncio.sleep(30)
        return web.Response()

    ep = await endpoints(hang)
    sub = sub_for(ep, max_in_flight=1, timeout_seconds=1)
    async with WebhookSender(SenderConfig(address_policy=LOCAL, max_queue_wait_s=0.1)) as s:
        first = asyncio.create_task(s.deliver(sub, [msg(1)], 1))
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        second = await s.deliver(sub, [msg(2)], 1)
        assert time.monotonic() - t0 < 1.0
        assert second.failure is FailureKind.DEFERRED and "not sent" in second.error
        assert not second.request_sent
        d = RetryPolicy().decide(second, datetime.now(UTC))
        assert d.action is Action.RETRY and d.next_attempt == 1  # not counted as an attempt
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert s.gate(sub).in_flight == 0  # the cancelled request gave its slot back
