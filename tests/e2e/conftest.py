"""Whole-pipeline fixtures: a fresh broker per test (topics and consumer groups never leak between tests),
the embedded registry, and the real processes (`python -m smsflow worker|connector`) users run."""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from devkit.demo.pipeline import RoleProcess, child_env
from devkit.demo.receiver import WebhookReceiver
from devkit.local.kafka import LocalKafka
from devkit.registry import RegistryThread
from devkit.simulator.smsc import SimulatedSmsc
from smsflow.delivery.signing import generate_secret
from smsflow.roles import stage_args_beside_ingest_loop
from smsflow.subscriptions.secretbox import ENV_KEYS, SecretBox
from smsflow.topics import ensure_topics, load_manifest

PASSWORD = "sim-pass"
# Which ingest a "worker" is. "loop", the default deployment (README): the direct ingest loop (`smsflow
# ingest`, ADR 0007) beside a worker without the ingest stage, started, stopped, paused and killed as a pair
# under the worker's name (the loop's process is "<name>-ingest"). "faust": `smsflow worker` with every stage,
# the Faust ingest agent. SMSFLOW_E2E_INGEST=faust runs the whole suite that way; a test may ask for one
# (pipeline(ingest=...)).
INGEST_MODE = os.environ.get("SMSFLOW_E2E_INGEST", "loop")
INGEST_MODES = ("loop", "faust")
if INGEST_MODE not in INGEST_MODES:
    raise ValueError(f"SMSFLOW_E2E_INGEST must be 'loop' or 'faust', not {INGEST_MODE!r}")

# Who reads sms.inbound.v1 in a worker (worker.inbound_reader): "direct", the worker's own confluent-kafka
# consumer (streams/inbound_reader.py), as the default deployment (config/demo.yaml) does, or "faust", the
# deliver agent. SMSFLOW_E2E_INBOUND_READER runs the whole suite one way; a test may ask for one
# (pipeline(inbound_reader=...)).
INBOUND_READER = os.environ.get("SMSFLOW_E2E_INBOUND_READER", "direct")
INBOUND_READERS = ("faust", "direct")
if INBOUND_READER not in INBOUND_READERS:
    raise ValueError(f"SMSFLOW_E2E_INBOUND_READER must be 'faust' or 'direct', not {INBOUND_READER!r}")


def worker_processes(key: str, config: Path, mode: str) -> list[tuple[str, str, list[str]]]:
    """(process key, role, argv) of what runs as the worker ``key`` with ingest ``mode``."""
    base = ["--config", str(config), "--loglevel", "info"]
    if mode == "loop":
        return [
            (f"{key}-ingest", "ingest", ["ingest", *base]),
            (key, "worker", ["worker", *base, *stage_args_beside_ingest_loop()]),
        ]
    return [(key, "worker", ["worker", *base])]


@dataclass
class Stack:
    kafka: LocalKafka
    registry: RegistryThread
    bootstrap: str
    registry_url: str


@pytest.fixture
def stack(tmp_path: Path) -> Any:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.fail("e2e tests start their own broker per test; unset KAFKA_BOOTSTRAP_SERVERS")
    # C1-only: a broker that lives for one test must not spend the test compiling (devkit/local/kafka.py)
    broker = LocalKafka(tmp_path / "kafka", quick_jit=True)
    broker.fetch()
    broker.format()
    broker.start()
    registry = None
    try:
        broker.wait_ready(timeout=90)
        ensure_topics(broker.bootstrap, load_manifest())
        registry = RegistryThread(broker.bootstrap)
        url = registry.start()
        yield Stack(broker, registry, broker.bootstrap, url)
    finally:
        if registry is not None:
            registry.stop()
        # its data is a temporary folder, thrown away with the test: a graceful stop (4-7 s) buys nothing
        broker.kill()


@dataclass
class Pipeline:
    stack: Stack
    workdir: Path
    smsc: SimulatedSmsc
    receiver: WebhookReceiver
    config_path: Path
    env: dict[str, str]
    procs: dict[str, RoleProcess] = field(default_factory=dict)
    env_app_id: str = ""
    ingest_mode: str = INGEST_MODE

    def start(self, *names: str) -> None:
        for name in names or ("worker", "connector"):
            if name == "worker":
                self.start_worker(name, self.config_path)
                continue
            self._spawn(name, name, [name, "--config", str(self.config_path)])

    def start_worker(self, key: str, config: Path) -> None:
        """The worker ``key`` with ``config``: one process, or a loop and a worker (``ingest_mode``)."""
        for proc_key, role, args in worker_processes(key, config, self.ingest_mode):
            self._spawn(proc_key, role, args)

    def _spawn(self, key: str, role: str, args: list[str]) -> None:
        log = self.workdir / "logs" / f"{key}-{len(self.procs)}-{time.monotonic_ns()}.log"
        p = RoleProcess(role, args, self.env, log)
        p.start()
        self.procs[key] = p

    def processes_of(self, name: str) -> list[RoleProcess]:
        """The processes started under ``name``: a worker in loop mode is two."""
        return [self.procs[k] for k in (f"{name}-ingest", name) if k in self.procs]

    def stop(self, name: str) -> None:
        for proc in self.processes_of(name):
            proc.stop()

    def kill(self, name: str) -> None:
        """kill -9; a worker in loop mode loses both its processes at once."""
        for proc in self.processes_of(name):
            proc.kill()

    def logs(self) -> str:
        out = []
        for f in sorted((self.workdir / "logs").glob("*.log")):
            out.append(f"--- {f.name}\n{f.read_text(errors='replace')[-4000:]}")
        return "\n".join(out)

    async def drain_and_check_each_sms_once(self) -> int:
        """After the traffic: the carrier has every PDU answered, the receiver every SMS; then none under two
        webhook-ids, none incomplete, the texts exactly the carrier's, every signature good. Returns how many
        SMS the carrier sent."""
        assert await self.smsc.drain(180), self.logs()
        expected = len(self.smsc.accepted)
        await self.wait_delivered(expected, 180)
        await asyncio.sleep(3)  # any late extra delivery (a second id) shows up before counting
        msgs = self.receiver.log.messages
        bodies = collections.Counter(m["body"] for m in msgs.values())
        doubled = {b: c for b, c in bodies.items() if c > 1}
        incomplete = [m for m in msgs.values() if m.get("incomplete")]
        assert not doubled, f"{len(doubled)} SMS delivered under two webhook-ids: {list(doubled)[:3]}"
        assert not incomplete, f"{len(incomplete)} delivered not intact: {incomplete[:2]}"
        assert sorted(bodies) == sorted(s.text for s in self.smsc.accepted)
        assert self.receiver.log.bad_signatures == 0
        return expected

    async def wait_delivered(self, count: int, timeout: float) -> None:
        if not await self.receiver.wait_for(count, timeout):
            raise AssertionError(
                f"only {len(self.receiver.log.messages)} of {count} delivered in {timeout}s; "
                f"smsc={self.smsc.stats}\n{self.logs()}"
            )


