"""What one outbound validity tick costs the status agent (no Kafka), as the table of tracks grows.

    .venv/bin/python -m bench.bench_outbound_tick [--tracks 5000,100000]

The table holds `n` tracks, 99 % finished (rejected at once) and 1 % pending with a far validity: what a
worker holds after sending `n` messages. Main's tick (before issue 12/13) walked every track and hashed each
key with murmur2 on every tick of every partition; the expiry index walks the table once per assignment of a
partition (the first tick) and then reads only the tracks that are due.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from smsflow.outbound.submission import Plan
from smsflow.outbound.tracking import Track, begin, expire
from streams.outbound import OutboundStage, _partition_of
from tests.unit.streams.test_outbound_expiry import T, stage

TICKS = 100


async def walk_every_track(s: OutboundStage, partition: int, now_ms: int) -> None:
    """Main's `_expire_partition` before the expiry index, for the comparison."""
    for mid, raw in list(s.tracks.items()):
        if raw is None or _partition_of(mid, s.ctx.partitions) != partition:
            continue
        track = Track.from_dict(raw)
        if track.final or now_ms < track.status.expires_at_ms:
            continue
        track, records = expire(track, now_ms)
        await s._publish(records)
        s.tracks[mid] = track.to_dict()


async def measure(n: int) -> None:
    s, tracks, _ = stage()
    for i in range(n):
        mid = f"m{i}"
        track, _records = begin(
            Plan(mid, "acme", 1, T + 10**9, None, T, None if i % 100 == 0 else "no route")
        )
        tracks[mid] = track.to_dict()
    t0 = time.perf_counter()
    await walk_every_track(s, 0, T + 1_000)
    old = time.perf_counter() - t0
    t0 = time.perf_counter()
    await s._expire_partition(0, T + 1_000)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k in range(TICKS):
        await s._expire_partition(0, T + 2_000 + k)
    new = (time.perf_counter() - t0) / TICKS
    print(
        f"{n} tracks: walking every track {old * 1000:.1f} ms per partition per tick; index: first tick "
        f"(rebuild) {first * 1000:.1f} ms, then {new * 1e6:.1f} us per partition per tick"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tracks", default="5000,100000")
    args = parser.parse_args()
    for n in (int(x) for x in args.tracks.split(",")):
        asyncio.run(measure(n))


if __name__ == "__main__":
    main()
