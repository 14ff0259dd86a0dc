"""Which reading of a retry record may carry it out (ADR 0005).

A retry record due in hours holds its partition's committed offset back, so a rebalance or restart hands
the partition back from there and the same record is read again while its earlier reading may still sleep
until due. Each reading is a task; this keeps, per record position, the reading that waits and the one
that attempts, so that a record is attempted by one reading only: a new reading supersedes (cancels) a
waiting one, and waits for an attempting one, after which the attempts ledger says whether anything is left
to do. No Kafka here: the delivery stage calls it around its own ledger checks.
"""

from __future__ import annotations

import asyncio
from typing import Any

Position = tuple[int, int]  # (partition, offset) of a record on the retry topic


def _me() -> asyncio.Task[Any]:
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("a retry record is read inside a task")
    return task


class RetryReadings:
    def __init__(self) -> None:
        self._waiting: dict[Position, asyncio.Task[Any]] = {}
        self._attempting: dict[Position, asyncio.Task[Any]] = {}

    async def arrive(self, position: Position) -> None:
        """The current task read the record at ``position``: an earlier reading still waiting is cancelled
        (this one takes its place); an earlier reading attempting it is waited for."""
        earlier = self._waiting.pop(position, None)
        if earlier is not None:
            earlier.cancel()
        self._waiting[position] = _me()
        busy = self._attempting.get(position)
        if busy is not None:
            await asyncio.wait([busy])

    def start_attempt(self, position: Position) -> None:
        """The current reading is due and attempts now: a later reading no longer supersedes it."""
        me = _me()
        if self._waiting.get(position) is me:
            del self._waiting[position]
        self._attempting[position] = me

    def leave(self, position: Position) -> None:
        """The current reading is done with the record (carried out, acked, or failed)."""
        me = _me()
        if self._waiting.get(position) is me:
            del self._waiting[position]
        if self._attempting.get(position) is me:
            del self._attempting[position]

    def cancel_waiting(self) -> None:
        """At shutdown: readings not due yet stop; the record is read again after the restart."""
        for task in list(self._waiting.values()):
            task.cancel()

    def __len__(self) -> int:
        return len(self._waiting) + len(self._attempting)
