"""Routes, scopes, routing policies, thresholds, overrides, and the ``routing`` config section.

A *route* is one way traffic reaches us (a carrier connection and the number pool it serves) or leaves us (a
customer webhook endpoint). A *policy* gives a scope (a number, a prefix, a country or a subscription) a
primary and a secondary list of routes, the thresholds that turn figures into health, and the hold-down that
keeps decisions from flapping. Errors name the field path (``routing.policies[0].primary[1]: unknown route
'x'``), as the rest of the config does; the config loader calls ``parse_policies`` with its own path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from smsflow.fieldpath import validation_messages

MS = 1000


class PolicyError(ValueError):
    """A routing section or an override that cannot be used; the message names every bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


RouteId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
_E164_PREFIX = re.compile(r"^\+[0-9]{1,15}$")


class RouteKind(StrEnum):
    CARRIER = "carrier"  # a carrier connection (its binds) and the number pool it serves
    WEBHOOK = "webhook"  # a customer webhook endpoint


class Route(_Strict):
    id: RouteId
    kind: RouteKind
    carrier: str | None = Field(default=None, description="carriers[].id of the connection (carrier routes)")
    pool: tuple[str, ...] = Field(
        default=(), description="E.164 numbers or prefixes this carrier route serves"
    )
    url: str | None = Field(default=None, description="the endpoint URL (webhook routes)")
    test_numbers: tuple[str, ...] = Field(
        default=(),
        description="carrier routes: our own numbers a probe submit_sm is sent to; the carrier hands it "
        "back as an MO and the round trip is the route's probe latency",
    )
    probe_source: str | None = Field(
        default=None, description="carrier routes: the sender of probes (default: the first pool entry)"
    )

    @field_validator("test_numbers")
    @classmethod
    def _test_numbers_are_e164(cls, numbers: tuple[str, ...]) -> tuple[str, ...]:
        for i, entry in enumerate(numbers):
            if not _E164_PREFIX.match(entry):
                raise ValueError(f"test_numbers[{i}]: {entry!r} is not an E.164 number like +85230009999")
        return numbers

    @field_validator("pool")
    @classmethod
    def _pool_is_e164(cls, pool: tuple[str, ...]) -> tuple[str, ...]:
        for i, entry in enumerate(pool):
            if not _E164_PREFIX.match(entry):
                raise ValueError(f"pool[{i}]: {entry!r} is not an E.164 number or prefix like +8526")
        return pool

    @model_validator(mode="after")
    def _kind_fields(self) -> Route:
        if self.kind is RouteKind.CARRIER and not self.carrier:
            raise ValueError("carrier: a carrier route names its carrier connection")
        if self.kind is RouteKind.WEBHOOK and not (self.url or "").startswith(("https://", "http://")):
            raise ValueError("url: a webhook route needs an http(s) URL")
        if self.kind is RouteKind.WEBHOOK and self.test_numbers:
            raise ValueError("test_numbers: only carrier routes carry probes")
        return self


class ScopeKind(StrEnum):
    NUMBER = "number"  # one E.164 number
    PREFIX = "prefix"  # a number prefix, i.e. a pool
    COUNTRY = "country"  # ISO 3166 alpha-2
    SUBSCRIPTION = "subscription"  # a webhook subscription id


_SCOPE_VALUE = {
    ScopeKind.NUMBER: (re.compile(r"^\+[1-9][0-9]{1,14}$"), "an E.164 number like +85260001234"),
    ScopeKind.PREFIX: (_E164_PREFIX, "an E.164 prefix like +8526"),
    ScopeKind.COUNTRY: (re.compile(r"^[A-Z]{2}$"), "an ISO 3166 alpha-2 code like HK"),
    ScopeKind.SUBSCRIPTION: (re.compile(r"^[A-Za-z0-9._-]{1,128}$"), "a subscription id"),
}


class Scope(_Strict):
    """What a policy applies to. Written ``kind:value`` (``prefix:+8526``): the key of its decisions."""

    kind: ScopeKind
    value: str

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            kind, sep, value = data.partition(":")
            if not sep:
                raise ValueError(f"{data!r}: write a scope as kind:value, e.g. prefix:+8526 or country:HK")
            return {"kind": kind, "value": value}
        return data

    @model_validator(mode="after")
    def _value_fits_kind(self) -> Scope:
        pattern, what = _SCOPE_VALUE[self.kind]
        if not pattern.match(self.value):
            raise ValueError(f"{self.kind.value} scope needs {what}, got {self.value!r}")
        return self

    @property
    def key(self) -> str:
        return f"{self.kind.value}:{self.value}"

    def __str__(self) -> str:
        return self.key

    @property
    def route_kind(self) -> RouteKind:
        # Number scopes choose carrier routes; a subscription chooses among webhook endpoints.
        return RouteKind.WEBHOOK if self.kind is ScopeKind.SUBSCRIPTION else RouteKind.CARRIER


