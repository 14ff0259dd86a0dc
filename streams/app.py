"""The Faust application: one app, each stage an agent, state in tables with changelogs.

Processing guarantee is at-least-once (Faust's exactly_once is unreliable: faust-streaming #517, #323, #440,
#177). Every effect is idempotent instead: message ids are derived from Kafka positions, so reprocessing
after a crash re-emits the same message under the same id, and receivers drop the copy by webhook-id.
Concurrency lives inside single actors with explicit acks (never ``agent(concurrency>1)``, #606).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import faust
from faust.tables import TableManager
from faust.transport.producer import ProducerBuffer
from faust.types import ProducerT
from faust.types.tuples import FutureMessage

from smsflow.config import Config
from smsflow.serde import Serde, registry_client
from streams import handoff, offsets
from streams.context import StreamContext
from streams.topology import Topology, build_topology


class DrainingProducerBuffer(ProducerBuffer):
    """Faust's buffer of table changelog writes, with a ``flush`` that really drains it.

    Faust flushes the producer before it commits offsets, but 0.15.3's ``ProducerBuffer.flush`` gives up after
    100 ms without progress, and counts a write as sent once it left the queue, before it reached the Kafka
    client. On a loaded machine a commit could then pass records whose table writes were still in the buffer:
    after a kill -9 the tables ran *behind* the committed input, and a replay no longer knew what those
    records had done (an SMS later delivered under a second id, or a part lost). This flush returns only when
    every buffered write was handed to the client; the producer's flush then waits for the broker's acks.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self._in_flight = 0

    async def _send_pending(self, fut: FutureMessage) -> None:
        self._in_flight += 1
        try:
            await super()._send_pending(fut)
        finally:
            self._in_flight -= 1

    async def flush(self) -> None:
        while self.size or self._in_flight:
            if self.state != "running":
                raise RuntimeError("Cannot flush: producer buffer not running")
            self.message_sent.clear()
            await self.message_sent.wait()


class PromptTableManager(TableManager):
    """Faust's table manager, without the fixed second it sleeps at start.

    Faust 0.15.3 sleeps 1 s before it finalizes the tables, so that tables declared late can still register.
    Ours are all declared when the topology is built, before the app starts; the sleep only delayed every
    restart, and after a crash every message waits for the restart (docs/consistency.md)."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class SmsflowApp(faust.App):
    """The Faust app, with a producer whose pre-commit flush makes table writes durable before offsets, and
    tasks that run while it starts (``loading_tasks``), not only once its tables are recovered."""

    loading_tasks: Sequence[Callable[[], Awaitable[None]]] = ()
    _loading_started = False
    _extra_flushes: tuple[Callable[[], Awaitable[None]], ...] = ()

    def flush_with_producer(self, flush: Callable[[], Awaitable[None]]) -> None:
        """Run ``flush`` (a producer of the worker's own: streams/deliver.py's outputs) after each flush of
        Faust's producer, so that every flush before an offset commit covers its records too (Invariant A,
        docs/consistency.md); a flush that raises stops that commit."""
        self._extra_flushes = (*self._extra_flushes, flush)

    async def on_start(self) -> None:
        await super().on_start()
        if not self._loading_started:
            self._loading_started = True
            for task in self.loading_tasks:
                self.add_future(task())

    def _new_producer(self) -> ProducerT:
        producer = super()._new_producer()
        buffer = DrainingProducerBuffer(loop=producer.loop, beacon=producer.beacon)
        buffer.app = self
        producer.buffer = buffer  # type: ignore[attr-defined]
        faust_flush = producer.flush

        async def flush() -> None:
            await faust_flush()
            for extra in self._extra_flushes:
                await extra()

        producer.flush = flush  # type: ignore[method-assign]
        return producer


def build_app(
    config: Config,
    bootstrap: str,
    registry_url: str,
    roles: set[str] | None = None,
    data_dir: str | None = None,
    partitions: int | None = None,
) -> tuple[faust.App, StreamContext, Topology]:
    """``partitions``: of sms.raw.v1 on the cluster; ingest tables and punctuation are co-partitioned with
    it. The topology itself is in streams/topology.py."""
    # Every stage relies on Faust committing only the contiguous acked prefix (streams/offsets.py).
    offsets.install()
    handoff.install()
    partitions = partitions or config.kafka.partitions
    datadir = Path(data_dir or config.data_dir) / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    worker = config.worker
    app = SmsflowApp(
        config.app_id,
        broker=[f"kafka://{b.strip()}" for b in bootstrap.split(",")],
        store="rocksdb://" if worker.store == "rocksdb" else "memory://",
        datadir=str(datadir),
        topic_replication_factor=config.kafka.replication_factor,
        topic_partitions=partitions,
        producer_acks=-1,
        producer_linger_ms=worker.producer_linger_ms,
        broker_commit_every=500,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        web_enabled=False,
        TableManager=PromptTableManager,
        table_standby_replicas=worker.standby_replicas,
        # Recovery time after a crash (docs/consistency.md): a restarted worker with the same instance id
        # takes its partitions back at once (static membership); a dead one is noticed after the session
        # timeout.
        consumer_group_instance_id=worker.effective_instance_id(),
        broker_session_timeout=worker.session_timeout_s,
        broker_heartbeat_interval=worker.heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
    )
    serde = Serde(registry_client(registry_url, config.registry_credentials()))
    ctx = StreamContext(
        config, bootstrap, serde, partitions, roles or {"ingest", "deliver", "routes", "outbound"}
    )
    topology = build_topology(app, ctx)
    app.loading_tasks = ctx.loading_tasks
    return app, ctx, topology
