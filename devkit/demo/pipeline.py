"""``smsflow run``: the whole pipeline on one machine, with live progress.

Starts (unless given endpoints) a local Kafka broker, the embedded schema registry and Zipkin; applies the
topics manifest; starts the connector and a worker as their own processes (exactly as an operator would run
them); runs a simulated carrier SMSC and a demo webhook in this process; offers traffic at a fixed rate and
shows received / delivered / latency until Ctrl-C or ``--duration``. Everything is stopped on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from devkit.demo.feed import feed
from devkit.demo.keys import QUIT_KEY, FaultCycle, KeyReader, fault_spec
from devkit.demo.receiver import WebhookReceiver
from devkit.demo.route_view import RouteView
from devkit.simulator.smsc import SimulatedSmsc
from devkit.simulator.traffic import TrafficMix
from smsflow.config import Config
from smsflow.roles import stage_args_beside_ingest_loop

REPO = Path(__file__).resolve().parent.parent.parent
console = Console(stderr=True)


@dataclass
class DemoOptions:
    rate: float = 20.0
    duration: float = 0.0
    multipart_ratio: float = 0.2
    dup_ratio: float = 0.05
    cross_route_ratio: float = 0.05
    workdir: Path = Path(".work/run")
    zipkin: bool = True
    primary_fault: str | None = None  # a fault of devkit/simulator/faults.py on the primary's carrier
    fault_after_s: float = 60.0
    fault_for_s: float | None = 120.0


@dataclass
class LocalServices:
    """Kafka, registry and Zipkin for one run; each started only when no endpoint is configured."""

    workdir: Path
    bootstrap: str | None = None
    registry_url: str | None = None
    zipkin_url: str | None = None
    _kafka: Any = None
    _registry: Any = None
    _zipkin: Any = None

    async def start(self, want_zipkin: bool) -> None:
        if not self.bootstrap:
            from devkit.local.kafka import LocalKafka

            console.print("[bold]kafka[/]: fetching jars (first run only) and starting a local KRaft broker…")
            self._kafka = LocalKafka(self.workdir / "kafka")
            await asyncio.to_thread(self._kafka.fetch)
            await asyncio.to_thread(self._kafka.start)
            await asyncio.to_thread(self._kafka.wait_ready, 120)
            self.bootstrap = self._kafka.bootstrap
        from smsflow.topics import ensure_topics, load_manifest

        await asyncio.to_thread(ensure_topics, self.bootstrap, load_manifest())
        if not self.registry_url:
            from devkit.registry.server import EmbeddedRegistry

            self._registry = EmbeddedRegistry()
            self.registry_url = await self._registry.start(self.bootstrap)
        if want_zipkin and not self.zipkin_url:
            try:
                from devkit.local.zipkin import LocalZipkin

                console.print("[bold]zipkin[/]: fetching (first run only) and starting the tracing UI…")
                self._zipkin = LocalZipkin(self.workdir / "zipkin")
                await asyncio.to_thread(self._zipkin.fetch)
                await asyncio.to_thread(self._zipkin.start)
                await asyncio.to_thread(self._zipkin.wait_ready, 120)
                self.zipkin_url = self._zipkin.url
            except Exception as exc:  # tracing UI is a convenience: say why, run on
                console.print(f"[yellow]zipkin not started: {exc}[/]")
                self._zipkin = None

    async def stop(self) -> None:
        if self._registry is not None:
            await self._registry.stop()
        if self._zipkin is not None:
            await asyncio.to_thread(self._zipkin.stop)
        if self._kafka is not None:
            await asyncio.to_thread(self._kafka.stop)


@dataclass
class RoleProcess:
    """One ``python -m smsflow <role>`` child with its log file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: Any = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smsflow", *self.args],
            env=self.env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, for crash-safety tests."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def child_env(bootstrap: str, registry_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "SCHEMA_REGISTRY_URL": registry_url, "PYTHONUNBUFFERED": "1"}
    )
    env.update(extra or {})
    return env


def ensure_demo_secrets(workdir: Path) -> dict[str, str]:
    """Secrets the demo needs: from the environment, else generated once and kept (mode 0600) in the
    workdir, so a rerun can still open what the previous run sealed into its topics. Never printed."""
    from smsflow.delivery.signing import generate_secret
    from smsflow.subscriptions.secretbox import ENV_KEYS, SecretBox

    store = workdir / "demo-secrets.yaml"
    kept: dict[str, str] = yaml.safe_load(store.read_text()) if store.exists() else {}
    makers = {
        "SMSFLOW_SIM_PASSWORD": lambda: secrets.token_hex(4),
        "SMSFLOW_DEMO_WEBHOOK_SECRET": generate_secret,
        ENV_KEYS: lambda: f"demo:{SecretBox.generate_key()}",
    }
    out = {}
    for name, make in makers.items():
        out[name] = os.environ.get(name) or kept.get(name) or make()
        os.environ[name] = out[name]
    store.touch(mode=0o600)
    store.write_text(yaml.safe_dump(out))
    return out


