"""Read compacted topics whole, then follow them: the way every process keeps a table of small shared state
(subscriptions, holdings, the webhook attempts ledger, endpoint circuits) in memory.

One consumer thread per :class:`CompactedFollower`, with a random group id (it never commits: a table read
from the start, not a queue). ``start`` returns once every partition has been read to its end (librdkafka's
end-of-partition event), so nothing is decided on a half-read table; after that, records are applied as they
come, within a poll interval. ``on_record`` runs in the thread; keep it to dictionary updates (CPython makes
those atomic).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

log = logging.getLogger(__name__)


class CompactedFollower:
    def __init__(
        self, bootstrap: str, topics: Sequence[str], on_record: Callable[[Message], None], name: str
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = tuple(topics)
        self.on_record = on_record
        self.name = name
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loaded = threading.Event()
        self._error: BaseException | None = None
        self._parts: list[TopicPartition] = []
        # the next offset to apply per partition, written by the thread (one dict store: atomic)
        self._positions: dict[tuple[str, int], int] = {}
        self._admin: AdminClient | None = None

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set() and self._error is None

    async def start(self, timeout: float = 30.0) -> None:
        self._thread = threading.Thread(target=self._follow, name=f"{self.name}-follow", daemon=True)
        self._thread.start()
        ok = await asyncio.to_thread(self._loaded.wait, timeout)
        if self._error is not None:
            raise self._error
        if not ok:
            raise TimeoutError(f"{', '.join(self.topics)}: not loaded within {timeout:g}s")

    async def current(self, timeout: float = 10.0) -> None:
        """Return once every record stored in the followed topics before this call has been applied (their
        end offsets now, asked of the broker in one ListOffsets request). For a decision that must see what
        another process wrote just before: the submit path taking over a partition from another connector."""
        marks = await asyncio.to_thread(self._end_offsets, timeout)
        deadline = asyncio.get_running_loop().time() + timeout
        while any(self._positions.get(tp, 0) < end for tp, end in marks.items()):
            if self._error is not None:
                raise self._error
            if asyncio.get_running_loop().time() > deadline:
                behind = {f"{t}[{p}]": e for (t, p), e in marks.items() if self._positions.get((t, p), 0) < e}
                raise TimeoutError(f"{self.name}: not caught up within {timeout:g}s (ends {behind})")
            await asyncio.sleep(0.005)

    def _end_offsets(self, timeout: float) -> dict[tuple[str, int], int]:
        asked = {TopicPartition(tp.topic, tp.partition): OffsetSpec.latest() for tp in self._parts}
        if not asked:
            return {}
        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = self._admin.list_offsets(asked, request_timeout=timeout)
        return {(tp.topic, tp.partition): f.result(timeout).offset for tp, f in futures.items()}

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)

    def _follow(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"smsflow-{self.name}-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
            }
        )
        try:
            parts: list[TopicPartition] = []
            for topic in self.topics:
                tmeta = consumer.list_topics(topic, timeout=10).topics.get(topic)
                if tmeta is None or tmeta.error is not None:
                    raise RuntimeError(f"{topic}: topic not found (apply infra/topics.yaml)")
                parts += [TopicPartition(topic, p, 0) for p in tmeta.partitions]
            self._parts = parts
            consumer.assign(parts)
            # Loaded once every partition reported its end (librdkafka reports it for an empty one too). No
            # watermark queries first: they took ~0.4 s per partition on a loaded machine, one after the
            # other, and a restarted worker delivers nothing until this is read (docs/consistency.md).
            remaining = {(tp.topic, tp.partition) for tp in parts}
            if not remaining:
                self._loaded.set()
            while not self._stop.is_set():
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self._positions[(msg.topic() or "", msg.partition() or 0)] = msg.offset() or 0
                        remaining.discard((msg.topic(), msg.partition()))
                        if not remaining:
                            self._loaded.set()
                    continue
                try:
                    self.on_record(msg)
                except Exception as exc:  # one unreadable record must not stop the table
                    log.error("%s@%s: unreadable record skipped: %s", msg.topic(), msg.offset(), exc)
                self._positions[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
        except BaseException as exc:
            self._error = exc
            self._loaded.set()
        finally:
            consumer.close()
