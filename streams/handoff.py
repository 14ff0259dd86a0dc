"""Faust's fetcher hands records to the agents without a detour through the event loop (faust 0.15.3).

Faust's fetch loop (``Consumer._drain_messages``) passes every fetched record to the agents' channels as
``await self.wait_first(callback(message), self.suspend_flow.wait())``: four new tasks (the callback, the
suspend wait, and mode's waits for the consumer stopping or crashing) and an ``asyncio.wait`` per record, so
each record costs at least two turns of the event loop before the next one is handed over, and the next
``getmany`` waits until the whole batch has been handed over. Meanwhile aiokafka fetches nothing for
partitions whose records are still waiting in its buffer. On a worker that is busy (a 255-part SMS is 255
records; a loaded machine) every turn of the loop also runs a record of each busy agent, so a batch of a
hundred records took a second to hand over, and a record the worker had itself just written
(``sms.inbound.v1``, on its way to the delivery agent) waited that long before it was even fetched: the
inbound hop measured 314 ms p99 from broker ack to fetch, 94 ms p99 from fetch to channel, with steady
traffic beside one burst (tests/e2e/test_hostile_input.py, docs/BENCHMARKS.md).

The ``wait_first`` is there so that a rebalance (``suspend_flow``) can abandon a hand-over that blocks. A
hand-over blocks only when flow control is suspended, the producer buffer is over its limit, or a channel's
queue is full. When none holds, this patch awaits the callback directly: it completes without suspending, the
record reaches its channel at once, and nothing is different from Faust's path except the four tasks. When
any holds, Faust's own ``wait_first`` runs unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport.consumer import Consumer

_installed = False
FAUST_WAIT_FIRST = Consumer.wait_first  # mode's Service.wait_first, as Faust uses it
_EVENT_WAIT = asyncio.Event.wait.__code__


def handoff_cannot_block(consumer: Any, message: Any) -> bool:
    """Whether handing ``message`` to its channels completes without waiting (see the module docstring)."""
    if not consumer.flow_active or consumer.suspend_flow.is_set():
        return False
    app = consumer.app
    if not app.flow_control.is_active():
        return False
    buffer = app.producer.buffer
    if buffer.size > buffer.max_messages:
        return False
    channels = app.topics._tp_index.get(message.tp, ())
    return not any(chan.queue.full() for chan in channels)


async def prompt_wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
    """``Service.wait_first`` for the consumer: the fetch loop's per-record hand-over runs inline when it
    cannot block; everything else (and the hand-over when it could block) goes to the original."""
    if len(coros) == 2 and timeout is None and getattr(coros[1], "cr_code", None) is _EVENT_WAIT:
        callback, suspend = coros
        frame = getattr(callback, "cr_frame", None)
        message = frame.f_locals.get("message") if frame is not None else None
        if message is not None and handoff_cannot_block(self, message):
            suspend.close()  # never started: nothing to clean up
            await callback
            return None
    return await FAUST_WAIT_FIRST(self, *coros, timeout=timeout)


def install() -> None:
    """Patch Faust's consumer once per process (idempotent)."""
    global _installed
    if not _installed:
        Consumer.wait_first = prompt_wait_first  # type: ignore[method-assign]
        _installed = True
