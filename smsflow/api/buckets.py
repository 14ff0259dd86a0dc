"""Token buckets per owner: what one tenant may do per unit of time through the API, so that one tenant's
loop or flood costs everyone else nothing (subscription changes, messages sent).

Per API process: N API processes behind a balancer allow N times the rate (docs/outbound.md says so).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping


class OwnerBuckets:
    """A bucket of ``capacity`` tokens per owner, refilled at ``per_s`` (a burst of ``capacity``, then one
    every ``1 / per_s`` s); ``limits`` gives some owners their own (capacity, per_s)."""

    PRUNE_AT = 10_000  # owners remembered before the full buckets are dropped

    def __init__(
        self,
        capacity: float,
        per_s: float,
        clock: Callable[[], float] | None = None,
        limits: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        if capacity < 1 or per_s <= 0:
            raise ValueError("a bucket needs a capacity of at least 1 and a positive rate")
        self.capacity = float(capacity)
        self.per_s = per_s
        self.limits = dict(limits or {})
        self.clock = clock or (lambda: time.monotonic())
        self._buckets: dict[str, tuple[float, float]] = {}  # owner -> (tokens, when counted)

    def limit_of(self, owner: str) -> tuple[float, float]:
        """(capacity, per_s) for ``owner``."""
        return self.limits.get(owner, (self.capacity, self.per_s))

    def take(self, owner: str, cost: float = 1.0) -> float:
        """0 when ``owner`` may spend ``cost`` now (it is counted), else the seconds until it may (nothing is
        taken then). A cost above the owner's capacity is never allowed: ``inf``."""
        capacity, per_s = self.limit_of(owner)
        if cost > capacity:
            return float("inf")
        now = self.clock()
        tokens, at = self._buckets.get(owner, (capacity, now))
        tokens = min(capacity, tokens + (now - at) * per_s)
        if tokens >= cost:
            if len(self._buckets) >= self.PRUNE_AT and owner not in self._buckets:
                self._prune(now)
            self._buckets[owner] = (tokens - cost, now)
            return 0.0
        return (cost - tokens) / per_s

    def give_back(self, owner: str, cost: float = 1.0) -> None:
        """Return what ``take`` counted for something that did not happen after all."""
        if owner in self._buckets:
            tokens, at = self._buckets[owner]
            self._buckets[owner] = (min(self.limit_of(owner)[0], tokens + cost), at)

    def _prune(self, now: float) -> None:
        def full(owner: str, tokens: float, at: float) -> bool:  # the same as no bucket at all
            capacity, per_s = self.limit_of(owner)
            return tokens + (now - at) * per_s >= capacity

        self._buckets = {o: (t, at) for o, (t, at) in self._buckets.items() if not full(o, t, at)}
