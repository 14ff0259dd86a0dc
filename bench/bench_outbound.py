"""Outbound (MT) benchmark: smsflow's POST /v1/messages vs Kannel's sendsms, both ending in submit_sm at the
same simulated SMSC, in one run.

    flock /tmp/smsflow-broker.lock .venv/bin/python -m bench.bench_outbound --count 600 --rates 20,50

- smsflow: a local Kafka broker, the embedded registry, and the real `smsflow api`, `worker` and
  `connector` processes: POST /v1/messages -> sms.outbound.v1 -> outbound agent -> submit topic ->
  connector -> submit_sm.
- Kannel (Debian's bearerbox + smsbox): GET cgi-bin/sendsms (with a delivery report asked for, dlr-mask 1)
  -> smsbox -> bearerbox (spool store on, as smsflow stores to Kafka) -> SMPP transceiver -> submit_sm.

The simulated SMSC (this process) answers every submit_sm and sends a DELIVRD receipt for each one that asked
for it, so both systems also take their receipts. Per system, after a warm-up, these phases (``--repeat`` runs
them again):

- fixed rates: ``count`` messages offered at each of ``--rates`` per second; API->submit_sm latency = the
  SMSC reading the message's submit_sm - the start of its HTTP request (both on this process's monotonic
  clock; every message has its own destination number, which joins them);
- saturation: ``count`` messages from 64 concurrent HTTP clients; MT/s = accepted submits / (last submit_sm
  - first request).

Each phase counts the submits per message (none missing, none twice) and the CPU seconds of every process
(/proc) in the window from the first request until every message is known delivered: smsflow's overall
status `delivered` on sms.outbound.status.v1 (read by this process, not through GET, which would cost the
API CPU), Kannel's DLR callback (dlr-url) with status 1. CPU ms per MT = that / messages; it includes the
receipts' processing. Single-part GSM messages, one bind per system, no TPS limit, a submit window of 64
on both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson
import yaml

from bench.e2e import (
    KannelSystem,
    PySpy,
    SmsflowSystem,
    log,
    machine,
    percentiles,
    print_profiles,
    summarize_profile,
)
from bench.kannel import KannelGateway, KannelOptions, kannel_installed
from bench.kannel import _free_port as free_port
from bench.procstat import cpu_delta, snapshot, steady_cpu
from devkit.demo.receiver import WebhookReceiver
from devkit.simulator.smsc import SimulatedSmsc
from devkit.simulator.submits import SubmitRecord, digits

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "benchpw"  # SMPP 3.4 passwords hold at most 8 octets
SENDER = "+85230009000"
WINDOW = 64  # submit window of each system's bind, and the number of concurrent HTTP clients
CLIENTS = 64


# ---- joining requests to submits (pure; tests/unit/bench/test_outbound_join.py) ---------------------------
@dataclass(frozen=True)
class SubmitJoin:
    """What the SMSC received for one phase's messages, joined by destination number."""

    messages: int
    submitted: int  # messages with at least one accepted submit_sm
    twice: int  # messages accepted more than once (a second SMS on the handset)
    missing: int  # messages with no accepted submit_sm
    latency_ms: list[float]  # per submitted message: its first submit_sm - the start of its request
    mt_per_s: float  # accepted submits / (last submit_sm - first request)


def join_submits(sent: dict[str, float], arrivals: Iterable[tuple[str, float]]) -> SubmitJoin:
    """``sent``: destination digits -> when its request started; ``arrivals``: (destination digits, when the
    SMSC read the submit_sm) of accepted submits. Arrivals for other destinations are ignored."""
    seen: dict[str, list[float]] = {}
    for dest, at in arrivals:
        if dest in sent:
            seen.setdefault(dest, []).append(at)
    latency = [1000 * (min(times) - sent[dest]) for dest, times in seen.items()]
    submits = sum(len(times) for times in seen.values())
    if seen:
        span = max(max(times) for times in seen.values()) - min(sent.values())
        rate = submits / span if span > 0 else 0.0
    else:
        rate = 0.0
    return SubmitJoin(
        messages=len(sent),
        submitted=len(seen),
        twice=sum(1 for times in seen.values() if len(times) > 1),
        missing=len(sent) - len(seen),
        latency_ms=latency,
        mt_per_s=rate,
    )


