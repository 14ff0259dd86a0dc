"""The HTTP side of webhook delivery: one pool of kept-alive connections (``http1.Http1Client``), per-endpoint
admission, signed POSTs.

``deliver`` never raises for a delivery problem: every outcome, including "not sent", is an
:class:`AttemptResult` with a failure kind and a human reason, for the policy to judge. What an endpoint
answers is hostile input: :func:`interpret_response` is the one guarded boundary that turns status, headers
and body into result fields. It is total (any exception inside becomes an ``invalid_response`` failure,
which is retried), and every text it passes on is valid UTF-8 and length-capped, so the events built from it
always serialise.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp.abc import AbstractResolver
from prometheus_client import Counter, Gauge, Histogram

from smsflow.delivery.egress import AddressPolicy, GuardedResolver, blocked_address, guarded_socket_factory
from smsflow.delivery.events import AttemptResult, FailureKind
from smsflow.delivery.gate import EndpointGate
from smsflow.delivery.http1 import (
    ConnectError,
    Disconnected,
    Http1Client,
    HttpClientError,
    InvalidRequest,
    InvalidResponse,
    InvalidUrl,
    ResolveError,
    TlsCertificateError,
    TlsError,
)
from smsflow.delivery.policy import THROTTLE_STATUSES, AimdLimit, parse_retry_after
from smsflow.delivery.signing import webhook_headers
from smsflow.logsummary import SummarizedLog
from smsflow.subscriptions.model import Subscription, WebhookEndpoint, redact_url, utcnow

log = logging.getLogger(__name__)
_floods = SummarizedLog(log)  # per-record lines a flood would repeat (smsflow/logsummary.py)

USER_AGENT = "smsflow/0.1"
MAX_HEADER_TEXT = 256  # characters of a response header (Retry-After, Location) kept in results and events
MAX_ERROR_TEXT = 1024
TRACE_HEADERS = ("traceparent", "tracestate")

ATTEMPTS = Counter("smsflow_webhook_attempts_total", "Webhook POST attempts by outcome", ["outcome"])
ATTEMPT_SECONDS = Histogram(
    "smsflow_webhook_attempt_seconds",
    "Webhook POST duration",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge("smsflow_webhook_in_flight", "Webhook POSTs in flight")


@dataclass(frozen=True)
class SenderConfig:
    user_agent: str = USER_AGENT
    max_response_body_bytes: int = 64 * 1024
    ca_bundle: str | None = None  # PEM file; replaces the system trust store when set
    https_only: bool = False  # default for subscriptions whose https_only is None
    # None switches the SSRF guard off (local demo only).
    address_policy: AddressPolicy | None = AddressPolicy()  # noqa: RUF009 - frozen, safe to share
    # How long a message may wait for one of its endpoint's slots before it is reported DEFERRED;
    # None = the subscription's timeout_seconds.
    max_queue_wait_s: float | None = None
    pool_limit: int = 1000  # connections across all endpoints
    keepalive_timeout_s: float = 30.0
    aimd_decrease_factor: float = 0.5
    aimd_cooldown_s: float = 1.0


def webhook_id_for(sub: Subscription, messages: Sequence[Mapping[str, Any]]) -> str:
    """The ``webhook-id``: the message id (an outbound status callback's ``event_id``: one message has many
    transitions), or for a batch ``batch_`` + a digest of the ordered ids, so a retry carries the same id."""
    ids = [str(m.get("event_id") or m["message_id"]) for m in messages]
    if sub.batch is None and len(ids) == 1:
        return ids[0]
    return "batch_" + hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()[:32]


def webhook_body(sub: Subscription, messages: Sequence[Mapping[str, Any]]) -> bytes:
    """A JSON object for one message; a JSON array whenever the subscription is batched."""
    if sub.batch is None and len(messages) == 1:
        return orjson.dumps(messages[0])
    return orjson.dumps(list(messages))


def describe_failure(exc: BaseException, timeout_s: float) -> tuple[FailureKind, str]:
    """Map a client exception to a failure kind and a sentence a customer can act on."""
    blocked = blocked_address(exc)
    if blocked is not None:
        return FailureKind.BLOCKED_ADDRESS, str(blocked)
    if isinstance(exc, TlsCertificateError | TlsError):
        return FailureKind.TLS, str(exc)
    if isinstance(exc, ssl.SSLError):
        return FailureKind.TLS, f"TLS failed: {exc}"
    if isinstance(exc, ResolveError):
        return FailureKind.DNS, str(exc)
    if isinstance(exc, TimeoutError):
        return FailureKind.TIMEOUT, f"no complete response within {timeout_s:g}s"
    if isinstance(exc, ConnectError | Disconnected):
        return FailureKind.CONNECTION, str(exc)
    if isinstance(exc, InvalidResponse):
        return FailureKind.INVALID_RESPONSE, str(exc)
    if isinstance(exc, InvalidUrl):
        return FailureKind.INVALID_REQUEST, f"invalid URL: {exc}"
    if isinstance(exc, InvalidRequest):
        return FailureKind.INVALID_REQUEST, str(exc)
    return FailureKind.CONNECTION, f"{type(exc).__name__}: {exc}"


def safe_text(value: object, limit: int) -> str:
    """``value`` as valid UTF-8 text of at most ``limit`` characters: lone surrogates (undecodable header
    bytes, as the client passes them on) are shown as escapes, because an event carrying one cannot be
    serialised (orjson and Avro refuse them) and would leave its message unacked."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _charset(content_type: str | None) -> str | None:
    if not content_type:
        return None
    m = Message()
    m["content-type"] = content_type
    charset = m.get_content_charset()
    return charset if isinstance(charset, str) else None


