"""What the double-list health stage costs per busy webhook route: the feed's work per record and snapshot.

    .venv/bin/python -m bench.bench_route_health [--routes 10,100,300] [--seconds 60]

No Kafka: ``HealthFeed`` (the ``routes-health`` agent's state) fed what the workers write for N double-listed
endpoints that each get attempts all the time: a ``webhook_attempts`` record per route every 0.25 s (one
worker; ``AttemptTally``), 4 attempts per route per record. For each N it times applying a record and making
+ JSON-encoding the snapshot (what the agent writes to its changelog), and prints what one second of traffic
costs the stage under two rules: a snapshot after every record (the agent before 2026-12-03), and batched as
streams/routes.py does (at most every ``SNAPSHOT_INTERVAL_S``, further apart when a snapshot takes more than
``SNAPSHOT_SHARE`` of that). One record per POST, as the workers wrote before the tally, multiplies the
record count by the attempts per record (x4 here; x the rate on a busy endpoint).
"""

from __future__ import annotations

import argparse
import json
import random
import time

from smsflow.routing.feed import HealthFeed
from smsflow.routing.model import Route, RouteKind, RoutingSection
from smsflow.routing.observations import AttemptOutcome, AttemptTally, WebhookAttempt
from streams.routes import SNAPSHOT_INTERVAL_S, SNAPSHOT_SHARE

T0 = 1_700_000_000_000
TALLY_S = 0.25
ATTEMPTS_PER_RECORD = 4


def run(routes: int, seconds: int, rng: random.Random) -> dict[str, float]:
    rs = tuple(
        Route(id=f"sub_{i}.main", kind=RouteKind.WEBHOOK, url=f"https://h{i}.example/sms")
        for i in range(routes)
    )
    feed = HealthFeed(RoutingSection(routes=rs), start=T0)
    tally = AttemptTally(10_000)
    t, offset, apply_s, snap_s, snaps, size = T0, 0, 0.0, 0.0, 0, 0
    for _ in range(int(seconds / TALLY_S)):
        t += int(TALLY_S * 1000)
        for r in rs:
            for k in range(ATTEMPTS_PER_RECORD):
                outcome = AttemptOutcome.SUCCESS if rng.random() > 0.01 else AttemptOutcome.TIMEOUT
                tally.add(WebhookAttempt(r.id, t - k, outcome, rng.lognormvariate(3, 1)))
        for rec in tally.take("worker"):
            a = time.process_time()
            feed.on_record(rec, offset)
            b = time.process_time()
            apply_s += b - a
            offset += 1
            if offset % 10 == 0:  # timing every snapshot would double the run; every tenth is enough
                encoded = json.dumps(feed.snapshot())
                snap_s += time.process_time() - b
                snaps += 1
                size = len(encoded)
    per_record = apply_s / offset
    per_snapshot = snap_s / max(snaps, 1)
    records_per_s = routes / TALLY_S
    return {
        "routes": routes,
        "records_per_s": records_per_s,
        "apply_us": per_record * 1e6,
        "snapshot_ms": per_snapshot * 1e3,
        "snapshot_kb": size / 1024,
        "cpu_per_s_each": records_per_s * (per_record + per_snapshot),
        "cpu_per_s_batched": records_per_s * per_record
        + min(records_per_s, 1 / max(SNAPSHOT_INTERVAL_S, per_snapshot / SNAPSHOT_SHARE)) * per_snapshot,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--routes", default="10,100,300")
    ap.add_argument("--seconds", type=int, default=60)
    args = ap.parse_args()
    rng = random.Random(13)
    print(
        "| busy routes | records/s | apply µs/record | snapshot ms (KB) "
        "| stage CPU s per s: snapshot per record | batched (streams/routes.py) |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for n in (int(x) for x in args.routes.split(",")):
        r = run(n, args.seconds, rng)
        print(
            f"| {n} | {r['records_per_s']:.0f} | {r['apply_us']:.0f} "
            f"| {r['snapshot_ms']:.2f} ({r['snapshot_kb']:.0f}) "
            f"| {r['cpu_per_s_each']:.3f} | {r['cpu_per_s_batched']:.3f} |"
        )


if __name__ == "__main__":
    main()
