"""Log lines that a flood of one kind of event would repeat, summed up: one line per kind per interval.

A stage that logs each record it skips logs a line per record when something reads a topic again from its
start (a consumer group reset, a table rebuilt from a changelog): millions of lines, and the logging's cost
on the hot path. ``SummarizedLog`` logs the first event of a kind as it is, counts the further ones for
``interval_s``, and then says how many there were (on the next event of the kind or on ``flush``, which a
stage calls on its timer); a Prometheus counter beside it keeps the exact totals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Kind:
    since: float  # when the kind's latest line was logged
    level: int
    suppressed: int = 0


class SummarizedLog:
    def __init__(
        self, logger: logging.Logger, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._kinds: dict[str, _Kind] = {}

    def log(self, kind: str, level: int, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless a line of this kind was logged less than ``interval_s`` ago (then it is
        counted). Returns whether it was logged."""
        now = self._clock()
        k = self._kinds.get(kind)
        if k is not None and now - k.since < self.interval_s:
            k.suppressed += 1
            return False
        if k is not None:
            self._summary(kind, k, now)
        self._kinds[kind] = _Kind(now, level)
        self.logger.log(level, msg, *args)
        return True

    def flush(self) -> None:
        """Say how many events of each kind went unlogged, for the kinds whose interval has passed."""
        now = self._clock()
        for kind, k in list(self._kinds.items()):
            if now - k.since >= self.interval_s:
                self._summary(kind, k, now)
                del self._kinds[kind]

    def _summary(self, kind: str, k: _Kind, now: float) -> None:
        if k.suppressed:
            self.logger.log(
                k.level,
                "%d more %s in the last %.0f s (not logged one by one)",
                k.suppressed,
                kind,
                now - k.since,
            )
            k.suppressed = 0