def accepted_arrivals(records: Iterable[SubmitRecord], account: str) -> list[tuple[str, float]]:
    return [
        (digits(r.dest), r.received_at) for r in records if r.account == account and r.outcome == "accepted"
    ]


# ---- the systems ------------------------------------------------------------------------------------------
class MtSystem(Protocol):
    name: str
    account: str  # its system_id at the SMSC

    async def start(self, smsc: SimulatedSmsc, rx: WebhookReceiver) -> None: ...
    async def stop(self) -> None: ...
    def pids(self) -> dict[str, int]: ...
    async def send(self, http: aiohttp.ClientSession, to: str, text: str) -> None: ...
    async def delivered(self, numbers: list[str], timeout: float) -> int: ...
    def versions(self) -> dict[str, str]: ...
    def logs(self) -> str: ...


class SmsflowMt(SmsflowSystem):
    """smsflow's sending side: the `api` role beside the worker and the connector; the broker, the
    registry, pids, logs and stop are the inbound bench's."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.base = ""
        self.token = ""
        self.ids: dict[str, str] = {}  # destination -> message id
        # the status topic read by this process (not through the API: GETs would cost the API CPU in the
        # measured window): ids of messages whose overall status became delivered
        self.done: set[str] = set()
        self.serde: Any = None
        self.follower: Any = None

    async def start(self, smsc: SimulatedSmsc, rx: WebhookReceiver) -> None:
        from devkit.demo.pipeline import RoleProcess, child_env
        from smsflow.api.apikeys import ApiKeyStore
        from smsflow.compacted import CompactedFollower
        from smsflow.schemas import OUTBOUND_STATUS_TOPIC
        from smsflow.serde import Serde, registry_client
        from smsflow.subscriptions.secretbox import ENV_KEYS, SecretBox

        bootstrap, registry_url = await self.start_broker()
        self.serde = Serde(registry_client(registry_url))
        self.follower = CompactedFollower(
            bootstrap, (OUTBOUND_STATUS_TOPIC,), self._on_status, "bench-status"
        )
        await self.follower.start(60)
        keys = ApiKeyStore()
        key, self.token = keys.issue("bench", label="bench customer")
        _, admin = keys.issue(None, label="bench admin")
        (self.workdir / "keys.jsonl").write_bytes(orjson.dumps(key.to_record()) + b"\n")
        port = free_port()
        cfg = {
            "app_id": f"bench-mt-{int(time.time()) % 10**6}",
            "carriers": [
                {
                    "id": "sim",
                    "route_id": "sim-route",
                    "host": "127.0.0.1",
                    "port": smsc.port,
                    "system_id": self.account,
                    "password_env": "BENCH_SMPP_PASSWORD",
                    "submit_window": WINDOW,
                }
            ],
            "api": {
                "host": "127.0.0.1",
                "port": port,
                "admin_key_env": "BENCH_ADMIN_KEY",
                "keys_file": str(self.workdir / "keys.jsonl"),
                # one bench owner sends everything: unthrottled, as Kannel's sendsms is by default
                "segments_per_second_per_owner": 100_000,
                "segments_burst_per_owner": 10_000_000,
            },
            "data_dir": str(self.workdir / "data"),
        }
        path = self.workdir / "config.yaml"
        path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        secrets = {ENV_KEYS: f"bench:{SecretBox.generate_key()}"}  # the API stores subscriptions sealed
        env = child_env(
            bootstrap, registry_url, {"BENCH_SMPP_PASSWORD": PASSWORD, "BENCH_ADMIN_KEY": admin, **secrets}
        )
        for role in ("worker", "connector", "api"):
            p = RoleProcess(role, [role, "--config", str(path)], env, self.workdir / "logs" / f"{role}.log")
            p.start()
            self.procs[role] = p
        self.base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 120
            while True:
                try:
                    async with http.put(
                        f"{self.base}/v1/holdings/bench",
                        json={"numbers": [SENDER]},
                        headers={"Authorization": f"Bearer {admin}"},
                    ) as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("smsflow api did not take the holding in 120 s")
                await asyncio.sleep(0.2)

    def _on_status(self, msg: Any) -> None:
        value = msg.value()
        if value is None or self.serde is None:
            return
        record = self.serde.decode(msg.topic() or "", value)
        if record.get("segment") is None and record.get("new_state") == "delivered":
            self.done.add(str(record["message_id"]))

    async def send(self, http: aiohttp.ClientSession, to: str, text: str) -> None:
        body = {"to": to, "from": SENDER, "text": text, "priority": "otp"}
        headers = {"Authorization": f"Bearer {self.token}"}
        async with http.post(f"{self.base}/v1/messages", json=body, headers=headers) as r:
            if r.status != 202:
                raise RuntimeError(f"POST /v1/messages answered {r.status}: {await r.text()}")
            self.ids[to] = str((await r.json())["id"])

    async def delivered(self, numbers: list[str], timeout: float) -> int:
        ids = [self.ids[n] for n in numbers if n in self.ids]
        deadline = time.monotonic() + timeout
        while True:
            count = sum(1 for mid in ids if mid in self.done)
            if count == len(numbers) or time.monotonic() > deadline:
                return count
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.follower is not None:
            await self.follower.stop()
        await super().stop()


class KannelMt(KannelSystem):
    """Kannel's sending side: smsbox's sendsms with a DLR callback to this process."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.rx: WebhookReceiver | None = None

    async def start(self, smsc: SimulatedSmsc, rx: WebhookReceiver) -> None:
        self.rx = rx
        opts = KannelOptions(
            "127.0.0.1",
            smsc.port,
            self.account,
            PASSWORD,
            rx.plain_url,  # the MO service's URL: no MO comes in this bench
            max_pending_submits=WINDOW,
            sendsms_user=("bench", "bench"),
            msg_id_type="0x03",  # the simulator's ids are hex in submit_sm_resp and in receipts
        )
        self.gw = KannelGateway(self.workdir, opts)
        log("kannel: starting bearerbox and smsbox")
        await asyncio.to_thread(self.gw.start)

    async def send(self, http: aiohttp.ClientSession, to: str, text: str) -> None:
        assert self.gw is not None and self.rx is not None
        params = {
            "username": "bench",
            "password": "bench",
            "from": SENDER,
            "to": to,
            "text": text,
            "dlr-mask": "1",  # a report for "delivered to phone", as smsflow asks receipts
            "dlr-url": f"{self.rx.plain_url}?dlr={digits(to)}&status=%d",
        }
        async with http.get(self.gw.sendsms_url, params=params) as r:
            if r.status not in (200, 202):
                raise RuntimeError(f"sendsms answered {r.status}: {await r.text()}")

    async def delivered(self, numbers: list[str], timeout: float) -> int:
        assert self.rx is not None
        want = {digits(n) for n in numbers}
        deadline = time.monotonic() + timeout
        while True:
            done = {
                req.query.get("dlr", "")
                for req in self.rx.plain
                if req.query.get("status") == "1" and req.query.get("dlr", "") in want
            }
            if len(done) == len(want) or time.monotonic() > deadline:
                return len(done)
            await asyncio.sleep(0.02)