def decode_body(raw: bytes, content_type: str | None) -> tuple[str, str | None]:
    """The body as text for the delivery log, and a note when its declared charset could not be used (unknown,
    not a text encoding, or wrong for the bytes): then it is shown as UTF-8 with replacement characters."""
    try:
        charset = _charset(content_type)
    except Exception as exc:  # e.g. undecodable octets in the header: the body is still the receiver's answer
        note = f"response Content-Type unreadable ({type(exc).__name__}); shown as UTF-8"
        return raw.decode("utf-8", errors="replace"), note
    if charset:
        try:
            codecs.lookup(charset)
            return raw.decode(charset, errors="replace"), None
        except (LookupError, ValueError, TypeError) as exc:  # e.g. x-bogus, or base64 (bytes-to-bytes)
            shown = safe_text(charset, 64)
            note = f"response charset {shown!r} unusable ({type(exc).__name__}); shown as UTF-8"
            return raw.decode("utf-8", errors="replace"), note
    return raw.decode("utf-8", errors="replace"), None


def interpret_response(
    status: int,
    headers: Mapping[str, str],
    raw: bytes,
    truncated: bool,
    read_error: str | None = None,
) -> dict[str, Any]:
    """The :class:`AttemptResult` fields a response gives. Never raises: a response it cannot interpret is a
    failed attempt with the reason (``invalid_response``), retried on schedule like any other failure."""
    try:
        failure: FailureKind | None = None
        notes: list[str] = []
        if not 100 <= status <= 999:
            raise ValueError(f"status {status} is not an HTTP status code")
        if 300 <= status < 400:
            failure = FailureKind.REDIRECT
            location = safe_text(headers.get("Location") or "?", MAX_HEADER_TEXT)
            notes.append(f"HTTP {status} redirect to {location} not followed")
        elif not 200 <= status < 300:
            failure = FailureKind.HTTP_STATUS
            notes.append(f"HTTP {status}")
        if read_error:
            notes.append(f"response body unread: {read_error}")
        body = None
        if raw:
            body, note = decode_body(raw, headers.get("Content-Type"))
            if note:
                notes.append(note)
        retry_after = headers.get("Retry-After")
        if retry_after is not None and parse_retry_after(retry_after, utcnow()) is None:
            notes.append(f"Retry-After {safe_text(retry_after, 64)!r} ignored: not seconds or an HTTP date")
        return {
            "status_code": status,
            "failure": failure,
            "error": safe_text("; ".join(notes), MAX_ERROR_TEXT) if notes else None,
            "response_body": safe_text(body, len(raw) + 1) if body is not None else None,
            "response_truncated": truncated,
            "retry_after": safe_text(retry_after, MAX_HEADER_TEXT) if retry_after is not None else None,
        }
    except Exception as exc:  # the boundary: whatever an endpoint answers, this is a result, not a raise
        reason = safe_text(f"response could not be interpreted: {type(exc).__name__}: {exc}", MAX_ERROR_TEXT)
        return {
            "status_code": status if isinstance(status, int) and 100 <= status <= 999 else None,
            "failure": FailureKind.INVALID_RESPONSE,
            "error": reason,
        }


