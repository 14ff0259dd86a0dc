"""Webhook subscriptions, attempt results and delivery events, and their wire formats.

Topic ``sms.subscriptions.v1`` (compacted): key = subscription id (UTF-8), value = the JSON document made by
:func:`subscription_to_record` with every signing secret sealed by :class:`SecretBox`; a tombstone (value
``None``) deletes the subscription. Topic ``sms.delivery.v1`` carries :meth:`DeliveryEvent.to_json`.
"""

from __future__ import annotations

import secrets as _random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator

from smsflow.delivery.signing import decode_secret, generate_secret, secret_fingerprint
from smsflow.routing.model import ListName

if TYPE_CHECKING:  # only the topic codec needs `cryptography`; the rest of the model works without it
    from smsflow.subscriptions.secretbox import SecretBox

SUBSCRIPTION_RECORD_FORMAT = "smsflow.subscription/1"
MAIN_ENDPOINT = "main"  # the endpoint id of a subscription's own url: always first on its primary list
MAX_ROUTE_ID = 64  # a webhook route id (`<subscription id>.<endpoint id>`) is a routing RouteId


# Subscription.main_endpoint, built once per (url, secrets list): every attempt asks for it several times.
# Not a field or private attribute (pydantic compares those); the entry holds the list, so its id is not
# reused while it is in here.
_MAIN_ENDPOINTS: dict[tuple[str, int], tuple[list[SigningSecret], WebhookEndpoint]] = {}
_MAIN_ENDPOINTS_MAX = 8192


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_subscription_id() -> str:
    return "sub_" + _random.token_hex(12)


