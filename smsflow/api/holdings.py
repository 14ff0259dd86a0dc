"""``/v1/holdings``: what each owner holds (numbers, prefixes, routes), which bounds what its subscriptions
receive. Admin keys change holdings; an owner key may read its own."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from smsflow.api.apikeys import ApiKey, Scope
from smsflow.api.wire import ApiError, Body, admin_key, json_response, parse_body, principal, validation_error
from smsflow.subscriptions.holdings import Holding, is_operator_owner
from smsflow.subscriptions.store import SubscriptionStore


class HoldingPut(Body):
    """Everything the owner holds (replaces the previous holding)."""

    numbers: list[str] = Field(default_factory=list, description="E.164 numbers")
    prefixes: list[str] = Field(default_factory=list, description="E.164 number prefixes, e.g. +8610690")
    route_ids: list[str] = Field(default_factory=list, description="routes dedicated to this owner")
    sender_ids: list[str] = Field(
        default_factory=list,
        description="alphanumeric senders the owner may send as (1-11 characters; compared without case)",
    )


class HoldingView(BaseModel):
    owner: str
    numbers: list[str]
    prefixes: list[str]
    route_ids: list[str]
    sender_ids: list[str] = []
    updated_at: datetime

    @classmethod
    def of(cls, holding: Holding) -> HoldingView:
        return cls(**holding.model_dump())


class HoldingList(BaseModel):
    data: list[HoldingView]


class HoldingHandlers:
    def __init__(self, store: SubscriptionStore) -> None:
        self.store = store

    def _holding_owner(self, request: web.Request, key: ApiKey) -> str:
        owner = request.match_info["owner"]
        if not key.may_access(owner):
            raise ApiError(404, "not_found", f"no holding for {owner}")
        return owner

    @staticmethod
    def _admin(request: web.Request) -> ApiKey:
        return admin_key(request, "holdings are managed by the operator")

    async def list_holdings(self, request: web.Request) -> web.Response:
        key = principal(request, Scope.READ)
        if key.owner is not None:  # a tenant's own, without reading (and sorting) every owner's
            own = self.store.holding_of(key.owner)
            holdings = [own] if own is not None else []
        else:
            holdings = await self.store.holdings()
        return json_response(HoldingList(data=[HoldingView.of(h) for h in holdings]))

    async def get_holding(self, request: web.Request) -> web.Response:
        key = principal(request, Scope.READ)
        owner = self._holding_owner(request, key)
        holding = self.store.holding_of(owner)
        if holding is None:
            raise ApiError(404, "not_found", f"no holding for {owner}")
        return json_response(HoldingView.of(holding))

    async def put_holding(self, request: web.Request) -> web.Response:
        self._admin(request)
        owner = request.match_info["owner"]
        if is_operator_owner(owner):
            reason = f"owner: {owner!r} is an operator owner and needs no holding"
            raise ApiError(422, "validation_error", reason, "owner")
        body: HoldingPut = await parse_body(request, HoldingPut)
        try:
            holding = Holding(owner=owner, **body.model_dump())
        except ValidationError as exc:
            raise validation_error(exc) from exc
        await self.store.put_holding(holding)
        return json_response(HoldingView.of(holding))

    async def delete_holding(self, request: web.Request) -> web.Response:
        self._admin(request)
        owner = request.match_info["owner"]
        if not await self.store.delete_holding(owner):
            raise ApiError(404, "not_found", f"no holding for {owner}")
        return web.Response(status=204)


def add_holding_routes(app: web.Application, store: SubscriptionStore) -> None:
    h = HoldingHandlers(store)
    app.router.add_get("/v1/holdings", h.list_holdings)
    app.router.add_get("/v1/holdings/{owner}", h.get_holding)
    app.router.add_put("/v1/holdings/{owner}", h.put_holding)
    app.router.add_delete("/v1/holdings/{owner}", h.delete_holding)
