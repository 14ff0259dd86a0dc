"""What one long multipart SMS costs the ingest processor (no Kafka): the reassembly path of issue 9's
volume case, a legal 255-part SMS, on in-memory tables that count their reads.

    .venv/bin/python -m bench.bench_multipart [--parts 255] [--runs 5]

Every part asks which parts are held; before PartStore kept the open messages' parts, that was ``total``
table reads per part (130,050 for 255 parts, ~0.5 s on the 2-core machine, on the worker's event loop).
"""

from __future__ import annotations

import argparse
import statistics
import time

from smsflow.ingest.origin import RecordOrigin
from smsflow.ingest.processor import IngestProcessor, IngestSettings
from tests.factories import CountingTable, segment_records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", type=int, default=255)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    records = segment_records("x" * (153 * args.parts), 0, "udh8", 77)
    times, reads = [], 0
    for _ in range(args.runs):
        partials = CountingTable()
        proc = IngestProcessor(partials, {}, IngestSettings())
        t0 = time.perf_counter()
        for off, rec in enumerate(records):
            proc.on_raw(rec, RecordOrigin("sms.raw.v1", 0, off), None)
        times.append(1000 * (time.perf_counter() - t0))
        reads = partials.reads
    print(
        f"{len(records)} parts: min/median/max {min(times):.0f} / {statistics.median(times):.0f} / "
        f"{max(times):.0f} ms per message, {reads} reassembly-table reads"
    )


if __name__ == "__main__":
    main()