def write_runtime_config(
    base: Path, dest: Path, smsc_port: int, receiver_url: str, zipkin_url: str | None
) -> Path:
    data = yaml.safe_load(base.read_text(encoding="utf-8"))
    for c in data.get("carriers", []):
        c["host"], c["port"] = "127.0.0.1", smsc_port
    for s in data.get("subscriptions", []):
        s["url"] = receiver_url
    if zipkin_url:
        data.setdefault("tracing", {})["zipkin_url"] = zipkin_url.rstrip("/") + "/api/v2/spans"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return dest


@dataclass
class Progress:
    started: float = field(default_factory=time.monotonic)

    def table(
        self,
        offered: int,
        smsc: SimulatedSmsc,
        rx: WebhookReceiver,
        procs: list[RoleProcess],
        zipkin: str | None,
        routes: RouteView | None = None,
        fault: str = "",
        keys: str = "",
    ) -> Table:
        lat = sorted(rx.log.latencies_ms)
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
        title = f"smsflow — live local pipeline ({time.monotonic() - self.started:.0f}s)"
        if keys:
            # the footer row can be below a small terminal's last line (Live crops): say the key up here too
            title += f" · {escape(keys.split(' → ')[0])}"
        t = Table(title=title, min_width=60)
        t.add_column("what")
        t.add_column("value", justify="right")
        t.add_row("SMS offered by the simulated carrier", str(offered))
        t.add_row("SMS acknowledged to the carrier (stored in Kafka)", str(smsc.stats.logical_accepted))
        t.add_row(
            "PDUs sent / retransmitted by the carrier", f"{smsc.stats.sent} / {smsc.stats.retransmissions}"
        )
        t.add_row("temporary errors answered (carrier retries)", str(smsc.stats.temp_errors))
        t.add_row("SMS delivered to the webhook (distinct ids)", str(len(rx.log.messages)))
        t.add_row("redeliveries (same webhook-id)", str(rx.log.redeliveries))
        t.add_row("bad signatures", str(rx.log.bad_signatures))
        t.add_row("latency carrier→webhook p50 / p99 (ms)", f"{p50:.1f} / {p99:.1f}")
        t.add_row("processes", ", ".join(f"{p.name}:{'up' if p.alive else 'DOWN'}" for p in procs))
        for what, value in routes.rows() if routes is not None else ():
            t.add_row(what, value)
        if fault:
            t.add_row("injected fault", fault)
        if keys:
            t.add_row("keys", escape(keys))  # "[f]" is text, not Rich markup
        if zipkin:
            t.add_row("tracing UI", zipkin.rstrip("/") + "/zipkin/")
        return t