def redact_url(url: str) -> str:
    """The URL without user:password, for logs and events (the query is kept: receivers route on it)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def number_digits(number: str) -> str:
    """Compare numbers on their digits: '+86 138-0013' and '8613800...' name the same subscriber."""
    return "".join(ch for ch in number if ch.isdigit())


def check_webhook_url(v: str) -> str:
    """Validator body for every webhook URL (a subscription's own and its other endpoints')."""
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("has no host")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise ValueError("has an invalid port") from exc
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    return v


def require_digits(numbers: list[str]) -> list[str]:
    """Validator body for lists of numbers or prefixes: each must have at least one digit."""
    for i, number in enumerate(numbers):
        if not number_digits(number):
            raise ValueError(f"[{i}] {number!r} has no digits")
    return numbers


class SigningSecret(BaseModel):
    """One ``whsec_`` secret. ``expires_at`` is set when a newer secret replaces it (rotation overlap)."""

    model_config = ConfigDict(frozen=True)

    value: SecretStr
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None

    @field_validator("value")
    @classmethod
    def _well_formed(cls, v: SecretStr) -> SecretStr:
        decode_secret(v.get_secret_value())
        return v

    @classmethod
    def new(cls, value: str | None = None, now: datetime | None = None) -> SigningSecret:
        return cls(value=SecretStr(value or generate_secret()), created_at=now or utcnow())

    @property
    def fingerprint(self) -> str:
        return secret_fingerprint(self.value.get_secret_value())

    def active_at(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


def secrets_at(secrets: list[SigningSecret], now: datetime | None = None) -> list[str]:
    """Secrets to sign with now, newest first. If all expired (should not happen) the newest still signs:
    an unsigned webhook is never sent."""
    at = now or utcnow()
    active = [s.value.get_secret_value() for s in secrets if s.active_at(at)]
    return active or [secrets[0].value.get_secret_value()]


class WebhookEndpoint(BaseModel):
    """One place a subscription's webhooks may go, on its primary or its secondary list (docs/double-list.md).

    Each endpoint signs with its own secrets; the ``webhook-id`` is the message's whichever endpoint carries
    it, so a receiver behind both endpoints can drop the second copy. The subscription's own ``url`` and
    ``secrets`` are the endpoint ``main``, first on the primary list.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$", description="unique within the subscription")
    role: ListName = Field(ListName.SECONDARY, description="the list the endpoint is on")
    url: str = Field(min_length=1, max_length=2048)
    secrets: list[SigningSecret] = Field(
        default_factory=lambda: [SigningSecret.new()], min_length=1, description="newest first"
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        return check_webhook_url(v)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, (redact_url(value) if name == "url" else value)

    def signing_secrets(self, now: datetime | None = None) -> list[str]:
        return secrets_at(self.secrets, now)


class BatchConfig(BaseModel):
    """Deliver an array of up to ``max_batch_size`` messages per POST, waiting at most ``max_wait_ms``."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(100, ge=1, le=1000)
    max_wait_ms: int = Field(1000, ge=0, le=60_000)


def private_of(model: BaseModel) -> dict[str, Any]:
    """A model's private attributes, read directly: reading one as ``model._name`` goes through pydantic's
    ``__getattr__`` (~1.8 µs), on paths that run for every message and every subscription."""
    return model.__pydantic_private__  # type: ignore[return-value] # set for every model with private attrs


@dataclass(frozen=True, slots=True)
class FilterSets:
    """A filter's lists as sets of what is compared (digits; casefolded signatures)."""

    numbers: frozenset[str]
    prefixes: frozenset[str]
    countries: frozenset[str]
    signatures: frozenset[str]
    routes: frozenset[str]


def _has_listed_prefix(digits: str, prefixes: frozenset[str]) -> bool:
    """``digits`` starts with one of ``prefixes``: one of its own prefixes is listed (as many set look-ups as
    it has digits, however many prefixes there are)."""
    return any(digits[:i] in prefixes for i in range(1, len(digits) + 1))


class MessageFilter(BaseModel):
    """Which inbound messages a subscription wants.

    Every non-empty criterion must hold (AND); within one criterion any listed value may match (OR). The
    destination criterion is satisfied by an exact number *or* a prefix. An empty filter matches everything
    here; what a subscription receives is further bounded by its owner's holding (``holdings.receives``).
    """

    model_config = ConfigDict(extra="forbid")

    destination_numbers: list[str] = Field(default_factory=list)
    destination_prefixes: list[str] = Field(default_factory=list)
    countries: list[str] = Field(default_factory=list, description="ISO 3166-1 alpha-2 codes")
    otp_only: bool = False
    sender_signatures: list[str] = Field(default_factory=list)
    route_ids: list[str] = Field(default_factory=list)

    # Each list as a set, computed once: every inbound message is matched against every subscription, so the
    # cost of a match must not grow with a customer's lists (15,000 numbers and 5,000 prefixes cost 10-25 ms
    # per message, of everyone's traffic, when they were read as lists; 9 µs as sets).
    _sets: FilterSets = PrivateAttr(default=None)  # type: ignore[assignment] # set by model_post_init

    def model_post_init(self, context: Any, /) -> None:
        self._sets = FilterSets(
            numbers=frozenset(number_digits(n) for n in self.destination_numbers),
            prefixes=frozenset(number_digits(p) for p in self.destination_prefixes),
            countries=frozenset(self.countries),
            signatures=frozenset(s.strip().casefold() for s in self.sender_signatures),
            routes=frozenset(self.route_ids),
        )

    @field_validator("destination_numbers", "destination_prefixes")
    @classmethod
    def _has_digits(cls, v: list[str]) -> list[str]:
        return require_digits(v)

    @field_validator("countries")
    @classmethod
    def _iso_country(cls, v: list[str]) -> list[str]:
        out = []
        for i, code in enumerate(v):
            if len(code) != 2 or not code.isascii() or not code.isalpha():
                raise ValueError(f"[{i}] {code!r} is not an ISO 3166-1 alpha-2 code")
            out.append(code.upper())
        return out

    def matches(self, message: Mapping[str, Any]) -> bool:
        """Whether ``message`` passes the filter; the cost does not depend on the lists' lengths."""
        sets: FilterSets = private_of(self)["_sets"]
        if sets.numbers or sets.prefixes:
            to = number_digits(str(message.get("to_number") or ""))
            if to not in sets.numbers and not (sets.prefixes and _has_listed_prefix(to, sets.prefixes)):
                return False
        if sets.countries and str(message.get("country_code") or "").upper() not in sets.countries:
            return False
        if self.otp_only and not message.get("otp"):
            return False
        if sets.signatures:
            signature = message.get("sender_signature")
            if not signature or str(signature).strip().casefold() not in sets.signatures:
                return False
        return not (sets.routes and message.get("route_id") not in sets.routes)


class Subscription(BaseModel):
    """A customer endpoint and what to send it. ``repr`` masks secrets and URL credentials."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    id: str = Field(default_factory=new_subscription_id, pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    owner: str = Field(min_length=1, max_length=128, description="customer that owns the endpoint")
    url: str = Field(min_length=1, max_length=2048)
    description: str = Field("", max_length=500)
    secrets: list[SigningSecret] = Field(
        default_factory=lambda: [SigningSecret.new()], min_length=1, description="newest first"
    )
    filters: MessageFilter = Field(default_factory=MessageFilter)
    enabled: bool = True
    disabled_reason: str | None = None
    disabled_endpoints: dict[str, str] = Field(
        default_factory=dict,
        description="endpoints switched off alone (410, circuit), id -> reason; the others keep receiving",
    )
    max_in_flight: int = Field(10, ge=1, le=1000, description="concurrent requests to this endpoint")
    rate_limit_per_second: float | None = Field(None, gt=0, le=10_000)
    timeout_seconds: float = Field(10.0, gt=0, le=60)
    batch: BatchConfig | None = None
    https_only: bool | None = Field(None, description="overrides the sender's default when set")
    endpoints: list[WebhookEndpoint] = Field(
        default_factory=list,
        max_length=8,
        description="more endpoints: on the primary list after url, or on the secondary list, in this order",
    )
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        return check_webhook_url(v)

    @model_validator(mode="after")
    def _endpoint_ids(self) -> Subscription:
        seen = {MAIN_ENDPOINT}
        for i, ep in enumerate(self.endpoints):
            if ep.id in seen:
                what = "is the subscription's own url" if ep.id == MAIN_ENDPOINT else "is used twice"
                raise ValueError(f"endpoints[{i}].id: {ep.id!r} {what}")
            seen.add(ep.id)
            if len(self.route_id(ep.id)) > MAX_ROUTE_ID:
                raise ValueError(
                    f"endpoints[{i}].id: route id {self.route_id(ep.id)!r} is longer than {MAX_ROUTE_ID}"
                )
        return self

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, (redact_url(value) if name == "url" else value)

    def matches(self, message: Mapping[str, Any]) -> bool:
        """Filter match only; callers also check ``enabled`` (a disabled endpoint still *matches*)."""
        return self.filters.matches(message)

    def signing_secrets(self, now: datetime | None = None) -> list[str]:
        return secrets_at(self.secrets, now)

    def route_id(self, endpoint_id: str) -> str:
        """The endpoint's route id in the double list (health records, decisions' evidence)."""
        return f"{self.id}.{endpoint_id}"

    @property
    def main_endpoint(self) -> WebhookEndpoint:
        key = (self.url, id(self.secrets))
        cached = _MAIN_ENDPOINTS.get(key)
        if cached is not None and cached[0] is self.secrets:
            return cached[1]
        # built without validation: the fields were validated as the subscription's own
        ep = WebhookEndpoint.model_construct(
            id=MAIN_ENDPOINT, role=ListName.PRIMARY, url=self.url, secrets=self.secrets
        )
        if len(_MAIN_ENDPOINTS) >= _MAIN_ENDPOINTS_MAX:
            _MAIN_ENDPOINTS.clear()
        _MAIN_ENDPOINTS[key] = (self.secrets, ep)
        return ep

    def endpoint_list(self, role: ListName) -> list[WebhookEndpoint]:
        """The endpoints on one list, in order; with no other endpoints, the primary list is ``[main]``."""
        listed = [ep for ep in self.endpoints if ep.role is role]
        return [self.main_endpoint, *listed] if role is ListName.PRIMARY else listed

    def endpoint_enabled(self, endpoint_id: str) -> bool:
        """Whether this endpoint may be sent to (the subscription as a whole is ``enabled``)."""
        return endpoint_id not in self.disabled_endpoints

    def enabled_endpoints(self) -> list[WebhookEndpoint]:
        """Every endpoint not switched off alone, both lists, in order."""
        return [ep for name in ListName for ep in self.endpoint_list(name) if self.endpoint_enabled(ep.id)]

    def endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        if endpoint_id == MAIN_ENDPOINT:
            return self.main_endpoint
        return next((ep for ep in self.endpoints if ep.id == endpoint_id), None)


def subscription_to_record(sub: Subscription, box: SecretBox) -> bytes:
    """The ``sms.subscriptions.v1`` value: JSON, secrets sealed with the subscription id as context."""
    doc = sub.model_dump(mode="json")
    doc["secrets"] = _sealed(sub.secrets, box, sub.id)
    doc["endpoints"] = [
        {**ep.model_dump(mode="json"), "secrets": _sealed(ep.secrets, box, f"{sub.id}/{ep.id}")}
        for ep in sub.endpoints
    ]
    doc["format"] = SUBSCRIPTION_RECORD_FORMAT
    return orjson.dumps(doc)


def _sealed(secrets: list[SigningSecret], box: SecretBox, context: str) -> list[dict[str, Any]]:
    return [
        {
            "sealed": box.seal(s.value.get_secret_value(), context),
            "created_at": s.created_at.isoformat(),
            "expires_at": s.expires_at.isoformat() if s.expires_at else None,
        }
        for s in secrets
    ]


def _opened(sealed: list[dict[str, Any]], box: SecretBox, context: str) -> list[dict[str, Any]]:
    return [
        {
            "value": box.open(s["sealed"], context),
            "created_at": s["created_at"],
            "expires_at": s.get("expires_at"),
        }
        for s in sealed
    ]


def subscription_from_record(value: bytes, box: SecretBox) -> Subscription:
    doc = orjson.loads(value)
    if doc.pop("format", None) != SUBSCRIPTION_RECORD_FORMAT:
        raise ValueError(f"not a {SUBSCRIPTION_RECORD_FORMAT} record")
    sub_id = doc["id"]
    doc["secrets"] = _opened(doc["secrets"], box, sub_id)
    # records written before endpoints existed have none: the subscription's url is its whole primary list
    doc["endpoints"] = [
        {**ep, "secrets": _opened(ep["secrets"], box, f"{sub_id}/{ep['id']}")}
        for ep in doc.get("endpoints", [])
    ]
    return Subscription.model_validate(doc)


def subscription_record_key(subscription_id: str) -> bytes:
    return subscription_id.encode("utf-8")


def subscription_from_kafka(
    key: bytes, value: bytes | None, box: SecretBox
) -> tuple[str, Subscription | None]:
    """Decode one record of the compacted topic; ``(id, None)`` is a tombstone (deleted subscription)."""
    sub_id = key.decode("utf-8")
    if value is None:
        return sub_id, None
    sub = subscription_from_record(value, box)
    if sub.id != sub_id:
        raise ValueError(f"record key {sub_id!r} does not match subscription id {sub.id!r}")
    return sub_id, sub
