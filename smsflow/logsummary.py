"""Log lines that a flood of one kind of event would repeat, summed up: one line per kind per interval.

A stage that logs each record it skips logs a line per record when something reads a topic again from its
start (a consumer group reset, a table rebuilt from a changelog): millions of lines, and the logging's cost
on the hot path. A peer can cause the same on purpose: a carrier that sends malformed PDUs, a writer of
``sms.raw.v1`` whose records do not decode, a webhook endpoint that fails in an unexpected way, a broker
outage during which every PDU is answered with a temporary error. ``SummarizedLog`` logs the first event of
a kind as it is (with its traceback when asked), counts the further ones for ``interval_s``, and then says
how many there were: on the next event of the kind, on the next event of any kind once a kind's interval has
passed, or on ``flush``, which a stage calls on its timer. The record itself is kept elsewhere (quarantine,
the delivery history) and a Prometheus counter beside it keeps the exact totals.

A kind must come from a closed set (a carrier or session name from the config, a status code, an exception
class), never from what a peer sent: kinds are remembered until their interval passes. Beyond
``max_kinds`` live kinds, further kinds share one ("other events"), so a mistake there cannot grow memory
without bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

OTHER_KIND = "other events"


@dataclass
class _Kind:
    since: float  # when the kind's latest line was logged
    level: int
    suppressed: int = 0


class SummarizedLog:
    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_kinds: int = 1000,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self.max_kinds = max_kinds
        self._kinds: dict[str, _Kind] = {}
        self._next_sweep = 0.0  # when the oldest live kind's interval passes (``log`` sweeps then)
        self._lock = threading.Lock()  # librdkafka's callbacks and the event loop may both log

    def log(self, kind: str, level: int, msg: str, *args: object, exc_info: bool = False) -> bool:
        """Log ``msg % args`` unless a line of this kind was logged less than ``interval_s`` ago (then it is
        counted). ``exc_info``: with the exception being handled, as ``Logger.exception`` does. Returns
        whether it was logged."""
        now = self._clock()
        with self._lock:
            if now >= self._next_sweep:
                self._sweep(now, keep=kind)
            k = self._kinds.get(kind)
            if k is None and len(self._kinds) >= self.max_kinds:
                kind = OTHER_KIND
                k = self._kinds.get(kind)
            if k is not None and now - k.since < self.interval_s:
                k.suppressed += 1
                return False
            if k is not None:
                self._summary(kind, k, now)
            self._kinds[kind] = _Kind(now, level)
            self._next_sweep = min(self._next_sweep, now + self.interval_s)
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def flush(self) -> None:
        """Say how many events of each kind went unlogged, for the kinds whose interval has passed."""
        with self._lock:
            self._sweep(self._clock())

    def _sweep(self, now: float, keep: str | None = None) -> None:
        oldest = now + self.interval_s
        for kind, k in list(self._kinds.items()):
            if now - k.since >= self.interval_s:
                self._summary(kind, k, now)
                if kind != keep:
                    del self._kinds[kind]
            else:
                oldest = min(oldest, k.since + self.interval_s)
        self._next_sweep = oldest

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
