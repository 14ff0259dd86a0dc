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
import threading
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from smsflow.config import SubscriptionConfig
from smsflow.producer import AsyncProducer, producer_conf
from smsflow.schemas import HOLDINGS_TOPIC, SUBSCRIPTIONS_TOPIC
from smsflow.webhooks.holdings import Holding, holding_from_kafka, holding_to_record
from smsflow.webhooks.model import (
    MessageFilter,
    SigningSecret,
    Subscription,
    subscription_from_kafka,
    subscription_record_key,
    subscription_to_record,
)
from smsflow.webhooks.secretbox import SecretBox
from smsflow.webhooks.store import SubscriptionStore

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
        self._subs: dict[str, Subscription] = {}
        self._holdings: dict[str, Holding] = {}
        self._producer: AsyncProducer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loaded = threading.Event()
        self._error: BaseException | None = None

    async def start(self, timeout: float = 30.0) -> None:
        self._loop = asyncio.get_running_loop()
        self._producer = AsyncProducer(producer_conf(self.bootstrap))
        self._thread = threading.Thread(target=self._follow, name="subscriptions-follow", daemon=True)
        self._thread.start()
        ok = await asyncio.to_thread(self._loaded.wait, timeout)
        if self._error is not None:
            raise self._error
        if not ok:
            raise TimeoutError(f"{self.topic}: not loaded within {timeout:g}s")

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
        if self._producer is not None:
            await self._producer.close()

    def _follow(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                # never commits: this is a table read from the start, not a queue
                "group.id": f"smsflow-subscriptions-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
            }
        )
        try:
            parts: list[TopicPartition] = []
            for topic in (self.topic, self.holdings_topic):
                tmeta = consumer.list_topics(topic, timeout=10).topics.get(topic)
                if tmeta is None or tmeta.error is not None:
                    raise RuntimeError(f"{topic}: topic not found (apply infra/topics.yaml)")
                parts += [TopicPartition(topic, p, 0) for p in tmeta.partitions]
            consumer.assign(parts)
            remaining = set()
            for tp in parts:
                lo, hi = _watermarks(consumer, TopicPartition(tp.topic, tp.partition))
                if hi > lo:
                    remaining.add((tp.topic, tp.partition))
            if not remaining:
                self._loaded.set()
            while not self._stop.is_set():
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        remaining.discard((msg.topic(), msg.partition()))
                        if not remaining:
                            self._loaded.set()
                    continue
                try:
                    if msg.topic() == self.holdings_topic:
                        owner, holding = holding_from_kafka(msg.key() or b"", msg.value())
                        self._apply_holding(owner, holding)
                        continue
                    sub_id, sub = subscription_from_kafka(msg.key() or b"", msg.value(), self.box)
                except Exception as exc:
                    log.error("%s@%d: unreadable record skipped: %s", msg.topic(), msg.offset(), exc)
                    continue
                self._apply(sub_id, sub)
        except BaseException as exc:
            self._error = exc
            self._loaded.set()
        finally:
            consumer.close()

    def _apply(self, sub_id: str, sub: Subscription | None) -> None:
        if sub is None:
            changed = self._subs.pop(sub_id, None) is not None
        else:
            changed = self._subs.get(sub_id) != sub
            self._subs[sub_id] = sub
        if changed and self._loop is not None and self._loaded.is_set():
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(self._notify(sub_id, sub), self._loop)

    def _apply_holding(self, owner: str, holding: Holding | None) -> None:
        if holding is None:
            self._holdings.pop(owner, None)
        else:
            self._holdings[owner] = holding

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

    async def delete_holding(self, owner: str) -> bool:
        assert self._producer is not None, "start() first"
        existed = owner in self._holdings
        await self._producer.send(self.holdings_topic, None, key=owner.encode("utf-8"))
        self._holdings.pop(owner, None)
        return existed

    async def list(self, owner: str | None = None) -> list[Subscription]:
        subs = [s for s in self._subs.values() if owner is None or s.owner == owner]
        return sorted(subs, key=lambda s: (s.created_at, s.id))

    async def put(self, sub: Subscription) -> None:
        assert self._producer is not None, "start() first"
        await self._producer.send(
            self.topic, subscription_to_record(sub, self.box), key=subscription_record_key(sub.id)
        )
        self._subs[sub.id] = sub
        await self._notify(sub.id, sub)

    async def delete(self, subscription_id: str) -> bool:
        assert self._producer is not None, "start() first"
        existed = subscription_id in self._subs
        await self._producer.send(self.topic, None, key=subscription_record_key(subscription_id))
        self._subs.pop(subscription_id, None)
        if existed:
            await self._notify(subscription_id, None)
        return existed


def _watermarks(consumer: Consumer, tp: TopicPartition, timeout: float = 30.0) -> tuple[int, int]:
    """Low and high offsets; retried while the partition has no leader yet (a topic created moments ago)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            lo, hi = consumer.get_watermark_offsets(tp, timeout=10)
            return int(lo), int(hi)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            retriable = isinstance(err, KafkaError) and (err.retriable() or err.code() in _NO_LEADER_YET)
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


_NO_LEADER_YET = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)


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
