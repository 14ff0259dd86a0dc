"""``/v1/routes``: the double list's current state, the number lookup, and operators' overrides.

State comes from sms.routes.decisions.v1 (compacted, key = scope): every decision carries the scope's full
state, so the latest record per scope *is* the scope's state; ``RouteBoard`` follows the topic. An override
is not applied here: it is written to sms.routes.overrides.v1 and the decision stage turns it into an
``override_set`` / ``override_cleared`` decision with the actor and reason: the decisions topic is the audit
log.

- ``GET /v1/routes`` (read key): every policy with its state.
- ``GET /v1/routes/{scope}/active`` (read key): where a scope's traffic goes now: the active list, its first
  healthy route (else its first), that route's carrier and number pool. ``{scope}`` is a scope
  (``prefix:+8526``) or a number (``+85260001234``), which is looked up to the policy that governs it.
- ``PUT /v1/routes/{scope}/override`` (admin key): pin ``primary`` / ``secondary`` with a reason and an
  expiry (``expires_in_s`` or ``expires_at``), or ``auto``;
- ``DELETE /v1/routes/{scope}/override`` (admin key): back to ``auto``.
- ``GET /v1/routes/policies``, ``GET|PUT|DELETE /v1/routes/policies/{scope}`` (admin key): routing policies
  made through the API (``smsflow.routing.policy_changes``): written to the compacted sms.routes.policies.v1
  with who, when, why, the version and the policy before; a copy goes to sms.routes.overrides.v1, from which
  the decision stage makes the audited ``policy_set`` / ``policy_deleted`` decision. An API policy replaces
  the config's for the same scope; deleting it brings the config's back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web
from confluent_kafka import Message
from pydantic import BaseModel, Field

from smsflow.api.apikeys import ApiKey
from smsflow.api.apikeys import Scope as KeyScope
from smsflow.api.wire import ApiError, admin_key, json_response, parse_body, principal
from smsflow.compacted import CompactedFollower
from smsflow.delivery.failover import lists_routes, with_subscription_lists
from smsflow.routing.health import HealthState
from smsflow.routing.model import (
    ListName,
    PolicyError,
    RoutingPolicy,
    RoutingSection,
    Scope,
    ScopeKind,
    parse_override,
    with_api_policies,
)
from smsflow.routing.policy_changes import (
    ApiPolicies,
    PolicyBody,
    PolicyChange,
    api_scope,
    policy_from_body,
)
from smsflow.schemas import ROUTE_DECISIONS_TOPIC
from smsflow.serde import Serde
from smsflow.subscriptions.store import SubscriptionStore


class OverridePut(BaseModel):
    pin: str = Field(description="primary | secondary | auto")
    reason: str = Field(min_length=1, max_length=500)
    expires_in_s: float | None = Field(default=None, gt=0, description="or expires_at (epoch ms)")
    expires_at: int | None = None


class OverrideAccepted(BaseModel):
    scope: str
    pin: str
    actor: str
    reason: str
    at: int
    expires_at: int | None
    note: str = "applied by the decision stage within seconds; read it back with GET /v1/routes"


class RouteActive(BaseModel):
    scope: str
    active_list: str = Field(description="primary | secondary: the active list")
    route_id: str
    carrier: str | None
    pool: list[str]
    mode: str = Field(description="auto | pinned")
    both_degraded: bool
    decision_id: str | None = Field(description="the decision that made this list active; null: no decision")


class RouteStatus(BaseModel):
    scope: str
    primary: list[str]
    secondary: list[str]
    active: str
    mode: str
    both_degraded: bool
    primary_state: str | None
    secondary_state: str | None
    decision_id: str | None
    decision_kind: str | None
    decided_at: int | None
    reason: str | None
    override: dict[str, Any] | None


class RouteStatusList(BaseModel):
    data: list[RouteStatus]


class PolicyView(BaseModel):
    scope: str
    source: str = Field(description="config | api: where the policy that decides this scope comes from")
    version: int | None = Field(description="the API policy's version; null for a config policy")
    primary: list[str]
    secondary: list[str]
    hold_down_s: int
    thresholds: dict[str, Any]
    last_change: dict[str, Any] | None = Field(
        description="the latest API change of this scope (version, actor, at, reason, deleted, previous): "
        "the audit trail; null when the API never touched it"
    )


class PolicyList(BaseModel):
    data: list[PolicyView]


class PolicyAccepted(BaseModel):
    scope: str
    version: int
    deleted: bool
    actor: str
    at: int
    reason: str
    policy: dict[str, Any] | None
    previous: dict[str, Any] | None
    note: str = "applied by every worker within seconds, without a restart; audited as a decision"


MODELS: tuple[type[BaseModel], ...] = (
    OverridePut,
    OverrideAccepted,
    RouteActive,
    RouteStatus,
    RouteStatusList,
    PolicyBody,
    PolicyView,
    PolicyList,
    PolicyAccepted,
)


class RouteBoard:
    """The latest decision per scope, followed from the decisions topic."""

    def __init__(self, bootstrap: str, serde: Serde) -> None:
        self.serde = serde
        self.latest: dict[str, dict[str, Any]] = {}
        self.follower = CompactedFollower(bootstrap, [ROUTE_DECISIONS_TOPIC], self._apply, "route-decisions")

    def _apply(self, msg: Message) -> None:
        value = msg.value()
        if value is None:
            return
        rec = self.serde.decode(ROUTE_DECISIONS_TOPIC, value)
        self.latest[str(rec["scope"])] = rec

    async def start(self) -> None:
        await self.follower.start()

    async def stop(self) -> None:
        await self.follower.stop()


def _active_route(policy: RoutingPolicy, name: ListName, decision: Mapping[str, Any] | None) -> str:
    routes = policy.routes(name)
    states = {e["route_id"]: e["state"] for e in (decision or {}).get("evidence", [])}
    return next((r for r in routes if states.get(r) == HealthState.HEALTHY.value), routes[0])


class RouteHandlers:
    def __init__(
        self,
        section: RoutingSection,
        board: RouteBoard,
        send_override: Callable[[str, bytes], Any],
        clock: Callable[[], float] = time.time,
        subscriptions: SubscriptionStore | None = None,
        policies: ApiPolicies | None = None,
        put_policy: Callable[[PolicyChange], Awaitable[None]] | None = None,
    ) -> None:
        self.section = section
        self.board = board
        self.send_override = send_override
        self.clock = clock
        self.subscriptions = subscriptions
        self.policies = policies if policies is not None else ApiPolicies()
        self.put_policy = put_policy
        self._changing = asyncio.Lock()  # one change at a time: each gets the next version of its scope

    async def _section(self, key: ApiKey) -> RoutingSection:
        """The config's policies replaced or added to by the API's, and the double lists of the
        subscriptions this key may see (the stage decides them the same way)."""
        section = with_api_policies(self.section, self.policies.policies())
        if self.subscriptions is None:
            return section
        # a tenant's own subscriptions only (the store keeps them by owner): reading every subscription for
        # each request of any tenant cost ~100 ms at 100,000 subscriptions, on the API's one event loop
        visible = await self.subscriptions.list(key.owner)
        return with_subscription_lists(section, [s for s in visible if lists_routes(s)])

    def _policy(self, request: web.Request, section: RoutingSection) -> RoutingPolicy:
        text = unquote(request.match_info["scope"])
        policy = section.policy(text)
        if policy is None and text.startswith("+"):
            policy = section.for_number(text)  # a number: the policy that governs it
        if policy is None and text.startswith("number:"):
            policy = section.for_number(text.removeprefix("number:"))
        if policy is None:
            raise ApiError(404, "not_found", f"no routing policy for {text!r}", "scope")
        return policy

    def _status(self, policy: RoutingPolicy) -> RouteStatus:
        d = self.board.latest.get(policy.scope.key)
        override = None
        if d is not None and d.get("mode") == "pinned":
            override = {
                "pin": d.get("override_pin"),
                "actor": d.get("override_actor"),
                "reason": d.get("override_reason"),
                "expires_at": _millis(d.get("override_expires_at")),
            }
        return RouteStatus(
            scope=policy.scope.key,
            primary=list(policy.primary),
            secondary=list(policy.secondary),
            active=d["active"] if d else ListName.PRIMARY.value,
            mode=d["mode"] if d else "auto",
            both_degraded=bool(d and d["both_degraded"]),
            primary_state=d.get("primary_state") if d else None,
            secondary_state=d.get("secondary_state") if d else None,
            decision_id=d["decision_id"] if d else None,
            decision_kind=d["kind"] if d else None,
            decided_at=_millis(d["at"]) if d else None,
            reason=d["reason"] if d else None,
            override=override,
        )

    async def list_routes(self, request: web.Request) -> web.Response:
        section = await self._section(principal(request, KeyScope.READ))
        return json_response(RouteStatusList(data=[self._status(p) for p in section.policies]))

    async def active(self, request: web.Request) -> web.Response:
        section = await self._section(principal(request, KeyScope.READ))
        policy = self._policy(request, section)
        d = self.board.latest.get(policy.scope.key)
        name = ListName(d["active"]) if d else ListName.PRIMARY
        route_id = _active_route(policy, name, d)
        route = section.route(route_id)
        return json_response(
            RouteActive(
                scope=policy.scope.key,
                active_list=name.value,
                route_id=route_id,
                carrier=route.carrier,
                pool=list(route.pool),
                mode=d["mode"] if d else "auto",
                both_degraded=bool(d and d["both_degraded"]),
                decision_id=d["decision_id"] if d else None,
            )
        )

    async def _override(self, request: web.Request, body: OverridePut) -> web.Response:
        key = admin_key(request, "routes are steered by the operator")
        policy = self._policy(request, await self._section(key))
        now = int(self.clock() * 1000)
        expires_at = body.expires_at
        if body.expires_in_s is not None:
            expires_at = now + int(body.expires_in_s * 1000)
        data = {
            "scope": policy.scope.key,
            "pin": body.pin,
            "reason": body.reason,
            "actor": f"{key.label} [key {key.key_id}]" if key.label else f"key {key.key_id}",
            "at": now,
            "expires_at": expires_at,
        }
        try:
            override = parse_override(data, "override")
        except PolicyError as exc:
            field = str(exc).split(":", 1)[0].removeprefix("override.")
            raise ApiError(422, "validation_error", str(exc).removeprefix("override."), field) from None
        await self.send_override(policy.scope.key, orjson.dumps(override.model_dump(mode="json")))
        accepted = OverrideAccepted(
            scope=policy.scope.key,
            pin=override.pin.value,
            actor=override.actor,
            reason=override.reason,
            at=override.at,
            expires_at=override.expires_at,
        )
        return json_response(accepted, 202)

    async def put_override(self, request: web.Request) -> web.Response:
        return await self._override(request, await parse_body(request, OverridePut))

    async def delete_override(self, request: web.Request) -> web.Response:
        reason = request.query.get("reason", "cleared via the API")
        return await self._override(request, OverridePut(pin="auto", reason=reason))

    def _policy_view(self, scope: str, section: RoutingSection) -> PolicyView | None:
        policy = section.policy(scope)
        change = self.policies.changes.get(scope)
        if policy is None and change is None:
            return None
        last = None
        if change is not None:
            record = change.to_record()
            last = {k: record[k] for k in ("version", "actor", "at", "reason", "previous")}
            last["deleted"] = change.deleted
        return PolicyView(
            scope=scope,
            source=policy.source.value if policy else "none",
            version=policy.version if policy else None,
            primary=list(policy.primary) if policy else [],
            secondary=list(policy.secondary) if policy else [],
            hold_down_s=policy.hold_down_s if policy else 0,
            thresholds=policy.thresholds.model_dump(mode="json") if policy else {},
            last_change=last,
        )

    def _carrier_section(self) -> RoutingSection:
        return with_api_policies(self.section, self.policies.policies())

    async def list_policies(self, request: web.Request) -> web.Response:
        admin_key(request, "routing policies are the operator's")
        section = self._carrier_section()
        scopes = sorted(
            {p.scope.key for p in section.policies if p.scope.kind is not ScopeKind.SUBSCRIPTION}
            | set(self.policies.changes)
        )
        views = [v for v in (self._policy_view(s, section) for s in scopes) if v is not None]
        return json_response(PolicyList(data=views))

    async def get_policy(self, request: web.Request) -> web.Response:
        admin_key(request, "routing policies are the operator's")
        scope = api_scope_or_422(request)
        view = self._policy_view(scope, self._carrier_section())
        if view is None:
            raise ApiError(404, "not_found", f"no routing policy for {scope!r}", "scope")
        return json_response(view)

    async def _change(
        self, key: ApiKey, scope: str, policy: RoutingPolicy | None, reason: str
    ) -> web.Response:
        if self.put_policy is None:
            raise ApiError(503, "unavailable", "routing policies cannot be changed here")
        async with self._changing:
            return await self._change_locked(key, scope, policy, reason)

    async def _change_locked(
        self, key: ApiKey, scope: str, policy: RoutingPolicy | None, reason: str
    ) -> web.Response:
        assert self.put_policy is not None
        held = self.policies.changes.get(scope)
        version = self.policies.next_version(scope)
        change = PolicyChange(
            scope=scope,
            policy=None if policy is None else policy.model_copy(update={"version": version}),
            version=version,
            actor=f"{key.label} [key {key.key_id}]" if key.label else f"key {key.key_id}",
            at=int(self.clock() * 1000),
            reason=reason,
            previous=held.policy if held is not None else None,
        )
        await self.put_policy(change)
        record = change.to_record()
        return json_response(PolicyAccepted(**{**record, "deleted": change.deleted}), 202)

    async def put_policy_handler(self, request: web.Request) -> web.Response:
        key = admin_key(request, "routing policies are the operator's")
        scope = api_scope_or_422(request)
        body = await parse_body(request, PolicyBody)
        try:
            policy = policy_from_body(
                Scope.model_validate(scope), body, self.section, self.policies.next_version(scope)
            )
        except PolicyError as exc:
            message = str(exc)
            raise ApiError(422, "validation_error", message, message.split(":", 1)[0]) from None
        return await self._change(key, scope, policy, body.reason)

    async def delete_policy(self, request: web.Request) -> web.Response:
        key = admin_key(request, "routing policies are the operator's")
        scope = api_scope_or_422(request)
        held = self.policies.changes.get(scope)
        if held is None or held.deleted:
            raise ApiError(
                404,
                "not_found",
                f"no API policy for {scope!r} (a config policy is changed in the config file)",
                "scope",
            )
        return await self._change(key, scope, None, request.query.get("reason", "deleted via the API"))


def api_scope_or_422(request: web.Request) -> str:
    try:
        return api_scope(unquote(request.match_info["scope"])).key
    except PolicyError as exc:
        raise ApiError(422, "validation_error", str(exc), "scope") from None


def add_route_handlers(app: web.Application, handlers: RouteHandlers) -> None:
    # before /v1/routes/{scope}/...: a scope is never the word "policies"
    app.router.add_get("/v1/routes/policies", handlers.list_policies)
    app.router.add_get("/v1/routes/policies/{scope}", handlers.get_policy)
    app.router.add_put("/v1/routes/policies/{scope}", handlers.put_policy_handler)
    app.router.add_delete("/v1/routes/policies/{scope}", handlers.delete_policy)
    app.router.add_get("/v1/routes", handlers.list_routes)
    app.router.add_get("/v1/routes/{scope}/active", handlers.active)
    app.router.add_put("/v1/routes/{scope}/override", handlers.put_override)
    app.router.add_delete("/v1/routes/{scope}/override", handlers.delete_override)


def openapi_paths() -> dict[str, Any]:
    ref = "#/components/schemas/{}".format
    scope = {
        "name": "scope",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "a scope (prefix:+8526, country:HK, subscription:sub_1) or an E.164 number",
    }

    def ok(model: type[BaseModel], description: str) -> dict[str, Any]:
        return {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": ref(model.__name__)}}},
        }

    errors = {
        "401": {"description": "Missing or unknown API key"},
        "403": {"description": "The key lacks the scope, or is not an admin key (overrides)"},
        "404": {"description": "No routing policy for that scope or number"},
    }
    override_ok = ok(OverrideAccepted, "Accepted: the decision stage applies and audits it")
    admin_errors = {
        "401": {"description": "Missing or unknown API key"},
        "403": {"description": "Not an admin key"},
    }
    policy_ok = ok(PolicyAccepted, "Accepted: every worker applies it without a restart; audited")
    policy_scope = {
        **scope,
        "description": "a number, prefix or country scope (number:+85260001234, prefix:+8526, country:HK)",
    }
    policies = {
        "/v1/routes/policies": {
            "get": {
                "summary": "Every carrier routing policy in force (config and API) and the API's changes",
                "operationId": "listRoutePolicies",
                "responses": {"200": ok(PolicyList, "The policies"), **admin_errors},
            }
        },
        "/v1/routes/policies/{scope}": {
            "parameters": [policy_scope],
            "get": {
                "summary": "The policy that decides a scope, and its latest API change (the audit trail)",
                "operationId": "getRoutePolicy",
                "responses": {
                    "200": ok(PolicyView, "The policy"),
                    **admin_errors,
                    "404": {"description": "No policy for that scope"},
                    "422": {"description": "Not a number, prefix or country scope"},
                },
            },
            "put": {
                "summary": "Create or replace the scope's API policy (wins over the config's; admin keys; "
                "audited as a policy_set decision on sms.routes.decisions.v1)",
                "operationId": "putRoutePolicy",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": ref("PolicyBody")}}},
                },
                "responses": {
                    "202": policy_ok,
                    **admin_errors,
                    "422": {"description": "A field is invalid (the message names it)"},
                },
            },
            "delete": {
                "summary": "Delete the scope's API policy: the config's policy, if any, decides again "
                "(admin keys; audited as a policy_deleted decision)",
                "operationId": "deleteRoutePolicy",
                "parameters": [
                    {"name": "reason", "in": "query", "required": False, "schema": {"type": "string"}}
                ],
                "responses": {
                    "202": policy_ok,
                    **admin_errors,
                    "404": {"description": "No API policy for that scope"},
                },
            },
        },
    }
    return {
        **policies,
        "/v1/routes": {
            "get": {
                "summary": "Every routing policy with its double-list state",
                "operationId": "listRoutes",
                "responses": {"200": ok(RouteStatusList, "The policies"), **errors},
            }
        },
        "/v1/routes/{scope}/active": {
            "parameters": [scope],
            "get": {
                "summary": "Number lookup: the active list's route and number pool for a scope or number",
                "operationId": "getActiveRoute",
                "responses": {"200": ok(RouteActive, "Where the scope's traffic goes now"), **errors},
            },
        },
        "/v1/routes/{scope}/override": {
            "parameters": [scope],
            "put": {
                "summary": "Pin a scope to its primary or secondary list until an expiry, or back to auto "
                "(admin keys; audited as a decision on sms.routes.decisions.v1)",
                "operationId": "putRouteOverride",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": ref("OverridePut")}}},
                },
                "responses": {"202": override_ok, **errors, "422": {"description": "A field is invalid"}},
            },
            "delete": {
                "summary": "Clear a pin: health decides again (admin keys; audited)",
                "operationId": "deleteRouteOverride",
                "parameters": [
                    {"name": "reason", "in": "query", "required": False, "schema": {"type": "string"}}
                ],
                "responses": {"202": override_ok, **errors},
            },
        },
    }


def _millis(v: Any) -> int | None:
    if v is None:
        return None
    return int(v.timestamp() * 1000) if hasattr(v, "timestamp") else int(v)


__all__ = [
    "MODELS",
    "RouteBoard",
    "RouteHandlers",
    "add_route_handlers",
    "openapi_paths",
]
