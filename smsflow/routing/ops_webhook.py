"""The optional ops webhook (``routing.ops_webhook``): each "both degraded" alert raised or cleared (the event
the stage also writes to sms.ops.events.v1) POSTed to an operator's endpoint, signed with Standard Webhooks
headers like customer webhooks, retried on failure.

The stage hands an alert over and goes on (``enqueue`` never waits on the network); one task sends them in
order. ``webhook-id`` is ``ops_<decision id>``: the same on every retry and on a replay of the same decision,
so a receiver drops repeats. A 2xx is delivered; anything else (an error status, a timeout, a refused
connection) is retried after the next of ``retry_delays_s``; after the last the alert is logged and dropped
(it is still on the ops topic and in the gauge).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from smsflow.config import ConfigError
from smsflow.delivery.signing import webhook_headers
from smsflow.routing.model import OpsWebhook, RoutingSection

log = logging.getLogger(__name__)


class OpsWebhookSender:
    def __init__(
        self,
        cfg: OpsWebhook,
        secret: str,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.cfg = cfg
        self.secret = secret
        self.sleep = sleep
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.dropped = 0

    def enqueue(self, alert: dict[str, Any]) -> None:
        self.queue.put_nowait(alert)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while not self.queue.empty():
                alert = self.queue.get_nowait()
                await self._send(http, alert)

    async def _send(self, http: aiohttp.ClientSession, alert: dict[str, Any]) -> None:
        body = orjson.dumps(alert)
        msg_id = f"ops_{alert.get('decision_id', '')}"
        delays = (*self.cfg.retry_delays_s, None)
        for attempt, delay in enumerate(delays, start=1):
            headers = {"content-type": "application/json", **webhook_headers([self.secret], msg_id, body)}
            try:
                async with http.post(self.cfg.url, data=body, headers=headers) as resp:
                    if 200 <= resp.status < 300:
                        self.delivered += 1
                        return
                    why = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            if delay is None:
                break
            log.warning("ops webhook: %s attempt %d failed (%s); retry in %g s", msg_id, attempt, why, delay)
            await self.sleep(delay)
        self.dropped += 1
        log.error("ops webhook: %s not delivered after %d attempts; dropped", msg_id, len(delays))

    async def drained(self) -> None:
        """Until every alert handed over so far is delivered or dropped."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def ops_webhook_sender(section: RoutingSection) -> OpsWebhookSender | None:
    """The sender for ``routing.ops_webhook``, if configured; its secret must be in the environment."""
    cfg = section.ops_webhook
    if cfg is None:
        return None
    secret = os.environ.get(cfg.secret_env)
    if not secret:
        raise ConfigError(f"routing.ops_webhook.secret_env: environment variable {cfg.secret_env} is not set")
    return OpsWebhookSender(cfg, secret)
