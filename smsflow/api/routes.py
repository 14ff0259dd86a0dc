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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
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
from smsflow.delivery.failover import with_subscription_lists
from smsflow.routing.health import HealthState
from smsflow.routing.model import ListName, PolicyError, RoutingPolicy, RoutingSection, parse_override
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


MODELS: tuple[type[BaseModel], ...] = (
    OverridePut,
    OverrideAccepted,
    RouteActive,
    RouteStatus,
    RouteStatusList,
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
    ) -> None:
        self.section = section
        self.board = board
        self.send_override = send_override
        self.clock = clock
        self.subscriptions = subscriptions

    async def _section(self, key: ApiKey) -> RoutingSection:
        """The config's policies, and the double lists of the subscriptions this key may see (the stage
        decides them the same way: ``with_subscription_lists``)."""
        if self.subscriptions is None:
            return self.section
        visible = [s for s in await self.subscriptions.list() if key.may_access(s.owner)]
        return with_subscription_lists(self.section, visible)

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


def add_route_handlers(app: web.Application, handlers: RouteHandlers) -> None:
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
    return {
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
