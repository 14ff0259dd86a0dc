"""The connector's producer at a steady rate, with and without its gather (``AsyncProducer``'s ``gather``).

Sends ``--rate`` records per second (sized like the connector's ``sms.raw.v1`` records, keyed per
conversation over ``--keys`` keys) through ``AsyncProducer`` with the connector's producer settings, each
send awaited by a task of its own as the connector's sessions do, for ``--seconds``; alternates gather off
and on ``--rounds`` times. Reports, per variant, this process's CPU per record (librdkafka's threads
included; the pacing loop is the same in both), the broker's CPU per record (JIT threads apart), produce
requests per record (``--request-log``: the broker logs them; not a run for CPU figures then) and the
send→ack latency.

    .venv/bin/python -m bench.bench_producer_gather [--rate 1200 --seconds 15 --rounds 3 --gather-ms 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

from bench.procstat import sample
from smsflow.pace import Pace
from smsflow.producer import AsyncProducer, producer_conf


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def count_produce_requests(log: Path, since: int, topic: str) -> tuple[int, int]:
    """Produce requests naming ``topic`` in the broker's request log after byte ``since``; the new end."""
    with log.open("rb") as f:
        f.seek(since)
        data = f.read()
    n = sum(1 for line in data.splitlines() if b"PRODUCE" in line and topic.encode() in line)
    return n, since + len(data)


async def run_variant(
    bootstrap: str, topic: str, rate: float, seconds: float, gather_ms: float, keys: int
) -> dict:
    gather = Pace(gather_ms / 1000, 400.0, time.monotonic) if gather_ms > 0 else None
    p = AsyncProducer(producer_conf(bootstrap, **{"linger.ms": 2}), gather=gather)
    value = os.urandom(260)
    rng = random.Random(7)
    key_pool = [
        f"+8529{rng.randrange(10**7):07d}|+8521{rng.randrange(10**5):05d}".encode() for _ in range(keys)
    ]
    latencies: list[float] = []

    async def one(key: bytes) -> None:
        t0 = time.monotonic()
        await p.send(topic, value, key=key)
        latencies.append(time.monotonic() - t0)

    # warm: connections, metadata, the idempotent producer's id
    await asyncio.gather(*(one(k) for k in key_pool[:50]))
    latencies.clear()
    tasks: set[asyncio.Task[None]] = set()
    interval = 1 / rate
    cpu0, t0 = _cpu(), time.monotonic()
    sent, next_at = 0, t0
    while time.monotonic() - t0 < seconds:
        now = time.monotonic()
        while next_at <= now:
            task = asyncio.create_task(one(key_pool[sent % keys]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
            next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.gather(*tasks)
    cpu = _cpu() - cpu0
    await p.close()
    latencies.sort()
    return {
        "sent": sent,
        "cpu_us_per_record": cpu / sent * 1e6,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


async def main_async(args: argparse.Namespace) -> None:
    from devkit.local.kafka import LocalKafka
    from smsflow.topics import ensure_topics, load_manifest

    with tempfile.TemporaryDirectory(prefix="bench-gather-") as tmp:
        kafka = LocalKafka(Path(tmp) / "kafka", request_log=args.request_log)
        await asyncio.to_thread(kafka.fetch)
        await asyncio.to_thread(kafka.format)
        await asyncio.to_thread(kafka.start)
        try:
            await asyncio.to_thread(kafka.wait_ready, 120)
            await asyncio.to_thread(ensure_topics, kafka.bootstrap, load_manifest())
            broker_pid = kafka.pid
            assert broker_pid is not None
            topic = "sms.raw.v1"
            log_at = 0
            results: dict[float, list[dict]] = {0.0: [], args.gather_ms: []}
            variants = [0.0, args.gather_ms]
            # one unmeasured round first: the broker's JIT compiles its hot paths
            await run_variant(kafka.bootstrap, topic, args.rate, min(args.seconds, 10), 0.0, args.keys)
            if args.request_log:
                _, log_at = count_produce_requests(kafka.request_log_path, 0, topic)
            for r in range(args.rounds):
                for g in variants if r % 2 == 0 else reversed(variants):
                    b0 = sample(broker_pid)
                    res = await run_variant(kafka.bootstrap, topic, args.rate, args.seconds, g, args.keys)
                    b1 = sample(broker_pid)
                    assert b0 is not None and b1 is not None
                    res["broker_us_per_record"] = (b1.seconds - b0.seconds) / res["sent"] * 1e6
                    if args.request_log:
                        await asyncio.sleep(0.5)
                        n, log_at = count_produce_requests(kafka.request_log_path, log_at, topic)
                        res["produce_requests_per_record"] = n / res["sent"]
                    results[g].append(res)
                    print(
                        f"gather {g:g} ms: " + ", ".join(f"{k} {v:.2f}" for k, v in res.items()), flush=True
                    )
            print("\nmin / median / max over the rounds:")
            for g, rows in results.items():
                line = [f"gather {g:g} ms"]
                for k in rows[0]:
                    if k == "sent":
                        continue
                    vals = sorted(row[k] for row in rows)
                    line.append(f"{k} {vals[0]:.2f} / {statistics.median(vals):.2f} / {vals[-1]:.2f}")
                print(" | ".join(line))
        finally:
            await asyncio.to_thread(kafka.stop)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1200.0, help="records per second (1,000 SMS/s ≈ 1,190)")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gather-ms", type=float, default=4.0)
    ap.add_argument("--keys", type=int, default=5000, help="distinct record keys (conversations)")
    ap.add_argument("--request-log", action="store_true", help="count produce requests (costs broker CPU)")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
