"""The OpenAPI 3.1 document of the subscriptions API: paths written here, schemas generated from the
pydantic models the handlers use (so the two cannot drift apart field by field)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from smsflow.api import holdings, messages, redelivery, subscriptions, wire
from smsflow.api import routes as route_api
from smsflow.delivery.scan_slots import PENDING_PER_OWNER

_REF = "#/components/schemas/{model}"
_MODELS: tuple[type[BaseModel], ...] = (
    subscriptions.SubscriptionCreate,
    subscriptions.SubscriptionUpdate,
    subscriptions.SubscriptionView,
    subscriptions.SubscriptionUpdated,
    subscriptions.SubscriptionCreated,
    subscriptions.SubscriptionList,
    subscriptions.RotateSecretRequest,
    subscriptions.RotateSecretResponse,
    subscriptions.DisableRequest,
    redelivery.RecoverRequest,
    redelivery.RecoverResponse,
    redelivery.ResendResponse,
    holdings.HoldingPut,
    holdings.HoldingView,
    holdings.HoldingList,
    wire.ErrorBody,
    *route_api.MODELS,
    messages.MessageSend,
    messages.MessageAccepted,
    messages.MessageView,
    messages.CallbackSecret,
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json_body(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(model)}}}


def _ok(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Body is not a JSON object",
        401: "Missing or unknown API key",
        403: "The API key lacks the scope or acts for another owner, or a filter reaches beyond the owner's "
        "holding (`error.code` = `not_held`, `error.field` names the value)",
        404: "No such subscription, holding or message for this key (another tenant's message is a 404)",
        409: "The subscription is disabled; on create, the owner has `api.max_subscriptions_per_owner` "
        "subscriptions already (`error.code` = `subscription_limit`)",
        422: "A field is invalid; `error.field` names it (`idempotency_conflict`: the key was used for "
        "another request; a filter list longer than `api.max_filter_entries`: `filters.<list>`)",
        429: f"The owner has {PENDING_PER_OWNER} resend/recover requests in progress already, or (a change "
        "of a subscription) has made `api.subscription_changes_per_minute` changes in the last minute, or (a "
        "message sent) has sent the segments its rate allows for now (`api.segments_per_second_per_owner`); "
        "retry after `Retry-After` seconds",
        501: "Not available in this deployment",
        503: "Not stored (Kafka unavailable); retry with the same Idempotency-Key",
    }
    return {str(c): _ok(wire.ErrorBody, text[c]) for c in codes}


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_OWNER = {"name": "owner", "in": "path", "required": True, "schema": {"type": "string"}}


def build_openapi(routes: bool = True, messages_api: bool = True) -> dict[str, Any]:
    """``routes``: include /v1/routes (served when the API has the double list's state to answer from);
    ``messages_api``: include /v1/messages (a deployment without an outbound desk does not serve it)."""
    _, top = models_json_schema([(m, "validation") for m in _MODELS], ref_template=_REF)
    schemas = dict(top.get("$defs", {}))
    auth = (401, 403)
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "operationId": "healthz",
                "security": [],
                "responses": {"200": {"description": "Alive"}},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1 document"}},
            }
        },
        "/v1/subscriptions": {
            "get": {
                "summary": "List subscriptions",
                "operationId": "listSubscriptions",
                "parameters": [
                    {
                        "name": "owner",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "operator keys only; owner keys always see their own",
                    }
                ],
                "responses": {"200": _ok(subscriptions.SubscriptionList, "Subscriptions"), **_errors(*auth)},
            },
            "post": {
                "summary": "Create a subscription; the response holds its secret, shown only once",
                "operationId": "createSubscription",
                "requestBody": _json_body(subscriptions.SubscriptionCreate),
                "responses": {
                    "201": _ok(subscriptions.SubscriptionCreated, "Created"),
                    **_errors(400, *auth, 409, 422, 429),
                },
            },
        },
        "/v1/subscriptions/{id}": {
            "parameters": [_ID],
            "get": {
                "summary": "Get a subscription",
                "operationId": "getSubscription",
                "responses": {
                    "200": _ok(subscriptions.SubscriptionView, "The subscription"),
                    **_errors(*auth, 404),
                },
            },
            "patch": {
                "summary": "Change a subscription",
                "operationId": "updateSubscription",
                "requestBody": _json_body(subscriptions.SubscriptionUpdate),
                "responses": {
                    "200": _ok(
                        subscriptions.SubscriptionUpdated,
                        "Updated; secrets of endpoints it added, shown once",
                    ),
                    **_errors(400, *auth, 404, 422, 429),
                },
            },
            "delete": {
                "summary": "Delete a subscription",
                "operationId": "deleteSubscription",
                "responses": {"204": {"description": "Deleted"}, **_errors(*auth, 404, 429)},
            },
        },
        "/v1/subscriptions/{id}/rotate-secret": {
            "parameters": [_ID],
            "post": {
                "summary": "Replace the signing secret; the previous one keeps signing during the overlap",
                "operationId": "rotateSecret",
                "requestBody": _json_body(subscriptions.RotateSecretRequest, required=False),
                "responses": {
                    "200": _ok(subscriptions.RotateSecretResponse, "The new secret, shown only once"),
                    **_errors(400, *auth, 404, 422, 429),
                },
            },
        },
        "/v1/subscriptions/{id}/enable": {
            "parameters": [_ID],
            "post": {
                "summary": "Enable (e.g. after automatic disabling)",
                "operationId": "enableSubscription",
                "responses": {
                    "200": _ok(subscriptions.SubscriptionView, "Enabled"),
                    **_errors(*auth, 404, 429),
                },
            },
        },
        "/v1/subscriptions/{id}/disable": {
            "parameters": [_ID],
            "post": {
                "summary": "Disable; nothing is sent until enabled again",
                "operationId": "disableSubscription",
                "requestBody": _json_body(subscriptions.DisableRequest, required=False),
                "responses": {
                    "200": _ok(subscriptions.SubscriptionView, "Disabled"),
                    **_errors(400, *auth, 404, 422, 429),
                },
            },
        },
        "/v1/subscriptions/{id}/recover": {
            "parameters": [_ID],
            "post": {
                "summary": "Send again every message that failed for this subscription since a time",
                "operationId": "recoverSubscription",
                "requestBody": _json_body(redelivery.RecoverRequest),
                "responses": {
                    "202": _ok(redelivery.RecoverResponse, "Queued"),
                    **_errors(400, *auth, 404, 409, 422, 429, 501),
                },
            },
        },
        "/v1/messages/{message_id}/resend": {
            "parameters": [
                {"name": "message_id", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "subscription_id", "in": "query", "required": True, "schema": {"type": "string"}},
            ],
            "post": {
                "summary": "Send one message to one subscription again",
                "operationId": "resendMessage",
                "responses": {
                    "202": _ok(redelivery.ResendResponse, "Queued"),
                    **_errors(*auth, 404, 409, 422, 429, 501),
                },
            },
        },
        "/v1/messages": {
            "post": {
                "summary": "Send an SMS from a number or alphanumeric sender ID you hold; 202 with its "
                "id. With an Idempotency-Key, a repeat within 24 h answers the first id and sends nothing",
                "operationId": "sendMessage",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                    }
                ],
                "requestBody": _json_body(messages.MessageSend),
                "responses": {
                    "202": _ok(messages.MessageAccepted, "Accepted and stored; statuses follow"),
                    **_errors(400, *auth, 422, 429, 503),
                },
            },
        },
        "/v1/messages/{id}": {
            "parameters": [_ID],
            "get": {
                "summary": "An SMS you sent: its status and every transition, per segment and overall",
                "operationId": "getMessage",
                "responses": {"200": _ok(messages.MessageView, "The message"), **_errors(*auth, 404)},
            },
        },
        "/v1/callback-secret": {
            "get": {
                "summary": "Your callback signing secret: every callback to a message's callback_url "
                "is signed with it (Standard Webhooks)",
                "operationId": "getCallbackSecret",
                "responses": {"200": _ok(messages.CallbackSecret, "The secret"), **_errors(*auth)},
            },
        },
        "/v1/holdings": {
            "get": {
                "summary": "List holdings (admin keys: every owner's; owner keys: their own)",
                "operationId": "listHoldings",
                "responses": {"200": _ok(holdings.HoldingList, "Holdings"), **_errors(*auth)},
            },
        },
        "/v1/holdings/{owner}": {
            "parameters": [_OWNER],
            "get": {
                "summary": "The numbers, prefixes and routes an owner holds",
                "operationId": "getHolding",
                "responses": {"200": _ok(holdings.HoldingView, "The holding"), **_errors(*auth, 404)},
            },
            "put": {
                "summary": "Set what an owner holds (admin keys only); every filter of the owner is "
                "bounded by it at once, including deliveries already scheduled",
                "operationId": "putHolding",
                "requestBody": _json_body(holdings.HoldingPut),
                "responses": {"200": _ok(holdings.HoldingView, "Stored"), **_errors(400, *auth, 422)},
            },
            "delete": {
                "summary": "Remove an owner's holding (admin keys only): its subscriptions receive nothing",
                "operationId": "deleteHolding",
                "responses": {"204": {"description": "Removed"}, **_errors(*auth, 404)},
            },
        },
    }
    if routes:
        paths.update(route_api.openapi_paths())
    if not messages_api:
        for path in ("/v1/messages", "/v1/messages/{id}", "/v1/callback-secret"):
            del paths[path]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "smsflow webhook subscriptions",
            "version": "1.0.0",
            "description": "Where inbound SMS are delivered; webhooks are signed per Standard Webhooks.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "sfk_… API key"}
            },
        },
    }
