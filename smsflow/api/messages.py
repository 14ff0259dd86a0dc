"""`POST /v1/messages` (send an SMS) and `GET /v1/messages/{id}` (its status history).

Sending needs a customer key with the `messages:write` scope; the message belongs to the key's owner, and
`from` must be one of the owner's held numbers (or inside a held prefix) or held sender IDs. An
operator key cannot send: it has no holding to send from, and a message must have an owner for its
callbacks and its history. The request is checked whole (`smsflow.outbound.request.read_request`: every
field error in one 422) and produced to `sms.outbound.v1` keyed by destination (acks=all, idempotent
producer) before the 202 is written: an id the client got is an id that exists.

`Idempotency-Key`: per owner, the same key with the same request within 24 h answers 202 with the first
message id and sends nothing; the same key with another request is a 422. The fingerprint is taken over the
*normalised* request (E.164 numbers, defaults filled), so `+852 9123 4567` and `+85291234567` are the same
request. The book is rebuilt from `sms.outbound.v1` itself (every request record carries its owner and key),
so a restarted API, or another replica, honours the keys it did not see itself.

Each owner may send `api.segments_per_second_per_owner` segments per second (a message of n parts counts
n), after a burst of `api.segments_burst_per_owner` (`api.segment_rates` gives some owners their own);
more answers 429 with `Retry-After`, before anything is stored. A refused, invalid or replayed request
costs nothing; one the broker did not store is given back.

`GET /v1/messages/{id}` answers the history from `sms.outbound.status.v1`; another owner's id is a 404.

`callback_url` passes the rules of subscription URLs (`smsflow.delivery.egress.url_refusal`: https when
required, no localhost or literal private address unless `webhooks.block_private_addresses` is off); the
sender checks the resolved address again on every connection. Callbacks are signed with the owner's callback
secret, which the owner reads at `GET /v1/callback-secret` (`smsflow.delivery.callbacks`).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from smsflow.api.apikeys import Scope
from smsflow.api.buckets import OwnerBuckets
from smsflow.api.wire import ApiError, ErrorDetail, principal
from smsflow.delivery.egress import AddressPolicy, url_refusal
from smsflow.keyed_locks import KeyedLocks
from smsflow.outbound.encode import segments_needed
from smsflow.outbound.idempotency import Conflict, IdempotencyBook, Replay
from smsflow.outbound.records import request_from_record, request_record
from smsflow.outbound.request import (
    DEFAULT_VALIDITY_S,
    MAX_VALIDITY_S,
    MIN_VALIDITY_S,
    OutboundRequest,
    read_request,
)
from smsflow.subscriptions.holdings import Holding

RequestSink = Callable[[OutboundRequest], Awaitable[None]]
"""Store the accepted request (produce it to sms.outbound.v1 and wait for the broker's ack)."""
HoldingOf = Callable[[str], Holding | None]


class SinkUnavailable(RuntimeError):
    """The request was not stored; the client gets a 503 and may retry with the same Idempotency-Key."""


# ---- bodies (also the OpenAPI components) ----


class MessageSend(BaseModel):
    """The body of POST /v1/messages (checked by read_request; this model documents it)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: str = Field(description="destination in E.164, e.g. +85291234567")
    from_: str = Field(
        alias="from",
        description="a number you hold (E.164) or an alphanumeric sender ID you hold (1-11 GSM characters)",
    )
    text: str = Field(description="at most 10 parts once encoded (1530 GSM characters, 670 UCS-2)")
    callback_url: str | None = Field(None, description="every status transition is POSTed here, signed")
    validity_s: int = Field(DEFAULT_VALIDITY_S, ge=MIN_VALIDITY_S, le=MAX_VALIDITY_S)
    priority: str = Field("transactional", description="otp (submitted first) | transactional | bulk")


class MessageAccepted(BaseModel):
    id: str
    status: str = "queued"
    replayed: bool = Field(False, description="true when an Idempotency-Key replayed an earlier request")


class CallbackSecret(BaseModel):
    secret: str = Field(description="whsec_ secret: verify callbacks' Standard Webhooks signature with it")
    secrets: list[str] = Field(
        description="every secret a callback is signed with now (more than one while a key is rotated out)"
    )


@dataclass(frozen=True)
class UrlRules:
    """The callback_url checks, the same as for subscription URLs (``webhooks`` section of the config)."""

    https_only: bool = False
    address_policy: AddressPolicy | None = AddressPolicy()  # noqa: RUF009 - frozen, safe to share


class StatusEntry(BaseModel):
    event_id: str
    segment: int | None = Field(description="1-based segment; null for the message as a whole")
    segments_total: int
    old_state: str
    new_state: str
    overall: str
    reason: str
    at: datetime
    carrier_message_id: str | None = None
    route_id: str | None = None
    detail: str | None = None


class MessageView(BaseModel):
    id: str
    to: str
    sender: str
    status: str = Field(description="the overall state after the latest transition; queued before any")
    accepted_at: datetime
    history: list[StatusEntry]


# ---- what the API knows about sent messages ----


@dataclass(frozen=True)
class SentMessage:
    message_id: str
    owner: str
    to: str
    sender: str
    accepted_at_ms: int


def canonical_body(req: OutboundRequest) -> dict[str, object]:
    """The request as the idempotency fingerprint sees it: normalised, defaults filled."""
    return {
        "to": req.to,
        "from": req.sender,
        "text": req.text,
        "callback_url": req.callback_url,
        "validity_s": req.validity_s,
        "priority": req.priority,
    }


class SendThrottled(Exception):
    """The owner has sent as many segments as its rate allows for now."""

    def __init__(self, owner: str, cost: int, per_s: float, burst: int, wait_s: float) -> None:
        self.wait_s = wait_s
        super().__init__(
            f"owner {owner!r} may send {per_s:g} segments per second after a burst of {burst} "
            f"(api.segments_per_second_per_owner, api.segments_burst_per_owner, api.segment_rates); this "
            f"message of {cost} segments can be sent in {math.ceil(wait_s)} s"
        )


class OutboundDesk:
    """Accepted requests, idempotency keys and status histories, fed by this API's own sends and by the
    topics (``smsflow.api.message_feed``; its records arrive on a consumer thread, hence the lock)."""

    def __init__(
        self,
        sink: RequestSink,
        holding_of: HoldingOf,
        clock: Callable[[], float] = time.time,
        *,
        url_rules: UrlRules | None = None,
        callback_secrets: Callable[[str], list[str]] | None = None,
        rates: OwnerBuckets | None = None,
        idempotency_keys_per_owner: int = 200_000,
        any_alphanumeric_sender: bool = False,
    ):
        self.sink = sink
        self.holding_of = holding_of
        self.clock = clock
        self.url_rules = url_rules or UrlRules()
        # the owner's callback signing secrets; None: this API cannot tell them (no key ring)
        self.callback_secrets = callback_secrets
        # segments per owner per second; None: unbounded (tests of other things)
        self.rates = rates
        # api.alphanumeric_senders: any (else only the sender IDs of the owner's holding)
        self.any_alphanumeric_sender = any_alphanumeric_sender
        self._lock = threading.Lock()
        self._book = IdempotencyBook(max_per_owner=idempotency_keys_per_owner)
        self._messages: dict[str, SentMessage] = {}
        self._history: dict[str, dict[str, dict[str, Any]]] = {}
        # requests with one Idempotency-Key take it in turn
        self._key_locks: KeyedLocks[tuple[str, str]] = KeyedLocks()

    # -- fed from the topics --

    def on_request(self, record: Mapping[str, Any]) -> None:
        req = request_from_record(record)
        with self._lock:
            self._messages.setdefault(req.message_id, _sent(req))
            if req.idempotency_key is not None:
                self._book.remember(
                    req.owner, req.idempotency_key, canonical_body(req), req.message_id, req.accepted_at_ms
                )

    def on_status(self, record: Mapping[str, Any]) -> None:
        with self._lock:  # keyed by event id: a record read twice is one entry
            self._history.setdefault(str(record["message_id"]), {})[str(record["event_id"])] = dict(record)

    # -- the API's side --

    async def send(
        self, owner: str, body: Mapping[str, object], idempotency_key: str | None
    ) -> MessageAccepted | list[tuple[str, str]]:
        """The 202 body, or every (field, reason) that makes the request unacceptable."""
        holding = self.holding_of(owner)
        now_ms = int(self.clock() * 1000)
        checked = read_request(
            body,
            message_id=f"mt_{uuid.uuid4().hex}",
            owner=owner,
            holdings=holding.holds_number if holding is not None else (lambda _n: False),
            sender_ids=None
            if self.any_alphanumeric_sender
            else (holding.holds_sender_id if holding is not None else (lambda _s: False)),
            now_ms=now_ms,
            idempotency_key=idempotency_key,
        )
        refused = self._callback_refusal(body.get("callback_url"))
        if isinstance(checked, list) or refused is not None:
            errors = [(e.path, e.reason) for e in checked] if isinstance(checked, list) else []
            return errors + ([("callback_url", refused)] if refused is not None else [])
        if idempotency_key is None:
            await self._store_counted(checked)
            return MessageAccepted(id=checked.message_id, replayed=False)
        async with self._key_locks.hold((owner, idempotency_key)):
            with self._lock:
                seen = self._book.look_up(owner, idempotency_key, canonical_body(checked), now_ms)
            if isinstance(seen, Replay):
                return MessageAccepted(id=seen.message_id, replayed=True)
            if isinstance(seen, Conflict):
                return [("Idempotency-Key", seen.reason)]
            await self._store_counted(checked)
            return MessageAccepted(id=checked.message_id, replayed=False)

    async def _store_counted(self, req: OutboundRequest) -> None:
        """Store the request if its owner's send rate allows its segments now (else SendThrottled, nothing
        stored); segments the broker did not store are given back."""
        rates = self.rates
        if rates is None:
            await self._store(req)
            return
        cost = segments_needed(req.text)
        wait = rates.take(req.owner, cost)
        if wait > 0:
            burst, per_s = rates.limit_of(req.owner)
            raise SendThrottled(req.owner, cost, per_s, int(burst), min(wait, 3600.0))
        try:
            await self._store(req)
        except Exception:  # not stored (a cancelled request may have been: it keeps its cost)
            rates.give_back(req.owner, cost)
            raise

    def _callback_refusal(self, url: object) -> str | None:
        if not isinstance(url, str):
            return None  # absent, or not a string: read_request says so
        rules = self.url_rules
        return url_refusal(url, https_only=rules.https_only, policy=rules.address_policy)

    async def _store(self, req: OutboundRequest) -> None:
        await self.sink(req)
        self.on_request(request_record(req))

    def view(self, owner: str, message_id: str) -> MessageView | None:
        with self._lock:
            sent = self._messages.get(message_id)
            history = list(self._history.get(message_id, {}).values())
        if sent is None or sent.owner != owner:
            return None
        history.sort(key=lambda r: _event_number(str(r["event_id"])))
        entries = [StatusEntry.model_validate({**r, "at": _utc(r["at"])}) for r in history]
        return MessageView(
            id=message_id,
            to=sent.to,
            sender=sent.sender,
            status=entries[-1].overall if entries else "queued",
            accepted_at=_utc(sent.accepted_at_ms),
            history=entries,
        )


def _event_number(event_id: str) -> int:
    _, _, n = event_id.rpartition("#")
    return int(n) if n.isdigit() else 0


def _utc(value: object) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(int(value) / 1000, UTC)  # type: ignore[call-overload]


def _sent(req: OutboundRequest) -> SentMessage:
    return SentMessage(req.message_id, req.owner, req.to, req.sender, req.accepted_at_ms)


# ---- handlers ----


def add_message_routes(app: web.Application, desk: OutboundDesk) -> None:
    """Add the /v1/messages handlers; the app's auth middleware has already put the API key on the request."""

    def _json(model: BaseModel, status: int) -> web.Response:
        body = orjson.dumps(model.model_dump(mode="json", by_alias=True))
        return web.Response(body=body, status=status, content_type="application/json")

    async def send(request: web.Request) -> web.Response:
        key = principal(request, Scope.MESSAGES)
        if key.owner is None:
            raise ApiError(
                403, "forbidden", "send with a customer key: an operator key holds no numbers to send from"
            )
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "bad_request", f"request body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "bad_request", "request body must be a JSON object")
        try:
            outcome = await desk.send(key.owner, body, request.headers.get("Idempotency-Key"))
        except SinkUnavailable as exc:
            raise ApiError(503, "unavailable", f"the message was not stored ({exc}); retry it") from exc
        except SendThrottled as exc:
            raise ApiError(
                429, "too_many_requests", str(exc), headers={"Retry-After": str(math.ceil(exc.wait_s))}
            ) from exc
        if isinstance(outcome, list):
            details = [ErrorDetail(code="invalid", field=f, message=m) for f, m in outcome]
            code = "idempotency_conflict" if outcome[0][0] == "Idempotency-Key" else "validation_error"
            first = details[0]
            raise ApiError(422, code, f"{first.field}: {first.message}", first.field, details)
        resp = _json(outcome, 202)
        resp.headers["Location"] = f"/v1/messages/{outcome.id}"
        return resp

    async def get(request: web.Request) -> web.Response:
        key = principal(request, Scope.READ)
        message_id = request.match_info["id"]
        view = desk.view(key.owner, message_id) if key.owner is not None else None
        if view is None:
            raise ApiError(404, "not_found", f"message {message_id} not found")
        return _json(view, 200)

    async def callback_secret(request: web.Request) -> web.Response:
        key = principal(request, Scope.MESSAGES)
        if key.owner is None:
            raise ApiError(403, "forbidden", "an operator key sends nothing: no callback secret")
        if desk.callback_secrets is None:
            raise ApiError(501, "not_implemented", "no secrets key ring to derive the secret from")
        secrets = desk.callback_secrets(key.owner)
        return _json(CallbackSecret(secret=secrets[0], secrets=secrets), 200)

    app.router.add_post("/v1/messages", send)
    app.router.add_get("/v1/callback-secret", callback_secret)
    app.router.add_get("/v1/messages/{id}", get)
