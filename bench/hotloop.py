"""ADR 0006 steps 3+4 as a prototype: the hot loop on confluent-kafka, no re-read hop, against the worker.

    flock /tmp/smsflow-broker.lock .venv/bin/python -m bench.hotloop bench --count 5000 --repeat 3
    .venv/bin/python -m bench.hotloop bench --help      # counts, mixes, systems, batch size, HTTP concurrency
    .venv/bin/python -m bench.hotloop loop --help       # the prototype process itself (started by ``bench``)

``loop`` is the prototype (docs/adr/0007-direct-kafka-hot-loop.md): one confluent-kafka consumer polls
``sms.raw.v1`` in batches (``consume(num_messages=500)``, no auto-commit); each batch is decoded, reassembled,
deduplicated and enriched by OUR ``IngestProcessor`` on plain-dict tables whose changed keys are written to
Faust-compatible changelog topics (one write per key per batch); every message is handed in-process to the
real delivery engine (subscription matching, signed POST over kept-alive aiohttp connections, bounded
concurrency); ``sms.inbound.v1``, the changelog writes and the ``sms.delivery.v1`` events go out through ONE
idempotent producer (acks=all, lz4: ``smsflow.producer.producer_conf``), the producer is flushed, and only
then are the batch's offsets committed, synchronously: outputs durable before the input is acked.

``bench`` runs it against the real worker (``python -m smsflow worker`` started by bench/e2e.py's
``SmsflowSystem`` with the config the e2e bench writes), on the same broker, with the same seeded traffic
(``TrafficMix``), stored in ``sms.raw.v1`` the way the connector stores it (``SmppConnector.store``) while the
measured process is stopped (SIGSTOP), so only the consumer side is timed: CPU seconds of the process and of
the broker from /proc between SIGCONT and the webhook receiver (in this process, not counted) having every
SMS, each once and intact (bench/e2e.py's ``Tracker``). ``--no-pause``: the process consumes while the topic
fills instead (timed from the first record stored). Results and their reading: docs/BENCHMARKS.md, "Issue 13,
the cap of a direct hot loop (prototype)".
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.e2e import (
    REPO,
    SIM_PASSWORD,
    PySpy,
    Result,
    SmsflowSystem,
    Tracker,
    log,
    machine,
    print_profiles,
    spread,
    summarize_profile,
    table,
)
from bench.procstat import cpu_delta, snapshot
from smsflow.ingest.tables import INGEST_TABLES, ChangelogTable, changelog_topic

MIXES = {"single": 0.0, "default": 0.2, "mp80": 0.8}  # multipart share; "default" = bench/e2e.py's mix
SYSTEMS = ("hotloop", "hotloop-nohttp", "worker")


def batch_offsets(positions: list[tuple[str, int, int]]) -> dict[tuple[str, int], int]:
    """The offsets to commit after a batch: per (topic, partition), the last offset handled + 1."""
    out: dict[tuple[str, int], int] = {}
    for topic, partition, offset in positions:
        key = (topic, partition)
        if offset + 1 > out.get(key, -1):
            out[key] = offset + 1
    return out


# ---- the prototype process ----------------------------------------------------------------------------
class HotLoop:
    """ADR 0006 steps 3+4 as a batch loop. Simplified against the product, on purpose (a prototype for the
    cost, not a replacement): no punctuation (reassembly timeouts and dedup expiry are not run: the bench's
    messages all complete), no table recovery from the changelog at start and no rebalance handling beyond
    librdkafka's own (a fresh group, fresh tables), no ingest in-order gate (a batch loop over one
    consumer never hands out records out of order), no retry topic reader (a failed POST's retry record is
    written by the engine's effects but nothing reads it back), no batched subscriptions, no double list, one
    configured subscription, no metrics; a produce or flush failure stops the process without committing (a
    restart replays from the committed offsets)."""

    def __init__(self, cfg: Any, app_id: str, batch: int, in_flight: int, webhook: bool) -> None:
        from confluent_kafka import Consumer, Producer

        from smsflow.delivery.egress import AddressPolicy
        from smsflow.delivery.engine import DeliveryEngine
        from smsflow.delivery.policy import RetryPolicy, RetrySchedule
        from smsflow.delivery.sender import SenderConfig, WebhookSender
        from smsflow.ingest.processor import IngestProcessor, ingest_settings
        from smsflow.producer import producer_conf
        from smsflow.schemas import DELIVERY_TOPIC, INBOUND_TOPIC, QUARANTINE_TOPIC, RAW_TOPIC, RECEIPTS_TOPIC
        from smsflow.serde import Serde, registry_client
        from smsflow.subscriptions.store import InMemorySubscriptionStore

        bootstrap, registry = cfg.require_endpoints()
        self.cfg = cfg
        self.app_id = app_id
        self.batch = batch
        self.in_flight = in_flight
        self.webhook = webhook
        self.stats: Counter[str] = Counter()  # batches, records, messages, posts, produced, ...
        self.running = True
        self.serde = Serde(registry_client(registry, cfg.registry_credentials()))
        self.serde.warm_up([RAW_TOPIC, INBOUND_TOPIC, DELIVERY_TOPIC, QUARANTINE_TOPIC, RECEIPTS_TOPIC])
        self.topics = {"inbound": INBOUND_TOPIC, "receipt": RECEIPTS_TOPIC, "quarantine": QUARANTINE_TOPIC}
        self.raw_topic = RAW_TOPIC
        self.delivery_topic = DELIVERY_TOPIC
        self.tables = {name: ChangelogTable() for name in INGEST_TABLES}
        self.changelogs = {name: changelog_topic(app_id, name) for name in INGEST_TABLES}
        # the worker's rules, from the same config
        self.processor = IngestProcessor(
            self.tables["ingest-partials"], self.tables["ingest-seen"], ingest_settings(cfg)
        )
        # one idempotent producer for every output: acks=all, lz4, murmur2 (the product's settings); only
        # failed deliveries call back (the flush before the commit waits for all of them)
        self.producer = Producer(
            producer_conf(bootstrap, **{"delivery.report.only.error": True, "on_delivery": self._on_error})
        )
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": app_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
            }
        )
        self.store = InMemorySubscriptionStore()
        wh = cfg.webhooks
        self.sender = WebhookSender(
            SenderConfig(
                https_only=wh.https_only,
                ca_bundle=wh.ca_bundle,
                address_policy=AddressPolicy() if wh.block_private_addresses else None,
            )
        )
        # the retry schedule of the config, as the worker builds it (smsflow/roles.py)
        schedule = {k: getattr(wh, f"retry_{k}") for k in ("delays_s", "jitter")}
        schedule["delays_s"] = tuple(schedule["delays_s"])
        policy = RetryPolicy(
            RetrySchedule(**schedule, max_age_s=wh.max_age_s, deferred_delay_s=wh.deferred_delay_s)
        )
        self.engine = DeliveryEngine(self.sender, store=self.store, policy=policy)

    def _on_error(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.stats["delivery_errors"] += 1
            log(f"hotloop: produce to {msg.topic()} failed: {err}")

    async def run(self) -> None:
        from smsflow.subscriptions.topic_store import seed_subscriptions

        await seed_subscriptions(self.store, self.cfg.subscriptions)  # the config's subscription, in memory
        self.consumer.subscribe([self.raw_topic])
        loop = asyncio.get_running_loop()
        try:
            while self.running:
                records = await loop.run_in_executor(None, self.consumer.consume, self.batch, 0.2)
                if records:
                    await self.handle_batch(records)
        finally:
            self.consumer.close()
            self.producer.flush(10)
            await self.sender.close()
            log(f"hotloop: stopped; {dict(self.stats)}")

    async def handle_batch(self, records: list[Any]) -> None:
        """Process, produce, POST, flush, commit: the product's order (outputs durable, then the ack)."""
        from opentelemetry import trace

        from smsflow.ingest.origin import RecordOrigin
        from smsflow.ingest.spans import ingest_attributes
        from smsflow.telemetry import context_from_headers, current_traceparent, headers_from_context, tracer

        tr = tracer("smsflow.bench.hotloop")
        produce = self.producer.produce
        deliveries: list[tuple[dict[str, Any], Any]] = []  # (inbound record, its trace context)
        positions: list[tuple[str, int, int]] = []
        self.stats["batches"] += 1
        for rec in records:
            if rec.error() is not None:
                log(f"hotloop: consumer error {rec.error()}")
                continue
            partition, offset = rec.partition(), rec.offset()
            positions.append((rec.topic(), partition, offset))
            self.stats["records"] += 1
            for t in self.tables.values():
                t.partition = partition  # table writes go to this record's changelog partition
            with tr.start_as_current_span(
                "ingest",
                context=context_from_headers(rec.headers()),
                kind=trace.SpanKind.CONSUMER,
                attributes=ingest_attributes(self.raw_topic, partition, offset),
            ):
                origin = RecordOrigin(self.raw_topic, partition, offset)
                try:
                    raw = self.serde.decode(self.raw_topic, rec.value())
                    items = self.processor.on_raw(raw, origin, current_traceparent())
                    encoded = [
                        (item, self.serde.encode(self.topics[item.kind], item.record)) for item in items
                    ]
                except Exception as exc:  # the product's one guarded boundary per record: quarantined
                    reason = f"processing failed: {type(exc).__name__}: {exc}"[:1000]
                    raw = {"carrier_id": "", "route_id": "", "pdu": rec.value() or b"", "received_at": 0}
                    item = self.processor.quarantine(raw, reason, origin, partition)
                    encoded = [(item, self.serde.encode(self.topics["quarantine"], item.record))]
                for item, value in encoded:
                    topic = self.topics[item.kind]
                    # a message of several segments continues the trace of the segment that came first
                    # (the product also links the others' traces: left out here)
                    parent = (
                        context_from_headers([("traceparent", item.traceparents[0])])
                        if (item.traceparents)
                        else None
                    )
                    with tr.start_as_current_span(
                        f"send {topic}", context=parent, kind=trace.SpanKind.PRODUCER
                    ) as span:
                        headers: list[tuple[str, str | bytes | None]] = [*headers_from_context()]
                        produce(topic, value, item.key.encode(), headers=headers)
                        if item.kind == "inbound":
                            deliveries.append((dict(item.record), trace.set_span_in_context(span)))
                    self.stats["produced"] += 1
                if items.after_durable:  # an incomplete close: its state change waits for durable outputs
                    self.producer.flush()
                    items.apply_deferred()
        # the changelog writes of the batch, in write order, on each record's partition
        for name, t in self.tables.items():
            topic = self.changelogs[name]
            for partition, ckey, cvalue in t.drain_records():
                produce(topic, cvalue, ckey, partition=partition)
                self.stats["changelog_writes"] += 1
        self.stats["messages"] += len(deliveries)
        if deliveries:
            await self.deliver_all(deliveries)
        # durable outputs first (acks=all), then the input's offsets, synchronously
        left = await asyncio.get_running_loop().run_in_executor(None, self.producer.flush, 30)
        if left or self.stats["delivery_errors"]:
            self.running = False
            raise SystemExit(f"hotloop: {left} records not delivered, {self.stats['delivery_errors']} failed")
        from confluent_kafka import TopicPartition

        commit = [TopicPartition(t, p, o) for (t, p), o in batch_offsets(positions).items()]
        if commit:
            self.consumer.commit(offsets=commit, asynchronous=False)

    async def deliver_all(self, deliveries: list[tuple[dict[str, Any], Any]]) -> None:
        """Every message to every matching subscription, ``in_flight`` at a time (a fixed set of coroutines
        takes the next message: no task per message)."""
        from smsflow.payload import webhook_payload
        from smsflow.subscriptions.holdings import receives

        subs = [s for s in await self.store.list() if s.enabled]
        todo = iter(deliveries)

        async def one_lane() -> None:
            for record, ctx in todo:
                for sub in subs:
                    if receives(sub, self.store.holding_of(sub.owner), record):
                        await self.attempt(sub, webhook_payload(record), ctx)

        lanes = min(self.in_flight, len(deliveries))
        await asyncio.gather(*(one_lane() for _ in range(lanes)))

    async def attempt(self, sub: Any, payload: dict[str, Any], parent: Any) -> None:
        """One first attempt, as the deliver stage makes it (``KafkaDelivery._attempt_on``, without the double
        list): a CLIENT span, the engine's signed POST and decision, then its events and writes produced."""
        from opentelemetry import trace

        from smsflow.delivery.effects import attempt_effects
        from smsflow.delivery.events import DeliveryEvent, DeliveryState
        from smsflow.delivery.records import event_record
        from smsflow.subscriptions.model import utcnow
        from smsflow.telemetry import http_headers_from_context, tracer

        first_at = utcnow()
        mid = str(payload["message_id"])
        with tracer("smsflow.bench.hotloop").start_as_current_span(
            "webhook POST",
            context=parent,
            kind=trace.SpanKind.CLIENT,
            attributes={"smsflow.message_id": mid, "smsflow.subscription": sub.id, "smsflow.attempt": 1},
        ):
            if not self.webhook:  # the variant without HTTP: what a POST costs is left out, nothing else
                events = [
                    DeliveryEvent(state=DeliveryState.DELIVERED, message_id=mid, subscription_id=sub.id)
                ]
                writes: list[Any] = []
            else:
                outcome = await self.engine.attempt(sub, [payload], 1, first_at, http_headers_from_context())
                effects = attempt_effects(sub, [payload], 1, first_at, outcome)
                events, writes = effects.events, effects.writes
                self.stats["posts"] += 1
        for ev in events:
            value = self.serde.encode(self.delivery_topic, event_record(ev))
            self.producer.produce(self.delivery_topic, value, ev.message_id.encode())
            self.stats["produced"] += 1
        for w in writes:  # retry / dead-letter / ops records (nothing reads the retry topic back here)
            self.producer.produce(w.topic, w.value, w.key.encode())
            self.stats["produced"] += 1


def run_loop(args: argparse.Namespace) -> int:
    from smsflow import event_loop
    from smsflow.config import load_config
    from smsflow.telemetry import setup_tracing

    cfg = load_config(args.config)
    event_loop.install(cfg.event_loop)  # uvloop by default, as the worker
    setup_tracing(cfg.tracing, "worker")
    hot = HotLoop(cfg, args.app_id, args.batch, args.in_flight, webhook=not args.no_webhook)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: setattr(hot, "running", False))
        await hot.run()

    asyncio.run(main())
    return 0


