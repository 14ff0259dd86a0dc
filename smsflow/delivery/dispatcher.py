"""Batched delivery's dispatcher: messages of batched subscriptions wait in their subscription's open batch,
and each batch is attempted once, when full or due; every submitter learns the batch's outcome.

No Kafka here: the delivery stage (``streams/deliver.py``) gives it a ``BatchSender`` that attempts a batch
and makes its outcome durable, and acks each inbound event only when its ``submit`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.context import Context

from smsflow.delivery.batching import BatchAssembler
from smsflow.subscriptions.model import Subscription, utcnow
from smsflow.subscriptions.store import SubscriptionStore
from smsflow.telemetry import links_from

log = logging.getLogger(__name__)


class BatchSender(Protocol):
    """What the dispatcher needs of the delivery side (``streams.deliver.KafkaDelivery``)."""

    store: SubscriptionStore

    async def attempt(
        self,
        sub: Subscription,
        messages: list[dict[str, Any]],
        attempt: int,
        first_at: dt.datetime,
        parent: Context | None,
        links: Sequence[trace.Link] = (),
    ) -> None: ...

    async def dead_letter_unsent(
        self, subscription_id: str, messages: list[dict[str, Any]], attempt: int, reason: str
    ) -> None: ...


@dataclass
class _Waiting:
    future: asyncio.Future[None]
    first_at: dt.datetime
    parent: Context | None


class BatchDispatcher:
    """Collects messages of batched subscriptions and sends each batch when it is full or due.

    ``submit`` returns when the batch holding the message has a durable outcome (or raises if it could not be
    made durable), so the caller acks the inbound event only then.
    """

    def __init__(
        self, delivery_of: Callable[[], BatchSender], assembler: BatchAssembler | None = None
    ) -> None:
        self._delivery_of = delivery_of  # resolved late: the worker sets up delivery after the topology
        self.assembler = assembler or BatchAssembler()
        self._waiting: defaultdict[str, defaultdict[str, list[_Waiting]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(
        self, sub: Subscription, payload: dict[str, Any], first_at: dt.datetime, parent: Context | None
    ) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[sub.id][str(payload["message_id"])].append(_Waiting(fut, first_at, parent))
        full = self.assembler.add(sub, payload)
        if full is not None:
            self._spawn(sub.id, full)
        else:
            self._wake.set()  # a new deadline may be the nearest
        await fut

    def _spawn(self, subscription_id: str, messages: list[dict[str, Any]]) -> None:
        t = asyncio.ensure_future(self._flush(subscription_id, messages))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _flush(self, subscription_id: str, messages: list[dict[str, Any]]) -> None:
        waiting = self._waiting[subscription_id]
        waiters = [w for m in messages for w in waiting.pop(str(m["message_id"]), [])]
        if not waiting:
            self._waiting.pop(subscription_id, None)
        error: BaseException | None = None
        try:
            kd = self._delivery_of()
            sub = await kd.store.get(subscription_id)
            if sub is None:
                await kd.dead_letter_unsent(subscription_id, messages, 1, "subscription deleted")
            else:
                first_at = min((w.first_at for w in waiters), default=utcnow())
                parents = [w.parent for w in waiters if w.parent is not None]
                parent = parents[0] if parents else None
                await kd.attempt(sub, messages, 1, first_at, parent, links_from(parents[1:]))
        except Exception as exc:
            log.exception("batch for %s (%d messages) not completed", subscription_id, len(messages))
            error = exc
        for w in waiters:
            if w.future.done():
                continue
            if error is None:
                w.future.set_result(None)
            else:
                w.future.set_exception(error)

    async def run(self) -> None:
        """Timer: sends batches whose first message has waited long enough."""
        while True:
            deadline = self.assembler.next_deadline()
            self._wake.clear()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            for sid, messages in self.assembler.due():
                self._spawn(sid, messages)
            await asyncio.sleep(0)  # let submitters run between sweeps

    async def drain(self, timeout: float) -> None:
        """Send every open batch now and wait for them (shutdown)."""
        for sid, messages in self.assembler.drain():
            self._spawn(sid, messages)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
