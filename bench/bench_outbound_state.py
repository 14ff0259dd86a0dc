"""What the outbound path keeps per message, and what remembering it costs (no Kafka).

    .venv/bin/python -m bench.bench_outbound_state [--keys 20000] [--segments 20000]

- The API's Idempotency-Key book (`smsflow.outbound.idempotency.IdempotencyBook`): CPU per `remember` as the
  book grows, and bytes per key (tracemalloc). Before 16af691 the book was a value copied whole on every
  keyed request; ``--copying`` times that form too (quadratic: keep ``--keys`` small).
- The connector's ledger per segment (`SubmitPath._fold`): bytes per accepted segment, the key included.
  Before a4a9bc1 every segment kept its whole `Ledger` (``--full-ledgers`` measures that form).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

from connectors.smpp.submit import SubmitPath
from smsflow.config import OutboundConfig
from smsflow.outbound.idempotency import DAY_MS, IdempotencyBook, Remembered, fingerprint
from smsflow.outbound.ledger import Intent, Ledger, Outcome

BODY = {"to": "+85291234567", "from": "+85230001000", "text": "Your code is 123456", "priority": "otp"}
T0 = 1_700_000_000_000


class CopyingBook:
    """The book before 16af691: a value, copied whole (and filtered for expiry) on every remember."""

    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], Remembered] = {}

    def remember(self, owner: str, key: str, message_id: str, now_ms: int) -> None:
        live = {k: v for k, v in self.keys.items() if now_ms - v.at_ms < DAY_MS}
        live[(owner, key)] = Remembered(fingerprint(BODY), message_id, now_ms)
        self.keys = live


def idempotency(n: int, copying: bool) -> None:
    book = IdempotencyBook()
    tracemalloc.start()
    started = time.process_time()
    for i in range(n):
        book.remember("acme", f"order-{i:012d}", BODY, f"mt_{i:032x}", T0 + i)
    cpu = time.process_time() - started
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    started = time.process_time()
    for i in range(1000):
        book.remember("acme", f"more-{i}", BODY, f"mt_more{i}", T0 + n + i)
    per = (time.process_time() - started) / 1000
    print(f"idempotency book: {n:,} keys remembered in {cpu:.2f} s CPU; at {n:,} keys {per * 1e6:.1f} µs "
          f"per remember; {size / n:.0f} bytes per key (book, key and id strings)")  # fmt: skip
    if copying:
        old = CopyingBook()
        started = time.process_time()
        for i in range(n):
            old.remember("acme", f"order-{i:012d}", f"mt_{i:032x}", T0 + i)
        cpu = time.process_time() - started
        started = time.process_time()
        for i in range(20):
            old.remember("acme", f"more-{i}", f"mt_more{i}", T0 + n + i)
        per = (time.process_time() - started) / 20
        print(f"  copying book (before): {n:,} keys in {cpu:.2f} s CPU; {per * 1e3:.2f} ms per remember")


def ledgers(n: int, full: bool) -> None:
    path = SubmitPath("bench", "127.0.0.1:9", [], {}, None, OutboundConfig())  # type: ignore[arg-type]
    tracemalloc.start()
    for i in range(n):
        mid = f"mt_{i:032x}"
        path._fold(Intent(mid, 1, 1, "route-0", "+85291234567", None, T0 + i))
        path._fold(Outcome(mid, 1, 1, "accepted", T0 + i + 100, f"{i:08X}", 0))
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"connector ledgers: {size / n:.0f} bytes per accepted segment ({n:,} segments)")
    if full:
        kept: dict[tuple[str, int], Ledger] = {}
        tracemalloc.start()
        for i in range(n):
            mid = f"mt_{i:032x}"
            ledger = Ledger().add(Intent(mid, 1, 1, "route-0", "+85291234567", None, T0 + i))
            assert isinstance(ledger, Ledger)
            ledger = ledger.add(Outcome(mid, 1, 1, "accepted", T0 + i + 100, f"{i:08X}", 0))
            assert isinstance(ledger, Ledger)
            kept[(mid, 1)] = ledger
        size, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"  whole Ledger per segment (before): {size / n:.0f} bytes per accepted segment")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--segments", type=int, default=20_000)
    parser.add_argument("--copying", action="store_true", help="also time the copying book (quadratic)")
    parser.add_argument("--full-ledgers", action="store_true", help="also measure whole ledgers")
    args = parser.parse_args()
    idempotency(args.keys, args.copying)
    ledgers(args.segments, args.full_ledgers)


if __name__ == "__main__":
    main()
