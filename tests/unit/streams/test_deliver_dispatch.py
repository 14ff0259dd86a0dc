"""The deliver agent's dispatch (``DeliverStage._deliver_one``): each sms.inbound.v1 event goes to every
subscription that receives it, batched ones through the batch dispatcher, and the event is acked only once
every target's outcome is durable; an event that does not decode is quarantined and acked.

No broker: the Kafka side (``KafkaDelivery``) is replaced by a recorder of what it was asked to write; the
records are sms.inbound.v1 as the worker reads them (our Serde, over confluent-kafka's in-memory registry).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient

from smsflow.serde import Serde
from smsflow.subscriptions.model import BatchConfig, Subscription
from streams.deliver import MAX_EVENTS_IN_FLIGHT, DeliverStage
from tests.factories import inbound_record
from tests.unit.delivery.test_dispatcher import Sender, Store

SERDE = Serde(MockSchemaRegistryClient({"url": "mock://registry"}))


class Delivery(Sender):
    """The Kafka side of delivery as the stage sees it, recording each durable write it was asked for."""

    def __init__(self, *subs: Subscription, failing: str | None = None) -> None:
        super().__init__(Store(*subs))
        self.topics: dict[str, Any] = {}
        self.failing = failing  # a subscription whose attempts cannot be made durable (a Kafka write fails)
        self.queued_for: list[tuple[str, str]] = []
        self.quarantined: list[tuple[int, int, str]] = []

    async def targets(self, msg: dict[str, Any]) -> list[Subscription]:
        return list(self.store.subs.values())

    async def queued(self, sub: Subscription, message_id: str) -> None:
        self.queued_for.append((sub.id, message_id))

    async def attempt(self, sub: Subscription, *args: Any, **kwargs: Any) -> None:
        if sub.id == self.failing:
            raise RuntimeError("sms.delivery.v1: broker unavailable")
        await super().attempt(sub, *args, **kwargs)

    async def quarantine(self, value: bytes, partition: int, offset: int, reason: str) -> None:
        self.quarantined.append((partition, offset, reason))


class Stream:
    """The agent's view of sms.inbound.v1: a finite run of events, and the acks it gets."""

    def __init__(self, *events: Any) -> None:
        self._events = events
        self.acked: list[int] = []

    def noack(self) -> Stream:
        return self

    async def events(self) -> AsyncIterator[Any]:
        for e in self._events:
            yield e

    async def ack(self, event: Any) -> None:
        self.acked.append(event.message.offset)


def event(offset: int, value: bytes | None) -> Any:
    return SimpleNamespace(value=value, headers=[], message=SimpleNamespace(partition=2, offset=offset))


def inbound(offset: int) -> Any:
    return event(offset, SERDE.encode("sms.inbound.v1", inbound_record(f"msg_{offset}")))


def subscription(sid: str, batch: int | None = None) -> Subscription:
    return Subscription(
        id=sid,
        owner="acme",
        url=f"https://hooks.example/{sid}",
        batch=BatchConfig(max_batch_size=batch, max_wait_ms=60_000) if batch else None,
    )


def stage_for(delivery: Delivery) -> DeliverStage:
    ctx = SimpleNamespace(
        bootstrap="127.0.0.1:1",  # nothing connects: the attempts ledger is not started here
        serde=SERDE,
        delivery=delivery,
        subscriptions_ready=asyncio.Event(),
    )
    ctx.subscriptions_ready.set()
    stage = DeliverStage(ctx, outputs={})  # type: ignore[arg-type]
    stage.state_ready.set()
    return stage


async def run(stage: DeliverStage, stream: Stream) -> list[int]:
    """The deliver agent over the stream's events, until every event's task has finished."""
    await stage.deliver(stream)  # type: ignore[arg-type]
    await asyncio.wait_for(asyncio.gather(*list(stage.tasks)), 5)
    assert stage.gate._value == MAX_EVENTS_IN_FLIGHT  # every in-flight slot given back, whatever happened
    return stream.acked


async def test_each_receiving_subscription_is_attempted_at_once_and_the_event_acked() -> None:
    delivery = Delivery(subscription("a"), subscription("b"))
    assert sorted(await run(stage_for(delivery), Stream(inbound(7), inbound(8)))) == [7, 8]
    assert sorted(delivery.attempts) == [(s, [f"msg_{n}"], 1) for s in "ab" for n in (7, 8)]
    # attempted at once: the attempt's own event starts the history, no ``queued`` record (ADR 0006)
    assert delivery.queued_for == []


async def test_an_event_nobody_receives_is_acked() -> None:
    delivery = Delivery()
    assert await run(stage_for(delivery), Stream(inbound(3))) == [3]
    assert delivery.attempts == []


@pytest.mark.parametrize(
    "subs", [("a", "b"), ("b",)], ids=["one of two targets fails", "the only target fails"]
)
async def test_a_target_whose_outcome_is_not_durable_leaves_the_event_unacked(subs: tuple[str, ...]) -> None:
    delivery = Delivery(*map(subscription, subs), failing="b")
    # unacked: the event is read again after a restart, not lost; the next event is not held up by it
    assert await run(stage_for(delivery), Stream(inbound(9))) == []
    assert delivery.attempts == [("a", ["msg_9"], 1)] * ("a" in subs)  # the other target still attempted


async def test_a_batched_subscription_holds_the_ack_until_its_batch_is_sent() -> None:
    delivery = Delivery(subscription("now"), subscription("later", batch=3))
    stage = stage_for(delivery)
    stream = Stream(inbound(1), inbound(2))
    await stage.deliver(stream)  # type: ignore[arg-type]
    for _ in range(50):
        await asyncio.sleep(0)
    assert sorted(delivery.attempts) == [("now", ["msg_1"], 1), ("now", ["msg_2"], 1)]  # unbatched: at once
    assert stream.acked == []  # both wait in the open batch of "later"
    # waiting for a batch is the one wait a history shows as ``queued``
    assert delivery.queued_for == [("later", "msg_1"), ("later", "msg_2")]
    await stage.batches.drain(timeout=5)  # the batch is sent (here: at shutdown)
    await asyncio.wait_for(asyncio.gather(*list(stage.tasks)), 5)
    assert ("later", ["msg_1", "msg_2"], 1) in delivery.attempts
    assert sorted(stream.acked) == [1, 2]


@pytest.mark.parametrize("value", [b"", b"\xff\xff\xff\xff not avro", None])
async def test_an_event_that_does_not_decode_is_quarantined_and_acked(value: bytes | None) -> None:
    delivery = Delivery(subscription("a"))
    assert sorted(await run(stage_for(delivery), Stream(event(5, value), inbound(6)))) == [5, 6]
    [(partition, offset, reason)] = delivery.quarantined
    assert (partition, offset) == (2, 5) and reason.startswith("inbound record does not decode")
    assert delivery.attempts == [("a", ["msg_6"], 1)]  # the partition goes on past it
