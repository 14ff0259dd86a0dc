"""One asyncio lock per key, kept only while someone holds or waits for it: requests (or copies of a
record) with the same key run one after the other, and keys that are mostly new cost no memory once done
(the submit path's copies of one segment; the API's requests with one Idempotency-Key)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class KeyedLocks(Generic[K]):
    def __init__(self) -> None:
        self._locks: dict[K, asyncio.Lock] = {}
        self._users: dict[K, int] = {}

    def __len__(self) -> int:
        """Keys held or waited for now."""
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(
        self, key: K, waiting: Callable[[Awaitable[Any]], Awaitable[Any]] | None = None
    ) -> AsyncIterator[None]:
        """Hold ``key``'s lock for the block. ``waiting`` wraps the wait for it (the submit path's `_at_rest`:
        a wait a revocation may cancel). The lock is dropped when nobody holds or waits for it: a holder that
        comes later must queue behind the same lock, so it stays while anyone waits."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            acquiring = lock.acquire()
            await (waiting(acquiring) if waiting is not None else acquiring)
            try:
                yield
            finally:
                lock.release()
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key]
                del self._locks[key]
