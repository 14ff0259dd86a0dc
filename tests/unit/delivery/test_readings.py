"""A retry record read twice (rebalance, restart) is carried out by one reading only (ADR 0005)."""

from __future__ import annotations

import asyncio

from smsflow.delivery.readings import RetryReadings


async def test_a_new_reading_supersedes_one_still_waiting_until_due() -> None:
    readings = RetryReadings()
    attempted: list[str] = []

    async def reading(name: str, due_in: float) -> None:
        try:
            await readings.arrive((0, 7))
            await asyncio.sleep(due_in)
            readings.start_attempt((0, 7))
            attempted.append(name)
        finally:
            readings.leave((0, 7))

    first = asyncio.create_task(reading("first", 10.0))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(reading("second", 0.01))
    await asyncio.wait_for(second, 5)
    await asyncio.gather(first, return_exceptions=True)
    assert first.cancelled() and attempted == ["second"]
    assert len(readings) == 0


async def test_a_new_reading_waits_for_one_attempting_and_is_not_cancelling_it() -> None:
    readings = RetryReadings()
    order: list[str] = []
    release = asyncio.Event()

    async def attempting() -> None:
        try:
            await readings.arrive((1, 3))
            readings.start_attempt((1, 3))
            order.append("attempt started")
            await release.wait()
            order.append("attempt done")
        finally:
            readings.leave((1, 3))

    async def later_reading() -> None:
        try:
            await readings.arrive((1, 3))
            order.append("later reading goes on")  # where the real stage checks the ledger: done, ack
        finally:
            readings.leave((1, 3))

    first = asyncio.create_task(attempting())
    await asyncio.sleep(0.01)
    second = asyncio.create_task(later_reading())
    await asyncio.sleep(0.05)
    assert order == ["attempt started"]
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert order == ["attempt started", "attempt done", "later reading goes on"]


async def test_different_records_do_not_interfere_and_shutdown_cancels_the_waiting() -> None:
    readings = RetryReadings()

    async def waiter(position: tuple[int, int]) -> None:
        try:
            await readings.arrive(position)
            await asyncio.sleep(10)
        finally:
            readings.leave(position)

    tasks = [asyncio.create_task(waiter((0, i))) for i in range(3)]
    await asyncio.sleep(0.01)
    assert len(readings) == 3 and not any(t.done() for t in tasks)
    readings.cancel_waiting()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert all(t.cancelled() for t in tasks) and len(readings) == 0
