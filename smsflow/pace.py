"""Whether a stage is busy enough to gather records into bigger batches (smsflow/ingest/loop.py's batches,
smsflow/producer.py's produce calls): counted arrivals per second, with a quiet path that never waits.

Gathering trades a few milliseconds of latency for fewer Kafka requests and fewer wake-ups per record, which
is worth it only while records arrive fast enough to share them: below ``above_per_s`` nothing waits.
"""

from __future__ import annotations

from collections.abc import Callable

PACE_PERIOD_S = 0.5  # the arrival rate that decides gathering is counted over periods this long
PACE_IDLE_S = 0.1  # nothing for this long: not busy, whatever the last period's rate was


class Pace:
    """Records per second, counted over the last whole ``PACE_PERIOD_S``. Below ``above_per_s`` the gather
    window is 0 (a lone SMS never waits for company); above it, ``window_s``. A burst after a quiet spell is
    seen within a tenth of a second; a record after a pause of ``PACE_IDLE_S`` never waits, whatever came
    before the pause."""

    __slots__ = ("_count", "_last", "_start", "above_per_s", "clock", "rate", "window")

    def __init__(self, window_s: float, above_per_s: float, clock: Callable[[], float]) -> None:
        self.window = window_s
        self.above_per_s = above_per_s
        self.clock = clock
        self._start = self._last = clock()
        self._count = 0
        self.rate = 0.0  # records per second in the last whole period

    def _roll(self, now: float) -> float:
        """End the period if it is over (a period with no record in it ends at the next look: its rate is
        what was counted over all of it); the seconds of the period in progress."""
        elapsed = now - self._start
        if elapsed >= PACE_PERIOD_S:
            self.rate = self._count / elapsed
            self._start, self._count = now, 0
            return 0.0
        return elapsed

    def count(self, n: int) -> None:
        self._last = now = self.clock()
        self._roll(now)
        self._count += n

    def window_s(self) -> float:
        if self.window <= 0:
            return 0.0
        now = self.clock()
        if now - self._last > PACE_IDLE_S:  # a pause: the first record after it never waits
            return 0.0
        # the period in progress counts too: a burst is seen before its first period ends
        elapsed = self._roll(now)
        current = self._count / elapsed if elapsed >= 0.05 else 0.0
        return self.window if max(self.rate, current) >= self.above_per_s else 0.0
