"""Issue 10: the table-changelog buffer must be drained before Faust commits offsets.

Faust 0.15.3's ``ProducerBuffer.flush`` returns after 100 ms without progress and counts a write as sent once
it left its queue, so on a loaded machine a commit could pass table writes not yet handed to Kafka. The
``DrainingProducerBuffer`` returns only when every write was handed over."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any

from faust.transport.producer import ProducerBuffer

from streams.app import DrainingProducerBuffer


async def _flush_with_slow_client(cls: type[ProducerBuffer], monkeypatch: Any) -> tuple[int, int]:
    handed_over: list[int] = []

    async def slow_send(self: Any, fut: Any) -> None:
        await asyncio.sleep(0.3)  # a loaded machine: the client takes a while to accept the write
        handed_over.append(fut)

    monkeypatch.setattr(ProducerBuffer, "_send_pending", slow_send)
    buf = cls()
    buf.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))  # type: ignore[assignment]
    await buf.start()
    try:
        for i in range(3):
            buf.put(i)  # type: ignore[arg-type]
        await buf.flush()
        return len(handed_over), 3
    finally:
        with contextlib.suppress(RuntimeError):  # Faust's own buffer refuses to stop with writes left
            await buf.stop()


async def test_faust_buffer_flush_returns_before_its_writes_were_handed_over(monkeypatch: Any) -> None:
    done, wanted = await _flush_with_slow_client(ProducerBuffer, monkeypatch)
    assert done < wanted  # the behaviour that let commits run ahead of table state


async def test_draining_buffer_flush_returns_only_when_every_write_was_handed_over(monkeypatch: Any) -> None:
    done, wanted = await _flush_with_slow_client(DrainingProducerBuffer, monkeypatch)
    assert done == wanted
