"""A Confluent-compatible schema registry: the REST subset that confluent-kafka's SchemaRegistryClient,
AvroSerializer and AvroDeserializer use, over a KafkaSchemaStore.

Speaks ``application/vnd.schemaregistry.v1+json`` and answers errors as Confluent does
(``{"error_code": 40401, "message": ...}``). Avro only; schema references are refused. With a username and
password configured, every request needs HTTP basic auth.

    registry = EmbeddedRegistry(username="u", password="p")
    url = await registry.start("127.0.0.1:9092")        # inside a running event loop
    ...
    await registry.stop()

``RegistryThread`` runs the same thing on a background thread for synchronous callers (tests, CLIs).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from devkit.registry.compatibility import AvroSchema, InvalidSchema
from devkit.registry.store import (
    DEFAULT_COMPATIBILITY,
    SCHEMAS_TOPIC,
    KafkaSchemaStore,
    RegistryError,
    SubjectVersion,
    schema_not_found,
)

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_STORE_KEY = web.AppKey("store", KafkaSchemaStore)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, content_type=CONTENT_TYPE)


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"error_code": code, "message": message}, status=status)


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "false").lower() == "true"


def _page(items: list[Any], request: web.Request) -> list[Any]:
    """Confluent's offset/limit paging (limit -1 = everything)."""
    try:
        offset = max(0, int(request.query.get("offset", "0")))
        limit = int(request.query.get("limit", "-1"))
    except ValueError:
        raise RegistryError(422, 42202, "offset and limit must be integers") from None
    return items[offset:] if limit < 0 else items[offset : offset + limit]