# ---- the workload: TrafficMix, stored as the connector stores it ---------------------------------------
class CarrierPdus:
    """The deliver_sm PDUs a carrier sends for each logical SMS: the simulated SMSC's own (its segmentation,
    concatenation references and shuffled parts, as bench/e2e.py's carrier sends them), taken off its queue
    instead of sent, each as the connector's session hands it to ``SmppConnector.store``."""

    ACCOUNT = "carrier"

    def __init__(self, seed: int) -> None:
        from devkit.simulator.smsc import SimulatedSmsc

        self.smsc = SimulatedSmsc({self.ACCOUNT: ""}, shuffle=True, seed=seed)  # never started: a PDU source
        self.sequence = 0

    def of(self, sms: Any, session_id: str = "sim#0") -> list[Any]:
        from connectors.smpp.session import InboundPdu
        from smsflow.smpp.constants import CommandId
        from smsflow.smpp.pdu import Pdu, decode_pdu, encode_pdu

        self.smsc.enqueue(sms, self.ACCOUNT)
        queue = self.smsc._queues[self.ACCOUNT]
        out = []
        while queue:
            item = queue.popleft()
            self.sequence += 1
            pdu = Pdu(
                CommandId.deliver_sm,
                sequence_number=self.sequence,
                params=dict(item.pdu_params),
                tlvs=list(item.tlvs),  # type: ignore[arg-type]
            )
            raw = encode_pdu(pdu)
            now_ms = int(time.time() * 1000)
            out.append(InboundPdu(decode_pdu(raw), raw, session_id, "127.0.0.1:2775", now_ms))
        return out


