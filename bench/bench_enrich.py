"""Cost of enrichment per message on the hot path, and its accuracy on the labelled corpus.

    .venv/bin/python bench/bench_enrich.py [--passes 20]

Messages are the corpus texts (tests/data/enrich/*.jsonl). Numbers: "cold" reads a fresh subscriber
number each call (a cache miss: libphonenumber parse + type + operator); "warm" repeats addresses,
which is the inbound OTP case (a few hundred sender codes, our own destination numbers).
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

t0 = time.perf_counter()
from smsflow.enrich import (  # noqa: E402
    detect_language,
    enrich,
    extract_otp,
    normalize_number,
    sender_signature,
)
from smsflow.enrich.corpus import load_corpus, score_corpus  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - t0
CORPORA = {
    "dev": ROOT / "tests/data/enrich/otp_corpus.jsonl",
    "holdout": ROOT / "tests/data/enrich/otp_holdout.jsonl",
}
WARM_SOURCES = [
    ("10690000", 5, 0),
    ("1069012345678", 0, 0),
    ("95588", 0, 0),
    ("JD", 5, 0),
    ("#HSBC", 5, 0),
    ("85261234567", 1, 1),
    ("+852 6123 4567", 0, 0),
    ("13812345678", 2, 1),
]
WARM_DESTINATIONS = [("85291234567", 1, 1), ("13912345678", 0, 0), ("0085251234567", 0, 0)]


def cold_numbers(count: int, rng: random.Random) -> list[tuple[str, int, int]]:
    """Unique subscriber numbers in the forms carriers send."""
    out = []
    for i in range(count):
        cn = f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"
        hk = f"{rng.choice('5679')}{rng.randrange(10**7):07d}"
        out.append(
            [
                (cn, 0, 0),
                ("86" + cn, 1, 1),
                ("+852" + hk, 0, 0),
                ("852" + hk, 1, 1),
            ][i % 4]
        )
    return out


Address = tuple[str, int, int]


def timed(fn: Callable[..., object], *args: object) -> int:
    start = time.perf_counter_ns()
    fn(*args)
    return time.perf_counter_ns() - start


def two_numbers(source: Address, destination: Address, region: str) -> None:
    normalize_number(*source, default_region=region)
    normalize_number(*destination, default_region=region)


def enrich_message(text: str, source: Address, destination: Address, region: str) -> None:
    enrich(text, *source, *destination, default_region=region)


# Texts that took seconds to minutes before the patterns were made linear and the scan bounded
# (docs/enrichment.md, "Bounded work"); the same shapes are asserted in tests/unit/enrich/test_bounded.py.
HOSTILE = {
    "65 KB letters then @": "a" * 64_999 + "@",
    "65 KB one Cyrillic word": "Ё" * 65_000,
    "65 KB dotted run after a keyword": "code " + "a." * 32_500,
    "65 KB spaced digit groups after 验证码": "验证码" + "1234 " * 13_000,
    "255 x 153 chars, @ every 153": ("a" * 152 + "@") * 255,
}


def hostile_table(passes: int) -> None:
    print("| hostile text | enrich() max ms | mean ms |")
    print("|---|---:|---:|")
    for name, text in HOSTILE.items():
        runs = [
            timed(enrich_message, text, WARM_SOURCES[0], WARM_DESTINATIONS[0], "CN") for _ in range(passes)
        ]
        print(f"| {name} | {max(runs) / 1e6:.2f} | {statistics.fmean(runs) / 1e6:.2f} |")
    print()


def percentile(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=20, help="passes over the corpus texts")
    args = parser.parse_args()

    rows = [row for path in CORPORA.values() for row in load_corpus(path)]
    texts = [row["text"] for row in rows]
    rng = random.Random(852)
    region = ["CN", "HK"]

    samples: dict[str, list[int]] = {
        name: []
        for name in (
            "normalize_number x2 (warm)",
            "normalize_number x2 (cold)",
            "extract_otp",
            "sender_signature",
            "detect_language",
            "enrich() total (warm numbers)",
            "enrich() total (cold numbers)",
        )
    }
    cold = cold_numbers(args.passes * len(texts) * 4, rng)
    cold_at = 0
    gc.collect()
    for p in range(args.passes):
        for i, text in enumerate(texts):
            src = WARM_SOURCES[(i + p) % len(WARM_SOURCES)]
            dst = WARM_DESTINATIONS[i % len(WARM_DESTINATIONS)]
            reg = region[i % 2]
            c1, c2, c3, c4 = cold[cold_at : cold_at + 4]
            cold_at += 4
            samples["normalize_number x2 (warm)"].append(timed(two_numbers, src, dst, reg))
            samples["normalize_number x2 (cold)"].append(timed(two_numbers, c1, c2, reg))
            samples["extract_otp"].append(timed(extract_otp, text))
            samples["sender_signature"].append(timed(sender_signature, text))
            samples["detect_language"].append(timed(detect_language, text))
            samples["enrich() total (warm numbers)"].append(timed(enrich_message, text, src, dst, reg))
            samples["enrich() total (cold numbers)"].append(timed(enrich_message, text, c3, c4, reg))

    print(
        f"# enrichment benchmark — {time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, ", end=""
    )
    import_ms = IMPORT_SECONDS * 1000
    print(f"{platform.machine()}, {len(texts)} texts x {args.passes} passes, import {import_ms:.0f} ms")
    print()
    print("| component | p50 µs | p99 µs | mean µs |")
    print("|---|---:|---:|---:|")
    for name, values in samples.items():
        mean = statistics.fmean(values) / 1000
        print(f"| {name} | {percentile(values, 0.50):.1f} | {percentile(values, 0.99):.1f} | {mean:.1f} |")
    print()
    hostile_table(args.passes)
    print(
        "| corpus | messages | with code | TP | FP | FN | precision | recall "
        "| validity right/stated | validity invented | language |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, path in CORPORA.items():
        s = score_corpus(load_corpus(path))
        print(
            f"| {name} | {s.messages} | {s.with_code} | {s.true_positives} | {s.false_positives} "
            f"| {s.false_negatives} | {s.precision:.3f} | {s.recall:.3f} "
            f"| {s.validity_right}/{s.validity_stated} | {s.validity_invented} "
            f"| {s.language_right}/{s.language_scored} |"
        )
        for failure in s.failures:
            print(f"  - {name}: {failure}")


if __name__ == "__main__":
    main()
