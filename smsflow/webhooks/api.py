"""The subscriptions management REST API (aiohttp).

Every ``/v1`` route needs ``Authorization: Bearer <api key>`` (401 without or with an unknown key, 403 when
the key lacks the route's scope). A key bound to an owner sees only that owner's subscriptions; another
owner's id answers 404, so ids cannot be probed. What a subscription can receive is bounded by its owner's
*holding* (``holdings.py``): a filter reaching beyond it is refused (403 ``not_held``, ``error.field`` names
the value), and an empty filter means "everything the owner holds". Holdings are managed only by admin keys
(``/v1/holdings``); an owner key may read its own. Secrets leave the API exactly twice: in the response that
creates a subscription and in the response that rotates its secret.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, ValidationError

from smsflow.api.messages import OutboundDesk, add_message_routes
from smsflow.webhooks.apikeys import ApiKey, ApiKeyStore, Scope
from smsflow.webhooks.egress import AddressPolicy
from smsflow.webhooks.holdings import Holding, is_operator_owner, outside_holding
from smsflow.webhooks.model import BatchConfig, MessageFilter, SigningSecret, Subscription, utcnow
from smsflow.webhooks.store import SubscriptionStore

ResendCallback = Callable[[str, Subscription], Awaitable[bool]]
"""``resend(message_id, subscription)``: queue the message for this subscription; False if it is unknown."""
RecoverCallback = Callable[[Subscription, datetime], Awaitable[int | None]]
"""``recover(subscription, since)``: re-queue its failed messages since then; the count, if known."""

KEY_PRINCIPAL = web.RequestKey("principal", ApiKey)


@dataclass(frozen=True)
class ApiSettings:
    rotation_overlap_s: float = 24 * 3600.0  # how long the previous secret keeps signing after a rotation
    max_rotation_overlap_s: float = 7 * 24 * 3600.0
    https_only: bool = False  # default for subscriptions that do not say
    # Refuse URLs whose host is a literal blocked IP or a localhost name at creation time (the sender checks
    # resolved addresses on every connection anyway). None accepts any host (local demo).
    address_policy: AddressPolicy | None = AddressPolicy()  # noqa: RUF009 - frozen, safe to share


# ---- request and response bodies (also the OpenAPI components) ----


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubscriptionCreate(_Body):
    url: str = Field(min_length=1, max_length=2048)
    owner: str | None = Field(None, description="required for operator keys; defaults to the key's owner")
    description: str = Field("", max_length=500)
    secret: SecretStr | None = Field(None, description="whsec_ + base64 of 24..64 bytes; generated if absent")
    filters: MessageFilter = Field(default_factory=MessageFilter)
    max_in_flight: int = Field(10, ge=1, le=1000)
    rate_limit_per_second: float | None = Field(None, gt=0, le=10_000)
    timeout_seconds: float = Field(10.0, gt=0, le=60)
    batch: BatchConfig | None = None
    https_only: bool | None = None


class SubscriptionUpdate(_Body):
    """Fields to change; an absent field is left alone, ``null`` clears an optional one."""

    url: str | None = Field(None, min_length=1, max_length=2048)
    description: str | None = Field(None, max_length=500)
    filters: MessageFilter | None = None
    max_in_flight: int | None = Field(None, ge=1, le=1000)
    rate_limit_per_second: float | None = Field(None, gt=0, le=10_000)
    timeout_seconds: float | None = Field(None, gt=0, le=60)
    batch: BatchConfig | None = None
    https_only: bool | None = None


class SecretInfo(BaseModel):
    fingerprint: str = Field(description="first 12 hex digits of SHA-256 of the secret")
    created_at: datetime
    expires_at: datetime | None


class SubscriptionView(BaseModel):
    id: str
    owner: str
    url: str
    description: str
    filters: MessageFilter
    enabled: bool
    disabled_reason: str | None
    max_in_flight: int
    rate_limit_per_second: float | None
    timeout_seconds: float
    batch: BatchConfig | None
    https_only: bool | None
    secrets: list[SecretInfo]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, sub: Subscription) -> SubscriptionView:
        data = sub.model_dump(exclude={"secrets"})
        data["secrets"] = [
            SecretInfo(fingerprint=s.fingerprint, created_at=s.created_at, expires_at=s.expires_at)
            for s in sub.secrets
        ]
        return cls(**data)


class SubscriptionCreated(SubscriptionView):
    secret: str = Field(description="the signing secret, shown only in this response")


class SubscriptionList(BaseModel):
    data: list[SubscriptionView]


class RotateSecretRequest(_Body):
    overlap_seconds: float | None = Field(None, ge=0, description="how long the previous secret stays valid")


class RotateSecretResponse(BaseModel):
    secret: str = Field(description="the new signing secret, shown only in this response")
    fingerprint: str
    previous_valid_until: datetime | None


class DisableRequest(_Body):
    reason: str = Field("disabled by request", max_length=500)


class RecoverRequest(_Body):
    since: AwareDatetime


class RecoverResponse(BaseModel):
    subscription_id: str
    since: datetime
    queued: int | None = Field(description="messages queued again, when known")


class ResendResponse(BaseModel):
    message_id: str
    subscription_id: str
    status: str = "queued"


class HoldingPut(_Body):
    """Everything the owner holds (replaces the previous holding)."""

    numbers: list[str] = Field(default_factory=list, description="E.164 numbers")
    prefixes: list[str] = Field(default_factory=list, description="E.164 number prefixes, e.g. +8610690")
    route_ids: list[str] = Field(default_factory=list, description="routes dedicated to this owner")


class HoldingView(BaseModel):
    owner: str
    numbers: list[str]
    prefixes: list[str]
    route_ids: list[str]
    updated_at: datetime

    @classmethod
    def of(cls, holding: Holding) -> HoldingView:
        return cls(**holding.model_dump())


class HoldingList(BaseModel):
    data: list[HoldingView]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
    details: list[ErrorDetail] = Field(default_factory=list)


# ---- helpers ----


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        details: list[ErrorDetail] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.details = (
            status,
            code,
            message,
            field,
            details or [],
        )


def _json(model: BaseModel | dict[str, Any], status: int = 200) -> web.Response:
    data = model.model_dump(mode="json") if isinstance(model, BaseModel) else model
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error_response(err: ApiError) -> web.Response:
    body = ErrorBody(
        error=ErrorDetail(code=err.code, message=err.message, field=err.field), details=err.details
    )
    resp = _json(body, err.status)
    if err.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="smsflow"'
    return resp


def _validation_error(exc: ValidationError, prefix: str = "") -> ApiError:
    # Built from loc and msg only: the offending input (which may be a secret) is never echoed.
    details = [
        ErrorDetail(
            code="invalid",
            field=prefix + ".".join(str(p) for p in e["loc"]) if e["loc"] else prefix.rstrip(".") or None,
            message=e["msg"],
        )
        for e in exc.errors(include_url=False, include_input=False)
    ]
    first = details[0] if details else ErrorDetail(code="invalid", message="invalid request")
    where = f"{first.field}: " if first.field else ""
    return ApiError(422, "validation_error", f"{where}{first.message}", first.field, details)


async def _parse(request: web.Request, model: type[BaseModel], *, allow_empty: bool = False) -> Any:
    raw = await request.read()
    if not raw.strip():
        if allow_empty:
            raw = b"{}"
        else:
            raise ApiError(400, "bad_request", "request body must be a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "bad_request", f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from exc


def _principal(request: web.Request, scope: Scope) -> ApiKey:
    key = request[KEY_PRINCIPAL]
    if not key.allows(scope):
        raise ApiError(403, "forbidden", f"this API key lacks the {scope.value!r} scope")
    return key


principal = _principal  # for the resources in smsflow/api/


class _Handlers:
    def __init__(
        self,
        store: SubscriptionStore,
        settings: ApiSettings,
        resend: ResendCallback | None,
        recover: RecoverCallback | None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.resend_cb = resend
        self.recover_cb = recover
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    # -- shared checks --

    def _check_url(self, url: str, https_only: bool | None) -> None:
        parts = urlsplit(url)
        effective = self.settings.https_only if https_only is None else https_only
        if effective and parts.scheme != "https":
            raise ApiError(422, "validation_error", "url: must be https:// for this subscription", "url")
        host = (parts.hostname or "").rstrip(".").lower()
        policy = self.settings.address_policy
        if policy is None or not host:
            return
        if host == "localhost" or host.endswith(".localhost"):
            raise ApiError(422, "validation_error", "url: localhost is not a reachable webhook host", "url")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return
        reason = policy.blocked_reason(host)
        if reason is not None:
            raise ApiError(422, "validation_error", f"url: {host} is a {reason} address", "url")

    def _check_held(self, owner: str, filters: MessageFilter) -> None:
        """Refuse a filter reaching beyond what the owner holds (operator subscriptions hold everything)."""
        if is_operator_owner(owner):
            return
        outside = outside_holding(filters, self.store.holding_of(owner))
        if outside:
            details = [ErrorDetail(code="not_held", field=f, message=m) for f, m in outside]
            first = details[0]
            raise ApiError(403, "not_held", f"{first.field}: {first.message}", first.field, details)

    async def _owned(self, request: web.Request, key: ApiKey) -> Subscription:
        sub_id = request.match_info["id"]
        sub = await self.store.get(sub_id)
        if sub is None or not key.may_access(sub.owner):
            raise ApiError(404, "not_found", f"subscription {sub_id} not found")
        return sub

    def _build(self, data: dict[str, Any]) -> Subscription:
        try:
            return Subscription.model_validate(data)
        except ValidationError as exc:
            raise _validation_error(exc) from exc

    # -- routes --

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def list_subscriptions(self, request: web.Request) -> web.Response:
        key = _principal(request, Scope.READ)
        owner = key.owner if key.owner is not None else request.query.get("owner")
        subs = await self.store.list(owner)
        return _json(SubscriptionList(data=[SubscriptionView.of(s) for s in subs]))

    async def create_subscription(self, request: web.Request) -> web.Response:
        key = _principal(request, Scope.WRITE)
        body: SubscriptionCreate = await _parse(request, SubscriptionCreate)
        if key.owner is not None:
            if body.owner is not None and body.owner != key.owner:
                raise ApiError(
                    403, "forbidden", "this API key may only create subscriptions for its own owner"
                )
            owner = key.owner
        elif body.owner:
            owner = body.owner
        else:
            raise ApiError(422, "validation_error", "owner: required with an operator key", "owner")
        self._check_url(body.url, body.https_only)
        self._check_held(owner, body.filters)
        try:
            secret = SigningSecret.new(body.secret.get_secret_value() if body.secret else None)
        except ValidationError as exc:
            raise _validation_error(exc, "secret.") from exc
        data = body.model_dump(exclude={"secret", "owner"})
        sub = self._build({**data, "owner": owner, "secrets": [secret]})
        await self.store.put(sub)
        view = SubscriptionView.of(sub).model_dump()
        resp = _json(SubscriptionCreated(**view, secret=secret.value.get_secret_value()), 201)
        resp.headers["Location"] = f"/v1/subscriptions/{sub.id}"
        return resp

    async def get_subscription(self, request: web.Request) -> web.Response:
        key = _principal(request, Scope.READ)
        return _json(SubscriptionView.of(await self._owned(request, key)))

    async def update_subscription(self, request: web.Request) -> web.Response:
        key = _principal(request, Scope.WRITE)
        body: SubscriptionUpdate = await _parse(request, SubscriptionUpdate)
        changes = {name: getattr(body, name) for name in body.model_fields_set}
        for name in ("url", "description", "filters", "max_in_flight", "timeout_seconds"):
            if name in changes and changes[name] is None:
                raise ApiError(422, "validation_error", f"{name}: may not be null", name)
        async with self._locks[request.match_info["id"]]:
            sub = await self._owned(request, key)
            if "url" in changes or "https_only" in changes:
                self._check_url(changes.get("url", sub.url), changes.get("https_only", sub.https_only))
            if "filters" in changes:
                self._check_held(sub.owner, changes["filters"])
            data = sub.model_dump()
            data.update({k: (v.model_dump() if isinstance(v, BaseModel) else v) for k, v in changes.items()})
            data["updated_at"] = utcnow()
            updated = self._build(data)
            await self.store.put(updated)
        return _json(SubscriptionView.of(updated))

    async def delete_subscription(self, request: web.Request) -> web.Response:
        key = _principal(request, Scope.WRITE)
        sub = await self._owned(request, key)
        await self.store.delete(sub.id)
        return web.Response(status=204)

    async def rotate_secret(self, request: web.Request) -> web.Response:
        key = _principal(request, Scope.WRITE)
        body: RotateSecretRequest = await _parse(request, RotateSecretRequest, allow_empty=True)
        overlap = self.settings.rotation_overlap_s if body.overlap_seconds is None else body.overlap_seconds
        if overlap > self.settings.max_rotation_overlap_s:
            raise ApiError(
                422,
                "validation_error",
                f"overlap_seconds: at most {self.settings.max_rotation_overlap_s:g}",
                "overlap_seconds",
            )
        async with self._locks[request.match_info["id"]]:
            sub = await self._owned(request, key)
            now = utcnow()
            until = now + timedelta(seconds=overlap)
            new = SigningSecret.new(now=now)
            kept = [
                s.model_copy(update={"expires_at": min(until, s.expires_at) if s.expires_at else until})
                for s in sub.secrets
                if s.active_at(now)
            ]
            kept = [s for s in kept if s.active_at(now)]  # a zero overlap retires the old secrets at once
            await self.store.put(sub.model_copy(update={"secrets": [new, *kept], "updated_at": now}))
        return _json(
            RotateSecretResponse(
                secret=new.value.get_secret_value(),
                fingerprint=new.fingerprint,
                previous_valid_until=until if kept else None,
            )
        )

    async def enable(self, request: web.Request) -> web.Response:
        key = _principal(request, Scope.WRITE)
        async with self._locks[request.match_info["id"]]:
            sub = await self._owned(request, key)
            updated = sub.model_copy(
                update={"enabled": True, "disabled_reason": None, "updated_at": utcnow()}
            )
            await self.store.put(updated)
        return _json(SubscriptionView.of(updated))

    async def disable(self, request: web.Request) -> web.Response:
        key = _principal(request, Scope.WRITE)
        body: DisableRequest = await _parse(request, DisableRequest, allow_empty=True)
        async with self._locks[request.match_info["id"]]:
            sub = await self._owned(request, key)
            updated = sub.model_copy(
                update={"enabled": False, "disabled_reason": body.reason, "updated_at": utcnow()}
            )
            await self.store.put(updated)
        return _json(SubscriptionView.of(updated))

    async def resend(self, request: web.Request) -> web.Response:
        key = _principal(request, Scope.MESSAGES)
        message_id = request.match_info["message_id"]
        sub_id = request.query.get("subscription_id")
        if not sub_id:
            raise ApiError(
                422, "validation_error", "subscription_id: required query parameter", "subscription_id"
            )
        sub = await self.store.get(sub_id)
        if sub is None or not key.may_access(sub.owner):
            raise ApiError(404, "not_found", f"subscription {sub_id} not found")
        if not sub.enabled:
            raise ApiError(409, "endpoint_disabled", "the subscription is disabled; enable it first")
        if self.resend_cb is None:
            raise ApiError(501, "not_implemented", "resend is not available in this deployment")
        if not await self.resend_cb(message_id, sub):
            raise ApiError(404, "not_found", f"message {message_id} not found")
        return _json(ResendResponse(message_id=message_id, subscription_id=sub.id), 202)

    async def recover(self, request: web.Request) -> web.Response:
        key = _principal(request, Scope.MESSAGES)
        body: RecoverRequest = await _parse(request, RecoverRequest)
        sub = await self._owned(request, key)
        if body.since > utcnow():
            raise ApiError(422, "validation_error", "since: must not be in the future", "since")
        if not sub.enabled:
            raise ApiError(409, "endpoint_disabled", "the subscription is disabled; enable it first")
        if self.recover_cb is None:
            raise ApiError(501, "not_implemented", "recover is not available in this deployment")
        queued = await self.recover_cb(sub, body.since)
        return _json(RecoverResponse(subscription_id=sub.id, since=body.since, queued=queued), 202)

    # -- holdings (admin keys change them; an owner key reads its own) --

    def _holding_owner(self, request: web.Request, key: ApiKey) -> str:
        owner = request.match_info["owner"]
        if not key.may_access(owner):
            raise ApiError(404, "not_found", f"no holding for {owner}")
        return owner

    @staticmethod
    def _admin(request: web.Request) -> ApiKey:
        key = _principal(request, Scope.WRITE)
        if key.owner is not None:
            raise ApiError(403, "forbidden", "holdings are managed by the operator: an admin key is needed")
        return key

    async def list_holdings(self, request: web.Request) -> web.Response:
        key = _principal(request, Scope.READ)
        holdings = [h for h in await self.store.holdings() if key.may_access(h.owner)]
        return _json(HoldingList(data=[HoldingView.of(h) for h in holdings]))

    async def get_holding(self, request: web.Request) -> web.Response:
        key = _principal(request, Scope.READ)
        owner = self._holding_owner(request, key)
        holding = self.store.holding_of(owner)
        if holding is None:
            raise ApiError(404, "not_found", f"no holding for {owner}")
        return _json(HoldingView.of(holding))

    async def put_holding(self, request: web.Request) -> web.Response:
        self._admin(request)
        owner = request.match_info["owner"]
        if is_operator_owner(owner):
            reason = f"owner: {owner!r} is an operator owner and needs no holding"
            raise ApiError(422, "validation_error", reason, "owner")
        body: HoldingPut = await _parse(request, HoldingPut)
        try:
            holding = Holding(owner=owner, **body.model_dump())
        except ValidationError as exc:
            raise _validation_error(exc) from exc
        await self.store.put_holding(holding)
        return _json(HoldingView.of(holding))

    async def delete_holding(self, request: web.Request) -> web.Response:
        self._admin(request)
        owner = request.match_info["owner"]
        if not await self.store.delete_holding(owner):
            raise ApiError(404, "not_found", f"no holding for {owner}")
        return web.Response(status=204)


def _auth_middleware(api_keys: ApiKeyStore) -> Any:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            if request.path.startswith("/v1/"):
                scheme, _, token = request.headers.get("Authorization", "").partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    raise ApiError(401, "unauthorized", "missing 'Authorization: Bearer <api key>' header")
                key = api_keys.authenticate(token.strip())
                if key is None:
                    raise ApiError(401, "unauthorized", "unknown or revoked API key")
                request[KEY_PRINCIPAL] = key
            return await handler(request)
        except ApiError as err:
            return _error_response(err)
        except web.HTTPException as exc:
            if exc.status >= 400:
                return _error_response(ApiError(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason))
            raise

    return middleware


def create_api_app(
    store: SubscriptionStore,
    api_keys: ApiKeyStore,
    *,
    resend: ResendCallback | None = None,
    recover: RecoverCallback | None = None,
    settings: ApiSettings | None = None,
    messages: OutboundDesk | None = None,
) -> web.Application:
    from smsflow.webhooks.openapi import build_openapi  # local: the document imports this module's models

    h = _Handlers(store, settings or ApiSettings(), resend, recover)
    app = web.Application(middlewares=[_auth_middleware(api_keys)], client_max_size=256 * 1024)
    spec = orjson.dumps(build_openapi(messages_api=messages is not None))

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=spec, content_type="application/json")

    app.router.add_get("/healthz", h.healthz)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/v1/subscriptions", h.list_subscriptions)
    app.router.add_post("/v1/subscriptions", h.create_subscription)
    app.router.add_get("/v1/subscriptions/{id}", h.get_subscription)
    app.router.add_patch("/v1/subscriptions/{id}", h.update_subscription)
    app.router.add_delete("/v1/subscriptions/{id}", h.delete_subscription)
    app.router.add_post("/v1/subscriptions/{id}/rotate-secret", h.rotate_secret)
    app.router.add_post("/v1/subscriptions/{id}/enable", h.enable)
    app.router.add_post("/v1/subscriptions/{id}/disable", h.disable)
    app.router.add_post("/v1/subscriptions/{id}/recover", h.recover)
    app.router.add_post("/v1/messages/{message_id}/resend", h.resend)
    app.router.add_get("/v1/holdings", h.list_holdings)
    app.router.add_get("/v1/holdings/{owner}", h.get_holding)
    app.router.add_put("/v1/holdings/{owner}", h.put_holding)
    app.router.add_delete("/v1/holdings/{owner}", h.delete_holding)
    if messages is not None:
        add_message_routes(app, messages)
    return app
