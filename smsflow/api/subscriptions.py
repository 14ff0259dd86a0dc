"""``/v1/subscriptions``: create, read, change, delete, enable/disable a webhook subscription and rotate its
signing secret.

A key bound to an owner sees only that owner's subscriptions; another owner's id answers 404, so ids cannot
be probed. What a subscription can receive is bounded by its owner's *holding*
(``smsflow/subscriptions/holdings.py``): a filter reaching beyond it is refused (403 ``not_held``,
``error.field`` names the value), and an empty filter means "everything the owner holds". Secrets leave the
API only in the response that creates them: creating a subscription, adding an endpoint (create or PATCH),
rotating a secret.

A subscription may list more endpoints (``endpoints``: primary after its ``url``, or secondary; the double
list, docs/double-list.md). Each has its own signing secret and passes the same URL checks as ``url``.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, SecretStr, ValidationError

from smsflow.api.apikeys import ApiKey, Scope
from smsflow.api.buckets import OwnerBuckets
from smsflow.api.wire import (
    ApiError,
    Body,
    ErrorDetail,
    json_response,
    parse_body,
    principal,
    validation_error,
)
from smsflow.delivery.egress import AddressPolicy, url_refusal
from smsflow.routing.model import ListName
from smsflow.subscriptions.holdings import is_operator_owner, outside_holding
from smsflow.subscriptions.model import (
    BatchConfig,
    MessageFilter,
    SigningSecret,
    Subscription,
    WebhookEndpoint,
    utcnow,
)
from smsflow.subscriptions.store import SubscriptionStore

# The lists of MessageFilter, and how long one entry may be (numbers and signatures are short; a route id is
# whatever the config names it: 255 leaves room for any sensible one and stops 100 KB entries).
FILTER_LISTS = tuple(name for name, f in MessageFilter.model_fields.items() if f.annotation == list[str])
MAX_FILTER_ENTRY_CHARS = 255


@dataclass(frozen=True)
class ApiSettings:
    rotation_overlap_s: float = 24 * 3600.0  # how long the previous secret keeps signing after a rotation
    max_rotation_overlap_s: float = 7 * 24 * 3600.0
    max_subscriptions_per_owner: int = 100  # api.max_subscriptions_per_owner
    max_filter_entries: int = 1000  # api.max_filter_entries
    subscription_changes_per_minute: int = 60  # api.subscription_changes_per_minute
    https_only: bool = False  # default for subscriptions that do not say
    # Refuse URLs whose host is a literal blocked IP or a localhost name at creation time (the sender checks
    # resolved addresses on every connection anyway). None accepts any host (local demo).
    address_policy: AddressPolicy | None = AddressPolicy()  # noqa: RUF009 - frozen, safe to share


class EndpointPut(Body):
    """One more endpoint of the subscription, on its primary list (after ``url``) or its secondary list."""

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$", description="unique within the subscription; not main")
    role: ListName = Field(ListName.SECONDARY, description="the list the endpoint is on")
    url: str = Field(min_length=1, max_length=2048)
    secret: SecretStr | None = Field(
        None, description="whsec_ secret of this endpoint; generated for a new endpoint if absent"
    )


class SubscriptionCreate(Body):
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
    endpoints: list[EndpointPut] = Field(default_factory=list, max_length=8)


class SubscriptionUpdate(Body):
    """Fields to change; an absent field is left alone, ``null`` clears an optional one."""

    url: str | None = Field(None, min_length=1, max_length=2048)
    description: str | None = Field(None, max_length=500)
    filters: MessageFilter | None = None
    max_in_flight: int | None = Field(None, ge=1, le=1000)
    rate_limit_per_second: float | None = Field(None, gt=0, le=10_000)
    timeout_seconds: float | None = Field(None, gt=0, le=60)
    batch: BatchConfig | None = None
    https_only: bool | None = None
    endpoints: list[EndpointPut] | None = Field(
        None, description="the whole list of more endpoints; an endpoint keeps its secrets unless given one"
    )


class SecretInfo(BaseModel):
    fingerprint: str = Field(description="first 12 hex digits of SHA-256 of the secret")
    created_at: datetime
    expires_at: datetime | None

    @classmethod
    def all_of(cls, secrets: list[SigningSecret]) -> list[SecretInfo]:
        return [
            cls(fingerprint=s.fingerprint, created_at=s.created_at, expires_at=s.expires_at) for s in secrets
        ]


class EndpointView(BaseModel):
    id: str
    role: ListName
    url: str
    secrets: list[SecretInfo]


class SubscriptionView(BaseModel):
    id: str
    owner: str
    url: str
    description: str
    filters: MessageFilter
    enabled: bool
    disabled_reason: str | None
    disabled_endpoints: dict[str, str] = Field(default_factory=dict)
    max_in_flight: int
    rate_limit_per_second: float | None
    timeout_seconds: float
    batch: BatchConfig | None
    https_only: bool | None
    secrets: list[SecretInfo]
    endpoints: list[EndpointView] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, sub: Subscription) -> SubscriptionView:
        data = sub.model_dump(exclude={"secrets", "endpoints"})
        data["secrets"] = SecretInfo.all_of(sub.secrets)
        data["endpoints"] = [
            EndpointView(id=ep.id, role=ep.role, url=ep.url, secrets=SecretInfo.all_of(ep.secrets))
            for ep in sub.endpoints
        ]
        return cls(**data)


class SubscriptionUpdated(SubscriptionView):
    endpoint_secrets: dict[str, str] = Field(
        default_factory=dict, description="secrets of endpoints this request added, shown only here"
    )


class SubscriptionCreated(SubscriptionUpdated):
    secret: str = Field(description="the signing secret, shown only in this response")


class SubscriptionList(BaseModel):
    data: list[SubscriptionView]


class RotateSecretRequest(Body):
    overlap_seconds: float | None = Field(None, ge=0, description="how long the previous secret stays valid")
    endpoint: str | None = Field(None, description="an endpoint's id; default: the subscription's url (main)")


class RotateSecretResponse(BaseModel):
    secret: str = Field(description="the new signing secret, shown only in this response")
    fingerprint: str
    previous_valid_until: datetime | None


class DisableRequest(Body):
    reason: str = Field("disabled by request", max_length=500)


async def owned_subscription(store: SubscriptionStore, request: web.Request, key: ApiKey) -> Subscription:
    """The subscription named by the ``{id}`` in the path, if this key may see it (404 otherwise)."""
    sub_id = request.match_info["id"]
    sub = await store.get(sub_id)
    if sub is None or not key.may_access(sub.owner):
        raise ApiError(404, "not_found", f"subscription {sub_id} not found")
    return sub


class ChangeBudget(OwnerBuckets):
    """How many subscription changes an owner may still make: ``per_minute`` tokens per owner, refilled
    evenly over a minute (a burst of ``per_minute``, then one every ``60 / per_minute`` s).

    Every change of a subscription costs every worker and API process work beside everyone's traffic: it
    is a record of ``sms.subscriptions.v1`` each of them applies, and each rebuilds its owner's part of the
    match index (and, for a subscription with a secondary list, the double list's routes). An owner
    changing its subscriptions in a loop would keep every process doing that."""

    def __init__(self, per_minute: int, clock: Callable[[], float] | None = None) -> None:
        super().__init__(per_minute, per_minute / 60.0, clock)


class SubscriptionHandlers:
    def __init__(self, store: SubscriptionStore, settings: ApiSettings) -> None:
        self.store = store
        self.settings = settings
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._budget = ChangeBudget(settings.subscription_changes_per_minute)

    def _spend(self, key: ApiKey, owner: str) -> None:
        """Count a change of ``owner``'s subscriptions made with a tenant's key, or refuse it (429) when the
        owner has made ``api.subscription_changes_per_minute`` already. Operators' keys are not counted."""
        if key.owner is None:
            return
        wait = self._budget.take(owner)
        if wait > 0:
            most = self.settings.subscription_changes_per_minute
            raise ApiError(
                429,
                "too_many_requests",
                f"owner {owner!r} has changed its subscriptions {most} times in the last minute, the most "
                f"this deployment allows (api.subscription_changes_per_minute: {most}); retry after "
                f"{math.ceil(wait)} s",
                headers={"Retry-After": str(math.ceil(wait))},
            )

    # -- shared checks --

    def _check_url(self, url: str, https_only: bool | None, field: str = "url") -> None:
        effective = self.settings.https_only if https_only is None else https_only
        reason = url_refusal(url, https_only=effective, policy=self.settings.address_policy)
        if reason is not None:
            suffix = " for this subscription" if reason == "must be https://" else ""
            raise ApiError(422, "validation_error", f"{field}: {reason}{suffix}", field)

    def _endpoints(
        self, given: list[EndpointPut], existing: list[WebhookEndpoint], https_only: bool | None
    ) -> tuple[list[WebhookEndpoint], dict[str, str]]:
        """The subscription's endpoints from a request, and the secrets made or given for new ones.

        Every URL passes the checks of ``url`` (a secondary is no way around the egress policy); an endpoint
        that already exists keeps its secrets unless the request gives one."""
        before = {ep.id: ep for ep in existing}
        out: list[WebhookEndpoint] = []
        shown: dict[str, str] = {}
        for i, put in enumerate(given):
            self._check_url(put.url, https_only, f"endpoints[{i}].url")
            try:
                if put.secret is not None:
                    secrets = [SigningSecret.new(put.secret.get_secret_value())]
                elif put.id in before:
                    secrets = list(before[put.id].secrets)
                else:
                    secrets = [SigningSecret.new()]
                    shown[put.id] = secrets[0].value.get_secret_value()
                out.append(WebhookEndpoint(id=put.id, role=put.role, url=put.url, secrets=secrets))
            except ValidationError as exc:
                raise validation_error(exc, f"endpoints.{i}.") from exc
        return out, shown

    def _check_filter_size(self, filters: MessageFilter) -> None:
        """Bound what one subscription's filters hold (every worker and API process keeps them in memory).
        Checked here, not in MessageFilter: stored subscriptions keep loading if the limit is lowered."""
        most = self.settings.max_filter_entries
        details = []
        for name in FILTER_LISTS:
            values: list[str] = getattr(filters, name)
            if len(values) > most:
                details.append(
                    ErrorDetail(
                        code="too_many_entries",
                        field=f"filters.{name}",
                        message=f"{len(values)} entries, the most this deployment allows is {most} "
                        "(api.max_filter_entries)",
                    )
                )
            for i, value in enumerate(values):
                if len(value) > MAX_FILTER_ENTRY_CHARS:
                    details.append(
                        ErrorDetail(
                            code="invalid",
                            field=f"filters.{name}.{i}",
                            message=f"{len(value)} characters, the most is {MAX_FILTER_ENTRY_CHARS}",
                        )
                    )
                    break
        if details:
            first = details[0]
            raise ApiError(422, "validation_error", f"{first.field}: {first.message}", first.field, details)

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
        return await owned_subscription(self.store, request, key)

    def _build(self, data: dict[str, Any]) -> Subscription:
        try:
            return Subscription.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc) from exc

    async def list_subscriptions(self, request: web.Request) -> web.Response:
        key = principal(request, Scope.READ)
        owner = key.owner if key.owner is not None else request.query.get("owner")
        subs = await self.store.list(owner)
        return json_response(SubscriptionList(data=[SubscriptionView.of(s) for s in subs]))

    async def create_subscription(self, request: web.Request) -> web.Response:
        key = principal(request, Scope.WRITE)
        body: SubscriptionCreate = await parse_body(request, SubscriptionCreate)
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
        self._check_filter_size(body.filters)
        self._check_held(owner, body.filters)
        try:
            secret = SigningSecret.new(body.secret.get_secret_value() if body.secret else None)
        except ValidationError as exc:
            raise validation_error(exc, "secret.") from exc
        endpoints, shown = self._endpoints(body.endpoints, [], body.https_only)
        given = {ep.id: ep.secret.get_secret_value() for ep in body.endpoints if ep.secret is not None}
        data = body.model_dump(exclude={"secret", "owner", "endpoints"})
        sub = self._build({**data, "owner": owner, "secrets": [secret], "endpoints": endpoints})
        async with self._locks[f"owner:{owner}"]:  # two creates at once cannot both take the last place
            have, most = len(await self.store.list(owner)), self.settings.max_subscriptions_per_owner
            if have >= most:
                raise ApiError(
                    409,
                    "subscription_limit",
                    f"owner {owner!r} has {have} subscriptions, the most this deployment allows "
                    f"(api.max_subscriptions_per_owner: {most}); delete one first",
                )
            self._spend(key, owner)
            await self.store.put(sub)
        view = SubscriptionView.of(sub).model_dump()
        created = SubscriptionCreated(
            **view, secret=secret.value.get_secret_value(), endpoint_secrets={**shown, **given}
        )
        resp = json_response(created, 201)
        resp.headers["Location"] = f"/v1/subscriptions/{sub.id}"
        return resp

    async def get_subscription(self, request: web.Request) -> web.Response:
        key = principal(request, Scope.READ)
        return json_response(SubscriptionView.of(await self._owned(request, key)))

    async def update_subscription(self, request: web.Request) -> web.Response:
        key = principal(request, Scope.WRITE)
        body: SubscriptionUpdate = await parse_body(request, SubscriptionUpdate)
        changes = {name: getattr(body, name) for name in body.model_fields_set}
        for name in ("url", "description", "filters", "max_in_flight", "timeout_seconds"):
            if name in changes and changes[name] is None:
                raise ApiError(422, "validation_error", f"{name}: may not be null", name)
        async with self._locks[request.match_info["id"]]:
            sub = await self._owned(request, key)
            https_only = changes.get("https_only", sub.https_only)
            if "url" in changes or "https_only" in changes:
                self._check_url(changes.get("url", sub.url), https_only)
            if "filters" in changes:
                self._check_filter_size(changes["filters"])
                self._check_held(sub.owner, changes["filters"])
            given = changes.pop("endpoints", None)
            shown: dict[str, str] = {}
            if given is not None:
                endpoints, shown = self._endpoints(given, sub.endpoints, https_only)
            elif "https_only" in changes:
                endpoints = sub.endpoints
                for i, ep in enumerate(endpoints):  # a stricter https_only applies to every endpoint
                    self._check_url(ep.url, https_only, f"endpoints[{i}].url")
            else:
                endpoints = sub.endpoints
            data = sub.model_dump()
            data.update({k: (v.model_dump() if isinstance(v, BaseModel) else v) for k, v in changes.items()})
            data["endpoints"] = endpoints
            data["updated_at"] = utcnow()
            updated = self._build(data)
            self._spend(key, sub.owner)
            await self.store.put(updated)
        view = SubscriptionView.of(updated).model_dump()
        return json_response(SubscriptionUpdated(**view, endpoint_secrets=shown))

    async def delete_subscription(self, request: web.Request) -> web.Response:
        key = principal(request, Scope.WRITE)
        sub = await self._owned(request, key)
        self._spend(key, sub.owner)
        await self.store.delete(sub.id)
        return web.Response(status=204)

    async def rotate_secret(self, request: web.Request) -> web.Response:
        key = principal(request, Scope.WRITE)
        body: RotateSecretRequest = await parse_body(request, RotateSecretRequest, allow_empty=True)
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
            endpoint = sub.endpoint(body.endpoint) if body.endpoint is not None else sub.main_endpoint
            if endpoint is None:
                raise ApiError(
                    422, "validation_error", f"endpoint: no endpoint {body.endpoint!r}", "endpoint"
                )
            now = utcnow()
            until = now + timedelta(seconds=overlap)
            new = SigningSecret.new(now=now)
            kept = [
                s.model_copy(update={"expires_at": min(until, s.expires_at) if s.expires_at else until})
                for s in endpoint.secrets
                if s.active_at(now)
            ]
            kept = [s for s in kept if s.active_at(now)]  # a zero overlap retires the old secrets at once
            if endpoint.id == sub.main_endpoint.id:
                update: dict[str, Any] = {"secrets": [new, *kept]}
            else:
                rotated = endpoint.model_copy(update={"secrets": [new, *kept]})
                update = {"endpoints": [rotated if ep.id == endpoint.id else ep for ep in sub.endpoints]}
            self._spend(key, sub.owner)
            await self.store.put(sub.model_copy(update={**update, "updated_at": now}))
        return json_response(
            RotateSecretResponse(
                secret=new.value.get_secret_value(),
                fingerprint=new.fingerprint,
                previous_valid_until=until if kept else None,
            )
        )

    async def enable(self, request: web.Request) -> web.Response:
        key = principal(request, Scope.WRITE)
        async with self._locks[request.match_info["id"]]:
            sub = await self._owned(request, key)
            updated = sub.model_copy(
                # every endpoint back on too: one switched off alone (a 410) is re-enabled the same way
                update={
                    "enabled": True,
                    "disabled_reason": None,
                    "disabled_endpoints": {},
                    "updated_at": utcnow(),
                }
            )
            self._spend(key, sub.owner)
            await self.store.put(updated)
        return json_response(SubscriptionView.of(updated))

    async def disable(self, request: web.Request) -> web.Response:
        key = principal(request, Scope.WRITE)
        body: DisableRequest = await parse_body(request, DisableRequest, allow_empty=True)
        async with self._locks[request.match_info["id"]]:
            sub = await self._owned(request, key)
            updated = sub.model_copy(
                update={"enabled": False, "disabled_reason": body.reason, "updated_at": utcnow()}
            )
            self._spend(key, sub.owner)
            await self.store.put(updated)
        return json_response(SubscriptionView.of(updated))


def add_subscription_routes(app: web.Application, store: SubscriptionStore, settings: ApiSettings) -> None:
    h = SubscriptionHandlers(store, settings)
    app.router.add_get("/v1/subscriptions", h.list_subscriptions)
    app.router.add_post("/v1/subscriptions", h.create_subscription)
    app.router.add_get("/v1/subscriptions/{id}", h.get_subscription)
    app.router.add_patch("/v1/subscriptions/{id}", h.update_subscription)
    app.router.add_delete("/v1/subscriptions/{id}", h.delete_subscription)
    app.router.add_post("/v1/subscriptions/{id}/rotate-secret", h.rotate_secret)
    app.router.add_post("/v1/subscriptions/{id}/enable", h.enable)
    app.router.add_post("/v1/subscriptions/{id}/disable", h.disable)