# Figures where a smaller value is worse; for every other figure a larger value is worse.
LOWER_IS_WORSE = frozenset({"bound_sessions", "throughput_ratio", "success_rate"})


class Limits(_Strict):
    """Where a figure turns a route degraded and down; None = this figure never causes that state."""

    degraded: float | None = None
    down: float | None = None


_DEFAULT_LIMITS: dict[str, dict[str, float | None]] = {
    # carrier routes
    "bound_sessions": {"degraded": None, "down": 1},  # no bound session: nothing can arrive
    "bind_failures": {"degraded": 1, "down": 3},  # refused binds + lost sessions per window
    "enquire_link_rtt_ms": {"degraded": 1000, "down": 5000},
    "error_rate": {"degraded": 0.05, "down": 0.25},
    "temporary_error_rate": {"degraded": 0.10, "down": 0.50},
    "throughput_ratio": {"degraded": 0.2, "down": 0.02},  # window count / the route's own baseline
    "probe_latency_ms": {"degraded": 5000, "down": 20000},
    "probe_loss": {"degraded": 0.2, "down": 0.5},
    # webhook endpoints
    "latency_p95_ms": {"degraded": 2000, "down": 10000},
    "success_rate": {"degraded": 0.95, "down": 0.5},
    "timeout_rate": {"degraded": 0.05, "down": 0.5},
    "throttled_rate": {"degraded": 0.2, "down": 0.8},
    "connect_error_rate": {"degraded": 0.05, "down": 0.5},
    # both: written by the decision stage only once a route's records stopped for stale_after_windows steps
    "stale_steps": {"degraded": None, "down": 1},
}


def _limits(name: str) -> Any:
    return Field(default_factory=lambda: Limits(**_DEFAULT_LIMITS[name]))


class Thresholds(_Strict):
    """Per-figure limits, and how many samples a rate needs before it counts (one failure in two is noise)."""

    bound_sessions: Limits = _limits("bound_sessions")
    bind_failures: Limits = _limits("bind_failures")
    enquire_link_rtt_ms: Limits = _limits("enquire_link_rtt_ms")
    error_rate: Limits = _limits("error_rate")
    temporary_error_rate: Limits = _limits("temporary_error_rate")
    throughput_ratio: Limits = _limits("throughput_ratio")
    probe_latency_ms: Limits = _limits("probe_latency_ms")
    probe_loss: Limits = _limits("probe_loss")
    latency_p95_ms: Limits = _limits("latency_p95_ms")
    success_rate: Limits = _limits("success_rate")
    timeout_rate: Limits = _limits("timeout_rate")
    throttled_rate: Limits = _limits("throttled_rate")
    connect_error_rate: Limits = _limits("connect_error_rate")
    stale_steps: Limits = _limits("stale_steps")
    min_outcomes: int = Field(default=10, ge=1, description="carrier results before error rates count")
    min_probes: int = Field(default=3, ge=1, description="resolved probes before probe loss counts")
    min_attempts: int = Field(default=5, ge=1, description="webhook attempts before its rates count")
    busy_baseline: float = Field(
        default=30, gt=0, description="messages per window above which a route is 'normally busy'"
    )

    @model_validator(mode="before")
    @classmethod
    def _merge_partial_limits(cls, data: Any) -> Any:
        # `probe_latency_ms: {degraded: 3000}` keeps the default `down`; a partial override must not
        # silently switch the other limit off.
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, given in data.items():
            if name in _DEFAULT_LIMITS and isinstance(given, dict):
                merged[name] = {**_DEFAULT_LIMITS[name], **given}
        return merged

    @model_validator(mode="after")
    def _limits_in_order(self) -> Thresholds:
        for name in _DEFAULT_LIMITS:
            lim: Limits = getattr(self, name)
            if lim.degraded is None or lim.down is None:
                continue
            if name in LOWER_IS_WORSE and not lim.degraded > lim.down:
                raise ValueError(f"{name}: degraded ({lim.degraded}) must be above down ({lim.down})")
            if name not in LOWER_IS_WORSE and not lim.degraded < lim.down:
                raise ValueError(f"{name}: degraded ({lim.degraded}) must be below down ({lim.down})")
        return self

    def limits(self, figure: str) -> Limits:
        return getattr(self, figure)  # type: ignore[no-any-return]


