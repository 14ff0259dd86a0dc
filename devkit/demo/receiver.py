"""A customer's webhook endpoint for the demo, tests and benchmarks.

It verifies every request with the Standard Webhooks reference verifier (the ``standardwebhooks`` package,
not our own code), answers 2xx, and keeps what a customer would: messages by webhook-id (so a redelivery
after a crash is counted as a duplicate delivery, not a second message) and end-to-end latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class ReceivedLog:
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    redeliveries: int = 0
    bad_signatures: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    arrivals: int = 0
    headers: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class PlainRequest:
    """One unsigned request from a gateway that does not sign (Kannel's get-url/post-url), kept raw so
    the caller decodes it by the charset the gateway declared."""

    method: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    arrived: float  # time.monotonic()


class WebhookReceiver:
    def __init__(self, secret: str, host: str = "127.0.0.1", port: int = 0, path: str = "/hook") -> None:
        self.verifier = Webhook(secret)
        self.host, self.port, self.path = host, port, path
        self.log = ReceivedLog()
        self.fail_next: int = 0  # answer 503 to this many requests (outage simulation)
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()
        # benchmarks: called with each new message and its arrival time (time.monotonic())
        self.on_message: Callable[[dict[str, Any], float], None] | None = None
        self.plain_path = "/plain"
        self.plain: list[PlainRequest] = []
        self.on_plain: Callable[[PlainRequest], None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    @property
    def plain_url(self) -> str:
        return f"http://{self.host}:{self.port}{self.plain_path}"

    async def handle_plain(self, request: web.Request) -> web.Response:
        body = await request.read()
        req = PlainRequest(
            request.method,
            {k: v for k, v in request.query.items()},
            {k.lower(): v for k, v in request.headers.items()},
            body,
            time.monotonic(),
        )
        self.plain.append(req)
        if self.on_plain is not None:
            self.on_plain(req)
        self._changed.set()
        return web.Response(status=200, text="")

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=503, text="scripted outage")
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            self.verifier.verify(body, headers)
        except WebhookVerificationError:
            self.log.bad_signatures += 1
            return web.Response(status=401, text="bad signature")
        now = time.time() * 1000
        arrived = time.monotonic()
        payload = orjson.loads(body)
        items = payload if isinstance(payload, list) else [payload]
        for msg in items:
            mid = msg["message_id"]
            self.log.arrivals += 1
            if mid in self.log.messages:
                self.log.redeliveries += 1
                continue
            self.log.messages[mid] = msg
            self.log.headers[mid] = {
                k: v for k, v in headers.items() if k.startswith(("webhook-", "traceparent"))
            }
            received = msg.get("received_at")
            if isinstance(received, int | float):
                self.log.latencies_ms.append(now - received)
            if self.on_message is not None:
                self.on_message(msg, arrived)
        self._changed.set()
        return web.Response(status=204)

    async def start(self) -> str:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post(self.path, self.handle)
        app.router.add_route("GET", self.plain_path, self.handle_plain)
        app.router.add_route("POST", self.plain_path, self.handle_plain)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.log.messages) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
            except TimeoutError:
                pass
        return True