class WebhookSender:
    """Sends webhooks for every subscription through one shared connection pool.

    Create it inside the running event loop (or let the first ``deliver`` do it) and ``await close()`` at
    shutdown. Per-endpoint state (slots, rate, AIMD) is kept per subscription and endpoint: a primary that
    times out holds its own slots, not its secondary's.
    """

    def __init__(
        self,
        config: SenderConfig | None = None,
        *,
        resolver: AbstractResolver | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or SenderConfig()
        self._inner_resolver = resolver
        self._wall_clock = wall_clock
        self._client: Http1Client | None = None
        self._gates: dict[str, dict[str, EndpointGate]] = {}  # subscription id -> endpoint id -> gate
        self._ssl = ssl.create_default_context(cafile=self.config.ca_bundle)

    async def __aenter__(self) -> WebhookSender:
        self._ensure_client()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _ensure_client(self) -> Http1Client:
        if self._client is None or self._client.closed:
            policy = self.config.address_policy
            self._client = Http1Client(
                ssl_context=self._ssl,
                resolver=GuardedResolver(policy, self._inner_resolver) if policy else self._inner_resolver,
                socket_factory=guarded_socket_factory(policy) if policy else None,
                limit=self.config.pool_limit,
                keepalive_timeout_s=self.config.keepalive_timeout_s,
                user_agent=self.config.user_agent,
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def gate(self, sub: Subscription, endpoint: WebhookEndpoint | None = None) -> EndpointGate:
        key = (endpoint or sub.main_endpoint).id
        gates = self._gates.setdefault(sub.id, {})
        gate = gates.get(key)
        if gate is None:
            aimd = AimdLimit(
                sub.max_in_flight,
                decrease_factor=self.config.aimd_decrease_factor,
                cooldown_s=self.config.aimd_cooldown_s,
            )
            gate = gates[key] = EndpointGate(sub.max_in_flight, sub.rate_limit_per_second, aimd=aimd)
        else:
            gate.configure(sub.max_in_flight, sub.rate_limit_per_second)
        return gate

    def forget(self, subscription_id: str) -> None:
        """Drop per-endpoint state of a deleted subscription."""
        self._gates.pop(subscription_id, None)

    async def deliver(
        self,
        sub: Subscription,
        messages: list[dict[str, Any]],
        attempt: int,
        trace_headers: Mapping[str, str] | None = None,
        endpoint: WebhookEndpoint | None = None,
    ) -> AttemptResult:
        """POST to ``endpoint`` (default: the subscription's own url), signed with that endpoint's secrets."""
        if not messages:
            raise ValueError("deliver needs at least one message")
        ep = endpoint or sub.main_endpoint
        started_at = utcnow()
        t0 = time.monotonic()
        webhook_id = webhook_id_for(sub, messages)
        base: dict[str, Any] = {
            "subscription_id": sub.id,
            "webhook_id": webhook_id,
            "message_ids": [str(m["message_id"]) for m in messages],
            "attempt": attempt,
            "url": redact_url(ep.url),
            "endpoint_id": ep.id,
            "route_id": sub.route_id(ep.id),
            "started_at": started_at,
        }

        def result(**kw: Any) -> AttemptResult:
            kw.setdefault("duration_ms", 0.0)
            if kw.get("error") is not None:
                kw["error"] = safe_text(kw["error"], MAX_ERROR_TEXT)  # exception texts may quote the response
            out = AttemptResult(**base, **kw)
            ATTEMPTS.labels(_outcome_label(out)).inc()
            return out

        https_only = self.config.https_only if sub.https_only is None else sub.https_only
        if https_only and urlsplit(ep.url).scheme != "https":
            return result(failure=FailureKind.HTTPS_REQUIRED, error="endpoint URL must be https://")
        try:
            body = webhook_body(sub, messages)
        except TypeError as exc:
            return result(
                failure=FailureKind.INVALID_REQUEST, error=f"message is not JSON-serialisable: {exc}"
            )

        gate = self.gate(sub, ep)
        wait = (
            self.config.max_queue_wait_s if self.config.max_queue_wait_s is not None else sub.timeout_seconds
        )
        if not await gate.acquire(wait):
            return result(
                failure=FailureKind.DEFERRED,
                error=f"endpoint busy: {gate.in_flight} requests in flight (limit {gate.capacity}), "
                f"no slot within {wait:g}s; not sent",
                duration_ms=(time.monotonic() - t0) * 1000,
            )
        t_send = time.monotonic()
        IN_FLIGHT.inc()
        try:  # from here on the slot is ours: every path must give it back
            client = self._ensure_client()
            headers = webhook_headers(ep.signing_secrets(), webhook_id, body, int(self._wall_clock()))
            for name in TRACE_HEADERS:
                value = _header(trace_headers, name)
                if value:
                    headers[name] = value
            resp = await client.post(
                ep.url,
                body,
                headers,
                max_body=self.config.max_response_body_bytes,
                timeout_s=sub.timeout_seconds,
                party=sub.owner,
            )
            fields = interpret_response(resp.status, resp.headers, resp.body, resp.truncated, resp.read_error)
            out = result(**fields, duration_ms=(time.monotonic() - t_send) * 1000)
        except (HttpClientError, TimeoutError, OSError, ssl.SSLError, ValueError) as exc:
            kind, reason = describe_failure(exc, sub.timeout_seconds)
            out = result(failure=kind, error=reason, duration_ms=(time.monotonic() - t_send) * 1000)
        except Exception as exc:  # anything else the client raises on a hostile peer: still a failed attempt
            _floods.log(
                f"webhook attempts failed unexpectedly ({type(exc).__name__})",
                logging.WARNING,
                "webhook %s to %s: unexpected %s",
                webhook_id,
                redact_url(ep.url),
                type(exc).__name__,
            )
            out = result(
                failure=FailureKind.CONNECTION,
                error=f"{type(exc).__name__}: {exc}",
                duration_ms=(time.monotonic() - t_send) * 1000,
            )
        finally:
            IN_FLIGHT.dec()
            gate.release()
        ATTEMPT_SECONDS.observe(out.duration_ms / 1000)
        if out.ok:
            gate.aimd.on_success()
        elif out.status_code in THROTTLE_STATUSES:
            gate.aimd.on_throttle()
        return out


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return None


def _outcome_label(result: AttemptResult) -> str:
    if result.status_code is not None and result.failure in (
        None,
        FailureKind.HTTP_STATUS,
        FailureKind.REDIRECT,
    ):
        return f"{result.status_code // 100}xx"
    return str(result.failure)
