"""Delivering again on request: ``POST /v1/messages/{message_id}/resend`` (one message to one subscription)
and ``POST /v1/subscriptions/{id}/recover`` (every failed message since a time). Both queue on the retry
topic through callbacks (``smsflow/delivery/redelivery.py`` in the API process)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field

from smsflow.api.apikeys import Scope
from smsflow.api.subscriptions import owned_subscription
from smsflow.api.wire import ApiError, Body, json_response, parse_body, principal
from smsflow.delivery.redelivery import RecoverOutcome
from smsflow.delivery.scan_slots import Busy
from smsflow.subscriptions.model import Subscription, utcnow
from smsflow.subscriptions.store import SubscriptionStore

ResendCallback = Callable[[str, Subscription], Awaitable[bool]]
"""``resend(message_id, subscription)``: queue the message for this subscription; False if it is unknown."""
RecoverCallback = Callable[[Subscription, datetime], Awaitable[RecoverOutcome]]
"""``recover(subscription, since)``: re-queue its failed messages since then; how many, and how many inbound
records it left to the deliver stage (smsflow/delivery/redelivery.py)."""


class RecoverRequest(Body):
    since: AwareDatetime


class RecoverResponse(BaseModel):
    subscription_id: str
    since: datetime
    queued: int = Field(description="messages queued again")
    not_examined: int = Field(
        description="inbound records the deliver stage had not finished when recover stopped waiting for "
        "it (api.recover_settle_s): not examined; the deliver stage sends each to the subscriptions that "
        "receive it when it reads it. Nonzero: the worker is down or far behind; run recover again later",
    )


class ResendResponse(BaseModel):
    message_id: str
    subscription_id: str
    status: str = "queued"


class RedeliveryHandlers:
    def __init__(
        self, store: SubscriptionStore, resend: ResendCallback | None, recover: RecoverCallback | None
    ) -> None:
        self.store = store
        self.resend_cb = resend
        self.recover_cb = recover

    async def resend(self, request: web.Request) -> web.Response:
        key = principal(request, Scope.MESSAGES)
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
        with _busy_is_429():
            found = await self.resend_cb(message_id, sub)
        if not found:
            raise ApiError(404, "not_found", f"message {message_id} not found")
        return json_response(ResendResponse(message_id=message_id, subscription_id=sub.id), 202)

    async def recover(self, request: web.Request) -> web.Response:
        key = principal(request, Scope.MESSAGES)
        body: RecoverRequest = await parse_body(request, RecoverRequest)
        sub = await owned_subscription(self.store, request, key)
        if body.since > utcnow():
            raise ApiError(422, "validation_error", "since: must not be in the future", "since")
        if not sub.enabled:
            raise ApiError(409, "endpoint_disabled", "the subscription is disabled; enable it first")
        if self.recover_cb is None:
            raise ApiError(501, "not_implemented", "recover is not available in this deployment")
        with _busy_is_429():
            done = await self.recover_cb(sub, body.since)
        return json_response(
            RecoverResponse(
                subscription_id=sub.id, since=body.since, queued=done.queued, not_examined=done.not_examined
            ),
            202,
        )


@contextmanager
def _busy_is_429() -> Iterator[None]:
    """The owner has as many resend/recover requests in progress as it may (scan_slots.py): a 429."""
    try:
        yield
    except Busy as exc:
        raise ApiError(
            429, "too_many_requests", f"{exc}; retry when one has finished", headers={"Retry-After": "1"}
        ) from None


def add_redelivery_routes(
    app: web.Application,
    store: SubscriptionStore,
    resend: ResendCallback | None,
    recover: RecoverCallback | None,
) -> None:
    h = RedeliveryHandlers(store, resend, recover)
    app.router.add_post("/v1/subscriptions/{id}/recover", h.recover)
    app.router.add_post("/v1/messages/{message_id}/resend", h.resend)
