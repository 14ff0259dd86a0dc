"""CPython's cyclic garbage collector, set up for a long-running pipeline process (issue 13).

Reference counting frees almost every object the hot path makes (a PDU, a message, a webhook attempt); the
cyclic collector only looks for reference cycles. It runs a young collection every ``threshold0`` container
allocations and, once enough objects have survived into the oldest generation, a **full** collection that
traverses every container object the process holds. A worker holds ~130,000 of them once started (Faust,
aiokafka, pydantic models, the Avro schemas, OpenTelemetry, phonenumbers' metadata): at saturation a full
collection cost ~160 ms and the collector ~17% of the worker's CPU (measured with ``gc.callbacks``,
docs/BENCHMARKS.md, 2026-12-03).

Two measures, both in the standard library:

- **freeze after start-up** (``gc.freeze``): once the process has started, everything alive is moved to a
  permanent generation that no collection traverses. Those objects (modules, classes, schemas, the app) live
  as long as the process anyway; reference counting still frees any of them that is dropped. What is never
  collected is a reference *cycle* among frozen objects that becomes garbage later: the start-up objects do
  not, and the freeze happens once, so at most the records in flight at that moment could (a bounded, one-time
  amount). Objects made after the freeze (tables restored later, state) are collected as before.
- **a larger first threshold** (``threshold0``): fewer young collections, and fewer short-lived objects that
  happen to be alive at one (a batch in flight) promoted into the generations a full collection traverses.

Both are settings (``gc`` in the config: ``freeze_after_s``, ``threshold0``), and the time each generation's
collections take is exported (``smsflow_gc_seconds_total``), so what the collector costs stays visible.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

from prometheus_client import Counter

log = logging.getLogger(__name__)

GC_SECONDS = Counter(
    "smsflow_gc_seconds", "Time spent in CPython's cyclic garbage collector, by generation", ["generation"]
)

_started_at = 0.0


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    global _started_at
    if phase == "start":
        _started_at = time.perf_counter()
    else:
        GC_SECONDS.labels(str(info.get("generation", "?"))).inc(time.perf_counter() - _started_at)


def configure(threshold0: int, freeze_after_s: float | None, process: str) -> threading.Timer | None:
    """Set the first threshold now; freeze what is alive ``freeze_after_s`` seconds from now (None: never).

    Call once a process has its configuration, before its start-up work: the freeze then takes what start-up
    made. Returns the timer of the freeze (a daemon thread; ``cancel()`` it in tests), if any."""
    _, threshold1, threshold2 = gc.get_threshold()
    gc.set_threshold(threshold0, threshold1, threshold2)
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)
    if freeze_after_s is None:
        return None
    timer = threading.Timer(freeze_after_s, freeze, args=(process,))
    timer.daemon = True
    timer.name = "gc-freeze"
    timer.start()
    return timer


def freeze(process: str = "") -> int:
    """Collect, then move every object alive to the permanent generation; returns how many are frozen."""
    t0 = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info(
        "%s: %d objects alive after start-up frozen out of the garbage collector's traversals (%.0f ms)",
        process or "process",
        frozen,
        (time.perf_counter() - t0) * 1000,
    )
    return frozen
