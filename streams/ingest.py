"""Ingest handlers: sms.raw.v1 -> decode, reassemble, dedup, enrich -> sms.inbound.v1 (+ receipts,
quarantine).

The topics, tables, agent and timer are declared in streams/topology.py; this module holds what they run.
All table writes happen inside stream iteration so they go to the right changelog partition. Time-based
work (reassembly timeouts, dedup window expiry) is driven by punctuation records on an internal topic
co-partitioned with sms.raw.v1 (as Kafka Streams' ``Processor`` punctuates): a timer writes one record per
owned partition, and the agent expires entries of exactly that partition while handling it. That keeps
expiry deletions in the changelog (so they survive restarts and rebalances) without touching Faust's
windowed-table cleanup (faust-streaming #385).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import FaustError
from faust.streams import _current_event
from faust.types import TP
from opentelemetry import trace

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
from smsflow.logsummary import SummarizedLog
from smsflow.schemas import RAW_TOPIC
from smsflow.telemetry import (
    context_from_headers,
    current_traceparent,
    headers_from_context,
    tracer,
)
from streams.context import StreamContext
from streams.liveness import WorkerCannotProcess
from streams.offsets import InOrderGate, admit_in_order
from streams.punctuation import punctuate_owned

log = logging.getLogger(__name__)
_floods = SummarizedLog(log)  # per-record lines a flood would repeat (smsflow/logsummary.py)
# Failures of the platform, not of the record: retried, then the worker exits (streams/liveness.py)
INFRA_ERRORS: tuple[type[BaseException], ...] = (FaustError, KafkaError)
INFRA_ATTEMPTS = 5
_tracer = tracer("smsflow.streams.ingest")


def _headers(event_headers: Any) -> list[tuple[str, Any]]:
    if isinstance(event_headers, dict):
        return list(event_headers.items())
    return list(event_headers or [])


class IngestStage:
    """The ingest agent's handlers around one ``IngestProcessor``: raw records and punctuation in, records
    out.

    ``outputs``: the topic of each output kind (inbound | receipt | quarantine); ``punctuation``: the internal
    topic the timer writes to and the agent reads beside sms.raw.v1.
    """

    def __init__(
        self,
        app: faust.App,
        ctx: StreamContext,
        processor: IngestProcessor,
        outputs: dict[str, faust.TopicT],
        punctuation: faust.TopicT,
        batch_max: int = 1,
    ) -> None:
        self.app = app
        self.batch_max = batch_max
        self.ctx = ctx
        self.processor = processor
        self.outputs = outputs
        self.punctuation = punctuation
        self.punctuation_name = punctuation.get_topic_name()
        # records of a partition are processed in log order only (streams/offsets.py, docs/consistency.md)
        self.in_order = InOrderGate()

    async def process(self, stream: faust.StreamT[bytes]) -> None:
        """The agent: one guarded boundary per record. Whatever one record does, it ends processed or
        quarantined (with its reason) and acked, so it can neither crash this agent, pin its partition nor
        skip a neighbour. Only a failure of the platform itself, after retries, propagates: then nothing can
        be processed, and the worker exits (streams/liveness.py) to restart from its committed offsets.

        Records come in batches of what is already waiting (up to ``worker.ingest_batch_max``): a batch
        never waits for more records, so it adds no latency and no timer (Faust's ``take_events`` woke every
        ``within`` even when idle); under load the records of a batch are handled back to back and their
        outputs fill larger produce requests. Each record is acked once it is handled (its outputs sent, so
        Faust's pre-commit flush makes them durable first), as one at a time."""
        if self.batch_max <= 1:
            async for event in stream.events():
                await self.handle(event)
                await asyncio.sleep(0)  # let the other stages run (see handle_batch)
            return
        # the records Faust has fetched for this agent and not yet handed out
        waiting = stream.channel.queue  # type: ignore[attr-defined]
        batch: list[Any] = []
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            batch.append(event)
            if len(batch) < self.batch_max and self.next_is_ready(waiting):
                continue  # the next record is already there: it joins this batch
            pending, batch = batch, []
            await self.handle_batch(stream, pending)

    def next_is_ready(self, waiting: Any) -> bool:
        """Whether Faust's stream hands out the next record without waiting: one is queued, and it is not one
        the stream skips (fetched before a rebalance, or while the flow is stopped). Past a skipped record
        the stream waits for the next arrival, and the batch taken so far would wait unhandled with it:
        after a restart under traffic that is a wait at every rebalance (the first timer-free batch's commits
        crawled one record a second after a kill -9, the rate of the punctuation ticks)."""
        queued = waiting._queue  # asyncio.Queue's deque (mode's ThrowableQueue); never consumed here
        if not queued or waiting._errors:
            return False
        message = getattr(queued[0], "message", None)
        if message is None:
            return True  # not a Kafka record: handed out as it is
        return bool(
            self.app.flow_control.is_active() and message.generation_id == self.app.consumer_generation_id
        )

    async def handle_batch(self, stream: Any, events: Sequence[Any]) -> None:
        """One batch, record by record in arrival order (per partition, the order of the log). A record is
        acked after it is handled; an exception (a platform failure: the worker exits to replay from its
        committed offsets; or the agent stopping) leaves it and the rest of the batch unacked, never
        committable."""
        for event in events:
            # Table writes go to the changelog partition of the event being handled (Faust reads it from
            # this context variable); inside a batch that is the event of this iteration, not the last one.
            token = _current_event.set(weakref.ref(event))
            try:
                await self.handle(event)
            finally:
                _current_event.reset(token)
            await stream.ack(event)
            # Yield to the event loop after every record. None of the awaits above needs to suspend (table
            # writes and sends go to buffers; Faust hands out queued records without waiting), so without
            # this a backlog on this agent (a 255-part SMS is 255 records) ran back to back and starved the
            # rest of the worker: the delivery agent, the producer's sender and the fetcher waited ~0.5 s
            # (tests/e2e/test_hostile_input.py, volume phase). One yield costs a few microseconds.
            await asyncio.sleep(0)

    async def handle(self, event: Any) -> None:
        if event.message.topic == self.punctuation_name:
            try:
                await self.handle_punctuation(event.message.partition)
            except Exception:  # expiry is idempotent: the next punctuation does what this one could not
                log.exception("ingest punctuation for partition %d failed", event.message.partition)
        else:
            msg = event.message
            if not admit_in_order(self.in_order, self.app.consumer, msg, msg.partition):
                return
            await self.handle_raw(event)

    async def punctuate(self) -> None:
        """The timer: one punctuation record for each partition of sms.raw.v1 this worker owns."""
        await punctuate_owned(self.app, self.punctuation)

    async def on_partitions_revoked(self, sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        for tp in revoked:
            if tp.topic == RAW_TOPIC:
                self.processor.forget_partition(tp.partition)
                self.in_order.forget(tp.partition)

    async def publish(self, items: list[Publish], parent: Any) -> None:
        for item in items:
            topic = KIND_TOPIC[item.kind]
            value = item.encoded if item.encoded is not None else self.ctx.serde.encode(topic, item.record)
            # One PRODUCER span per record; its context rides in the record's headers to the next stage.
            with _tracer.start_as_current_span(
                f"send {topic}",
                context=parent,
                kind=trace.SpanKind.PRODUCER,
                attributes=send_attributes(topic, item),
            ):
                headers = headers_from_context()
                await self.outputs[item.kind].send(key=item.key.encode(), value=value, headers=headers)

    async def publish_durably(self, items: Outputs, publisher: Any) -> None:
        """Publish, then apply the state changes that may only follow once those records are acked."""
        await publisher(self.publish, items)
        if items.after_durable:
            await self.app.producer.flush()
            items.apply_deferred()

    async def handle_punctuation(self, partition: int) -> None:
        tp = TP(RAW_TOPIC, partition)
        consumer = self.app.consumer
        # Faust keeps the last committed offset per partition; expiry must not outrun it (docs/consistency.md)
        committed = consumer._committed_offset.get(tp)  # type: ignore[attr-defined]
        self.processor.on_commit(partition, committed)
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # not fetched yet: treat as not caught up
            highwater = None
        last = self.processor.last_offset(partition)
        position = last + 1 if last is not None else committed
        caught_up = highwater is not None and position is not None and position >= highwater
        settled = caught_up and committed is not None and position is not None and committed >= position
        items = self.processor.on_tick(partition, caught_up=caught_up, settled=settled)
        encode_tick_outputs(self.processor, self.ctx.serde, items, partition)
        if items:
            with _tracer.start_as_current_span("reassembly timeout") as span:
                span.set_attribute("smsflow.emitted", len(items))
                span.set_attribute("messaging.kafka.partition", partition)
                await self.publish_durably(items, self._publish_with_links)
        elif items.after_durable:
            await self.publish_durably(items, self._publish_with_links)

    async def handle_raw(self, event: Any) -> None:
        msg = event.message
        origin = RecordOrigin(RAW_TOPIC, msg.partition, msg.offset)
        headers = _headers(event.headers)
        parent = context_from_headers(headers)
        with _tracer.start_as_current_span(
            "ingest",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes=ingest_attributes(msg.topic, msg.partition, msg.offset),
        ) as span:
            try:
                raw = self.ctx.serde.decode(RAW_TOPIC, event.value)
            except Exception as exc:  # undecodable record: keep it, say why, move on
                _floods.log(
                    "sms.raw.v1 records that do not decode",
                    logging.ERROR,
                    "sms.raw.v1 %d:%d does not decode: %s",
                    msg.partition,
                    msg.offset,
                    exc,
                )
                raw = {"carrier_id": "", "route_id": "", "pdu": event.value, "received_at": 0}
                reason = f"record does not decode: {exc}"
                await self.publish(
                    Outputs([self.processor.quarantine(raw, reason, origin, msg.partition)]), None
                )
                return
            span.set_attribute("smsflow.carrier", str(raw.get("carrier_id", "")))
            span.set_attribute("smsflow.route", str(raw.get("route_id", "")))
            before = dataclasses.replace(self.processor.stats)
            try:
                # A segment is remembered with this span's context, so the assembled message hangs under the
                # ingest span of the segment that arrived first, and links the others' ingest spans.
                items = await self._with_infra_retries(
                    lambda: self.processor.on_raw(raw, origin, current_traceparent()), str(origin)
                )
                span.set_attribute("smsflow.outputs", len(items))
                span.set_attribute("smsflow.outcome", outcome(before, self.processor.stats, items))
                # encode before sending anything: a value the schema cannot carry fails this record only
                for item in items:
                    item.encoded = self.ctx.serde.encode(KIND_TOPIC[item.kind], item.record)
            except WorkerCannotProcess:
                raise
            except Exception as exc:
                _floods.log(
                    f"sms.raw.v1 records whose processing failed ({type(exc).__name__})",
                    logging.ERROR,
                    "sms.raw.v1 %d:%d: processing failed; quarantined",
                    msg.partition,
                    msg.offset,
                    exc_info=True,
                )
                reason = f"processing failed: {type(exc).__name__}: {exc}"[:1000]
                await self.publish(
                    Outputs([self.processor.quarantine(raw, reason, origin, msg.partition)]), None
                )
                return
            await self._with_infra_retries(
                lambda: self.publish_durably(items, self._publish_with_links), str(origin)
            )

    async def _with_infra_retries(self, step: Callable[[], Any], origin: str) -> Any:
        """Run one record's step; retry what the infrastructure failed (Kafka, Faust), never the record.

        A retried step may have written part of its state or sent part of its outputs already: that is the
        "table ahead of the input" case every step handles (docs/consistency.md), so a retry re-derives the
        same outputs, under the same ids.
        """
        for attempt in range(1, INFRA_ATTEMPTS + 1):
            try:
                result = step()
                return await result if asyncio.iscoroutine(result) else result
            except INFRA_ERRORS as exc:
                if attempt == INFRA_ATTEMPTS:
                    reason = f"{origin}: {type(exc).__name__}: {exc} (after {attempt} attempts)"
                    if self.ctx.liveness is not None:
                        self.ctx.liveness.fail(reason)
                    raise WorkerCannotProcess(reason) from exc
                log.warning("%s: %s; retrying (%d of %d)", origin, exc, attempt, INFRA_ATTEMPTS)
                await asyncio.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    async def _publish_with_links(self, pub: Any, items: list[Publish]) -> None:
        here = current_traceparent()
        for item in items:
            plan = assembly(item, here)
            if plan is None:
                await pub([item], None)  # a single PDU: the message continues this very span
                continue
            with _tracer.start_as_current_span(
                "assemble", context=plan.first, links=plan.links, attributes=plan.attributes
            ):
                await pub([item], None)
