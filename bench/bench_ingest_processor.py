"""What the ingest stage's processor costs per raw record (no Kafka, Avro or spans), with and without the
connector's reading of the numbers handed on in ``sms.raw.v1`` (smsflow/numbers/handoff.py).

    .venv/bin/python -m bench.bench_ingest_processor [--messages 6000] [--rounds 3]

The records are the e2e bench's traffic (``TrafficMix(seed=5, multipart_ratio=0.2)``: every sender a new
+852/+86 mobile, so every sender's reading is cold), made the way ``tests.factories.segment_records`` makes
them; "handed on" adds the ``numbers`` field the connector writes. The number cache is emptied before each
round; language answers are kept across rounds, as in a running process (``--plain-language``: none kept).
Both variants must produce the same inbound records (checked).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from devkit.simulator.traffic import TrafficMix
from smsflow.enrich import language
from smsflow.ingest.origin import RecordOrigin
from smsflow.ingest.processor import IngestProcessor, IngestSettings
from smsflow.numbers.handoff import read_pair
from smsflow.numbers.normalize import _normalize
from tests.factories import segment_records


def records(messages: int, handed_on: bool) -> list[dict[str, Any]]:
    mix = TrafficMix(seed=5, multipart_ratio=0.2)
    out = []
    for i in range(messages):
        sms = mix.next()
        for rec in segment_records(
            sms.text, sms.data_coding, sms.method, i % 256, source=sms.source, dest=sms.dest
        ):
            rec = {**rec, "received_at": 1_700_000_000_000 + i}
            if handed_on:
                rec["numbers"] = read_pair(
                    rec["source_addr"],
                    rec["source_addr_ton"],
                    rec["destination_addr"],
                    rec["dest_addr_ton"],
                    None,
                )[2]
            out.append(rec)
    return out


def run(recs: list[dict[str, Any]]) -> tuple[float, list[dict[str, Any]]]:
    proc = IngestProcessor({}, {}, IngestSettings(dedup_window_ms=600_000, clock_skew_ms=5_000))
    _normalize.cache_clear()
    inbound = []
    t0 = time.perf_counter()
    for off, rec in enumerate(recs):
        outs = proc.on_raw(rec, RecordOrigin("sms.raw.v1", 0, off), None)
        outs.apply_deferred()
        inbound += [p.record for p in outs]
    return time.perf_counter() - t0, inbound


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=6000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--plain-language",
        action="store_true",
        help="work out every text's language (no answers kept per template: the code before fac715a)",
    )
    args = ap.parse_args()
    if args.plain_language:
        language._language_of_body = language._language_of_body.__wrapped__  # type: ignore[assignment]
    plain, handed = records(args.messages, False), records(args.messages, True)
    times: dict[str, list[float]] = {"read again": [], "handed on": []}
    outputs = {}
    for _ in range(args.rounds):
        for name, recs in (("read again", plain), ("handed on", handed)):
            seconds, outputs[name] = run(recs)
            times[name].append(seconds / len(recs) * 1e6)

    def same(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items() if k != "completed_at"}

    assert [same(r) for r in outputs["read again"]] == [same(r) for r in outputs["handed on"]]
    print(
        f"{args.messages} SMS, {len(plain)} raw records; µs per raw record, "
        f"min / median / max of {args.rounds}:"
    )
    for name, ts in times.items():
        print(f"  {name:10s}  {min(ts):6.1f} / {statistics.median(ts):6.1f} / {max(ts):6.1f}")


if __name__ == "__main__":
    main()
