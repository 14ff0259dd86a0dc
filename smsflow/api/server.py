"""``smsflow api``: the subscriptions REST API as its own process.

It reads and writes subscriptions in the compacted topic ``sms.subscriptions.v1`` (delivery workers follow
that topic, so a change takes effect without a restart), and answers resend and recover by queueing messages
on the retry topic (``smsflow.delivery.redelivery``). API keys: a bootstrap admin key from the environment
variable ``api.admin_key_env`` (kept in memory only as a salted hash, never logged) and the hashed records of
``api.keys_file`` (JSON lines of ``ApiKey.to_record()``, made by ``smsflow api-keys new``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from smsflow.api.apikeys import ALL_SCOPES, ApiKey, ApiKeyStore
from smsflow.config import ApiConfig, Config, ConfigError

if TYPE_CHECKING:
    from smsflow.outbound.request import OutboundRequest

log = logging.getLogger(__name__)


def load_api_keys(cfg: ApiConfig, environ: Mapping[str, str] | None = None) -> ApiKeyStore:
    env = os.environ if environ is None else environ
    keys: list[ApiKey] = []
    if cfg.admin_key_env and env.get(cfg.admin_key_env):
        try:
            keys.append(ApiKey.from_token(env[cfg.admin_key_env], None, ALL_SCOPES, "admin (environment)"))
        except ValueError:
            # the value itself is never put in the message
            raise ConfigError(
                f"api.admin_key_env: {cfg.admin_key_env} does not hold an API key "
                "(sfk_<key id>_<secret>); make one with `smsflow api-keys new --token-only`"
            ) from None
    if cfg.keys_file:
        path = Path(cfg.keys_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"api.keys_file: cannot read {path}: {exc.strerror}") from None
        for n, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                keys.append(ApiKey.from_record(orjson.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"api.keys_file: {path}:{n}: not an API key record ({exc})") from None
    if not keys:
        raise ConfigError(
            f"api: no API keys; set {cfg.admin_key_env or 'api.admin_key_env'} or api.keys_file "
            "(see `smsflow api-keys new --help`)"
        )
    return ApiKeyStore(keys)


async def serve_api(cfg: Config, stop: asyncio.Event | None = None) -> None:
    """Run the API until ``stop`` is set (or SIGINT/SIGTERM)."""
    from smsflow.api.app import create_api_app
    from smsflow.api.buckets import OwnerBuckets
    from smsflow.api.message_feed import OutboundFeed
    from smsflow.api.messages import OutboundDesk, UrlRules
    from smsflow.api.routes import RouteBoard, RouteHandlers
    from smsflow.api.subscriptions import ApiSettings
    from smsflow.delivery.callbacks import owner_callback_secrets
    from smsflow.delivery.egress import AddressPolicy
    from smsflow.delivery.redelivery import Redelivery
    from smsflow.producer import AsyncProducer, producer_conf
    from smsflow.routing.policy_book import PolicyBook, policy_writer
    from smsflow.routing.policy_changes import PolicyChange
    from smsflow.schemas import (
        DELIVERY_TOPIC,
        INBOUND_TOPIC,
        OUTBOUND_STATUS_TOPIC,
        OUTBOUND_TOPIC,
        ROUTE_OVERRIDES_TOPIC,
    )
    from smsflow.serde import Serde, registry_client
    from smsflow.subscriptions.secretbox import SecretBox, SecretBoxError
    from smsflow.subscriptions.topic_store import TopicSubscriptionStore
    from streams.inbound_reader import inbound_reader_group

    bootstrap, registry = cfg.require_endpoints()
    api_keys = load_api_keys(cfg.api)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    try:
        box = SecretBox.from_env()
    except SecretBoxError as exc:
        raise ConfigError(f"secrets: {exc}") from None
    serde = Serde(registry_client(registry, cfg.registry_credentials()))
    await asyncio.to_thread(
        serde.warm_up, [DELIVERY_TOPIC, INBOUND_TOPIC, OUTBOUND_TOPIC, OUTBOUND_STATUS_TOPIC]
    )
    store = TopicSubscriptionStore(bootstrap, box=box)
    await store.start()
    redelivery = Redelivery(
        bootstrap,
        serde,
        holding_of=store.holding_of,
        history_lookback_s=cfg.api.resend_history_lookback_s,
        search_window_s=cfg.api.resend_search_window_s,
        deliver_group=inbound_reader_group(cfg.app_id, cfg.worker.inbound_reader),
        settle_s=cfg.api.recover_settle_s,
    )
    await redelivery.start()
    settings = ApiSettings(
        rotation_overlap_s=cfg.api.rotation_overlap_s,
        max_subscriptions_per_owner=cfg.api.max_subscriptions_per_owner,
        max_filter_entries=cfg.api.max_filter_entries,
        subscription_changes_per_minute=cfg.api.subscription_changes_per_minute,
        https_only=cfg.webhooks.https_only,
        address_policy=AddressPolicy() if cfg.webhooks.block_private_addresses else None,
    )
    board = RouteBoard(bootstrap, serde)
    await board.start()
    book = PolicyBook(bootstrap, "route-policies-api")
    await book.start()
    producer = AsyncProducer(producer_conf(bootstrap))

    async def send_override(scope: str, value: bytes) -> None:
        await producer.send(ROUTE_OVERRIDES_TOPIC, value, key=scope)

    async def put_policy(change: PolicyChange) -> None:
        await book.put(change, policy_writer(producer))

    desk = OutboundDesk(
        _request_sink(producer, serde),
        store.holding_of,
        url_rules=UrlRules(settings.https_only, settings.address_policy),
        callback_secrets=lambda owner: owner_callback_secrets(box, owner),
        rates=OwnerBuckets(
            cfg.api.segments_burst_per_owner,
            cfg.api.segments_per_second_per_owner,
            limits={o: (r.burst, r.per_second) for o, r in cfg.api.segment_rates.items()},
        ),
        idempotency_keys_per_owner=cfg.api.idempotency_keys_per_owner,
        any_alphanumeric_sender=cfg.api.alphanumeric_senders == "any",
    )
    feed = OutboundFeed(bootstrap, serde, desk)
    await feed.start()
    app = create_api_app(
        store,
        api_keys,
        resend=redelivery.resend,
        recover=redelivery.recover,
        settings=settings,
        routes=RouteHandlers(
            cfg.routing,
            board,
            send_override,
            subscriptions=store,
            policies=book.api,
            put_policy=put_policy,
        ),
        messages=desk,
    )
    runner = web.AppRunner(app)  # the access log has the request line, never the Authorization header
    await runner.setup()
    try:
        site = web.TCPSite(runner, cfg.api.host, cfg.api.port)
        await site.start()
        log.info("api: listening on http://%s:%d (OpenAPI at /openapi.json)", cfg.api.host, cfg.api.port)
        await stop.wait()
    finally:
        await runner.cleanup()
        await board.stop()
        await book.stop()
        await feed.stop()
        await producer.close()
        await redelivery.stop()
        await store.stop()


def _request_sink(producer: Any, serde: Any) -> Any:
    """Produce an accepted request to sms.outbound.v1, keyed by destination, and wait for the broker."""
    from smsflow.api.messages import SinkUnavailable
    from smsflow.outbound.records import request_record
    from smsflow.producer import KafkaUnavailable
    from smsflow.schemas import OUTBOUND_TOPIC
    from smsflow.telemetry import headers_from_context

    async def sink(req: OutboundRequest) -> None:
        try:
            value = serde.encode(OUTBOUND_TOPIC, request_record(req))
            await producer.send(OUTBOUND_TOPIC, value, key=req.to, headers=headers_from_context())
        except (KafkaUnavailable, OSError) as exc:
            raise SinkUnavailable(str(exc)) from exc

    return sink
