"""Resend and recover share a few Kafka scans fairly between tenants (smsflow/delivery/scan_slots.py).

Found by reading the API as a hostile tenant would: scans were a plain semaphore of two, and a recover held
its slot while it waited (up to ``api.recover_settle_s``, 30 s) for a lagging deliver stage. Two recovers of
one tenant then made every other tenant's resend wait 30 s, and a burst of them queued everyone else behind
the whole burst. Now a tenant runs one scan at a time, waiting tenants get free slots in turn, the wait for
the deliver stage holds no slot, and a tenant with 8 requests in progress gets a 429 for a ninth."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from smsflow.api.apikeys import ApiKeyStore
from smsflow.api.app import create_api_app
from smsflow.delivery.redelivery import RecoverOutcome, Redelivery
from smsflow.delivery.scan_slots import PENDING_PER_OWNER, Busy, ScanSlots
from smsflow.subscriptions.model import Subscription
from smsflow.subscriptions.store import InMemorySubscriptionStore
from tests.factories import inbound_record


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# ---------------------------------------------------------------- the scheduler


async def test_an_owner_runs_one_scan_at_a_time_and_others_take_the_free_slot() -> None:
    slots = ScanSlots(slots=2)
    running: list[str] = []
    release = {name: asyncio.Event() for name in ("a1", "a2", "b1")}

    async def scan(owner: str, name: str) -> None:
        async with slots.hold(owner):
            running.append(name)
            await release[name].wait()
            running.remove(name)

    tasks = [asyncio.create_task(scan("a", "a1")), asyncio.create_task(scan("a", "a2"))]
    await settle()
    assert running == ["a1"]  # a's second scan waits although a slot is free
    tasks.append(asyncio.create_task(scan("b", "b1")))
    await settle()
    assert running == ["a1", "b1"]  # b takes the free slot at once
    release["a1"].set()
    await settle()
    assert running == ["b1", "a2"]
    release["a2"].set()
    release["b1"].set()
    await asyncio.gather(*tasks)
    assert slots.stats() == {"running": 0, "waiting": 0, "pending": 0}


async def test_waiting_owners_are_served_in_turn() -> None:
    slots = ScanSlots(slots=1)
    order: list[str] = []
    gate = asyncio.Event()

    async def scan(owner: str, name: str) -> None:
        async with slots.hold(owner):
            order.append(name)
            if name == "a1":
                await gate.wait()

    first = asyncio.create_task(scan("a", "a1"))
    await settle()
    # a queues a burst, then b and c ask for one scan each
    rest = [asyncio.create_task(scan("a", f"a{i}")) for i in range(2, 6)]
    await settle()
    rest += [asyncio.create_task(scan("b", "b1")), asyncio.create_task(scan("c", "c1"))]
    await settle()
    gate.set()
    await asyncio.gather(first, *rest)
    # b and c wait for one more of a's scans at most, not for a's whole burst
    assert order == ["a1", "a2", "b1", "c1", "a3", "a4", "a5"]


async def test_an_owner_with_too_many_requests_in_progress_is_refused() -> None:
    slots = ScanSlots(slots=2, pending_per_owner=3)
    done = asyncio.Event()

    async def request(owner: str) -> None:
        async with slots.admit(owner):
            await done.wait()

    tasks = [asyncio.create_task(request("a")) for _ in range(3)]
    await settle()
    with pytest.raises(Busy):
        async with slots.admit("a"):
            pass
    async with slots.admit("b"):  # another owner is not counted against a
        pass
    done.set()
    await asyncio.gather(*tasks)
    async with slots.admit("a"):  # finished requests make room again
        assert slots.stats()["pending"] == 1


async def test_a_cancelled_waiter_leaves_no_slot_taken() -> None:
    slots = ScanSlots(slots=1)
    gate = asyncio.Event()

    async def scan(owner: str) -> None:
        async with slots.hold(owner):
            await gate.wait()

    holder = asyncio.create_task(scan("a"))
    await settle()
    waiter = asyncio.create_task(scan("b"))
    await settle()
    waiter.cancel()  # the client went away while waiting
    await asyncio.gather(waiter, return_exceptions=True)
    gate.set()
    await holder
    assert slots.stats() == {"running": 0, "waiting": 0, "pending": 0}
    async with slots.hold("c"):  # the slot is free for the next one
        pass


async def test_a_waiter_cancelled_as_it_is_granted_gives_the_slot_back() -> None:
    slots = ScanSlots(slots=1)
    release = asyncio.Event()

    async def scan(owner: str) -> None:
        async with slots.hold(owner):
            await release.wait()

    holder = asyncio.create_task(scan("a"))
    await settle()
    waiter = asyncio.create_task(scan("b"))
    await settle()
    release.set()
    await holder  # hands the slot to b's future ...
    waiter.cancel()  # ... and b is cancelled before it resumed
    await asyncio.gather(waiter, return_exceptions=True)
    assert slots.stats() == {"running": 0, "waiting": 0, "pending": 0}
    async with slots.hold("c"):
        pass


# ---------------------------------------------------------------- resend and recover


def sub(owner: str) -> Subscription:
    return Subscription(owner=owner, url=f"https://{owner}.example/hook")


class StubbedRedelivery(Redelivery):
    """Redelivery with its Kafka reads stubbed: a deliver stage that lags until ``caught_up`` is set, and
    recover scans that block their thread until ``scans_may_end`` is set."""

    def __init__(self) -> None:
        super().__init__("unused:9092", None, holding_of=lambda owner: None)  # type: ignore[arg-type]
        self.caught_up = asyncio.Event()
        self.scans_may_end = threading.Event()
        self.scanning: list[str] = []
        self.most_scanning_for: dict[str, int] = {}
        self.queued: list[tuple[str, str]] = []

    def inbound_range(self, since_ms: int) -> tuple[dict[int, int], dict[int, int]]:
        return {0: 0}, {0: 10}

    async def _settled(self, starts: dict[int, int], ends: dict[int, int]) -> dict[int, int]:
        await self.caught_up.wait()
        return dict(ends)

    def recover_scan(self, sub: Subscription, since_ms: int, inbound: Any, emit: Any) -> None:
        self.scanning.append(sub.owner)
        self.most_scanning_for[sub.owner] = max(
            self.most_scanning_for.get(sub.owner, 0), self.scanning.count(sub.owner)
        )
        try:
            assert self.scans_may_end.wait(10)
            emit([{"message_id": f"{sub.owner}-recovered"}])
        finally:
            self.scanning.remove(sub.owner)

    def find_message(self, message_id: str) -> dict[str, Any] | None:
        return inbound_record(message_id)

    def _receives(self, sub: Subscription, msg: dict[str, Any]) -> bool:
        return True

    async def _requeue(self, sub: Subscription, payloads: list[dict[str, Any]], reason: str) -> None:
        self.queued.extend((sub.owner, str(p["message_id"])) for p in payloads)


SINCE = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


async def test_recovers_waiting_for_a_lagging_worker_hold_up_no_other_tenant() -> None:
    red = StubbedRedelivery()
    a = sub("a")
    recovers = [asyncio.create_task(red.recover(a, SINCE)) for _ in range(4)]
    await settle()
    # a's four recovers wait for the deliver stage (up to api.recover_settle_s); b's resend is not behind them
    assert await asyncio.wait_for(red.resend("b-1", sub("b")), 2)
    assert red.queued == [("b", "b-1")]
    red.caught_up.set()
    red.scans_may_end.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*recovers), 10)
    assert outcomes == [RecoverOutcome(queued=1, not_examined=0)] * 4


async def test_one_tenants_scans_leave_a_slot_to_the_others() -> None:
    red = StubbedRedelivery()
    red.caught_up.set()
    a = sub("a")
    recovers = [asyncio.create_task(red.recover(a, SINCE)) for _ in range(3)]
    for _ in range(100):  # a's first scan is running in its thread
        await asyncio.sleep(0.01)
        if red.scanning:
            break
    assert red.scanning == ["a"]
    # a's scans block; b still gets the other slot
    assert await asyncio.wait_for(red.resend("b-1", sub("b")), 2)
    red.scans_may_end.set()
    await asyncio.wait_for(asyncio.gather(*recovers), 10)
    assert red.most_scanning_for == {"a": 1}


async def test_a_ninth_request_of_one_tenant_is_a_429_with_retry_after() -> None:
    red = StubbedRedelivery()
    store, keys = InMemorySubscriptionStore(), ApiKeyStore()
    a_sub, b_sub = sub("a"), sub("b")
    await store.put(a_sub)
    await store.put(b_sub)
    a_token, b_token = keys.issue("a")[1], keys.issue("b")[1]
    app = create_api_app(store, keys, resend=red.resend, recover=red.recover)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:

        async def recover(token: str, sub_id: str) -> Any:
            return await client.post(
                f"/v1/subscriptions/{sub_id}/recover",
                json={"since": SINCE.isoformat()},
                headers={"Authorization": f"Bearer {token}"},
            )

        flood = [asyncio.create_task(recover(a_token, a_sub.id)) for _ in range(PENDING_PER_OWNER)]
        for _ in range(200):
            await asyncio.sleep(0.01)
            if red.slots.stats()["pending"] == PENDING_PER_OWNER:
                break
        assert red.slots.stats()["pending"] == PENDING_PER_OWNER
        refused = await recover(a_token, a_sub.id)
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "1"
        assert (await refused.json())["error"]["code"] == "too_many_requests"
        resend = await client.post(
            f"/v1/messages/b-1/resend?subscription_id={b_sub.id}",
            headers={"Authorization": f"Bearer {b_token}"},
        )
        assert resend.status == 202  # b is neither refused nor kept waiting by a's flood
        red.caught_up.set()
        red.scans_may_end.set()
        answers = await asyncio.wait_for(asyncio.gather(*flood), 20)
        assert [r.status for r in answers] == [202] * PENDING_PER_OWNER
        assert (await recover(a_token, a_sub.id)).status == 202  # room again


class FloodingRedelivery(StubbedRedelivery):
    """A recover scan that finds far more than the queue between its thread and the API holds (4 chunks), and
    a requeue that fails (Kafka refused it) or never ends (the client went away, the request is cancelled)."""

    def __init__(self, requeue: str) -> None:
        super().__init__()
        self.caught_up.set()
        self.requeue = requeue
        self.scan_ended = threading.Event()
        self.chunks_handed = 0

    def recover_scan(self, sub: Subscription, since_ms: int, inbound: Any, emit: Any) -> None:
        try:
            for i in range(1000):
                emit([{"message_id": f"m{i}"}])
                self.chunks_handed += 1
        finally:
            self.scan_ended.set()

    async def _requeue(self, sub: Subscription, payloads: list[dict[str, Any]], reason: str) -> None:
        if self.requeue == "fails":
            raise RuntimeError("Kafka refused the retry records")
        await asyncio.Event().wait()


async def test_a_failed_requeue_ends_the_scan_thread() -> None:
    """Before, the scan thread blocked for ever handing over its next chunk, holding its Kafka consumer."""
    red = FloodingRedelivery("fails")
    with pytest.raises(RuntimeError, match="refused"):
        await asyncio.wait_for(red.recover(sub("a"), SINCE), 5)
    assert await asyncio.to_thread(red.scan_ended.wait, 3)
    assert red.chunks_handed <= 6  # the queue's 4 and the one being handed over, not the 1,000
    # the owner's request and slot are given back
    assert (red.slots._pending, red.slots._running, red.slots._free) == ({}, set(), red.slots.slots)


async def test_a_cancelled_recover_ends_the_scan_thread() -> None:
    red = FloodingRedelivery("hangs")
    task = asyncio.create_task(red.recover(sub("a"), SINCE))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if red.chunks_handed >= 4:  # the queue is full: the thread now waits to hand over the next chunk
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(red.scan_ended.wait, 3)
    assert red.chunks_handed <= 6