class WindowSpec(_Strict):
    """How the health stage windows observations; one setting for the whole stage, not per policy."""

    size_s: int = Field(default=60, ge=1, description="hopping window length")
    step_s: int = Field(default=10, ge=1, description="a health record per route every step")
    probe_timeout_s: int = Field(default=30, ge=1, description="a probe not back by then is lost")
    baseline_half_life_s: int = Field(
        default=1800, ge=1, description="how fast a route's own throughput baseline forgets"
    )

    @model_validator(mode="after")
    def _size_is_whole_steps(self) -> WindowSpec:
        if self.size_s % self.step_s:
            raise ValueError(f"size_s: must be a multiple of step_s ({self.step_s}), got {self.size_s}")
        return self

    @property
    def size_ms(self) -> int:
        return self.size_s * MS

    @property
    def step_ms(self) -> int:
        return self.step_s * MS


class ListName(StrEnum):
    PRIMARY = "primary"
    SECONDARY = "secondary"

    @property
    def other(self) -> ListName:
        return ListName.SECONDARY if self is ListName.PRIMARY else ListName.PRIMARY


class PolicySource(StrEnum):
    CONFIG = "config"  # the config file's routing.policies
    API = "api"  # PUT /v1/routes/policies/{scope} (sms.routes.policies.v1); wins over the config's
    SUBSCRIPTION = "subscription"  # a subscription's primary and secondary endpoints


class RoutingPolicy(_Strict):
    scope: Scope
    primary: tuple[RouteId, ...] = Field(min_length=1)
    secondary: tuple[RouteId, ...] = Field(min_length=1)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    hold_down_s: int = Field(
        default=60,
        ge=1,
        description="failback only after the primary is healthy this long; least gap "
        "between two automatic switches",
    )

    @property
    def hold_down_ms(self) -> int:
        return self.hold_down_s * MS

    # Where the policy comes from and, for an API policy, its version (1, 2, ... per scope): every decision
    # records both, so an audit can tell which lists and thresholds decided it.
    source: PolicySource = PolicySource.CONFIG
    version: int | None = Field(default=None, ge=1)

    def routes(self, name: ListName) -> tuple[str, ...]:
        return self.primary if name is ListName.PRIMARY else self.secondary


class OpsWebhook(_Strict):
    """Where "both degraded" alerts are POSTed for people (optional): signed like customer webhooks."""

    url: str = Field(pattern=r"^https?://", description="the ops endpoint (a pager's or chat's webhook)")
    secret_env: str = Field(min_length=1, description="env var holding the whsec_ signing secret")
    timeout_s: float = Field(default=10.0, gt=0)
    retry_delays_s: tuple[float, ...] = Field(
        default=(1.0, 5.0, 30.0, 120.0), description="waits before each retry; the alert is dropped after"
    )


class RoutingSection(_Strict):
    """The ``routing`` section of the config file (see docs/double-list.md for an example)."""

    window: WindowSpec = Field(default_factory=WindowSpec)
    probe_interval_s: float = Field(
        default=10.0, gt=0, description="a probe through each carrier route with test numbers this often"
    )
    stale_after_windows: int = Field(
        default=3,
        ge=1,
        description="a route whose health records stop arriving (or whose connector stops reporting) for "
        "this many steps is judged down",
    )
    report_interval_s: float = Field(
        default=2.0, gt=0, description="how often the connector reports each route's counters and binds"
    )
    subscription_lists: bool = Field(
        default=False,
        description="run the double-list stage for subscriptions with secondary endpoints (made through the "
        "API or the CLI) even when this section has no policy; whenever the stage runs, each such "
        "subscription gets a policy of its own, as if written here",
    )
    routes: tuple[Route, ...] = ()
    policies: tuple[RoutingPolicy, ...] = ()
    ops_webhook: OpsWebhook | None = Field(
        default=None, description="POST each routes_both_degraded / _cleared alert here, signed, with retries"
    )

    @property
    def stage_runs(self) -> bool:
        """Whether the worker runs the double-list stage (streams/routes.py): a policy here, subscriptions'
        lists asked for, or a carrier route (an operator may give it a policy through the API at any time)."""
        return (
            bool(self.policies)
            or self.subscription_lists
            or any(r.kind is RouteKind.CARRIER for r in self.routes)
        )

    def route(self, route_id: str) -> Route:
        return next(r for r in self.routes if r.id == route_id)

    def policy(self, scope: str) -> RoutingPolicy | None:
        return next((p for p in self.policies if p.scope.key == scope), None)

    def for_number(self, number: str, country: str | None = None) -> RoutingPolicy | None:
        """The policy that governs an E.164 number: its own, else the longest prefix, else its country."""
        best: tuple[int, RoutingPolicy] | None = None
        for p in self.policies:
            kind, value = p.scope.kind, p.scope.value
            if kind is ScopeKind.NUMBER and value == number:
                rank = 100  # longer than any prefix can be
            elif kind is ScopeKind.PREFIX and number.startswith(value):
                rank = len(value)
            elif kind is ScopeKind.COUNTRY and country is not None and value == country:
                rank = 0
            else:
                continue
            if best is None or rank > best[0]:
                best = (rank, p)
        return best[1] if best else None

    def for_subscription(self, subscription_id: str) -> RoutingPolicy | None:
        return self.policy(f"{ScopeKind.SUBSCRIPTION.value}:{subscription_id}")


