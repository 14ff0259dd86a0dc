"""What every route of the REST API shares on the wire: JSON bodies in and out, the error body, and the
bearer-key check that puts the caller's API key on the request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from smsflow.api.apikeys import ApiKey, ApiKeyStore, Scope

KEY_PRINCIPAL = web.RequestKey("principal", ApiKey)


class Body(BaseModel):
    """A request body: unknown fields are refused, so a typo is an error rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
    details: list[ErrorDetail] = Field(default_factory=list)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        details: list[ErrorDetail] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.details = (
            status,
            code,
            message,
            field,
            details or [],
        )
        self.headers = headers or {}


def json_response(model: BaseModel | dict[str, Any], status: int = 200) -> web.Response:
    data = model.model_dump(mode="json") if isinstance(model, BaseModel) else model
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error_response(err: ApiError) -> web.Response:
    body = ErrorBody(
        error=ErrorDetail(code=err.code, message=err.message, field=err.field), details=err.details
    )
    resp = json_response(body, err.status)
    resp.headers.update(err.headers)
    if err.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="smsflow"'
    return resp


def validation_error(exc: ValidationError, prefix: str = "") -> ApiError:
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


async def parse_body(request: web.Request, model: type[BaseModel], *, allow_empty: bool = False) -> Any:
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
        raise validation_error(exc) from exc


def principal(request: web.Request, scope: Scope) -> ApiKey:
    """The caller's API key, if it has ``scope`` (403 otherwise)."""
    key = request[KEY_PRINCIPAL]
    if not key.allows(scope):
        raise ApiError(403, "forbidden", f"this API key lacks the {scope.value!r} scope")
    return key


def admin_key(request: web.Request, why: str) -> ApiKey:
    """An operator key (no owner) with the write scope, or a 403 that says ``why`` one is needed."""
    key = principal(request, Scope.WRITE)
    if key.owner is not None:
        raise ApiError(403, "forbidden", f"{why}: an admin key is needed")
    return key


def auth_middleware(api_keys: ApiKeyStore) -> Any:
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
            return error_response(err)
        except web.HTTPException as exc:
            if exc.status >= 400:
                return error_response(ApiError(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason))
            raise

    return middleware
