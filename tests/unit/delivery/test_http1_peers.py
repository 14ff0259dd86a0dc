"""The webhook client against HTTP servers nobody here wrote: Node's ``http`` (llhttp, and a keep-alive
timer that closes idle connections: 5 s by default, advertised as ``Keep-Alive: timeout=5``) and Python's
``http.server`` (HTTP/1.0 answers whose body ends with the connection). What arrives is checked with the
``standardwebhooks`` verifier."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from smsflow.delivery.sender import SenderConfig, WebhookSender
from smsflow.subscriptions.model import SigningSecret, Subscription

NODE_RECEIVER = Path(__file__).parents[2] / "peers" / "node_webhook_receiver.js"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # base64 of 24 bytes
MSG = {"message_id": "msg_peer", "text": "您的验证码是 482913"}


class NodeReceiver:
    def __init__(self, keepalive_ms: int) -> None:
        node = shutil.which("node")
        if node is None:  # the machine's kind installs Node (the npm smpp peer needs it too)
            raise RuntimeError("node is not installed")
        self.proc = subprocess.Popen(
            [node, str(NODE_RECEIVER), str(keepalive_ms)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().split()
        assert first[0] == "port", first
        self.url = f"http://127.0.0.1:{first[1]}/hooks/sms?tenant=a"

    def requests(self, n: int) -> list[dict]:
        assert self.proc.stdout is not None
        return [json.loads(self.proc.stdout.readline()) for _ in range(n)]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def node_receiver() -> Iterator[NodeReceiver]:
    r = NodeReceiver(keepalive_ms=2000)  # says "Keep-Alive: timeout=2", closes after ~3 s idle (+1 s buffer)
    yield r
    r.stop()


def _sub(url: str) -> Subscription:
    return Subscription(owner="acme", url=url, secrets=[SigningSecret.new(SECRET)], timeout_seconds=5)


async def test_node_receives_signed_posts_across_its_keep_alive_timeout(node_receiver) -> None:
    """Connections are reused while idle less than Node's advertised timeout less a second, replaced after
    that, and replaced when Node has closed them: no POST fails."""
    sub = _sub(node_receiver.url)
    gaps = [0.0, 0.2, 0.5, 1.3, 0.1, 3.3, 0.0]  # new connections: the first, after 1.3 s, after 3.3 s
    async with WebhookSender(SenderConfig(address_policy=None)) as sender:
        for i, gap in enumerate(gaps):
            await asyncio.sleep(gap)
            result = await sender.deliver(sub, [{**MSG, "message_id": f"msg_{i}"}], 1)
            assert result.ok, (gap, result.error)
        client = sender._client
        assert client is not None and client.connections_made == 3
    received = node_receiver.requests(len(gaps))
    wh = Webhook(SECRET)
    for i, req in enumerate(received):
        assert req["method"] == "POST" and req["url"] == "/hooks/sms?tenant=a"
        assert req["headers"]["content-type"] == "application/json"
        assert req["headers"]["host"] == node_receiver.url.split("/")[2]
        payload = wh.verify(req["body"], req["headers"])  # raises on a bad signature
        assert payload["message_id"] == f"msg_{i}" and payload["text"] == MSG["text"]


class _Http10(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(202)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()  # HTTP/1.0, no Content-Length: the body ends when the connection closes
        self.wfile.write("已收到".encode())

    def log_message(self, *args: object) -> None:
        pass


async def test_python_http_server_http10_answers_end_with_the_connection() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Http10)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sub = _sub(f"http://127.0.0.1:{server.server_address[1]}/hook")
        async with WebhookSender(SenderConfig(address_policy=None)) as sender:
            for n in range(3):
                result = await sender.deliver(sub, [{**MSG, "message_id": f"msg_{n}"}], 1)
                assert result.ok and result.status_code == 202, result.error
                assert result.response_body == "已收到" and result.error is None
    finally:
        server.shutdown()
        server.server_close()
