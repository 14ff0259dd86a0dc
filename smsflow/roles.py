"""The long-running process roles, each started by one ``smsflow`` subcommand."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from typing import Any

from smsflow import event_loop, gc_tuning, metrics
from smsflow.config import Config
from smsflow.pace import Pace

log = logging.getLogger(__name__)
# The deliver stage's outputs producer (run_worker): delivery events, retry records, dead letters, route
# observations. Nobody waits for them one by one: the flush before each offset commit (the direct reader's,
# every streams.inbound_reader.COMMIT_INTERVAL_S = 1 s) sends what lingers, one request per partition, and
# this linger bounds the wait where no commit comes. A shorter one sent a request per partition every few
# events (0.6-0.9 produce requests per SMS at 50-200 SMS/s, docs/BENCHMARKS.md); the observations the
# double-list stage needs sooner are pushed by their own timer (KafkaDelivery.flush_observations).
DELIVERY_OUTPUTS_LINGER_MS = 1000

# The Faust worker's stages (`smsflow worker --stage ...`; all of them without --stage).
WORKER_STAGES = ("ingest", "deliver", "routes", "outbound")


def connector_producer_conf(cfg: Config, bootstrap: str) -> dict[str, Any]:
    """The connector's producer: acks=all, idempotent (``producer_conf``), lingering
    ``pipeline.connector_linger_ms`` (every SMS waits it before its carrier hears the resp)."""
    from smsflow.producer import producer_conf

    return producer_conf(bootstrap, **{"linger.ms": cfg.pipeline.connector_linger_ms})


def connector_gather(cfg: Config) -> Pace | None:
    """When the connector's producer gathers its records (``AsyncProducer``'s ``gather``): while more than
    ``pipeline.connector_gather_above_per_s`` are written per second, ``pipeline.connector_gather_ms``."""
    if cfg.pipeline.connector_gather_ms <= 0:
        return None
    pipeline = cfg.pipeline
    return Pace(pipeline.connector_gather_ms / 1000, pipeline.connector_gather_above_per_s, time.monotonic)


def stage_args_beside_ingest_loop() -> list[str]:
    """The ``--stage`` arguments of a worker run beside ``smsflow ingest`` (the default deployment, ADR 0007):
    every stage but ingest."""
    return [arg for stage in WORKER_STAGES if stage != "ingest" for arg in ("--stage", stage)]


def run_worker(cfg: Config, roles: set[str], loglevel: str = "warning") -> None:
    """A Faust worker running the given stages. Blocks; stops cleanly on SIGINT/SIGTERM."""
    import faust

    from smsflow.delivery.callbacks import CallbackSigner
    from smsflow.delivery.egress import AddressPolicy
    from smsflow.delivery.engine import DeliveryEngine
    from smsflow.delivery.policy import RetryPolicy, RetrySchedule
    from smsflow.delivery.sender import SenderConfig, WebhookSender
    from smsflow.producer import BufferedProducer, producer_conf
    from smsflow.subscriptions.secretbox import SecretBox
    from smsflow.telemetry import setup_tracing
    from streams.deliver import KafkaDelivery
    from streams.liveness import Liveness, StartupTimeline

    startup = StartupTimeline()
    startup.mark("imports done")
    gc_tuning.configure(cfg.gc.threshold0, cfg.gc.freeze_after_s, "worker")
    event_loop.install(cfg.event_loop)  # before Faust makes its loop
    bootstrap, registry = cfg.require_endpoints()
    if "ingest" in roles:
        from smsflow.ingest.loop import ingest_group, wait_for_other_ingest
        from streams.liveness import EXIT_CANNOT_PROCESS

        wait_s = cfg.worker.session_timeout_s + 5
        loops = wait_for_other_ingest(bootstrap, ingest_group(cfg.app_id), wait_s, "direct ingest loops")
        if loops:
            log.error(
                "worker: direct ingest loops (smsflow ingest) are reading sms.raw.v1 of app %s (%s); run "
                "this worker without the ingest stage (--stage deliver --stage routes --stage outbound), or "
                "stop them first",
                cfg.app_id,
                ", ".join(loops),
            )
            sys.exit(EXIT_CANNOT_PROCESS)
    if "deliver" in roles:
        refuse_two_inbound_readers(cfg, bootstrap)
    setup_tracing(cfg.tracing, "worker")
    app, ctx = _build_app_with_topics(cfg, roles, bootstrap, registry)
    startup.mark("topics checked, app built")
    liveness = Liveness(app, startup=startup, max_not_ready_s=cfg.worker.max_not_ready_s)
    ctx.liveness = liveness
    if ctx.inbound_reader is not None:
        liveness.require(ctx.inbound_reader.not_ready)
    metrics.set_health(liveness.ready)
    metrics.serve(cfg.metrics.worker_port, cfg.metrics.host)
    if "ingest" in roles:
        metrics.register_stats("smsflow_ingest", "ingest stage", lambda: getattr(ctx.ingest, "stats", None))
    if "deliver" in roles:
        metrics.register_stats(
            "smsflow_delivery", "delivery stage", lambda: getattr(ctx.delivery, "stats", None)
        )
        metrics.register_stats(
            "smsflow_inbound_reader",
            "direct reader of sms.inbound.v1",
            lambda: getattr(ctx.inbound_reader, "stats", None),
        )
    ctx.serde.warm_up()
    startup.mark("schemas fetched")
    if "deliver" in roles or ("routes" in roles and cfg.routing.stage_runs):
        from smsflow.subscriptions.topic_store import TopicSubscriptionStore, seed_subscriptions

        store = TopicSubscriptionStore(bootstrap)
        ctx.subscriptions = store

        async def _start_store() -> None:
            await store.start()
            if "deliver" in roles:
                await seed_subscriptions(store, cfg.subscriptions)
            ctx.subscriptions_ready.set()
            startup.mark("subscriptions loaded")

        ctx.loading_tasks.append(_start_store)

        @app.on_before_shutdown.connect  # type: ignore[arg-type]
        async def _close_store(app: Any, **kwargs: Any) -> None:
            await store.stop()

    if "deliver" in roles:
        assert ctx.subscriptions is not None
        store = ctx.subscriptions
        sender = WebhookSender(
            SenderConfig(
                https_only=cfg.webhooks.https_only,
                ca_bundle=cfg.webhooks.ca_bundle,
                address_policy=AddressPolicy() if cfg.webhooks.block_private_addresses else None,
            )
        )
        wh = cfg.webhooks
        policy = RetryPolicy(
            RetrySchedule(
                delays_s=tuple(wh.retry_delays_s),
                jitter=wh.retry_jitter,
                max_age_s=wh.max_age_s,
                deferred_delay_s=wh.deferred_delay_s,
            )
        )
        engine = DeliveryEngine(sender, store=store, policy=policy)
        # outbound status callbacks are signed with a secret per owner derived from the secrets key ring
        ctx.callbacks = CallbackSigner(SecretBox.from_env(), cfg.outbound.callback_timeout_s)
        # the delivery stage's outputs by a confluent-kafka producer (acks=all, idempotent): a record costs
        # the loop one produce call instead of Faust's and aiokafka's send path (~19% of the deliver stage's
        # CPU, docs/BENCHMARKS.md); Faust's producer flush, before every commit, flushes it too
        outputs = BufferedProducer(
            producer_conf(
                bootstrap,
                **{
                    # nobody waits for these records one by one (the flush before a commit sends what is
                    # lingering at once): batching them costs no SMS latency and saves broker requests
                    "linger.ms": max(cfg.worker.producer_linger_ms, DELIVERY_OUTPUTS_LINGER_MS),
                    # a broker outage this long delays commits (each waits for its flush), not the process
                    "message.timeout.ms": 120000,
                    "request.timeout.ms": 10000,
                },
            )
        )
        delivery = KafkaDelivery(ctx, engine, store, producer=outputs, routing=cfg.routing)

        async def flush_outputs() -> None:
            await delivery.flush_observations()  # the tallied webhook attempts go with this flush
            await outputs.flush()

        app.flush_with_producer(flush_outputs)
        ctx.delivery = delivery

        @app.on_before_shutdown.connect  # type: ignore[arg-type]
        async def _close(app: Any, **kwargs: Any) -> None:
            await sender.close()

    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)

    @app.timer(interval=1.0)
    async def _liveness_beat() -> None:
        liveness.beat()

    @app.task
    async def _quiet_client_loggers() -> None:
        # Faust sets handler levels only: aiokafka and faust still build every debug record on the hot path
        # (4-5% of the worker's CPU, docs/BENCHMARKS.md). Give the loggers themselves a level.
        level = logging.getLevelName(loglevel.upper())
        for name in ("aiokafka", "faust", "mode"):
            logging.getLogger(name).setLevel(
                max(level if isinstance(level, int) else logging.WARNING, logging.INFO)
            )

    liveness.watch()
    worker.execute_from_commandline()


def _build_app_with_topics(cfg: Config, roles: set[str], bootstrap: str, registry: str) -> tuple[Any, Any]:
    """Build the app once every topic it reads or writes exists with the right partitions, or exit non-zero.

    Faust creates its changelog topics itself, lazily, and checks their partition count against the source
    topic on the first table write: on a loaded machine the new topic's metadata could still miss partitions
    (no leader yet), Faust raised PartitionsMismatch inside the agent, and the agent stayed dead while the
    process looked alive. Creating them here, and waiting until every partition has a leader, removes that
    race; a cluster that still is not ready after ``worker.start_attempts`` tries is an error, said so.
    """
    from smsflow.schemas import RAW_TOPIC
    from smsflow.topics import TopicSpec, ensure_topics, partition_count, partition_counts
    from streams.app import build_app
    from streams.liveness import EXIT_CANNOT_PROCESS
    from streams.topology import PUNCTUATION_RETENTION_S

    attempts = cfg.worker.start_attempts
    for attempt in range(1, attempts + 1):
        try:
            partitions = None
            if "ingest" in roles:
                # ticks and ingest tables are co-partitioned with sms.raw.v1 as it really is on the cluster
                partitions = partition_count(bootstrap, RAW_TOPIC)
            app, ctx, topology = build_app(cfg, bootstrap, registry, roles, partitions=partitions)
            specs = [
                TopicSpec(
                    table.changelog_topic.get_topic_name(),
                    table.partitions or app.conf.topic_partitions,
                    cleanup_policy="compact",
                    replication_factor=cfg.kafka.replication_factor,
                )
                for table in app.tables.values()
            ]
            if topology.punctuation is not None and partitions is not None:
                name = topology.punctuation.get_topic_name()
                retention_ms = int(PUNCTUATION_RETENTION_S * 1000)
                specs.append(TopicSpec(name, partitions, retention_ms=retention_ms))
            if "routes" in roles and cfg.routing.stage_runs:
                from streams.routes import routes_topic_specs

                specs += routes_topic_specs(cfg.app_id)
            if topology.outbound_punctuation is not None:
                name = topology.outbound_punctuation.get_topic_name()
                retention_ms = int(PUNCTUATION_RETENTION_S * 1000)
                specs.append(TopicSpec(name, ctx.partitions, retention_ms=retention_ms))
            ensure_topics(bootstrap, specs)
            counts = partition_counts(bootstrap, [s.name for s in specs])
            wrong = [
                f"{s.name} has {counts[s.name]} partitions, wants {s.partitions}"
                for s in specs
                if counts[s.name] != s.partitions
            ]
            if wrong:
                raise RuntimeError("; ".join(wrong))
            return app, ctx
        except Exception as exc:
            if attempt == attempts:
                msg = f"smsflow worker: topics not ready after {attempts} attempts: {exc}"
                log.critical(msg)
                print(msg, file=sys.stderr, flush=True)
                sys.exit(EXIT_CANNOT_PROCESS)
            delay = min(2.0**attempt, 30.0)
            log.warning(
                "topics not ready (attempt %d of %d): %s; retrying in %.0f s", attempt, attempts, exc, delay
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


async def run_connector(cfg: Config) -> None:
    from connectors.smpp.connector import SmppConnector
    from connectors.smpp.submit import SubmitPath
    from smsflow.producer import AsyncProducer
    from smsflow.serde import Serde, registry_client
    from smsflow.telemetry import setup_tracing, shutdown_tracing

    bootstrap, registry = cfg.require_endpoints()
    gc_tuning.configure(cfg.gc.threshold0, cfg.gc.freeze_after_s, "connector")
    setup_tracing(cfg.tracing, "connector")
    metrics.serve(cfg.metrics.connector_port, cfg.metrics.host)
    serde = Serde(registry_client(registry, cfg.registry_credentials()))
    await asyncio.to_thread(serde.warm_up)
    producer = AsyncProducer(connector_producer_conf(cfg, bootstrap), gather=connector_gather(cfg))
    connector = SmppConnector(cfg.carriers, producer, serde, cfg.routing)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sessions: dict[str, list[Any]] = {}
    for link in connector.links:
        sessions.setdefault(link.carrier.id, []).append(link.session)
    submits = SubmitPath(cfg.app_id, bootstrap, cfg.carriers, sessions, producer, cfg.outbound, serde)
    await connector.start()
    await submits.start()
    log.info("connector: %d sessions starting", len(connector.links))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({stopped, submits.ended}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    failure = submits.failure()
    await submits.stop()
    await connector.stop()
    await producer.close()
    shutdown_tracing()
    if failure is not None:  # MTs would wait unread while receiving looked healthy: a restart reads them
        from streams.liveness import EXIT_CANNOT_PROCESS

        log.critical(
            "connector: the submit path stopped (%s); exiting with status %d", failure, EXIT_CANNOT_PROCESS
        )
        sys.exit(EXIT_CANNOT_PROCESS)


async def run_api(cfg: Config) -> None:
    """The subscriptions REST API (see smsflow/api/server.py). Blocks until SIGINT/SIGTERM."""
    from smsflow.api.server import serve_api

    await serve_api(cfg)


def refuse_two_inbound_readers(cfg: Config, bootstrap: str) -> None:
    """Exit (code 3, with the reason) when the other kind of sms.inbound.v1 reader runs in this deployment:
    Faust deliver agents (group ``app_id``) and direct readers (``<app_id>-deliver``) would each deliver every
    message (streams/inbound_reader.py). Waits one session timeout + 5 s for members that just stopped."""
    from smsflow.ingest.loop import wait_for_other_ingest
    from smsflow.schemas import INBOUND_TOPIC
    from streams.inbound_reader import inbound_reader_group
    from streams.liveness import EXIT_CANNOT_PROCESS

    direct = cfg.worker.inbound_reader == "direct"
    other_group = inbound_reader_group(cfg.app_id, "faust" if direct else "direct")
    what = "workers with Faust's deliver agent" if direct else "workers with the direct inbound reader"
    wait_s = cfg.worker.session_timeout_s + 5
    others = wait_for_other_ingest(bootstrap, other_group, wait_s, what, topic=INBOUND_TOPIC)
    if others:
        log.error(
            "worker: %s are reading sms.inbound.v1 of app %s (%s); give every worker the same "
            "worker.inbound_reader (this one: %r), stopping the others first",
            what,
            cfg.app_id,
            ", ".join(others),
            cfg.worker.inbound_reader,
        )
        sys.exit(EXIT_CANNOT_PROCESS)


def refuse_unsupported_loop_settings(cfg: Config) -> None:
    """Settings of the Faust ingest stage the loop does not do yet: refused with the field named, rather than
    accepted and ignored (its tables live in memory, restored from the changelog on each assignment)."""
    from smsflow.config import ConfigError

    if cfg.worker.standby_replicas:
        raise ConfigError(
            "worker.standby_replicas: the direct ingest loop keeps no standby copies of its tables yet "
            "(ADR 0007 step 4); give `smsflow ingest` a config with 0, or use the Faust ingest stage"
        )
    if cfg.worker.store != "memory":
        raise ConfigError(
            f"worker.store: {cfg.worker.store!r} is not supported by the direct ingest loop (its tables are "
            "in memory, restored from the changelog on assignment); give `smsflow ingest` a config with "
            "'memory', or use the Faust ingest stage"
        )


def run_ingest_loop(cfg: Config, batch_max: int = 500, loglevel: str = "warning") -> int:
    """The direct ingest loop (smsflow/ingest/loop.py) until SIGTERM/SIGINT. Returns the exit code: 0, or
    ``EXIT_CANNOT_PROCESS`` when the platform failed (nothing committed past what is stored)."""
    from smsflow.ingest.loop import DirectIngest, IngestLoopFailed, changelog_specs, wait_for_other_ingest
    from smsflow.ingest.processor import ingest_settings
    from smsflow.schemas import RAW_TOPIC
    from smsflow.serde import Serde, registry_client
    from smsflow.telemetry import setup_tracing, shutdown_tracing
    from smsflow.topics import ensure_topics, partition_count
    from streams.liveness import EXIT_CANNOT_PROCESS

    configure_logging(loglevel)
    refuse_unsupported_loop_settings(cfg)
    bootstrap, registry = cfg.require_endpoints()
    gc_tuning.configure(cfg.gc.threshold0, cfg.gc.freeze_after_s, "ingest loop")
    setup_tracing(cfg.tracing, "ingest")
    wait_s = cfg.worker.session_timeout_s + 5
    faust_ingest = wait_for_other_ingest(bootstrap, cfg.app_id, wait_s, "Faust workers with the ingest stage")
    if faust_ingest:
        log.error(
            "ingest loop: Faust workers with the ingest stage are reading sms.raw.v1 of app %s (%s); stop "
            "them, or restart them with --stage deliver --stage routes --stage outbound, first",
            cfg.app_id,
            ", ".join(faust_ingest),
        )
        return EXIT_CANNOT_PROCESS
    # the tables' changelogs are co-partitioned with sms.raw.v1 as it really is on the cluster
    ensure_topics(bootstrap, changelog_specs(cfg, partition_count(bootstrap, RAW_TOPIC)))
    serde = Serde(registry_client(registry, cfg.registry_credentials()))
    serde.warm_up()
    loop = DirectIngest(cfg, bootstrap, serde, ingest_settings(cfg), batch_max=batch_max)
    metrics.set_health(lambda: (loop.ready, "ok" if loop.ready else "no partitions assigned yet"))
    metrics.register_stats("smsflow_ingest", "ingest stage", lambda: loop.processor.stats)
    metrics.register_stats("smsflow_ingest_loop", "direct ingest loop", lambda: loop.stats)
    metrics.serve(cfg.metrics.ingest_port, cfg.metrics.host)
    loop.install_signal_handlers()
    try:
        loop.run()
    except IngestLoopFailed as exc:
        log.error("ingest loop: %s; exiting to restart from the committed offsets", exc)
        return EXIT_CANNOT_PROCESS
    finally:
        shutdown_tracing()
    return 0


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    with contextlib.suppress(Exception):
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
