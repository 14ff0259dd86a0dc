"""Subscriptions and owners' holdings kept in the compacted topics ``sms.subscriptions.v1`` and
``sms.holdings.v1``, read back as tables.

Every process that needs them (delivery workers, the API) materialises both topics in memory with one
consumer: it reads from the beginning to the end at start-up, then follows the topics, so a change made
through any API instance reaches every worker within a poll interval, without restarts (a holding removed
stops delivery as soon as the worker reads the tombstone). Writes are acknowledged by the broker
(acks=all) before ``put`` returns; the writer's own view is updated at once (read-your-writes).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from typing import Any

from confluent_kafka import Message

from smsflow.compacted import CompactedFollower
from smsflow.config import SubscriptionConfig
from smsflow.producer import AsyncProducer, producer_conf
from smsflow.schemas import HOLDINGS_TOPIC, SUBSCRIPTIONS_TOPIC
from smsflow.subscriptions.holdings import Holding, holding_from_kafka, holding_to_record
from smsflow.subscriptions.index import store_order
from smsflow.subscriptions.model import (
    MessageFilter,
    SigningSecret,
    Subscription,
    subscription_from_kafka,
    subscription_record_key,
    subscription_to_record,
)
from smsflow.subscriptions.secretbox import SecretBox
from smsflow.subscriptions.store import SubscriptionStore

log = logging.getLogger(__name__)


class TopicSubscriptionStore(SubscriptionStore):
    def __init__(
        self,
        bootstrap: str,
        box: SecretBox | None = None,
        topic: str = SUBSCRIPTIONS_TOPIC,
        holdings_topic: str = HOLDINGS_TOPIC,
    ) -> None:
        super().__init__()
        self.bootstrap = bootstrap
        self.topic = topic
        self.holdings_topic = holdings_topic
        self.box = box or SecretBox.from_env()
        self._holdings: dict[str, Holding] = {}
        self._producer: AsyncProducer | None = None
        self._follower: CompactedFollower | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, timeout: float = 30.0) -> None:
        self._loop = asyncio.get_running_loop()
        self._producer = AsyncProducer(producer_conf(self.bootstrap))
        self._follower = CompactedFollower(
            self.bootstrap, (self.topic, self.holdings_topic), self._on_record, "subscriptions"
        )
        await self._follower.start(timeout)

    async def stop(self) -> None:
        if self._follower is not None:
            await self._follower.stop()
        if self._producer is not None:
            await self._producer.close()

    def _on_record(self, msg: Message) -> None:
        if msg.topic() == self.holdings_topic:
            owner, holding = holding_from_kafka(msg.key() or b"", msg.value())
            self._apply_holding(owner, holding)
        else:
            self._apply(*subscription_from_kafka(msg.key() or b"", msg.value(), self.box))

    def _holdings_now(self) -> builtins.list[Holding]:
        # list() of a dict's values is one C call: safe while the follower's thread applies records
        return list(self._holdings.values())

    def _apply(self, sub_id: str, sub: Subscription | None) -> None:
        have = self._subs.get(sub_id)
        changed = have is not None if sub is None else have != sub
        if changed:
            self._set_subscription(sub_id, sub)
        if changed and self._loop is not None and self._follower is not None and self._follower.loaded:
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(self._notify(sub_id, sub), self._loop)

    def _apply_holding(self, owner: str, holding: Holding | None) -> None:
        if holding is None:
            self._holdings.pop(owner, None)
        else:
            self._holdings[owner] = holding
        self._changed(holding=True)

    async def get(self, subscription_id: str) -> Subscription | None:
        return self._subs.get(subscription_id)

    def holding_of(self, owner: str) -> Holding | None:
        return self._holdings.get(owner)

    async def holdings(self) -> builtins.list[Holding]:
        return [self._holdings[o] for o in sorted(self._holdings)]

    async def put_holding(self, holding: Holding) -> None:
        assert self._producer is not None, "start() first"
        key = holding.owner.encode("utf-8")
        await self._producer.send(self.holdings_topic, holding_to_record(holding), key=key)
        self._holdings[holding.owner] = holding
        self._changed(holding=True)

    async def delete_holding(self, owner: str) -> bool:
        assert self._producer is not None, "start() first"
        existed = owner in self._holdings
        await self._producer.send(self.holdings_topic, None, key=owner.encode("utf-8"))
        self._holdings.pop(owner, None)
        self._changed(holding=True)
        return existed

    async def list(self, owner: str | None = None) -> list[Subscription]:
        subs = list(self._subs.values()) if owner is None else self._owned(owner)
        return sorted(subs, key=store_order)

    async def put(self, sub: Subscription) -> None:
        assert self._producer is not None, "start() first"
        await self._producer.send(
            self.topic, subscription_to_record(sub, self.box), key=subscription_record_key(sub.id)
        )
        self._set_subscription(sub.id, sub)
        await self._notify(sub.id, sub)

    async def delete(self, subscription_id: str) -> bool:
        assert self._producer is not None, "start() first"
        existed = subscription_id in self._subs
        await self._producer.send(self.topic, None, key=subscription_record_key(subscription_id))
        self._set_subscription(subscription_id, None)
        if existed:
            await self._notify(subscription_id, None)
        return existed


def subscription_from_config(sc: SubscriptionConfig, existing: Subscription | None = None) -> Subscription:
    secret = sc.secret()
    secrets = [SigningSecret.new(secret)]
    if existing is not None and existing.secrets[0].value.get_secret_value() == secret:
        secrets = list(existing.secrets)
    fields: dict[str, Any] = {
        "id": sc.id,
        "owner": "config",
        "url": sc.url,
        "secrets": secrets,
        "filters": MessageFilter(
            destination_numbers=sc.destinations,
            destination_prefixes=sc.destination_prefixes,
            countries=sc.countries,
            otp_only=sc.otp_only,
        ),
        "timeout_seconds": sc.timeout_s,
        "max_in_flight": sc.max_in_flight,
    }
    if existing is not None:
        fields["created_at"] = existing.created_at
        fields["enabled"] = existing.enabled
        fields["disabled_reason"] = existing.disabled_reason
        fields["disabled_endpoints"] = existing.disabled_endpoints
    return Subscription(**fields)


async def seed_subscriptions(store: SubscriptionStore, configured: list[SubscriptionConfig]) -> None:
    """Make the topic hold the subscriptions the config file declares (idempotent)."""
    for sc in configured:
        existing = await store.get(sc.id)
        wanted = subscription_from_config(sc, existing)
        if existing is None or wanted.model_dump(exclude={"updated_at"}) != existing.model_dump(
            exclude={"updated_at"}
        ):
            await store.put(wanted)