async def preload(cfg: Any, bootstrap: str, registry_url: str, messages: list[Any], seed: int) -> int:
    """Store every PDU of ``messages`` in sms.raw.v1 through the connector's own store path (record, key,
    Avro, trace headers, acks=all producer); returns the number of PDUs."""
    from connectors.smpp.connector import SmppConnector
    from smsflow.producer import AsyncProducer, producer_conf
    from smsflow.serde import Serde, registry_client

    carrier = cfg.carriers[0]
    producer = AsyncProducer(producer_conf(bootstrap))
    connector = SmppConnector([carrier], producer, Serde(registry_client(registry_url)))
    source = CarrierPdus(seed)
    pdus = [p for m in messages for p in source.of(m)]
    gate = asyncio.Semaphore(512)

    async def one(item: Any) -> None:
        async with gate:
            status = await connector.store(carrier, item)
            if status != 0:
                raise RuntimeError(f"preload: the connector's store answered 0x{status:08X}")

    await asyncio.gather(*(one(p) for p in pdus))
    await producer.close()
    return len(pdus)


# ---- the bench ----------------------------------------------------------------------------------------
def _watermarks(consumer: Any, tp: Any, attempts: int = 20) -> tuple[int, int]:
    """Low and high offsets of a partition; retried while a new topic's leader is being elected."""
    from confluent_kafka import KafkaException

    for attempt in range(attempts):
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            return int(low), int(high)
        except KafkaException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.25)
    raise AssertionError("unreachable")


