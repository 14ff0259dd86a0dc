"""The direct ingest loop (ADR 0007 step 2): sms.raw.v1 -> sms.inbound.v1 | receipts | quarantine on one
confluent-kafka consumer and producer, without Faust.

``smsflow ingest`` runs it as its own process, beside workers started without the ingest stage
(``smsflow worker --stage deliver --stage routes --stage outbound``). It does what the Faust ingest agent
does (streams/ingest.py), with the same ``IngestProcessor``, the same tables (their changelog topics are
Faust's, so either kind of process can read what the other wrote), the same outputs, ids and trace context,
and the same order of durability. Per batch (``consume`` of up to ``batch_max`` records; a wait for more only
while the loop is busy, ``worker.ingest_gather_ms`` at most: ``next_batch``):

1. each record, in log order, through the one guarded boundary: decoded, processed, encoded; anything it does
   wrong quarantines that record with its reason and the loop goes on;
2. its outputs produced (one PRODUCER span each, its context in the record's headers), then the batch's
   changelog writes, in the order they were made (``ChangelogTable.drain_records``);
3. ``flush()``: every output is stored (acks=all, idempotent producer);
4. only then the batch's offsets committed (Invariant A of docs/consistency.md, in its plainest form), without
   waiting for the answer: one commit is in flight at a time, at most one per ``COMMIT_INTERVAL_S``, and the
   offsets of batches flushed meanwhile go together in the next (at a low rate every SMS is a batch: a
   synchronous commit each cost a round trip of the loop and an OffsetCommit of the broker per SMS). A
   commit is only ever sent after the flush of every batch it covers; what it covers counts as committed
   when the broker has said so (ticks and expiry never run ahead of that). A produce that fails ends the
   process without a commit: its restart replays from the committed offsets with tables restored from the
   changelog, a prefix of what was written (Invariant B).

Punctuation (ADR 0003) needs no topic here: between batches, every ``tick_interval_s``, each owned partition
is ticked with the offset this loop has committed (reassembly timeouts, dedup expiry), and its outputs go
through the same produce, flush, apply order.

Rebalances: its own consumer group ``<app_id>-ingest`` (Faust's group speaks Faust's assignor; one group
cannot mix the two), cooperative-sticky, static membership when the worker has an instance id. On assignment
the partitions' tables are restored from the changelog before the first record is read (inside the
callback, so nothing is fetched for them first), and a partition this group has never committed starts where
the Faust worker's group committed it (a switch from the Faust ingest agent re-reads nothing). Revocation
finds no batch in flight (callbacks run inside ``consume``, after the previous batch's commit): the
partition's tables and clocks are dropped. A lost partition likewise.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition
from opentelemetry import context as otel_context
from opentelemetry import trace

from smsflow.config import Config
from smsflow.ingest.origin import RecordOrigin
from smsflow.ingest.processor import IngestProcessor, Outputs, Publish
from smsflow.ingest.spans import (
    KIND_TOPIC,
    assembly,
    encode_tick_outputs,
    ingest_attributes,
    outcome,
    send_attributes,
)
from smsflow.ingest.tables import INGEST_TABLES, ChangelogTable, changelog_topic
from smsflow.logsummary import SummarizedLog
from smsflow.pace import Pace
from smsflow.schemas import RAW_TOPIC
from smsflow.telemetry import (
    context_from_headers,
    current_traceparent,
    headers_from_context,
    tracer,
)

log = logging.getLogger(__name__)
_floods = SummarizedLog(log)  # per-record lines a flood would repeat (smsflow/logsummary.py)
_tracer = tracer("smsflow.ingest.loop")
RESTORE_TIMEOUT_S = 120.0
COMMIT_ANSWER_S = 30.0  # a commit unanswered this long is taken as failed (sent again with the next one)
# at most one commit per this interval: at a low rate every SMS is a batch of its own, and each commit is an
# OffsetCommit (a write to __consumer_offsets) for the broker; what waits is at most this much replay
COMMIT_INTERVAL_S = 0.1
CLOSE_COMMIT_WAIT_S = 5.0
# The loop's producer lingers this long: an output waits for the rest of its batch, whose flush (at the end of
# the batch, or where an output must be stored before a state change) sends everything at once — librdkafka's
# flush overrides the linger. Sent as produced (the worker's 1 ms), the outputs of a batch went out as one
# produce request each and woke the next stage's fetch for each (docs/BENCHMARKS.md, "Issue 13, the ingest
# loop's outputs in one request per batch"). A batch of one, at low rates, is flushed at once as before.
OUTPUTS_LINGER_MS = 100


class IngestLoopFailed(RuntimeError):
    """The platform failed (a produce not stored, the changelog unreadable): nothing more can be processed
    safely; the process exits non-zero and its restart replays from the committed offsets."""


def ingest_group(app_id: str) -> str:
    """The direct loop's consumer group (Faust's group is ``app_id``)."""
    return f"{app_id}-ingest"


@dataclass
class PartitionState:
    """What the loop knows of one owned partition of sms.raw.v1."""

    committed: int | None  # the next offset to read, as committed (None: nothing committed yet)
    position: int | None = None  # the next offset expected (log order), None until the first record
    seen_gap: bool = False


@dataclass
class LoopStats:
    batches: int = 0
    records: int = 0
    out_of_order: int = 0
    produced: int = 0
    changelog_writes: int = 0
    commits: int = 0
    commit_failures: int = 0
    assignments: int = 0
    revocations: int = 0


class DirectIngest:
    """The loop. ``consumer_conf`` / ``producer_conf`` are merged over the defaults (tests, tuning);
    ``serde``: the Avro codec (its registry's schemas warmed up by the caller)."""

    def __init__(
        self,
        cfg: Config,
        bootstrap: str,
        serde: Any,
        settings: Any,
        batch_max: int = 500,
        tick_interval_s: float | None = None,
        consumer_conf: dict[str, Any] | None = None,
        producer_conf: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from confluent_kafka import Producer

        from smsflow.producer import producer_conf as product_producer_conf

        self.cfg = cfg
        self.bootstrap = bootstrap
        self.serde = serde
        self.batch_max = batch_max
        self.tick_interval_s = cfg.pipeline.tick_interval_s if tick_interval_s is None else tick_interval_s
        self.clock = clock
        self.running = True
        self.ready = False
        self.stats = LoopStats()
        self.tables = {name: ChangelogTable() for name in INGEST_TABLES}
        self.changelogs = {name: changelog_topic(cfg.app_id, name) for name in INGEST_TABLES}
        self.processor = IngestProcessor(self.tables["ingest-partials"], self.tables["ingest-seen"], settings)
        self.partitions: dict[int, PartitionState] = {}
        self._delivery_errors: list[str] = []
        self._uncommitted: dict[int, int] = {}  # partition -> handled offset + 1 not committed yet
        self._committing: dict[int, int] | None = None  # the commit in flight (sent, not answered)
        self._commit_sent_at = 0.0
        self._commit_retry_at = 0.0  # after a refused commit, the next one waits until then
        self._refusals = 0  # commits refused in a row
        self._closing = False
        # one idempotent producer (acks=all, lz4, murmur2) for every output; only failures call back (the
        # flush before each commit waits for all of them). Longer than the connector's 5 s: a broker hiccup
        # should delay a batch, not restart the process. Outputs wait for their batch's flush
        # (OUTPUTS_LINGER_MS).
        self.producer = Producer(
            product_producer_conf(
                bootstrap,
                **{
                    "delivery.report.only.error": True,
                    "linger.ms": OUTPUTS_LINGER_MS,
                    "on_delivery": self._on_delivery,
                    "message.timeout.ms": 30000,
                    "request.timeout.ms": 10000,
                    **(producer_conf or {}),
                },
            )
        )
        worker = cfg.worker
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": ingest_group(cfg.app_id),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": int(worker.session_timeout_s * 1000),
            "heartbeat.interval.ms": int(worker.heartbeat_interval_s * 1000),
            "fetch.wait.max.ms": 100,
            "on_commit": self._on_commit,  # answers to the asynchronous commits, served inside consume/poll
        }
        instance = worker.effective_instance_id()
        if instance:
            conf["group.instance.id"] = f"{instance}-ingest"
        conf.update(consumer_conf or {})
        self.consumer = Consumer(conf)
        self._last_tick = self.clock()
        self.pace = Pace(worker.ingest_gather_ms / 1000, worker.ingest_gather_above_per_s, clock)

    # ---- the loop ------------------------------------------------------------------------------------
    def run(self) -> None:
        """Until ``stop()`` (or SIGTERM/SIGINT via ``install_signal_handlers``): consume, process, produce,
        flush, commit; tick between batches. Raises ``IngestLoopFailed`` when the platform fails."""
        self.consumer.subscribe(
            [RAW_TOPIC], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        failed = False
        try:
            while self.running:
                records = self.next_batch()
                if records:
                    self.handle_batch(records)
                elif self._uncommitted:
                    self._commit({})  # what waited for the answer to the commit before, or was refused
                if self.clock() - self._last_tick >= self.tick_interval_s:
                    self._last_tick = self.clock()
                    self.tick_all()
        except BaseException:
            failed = True  # the platform failed: exit at once, the restart replays what is not committed
            raise
        finally:
            self.close(commit=not failed)

    def next_batch(self) -> list[Any]:
        """What the consumer has fetched already, up to ``batch_max`` records; when nothing is there, a wait
        for the first record (until the next tick is due), then what came with it. ``consume(n, timeout)``
        alone would wait for n records or the whole timeout: a lone SMS would wait the timeout out.

        While busy (``Pace``: more than ``worker.ingest_gather_above_per_s`` records per second) the batch is
        held open ``worker.ingest_gather_ms`` for more: its outputs go as one produce request per partition
        either way, so at 1,000 SMS/s a batch of 3 records cost the broker ~0.7 requests per SMS for
        sms.inbound.v1 and the changelogs, and one of ~15 far fewer (docs/BENCHMARKS.md). Below that rate
        nothing waits."""
        records = self.consumer.consume(self.batch_max, timeout=0)
        if not records:
            first = self.consumer.poll(self._wait_s())
            if first is None:
                return []
            if self.batch_max == 1:
                return [first]
            records = [first, *self.consumer.consume(self.batch_max - 1, timeout=0)]
        window = self.pace.window_s()
        if window > 0:
            end = self.clock() + min(window, self._wait_s())
            while len(records) < self.batch_max:
                left = end - self.clock()
                if left <= 0:
                    break
                more = self.consumer.consume(self.batch_max - len(records), timeout=left)
                if not more:  # the window is over (a real consume returns nothing only at its timeout)
                    break
                records.extend(more)
        return records

    def stop(self) -> None:
        self.running = False

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop())

    def close(self, commit: bool = True) -> None:
        """Flush, commit what is not committed yet (``commit``; waiting at most ``CLOSE_COMMIT_WAIT_S`` for
        the answer: a broker that is gone must not keep a failed process from exiting), leave the group."""
        left = self.producer.flush(10)
        if left:
            log.error("ingest loop: %d records not stored at close (their batch was not committed)", left)
        self._closing = True  # the revocation inside consumer.close() commits nothing more (no sync wait)
        if commit:
            # only offsets of flushed batches are ever in _uncommitted: this holds after a failure too
            self._commit_before_close()
        try:
            self.consumer.close()
        except KafkaException as exc:  # closing twice, or the broker gone: nothing left to do
            log.warning("ingest loop: consumer close: %s", exc)

    def _commit_before_close(self) -> None:
        self._commit_retry_at = 0.0  # a refusal's pause does not hold the first try back; it does the next
        deadline = self.clock() + CLOSE_COMMIT_WAIT_S
        while self._uncommitted and self.clock() < deadline:
            if self._committing is None:
                self._commit_sent_at = float("-inf")  # nor does the interval
                self._commit({})
            # serves the answer; a record this returns is neither handled nor committed
            self.consumer.poll(0.05)
        if self._uncommitted:
            log.warning(
                "ingest loop: offsets %s not committed at close; a restart replays them", self._uncommitted
            )

    def _wait_s(self) -> float:
        left = self.tick_interval_s - (self.clock() - self._last_tick)
        return max(0.0, min(0.2, left))

    # ---- one batch -----------------------------------------------------------------------------------
    def handle_batch(self, records: list[Any]) -> None:
        """Process every record in log order, produce the outputs and changelog writes, flush, commit."""
        self.stats.batches += 1
        self.pace.count(len(records))
        done: dict[int, int] = {}  # partition -> next offset, of the records handled in this batch
        for rec in records:
            err = rec.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("ingest loop: consumer error: %s", err)
                    if err.fatal():
                        raise IngestLoopFailed(f"consumer: {err}")
                continue
            partition, offset = rec.partition(), rec.offset()
            state = self.partitions.get(partition)
            if state is None:  # a record of a partition revoked inside this consume: not ours any more
                continue
            if state.position is not None and offset < state.position:
                self.stats.out_of_order += 1  # read again (a seek): handled already in this assignment
                continue
            if state.position is not None and offset > state.position and not state.seen_gap:
                state.seen_gap = True  # retention or compaction moved the log's start: normal, said once
                log.info(
                    "ingest loop: partition %d skips offsets %d..%d", partition, state.position, offset - 1
                )
            state.position = offset + 1
            self.stats.records += 1
            for t in self.tables.values():
                t.partition = partition  # table writes go to this record's changelog partition
            self.handle_record(rec, partition, offset)
            done[partition] = offset + 1
        self._write_changelogs()
        self._flush()
        self._commit(done)

    def handle_record(self, rec: Any, partition: int, offset: int) -> None:
        origin = RecordOrigin(RAW_TOPIC, partition, offset)
        with _tracer.start_as_current_span(
            "ingest",
            context=context_from_headers(rec.headers()),
            kind=trace.SpanKind.CONSUMER,
            attributes=ingest_attributes(RAW_TOPIC, partition, offset),
        ) as span:
            value = rec.value()
            try:
                raw = self.serde.decode(RAW_TOPIC, value)
            except Exception as exc:  # undecodable record: keep it, say why, move on
                _floods.log(
                    "sms.raw.v1 records that do not decode",
                    logging.ERROR,
                    "sms.raw.v1 %d:%d does not decode: %s",
                    partition,
                    offset,
                    exc,
                )
                raw = {"carrier_id": "", "route_id": "", "pdu": value or b"", "received_at": 0}
                self._quarantine(raw, f"record does not decode: {exc}", origin, partition)
                return
            span.set_attribute("smsflow.carrier", str(raw.get("carrier_id", "")))
            span.set_attribute("smsflow.route", str(raw.get("route_id", "")))
            before = replace(self.processor.stats)
            try:
                # a segment is remembered with this span's context: the assembled message hangs under the
                # ingest span of the segment that arrived first and links the others'
                items = self.processor.on_raw(raw, origin, current_traceparent())
                span.set_attribute("smsflow.outputs", len(items))
                span.set_attribute("smsflow.outcome", outcome(before, self.processor.stats, items))
                for item in items:  # encode before producing anything: a value the schema refuses fails here
                    item.encoded = self.serde.encode(KIND_TOPIC[item.kind], item.record)
            except Exception as exc:
                _floods.log(
                    f"sms.raw.v1 records whose processing failed ({type(exc).__name__})",
                    logging.ERROR,
                    "sms.raw.v1 %d:%d: processing failed; quarantined",
                    partition,
                    offset,
                    exc_info=True,
                )
                reason = f"processing failed: {type(exc).__name__}: {exc}"[:1000]
                self._quarantine(raw, reason, origin, partition)
                return
            self._publish_durably(items)

    def _quarantine(self, raw: dict[str, Any], reason: str, origin: Any, partition: int) -> None:
        self._publish([self.processor.quarantine(raw, reason, origin, partition)], None)

    # ---- outputs -------------------------------------------------------------------------------------
    def _publish_durably(self, items: Outputs) -> None:
        """Produce, then apply the state changes that may only follow once those records are stored."""
        self._publish_with_links(items)
        if items.after_durable:
            self._write_changelogs()
            self._flush()
            items.apply_deferred()

    def _publish(self, items: list[Publish], parent: otel_context.Context | None) -> None:
        for item in items:
            topic = KIND_TOPIC[item.kind]
            value = item.encoded if item.encoded is not None else self.serde.encode(topic, item.record)
            # one PRODUCER span per record; its context rides in the record's headers to the next stage
            with _tracer.start_as_current_span(
                f"send {topic}",
                context=parent,
                kind=trace.SpanKind.PRODUCER,
                attributes=send_attributes(topic, item),
            ):
                self._produce(topic, value, item.key.encode(), headers=headers_from_context())

    def _publish_with_links(self, items: list[Publish]) -> None:
        here = current_traceparent()
        for item in items:
            plan = assembly(item, here)
            if plan is None:
                self._publish([item], None)  # a single PDU: the message continues this very span
                continue
            with _tracer.start_as_current_span(
                "assemble", context=plan.first, links=plan.links, attributes=plan.attributes
            ):
                self._publish([item], None)

    def _produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"headers": headers} if headers else {}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self.producer.produce(topic, value, key, **kwargs)
                break
            except BufferError:  # the producer's queue is full: let it send, then try again
                self.producer.poll(0.05)
        self.stats.produced += 1

    def _write_changelogs(self) -> None:
        """The batch's table writes, in the order they were made (None deletes): see ChangelogTable."""
        for name, table in self.tables.items():
            topic = self.changelogs[name]
            for partition, key, value in table.drain_records():
                self._produce(topic, value, key, partition=partition)
                self.stats.changelog_writes += 1

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._delivery_errors.append(f"{msg.topic()}: {err}")

    def _flush(self) -> None:
        left = self.producer.flush(60)
        if left or self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors, []
            raise IngestLoopFailed(
                f"{left} records not stored in 60 s, {len(errors)} refused ({'; '.join(errors[:3])}): "
                "the batch is not committed; a restart replays it"
            )

    def _commit(self, done: dict[int, int]) -> bool:
        """Send the commit of the batch's offsets (every output of the batch is stored: ``_flush`` came
        first), with any earlier offsets not committed yet: those that waited for the commit in flight, and
        those a commit could not store (one refused during a rebalance, ILLEGAL_GENERATION, is carried to the
        next rather than left behind: a partition that gets no more records would otherwise be replayed by
        its next owner). Asynchronous: ``_on_commit`` takes the answer. Returns whether a commit was sent or
        nothing needed one."""
        for p, o in done.items():
            if p in self.partitions:
                self._uncommitted[p] = max(o, self._uncommitted.get(p, o))
        if not self._uncommitted:
            return True
        now = self.clock()
        if self._committing is not None:
            if now - self._commit_sent_at < COMMIT_ANSWER_S:
                return False  # these go with the next one, sent once this one is answered
            log.warning("ingest loop: no answer to the commit of %s; sending it again", self._committing)
            self._committing = None
        if now < self._commit_retry_at or now - self._commit_sent_at < COMMIT_INTERVAL_S:
            return False
        pending = dict(self._uncommitted)
        offsets = [TopicPartition(RAW_TOPIC, p, o) for p, o in pending.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:  # not sent (no coordinator known yet, ...): tried with the next batch
            self._refused(pending, exc)
            return False
        self._committing, self._commit_sent_at = pending, now
        return True

    def _on_commit(self, err: Any, partitions: list[TopicPartition]) -> None:
        """The broker's answer to an asynchronous commit (librdkafka calls it inside ``consume``/``poll``):
        what it stored is what it names, without an error. An answer to an earlier commit than the one in
        flight (one given up on and sent again) leaves that one in flight."""
        answered = {tp.partition: tp.offset for tp in partitions if tp.topic == RAW_TOPIC}
        pending = self._committing
        if pending is not None and (not answered or answered == pending):
            self._committing = None
        stored = {tp.partition: tp.offset for tp in partitions if tp.topic == RAW_TOPIC and tp.error is None}
        self._mark_committed(stored if err is None else {})
        failed = err if err is not None else next((tp.error for tp in partitions if tp.error), None)
        if failed is not None:
            self._refused(answered or pending or {}, failed)
            return
        self.stats.commits += 1
        self._refusals = 0
        self._commit_retry_at = 0.0

    def _refused(self, pending: dict[int, int], err: Any) -> None:
        # The outputs are stored; the offsets stay in _uncommitted and go with the next commit, and should
        # the partition move first, its new owner replays the records and derives the same records under
        # the same ids (ADR 0001): nothing is lost.
        self.stats.commit_failures += 1
        self._refusals += 1
        self._commit_retry_at = self.clock() + 0.1 * min(10, self._refusals)
        log.warning("ingest loop: commit of %s failed (sent again with the next one): %s", pending, err)

    def _mark_committed(self, pending: dict[int, int]) -> None:
        for p, o in pending.items():
            if self._uncommitted.get(p) == o:
                del self._uncommitted[p]
            state = self.partitions.get(p)
            if state is not None and (state.committed is None or o > state.committed):
                state.committed = o
                self.processor.on_commit(p, o)

    def _commit_now(self, ps: list[int]) -> None:
        """A synchronous commit of these partitions' offsets not committed yet (a revocation: they must be
        stored before the partitions go to their next owner). Best effort: what fails is replayed by him."""
        pending = {p: self._uncommitted[p] for p in ps if p in self._uncommitted}
        if not pending:
            return
        offsets = [TopicPartition(RAW_TOPIC, p, o) for p, o in pending.items()]
        for attempt in range(1, 4):
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                self.stats.commit_failures += 1
                err = exc.args[0] if exc.args else None
                if not (isinstance(err, KafkaError) and err.retriable()) or attempt == 3:
                    log.warning("ingest loop: commit of %s before revocation failed: %s", pending, exc)
                    return
                time.sleep(0.1 * attempt)
                continue
            self.stats.commits += 1
            self._mark_committed(pending)
            return

    # ---- punctuation ---------------------------------------------------------------------------------
    def tick_all(self) -> None:
        """Tick every owned partition, then one flush for all their outputs and changelog writes, then the
        state changes that had to wait for them."""
        ticked = [self.tick(partition) for partition in sorted(self.partitions)]
        self._write_changelogs()
        if len(self.producer):
            self._flush()
        for items in ticked:
            items.apply_deferred()

    def tick(self, partition: int) -> Outputs:
        """Reassembly timeouts and dedup expiry of one partition, by its stream time (ADR 0003), never ahead
        of what this loop has committed. Returns the outputs produced (their deferred steps not yet run)."""
        state = self.partitions[partition]
        self.processor.on_commit(partition, state.committed)
        try:
            _, highwater = self.consumer.get_watermark_offsets(
                TopicPartition(RAW_TOPIC, partition), cached=True
            )
        except KafkaException:
            highwater = OFFSET_INVALID
        last = self.processor.last_offset(partition)
        position = last + 1 if last is not None else state.committed
        caught_up = highwater >= 0 and position is not None and position >= highwater
        settled = (
            caught_up and state.committed is not None and position is not None and state.committed >= position
        )
        for t in self.tables.values():
            t.partition = partition
        try:
            items = self.processor.on_tick(partition, caught_up=caught_up, settled=settled)
            encode_tick_outputs(self.processor, self.serde, items, partition)
        except Exception:  # expiry is idempotent: the next tick does what this one could not
            log.exception("ingest tick for partition %d failed", partition)
            return Outputs()
        if items:
            with _tracer.start_as_current_span("reassembly timeout") as span:
                span.set_attribute("smsflow.emitted", len(items))
                span.set_attribute("messaging.kafka.partition", partition)
                self._publish_with_links(items)
        return items

    # ---- rebalances ----------------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        ps = sorted(tp.partition for tp in partitions if tp.topic == RAW_TOPIC)
        self.stats.assignments += 1
        started = time.monotonic()
        committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=30)}
        never = [p for p in ps if committed.get(p, OFFSET_INVALID) < 0]
        if never:
            for p, o in self._faust_committed(never).items():
                if o >= 0:
                    committed[p] = o
        restored = self.restore(ps)
        for p in ps:
            o = committed.get(p, OFFSET_INVALID)
            self.partitions[p] = PartitionState(committed=o if o >= 0 else None)
            self.processor.on_commit(p, o if o >= 0 else None)
        consumer.incremental_assign(
            [TopicPartition(RAW_TOPIC, p, committed.get(p, OFFSET_INVALID)) for p in ps]
        )
        self.ready = True
        if not ps:
            return
        log.warning(
            "ingest loop: assigned partitions %s (start offsets %s), %d table records restored in %.2f s",
            ps,
            {p: committed.get(p) for p in ps},
            restored,
            time.monotonic() - started,
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # No batch is in flight: callbacks run inside consume(), after the previous batch's flush. What is
        # not committed yet (the commit in flight, or one refused) is committed now, while they are ours.
        self.stats.revocations += 1
        ps = [tp.partition for tp in partitions if tp.topic == RAW_TOPIC]
        if not self._closing:
            self._commit_now(ps)
        self._forget(ps, "revoked")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget([tp.partition for tp in partitions if tp.topic == RAW_TOPIC], "lost")

    def _forget(self, ps: list[int], why: str) -> None:
        for p in ps:
            self.partitions.pop(p, None)
            self._uncommitted.pop(p, None)
            self.processor.forget_partition(p)
            for t in self.tables.values():
                t.forget_partition(p)
        if ps:
            log.warning("ingest loop: partitions %s %s", sorted(ps), why)

    def _faust_committed(self, ps: list[int]) -> dict[int, int]:
        """Where the Faust worker's group (``app_id``) committed these partitions of sms.raw.v1: a switch from
        the Faust ingest agent to this loop starts where the agent stopped."""
        return group_committed(self.bootstrap, self.cfg.app_id, RAW_TOPIC, ps)

    def restore(self, ps: list[int]) -> int:
        """Read these partitions of both changelogs from their low to their high watermark into the tables
        (the last value of a key wins, a tombstone deletes), as Faust's recovery does."""
        if not ps:
            return 0
        reader = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"{ingest_group(self.cfg.app_id)}-restore",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "fetch.wait.max.ms": 50,
            }
        )
        applied = 0
        try:
            table_of: dict[str, ChangelogTable] = {}
            ends: dict[tuple[str, int], int] = {}
            starts = []
            for name, topic in self.changelogs.items():
                table_of[topic] = self.tables[name]
                for p in ps:
                    low, high = reader.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                    if high > low:
                        ends[(topic, p)] = high
                        starts.append(TopicPartition(topic, p, low))
            if not starts:
                return 0
            reader.assign(starts)
            deadline = time.monotonic() + RESTORE_TIMEOUT_S
            while ends:
                if time.monotonic() > deadline:
                    raise IngestLoopFailed(f"changelog restore did not reach the end of {sorted(ends)}")
                for msg in reader.consume(1000, timeout=0.5):
                    err = msg.error()
                    if err is not None:
                        if err.fatal():
                            raise IngestLoopFailed(f"changelog restore: {err}")
                        continue
                    topic, partition, offset = str(msg.topic()), int(msg.partition() or 0), msg.offset() or 0
                    end = ends.get((topic, partition))
                    if end is None:
                        continue
                    applied += table_of[topic].restore(partition, [(msg.key(), msg.value())])
                    if offset + 1 >= end:
                        del ends[(topic, partition)]
        finally:
            reader.close()
        return applied


