"""Assembling batches for subscriptions that take an array per POST.

Pure bookkeeping with an injected clock: the caller adds messages as they arrive, sends what :meth:`add`
returns (a full batch) and, on a timer set to :meth:`next_deadline`, what :meth:`due` returns. A message
belongs to the batch until that batch's attempt has a durable outcome, so the caller acks the inbound
events of a batch only then (at-least-once: a crash re-sends the batch with the same ``webhook-id``
only if it is re-assembled in the same order; receivers dedupe per element on ``message_id``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from smsflow.subscriptions.model import Subscription


@dataclass
class _Open:
    started: float
    max_size: int
    max_wait_s: float
    messages: list[dict[str, Any]] = field(default_factory=list)


class BatchAssembler:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._open: dict[str, _Open] = {}

    def add(self, sub: Subscription, message: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Queue ``message`` for ``sub``; returns a batch to send now when it is full.

        A subscription without batching gets its message straight back as a batch of one."""
        if sub.batch is None:
            return [message]
        batch = self._open.get(sub.id)
        if batch is None:
            batch = self._open[sub.id] = _Open(
                self._clock(), sub.batch.max_batch_size, sub.batch.max_wait_ms / 1000
            )
        batch.messages.append(message)
        if len(batch.messages) >= batch.max_size:
            del self._open[sub.id]
            return batch.messages
        return None

    def next_deadline(self) -> float | None:
        """Clock time at which the oldest open batch is due, if any."""
        return min((b.started + b.max_wait_s for b in self._open.values()), default=None)

    def due(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """Batches whose first message has waited ``max_wait_ms``: (subscription id, messages)."""
        now = self._clock()
        ready = [sid for sid, b in self._open.items() if now >= b.started + b.max_wait_s]
        return [(sid, self._open.pop(sid).messages) for sid in ready]

    def drain(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """Everything still open, e.g. at shutdown or before a partition is revoked."""
        out = [(sid, b.messages) for sid, b in self._open.items()]
        self._open.clear()
        return out

    def forget(self, subscription_id: str) -> list[dict[str, Any]]:
        """Drop a deleted subscription's open batch, returning its messages."""
        batch = self._open.pop(subscription_id, None)
        return batch.messages if batch else []
