"""End-to-end benchmark: deliver_sm written by the simulated carrier SMSC -> message received at the webhook.

    .venv/bin/python -m bench.e2e                       # smsflow and Kannel, default scenarios
    .venv/bin/python -m bench.e2e --systems smsflow --count 1000 --rates 50 --duration 20
    flock /tmp/smsflow-broker.lock .venv/bin/python -m bench.e2e --json .work/bench/result.json

One simulated SMSC and one receiver (in this process) serve both systems, one after the other, with the
same seeded traffic mix (TrafficMix: +852/+86 OTPs, GSM 03.38 and UCS-2, UDH 8/16-bit, SAR, message_payload):

- smsflow: a local Kafka broker (KRaft, Maven Central jars), the embedded registry, and the real processes
  ``python -m smsflow connector`` and ``python -m smsflow worker``; signed webhooks to the receiver.
- Kannel (Debian's bearerbox + smsbox): bearerbox binds to the simulator as an SMPP transceiver, smsbox's
  catch-all sms-service POSTs each MO message (post-url) to the receiver's unsigned path.

Scenarios, per system: (a) saturation: N messages queued at once, the simulator pushes them as fast as the
system acknowledges (window 64), throughput = delivered / (last arrival - first PDU sent); (b) fixed offered
rates for a duration, latency = webhook arrival - first PDU of that SMS written by the simulator (both clocks
are this process's monotonic clock; the text's ``#<n>`` tag joins them); (c) saturation with a
multipart-heavy mix. CPU seconds per process come from /proc; the broker's JIT compiler threads are shown
apart (``kafka JIT``) and left out of "CPU ms/msg": a fresh broker spends its first minutes compiling, which a
long-running one has done long ago (bench/procstat.py). For smsflow each scenario also prints its latency
split in two hops by the payload's own times (``hops``: the connector's receipt -> the loop's reassembly ->
the webhook's arrival). Results print as a table (and --json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import yaml

from bench.kannel import KannelGateway, KannelOptions, decode_kannel_request, kannel_installed, kannel_version
from bench.procstat import cpu_delta, sample, snapshot, steady_cpu
from devkit.demo.receiver import PlainRequest, WebhookReceiver
from devkit.simulator.smsc import SimulatedSmsc
from devkit.simulator.traffic import LogicalSms, TrafficMix
from smsflow.roles import stage_args_beside_ingest_loop

REPO = Path(__file__).resolve().parent.parent
TAG = re.compile(r"#(\d+)\s*$")
SIM_PASSWORD = "bench-pw"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- what arrives where -------------------------------------------------------------------------------
@dataclass
class Tracker:
    """First PDU sent and first webhook arrival per tag, for one scenario."""

    first_sent: dict[str, float] = field(default_factory=dict)
    arrived: dict[str, float] = field(default_factory=dict)
    extra_arrivals: int = 0  # the same tag delivered again (a duplicate the customer would see)
    untagged: int = 0
    wrong_text: int = 0
    expected_text: dict[str, str] = field(default_factory=dict)
    # smsflow: per new message, (received_at, completed_at, arrival) epoch ms: the connector's receipt of its
    # first PDU, the ingest loop's reassembly, the webhook's arrival here (hops())
    stamps: list[tuple[float, float, float]] = field(default_factory=list)

    def sent(self, sms: LogicalSms, t: float) -> None:
        if sms.tag and sms.tag not in self.first_sent:
            self.first_sent[sms.tag] = t

    def got(self, text: str, t: float, received_at: object = None, completed_at: object = None) -> None:
        """A message arrived at ``t``; ``received_at`` / ``completed_at``: its payload's own times (epoch ms,
        smsflow's), kept for a tagged message's first arrival (``hops``)."""
        m = TAG.search(text)
        if not m:
            self.untagged += 1
            return
        tag = m.group(1)
        if tag in self.arrived:
            self.extra_arrivals += 1
            return
        self.arrived[tag] = t
        if self.expected_text.get(tag, text) != text:
            self.wrong_text += 1
        if isinstance(received_at, int | float) and isinstance(completed_at, int | float):
            self.stamps.append((float(received_at), float(completed_at), time.time() * 1000))

    def hops(self) -> dict[str, dict[str, float]] | None:
        """Percentiles of the two hops the payload's times split smsflow's latency into (clock: the machine's,
        ms; the carrier's PDU write to the connector's receipt is not in either)."""
        if not self.stamps:
            return None
        return {
            "connector to reassembled": percentiles([c - r for r, c, _ in self.stamps]),
            "reassembled to webhook": percentiles([a - c for _, c, a in self.stamps]),
        }


class System(Protocol):
    name: str
    account: str

    async def start(self, smsc: SimulatedSmsc, rx: WebhookReceiver) -> None: ...
    async def stop(self) -> None: ...
    def pids(self) -> dict[str, int]: ...
    def attach(self, rx: WebhookReceiver, tracker: Tracker) -> None: ...
    def versions(self) -> dict[str, str]: ...


# ---- smsflow ------------------------------------------------------------------------------------------
def apply_override(cfg: dict[str, Any], setting: str) -> None:
    """``tracing.sample_ratio=0.1`` -> cfg["tracing"]["sample_ratio"] = 0.1 (the value read as YAML)."""
    path, sep, value = setting.partition("=")
    if not sep or not path:
        raise SystemExit(f"--config-set {setting!r}: expected dotted.path=value")
    *parents, leaf = path.split(".")
    node = cfg
    for name in parents:
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            raise SystemExit(f"--config-set {setting!r}: {name} is not a section")
    node[leaf] = yaml.safe_load(value)


class SmsflowSystem:
    name = "smsflow"
    account = "smsflow"

    def __init__(
        self,
        workdir: Path,
        partitions: int = 6,
        sessions: int = 1,
        bootstrap: str | None = None,
        registry_url: str | None = None,
        pipeline: dict[str, Any] | None = None,
        overrides: list[str] | None = None,
        workers: int = 1,
        ingest_loop: bool = False,
        inbound_reader: str = "faust",
        request_log: bool = False,
        routing: str = "none",
    ) -> None:
        """With ``bootstrap`` and ``registry_url`` given, use that broker and registry (tests' fixtures).
        ``overrides``: ``dotted.path=yaml-value`` settings applied to the generated config (A/B runs).
        ``workers``: worker processes, and as many connector processes (each its own bind), for the
        scale-out figure (issue 13): CPU per SMS summed over all of them. ``ingest_loop``: beside each
        worker (started without its ingest stage) a direct ingest loop process, ``smsflow ingest`` (ADR 0007
        step 2). ``inbound_reader``: ``worker.inbound_reader`` (who reads sms.inbound.v1 in the worker).
        ``request_log``: the local broker logs every request (``request_counts``). ``routing``: ``carrier``
        makes the simulator's carrier a route of the double list, so the worker runs the double-list stage
        (as config/demo.yaml does); ``webhook``: that, and the subscription's webhook a route of a policy with
        a secondary (every POST observed); ``none``: no routing section."""
        self.workdir = workdir / "smsflow"
        self.workers = workers
        self.ingest_loop = ingest_loop
        self.inbound_reader = inbound_reader
        self.routing = routing
        self.partitions = partitions
        self.sessions = sessions
        self.bootstrap = bootstrap
        self.registry_url = registry_url
        self.pipeline = pipeline or {}
        self.overrides = overrides or []
        self.kafka: Any = None
        self.registry: Any = None
        self.procs: dict[str, Any] = {}
        self._deferral_reader: tuple[Any, Any] | None = None
        self._deferred = 0
        self.request_log = request_log
        self._topic_names: dict[str, str] = {}
        self._names_read_to = 0  # the request log is read for topic names up to here

    async def start(self, smsc: SimulatedSmsc, rx: WebhookReceiver) -> None:
        from devkit.demo.pipeline import RoleProcess, child_env
        from smsflow.subscriptions.secretbox import ENV_KEYS, SecretBox

        bootstrap, registry_url = await self.start_broker()
        cfg = {
            "app_id": f"bench-{int(time.time()) % 10**6}",
            "kafka": {"partitions": self.partitions},
            "carriers": [
                {
                    "id": "sim",
                    "route_id": "sim-route",
                    "host": "127.0.0.1",
                    "port": smsc.port,
                    "system_id": self.account,
                    "sessions": self.sessions,
                    "password_env": "BENCH_SMPP_PASSWORD",
                    "bind": "transceiver",
                    "default_region": "HK",
                }
            ],
            "subscriptions": [{"id": "bench-hook", "url": rx.url, "secret_env": "BENCH_WEBHOOK_SECRET"}],
            "webhooks": {"block_private_addresses": False},
            "pipeline": self.pipeline,
            "data_dir": str(self.workdir / "data"),
            "worker": {"inbound_reader": self.inbound_reader},
        }
        routes: list[dict[str, str]] = [{"id": "sim-route", "kind": "carrier", "carrier": "sim"}]
        policies: list[dict[str, Any]] = []
        if self.routing == "webhook":  # the subscription's webhook on a double list: every POST is observed
            routes += [
                {"id": "hook-p", "kind": "webhook", "url": rx.url},
                {"id": "hook-s", "kind": "webhook", "url": f"{rx.url}?secondary"},
            ]
            scope = "subscription:bench-hook"
            policies.append({"scope": scope, "primary": ["hook-p"], "secondary": ["hook-s"]})
        if self.routing in ("carrier", "webhook"):
            cfg["routing"] = {"routes": routes, "policies": policies}
        for setting in self.overrides:
            apply_override(cfg, setting)
        env = child_env(
            bootstrap,
            registry_url,
            {
                "BENCH_SMPP_PASSWORD": SIM_PASSWORD,
                "BENCH_WEBHOOK_SECRET": rx_secret(rx),
                ENV_KEYS: f"bench:{SecretBox.generate_key()}",
            },
        )
        for i in range(1, self.workers + 1):
            suffix = "" if i == 1 else str(i)  # the first pair keeps its names (profiles, logs)
            # each process its own data dir: two workers must not share Faust's table directories
            path = self.workdir / f"config{suffix}.yaml"
            cfg_i = cfg | {"data_dir": str(self.workdir / f"data{suffix}")}
            path.write_text(yaml.safe_dump(cfg_i), encoding="utf-8")
            roles = ("worker", "ingest", "connector") if self.ingest_loop else ("worker", "connector")
            for role in roles:
                name = f"{role}{suffix}"
                log_path = self.workdir / "logs" / f"{name}.log"
                argv = [role, "--config", str(path)]
                if role == "worker" and self.ingest_loop:
                    argv += stage_args_beside_ingest_loop()
                p = RoleProcess(name, argv, env, log_path)
                p.start()
                self.procs[name] = p
        log(f"smsflow: {self.workers} worker(s) and connector(s) started; waiting for the bind")

    async def start_broker(self) -> tuple[str, str]:
        """A fresh work folder; the local broker (topics created) and the registry, unless given: their
        bootstrap and URL."""
        from devkit.local.kafka import LocalKafka
        from devkit.registry import RegistryThread
        from smsflow.topics import ensure_topics, load_manifest

        await asyncio.to_thread(_fresh_dir, self.workdir)
        if self.bootstrap is None:
            log(f"{self.name}: starting the local Kafka broker")
            self.kafka = LocalKafka(self.workdir / "kafka", request_log=self.request_log)
            await asyncio.to_thread(self.kafka.fetch)
            await asyncio.to_thread(self.kafka.format)
            await asyncio.to_thread(self.kafka.start)
            await asyncio.to_thread(self.kafka.wait_ready, 120)
            self.bootstrap = self.kafka.bootstrap
            await asyncio.to_thread(ensure_topics, self.bootstrap, load_manifest())
        if self.registry_url is None:
            self.registry = RegistryThread(self.bootstrap)
            self.registry_url = await asyncio.to_thread(self.registry.start)
        assert self.bootstrap is not None and self.registry_url is not None
        return self.bootstrap, self.registry_url

    def pids(self) -> dict[str, int]:
        out = {n: p.proc.pid for n, p in self.procs.items() if p.alive}
        if self.kafka is not None and self.kafka.pid:
            out["kafka"] = self.kafka.pid
        return out

    def attach(self, rx: WebhookReceiver, tracker: Tracker) -> None:
        rx.on_message = lambda msg, t: tracker.got(
            str(msg.get("body", "")), t, msg.get("received_at"), msg.get("completed_at")
        )

    def request_log_offset(self) -> int | None:
        """Where the broker's request log ends now (``--request-log``), or None."""
        if not self.request_log or self.kafka is None:
            return None
        path = self.kafka.request_log_path
        return path.stat().st_size if path.exists() else 0

    def request_counts(self, since: int) -> dict[str, int]:
        """Requests the broker completed since ``since`` (a ``request_log_offset``), by API and topic."""
        assert self.kafka is not None
        with open(self.kafka.request_log_path, "rb") as f:
            f.seek(min(self._names_read_to, since))
            before = f.read(max(0, since - self._names_read_to)).decode("utf-8", "replace").splitlines()
            lines = f.read().decode("utf-8", "replace").splitlines()
            self._names_read_to = f.tell()
        count_requests(before, self._topic_names)  # fetches name topics by the ids metadata gave earlier
        return count_requests(lines, self._topic_names)

    def deferrals(self) -> int:
        """Delivery events on sms.delivery.v1 so far whose failure is ``deferred`` (read by a consumer of the
        harness's own, from the start of the topic)."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from smsflow.schemas import DELIVERY_TOPIC
        from smsflow.serde import Serde, registry_client

        assert self.bootstrap is not None and self.registry_url is not None
        if self._deferral_reader is None:
            c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "bench-deferrals"})
            parts = c.list_topics(DELIVERY_TOPIC, timeout=10).topics[DELIVERY_TOPIC].partitions
            c.assign([TopicPartition(DELIVERY_TOPIC, p, OFFSET_BEGINNING) for p in parts])
            self._deferral_reader = (c, Serde(registry_client(self.registry_url)))
        c, serde = self._deferral_reader
        # paused between readings: a consumer of the harness must not keep the broker busy with fetches
        # (one per append to sms.delivery.v1) while smsflow is measured
        c.resume(c.assignment())
        idle = 0
        while idle < 2:
            msgs = c.consume(10000, timeout=0.3)
            if not msgs:
                idle += 1
                continue
            for m in msgs:
                if (
                    m.error() is None
                    and serde.decode(DELIVERY_TOPIC, m.value() or b"").get("failure") == "deferred"
                ):
                    self._deferred += 1
        c.pause(c.assignment())
        return self._deferred

    async def stop(self) -> None:
        if self._deferral_reader is not None:
            self._deferral_reader[0].close()
            self._deferral_reader = None
        for name in sorted(self.procs, key=lambda n: not n.startswith("connector")):  # connectors first
            await asyncio.to_thread(self.procs[name].stop)
        if self.registry is not None:
            await asyncio.to_thread(self.registry.stop)
        if self.kafka is not None:
            await asyncio.to_thread(self.kafka.stop)

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        from devkit.local.kafka import KAFKA_VERSION

        return {
            "smsflow ingest": "direct loop (smsflow ingest)" if self.ingest_loop else "Faust agent",
            "smsflow inbound reader": self.inbound_reader,
            "smsflow routing": self.routing,
            "kafka": KAFKA_VERSION,
            "faust-streaming": version("faust-streaming"),
            "aiokafka": version("aiokafka"),
            "python": platform.python_version(),
            "java": _java_version(),
        }

    def logs(self) -> str:
        out = []
        for f in sorted((self.workdir / "logs").glob("*.log")):
            out.append(f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}")
        return "\n".join(out)


def _fresh_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def rx_secret(rx: WebhookReceiver) -> str:
    return str(getattr(rx, "bench_secret", ""))


def _java_version() -> str:
    try:
        from devkit.local.jvm import java_executable

        out = subprocess.run([java_executable(), "-version"], capture_output=True, text=True, check=False)
        return (out.stderr or out.stdout).splitlines()[0]
    except Exception as exc:  # informative only
        return f"unknown ({exc})"


# ---- Kannel -------------------------------------------------------------------------------------------
class KannelSystem:
    name = "kannel"
    account = "kannel"

    def __init__(
        self, workdir: Path, store: bool = True, concat_timeout_s: int = 1800, log_level: int = 2
    ) -> None:
        self.workdir = workdir / "kannel"
        self.store = store
        self.concat_timeout_s = concat_timeout_s
        self.log_level = log_level
        self.gw: KannelGateway | None = None

    async def start(self, smsc: SimulatedSmsc, rx: WebhookReceiver) -> None:
        opts = KannelOptions(
            "127.0.0.1",
            smsc.port,
            self.account,
            SIM_PASSWORD,
            rx.plain_url,
            store=self.store,
            concat_timeout_s=self.concat_timeout_s,
            log_level=self.log_level,
        )
        self.gw = KannelGateway(self.workdir, opts)
        log("kannel: starting bearerbox and smsbox")
        await asyncio.to_thread(self.gw.start)

    def pids(self) -> dict[str, int]:
        return self.gw.pids if self.gw else {}

    def attach(self, rx: WebhookReceiver, tracker: Tracker) -> None:
        def on_plain(req: PlainRequest) -> None:
            tracker.got(decode_kannel_request(req.query, req.headers, req.body).text, req.arrived)

        rx.on_plain = on_plain

    async def stop(self) -> None:
        if self.gw is not None:
            await asyncio.to_thread(self.gw.stop)

    def versions(self) -> dict[str, str]:
        return {"kannel": kannel_version()}

    def logs(self) -> str:
        return self.gw.logs() if self.gw else ""


# ---- scenarios ----------------------------------------------------------------------------------------
def count_requests(lines: list[str], topic_names: dict[str, str]) -> dict[str, int]:
    """Requests by "API topic[,topic...]" from the broker's request log lines ("Completed request:{json}");
    fetch requests name topics by id: ``topic_names`` (id -> name) is filled from the metadata responses
    seen. A request of the harness itself (its deferral reader) is counted like any other."""
    counts: dict[str, int] = {}
    for line in lines:
        i = line.find("{")
        if i < 0:
            continue
        try:
            d = json.loads(line[i:])
            api = d["requestHeader"]["requestApiKeyName"]
        except (ValueError, KeyError, TypeError):
            continue
        req, resp = d.get("request") or {}, d.get("response") or {}
        if api == "METADATA":
            for tp in resp.get("topics") or []:
                if tp.get("topicId") and tp.get("name"):
                    topic_names[tp["topicId"]] = tp["name"]
        if api == "PRODUCE":
            topics = [tp.get("name") or "?" for tp in req.get("topicData") or []]
        elif api == "FETCH":
            topics = [
                topic_names.get(str(tp.get("topicId")), str(tp.get("topic") or tp.get("topicId")))
                for tp in req.get("topics") or []
            ]
        else:
            topics = []
        key = f"{api} {','.join(sorted(topics))}".strip()
        counts[key] = counts.get(key, 0) + 1
    return counts


def requests_line(counts: dict[str, int], delivered: int, top: int = 8) -> str:
    total = sum(counts.values())
    rows = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
    if not delivered:
        return f"  broker requests: {total} in all; " + ", ".join(f"{k} {v}" for k, v in rows)
    shown = ", ".join(f"{k} {v / delivered:.2f}" for k, v in rows)
    return f"  broker requests per delivered SMS: {total / delivered:.2f} in all ({total}); {shown}"


def hops_line(hops: dict[str, dict[str, float]]) -> str:
    shown = "; ".join(
        f"{name} p50 {p['p50']:.1f}, p99 {p['p99']:.1f}, max {p['max']:.1f}" for name, p in hops.items()
    )
    return f"  hops (ms): {shown}"


@dataclass
class Result:
    system: str
    scenario: str
    offered: int
    delivered: int
    extra_deliveries: int
    wrong_text: int
    seconds: float
    delivered_per_s: float
    acked_per_s: float
    pdus: int
    latency_ms: dict[str, float]
    cpu_s: dict[str, float]
    harness_cpu_s: float
    rss_mb: dict[str, float]
    # webhooks smsflow's worker deferred in the scenario (no endpoint slot within the wait: sent again later
    # from the retry topic, more work per SMS); None for systems that have none
    deferred: int | None = None
    # broker requests in the scenario by "API topic" (--request-log), None without
    requests: dict[str, int] | None = None
    # smsflow: latency percentiles (ms) of its two hops, from the payload's times (Tracker.hops)
    hops_ms: dict[str, dict[str, float]] | None = None

    @property
    def cpu_ms_per_msg(self) -> float:
        return 1000 * steady_cpu(self.cpu_s) / max(1, self.delivered)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)

    def pct(p: float) -> float:
        return v[min(len(v) - 1, max(0, math.ceil(p / 100 * len(v)) - 1))]  # nearest rank

    return {
        "p50": pct(50),
        "p90": pct(90),
        "p95": pct(95),
        "p99": pct(99),
        "max": v[-1],
        "mean": statistics.fmean(v),
    }


def destination_numbers(count: int) -> list[str] | None:
    """``count`` Hong Kong numbers of ours, or None (the traffic mix's own three) for 0."""
    if count < 0 or count > 10_000:
        raise SystemExit("--numbers: between 0 and 10000")
    return [f"+8523000{i:04d}" for i in range(count)] or None


class Bench:
    def __init__(
        self, smsc: SimulatedSmsc, rx: WebhookReceiver, seed: int, numbers: list[str] | None = None
    ) -> None:
        self.smsc = smsc
        self.rx = rx
        self.seed = seed
        self.numbers = numbers  # the destinations; the traffic mix's three by default
        self._serial = 0
        self._deferred: dict[int, int] = {}  # id(system) -> its deferrals counted so far

    def _mix(self, multipart: float) -> TrafficMix:
        # the serial in each text must be unique across scenarios (the tag joins send and arrival)
        self._serial += 1
        return TrafficMix(
            seed=self.seed + self._serial,
            multipart_ratio=multipart,
            seq_start=self._serial * 10**6,
            numbers=self.numbers,
        )

    async def _run(
        self,
        system: System,
        scenario: str,
        messages: list[LogicalSms],
        rate: float | None,
        timeout: float,
    ) -> Result:
        tr = Tracker(expected_text={m.tag: m.text for m in messages})
        self.smsc.on_first_send = tr.sent
        system.attach(self.rx, tr)
        pids = system.pids()
        before = snapshot(pids)
        me0 = os.times()
        sent0, acc0 = self.smsc.stats.sent, self.smsc.stats.logical_accepted
        t0 = time.monotonic()
        last_ack = t0
        n = len(messages)
        if rate is None:
            for m in messages:
                self.smsc.enqueue(m, system.account)
        else:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i, m in enumerate(messages):
                delay = start + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self.smsc.enqueue(m, system.account)
        deadline = time.monotonic() + timeout
        while len(tr.arrived) < n and time.monotonic() < deadline:
            if self.smsc.stats.logical_accepted - acc0 < n:
                last_ack = time.monotonic()
            await asyncio.sleep(0.02)
        if self.smsc.stats.logical_accepted - acc0 < n:
            last_ack = time.monotonic()
        after = snapshot(pids)
        me1 = os.times()
        await asyncio.sleep(0.5)  # late duplicates would show up now
        first = min(tr.first_sent.values()) if tr.first_sent else t0
        last = max(tr.arrived.values()) if tr.arrived else time.monotonic()
        span = max(1e-6, last - first)
        lat = [1000 * (tr.arrived[t] - tr.first_sent[t]) for t in tr.arrived if t in tr.first_sent]
        res = Result(
            system=system.name,
            scenario=scenario,
            offered=n,
            delivered=len(tr.arrived),
            extra_deliveries=tr.extra_arrivals,
            wrong_text=tr.wrong_text,
            seconds=round(span, 3),
            delivered_per_s=len(tr.arrived) / span,
            acked_per_s=(self.smsc.stats.logical_accepted - acc0) / max(1e-6, last_ack - first),
            pdus=self.smsc.stats.sent - sent0,
            latency_ms=percentiles(lat),
            cpu_s=cpu_delta(before, after),
            harness_cpu_s=(me1.user + me1.system) - (me0.user + me0.system),
            rss_mb={k: v.rss_mb for k, v in after.items()},
            hops_ms=tr.hops(),
        )
        self.smsc.on_first_send = None
        deferrals = getattr(system, "deferrals", None)
        if deferrals is not None:
            total = await asyncio.to_thread(deferrals)
            res.deferred = total - self._deferred.get(id(system), 0)
            self._deferred[id(system)] = total
            if res.deferred:
                log(f"{system.name}/{scenario}: {res.deferred} webhooks deferred to the retry topic")
        if res.delivered < n:
            log(f"{system.name}/{scenario}: only {res.delivered} of {n} delivered in {timeout:.0f}s")
        return res

    async def idle(self, system: System, seconds: float) -> Result:
        """CPU the system burns with no traffic (polling, heartbeats, timers), for ``seconds``."""
        pids = system.pids()
        before = snapshot(pids)
        me0 = os.times()
        await asyncio.sleep(seconds)
        after, me1 = snapshot(pids), os.times()
        return Result(
            system.name,
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
            (me1.user + me1.system) - (me0.user + me0.system),
            {k: v.rss_mb for k, v in after.items()},
        )

    async def warmup(self, system: System, count: int) -> Result:
        mix = self._mix(0.3)
        return await self._run(system, "warm-up", [mix.next() for _ in range(count)], None, 180)

    async def warm_jit(self, system: System, batch: int, limit_s: float) -> None:
        """Warm-up batches until the broker's JIT compiler is done with the hot paths (its threads used under
        10% of a batch's time) or ``limit_s`` passed: a fresh broker compiles for ~35-40 s under load, on
        the same two cores as everything else, which a running deployment's broker did long ago. Nothing to
        do for a system without a JVM."""
        pid = system.pids().get("kafka")
        if pid is None or limit_s <= 0:
            return
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            before, t0 = sample(pid), time.monotonic()
            await self.warmup(system, batch)
            after, took = sample(pid), time.monotonic() - t0
            if before is None or after is None:
                return
            jit = after.jit_seconds - before.jit_seconds
            log(f"{system.name}: warm-up batch of {batch} in {took:.1f} s, the broker's JIT {jit:.1f} s")
            if jit < 0.1 * took:
                return
        log(f"{system.name}: the broker's JIT still busy after {limit_s:g} s of warm-up; measuring anyway")

    async def saturation(self, system: System, count: int, multipart: float, label: str) -> Result:
        mix = self._mix(multipart)
        msgs = [mix.next() for _ in range(count)]
        return await self._run(system, label, msgs, None, max(120.0, count / 5))

    async def fixed_rate(self, system: System, rate: float, duration: float, multipart: float) -> Result:
        mix = self._mix(multipart)
        msgs = [mix.next() for _ in range(int(rate * duration))]
        return await self._run(system, f"{rate:g}/s x {duration:g}s", msgs, rate, duration + 120)


# ---- profiling ----------------------------------------------------------------------------------------
class PySpy:
    """py-spy (if installed) sampling a process during one scenario; raw collapsed stacks to a file."""

    def __init__(self, pid: int, out: Path, rate: int = 100, blocking: bool = False) -> None:
        self.pid, self.out, self.rate, self.blocking = pid, out, rate, blocking
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> str | None:
        exe = Path(sys.executable).parent / "py-spy"
        return str(exe) if exe.exists() else shutil.which("py-spy")

    def start(self) -> None:
        exe = self.available()
        if exe is None:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                str(self.rate),
                "--format",
                "raw",
                "--output",
                str(self.out),
                # stopping the process for each sample costs it time, but reading its stack while it runs
                # tears some stacks on Python 3.11 (a frame under a caller it never called)
                *([] if self.blocking else ["--nonblocking"]),
                # only the thread holding the GIL: Python's own work; a thread waiting in C (librdkafka's
                # poll, the event loop's epoll) is not sampled as busy, as it was without it
                "--gil",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def summarize_profile(path: Path, top: int = 12) -> list[tuple[str, float]]:
    """Where a process's CPU went, from py-spy's collapsed stacks (idle threads are not sampled).

    Two views, as shares of all samples: ``incl:`` rows count a sample when any frame of its stack is in
    that part of the code (rows overlap: encoding a record inside a traced span counts for both), and
    ``self:`` rows group the leaf frame (where the CPU really was) by package. Only the thread holding the GIL
    is sampled (``PySpy`` runs py-spy with ``--gil``): a thread waiting in C (librdkafka's poll, the loop's
    epoll) releases it and is not in the samples; a leaf such as the uvloop run loop's caller is the loop's
    own C work."""
    if not path.exists():
        return []
    incl: dict[str, int] = {}
    leaf: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        total += count
        for name, needles in _INCLUSIVE:
            if any(n in f for f in frames for n in needles):
                incl[name] = incl.get(name, 0) + count
        pkg = _package(frames[-1]) if frames else "?"
        leaf[pkg] = leaf.get(pkg, 0) + count
    if not total:
        return []
    rows = [(f"incl: {k}", 100 * v / total) for k, v in incl.items()]
    rows.sort(key=lambda kv: -kv[1])
    self_rows = sorted(((f"self: {k}", 100 * v / total) for k, v in leaf.items()), key=lambda kv: -kv[1])
    return [("samples", float(total)), *rows, *self_rows[:top]]


_INCLUSIVE = [
    ("SMPP PDU codec (smsflow.smpp)", ("smsflow/smpp/",)),
    ("connector store path (key, serialize, produce, wait ack)", ("SmppConnector.store",)),
    ("decode (IngestProcessor._parse: PDU, UDH, text)", ("IngestProcessor._parse", "smsflow/sms/")),
    (
        "reassembly + dedup (smsflow.ingest.reassembly/dedup)",
        ("smsflow/ingest/reassembly", "smsflow/ingest/dedup"),
    ),
    ("faust tables (state + changelog)", ("faust/tables", "faust/stores")),
    ("enrichment (numbers, OTP, language)", ("smsflow/enrich", "smsflow/numbers")),
    ("avro serde", ("smsflow/serde", "confluent_kafka/schema_registry", "fastavro")),
    ("kafka produce (aiokafka/faust producer)", ("aiokafka/producer", "faust/transport/producer")),
    ("kafka consume (aiokafka/faust consumer)", ("aiokafka/consumer", "faust/transport/consumer")),
    ("faust stream/agent machinery", ("faust/streams", "faust/agents", "faust/transport/conductor")),
    ("webhook delivery (smsflow.delivery + aiohttp)", ("smsflow/delivery", "aiohttp/")),
    # py-spy shortens site-packages paths: opentelemetry's frames read "(trace/__init__.py:…)" and the like
    (
        "tracing (opentelemetry)",
        ("opentelemetry", "smsflow/telemetry", "(trace/", "(attributes/", "(context/", "(propagate/"),
    ),
    ("metrics (faust sensors, prometheus)", ("faust/sensors", "prometheus_client")),
    ("logging", ("logging/__init__",)),
]


def _package(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> a package-ish name: smsflow/enrich, faust, asyncio, ..."""
    loc = frame.rpartition(" (")[2].rstrip(")").rpartition(":")[0]
    parts = loc.split("/")
    if parts and parts[0] in ("smsflow", "connectors", "streams") and len(parts) > 1:
        return "/".join(parts[:2]).removesuffix(".py")
    return parts[0].removesuffix(".py") if parts and parts[0] else "?"


# ---- output -------------------------------------------------------------------------------------------
def table(results: list[Result]) -> str:
    head = (
        "| system | scenario | offered | delivered | dup/wrong/deferred | span s | delivered/s | acked/s "
        "| p50 ms | p99 ms | max ms | CPU s (per process) | CPU ms/msg | harness CPU s |"
    )
    lines = [head, "|" + "---|" * 14]
    for r in results:
        lat = r.latency_ms
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r.cpu_s.items()))
        per_msg = f"{r.cpu_ms_per_msg:.2f}" if r.offered else "-"
        lines.append(
            f"| {r.system} | {r.scenario} | {r.offered} | {r.delivered} "
            f"| {r.extra_deliveries}/{r.wrong_text}/{'-' if r.deferred is None else r.deferred} "
            f"| {r.seconds:.1f} | {r.delivered_per_s:.0f} | {r.acked_per_s:.0f} "
            f"| {lat.get('p50', float('nan')):.1f} | {lat.get('p99', float('nan')):.1f} "
            f"| {lat.get('max', float('nan')):.1f} | {cpu} | {per_msg} | {r.harness_cpu_s:.1f} |"
        )
    return "\n".join(lines)


def spread(results: list[Result]) -> str:
    """min / median / max per system and scenario over repeated runs (``--repeat``), as issue 13 asks."""
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        if r.offered:
            groups.setdefault((r.system, r.scenario), []).append(r)
    head = "| system | scenario | runs | delivered/s | p99 ms | CPU ms/msg | CPU ms/msg per process |"
    lines = [head, "|" + "---|" * 7]

    def mmm(values: list[float], fmt: str = ".0f") -> str:
        v = sorted(values)
        return " / ".join(format(x, fmt) for x in (v[0], statistics.median(v), v[-1]))

    for (system, scenario), rs in groups.items():
        procs = sorted({p for r in rs for p in r.cpu_s})
        per_proc = ", ".join(
            f"{p} {mmm([1000 * r.cpu_s.get(p, 0.0) / max(1, r.delivered) for r in rs], '.2f')}" for p in procs
        )
        lines.append(
            f"| {system} | {scenario} | {len(rs)} | {mmm([r.delivered_per_s for r in rs])} "
            f"| {mmm([r.latency_ms.get('p99', float('nan')) for r in rs], '.1f')} "
            f"| {mmm([r.cpu_ms_per_msg for r in rs], '.2f')} | {per_proc} |"
        )
    return "\n".join(lines)


def machine() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


# ---- main ---------------------------------------------------------------------------------------------
async def run(
    args: argparse.Namespace,
) -> tuple[list[Result], dict[str, list[tuple[str, float]]], dict[str, str]]:
    workdir: Path = args.workdir_path
    main_task = asyncio.current_task()
    assert main_task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):  # stop everything started, also on Ctrl-C
        asyncio.get_running_loop().add_signal_handler(sig, main_task.cancel)
    smsc = SimulatedSmsc(
        {"smsflow": SIM_PASSWORD, "kannel": SIM_PASSWORD}, window=args.window, shuffle=True, retry_delay_s=0.5
    )
    await smsc.start()
    secret = "whsec_" + __import__("base64").b64encode(secrets.token_bytes(24)).decode()
    rx = WebhookReceiver(secret)
    rx.bench_secret = secret  # type: ignore[attr-defined]
    await rx.start()
    bench = Bench(smsc, rx, args.seed, destination_numbers(args.numbers))
    results: list[Result] = []
    profiles: dict[str, list[tuple[str, float]]] = {}
    versions: dict[str, str] = {}
    systems: list[Any] = []
    for name in args.systems.split(","):
        if name == "smsflow":
            systems.append(
                SmsflowSystem(
                    workdir,
                    partitions=args.partitions,
                    overrides=args.config_set,
                    workers=args.workers,
                    ingest_loop=args.ingest == "loop",
                    inbound_reader=args.inbound_reader,
                    request_log=args.request_log,
                    routing=args.routing,
                )
            )
        elif name == "kannel":
            if not kannel_installed():
                log("kannel: bearerbox not installed; skipped")
                continue
            systems.append(KannelSystem(workdir, store=not args.kannel_no_store))
        else:
            raise SystemExit(f"unknown system {name!r}")
    try:
        for system in systems:
            try:
                await system.start(smsc, rx)
                binds = getattr(system, "workers", 1)  # one bind per connector process
                await asyncio.wait_for(_wait_account_bound(smsc, system.account, binds), 120)
                versions.update(system.versions())
                log(f"{system.name}: bound; warm-up")
                await bench.warmup(system, args.warmup)
                await bench.warm_jit(system, 1000, args.warm_jit)
                mp_label = f"saturation, {args.multipart_heavy:.0%} multipart"
                scen: list[tuple[str, Callable[[], Any]]] = [
                    ("idle", partial(bench.idle, system, 10.0)),
                    ("sat", partial(bench.saturation, system, args.count, args.multipart, "saturation")),
                    (
                        "sat-single",
                        partial(bench.saturation, system, args.count, 0.0, "saturation, single-part"),
                    ),
                    *[
                        (f"rate{r:g}", partial(bench.fixed_rate, system, r, args.duration, args.multipart))
                        for r in args.rates
                    ],
                    ("sat-mp", partial(bench.saturation, system, args.count, args.multipart_heavy, mp_label)),
                ]
                scen = scen[:1] + scen[1:] * args.repeat
                for key, make in scen:
                    spies = []
                    if args.profile and key.startswith(tuple(args.profile_scenarios.split(","))):
                        for role, pid in system.pids().items():
                            if role.startswith(("worker", "connector", "ingest")):
                                spies.append(
                                    (
                                        f"{system.name}-{role}-{key}",
                                        PySpy(
                                            pid,
                                            workdir / f"{system.name}-{role}-{key}.txt",
                                            blocking=args.profile_blocking,
                                        ),
                                    )
                                )
                        for _, sp in spies:
                            sp.start()
                        await asyncio.sleep(1)
                    log(f"{system.name}: {key}")
                    req_from = system.request_log_offset() if hasattr(system, "request_log_offset") else None
                    r = await make()
                    if req_from is not None:
                        await asyncio.sleep(0.5)  # the log's last lines
                        r.requests = system.request_counts(req_from)
                    for label, sp in spies:
                        sp.stop()
                        profiles[label] = summarize_profile(sp.out)
                    results.append(r)
                    print(table([r]).splitlines()[-1], flush=True)
                    if r.requests is not None:
                        print(requests_line(r.requests, r.delivered), flush=True)
                    if r.hops_ms is not None:
                        print(hops_line(r.hops_ms), flush=True)
            except Exception:
                log(f"{system.name} failed; logs follow\n{system.logs()}")
                raise
            finally:
                await system.stop()
                rx.on_message = None
                rx.on_plain = None
    finally:
        await smsc.stop()
        await rx.stop()
    return results, profiles, versions


async def _wait_account_bound(smsc: SimulatedSmsc, account: str, binds: int = 1) -> None:
    while sum(s.bound and s.system_id == account and s.can_receive for s in smsc.sessions) < binds:
        await asyncio.sleep(0.1)


def print_profiles(profiles: dict[str, list[tuple[str, float]]]) -> None:
    for label, rows in profiles.items():
        print(f"\nprofile {label} (py-spy; % of non-idle samples):")
        for name, share in rows:
            print(f"  {share:6.1f}{'' if name == 'samples' else '%'}  {name}")


def report(
    args: argparse.Namespace,
    results: list[Result],
    profiles: dict[str, list[tuple[str, float]]],
    versions: dict[str, str],
) -> int:
    print()
    print(f"machine: {machine()}")
    print(f"versions: {versions}")
    print(table(results))
    if args.repeat > 1:
        print("\nmin / median / max over the repeated runs:")
        print(spread(results))
    print_profiles(profiles)
    if args.json:
        out = {
            "command": " ".join(sys.argv),
            "machine": machine(),
            "versions": versions,
            "results": [asdict(r) | {"cpu_ms_per_msg": r.cpu_ms_per_msg} for r in results],
            "profiles": profiles,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
    bad = [r for r in results if r.delivered < r.offered or r.wrong_text or r.extra_deliveries]
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n\n")[0])
    ap.add_argument("--systems", default="smsflow,kannel", help="comma list: smsflow,kannel")
    ap.add_argument("--count", type=int, default=3000, help="messages per saturation run")
    ap.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[50.0, 200.0])
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per fixed-rate run")
    ap.add_argument("--multipart", type=float, default=0.2, help="share of multipart SMS in the normal mix")
    ap.add_argument("--multipart-heavy", type=float, default=0.8, help="share in the multipart-heavy run")
    ap.add_argument("--warmup", type=int, default=200, help="messages sent (and awaited) before measuring")
    ap.add_argument(
        "--warm-jit",
        type=float,
        default=90.0,
        metavar="SECONDS",
        help="then more warm-up batches of 1,000 until the broker's JIT compiler is quiet, at most this long "
        "(0: off, the setup before 2026-12-02 evening)",
    )
    ap.add_argument("--window", type=int, default=64, help="simulator's deliver_sm window per bind")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--kannel-no-store", action="store_true", help="run Kannel without its spool store")
    ap.add_argument("--repeat", type=int, default=1, help="run the measured scenarios this many times")
    ap.add_argument("--workers", type=int, default=1, help="smsflow worker (and connector) processes")
    ap.add_argument(
        "--ingest",
        choices=["loop", "faust"],
        default="loop",
        help="smsflow's ingest: 'loop' (the default deployment: smsflow ingest beside workers without the "
        "ingest stage) or 'faust' (the Faust ingest agent in the worker)",
    )
    ap.add_argument(
        "--ingest-loop",
        dest="ingest",
        action="store_const",
        const="loop",
        help="same as --ingest loop (kept for the commands in docs/BENCHMARKS.md)",
    )
    ap.add_argument(
        "--inbound-reader",
        choices=["direct", "faust"],
        default="direct",
        help="who reads sms.inbound.v1 in the worker (worker.inbound_reader): 'direct' (the default "
        "deployment, config/demo.yaml) or 'faust' (the deliver agent)",
    )
    ap.add_argument(
        "--request-log",
        action="store_true",
        help="the local broker logs every request; prints requests per SMS by API and topic for each "
        "scenario (the logging costs the broker CPU: not a run for CPU figures)",
    )
    ap.add_argument(
        "--routing",
        choices=["carrier", "webhook", "none"],
        default="carrier",
        help="'carrier' (default since 2026-12-02 evening): the simulator's carrier is a route of the double "
        "list, so the worker runs the double-list stage as a deployment with a routing section does "
        "(config/demo.yaml); 'webhook': that, and the subscription's webhook is a route of a policy "
        "(every POST is a health observation); 'none': no routing section (the setup of the figures "
        "before that)",
    )
    ap.add_argument("--profile", action="store_true", help="py-spy the smsflow worker/connector (saturation)")
    ap.add_argument(
        "--profile-scenarios",
        default="sat",
        help="with --profile: the scenarios profiled, comma list of key prefixes (sat, sat-single, sat-mp, "
        "rate1000, ...; default: every saturation run)",
    )
    ap.add_argument(
        "--profile-blocking",
        action="store_true",
        help="with --profile: py-spy stops the process for each sample (whole stacks; slows it: not a run "
        "for throughput or CPU figures)",
    )
    ap.add_argument(
        "--config-set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="smsflow config setting for this run, e.g. event_loop=asyncio (repeatable)",
    )
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument(
        "--numbers",
        type=int,
        default=0,
        help="spread the traffic over this many destination numbers (+8523000xxxx) instead of the mix's "
        "three: sms.inbound.v1 is keyed by destination, so three numbers use at most three partitions",
    )
    ap.add_argument("--workdir", default=str(REPO / ".work" / "bench"))
    ap.add_argument("--json", default="", help="also write results here")
    args = ap.parse_args(argv)
    args.workdir_path = Path(args.workdir).resolve()
    args.workdir_path.mkdir(parents=True, exist_ok=True)
    return report(args, *asyncio.run(run(args)))


if __name__ == "__main__":
    sys.exit(main())