def group_peer(bootstrap: str, group: str) -> Consumer:
    """A consumer that names ``group`` only to read its committed offsets (``committed_offsets``): it never
    subscribes, so it never joins the group, and never commits."""
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})


def committed_offsets(peer: Consumer, topic: str, ps: list[int], timeout: float = 30) -> dict[int, int]:
    """Where the group ``peer`` names (``group_peer``) committed these partitions of ``topic`` (negative:
    never)."""
    got = peer.committed([TopicPartition(topic, p) for p in ps], timeout=timeout)
    return {tp.partition: tp.offset for tp in got}


def group_committed(bootstrap: str, group: str, topic: str, ps: list[int]) -> dict[int, int]:
    """Where ``group`` committed these partitions of ``topic`` (negative: never). Only read, never committed
    to: a direct loop or reader taking over from Faust's group starts where Faust's agent stopped."""
    peer = group_peer(bootstrap, group)
    try:
        return committed_offsets(peer, topic, ps)
    finally:
        peer.close()


def changelog_specs(cfg: Config, partitions: int) -> list[Any]:
    """The ingest tables' changelog topics, as the worker creates them (compacted, co-partitioned with
    sms.raw.v1)."""
    from smsflow.topics import TopicSpec

    return [
        TopicSpec(
            changelog_topic(cfg.app_id, name),
            partitions,
            cleanup_policy="compact",
            replication_factor=cfg.kafka.replication_factor,
        )
        for name in INGEST_TABLES
    ]


