"""A rate limit as evenly spaced slots: deliver_sm read per session, submit_sm written per carrier."""

from __future__ import annotations

import asyncio
import time


class Pacer:
    """At most `rate` passes per second, spaced 1/rate apart; None lets everything through at once."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._next_slot = 0.0

    async def wait(self) -> None:
        if self.rate is None:
            return
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + 1.0 / self.rate
        if slot > now:
            await asyncio.sleep(slot - now)
