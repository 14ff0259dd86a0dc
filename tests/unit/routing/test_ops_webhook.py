"""The optional ops webhook for "both degraded" alerts (issue 11): signed like customer webhooks, retried with
the same webhook-id until a 2xx, dropped after the last retry; its config names the field when wrong."""

from __future__ import annotations

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from smsflow.config import ConfigError
from smsflow.delivery.signing import generate_secret, verify
from smsflow.routing.model import OpsWebhook, PolicyError, parse_policies
from smsflow.routing.ops_webhook import OpsWebhookSender, ops_webhook_sender

ALERT = {
    "type": "routes_both_degraded",
    "scope": "prefix:+8526",
    "decision_id": "prefix:+8526#4",
    "active": "primary",
    "primary_state": "degraded",
    "secondary_state": "degraded",
    "reason": "both lists degraded: manual intervention needed",
    "ts": 1_796_090_435_000,
}


async def send(
    answers: list[int], delays: tuple[float, ...], secret: str
) -> tuple[list[tuple[dict[str, str], bytes]], list[float], OpsWebhookSender]:
    """One alert through a sender to a receiver that answers ``answers`` in turn (then the last, forever)."""
    seen: list[tuple[dict[str, str], bytes]] = []
    waits: list[float] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append((dict(request.headers), await request.read()))
        return web.Response(status=answers[min(len(seen), len(answers)) - 1])

    async def no_wait(s: float) -> None:
        waits.append(s)

    app = web.Application()
    app.router.add_post("/ops", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    cfg = OpsWebhook(url=str(server.make_url("/ops")), secret_env="X", retry_delays_s=delays)
    sender = OpsWebhookSender(cfg, secret, no_wait)
    try:
        sender.enqueue(ALERT)
        await sender.drained()
    finally:
        await server.close()
    return seen, waits, sender


async def test_an_alert_is_signed_and_retried_with_the_same_id_until_a_2xx() -> None:
    secret = generate_secret()
    seen, waits, sender = await send([503, 500, 204], (1, 5, 30), secret)
    assert len(seen) == 3 and waits == [1, 5] and sender.delivered == 1
    ids = {headers["webhook-id"] for headers, _ in seen}
    assert ids == {"ops_prefix:+8526#4"}  # one id across retries: the receiver can drop repeats
    for headers, body in seen:
        verify(secret, headers, body)  # raises if the signature does not match
        assert orjson.loads(body) == ALERT


async def test_an_alert_is_dropped_after_the_last_retry() -> None:
    seen, waits, sender = await send([503], (0.1,), generate_secret())
    assert len(seen) == 2 and waits == [0.1] and sender.dropped == 1 and sender.delivered == 0


def test_the_config_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PolicyError, match=r"routing.ops_webhook.url"):
        parse_policies({"ops_webhook": {"url": "ftp://x", "secret_env": "OPS_SECRET"}})
    section = parse_policies(
        {"ops_webhook": {"url": "https://ops.example.com/h", "secret_env": "OPS_SECRET"}}
    )
    monkeypatch.delenv("OPS_SECRET", raising=False)
    with pytest.raises(
        ConfigError, match=r"^routing.ops_webhook.secret_env: environment variable OPS_SECRET"
    ):
        ops_webhook_sender(section)
    monkeypatch.setenv("OPS_SECRET", generate_secret())
    assert isinstance(ops_webhook_sender(section), OpsWebhookSender)
    assert ops_webhook_sender(parse_policies({})) is None
