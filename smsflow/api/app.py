"""The REST API as one aiohttp application: subscriptions, holdings, redelivery and outbound messages, each
resource in its own module with a function that adds its routes; the OpenAPI document at ``/openapi.json``.

Every ``/v1`` route needs ``Authorization: Bearer <api key>`` (401 without or with an unknown key, 403 when
the key lacks the route's scope). A new resource goes in a module of its own here, with an ``add_*_routes``
function called below.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from smsflow.api.apikeys import ApiKeyStore
from smsflow.api.holdings import add_holding_routes
from smsflow.api.messages import OutboundDesk, add_message_routes
from smsflow.api.openapi import build_openapi
from smsflow.api.redelivery import RecoverCallback, ResendCallback, add_redelivery_routes
from smsflow.api.routes import RouteHandlers, add_route_handlers
from smsflow.api.subscriptions import ApiSettings, add_subscription_routes
from smsflow.api.wire import auth_middleware, json_response
from smsflow.subscriptions.store import SubscriptionStore


def create_api_app(
    store: SubscriptionStore,
    api_keys: ApiKeyStore,
    *,
    resend: ResendCallback | None = None,
    recover: RecoverCallback | None = None,
    settings: ApiSettings | None = None,
    routes: RouteHandlers | None = None,
    messages: OutboundDesk | None = None,
) -> web.Application:
    """``routes``: serve /v1/routes (the double list) too; it needs the decisions topic to answer from."""
    app = web.Application(middlewares=[auth_middleware(api_keys)], client_max_size=256 * 1024)
    spec = orjson.dumps(build_openapi(routes=routes is not None, messages_api=messages is not None))

    async def healthz(request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=spec, content_type="application/json")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/openapi.json", openapi)
    add_subscription_routes(app, store, settings or ApiSettings())
    add_redelivery_routes(app, store, resend, recover)
    add_holding_routes(app, store)
    if routes is not None:
        add_route_handlers(app, routes)
    if messages is not None:
        add_message_routes(app, messages)
    return app
