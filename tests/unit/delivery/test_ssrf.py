"""The egress guard. Every request here targets 127.0.0.1; other addresses are only ever *checked*."""

import socket

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from smsflow.delivery.egress import AddressPolicy, BlockedAddress, GuardedResolver, guarded_socket_factory
from smsflow.delivery.events import FailureKind
from smsflow.delivery.sender import SenderConfig, WebhookSender
from smsflow.subscriptions.model import Subscription

MSG = {"message_id": "msg_ssrf", "body": "hi"}


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "not globally routable"),  # carrier-grade NAT
        ("240.0.0.1", "private"),
        ("fc00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_policy_classifies_addresses(address, reason):
    assert AddressPolicy().blocked_reason(address) == reason


def test_allow_and_deny_lists():
    policy = AddressPolicy(allow=("127.0.0.0/8",), deny=("8.8.8.0/24",))
    assert policy.blocked_reason("127.0.0.5") is None
    assert policy.blocked_reason("8.8.8.8") == "denied network"
    assert policy.blocked_reason("10.0.0.1") == "private"


class FakeResolver(AbstractResolver):
    def __init__(self, answers: list[str]) -> None:
        self.answers = answers

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [
            {"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
            for a in self.answers
        ]

    async def close(self):
        pass


async def test_resolver_refuses_an_answer_with_any_blocked_address():
    resolver = GuardedResolver(AddressPolicy(), FakeResolver(["93.184.216.34", "10.0.0.7"]))
    with pytest.raises(BlockedAddress, match=r"10\.0\.0\.7 is blocked.*private"):
        await resolver.resolve("rebind.example", 443)
    ok = GuardedResolver(AddressPolicy(), FakeResolver(["93.184.216.34"]))
    assert [r["host"] for r in await ok.resolve("public.example", 443)] == ["93.184.216.34"]


def test_socket_factory_checks_the_address_about_to_be_connected():
    factory = guarded_socket_factory(AddressPolicy())
    with pytest.raises(BlockedAddress, match=r"169\.254\.169\.254"):
        factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 80)))
    sock = factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443)))
    sock.close()  # created, never connected


@pytest.fixture
async def local_endpoint():
    hits: list[str] = []

    async def handle(request):
        hits.append(request.path)
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield runner.addresses[0][1], hits
    await runner.cleanup()


async def test_literal_loopback_url_is_blocked_at_connect(local_endpoint):
    port, hits = local_endpoint
    async with WebhookSender(SenderConfig()) as sender:
        result = await sender.deliver(Subscription(owner="a", url=f"http://127.0.0.1:{port}/hook"), [MSG], 1)
    assert result.failure is FailureKind.BLOCKED_ADDRESS and "loopback" in result.error
    assert hits == []


async def test_name_resolving_to_loopback_is_blocked(local_endpoint):
    port, hits = local_endpoint
    async with WebhookSender(SenderConfig(), resolver=FakeResolver(["127.0.0.1"])) as sender:
        result = await sender.deliver(
            Subscription(owner="a", url=f"http://customer.example:{port}/hook"), [MSG], 1
        )
    assert result.failure is FailureKind.BLOCKED_ADDRESS
    assert "customer.example -> 127.0.0.1 is blocked" in result.error
    assert hits == []


async def test_guard_off_or_allow_listed_reaches_local_demo_receiver(local_endpoint):
    port, hits = local_endpoint
    sub = Subscription(owner="a", url=f"http://demo.local:{port}/hook")
    for config in (
        SenderConfig(address_policy=None),
        SenderConfig(address_policy=AddressPolicy(allow=("127.0.0.1/32",))),
    ):
        async with WebhookSender(config, resolver=FakeResolver(["127.0.0.1"])) as sender:
            assert (await sender.deliver(sub, [MSG], 1)).ok
    assert hits == ["/hook", "/hook"]