# ---- a phase ----------------------------------------------------------------------------------------------
@dataclass
class PhaseResult:
    system: str
    phase: str
    messages: int
    submitted: int
    twice: int
    missing: int
    delivered: int  # messages known delivered when the window closed
    mt_per_s: float
    latency_ms: dict[str, float]
    cpu_s: dict[str, float]
    harness_cpu_s: float
    window_s: float
    loadavg: str = field(default="")

    @property
    def cpu_ms_per_mt(self) -> float:
        return 1000 * steady_cpu(self.cpu_s) / max(1, self.messages)


async def _offer(
    system: MtSystem, http: aiohttp.ClientSession, numbers: list[str], rate: float | None
) -> dict[str, float]:
    """Send one message to each number (at ``rate``/s, or as fast as CLIENTS concurrent clients go);
    returns digits of the number -> when its request started."""
    sent: dict[str, float] = {}
    limit = asyncio.Semaphore(CLIENTS)
    start = time.monotonic()

    async def one(i: int, to: str) -> None:
        if rate is not None:
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        async with limit:
            sent[digits(to)] = time.monotonic()
            await system.send(http, to, f"Your code is {i:06d}")

    await asyncio.gather(*(one(i, to) for i, to in enumerate(numbers)))
    return sent


async def _until(what: str, done: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done in {timeout:g} s")
        await asyncio.sleep(0.02)


async def phase(
    system: MtSystem,
    smsc: SimulatedSmsc,
    http: aiohttp.ClientSession,
    label: str,
    numbers: list[str],
    rate: float | None,
    timeout: float = 300.0,
) -> PhaseResult:
    pids = system.pids()
    before, me0 = snapshot(pids), os.times()
    acked0 = smsc.stats.acked  # deliver_sm the system acknowledged: here, receipts
    t0 = time.monotonic()
    sent = await _offer(system, http, numbers, rate)

    def submitted() -> int:
        return sum(1 for d, _ in accepted_arrivals(smsc.submits.records, system.account) if d in sent)

    await _until(f"{system.name}/{label}: submits", lambda: submitted() >= len(numbers), timeout)
    await _until(
        f"{system.name}/{label}: receipts acked", lambda: smsc.stats.acked - acked0 >= len(numbers), timeout
    )
    delivered = await system.delivered(numbers, 60.0)
    after, me1 = snapshot(pids), os.times()
    window = time.monotonic() - t0
    joined = join_submits(sent, accepted_arrivals(smsc.submits.records, system.account))
    return PhaseResult(
        system=system.name,
        phase=label,
        messages=len(numbers),
        submitted=joined.submitted,
        twice=joined.twice,
        missing=joined.missing,
        delivered=delivered,
        mt_per_s=joined.mt_per_s,
        latency_ms=percentiles(joined.latency_ms),
        cpu_s=cpu_delta(before, after),
        harness_cpu_s=(me1.user + me1.system) - (me0.user + me0.system),
        window_s=window,
        loadavg=" ".join(f"{x:.2f}" for x in os.getloadavg()),
    )


# ---- output -----------------------------------------------------------------------------------------------
def table(results: list[PhaseResult]) -> str:
    head = (
        "| system | phase | msgs | submitted / twice / missing | delivered | MT/s | p50 ms | p95 ms | p99 ms "
        "| max ms | CPU ms per MT (per process) | CPU ms per MT | harness CPU s | loadavg |"
    )
    lines = [head, "|" + "---|" * 14]
    for r in results:
        lat = r.latency_ms
        per = ", ".join(f"{k} {1000 * v / max(1, r.messages):.2f}" for k, v in sorted(r.cpu_s.items()))
        lines.append(
            f"| {r.system} | {r.phase} | {r.messages} | {r.submitted} / {r.twice} / {r.missing} "
            f"| {r.delivered} | {r.mt_per_s:.0f} "
            + " ".join(f"| {lat.get(k, float('nan')):.1f}" for k in ("p50", "p95", "p99", "max"))
            + f" | {per} | {r.cpu_ms_per_mt:.2f} | {r.harness_cpu_s:.1f} | {r.loadavg} |"
        )
    return "\n".join(lines)


def spread(results: list[PhaseResult]) -> str:
    """min / median / max per system and phase over ``--repeat`` runs."""
    groups: dict[tuple[str, str], list[PhaseResult]] = {}
    for r in results:
        groups.setdefault((r.system, r.phase.split(" #")[0]), []).append(r)

    def mmm(values: list[float], fmt: str) -> str:
        v = sorted(values)
        return " / ".join(format(x, fmt) for x in (v[0], statistics.median(v), v[-1]))

    lines = ["| system | phase | runs | MT/s | p50 ms | p99 ms | CPU ms per MT |", "|" + "---|" * 7]
    for (system, label), rs in groups.items():
        lines.append(
            f"| {system} | {label} | {len(rs)} | {mmm([r.mt_per_s for r in rs], '.0f')} "
            f"| {mmm([r.latency_ms.get('p50', float('nan')) for r in rs], '.1f')} "
            f"| {mmm([r.latency_ms.get('p99', float('nan')) for r in rs], '.1f')} "
            f"| {mmm([r.cpu_ms_per_mt for r in rs], '.2f')} |"
        )
    return "\n".join(lines)


# ---- main -------------------------------------------------------------------------------------------------
def _spies(system: MtSystem, workdir: Path, label: str) -> dict[str, PySpy]:
    """py-spy on smsflow's Python processes (Kannel is C: its CPU is in the table only)."""
    slug = label.replace(" ", "").replace("#", "-").replace("/", "")
    return {
        f"{system.name}-{role}-{slug}": PySpy(pid, workdir / f"profile-{system.name}-{role}-{slug}.txt")
        for role, pid in system.pids().items()
        if role in ("worker", "connector", "api")
    }


Profiles = dict[str, list[tuple[str, float]]]


async def run(args: argparse.Namespace) -> tuple[list[PhaseResult], dict[str, str], Profiles]:
    smsc = SimulatedSmsc({"smsflow": PASSWORD, "kannel": PASSWORD}, receipts=True, receipt_delay_s=0.2)
    await smsc.start()
    rx = WebhookReceiver("unused")  # Kannel's DLR callbacks (plain GETs)
    await rx.start()
    systems: list[MtSystem] = []
    for name in args.systems.split(","):
        if name == "smsflow":
            systems.append(SmsflowMt(args.workdir))
        elif name == "kannel":
            if not kannel_installed():
                log("kannel: bearerbox not installed; skipped")
                continue
            systems.append(KannelMt(args.workdir))
        else:
            raise SystemExit(f"unknown system {name!r}")
    results: list[PhaseResult] = []
    versions: dict[str, str] = {}
    profiles: Profiles = {}
    prefix = iter(range(10, 100))  # every phase its own destination numbers: the join key
    try:
        for system in systems:
            try:
                await system.start(smsc, rx)
                await _until(
                    f"{system.name}: bind",
                    lambda s=system: any(x.bound and x.system_id == s.account for x in smsc.sessions),
                    120,
                )
                versions.update(system.versions())
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS)) as http:
                    log(f"{system.name}: bound; warm-up")
                    await phase(system, smsc, http, "warm-up", _numbers(next(prefix), 50), None)
                    for rep in range(args.repeat):
                        tag = f" #{rep + 1}" if args.repeat > 1 else ""
                        phases = [*((f"{r:g}/s", r) for r in args.rates), ("saturation", None)]
                        for label, rate in phases:
                            log(f"{system.name}: {label}{tag}")
                            spies = (
                                _spies(system, args.workdir, label + tag) if args.profile and not rate else {}
                            )
                            for spy in spies.values():
                                spy.start()
                            r = await phase(
                                system, smsc, http, label + tag, _numbers(next(prefix), args.count), rate
                            )
                            for name, spy in spies.items():
                                spy.stop()
                                profiles[name] = summarize_profile(spy.out)
                            results.append(r)
                            print(table([r]).splitlines()[-1], flush=True)
            except Exception:
                log(f"{system.name} failed; logs follow\n{system.logs()}")
                raise
            finally:
                await system.stop()
    finally:
        await rx.stop()
        await smsc.stop()
    return results, versions, profiles


