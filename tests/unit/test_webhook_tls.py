"""TLS verification against a local HTTPS receiver whose CA is made for this test run."""

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import pytest
from aiohttp import web

from smsflow.webhooks.egress import AddressPolicy
from smsflow.webhooks.model import FailureKind, Subscription
from smsflow.webhooks.policy import Verdict, classify
from smsflow.webhooks.sender import SenderConfig, WebhookSender

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

LOCAL = AddressPolicy(allow=("127.0.0.1/32",))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _make_ca(tmp: Path, label: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"smsflow test CA {label}"))
        .issuer_name(_name(f"smsflow test CA {label}"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = tmp / f"ca-{label}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, path


def _server_context(tmp: Path, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "server.pem", tmp / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


@pytest.fixture
async def https_endpoint(tmp_path):
    ca, ca_key, ca_path = _make_ca(tmp_path, "trusted")
    _, _, other_ca_path = _make_ca(tmp_path, "other")
    hits: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=_server_context(tmp_path, ca, ca_key))
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