def policy_errors(policy: RoutingPolicy, routes: Mapping[str, Route], where: str) -> list[str]:
    """What one policy gets wrong against the section's routes (unknown, of the wrong kind, listed twice)."""
    errors: list[str] = []
    listed: set[str] = set()
    for name in ListName:
        for j, route_id in enumerate(policy.routes(name)):
            at = f"{where}.{name.value}[{j}]"
            route = routes.get(route_id)
            if route is None:
                errors.append(f"{at}: unknown route {route_id!r}")
                continue
            if route.kind is not policy.scope.route_kind:
                errors.append(
                    f"{at}: route {route_id!r} is a {route.kind.value} route; a {policy.scope.kind.value} "
                    f"scope lists {policy.scope.route_kind.value} routes"
                )
            if route_id in listed:
                errors.append(f"{at}: route {route_id!r} is listed twice (a list cannot back itself up)")
            listed.add(route_id)
    return errors


def _cross_checks(section: RoutingSection, path: str) -> list[str]:
    errors: list[str] = []
    seen: dict[str, Route] = {}
    for i, route in enumerate(section.routes):
        if route.id in seen:
            errors.append(f"{path}.routes[{i}].id: duplicate route id {route.id!r}")
        seen.setdefault(route.id, route)
    scopes: set[str] = set()
    for i, policy in enumerate(section.policies):
        where = f"{path}.policies[{i}]"
        if policy.scope.key in scopes:
            errors.append(f"{where}.scope: a second policy for {policy.scope.key!r}")
        scopes.add(policy.scope.key)
        if policy.source is not PolicySource.CONFIG or policy.version is not None:
            errors.append(f"{where}: source and version are set by the API, not in the config")
        errors += policy_errors(policy, seen, where)
    return errors


def with_api_policies(section: RoutingSection, api: Iterable[RoutingPolicy]) -> RoutingSection:
    """``section`` with the API's policies: one for a scope the config also has replaces the config's (the
    operator's latest word wins; deleting it brings the config's back), the others are added."""
    mine = {p.scope.key: p for p in api}
    if not mine:
        return section
    kept = [p for p in section.policies if p.scope.key not in mine]
    added = [mine[k] for k in sorted(mine)]
    return section.model_copy(update={"policies": (*kept, *added)})


def routing_errors(section: RoutingSection, path: str = "routing") -> list[str]:
    """What a well-formed section still gets wrong across its fields (unknown or mixed routes, duplicates)."""
    return _cross_checks(section, path)


def parse_policies(data: Any, path: str = "routing") -> RoutingSection:
    """Validate the ``routing`` config section; ``path`` is where the loader found it (for messages)."""
    if data is None:
        return RoutingSection()
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: must be a mapping with routes and policies")
    try:
        section = RoutingSection.model_validate(data)
    except ValidationError as exc:
        raise PolicyError("\n".join(validation_messages(exc, path))) from None
    errors = _cross_checks(section, path)
    if errors:
        raise PolicyError("\n".join(errors))
    return section


class Pin(StrEnum):
    PRIMARY = "primary"
    SECONDARY = "secondary"
    AUTO = "auto"  # clears a pin: health decides again


class Override(_Strict):
    """An operator's pin on one scope, audited on the decisions topic. Times are epoch milliseconds."""

    scope: Scope
    pin: Pin
    reason: str = Field(min_length=1, max_length=500)
    actor: str = Field(min_length=1, max_length=200)
    at: int = Field(ge=0, description="when the operator asked")
    expires_at: int | None = Field(
        default=None, description="required for a pin: forgotten pins cause outages"
    )

    @model_validator(mode="after")
    def _pins_expire(self) -> Override:
        if self.pin is Pin.AUTO:
            return self
        if self.expires_at is None:
            raise ValueError("expires_at: a pin needs an expiry (a forgotten pin outlives the outage)")
        if self.expires_at <= self.at:
            raise ValueError(f"expires_at: must be after at ({self.at}), got {self.expires_at}")
        return self

    @property
    def pinned(self) -> ListName | None:
        return None if self.pin is Pin.AUTO else ListName(self.pin.value)


def parse_override(data: Any, path: str = "override") -> Override:
    """Validate an override as it comes from the API or the CLI."""
    try:
        return Override.model_validate(data)
    except ValidationError as exc:
        raise PolicyError("\n".join(validation_messages(exc, path))) from None