def _numbers(prefix: int, count: int) -> list[str]:
    return [f"+8529{prefix:02d}{i:05d}" for i in range(count)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.bench_outbound",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--systems", default="smsflow,kannel", help="comma list: smsflow,kannel")
    ap.add_argument("--count", type=int, default=600, help="messages per phase")
    ap.add_argument(
        "--rates",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[20.0, 50.0],
        help="offered rates of the fixed-rate phases (msg/s), comma list",
    )
    ap.add_argument("--repeat", type=int, default=1, help="run the measured phases this many times")
    ap.add_argument(
        "--profile", action="store_true", help="py-spy smsflow's processes in the saturation phases"
    )
    ap.add_argument("--workdir", type=Path, default=REPO / ".work" / "bench-outbound")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    args.workdir = args.workdir.resolve()
    results, versions, profiles = asyncio.run(run(args))
    print(f"\ncommand: {' '.join(sys.argv)}\nmachine: {machine()}\nversions: {versions}")
    print(table(results))
    if args.repeat > 1:
        print(f"\nmin / median / max over the repeated runs:\n{spread(results)}")
    print_profiles(profiles)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {
            "command": " ".join(sys.argv),
            "machine": machine(),
            "versions": versions,
            "results": [asdict(r) | {"cpu_ms_per_mt": r.cpu_ms_per_mt} for r in results],
            "profiles": profiles,
        }
        args.json.write_text(json.dumps(out, indent=1))
    bad = [r for r in results if r.missing or r.twice]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