def group_offsets_to_end(bootstrap: str, group: str) -> None:
    """Commit, for ``group``, every existing topic's end offsets: a process started in that group reads only
    what is written after this (the earlier runs' records stay behind it)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        offsets = []
        for name, meta in c.list_topics(timeout=10).topics.items():
            if name.startswith("__"):
                continue
            for p in meta.partitions:
                _, high = _watermarks(c, TopicPartition(name, p))
                offsets.append(TopicPartition(name, p, high))
        if offsets:
            c.commit(offsets=offsets, asynchronous=False)
    finally:
        c.close()


def create_changelogs(bootstrap: str, app_id: str, partitions: int) -> None:
    """The prototype's changelog topics, as Faust declares its table topics (compacted, co-partitioned)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [
        NewTopic(changelog_topic(app_id, t), partitions, 1, config={"cleanup.policy": "compact"})
        for t in INGEST_TABLES
    ]
    for fut in admin.create_topics(topics).values():
        fut.result(30)


def committed_lag(bootstrap: str, group: str, topic: str) -> int:
    """Records of ``topic`` written but not yet committed by ``group``."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(topic, p) for p in c.list_topics(topic, timeout=10).topics[topic].partitions]
        lag = 0
        for tp in c.committed(parts, timeout=10):
            _, high = _watermarks(c, tp)
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        c.close()


def start_process(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """A child with its output in ``log_path`` (the file stays open in the child only)."""
    with open(log_path, "wb") as out:
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def loadavg() -> list[str]:
    """The 1, 5 and 15 minute load averages."""
    return Path("/proc/loadavg").read_text().split()[:3]


class ProcessExited(RuntimeError):
    """The process under test ended during a run."""


@dataclass
class Measured:
    """One process under test: the role's process and how to tell it has handled everything."""

    name: str
    proc: subprocess.Popen[bytes]
    group: str
    webhook: bool
    log: Path


class HotloopBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir: Path = args.workdir_path
        self.serial = 0
        self.results: list[Result] = []
        self.loadavg: list[tuple[str, str]] = []
        self.profiles: dict[str, list[tuple[str, float]]] = {}
        self.exits: list[str] = []  # processes under test that exited during a run (made again)

    def mix(self, multipart: float) -> Any:
        from devkit.simulator.traffic import TrafficMix

        self.serial += 1  # unique texts (the tag joins what was stored and what arrived) across runs
        return TrafficMix(
            seed=self.args.seed + self.serial, multipart_ratio=multipart, seq_start=self.serial * 10**6
        )

    async def run(self) -> None:
        from devkit.demo.receiver import WebhookReceiver
        from devkit.simulator.smsc import SimulatedSmsc

        args = self.args
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        rx = WebhookReceiver(secret)
        rx.bench_secret = secret  # type: ignore[attr-defined]
        await rx.start()
        # the worker's config names a carrier; its connector (started with it by SmsflowSystem) binds here
        smsc = SimulatedSmsc({"smsflow": SIM_PASSWORD}, window=64)
        await smsc.start()
        broker = SmsflowSystem(self.workdir / "broker", partitions=args.partitions)
        bootstrap, registry_url = await broker.start_broker()
        assert broker.kafka is not None
        self.kafka_pid = broker.kafka.pid
        try:
            for rep in range(args.repeat):
                for system in args.systems:
                    mixes = list(args.mixes)  # run_system takes each off once measured
                    for attempt in range(1, 4):
                        try:
                            await self.run_system(
                                system, rep, mixes, smsc, rx, bootstrap, registry_url, attempt
                            )
                            break
                        except ProcessExited as exc:
                            # said in the output and counted; the run is made again in a fresh process
                            self.exits.append(f"{time.strftime('%H:%M:%S', time.gmtime())} {exc}")
                            log(f"{exc}; starting it again ({attempt} of 3)")
                    else:
                        raise RuntimeError(f"{system}: exited three times; see {self.workdir}")
        finally:
            await broker.stop()
            await smsc.stop()
            await rx.stop()

    async def run_system(
        self,
        system: str,
        rep: int,
        mixes: list[str],
        smsc: Any,
        rx: Any,
        bootstrap: str,
        registry_url: str,
        attempt: int = 1,
    ) -> None:
        from smsflow.config import load_config

        args = self.args
        app_id = f"hotloop-{system}-{rep}-{attempt}-{int(time.time()) % 10**6}"
        # The e2e bench's smsflow config and processes; the connector is not needed (the topic is preloaded)
        # and is stopped at once. The session timeout is raised so that a worker stopped (SIGSTOP) during a
        # preload keeps its group membership; it does not touch the hot path.
        sf = SmsflowSystem(
            self.workdir / f"{system}-{rep}-{attempt}",
            partitions=args.partitions,
            bootstrap=bootstrap,
            registry_url=registry_url,
            overrides=[f"app_id={app_id}", "worker.session_timeout_s=60"],
        )
        await asyncio.to_thread(group_offsets_to_end, bootstrap, app_id)
        if system == "worker":
            await sf.start(smsc, rx)
        else:
            # only to write the config and build the env: no process of its own is needed here
            await self._config_only(sf, smsc, rx)
        connector = sf.procs.pop("connector", None)
        if connector is not None:
            await asyncio.to_thread(connector.stop)
        cfg_path = sf.workdir / "config.yaml"
        cfg = load_config(cfg_path)
        env = dict(sf.procs["worker"].env)  # the worker's environment (registry, secrets), as e2e builds it
        if system == "worker":
            proc = sf.procs["worker"].proc
        else:
            await asyncio.to_thread(create_changelogs, bootstrap, app_id, args.partitions)
            cmd = [
                sys.executable, "-m", "bench.hotloop", "loop", "--config", str(cfg_path), "--app-id", app_id,
                "--batch", str(args.batch), "--in-flight", str(args.in_flight),
            ]  # fmt: skip
            if system == "hotloop-nohttp":
                cmd.append("--no-webhook")
            proc = start_process(cmd, env, sf.workdir / "hotloop.log")
        log_path = sf.workdir / ("logs/worker.log" if system == "worker" else "hotloop.log")
        m = Measured(system, proc, app_id, webhook=system != "hotloop-nohttp", log=log_path)
        try:
            os.environ.setdefault("BENCH_SMPP_PASSWORD", SIM_PASSWORD)
            log(f"{system} (run {rep + 1}): warm-up")
            await self.measure(m, cfg, bootstrap, registry_url, rx, "warm-up", 0.2, args.warmup, warmup=True)
            if args.idle and rep == 0 and attempt == 1:
                await self.idle(m, args.idle)
            while mixes:
                mix = mixes[0]
                log(f"{system} (run {rep + 1}): {mix}, {args.count} SMS")
                await self.measure(m, cfg, bootstrap, registry_url, rx, mix, MIXES[mix], args.count)
                mixes.pop(0)
        finally:
            if system == "worker":
                await sf.stop()
            else:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(proc.wait, 30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            rx.on_message = None

    async def _config_only(self, sf: SmsflowSystem, smsc: Any, rx: Any) -> None:
        """SmsflowSystem.start writes the e2e config and starts the worker and connector; for the prototype
        only its config file and environment are wanted, so its processes are made but never started."""
        import devkit.demo.pipeline as pipeline

        real = pipeline.RoleProcess

        class NotStarted(real):  # type: ignore[valid-type,misc]
            def start(self) -> None:
                pass

            def stop(self, timeout: float = 20.0) -> int | None:
                return None

        pipeline.RoleProcess = NotStarted  # type: ignore[misc]
        try:
            await sf.start(smsc, rx)
        finally:
            pipeline.RoleProcess = real  # type: ignore[misc]

    async def idle(self, m: Measured, seconds: float) -> None:
        """CPU of the process and the broker with no traffic (timers, polls, heartbeats), for ``seconds``."""
        pids = {m.name: m.proc.pid, "kafka": self.kafka_pid}
        before = snapshot(pids)
        await asyncio.sleep(seconds)
        after = snapshot(pids)
        res = Result(
            m.name,
            f"idle {seconds:g}s",
            0,
            0,
            0,
            0,
            seconds,
            0.0,
            0.0,
            0,
            {},
            cpu_delta(before, after),
            0.0,
            {},
        )
        self.results.append(res)
        print(table([res]).splitlines()[-1], flush=True)

    async def measure(
        self,
        m: Measured,
        cfg: Any,
        bootstrap: str,
        registry_url: str,
        rx: Any,
        scenario: str,
        multipart: float,
        count: int,
        warmup: bool = False,
    ) -> None:
        from smsflow.schemas import RAW_TOPIC

        mix = self.mix(multipart)
        messages = [mix.next() for _ in range(count)]
        tr = Tracker(expected_text={s.tag: s.text for s in messages})
        rx.on_message = lambda msg, t: tr.got(str(msg.get("body", "")), t)
        bad0 = rx.log.bad_signatures
        pids = {m.name: m.proc.pid, "kafka": self.kafka_pid}
        pause = not warmup and not self.args.no_pause
        if not warmup and self.args.no_pause:
            # the other way: the process consumes while the topic fills (as behind a connector), timed from
            # the first record stored; the broker's figure then includes taking the writes
            before, me0, t0 = snapshot(pids), os.times(), time.monotonic()
        if pause:
            os.kill(m.proc.pid, signal.SIGSTOP)  # nothing is consumed while the topic fills
        try:
            pdus = await preload(cfg, bootstrap, registry_url, messages, self.args.seed + self.serial)
        finally:
            if pause:
                await asyncio.sleep(0.2)
        spy = None
        if self.args.profile and pause:  # py-spy from before the process resumes (slows it: not timed)
            spy = PySpy(m.proc.pid, self.workdir / f"profile-{m.name}-{scenario}-{self.serial}.txt")
            spy.start()
            await asyncio.sleep(1)
        if warmup or pause:
            before, me0, t0 = snapshot(pids), os.times(), time.monotonic()
        if pause:
            os.kill(m.proc.pid, signal.SIGCONT)
        deadline = t0 + self.args.timeout
        done_at = None
        while time.monotonic() < deadline:
            if m.proc.poll() is not None:
                raise ProcessExited(
                    f"{m.name} exited with {m.proc.returncode} during {scenario} (its log: {m.log})"
                )
            if m.webhook:
                if len(tr.arrived) >= count:
                    done_at = max(tr.arrived.values())
                    break
            elif await asyncio.to_thread(committed_lag, bootstrap, m.group, RAW_TOPIC) == 0:
                done_at = time.monotonic()
                break
            await asyncio.sleep(0.02 if m.webhook else 0.1)
        after = snapshot(pids)
        me1 = os.times()
        if spy is not None:
            await asyncio.to_thread(spy.stop)
            self.profiles[f"{m.name}-{scenario}-{self.serial}"] = summarize_profile(spy.out)
        if warmup:
            if done_at is None:
                raise RuntimeError(f"{m.name}: warm-up not handled in {self.args.timeout:.0f}s")
            return
        await asyncio.sleep(0.5)  # late duplicates would show up now
        delivered = len(tr.arrived) if m.webhook else (count if done_at is not None else 0)
        span = max(1e-6, (done_at or time.monotonic()) - t0)
        load = loadavg()
        self.loadavg.append((time.strftime("%H:%M:%S", time.gmtime()), " ".join(load)))
        res = Result(
            system=m.name,
            scenario=scenario,
            offered=count,
            delivered=delivered,
            extra_deliveries=tr.extra_arrivals,
            wrong_text=tr.wrong_text + (rx.log.bad_signatures - bad0),
            seconds=round(span, 3),
            delivered_per_s=delivered / span,
            acked_per_s=0.0,
            pdus=pdus,
            latency_ms={},
            cpu_s=cpu_delta(before, after),
            harness_cpu_s=(me1.user + me1.system) - (me0.user + me0.system),
            rss_mb={k: v.rss_mb for k, v in after.items()},
        )
        self.results.append(res)
        print(table([res]).splitlines()[-1] + f" loadavg {' '.join(load)}", flush=True)
        if delivered < count:
            log(f"{m.name}/{scenario}: only {delivered} of {count} handled in {self.args.timeout:.0f}s")


def run_bench(args: argparse.Namespace) -> int:
    args.workdir_path = Path(args.workdir).resolve()
    args.workdir_path.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("BENCH_SMPP_PASSWORD", SIM_PASSWORD)
    bench = HotloopBench(args)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    asyncio.run(bench.run())
    results = bench.results
    print()
    print(f"command: {' '.join(sys.argv)}")
    print(f"started {started}, ended {time.strftime('%H:%M:%S UTC', time.gmtime())}; machine: {machine()}")
    print(f"loadavg after each run (UTC, 1/5/15 min): {bench.loadavg}")
    print(f"processes under test that exited during a run (the run was made again): {bench.exits or 'none'}")
    print(table(results))
    print("\nmin / median / max over the repeated runs (CPU ms per SMS: process, kafka, sum):")
    print(spread(results))
    print_profiles(bench.profiles)
    if args.json:
        out = {
            "command": " ".join(sys.argv),
            "machine": machine(),
            "loadavg": bench.loadavg,
            "exits": bench.exits,
            "results": [asdict(r) | {"cpu_ms_per_msg": r.cpu_ms_per_msg} for r in results],
            "profiles": bench.profiles,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    bad = [r for r in results if r.delivered < r.offered or r.wrong_text or r.extra_deliveries]
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hotloop", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="prototype vs the real worker, on a preloaded sms.raw.v1")
    b.add_argument("--count", type=int, default=5000, help="SMS per measured run")
    b.add_argument(
        "--mixes", type=lambda s: s.split(","), default=["single", "default"], help=f"of {list(MIXES)}"
    )
    b.add_argument(
        "--systems", type=lambda s: s.split(","), default=list(SYSTEMS), help=f"of {list(SYSTEMS)}"
    )
    b.add_argument("--repeat", type=int, default=1, help="runs of every system and mix")
    b.add_argument("--warmup", type=int, default=200, help="SMS handled (unmeasured) after each start")
    b.add_argument("--batch", type=int, default=500, help="prototype: records per consume()")
    b.add_argument(
        "--in-flight",
        type=int,
        default=16,
        help="prototype: POSTs in flight (the subscription's max_in_flight is 16)",
    )
    b.add_argument(
        "--idle", type=float, default=10.0, help="seconds of idle CPU after the first warm-up (0: none)"
    )
    b.add_argument(
        "--profile", action="store_true", help="py-spy the measured process (slows it; not for figures)"
    )
    b.add_argument(
        "--no-pause",
        action="store_true",
        help="consume while the topic fills instead of from a stored backlog",
    )
    b.add_argument("--partitions", type=int, default=6)
    b.add_argument("--timeout", type=float, default=300.0, help="seconds a run may take")
    b.add_argument("--seed", type=int, default=1000)
    b.add_argument("--workdir", default=str(REPO / ".work" / "bench-hotloop"))
    b.add_argument("--json", default="", help="also write results here")
    lp = sub.add_parser("loop", help="the prototype process (started by `bench`)")
    lp.add_argument("--config", required=True, help="smsflow config (the worker's)")
    lp.add_argument("--app-id", required=True, help="consumer group and changelog topic prefix")
    lp.add_argument("--batch", type=int, default=500)
    lp.add_argument("--in-flight", type=int, default=16)
    lp.add_argument("--no-webhook", action="store_true", help="no POST: a `delivered` event per message only")
    args = ap.parse_args(argv)
    for name in getattr(args, "mixes", []):
        if name not in MIXES:
            ap.error(f"unknown mix {name!r}")
    for name in getattr(args, "systems", []):
        if name not in SYSTEMS:
            ap.error(f"unknown system {name!r}")
    return run_bench(args) if args.command == "bench" else run_loop(args)


if __name__ == "__main__":
    sys.exit(main())
