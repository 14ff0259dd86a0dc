"""Who may read Kafka for resend and recover, and when: a few scans at a time, shared fairly between tenants.

A scan reads whole partitions of ``sms.inbound.v1`` / ``sms.delivery.v1`` (smsflow/delivery/redelivery.py), so
the API runs only ``slots`` of them at once. Handed out first come, first served, one tenant's burst of
recovers would hold every slot, and every other tenant's resend would wait behind the whole burst. So:

- a tenant (the subscription's owner) runs at most one scan at a time;
- a free slot goes to the tenants waiting in turn (round robin), each tenant's own requests in order;
- a tenant has at most ``pending_per_owner`` requests accepted and not finished (waiting, settling or
  scanning); one more is refused at once (:class:`Busy`, the API's 429) instead of queueing without bound.

So another tenant's request waits at most for the scans already running, never for a queue one tenant filled.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

SCAN_SLOTS = 2  # scans at a time in one API process
PENDING_PER_OWNER = 8  # requests of one owner accepted and not finished


class Busy(Exception):
    """The owner has as many requests in progress as it may; the caller should retry later."""


class ScanSlots:
    def __init__(self, slots: int = SCAN_SLOTS, pending_per_owner: int = PENDING_PER_OWNER) -> None:
        if slots < 1 or pending_per_owner < 1:
            raise ValueError("slots and pending_per_owner must be at least 1")
        self.slots = slots
        self.pending_per_owner = pending_per_owner
        self._free = slots
        self._pending: dict[str, int] = {}  # owner -> requests admitted and not finished
        self._running: set[str] = set()  # owners holding a slot
        # owners with a request waiting for a slot, in the order they get their next turn
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}

    @asynccontextmanager
    async def admit(self, owner: str) -> AsyncIterator[None]:
        """Count one request of ``owner`` in progress for the block; :class:`Busy` if it has too many."""
        count = self._pending.get(owner, 0)
        if count >= self.pending_per_owner:
            raise Busy(f"{count} resend/recover requests of this owner are in progress")
        self._pending[owner] = count + 1
        try:
            yield
        finally:
            left = self._pending[owner] - 1
            if left:
                self._pending[owner] = left
            else:
                del self._pending[owner]

    @asynccontextmanager
    async def hold(self, owner: str) -> AsyncIterator[None]:
        """A scan slot for the block, when it is ``owner``'s turn."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(owner, deque()).append(fut)
        self._hand_out()  # a free slot and nobody ahead: granted at once
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # the slot was handed over as we were cancelled
                self._give_back(owner)
            else:
                self._forget(owner, fut)
            raise
        try:
            yield
        finally:
            self._give_back(owner)

    def _take(self, owner: str) -> None:
        self._free -= 1
        self._running.add(owner)

    def _give_back(self, owner: str) -> None:
        self._running.discard(owner)
        self._free += 1
        self._hand_out()

    def _forget(self, owner: str, fut: asyncio.Future[None]) -> None:
        queue = self._waiting.get(owner)
        if queue is not None and fut in queue:
            queue.remove(fut)
            if not queue:
                del self._waiting[owner]

    def _hand_out(self) -> None:
        """Free slots to waiting owners that run nothing now, in turn; an owner served moves to the back."""
        for owner in list(self._waiting):
            if not self._free:
                return
            if owner in self._running:
                continue
            queue = self._waiting.pop(owner)
            while queue and queue[0].done():  # cancelled while waiting; its task forgets it later
                queue.popleft()
            if not queue:
                continue
            fut = queue.popleft()
            if queue:
                self._waiting[owner] = queue  # its next request waits for its next turn, at the back
            self._take(owner)
            fut.set_result(None)

    def stats(self) -> dict[str, int]:
        return {
            "running": len(self._running),
            "waiting": sum(len(q) for q in self._waiting.values()),
            "pending": sum(self._pending.values()),
        }