PipelineFactory = Callable[..., Any]


@pytest.fixture
async def pipeline(stack: Stack, tmp_path: Path) -> AsyncIterator[PipelineFactory]:
    made: list[Pipeline] = []

    async def make(
        carriers: int = 1,
        sessions: int = 1,
        pipeline_cfg: dict[str, Any] | None = None,
        dup_ratio: float = 0.0,
        bind: str = "transceiver",
        smsc_port: int | None = None,
        carrier_port: int | None = None,
        tracing: dict[str, Any] | None = None,
        webhooks: dict[str, Any] | None = None,
        api: dict[str, Any] | None = None,
        extra_env: dict[str, str] | None = None,
        carrier_extra: dict[str, Any] | None = None,
        routing: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        ingest: str = INGEST_MODE,
        inbound_reader: str = INBOUND_READER,
        **smsc_kw: Any,
    ) -> Pipeline:
        """``carriers`` accounts on the simulated SMSC (one route each), ``sessions`` binds per carrier.
        ``carrier_port`` points the carriers at another SMSC (a third-party peer) instead; ``carrier_extra``
        adds or replaces carrier settings (a profile, reconnect timing). ``ingest``: "loop" or "faust"
        (INGEST_MODE); ``inbound_reader``: "faust" or "direct" (INBOUND_READER)."""
        assert ingest in INGEST_MODES, ingest
        assert inbound_reader in INBOUND_READERS, inbound_reader
        secret = generate_secret()
        accounts = {f"acct{i}": PASSWORD for i in range(carriers)}
        smsc = SimulatedSmsc(accounts, dup_ratio=dup_ratio, retry_delay_s=0.5, port=smsc_port or 0, **smsc_kw)
        await smsc.start()
        rx = WebhookReceiver(secret)
        url = await rx.start()
        cfg = {
            "app_id": f"e2e-{int(time.time() * 1000) % 10**8}",
            "kafka": {"partitions": 6},
            "carriers": [
                {
                    "id": f"carrier-{i}",
                    "route_id": f"route-{i}",
                    "host": "127.0.0.1",
                    "port": carrier_port or smsc.port,
                    "system_id": f"acct{i}",
                    "sessions": sessions,
                    "password_env": "E2E_SMPP_PASSWORD",
                    "bind": bind,
                    "enquire_link_s": 5,
                    "response_timeout_s": 5,
                    "reconnect": {"initial_s": 0.2, "max_s": 2},
                    "default_region": "HK",
                    **(carrier_extra or {}),
                }
                for i in range(carriers)
            ],
            "subscriptions": [{"id": "e2e-hook", "url": url, "secret_env": "E2E_WEBHOOK_SECRET"}],
            "pipeline": {"tick_interval_s": 0.5, **(pipeline_cfg or {})},
            "webhooks": {"block_private_addresses": False},
            "data_dir": str(tmp_path / "data"),
            "worker": {"inbound_reader": inbound_reader},
        }
        if tracing is not None:
            cfg["tracing"] = tracing
        if webhooks is not None:  # e.g. a short retry_delays_s, a ca_bundle
            cfg["webhooks"] = {**cfg["webhooks"], **webhooks}
        if api is not None:  # the `smsflow api` role: host, port, admin_key_env
            cfg["api"] = api
        if routing is not None:  # routes and double-list policies over these carriers (docs/double-list.md)
            cfg["routing"] = routing
        if metrics is not None:  # e.g. {"worker_port": n}: /metrics of a role
            cfg["metrics"] = metrics
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        env = child_env(
            stack.bootstrap,
            stack.registry_url,
            {
                "E2E_SMPP_PASSWORD": PASSWORD,
                "E2E_WEBHOOK_SECRET": secret,
                ENV_KEYS: f"t:{SecretBox.generate_key()}",
                **(extra_env or {}),
            },
        )
        p = Pipeline(stack, tmp_path, smsc, rx, path, env, env_app_id=cfg["app_id"], ingest_mode=ingest)
        made.append(p)
        return p

    try:
        yield make
    finally:
        for p in made:
            # The test is over and its broker is thrown away next: SIGKILL, not a graceful stop (several
            # seconds per process and test; the tests that are about stopping stop their processes themselves)
            for proc in reversed(list(p.procs.values())):
                proc.kill()
                proc.stop()  # closes its log
            await p.smsc.stop()
            await p.receiver.stop()