def _store(request: web.Request) -> KafkaSchemaStore:
    return request.app[_STORE_KEY]


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError as exc:
        raise RegistryError(400, 400, f"Malformed JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise RegistryError(400, 400, "The request body must be a JSON object")
    return body


def _schema_from(body: dict[str, Any]) -> tuple[AvroSchema, str]:
    schema_type = str(body.get("schemaType") or "AVRO").upper()
    if schema_type != "AVRO":
        raise RegistryError(
            422, 42201, f"Invalid schema: schema type {schema_type} is not supported (AVRO only)"
        )
    if body.get("references"):
        raise RegistryError(
            422, 42201, "Invalid schema: schema references are not supported by this registry"
        )
    text = body.get("schema")
    if not isinstance(text, str) or not text.strip():
        raise RegistryError(422, 42201, "Invalid schema: the request has no 'schema' string")
    try:
        return AvroSchema.parse(text), schema_type
    except InvalidSchema as exc:
        raise RegistryError(422, 42201, str(exc)) from exc


def _schema_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise schema_not_found(f"Schema {request.match_info['id']} not found") from None


# -- handlers ------------------------------------------------------------------------------------------------
async def root(request: web.Request) -> web.Response:
    return _json({})


async def schema_types(request: web.Request) -> web.Response:
    return _json(["AVRO"])


async def _schema_of_id(request: web.Request) -> tuple[AvroSchema, str]:
    """The schema and its type for the ``{id}`` in the path (404 when no schema has it)."""
    return await asyncio.to_thread(_store(request).schema_by_id, _schema_id(request))


async def _versions_of_id(request: web.Request) -> list[SubjectVersion]:
    """Where the ``{id}`` in the path is registered, narrowed to ``?subject=`` when given."""
    found = await asyncio.to_thread(
        _store(request).versions_of_id, _schema_id(request), _flag(request, "deleted")
    )
    subject = request.query.get("subject")
    return [v for v in found if subject in (None, v.subject)]


async def schema_by_id(request: web.Request) -> web.Response:
    schema, schema_type = await _schema_of_id(request)
    out: dict[str, Any] = {"schema": schema.text}
    if schema_type != "AVRO":
        out["schemaType"] = schema_type
    return _json(out)


async def schema_text_by_id(request: web.Request) -> web.Response:
    schema, _ = await _schema_of_id(request)
    return _json(json.loads(schema.text))


async def schema_id_versions(request: web.Request) -> web.Response:
    pairs = [{"subject": v.subject, "version": v.version} for v in await _versions_of_id(request)]
    return _json(_page(pairs, request))


async def schema_id_subjects(request: web.Request) -> web.Response:
    return _json(_page(sorted({v.subject for v in await _versions_of_id(request)}), request))


async def schema_by_guid(request: web.Request) -> web.Response:
    raise schema_not_found(f"Schema {request.match_info['guid']} not found (this registry has no guids)")


async def subjects(request: web.Request) -> web.Response:
    deleted = _flag(request, "deleted") or _flag(request, "deleted_only")
    names = await asyncio.to_thread(_store(request).subjects, deleted, request.query.get("subjectPrefix", ""))
    if _flag(request, "deleted_only"):
        live = set(await asyncio.to_thread(_store(request).subjects, False))
        names = [n for n in names if n not in live]
    return _json(_page(names, request))


async def subject_versions(request: web.Request) -> web.Response:
    deleted_only = _flag(request, "deleted_only")
    found = await asyncio.to_thread(
        _store(request).versions, request.match_info["subject"], _flag(request, "deleted") or deleted_only
    )
    return _json(_page([v.version for v in found if v.deleted or not deleted_only], request))


async def register(request: web.Request) -> web.Response:
    schema, schema_type = _schema_from(await _body(request))
    registered = await asyncio.to_thread(
        _store(request).register, request.match_info["subject"], schema, schema_type
    )
    return _json({"id": registered.id})


async def lookup(request: web.Request) -> web.Response:
    schema, _ = _schema_from(await _body(request))
    found = await asyncio.to_thread(
        _store(request).lookup, request.match_info["subject"], schema, _flag(request, "deleted")
    )
    return _json(found.as_json())


async def _version(request: web.Request, deleted: bool = False) -> SubjectVersion:
    """The version the path names (``/subjects/{subject}/versions/{version}``; 404 when there is none)."""
    return await asyncio.to_thread(
        _store(request).get_version, request.match_info["subject"], request.match_info["version"], deleted
    )


async def get_version(request: web.Request) -> web.Response:
    found = await _version(request, deleted=_flag(request, "deleted"))
    return _json(found.as_json())


async def get_version_schema(request: web.Request) -> web.Response:
    return _json(json.loads((await _version(request)).schema))


async def referenced_by(request: web.Request) -> web.Response:
    await _version(request)  # a 404 for a version that does not exist
    return _json([])  # references are not supported, so nothing refers to anything


async def delete_version(request: web.Request) -> web.Response:
    version = await asyncio.to_thread(
        _store(request).delete_version,
        request.match_info["subject"],
        request.match_info["version"],
        _flag(request, "permanent"),
    )
    return _json(version)


async def delete_subject(request: web.Request) -> web.Response:
    versions = await asyncio.to_thread(
        _store(request).delete_subject, request.match_info["subject"], _flag(request, "permanent")
    )
    return _json(versions)


async def get_config(request: web.Request) -> web.Response:
    subject = request.match_info.get("subject")
    default_to_global = subject is None or _flag(request, "defaultToGlobal")
    level = _store(request).compatibility(subject, default_to_global)
    if level is None:
        raise RegistryError(
            404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured"
        )
    return _json({"compatibilityLevel": level})


async def put_config(request: web.Request) -> web.Response:
    body = await _body(request)
    level = body.get("compatibility") or body.get("compatibilityLevel")
    if not isinstance(level, str):
        raise RegistryError(422, 42203, "Invalid compatibility level: the body needs 'compatibility'")
    stored = await asyncio.to_thread(
        _store(request).set_compatibility, level, request.match_info.get("subject")
    )
    return _json({"compatibility": stored})


async def delete_config(request: web.Request) -> web.Response:
    previous = await asyncio.to_thread(
        _store(request).delete_compatibility, request.match_info.get("subject")
    )
    return _json({"compatibilityLevel": previous})


async def compatibility(request: web.Request) -> web.Response:
    schema, _ = _schema_from(await _body(request))
    problems = await asyncio.to_thread(
        _store(request).check, request.match_info["subject"], schema, request.match_info.get("version")
    )
    out: dict[str, Any] = {"is_compatible": not problems}
    if _flag(request, "verbose"):
        out["messages"] = problems
    return _json(out)


async def mode(request: web.Request) -> web.Response:
    return _json({"mode": "READWRITE"})


async def contexts(request: web.Request) -> web.Response:
    return _json(["."])


async def associations(request: web.Request) -> web.Response:
    # confluent-kafka >= 2.13's default subject name strategy asks for topic→subject associations first and
    # falls back to the topic name strategy on a 404. We have no associations.
    return _error(404, 40404, "Associations are not supported by this registry")


# -- app -----------------------------------------------------------------------------------------------------
def _auth_middleware(username: str, password: str) -> Any:
    expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    @web.middleware
    async def check(request: web.Request, handler: _Handler) -> web.StreamResponse:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            try:  # tolerate other spacing/casing of the scheme, still comparing the credentials exactly
                scheme, _, token = given.partition(" ")
                ok = scheme.lower() == "basic" and hmac.compare_digest(
                    base64.b64decode(token.strip(), validate=True), f"{username}:{password}".encode()
                )
            except (binascii.Error, ValueError):
                ok = False
            if not ok:
                resp = _error(401, 40101, "Unauthorized")
                resp.headers["WWW-Authenticate"] = 'Basic realm="smsflow-schema-registry"'
                return resp
        return await handler(request)

    return check


@web.middleware
async def _errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RegistryError as exc:
        return _error(exc.status, exc.error_code, exc.message)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return _error(exc.status, exc.status, f"HTTP {exc.status} {exc.reason}")
        raise
    except Exception as exc:
        log.exception("registry: %s %s failed", request.method, request.path)
        return _error(500, 50001, f"Internal error: {exc}")


def build_app(
    store: KafkaSchemaStore, *, username: str | None = None, password: str | None = None
) -> web.Application:
    """The aiohttp application over ``store`` (already started). Basic auth when both credentials are set."""
    middlewares = [_errors]
    if username and password:
        middlewares.insert(0, _auth_middleware(username, password))
    app = web.Application(middlewares=middlewares)
    app[_STORE_KEY] = store
    s = "/subjects/{subject}"
    app.add_routes(
        [
            web.get("/", root),
            web.get("/schemas/types", schema_types),
            web.get("/schemas/ids/{id}", schema_by_id),
            web.get("/schemas/ids/{id}/schema", schema_text_by_id),
            web.get("/schemas/ids/{id}/versions", schema_id_versions),
            web.get("/schemas/ids/{id}/subjects", schema_id_subjects),
            web.get("/schemas/guids/{guid}", schema_by_guid),
            web.get("/subjects", subjects),
            web.post(s, lookup),
            web.delete(s, delete_subject),
            web.get(f"{s}/versions", subject_versions),
            web.post(f"{s}/versions", register),
            web.get(s + "/versions/{version}", get_version),
            web.delete(s + "/versions/{version}", delete_version),
            web.get(s + "/versions/{version}/schema", get_version_schema),
            web.get(s + "/versions/{version}/referencedby", referenced_by),
            web.get("/config", get_config),
            web.put("/config", put_config),
            web.delete("/config", delete_config),
            web.get("/config/{subject}", get_config),
            web.put("/config/{subject}", put_config),
            web.delete("/config/{subject}", delete_config),
            web.post("/compatibility" + s + "/versions/{version}", compatibility),
            web.post(f"/compatibility{s}/versions", compatibility),
            web.get("/mode", mode),
            web.get("/mode/{subject}", mode),
            web.get("/contexts", contexts),
            web.route("*", "/associations{tail:.*}", associations),
        ]
    )
    return app


class EmbeddedRegistry:
    """The registry inside the caller's event loop: ``url = await start(bootstrap)``, ``await stop()``."""

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        topic: str = SCHEMAS_TOPIC,
        default_compatibility: str = DEFAULT_COMPATIBILITY,
    ) -> None:
        if bool(username) != bool(password):
            raise ValueError("registry basic auth needs both a username and a password")
        self.username = username
        self.password = password
        self.topic = topic
        self.default_compatibility = default_compatibility
        self.store: KafkaSchemaStore | None = None
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    async def start(self, bootstrap: str, host: str = "127.0.0.1", port: int = 0) -> str:
        """Load the store from Kafka, listen, and return the base URL (``http://host:port``)."""
        store = KafkaSchemaStore(bootstrap, self.topic, default_compatibility=self.default_compatibility)
        await asyncio.to_thread(store.start)
        self.store = store
        app = build_app(store, username=self.username, password=self.password)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{host if host not in ('0.0.0.0', '::') else bound_host}:{bound_port}"
        log.info("schema registry on %s (store: %s @ %s)", self.url, self.topic, bootstrap)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
            self.store = None


class RegistryThread:
    """An EmbeddedRegistry on its own event loop in a daemon thread, for synchronous code."""

    def __init__(
        self, bootstrap: str, host: str = "127.0.0.1", port: int = 0, **registry_kwargs: Any
    ) -> None:
        self.bootstrap = bootstrap
        self.host = host
        self.port = port
        self.registry = EmbeddedRegistry(**registry_kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None

    def start(self, timeout: float = 60.0) -> str:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="schema-registry", daemon=True)
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            self.registry.start(self.bootstrap, self.host, self.port), loop
        )
        try:
            self.url = fut.result(timeout)
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self, timeout: float = 30.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.registry.stop(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> RegistryThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