def members_reading_raw(
    bootstrap: str, group: str, timeout: float = 10.0, admin: Any = None, topic: str = RAW_TOPIC
) -> list[str]:
    """The members of ``group`` assigned partitions of ``topic`` (sms.raw.v1) right now (client ids, hosts),
    so the two kinds of ingest never run at once: the Faust worker's ingest stage (group ``app_id``) and this
    loop (group ``<app_id>-ingest``) would each process every raw record. Likewise the two readers of
    sms.inbound.v1 (streams/inbound_reader.py).

    A cluster that cannot answer within ``timeout`` (a coordinator still loading on a fresh broker) is not a
    reason to keep a process from starting: said in a warning, and treated as no members. ``admin``: a client
    to ask with (one is made if not given)."""
    from confluent_kafka.admin import AdminClient

    admin = admin or AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while True:
        try:
            left = max(1.0, deadline - time.monotonic())
            described = admin.describe_consumer_groups([group], request_timeout=left)[group].result(left)
            break
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.GROUP_ID_NOT_FOUND:
                return []
            failure: Exception = exc
        except Exception as exc:  # a timeout of the future
            failure = exc
        if time.monotonic() >= deadline:
            log.warning("could not tell who reads %s in group %s (%s); going on", topic, group, failure)
            return []
        time.sleep(0.5)
    out = []
    for member in described.members or []:
        tps = member.assignment.topic_partitions if member.assignment else []
        if any(tp.topic == topic for tp in tps):
            out.append(f"{member.client_id}@{member.host}")
    return out


def wait_for_other_ingest(
    bootstrap: str, group: str, wait_s: float, what: str, topic: str = RAW_TOPIC
) -> list[str]:
    """``members_reading_raw`` until it is empty or ``wait_s`` passed; what is left. A member that just
    stopped stays in its group until its session times out when it has a static-membership id
    (``worker.instance_id``), so a switch from one kind of ingest to the other waits that long before it
    refuses."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + wait_s
    members = members_reading_raw(bootstrap, group, admin=admin, topic=topic)
    if members:
        log.warning(
            "%s are reading %s (%s): waiting up to %.0f s for them to go",
            what,
            topic,
            members,
            wait_s,
        )
    while members and time.monotonic() < deadline:
        time.sleep(1.0)
        members = members_reading_raw(bootstrap, group, admin=admin, topic=topic)
    return members
