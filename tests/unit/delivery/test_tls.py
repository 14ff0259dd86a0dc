"""TLS verification against a local HTTPS receiver whose CA is made for this test run."""

import pytest
from aiohttp import web

from smsflow.delivery.egress import AddressPolicy
from smsflow.delivery.events import FailureKind
from smsflow.delivery.policy import Verdict, classify
from smsflow.delivery.sender import SenderConfig, WebhookSender
from smsflow.subscriptions.model import Subscription
from tests.tls_certs import make_ca, server_context

LOCAL = AddressPolicy(allow=("127.0.0.1/32",))


@pytest.fixture
async def https_endpoint(tmp_path):
    ca, ca_key, ca_path = make_ca(tmp_path, "trusted")
    _, _, other_ca_path = make_ca(tmp_path, "other")
    hits: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(tmp_path, "server", ca, ca_key))
    await site.start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}/hook"
    yield url, ca_path, other_ca_path, hits
    await runner.cleanup()


MSG = {"message_id": "msg_tls", "body": "hi"}


async def test_trusted_custom_ca_delivers(https_endpoint):
    url, ca_path, _, hits = https_endpoint
    async with WebhookSender(SenderConfig(address_policy=LOCAL, ca_bundle=str(ca_path))) as sender:
        result = await sender.deliver(Subscription(owner="a", url=url, timeout_seconds=3), [MSG], 1)
    assert result.ok, result.error
    assert len(hits) == 1


@pytest.mark.parametrize("trust", ["system", "other-ca"])
async def test_untrusted_certificate_is_a_retryable_tls_failure(https_endpoint, trust):
    url, _, other_ca_path, hits = https_endpoint
    config = SenderConfig(address_policy=LOCAL, ca_bundle=str(other_ca_path) if trust == "other-ca" else None)
    async with WebhookSender(config) as sender:
        result = await sender.deliver(Subscription(owner="a", url=url, timeout_seconds=3), [MSG], 1)
    assert result.failure is FailureKind.TLS
    assert "TLS certificate verification failed for 127.0.0.1" in result.error
    assert "unable to get local issuer certificate" in result.error
    assert classify(result).verdict is Verdict.RETRY
    assert hits == []  # nothing was sent to an unverified peer
