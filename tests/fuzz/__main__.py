"""Run the fuzz targets for a long time: ``.venv/bin/python -m tests.fuzz --inputs 1000000``.

Each target is the hypothesis test of tests/fuzz/targets.py, driven through Hypothesis's
``fuzz_one_input`` with seeded random buffers: no shrinking or example database per input, so it runs
about ten times faster than ``max_examples`` would. An input that breaks a property is written to
``--out`` (the buffer, replayable with ``--replay``) and the run goes on. docs/fuzzing.md has the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
import traceback
from pathlib import Path

from tests.fuzz import properties
from tests.fuzz.properties import TALLY
from tests.fuzz.targets import build


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="stop after this many inputs in all")
    parser.add_argument("--seconds", type=float, default=None, help="or after this long")
    parser.add_argument("--targets", default="pdu,receipt,ingest,enrich")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--variants", type=int, default=20, help="byte-level variants of each generated input"
    )
    parser.add_argument("--out", type=Path, default=Path(".work/fuzz"))
    parser.add_argument("--replay", type=Path, default=None, help="run one saved buffer and show the failure")
    args = parser.parse_args()

    properties.VARIANTS = args.variants
    targets = build(examples=1)
    names = args.targets.split(",")
    if args.replay is not None:
        name = args.replay.name.split("-")[0]
        targets[name].hypothesis.fuzz_one_input(args.replay.read_bytes())  # type: ignore[attr-defined]
        print("no failure")
        return 0

    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    failures: dict[str, int] = {}
    start = last = time.monotonic()
    while sum(TALLY.inputs.values()) < args.inputs:
        if args.seconds is not None and time.monotonic() - start > args.seconds:
            break
        name = names[rng.randrange(len(names))]
        buffer = rng.randbytes(rng.choice((64, 256, 1024, 4096)))
        try:
            targets[name].hypothesis.fuzz_one_input(buffer)  # type: ignore[attr-defined]
        except Exception as exc:  # a fuzzer reports every failure and goes on
            signature = f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
            if signature not in failures:
                path = args.out / f"{name}-{hashlib.sha1(buffer).hexdigest()[:12]}"
                path.write_bytes(buffer)
                print(f"FAILURE {signature}\n  saved {path}", file=sys.stderr)
                traceback.print_exc(limit=6)
            failures[signature] = failures.get(signature, 0) + 1
        if time.monotonic() - last > 30:
            last = time.monotonic()
            print(f"{last - start:7.0f} s  {dict(TALLY.inputs)}", file=sys.stderr, flush=True)
    elapsed = time.monotonic() - start
    total = sum(TALLY.inputs.values())
    print(
        f"inputs: {total} in {elapsed:.0f} s ({total / elapsed:.0f}/s), "
        f"seed {args.seed}, variants {args.variants}"
    )
    print(f"  by target: {dict(TALLY.inputs)}")
    print(f"  outcomes: {dict(TALLY.outcomes)}")
    print(f"  distinct failures: {len(failures)}")
    for signature, count in failures.items():
        print(f"    {count} x {signature}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
