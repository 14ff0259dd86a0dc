"""Which asyncio event loop the long-running processes (worker, connector) run on.

uvloop (libuv) runs the same asyncio programs with cheaper callbacks, futures and socket readiness than the
standard selector loop; the worker spends a quarter of its CPU in the loop's own frames (docs/BENCHMARKS.md).
``event_loop: asyncio`` in the config keeps the standard loop (for debugging, or where uvloop is missing).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from prometheus_client import Counter, Histogram

T = TypeVar("T")

# What an event loop that samples itself (``LoopLoad``) saw: how late each sample ran (a loop that stalls, or
# waits for a core, runs its timers late) and how long its thread waited in the run queue, i.e. for a core
# rather than for work. Together they tell a loop that blocks from one that a full machine holds back.
LOOP_LATENESS = Histogram(
    "smsflow_event_loop_lateness_seconds",
    "How late the event loop ran its load sample (due every 0.1 s), by loop",
    ["loop"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
LOOP_RUNQUEUE_WAIT = Counter(
    "smsflow_event_loop_runqueue_wait_seconds",
    "Time the event loop's thread was runnable but waited for a CPU, by loop",
    ["loop"],
)
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


def _schedstat() -> tuple[float, float] | None:
    """The calling thread's seconds on a CPU and seconds waiting in a run queue for one (Linux
    ``/proc/thread-self/schedstat``), or None where that is not available."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            on_cpu, waiting = f.read().split()[:2]
        return int(on_cpu) / 1e9, int(waiting) / 1e9
    except (OSError, ValueError):
        return None


def thread_wait_s() -> float:
    """Seconds the calling thread has waited in a run queue for a CPU; 0.0 where that is not available."""
    stat = _schedstat()
    return 0.0 if stat is None else stat[1]


def thread_demand_s() -> float:
    """Seconds the calling thread has run on a CPU plus waited in a run queue for one; its CPU time alone
    where that is not available. The wait counts: on a machine shared with other processes a loop that
    always has work is held back by the scheduler, not idle, and its CPU time alone would make it look half
    idle."""
    stat = _schedstat()
    return time.thread_time() if stat is None else stat[0] + stat[1]


class LoopLoad:
    """How much work may wait in memory on this event loop: ``limit``, a bound that halves (down to
    ``floor``) on every sample in which the loop was saturated and grows by ``step`` (up to ``ceiling``) on
    every sample in which it was not and the bound was reached: additive increase, multiplicative decrease,
    as TCP does with loss. A bound not reached in a sample shrinks to what was used plus ``step`` (as TCP
    validates an unused window, RFC 7661): an idle loop must not keep a high bound that the next burst would
    fill at once, before the first busy sample halves it.

    Sampled on the loop itself every ``interval_s``: the share of the wall time its thread wanted a CPU
    (ran, or waited in the run queue for one; ``thread_demand_s``) and how late the sample ran. Saturated:
    a share of at least ``busy_share`` or a sample at least ``late_s`` late.

    A reader asks for ``limit`` before it takes more work: while the loop is saturated, more records in
    memory only wait longer (and a message waiting past its endpoint-slot timeout is deferred to the retry
    topic, which is more work); they are better left in Kafka. A loop that is idle while records wait (a
    slow or hanging endpoint) is not saturated: the bound climbs to ``ceiling`` within a second or two, so
    slow endpoints never throttle the rest. It starts at ``floor`` and grows by at most ``step`` per sample,
    so a burst cannot fill memory in the instant before the first sample shows the loop busy.
    """

    def __init__(
        self,
        floor: int = 512,
        ceiling: int = 4096,
        step: int = 256,
        interval_s: float = 0.1,
        busy_share: float = 0.85,
        late_s: float = 0.05,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = thread_demand_s,
        wait_clock: Callable[[], float] = thread_wait_s,
        name: str = "worker",
    ) -> None:
        self.floor, self.ceiling, self.step = floor, ceiling, step
        self.limit = floor
        self.interval_s = interval_s
        self.busy_share = busy_share
        self.late_s = late_s
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._wait_clock = wait_clock
        self._lateness = LOOP_LATENESS.labels(name)
        self._runqueue_wait = LOOP_RUNQUEUE_WAIT.labels(name)
        self.last: tuple[float, float] | None = None  # (busy share, lateness s) of the latest sample
        self.saturated_samples = 0
        self.used = 0  # the most work in memory since the latest sample (``observe``)

    def observe(self, in_memory: int) -> None:
        """The reader's work in memory, each time it takes some."""
        if in_memory > self.used:
            self.used = in_memory

    def sample(self, wall_s: float, cpu_s: float) -> None:
        """One interval's figures: ``wall_s`` elapsed on the clock, ``cpu_s`` of the loop thread's demand."""
        if wall_s <= 0:
            return
        self.last = (min(1.0, cpu_s / wall_s), max(0.0, wall_s - self.interval_s))
        self._lateness.observe(self.last[1])
        if self.saturated():
            self.saturated_samples += 1
            self.limit = max(self.floor, self.limit // 2)
        elif self.used >= self.limit:
            self.limit = min(self.ceiling, self.limit + self.step)
        else:
            self.limit = max(self.floor, min(self.limit, self.used + self.step))
        self.used = 0

    def saturated(self) -> bool:
        """Whether the latest sample found the loop saturated."""
        if self.last is None:
            return False
        busy, late = self.last
        return busy >= self.busy_share or late >= self.late_s

    async def run(self) -> None:
        """Sample until cancelled (a task on the loop it measures)."""
        while True:
            t0, c0, w0 = self._clock(), self._cpu_clock(), self._wait_clock()
            await asyncio.sleep(self.interval_s)
            self._runqueue_wait.inc(max(0.0, self._wait_clock() - w0))
            self.sample(self._clock() - t0, self._cpu_clock() - c0)
