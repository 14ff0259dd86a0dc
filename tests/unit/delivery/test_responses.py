"""Whatever a customer endpoint answers is a delivery outcome, never an exception (issue 9 §2).

A hostile or broken endpoint (a bogus charset, ``Retry-After: ²``, an HTTP date that overflows, undecodable
header bytes, huge headers, a broken body) used to raise out of the sender or the policy, or produce an event
that could not be serialised: the inbound event then stayed unacked, pinning its partition's commits. Each
case here is sent as raw bytes by a real local socket server and goes through the real sender, policy and
engine; the fuzz test drives the response boundary with arbitrary header values.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smsflow.delivery.engine import DeliveryEngine
from smsflow.delivery.events import AttemptResult, DeliveryEvent, DeliveryState, FailureKind
from smsflow.delivery.policy import Action, RetryPolicy, parse_retry_after
from smsflow.delivery.sender import SenderConfig, WebhookSender, interpret_response
from smsflow.subscriptions.model import Subscription

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MSG = {"message_id": "msg_1", "from_number": "+4915112345678", "to_number": "+8613800138000"}


def http(status_line: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    lines = [status_line, *headers, b"Content-Length: %d" % len(body), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@pytest.fixture
async def raw_endpoint() -> AsyncIterator[Callable[[bytes], Any]]:
    """A server on 127.0.0.1 that answers every request with exactly the given bytes."""
    servers: list[asyncio.AbstractServer] = []

    async def make(response: bytes) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                writer.write(response)
                await writer.drain()
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"

    yield make
    for server in servers:
        server.close()


async def attempt(url: str) -> Any:
    async with WebhookSender(SenderConfig(address_policy=None)) as sender:
        engine = DeliveryEngine(sender, policy=RetryPolicy())
        sub = Subscription(owner="acme", url=url, timeout_seconds=5)
        return await engine.attempt(sub, [MSG], 1, datetime.now(UTC))


HOSTILE = {
    "bogus charset": (
        http(b"HTTP/1.1 500 Oops", b"Content-Type: text/plain; charset=x-bogus", body=b"broken"),
        "charset 'x-bogus' unusable",
    ),
    "bytes-to-bytes charset": (
        http(b"HTTP/1.1 502 Oops", b"Content-Type: text/plain; charset=base64", body=b"aGk="),
        "charset 'base64' unusable",
    ),
    "superscript digit Retry-After": (
        http(b"HTTP/1.1 503 Busy", "Retry-After: ²".encode()),
        "Retry-After '²' ignored",
    ),
    "overflowing HTTP date": (
        http(b"HTTP/1.1 429 Slow down", b"Retry-After: Mon, 01 Jan 99999999999999999999 00:00:00 GMT"),
        "ignored: not seconds or an HTTP date",
    ),
    "overflowing zone": (
        http(b"HTTP/1.1 503 Busy", b"Retry-After: Mon, 01 Jan 2026 00:00:00 +99999999999999999"),
        "ignored: not seconds or an HTTP date",
    ),
    "undecodable Location": (
        http(b"HTTP/1.1 302 Found", b"Location: https://elsewhere.example/\xff\xfe"),
        "redirect to https://elsewhere.example/\\udcff\\udcfe not followed",
    ),
    "undecodable Retry-After": (
        http(b"HTTP/1.1 503 Busy", b"Retry-After: \xb2\xff"),
        "ignored",
    ),
    "huge header": (
        http(b"HTTP/1.1 500 Oops", b"X-Padding: " + b"a" * 200_000),
        "response header section over 65536 bytes",
    ),
    "undecodable body": (
        http(b"HTTP/1.1 500 Oops", b"Content-Type: text/plain; charset=utf-16", body=b"\xff\xfeA"),
        "HTTP 500",
    ),
    "body shorter than announced": (
        b"HTTP/1.1 500 Oops\r\nContent-Length: 100\r\nConnection: close\r\n\r\nshort",
        "response body unread",
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_responses_are_failed_attempts_with_a_reason(raw_endpoint, name: str) -> None:
    response, reason = HOSTILE[name]
    outcome = await attempt(await raw_endpoint(response))
    assert outcome.decision.action is Action.RETRY, outcome.decision
    assert outcome.decision.next_attempt == 2
    result = outcome.result
    assert result is not None and not result.ok
    texts = " | ".join(filter(None, [result.error, outcome.decision.reason]))
    assert reason in texts, texts
    # every event publishes: valid UTF-8 only (orjson, like Avro, refuses lone surrogates)
    for ev in outcome.all_events:
        DeliveryEvent.from_json(ev.to_json())


async def test_a_2xx_with_a_bogus_charset_is_delivered_with_a_note(raw_endpoint) -> None:
    """The endpoint accepted the message: retrying would only send it a duplicate. The body is for the
    delivery log, shown as UTF-8, and the note says why."""
    response = http(b"HTTP/1.1 200 OK", b"Content-Type: text/plain; charset=x-bogus", body=b"ok \xff")
    outcome = await attempt(await raw_endpoint(response))
    assert outcome.decision.action is Action.DONE and outcome.result is not None
    assert outcome.result.response_body == "ok \ufffd"
    assert "charset 'x-bogus' unusable" in (outcome.result.error or "")
    assert [e.state for e in outcome.all_events] == [DeliveryState.DELIVERED]


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("Thu, 01 Jan 2026 00:01:00 GMT", 60.0),
        ("Wed, 31 Dec 2025 00:00:00 GMT", 0.0),  # in the past: now
        ("9" * 400, float("inf")),  # capped by the policy
        ("²", None),
        ("١٢٠", None),  # Arabic-Indic digits: isdigit() but not HTTP
        ("Mon, 01 Jan 99999999999999999999 00:00:00 GMT", None),
        ("Mon, 01 Jan 2026 00:00:00 +99999999999999999", None),
        ("Mon, 01 Jan 10000 00:00:00 GMT", None),
        ("Mon, 01 Jan 2026 00:00:00", None),  # no zone
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after_is_total(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_interpretation_failure_is_an_invalid_response_not_a_raise() -> None:
    class Exploding(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            raise RuntimeError("header table corrupt")

    fields = interpret_response(500, Exploding(), b"", False)
    assert fields["failure"] is FailureKind.INVALID_RESPONSE and fields["status_code"] == 500
    assert "RuntimeError: header table corrupt" in fields["error"]


# Header values as aiohttp hands them over: any text, and any bytes decoded with surrogateescape.
header_value = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.from_regex(
        r"\A[A-Za-z]{3}, \d{1,30} [A-Za-z]{3} \d{1,30} \d{1,3}:\d{1,3}:\d{1,3} [A-Z+\-0-9]{1,20}\Z"
    ),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
)


@settings(max_examples=400, deadline=None)
@given(
    status=st.integers(min_value=0, max_value=1200),
    retry_after=st.none() | header_value,
    content_type=st.none() | header_value | st.from_regex(r"\Atext/plain; ?charset=[\w\-.:]{0,40}\Z"),
    location=st.none() | header_value,
    body=st.binary(max_size=200),
    attempt_no=st.integers(min_value=1, max_value=9),
)
# found by a CI run: undecodable octets in Content-Type made a 2xx a failed attempt
@example(status=200, retry_after=None, content_type="\udc80\x80", location=None, body=b"\x00", attempt_no=1)
def test_any_response_headers_give_a_judged_publishable_outcome(
    status: int,
    retry_after: str | None,
    content_type: str | None,
    location: str | None,
    body: bytes,
    attempt_no: int,
) -> None:
    headers = {
        k: v
        for k, v in (("Retry-After", retry_after), ("Content-Type", content_type), ("Location", location))
        if v is not None
    }
    fields = interpret_response(status, headers, body, False)
    result = AttemptResult(
        subscription_id="sub_1",
        webhook_id="msg_1",
        message_ids=["msg_1"],
        attempt=attempt_no,
        url="https://x.example/h",
        started_at=NOW,
        duration_ms=1.0,
        **fields,
    )
    assert result.ok == (200 <= status < 300)
    decision = RetryPolicy().decide(result, NOW - timedelta(seconds=1), NOW)
    assert (decision.action is Action.DONE) == result.ok
    if decision.action is Action.RETRY:
        assert decision.next_attempt_at is not None and decision.delay_s is not None
        assert decision.delay_s <= 3600 * 10 * 1.2 + 1  # a Retry-After never parks a message beyond the cap
    event = DeliveryEvent.from_attempt(result, decision.state, "msg_1", error=decision.reason)
    DeliveryEvent.from_json(event.to_json())
