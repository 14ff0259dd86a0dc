"""Outbound benchmark: POST /v1/messages -> submit_sm received by the simulated SMSC.

    flock /tmp/smsflow-broker.lock .venv/bin/python -m bench.bench_outbound --count 600 --rate 50

A local Kafka broker, the embedded registry, the real `smsflow api`, `worker` and `connector` processes, and
the simulated SMSC in this process (which sends a receipt for every accepted submit). Two runs:

- latency at a fixed offered rate: POST start -> the SMSC reading that message's submit_sm (both clocks are
  this process's monotonic clock; each message has its own destination number, which joins them);
- saturation: `count` messages POSTed by 64 concurrent clients; MT submissions per second = accepted
  submits / (last submit - first submit) at the SMSC.
Single-part GSM messages, one bind, no TPS limit. Figures go to docs/BENCHMARKS.md with the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from bench.e2e import _fresh_dir, log, machine, percentiles
from bench.kannel import _free_port as free_port
from devkit.simulator.smsc import SimulatedSmsc

PASSWORD = "benchpw"  # SMPP 3.4 passwords hold at most 8 octets
SENDER = "+85230009000"


async def _post_all(
    base: str, token: str, numbers: list[str], rate: float | None, sent: dict[str, float]
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    limit = asyncio.Semaphore(64)
    start = time.monotonic()

    async def one(http: aiohttp.ClientSession, i: int, to: str) -> None:
        if rate is not None:
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        async with limit:
            sent[to] = time.monotonic()
            body = {"to": to, "from": SENDER, "text": f"Your code is {i:06d}", "priority": "otp"}
            async with http.post(f"{base}/v1/messages", json=body, headers=headers) as r:
                if r.status != 202:
                    raise RuntimeError(f"POST answered {r.status}: {await r.text()}")

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(one(http, i, to) for i, to in enumerate(numbers)))


async def _wait_submits(smsc: SimulatedSmsc, want: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(smsc.submits.accepted()) < want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(smsc.submits.accepted())} of {want} submits in {timeout:g} s")
        await asyncio.sleep(0.1)


async def run(count: int, rate: float, workdir: Path) -> dict[str, Any]:
    from devkit.demo.pipeline import RoleProcess, child_env
    from devkit.local.kafka import LocalKafka
    from devkit.registry import RegistryThread
    from smsflow.api.apikeys import ApiKeyStore
    from smsflow.subscriptions.secretbox import ENV_KEYS, SecretBox
    from smsflow.topics import ensure_topics, load_manifest

    await asyncio.to_thread(_fresh_dir, workdir)
    smsc = SimulatedSmsc({"bench": PASSWORD}, receipts=True)
    await smsc.start()
    kafka = LocalKafka(workdir / "kafka")
    await asyncio.to_thread(kafka.fetch)
    await asyncio.to_thread(kafka.format)
    await asyncio.to_thread(kafka.start)
    procs: list[Any] = []
    registry = None
    try:
        await asyncio.to_thread(kafka.wait_ready, 120)
        await asyncio.to_thread(ensure_topics, kafka.bootstrap, load_manifest())
        registry = RegistryThread(kafka.bootstrap)
        registry_url = await asyncio.to_thread(registry.start)
        keys = ApiKeyStore()
        key, token = keys.issue("bench", label="bench customer")
        _, admin = keys.issue(None, label="bench admin")
        (workdir / "keys.jsonl").write_bytes(orjson.dumps(key.to_record()) + b"\n")
        port = free_port()
        cfg = {
            "app_id": f"bench-mt-{int(time.time()) % 10**6}",
            "carriers": [
                {
                    "id": "sim",
                    "route_id": "sim-route",
                    "host": "127.0.0.1",
                    "port": smsc.port,
                    "system_id": "bench",
                    "password_env": "BENCH_SMPP_PASSWORD",
                    "submit_window": 64,
                }
            ],
            "api": {
                "host": "127.0.0.1",
                "port": port,
                "admin_key_env": "BENCH_ADMIN_KEY",
                "keys_file": str(workdir / "keys.jsonl"),
            },
            "data_dir": str(workdir / "data"),
        }
        path = workdir / "config.yaml"
        path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        secrets = {ENV_KEYS: f"bench:{SecretBox.generate_key()}"}  # the API stores subscriptions sealed
        env = child_env(
            kafka.bootstrap,
            registry_url,
            {"BENCH_SMPP_PASSWORD": PASSWORD, "BENCH_ADMIN_KEY": admin, **secrets},
        )
        for role in ("worker", "connector", "api"):
            p = RoleProcess(role, [role, "--config", str(path)], env, workdir / "logs" / f"{role}.log")
            p.start()
            procs.append(p)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                try:
                    async with http.put(
                        f"{base}/v1/holdings/bench",
                        json={"numbers": [SENDER]},
                        headers={"Authorization": f"Bearer {admin}"},
                    ) as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        await smsc.wait_bound(60)
        # warm-up: the worker's first partitions assignment and the registry's schemas
        warm: dict[str, float] = {}
        await _post_all(base, token, [f"+852910{i:05d}" for i in range(20)], None, warm)
        await _wait_submits(smsc, 20, 180)
        log("outbound bench: warmed up")

        sent: dict[str, float] = {}
        numbers = [f"+852920{i:05d}" for i in range(count)]
        await _post_all(base, token, numbers, rate, sent)
        await _wait_submits(smsc, 20 + count, 300)
        got = {"+" + r.dest: r.received_at for r in smsc.submits.accepted() if ("+" + r.dest) in sent}
        latency_ms = [(got[n] - sent[n]) * 1000 for n in numbers]

        burst: dict[str, float] = {}
        burst_numbers = [f"+852930{i:05d}" for i in range(count)]
        await _post_all(base, token, burst_numbers, None, burst)
        await _wait_submits(smsc, 20 + 2 * count, 300)
        times = sorted(r.received_at for r in smsc.submits.accepted() if ("+" + r.dest) in burst)
        mt_per_s = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        assert smsc.submits.submitted_twice() == []
        return {
            "count": count,
            "rate": rate,
            "api_to_submit_ms": {k: round(v, 1) for k, v in percentiles(latency_ms).items()},
            "saturation_mt_per_s": round(mt_per_s, 1),
            "machine": machine(),
        }
    finally:
        for p in reversed(procs):
            await asyncio.to_thread(p.stop)
        if registry is not None:
            await asyncio.to_thread(registry.stop)
        await asyncio.to_thread(kafka.stop)
        await smsc.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=600)
    ap.add_argument("--rate", type=float, default=50.0, help="offered rate of the latency run (messages/s)")
    ap.add_argument("--workdir", type=Path, default=Path(".work/bench-outbound"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    result = asyncio.run(run(args.count, args.rate, args.workdir))
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
