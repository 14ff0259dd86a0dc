"""The batch dispatcher: a batch is attempted once, when full or due, and every message's submitter learns
that batch's outcome (the delivery stage acks each inbound event only then)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context

from smsflow.delivery.dispatcher import BatchDispatcher
from smsflow.subscriptions.model import BatchConfig, Subscription


class Store:
    def __init__(self, *subs: Subscription) -> None:
        self.subs = {s.id: s for s in subs}

    async def get(self, subscription_id: str) -> Subscription | None:
        return self.subs.get(subscription_id)


class Sender:
    """Records what the dispatcher asked for; ``fail`` makes attempts fail as a Kafka write would."""

    def __init__(self, store: Store, fail: Exception | None = None) -> None:
        self.store = store
        self.fail = fail
        self.attempts: list[tuple[str, list[str], int]] = []
        self.dead_letters: list[tuple[str, list[str], str]] = []

    async def attempt(
        self,
        sub: Subscription,
        messages: list[dict[str, Any]],
        attempt: int,
        first_at: dt.datetime,
        parent: Context | None,
        links: Sequence[trace.Link] = (),
    ) -> None:
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        self.attempts.append((sub.id, [m["message_id"] for m in messages], attempt))

    async def dead_letter_unsent(
        self, subscription_id: str, messages: list[dict[str, Any]], attempt: int, reason: str
    ) -> None:
        self.dead_letters.append((subscription_id, [m["message_id"] for m in messages], reason))


def batched(size: int, wait_ms: int) -> Subscription:
    return Subscription(
        owner="acme",
        url="https://hooks.example/sms",
        batch=BatchConfig(max_batch_size=size, max_wait_ms=wait_ms),
    )


def msg(i: int) -> dict[str, Any]:
    return {"message_id": f"m{i}"}


async def submit_all(dispatcher: BatchDispatcher, sub: Subscription, n: int) -> list[Any]:
    now = dt.datetime.now(dt.UTC)
    return await asyncio.wait_for(
        asyncio.gather(
            *(dispatcher.submit(sub, msg(i), now, None) for i in range(n)), return_exceptions=True
        ),
        10,
    )


async def test_a_full_batch_is_attempted_once_and_releases_every_submitter() -> None:
    sub = batched(size=3, wait_ms=60_000)
    sender = Sender(Store(sub))
    results = await submit_all(BatchDispatcher(lambda: sender), sub, 3)
    assert results == [None, None, None]
    assert sender.attempts == [(sub.id, ["m0", "m1", "m2"], 1)]


async def test_a_partial_batch_is_sent_when_its_first_message_has_waited_max_wait() -> None:
    sub = batched(size=100, wait_ms=50)
    sender = Sender(Store(sub))
    dispatcher = BatchDispatcher(lambda: sender)
    timer = asyncio.create_task(dispatcher.run())
    try:
        assert await submit_all(dispatcher, sub, 2) == [None, None]
    finally:
        timer.cancel()
    assert sender.attempts == [(sub.id, ["m0", "m1"], 1)]


async def test_a_batch_of_a_deleted_subscription_is_dead_lettered_not_sent() -> None:
    sub = batched(size=2, wait_ms=60_000)
    sender = Sender(Store())  # the subscription is gone by the time the batch is full
    assert await submit_all(BatchDispatcher(lambda: sender), sub, 2) == [None, None]
    assert sender.attempts == []
    assert sender.dead_letters == [(sub.id, ["m0", "m1"], "subscription deleted")]


async def test_an_outcome_that_could_not_be_made_durable_fails_every_submitter() -> None:
    sub = batched(size=2, wait_ms=60_000)
    sender = Sender(Store(sub), fail=ConnectionError("broker gone"))
    results = await submit_all(BatchDispatcher(lambda: sender), sub, 2)
    # each inbound event stays unacked, so it is read again after a restart
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_drain_sends_open_batches_at_shutdown() -> None:
    sub = batched(size=100, wait_ms=60_000)
    sender = Sender(Store(sub))
    dispatcher = BatchDispatcher(lambda: sender)
    waiting = asyncio.ensure_future(submit_all(dispatcher, sub, 2))
    await asyncio.sleep(0.05)
    assert not waiting.done() and sender.attempts == []
    await dispatcher.drain(timeout=5)
    assert await waiting == [None, None]
    assert sender.attempts == [(sub.id, ["m0", "m1"], 1)]


@pytest.mark.parametrize("size", [1, 4])
async def test_every_message_is_in_exactly_one_attempt(size: int) -> None:
    sub = batched(size=size, wait_ms=60_000)
    sender = Sender(Store(sub))
    await submit_all(BatchDispatcher(lambda: sender), sub, 8)
    sent = [mid for _, mids, _ in sender.attempts for mid in mids]
    assert sorted(sent) == sorted(f"m{i}" for i in range(8))
    assert all(len(mids) == size for _, mids, _ in sender.attempts)