async def run_demo(cfg: Config, config_path: Path, opts: DemoOptions) -> int:
    workdir = opts.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env_secrets = ensure_demo_secrets(workdir)
    services = LocalServices(workdir, cfg.bootstrap_servers(), cfg.registry_url(), None)
    procs: list[RoleProcess] = []
    smsc = SimulatedSmsc(
        {c.system_id: env_secrets["SMSFLOW_SIM_PASSWORD"] for c in cfg.carriers},
        dup_ratio=opts.dup_ratio,
        cross_route_ratio=opts.cross_route_ratio,
        test_numbers=[n for r in cfg.routing.routes for n in r.test_numbers],
        probe_latency_s=1.0,
    )
    routes: RouteView | None = None
    fault_note = ""
    flag_fault_done = False
    keys = KeyReader()  # reads only when stdin is a terminal: a headless run never blocks on it
    cycle = FaultCycle()
    primary_account = _primary_account(cfg)
    if opts.primary_fault is not None and primary_account is None:
        console.print("[red]--primary-fault needs a routing policy whose primary is a carrier route[/]")
        return 2
    rx = WebhookReceiver(env_secrets["SMSFLOW_DEMO_WEBHOOK_SECRET"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    offered = 0
    try:
        await services.start(opts.zipkin)
        assert services.bootstrap and services.registry_url
        await smsc.start()
        url = await rx.start()
        runtime = write_runtime_config(
            config_path, workdir / "config.yaml", smsc.port, url, services.zipkin_url
        )
        env = child_env(services.bootstrap, services.registry_url)
        # the default deployment (README, docker-compose.yml): the direct ingest loop beside a worker running
        # the other stages (ADR 0007)
        stages = stage_args_beside_ingest_loop()
        procs = [
            RoleProcess("ingest", ["ingest", "--config", str(runtime)], env, workdir / "logs" / "ingest.log"),
            RoleProcess(
                "worker", ["worker", "--config", str(runtime), *stages], env, workdir / "logs" / "worker.log"
            ),
            RoleProcess(
                "connector", ["connector", "--config", str(runtime)], env, workdir / "logs" / "connector.log"
            ),
        ]
        for p in procs:
            p.start()
        console.print(
            f"kafka {services.bootstrap} · registry {services.registry_url} · "
            f"simulated SMSC :{smsc.port} · webhook {url} · logs {workdir / 'logs'}"
        )
        console.print("waiting for the connector to bind…")
        await smsc.wait_bound(120)
        mix = TrafficMix(seed=int(time.time()), multipart_ratio=opts.multipart_ratio)
        # one SMS end to end first, so the table measures the running pipeline, not worker start-up
        console.print("warming up: waiting for a first SMS to reach the webhook…")
        smsc.enqueue(mix.next())
        if not await rx.wait_for(1, 120):
            console.print("[red]no SMS reached the webhook within 120 s; see the logs[/]")
            return 1
        rx.log.latencies_ms.clear()
        if cfg.routing.policies:
            from smsflow.serde import Serde, registry_client

            serde = Serde(registry_client(services.registry_url))
            routes = RouteView(services.bootstrap, serde, [p.scope.key for p in cfg.routing.policies])
            await routes.start()
        progress = Progress()
        count = int(opts.rate * opts.duration) if opts.duration else 0
        feeder = asyncio.create_task(feed(smsc, mix, opts.rate, count, stop))
        keys.start()

        def footer() -> str:
            return cycle.footer() if keys.active else ""

        with Live(
            progress.table(0, smsc, rx, procs, services.zipkin_url, routes),
            console=console,
            refresh_per_second=2,
        ) as live:
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                offered = mix.n
                elapsed = time.monotonic() - progress.started
                if opts.primary_fault and not flag_fault_done and elapsed >= opts.fault_after_s:
                    assert primary_account is not None
                    fault_note = _inject(smsc, primary_account, opts)
                    flag_fault_done = True
                for key in keys.pending():
                    if key.lower() == QUIT_KEY:
                        stop.set()
                    pressed, kind = cycle.press(key)
                    if pressed:
                        fault_note = _press_fault(smsc, primary_account, kind, elapsed)
                table = progress.table(
                    offered, smsc, rx, procs, services.zipkin_url, routes, fault_note, footer()
                )
                live.update(table)
                if feeder.done() and opts.duration:
                    # drain: wait until everything offered was delivered, or give up after 60 s
                    deadline = time.monotonic() + 60
                    while (smsc.backlog or len(rx.log.messages) < smsc.stats.logical_accepted) and (
                        time.monotonic() < deadline
                    ):
                        await asyncio.sleep(0.5)
                        zipkin_url = services.zipkin_url
                        table = progress.table(
                            offered, smsc, rx, procs, zipkin_url, routes, fault_note, footer()
                        )
                        live.update(table)
                    break
                if not all(p.alive for p in procs):
                    console.print("[red]a pipeline process died; see its log[/]")
                    break
        stop.set()
        await feeder
        ok = len(rx.log.messages) >= smsc.stats.logical_accepted and rx.log.bad_signatures == 0
        console.print(
            f"offered {offered}, stored {smsc.stats.logical_accepted}, delivered "
            f"{len(rx.log.messages)} distinct, redeliveries {rx.log.redeliveries}"
        )
        return 0 if ok else 1
    finally:
        keys.stop()  # the terminal back to normal before anything else is printed
        console.print("stopping…")
        if routes is not None:
            await routes.stop()
        for p in reversed(procs):  # connector first: it unbinds from the carrier while the SMSC is still up
            await asyncio.to_thread(p.stop)
        await smsc.stop()
        await rx.stop()
        await services.stop()


def _primary_account(cfg: Config) -> str | None:
    """The simulator account (system_id) of the first policy's first primary carrier route."""
    for policy in cfg.routing.policies:
        carrier_id = cfg.routing.route(policy.primary[0]).carrier
        for c in cfg.carriers:
            if c.id == carrier_id:
                return c.system_id
    return None


def _press_fault(smsc: SimulatedSmsc, account: str | None, kind: str | None, elapsed: float) -> str:
    """The fault key: the previous key fault cleared, the next one of the cycle put on the primary's carrier
    (until the next press), as the simulator's control endpoint would."""

    if account is None:
        return "no fault: no routing policy with a carrier route as primary"
    smsc.clear_fault(account)
    if kind is None:
        return f"cleared on {account} (primary) at {elapsed:.0f} s (key)"
    _set_fault(smsc, account, fault_spec(kind))
    return f"{kind} on {account} (primary) at {elapsed:.0f} s (key)"


def _set_fault(smsc: SimulatedSmsc, account: str, spec: dict[str, Any]) -> None:
    from devkit.simulator.faults import parse_fault

    smsc.set_fault(account, parse_fault(spec, now=time.monotonic()))
    if spec["kind"] == "refuse_binds":
        smsc.drop_now(account)  # refusing new binds leaves a bound session up: cut it, so it must re-bind


def _inject(smsc: SimulatedSmsc, account: str, opts: DemoOptions) -> str:
    """The fault the operator asked for, on the primary's carrier, the way the control endpoint sets it."""

    assert opts.primary_fault is not None
    spec = fault_spec(opts.primary_fault)
    if opts.fault_for_s:
        spec["duration_s"] = opts.fault_for_s
    _set_fault(smsc, account, spec)
    lasting = f" for {opts.fault_for_s:g} s" if opts.fault_for_s else ""
    return f"{opts.primary_fault} on {account} (primary) at {opts.fault_after_s:g} s{lasting}"
