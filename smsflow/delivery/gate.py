"""Per-endpoint admission: a concurrency limit that AIMD can shrink, and a token-bucket rate limit.

Each endpoint has its own gate, so requests queued behind a slow endpoint wait only for that endpoint's slots.
A caller that cannot get a slot within its deadline gets ``False`` and reports the message as DEFERRED.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

from smsflow.delivery.policy import AimdLimit


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self.burst
        self._at = clock()

    def set_rate(self, rate: float) -> None:
        self._refill()
        self.rate = rate
        self.burst = max(1.0, rate)
        self._tokens = min(self._tokens, self.burst)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def try_take(self) -> float:
        """Take a token and return 0, or return how many seconds until one is available."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


class EndpointGate:
    def __init__(
        self,
        max_in_flight: int,
        rate_per_s: float | None = None,
        *,
        aimd: AimdLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.aimd = aimd or AimdLimit(max_in_flight, clock=clock)
        self._clock = clock
        self._rate = rate_per_s
        self._bucket = TokenBucket(rate_per_s, clock=clock) if rate_per_s else None
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def capacity(self) -> int:
        return max(1, math.floor(self.aimd.limit))

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def configure(self, max_in_flight: int, rate_per_s: float | None) -> None:
        """Follow a subscription update without losing the AIMD state."""
        if max_in_flight != self.aimd.maximum:
            self.aimd.set_maximum(max_in_flight)
        if rate_per_s != self._rate:
            self._rate = rate_per_s
            self._bucket = TokenBucket(rate_per_s, clock=self._clock) if rate_per_s else None
        self._wake()

    async def acquire(self, timeout: float | None) -> bool:
        """Take a slot (and a token); False if that did not happen within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if self.in_flight < self.capacity and not self._waiters:
            self.in_flight += 1
        else:
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            try:
                async with asyncio.timeout_at(deadline):
                    await fut
            except BaseException as exc:
                if fut.done() and not fut.cancelled():
                    self.release()  # the slot was handed over just as we gave up
                else:
                    fut.cancel()
                    if fut in self._waiters:
                        self._waiters.remove(fut)
                if isinstance(exc, TimeoutError):
                    return False
                raise
        if self._bucket is not None and self._rate:
            self._bucket.set_rate(self._rate * self.aimd.fraction)
            try:
                while (wait := self._bucket.try_take()) > 0:
                    if deadline is not None and loop.time() + wait > deadline:
                        self.release()
                        return False
                    await asyncio.sleep(wait)
            except BaseException:
                self.release()
                raise
        return True

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.capacity:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1  # handed to the waiter
                fut.set_result(None)
