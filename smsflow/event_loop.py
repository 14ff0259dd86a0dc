"""Which asyncio event loop the long-running processes (worker, connector) run on.

uvloop (libuv) runs the same asyncio programs with cheaper callbacks, futures and socket readiness than the
standard selector loop; the worker spends a quarter of its CPU in the loop's own frames (docs/BENCHMARKS.md).
``event_loop: asyncio`` in the config keeps the standard loop (for debugging, or where uvloop is missing).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")
EventLoopChoice = Literal["uvloop", "asyncio"]


def install(choice: EventLoopChoice) -> None:
    """Make every loop created from now on in this process of the chosen kind (Faust creates its own)."""
    if choice == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())


def run(main: Coroutine[Any, Any, T], choice: EventLoopChoice) -> T:
    install(choice)
    return asyncio.run(main)


class LoopLoad:
    """Is this event loop the bottleneck? Sampled on the loop itself every ``interval_s``: the share of the
    wall time its thread spent on a CPU, and how late the sample ran (a loaded machine shows as lateness
    even when the thread gets little CPU).

    A reader that could take more work asks :meth:`saturated` before it does: while the loop is saturated,
    more records in memory only wait longer (and a message waiting past its endpoint-slot timeout is deferred
    to the retry topic, which is more work); they are better left in Kafka. A loop that is idle while
    records wait (a slow or hanging endpoint) is not saturated, so slow endpoints never throttle the rest.
    """

    def __init__(
        self,
        interval_s: float = 0.1,
        window: int = 5,
        busy_share: float = 0.85,
        late_s: float = 0.05,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self.interval_s = interval_s
        self.busy_share = busy_share
        self.late_s = late_s
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._samples: deque[tuple[float, float]] = deque(maxlen=window)  # (busy share, lateness s)

    def sample(self, wall_s: float, cpu_s: float) -> None:
        """One interval's figures: ``wall_s`` elapsed on the clock, ``cpu_s`` on the loop thread."""
        if wall_s > 0:
            self._samples.append((min(1.0, cpu_s / wall_s), max(0.0, wall_s - self.interval_s)))

    def saturated(self) -> bool:
        """The mean busy share of the window is at least ``busy_share``, or its latest sample ran at least
        ``late_s`` late."""
        if not self._samples:
            return False
        busy = sum(b for b, _ in self._samples) / len(self._samples)
        return busy >= self.busy_share or self._samples[-1][1] >= self.late_s

    async def run(self) -> None:
        """Sample until cancelled (a task on the loop it measures)."""
        while True:
            t0, c0 = self._clock(), self._cpu_clock()
            await asyncio.sleep(self.interval_s)
            self.sample(self._clock() - t0, self._cpu_clock() - c0)
