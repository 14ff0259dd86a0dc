"""Endpoint circuits kept in Kafka: the failing streaks that switch an endpoint off survive restarts.

:class:`~smsflow.delivery.policy.EndpointCircuit` counts, per subscription, how long every attempt has failed
and how many messages in a row were dead-lettered. In memory only, a restart (or a rebalance that moves the
work to another worker) started every streak again, so an endpoint failing for days was never switched off
if workers restarted more often than the threshold. :class:`CircuitStore` writes each change of a streak to
the compacted topic ``sms.webhook.circuits.v1`` (key = subscription id, value = JSON ``{"writer", "state"}``,
a tombstone when the streak is forgotten) and every worker reads the topic whole at start and follows it.

Writes happen on changes only (first failure, each dead letter, the trip, the success that ends a streak),
not on every attempt. With several workers, the last write wins: two workers counting dead letters of one
endpoint at the same moment may lose one count, which delays the trip by one message. A worker ignores its own
records coming back (its memory is newer), and applies those of other workers and of earlier incarnations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import orjson
from confluent_kafka import Message

from smsflow.compacted import CompactedFollower
from smsflow.config import CircuitSettings
from smsflow.delivery.policy import CircuitConfig, EndpointCircuit
from smsflow.producer import AsyncProducer, producer_conf
from smsflow.schemas import WEBHOOK_CIRCUITS_TOPIC

log = logging.getLogger(__name__)


class CircuitStore:
    def __init__(self, bootstrap: str, circuit: EndpointCircuit, topic: str = WEBHOOK_CIRCUITS_TOPIC) -> None:
        self.bootstrap = bootstrap
        self.circuit = circuit
        self.topic = topic
        self.writer = uuid.uuid4().hex  # this process; its own records coming back are not applied
        self._producer: AsyncProducer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        self._follower = CompactedFollower(bootstrap, (topic,), self._on_record, "webhook-circuits")

    async def start(self, timeout: float = 60.0) -> None:
        self._loop = asyncio.get_running_loop()
        self._producer = AsyncProducer(producer_conf(self.bootstrap))
        await self._follower.start(timeout)
        self.circuit.listener = self._changed  # from now on every change is written

    async def flush(self) -> None:
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def stop(self) -> None:
        self.circuit.listener = None
        await self.flush()
        await self._follower.stop()
        if self._producer is not None:
            await self._producer.close()

    def _changed(self, subscription_id: str, state: dict[str, Any] | None) -> None:
        if self._producer is None:
            return
        value = None if state is None else orjson.dumps({"writer": self.writer, "state": state})
        fut = asyncio.ensure_future(self._producer.send(self.topic, value, key=subscription_id.encode()))
        self._pending.add(fut)
        fut.add_done_callback(self._sent)

    def _sent(self, fut: asyncio.Future[Any]) -> None:
        self._pending.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            # the streak stays in memory; it is written again at its next change
            log.warning("%s: endpoint circuit state not written: %s", self.topic, fut.exception())

    def _on_record(self, msg: Message) -> None:
        """Runs in the follower thread: decode here, apply on the event loop (the circuit is not locked)."""
        key = msg.key()
        if key is None:
            return
        sub_id = key.decode("utf-8")
        raw = msg.value()
        doc = None if raw is None else orjson.loads(raw)
        if doc is not None and doc.get("writer") == self.writer:
            return
        state = None if doc is None else doc["state"]
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed at shutdown
                self._loop.call_soon_threadsafe(self._apply, sub_id, state)

    def _apply(self, subscription_id: str, state: dict[str, Any] | None) -> None:
        if state is None:
            self.circuit.forget(subscription_id)
        else:
            self.circuit.restore(subscription_id, state)


def circuit_config(settings: CircuitSettings) -> CircuitConfig:
    """The policy's thresholds from the validated ``webhooks.circuit`` config section."""
    return CircuitConfig(
        failing_for_s=settings.failing_for_s,
        max_consecutive_dead_letters=settings.max_consecutive_dead_letters,
    )
