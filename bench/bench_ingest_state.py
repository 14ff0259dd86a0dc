"""What the ingest tables cost per SMS over the dedup window: memory (in-memory store) and changelog bytes.

    .venv/bin/python bench/bench_ingest_state.py [--messages 20000] [--multipart 0.3]

Feeds the ingest processor the simulator's traffic mix (GSM/UCS-2, single and 2-4 part SMS) at 1,000 SMS/s of
carrier time, all inside one dedup window, then reports per SMS: live table entries, Python heap held by the
two tables (tracemalloc), and the bytes the writes put on the changelog topics (JSON values, as Faust writes
them). Then it lets the window pass and checks the tables return to empty (memory flat over the window).
"""

from __future__ import annotations

import argparse
import json
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devkit.simulator.traffic import TrafficMix  # noqa: E402
from smsflow.ingest.origin import RecordOrigin  # noqa: E402
from smsflow.ingest.processor import IngestProcessor, IngestSettings  # noqa: E402
from tests.factories import segment_records  # noqa: E402


def deep_size(obj: object, seen: set[int] | None = None) -> int:
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple):
        size += sum(deep_size(v, seen) for v in obj)
    return size


class CountingTable(dict):  # type: ignore[type-arg]
    """A dict that counts the changelog bytes its writes would produce."""

    def __init__(self) -> None:
        super().__init__()
        self.changelog_bytes = 0
        self.writes = 0

    def __setitem__(self, k: str, v: object) -> None:
        super().__setitem__(k, v)
        self.writes += 1
        self.changelog_bytes += len(k) + len(json.dumps(v))

    def __delitem__(self, k: str) -> None:
        super().__delitem__(k)
        self.writes += 1
        self.changelog_bytes += len(k)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--multipart", type=float, default=0.3)
    ap.add_argument("--rate", type=int, default=1000, help="SMS per second of carrier time")
    args = ap.parse_args()
    window_ms = 600_000
    settings = IngestSettings(dedup_window_ms=window_ms, clock_skew_ms=5_000)
    partials, seen = CountingTable(), CountingTable()
    proc = IngestProcessor(partials, seen, settings)
    mix = TrafficMix(seed=7, multipart_ratio=args.multipart)
    t0 = 1_700_000_000_000
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    off = 0
    for i in range(args.messages):
        sms = mix.next()
        t = t0 + i * 1000 // args.rate
        for rec in segment_records(sms.text, sms.data_coding, sms.method, i % 256, source=sms.source):
            proc.on_raw({**rec, "received_at": t}, RecordOrigin("sms.raw.v1", 0, off), None).apply_deferred()
            off += 1
    process_growth = tracemalloc.get_traced_memory()[0] - base
    held = deep_size(partials) + deep_size(seen)
    n = args.messages
    print(
        f"{n} SMS ({args.multipart:.0%} multipart), {off} raw records, "
        f"all within one {window_ms // 1000} s window"
    )
    print(
        f"  live keys: partials {len(partials)}, seen {len(seen)} "
        f"({(len(partials) + len(seen)) / n:.2f} per SMS)"
    )
    print(f"  Python objects held by the two tables: {held / n:.0f} B per SMS ({held / 2**20:.1f} MiB)")
    print(f"  (whole process heap growth incl. enrichment caches: {process_growth / n:.0f} B per SMS)")
    print(
        f"  changelog written: {(partials.changelog_bytes + seen.changelog_bytes) / n:.0f} B per SMS, "
        f"{(partials.writes + seen.writes) / n:.2f} records per SMS"
    )
    at_rate = held / n * args.rate * window_ms / 1000
    print(
        f"  => at {args.rate} SMS/s over a {window_ms // 1000} s window: "
        f"{at_rate / 2**20:.0f} MiB of table state"
    )
    # let the window pass: a commit past every record, then a tick once the stream time moved on
    last = t0 + n * 1000 // args.rate
    late = segment_records("after the window", 0, "single", 0)[0]
    proc.on_raw({**late, "received_at": last + window_ms + 10_000}, RecordOrigin("sms.raw.v1", 0, off), None)
    proc.on_commit(0, off + 1)
    proc.on_tick(0).apply_deferred()
    print(f"  after the window: partials {len(partials)} keys, seen {len(seen)} keys (the one late SMS)")


if __name__ == "__main__":
    main()
