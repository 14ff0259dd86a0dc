"""Prometheus metrics: each process serves /metrics on its own port when ``metrics.<role>_port`` is set.

The same port answers ``/health`` for an orchestrator's readiness probe: 200 when the process says it is
ready, 503 with the reason otherwise (``set_health``); a process that registered no check is always ready.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import make_server

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler
from prometheus_client.registry import Collector

CONNECTOR_PDUS = Counter(
    "smsflow_connector_pdus_total",
    "deliver_sm/data_sm received, by carrier and answer",
    ["carrier", "answer"],
)
CONNECTOR_STORE_SECONDS = Histogram(
    "smsflow_connector_store_seconds",
    "time from PDU received to Kafka acknowledged (what the carrier waits for)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class StatsCollector(Collector):
    """Exposes the counters of a dataclass of ints (e.g. the ingest stage's Stats) as Prometheus counters."""

    def __init__(self, prefix: str, doc: str, get: Callable[[], Any]) -> None:
        self.prefix, self.doc, self.get = prefix, doc, get

    def collect(self) -> Iterator[CounterMetricFamily]:
        stats = self.get()
        if stats is None:
            return
        items = stats.items() if isinstance(stats, dict) else dataclasses.asdict(stats).items()
        for name, value in items:
            if isinstance(value, int):
                yield CounterMetricFamily(f"{self.prefix}_{name}", f"{self.doc}: {name}", value=value)


READY = Gauge("smsflow_ready", "1 when the process can do its work (the same answer as /health)")


def _always_ready() -> tuple[bool, str]:
    return True, "ok"


_health: Callable[[], tuple[bool, str]] = _always_ready


def set_health(check: Callable[[], tuple[bool, str]]) -> None:
    """``check`` answers (ready, reason); it runs on the metrics server's thread, so it must only read."""
    global _health
    _health = check


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    if environ.get("PATH_INFO") == "/health":
        try:
            ready, reason = _health()
        except Exception as exc:  # a failing check is an unready process, not a crashed server
            ready, reason = False, f"health check failed: {exc}"
        READY.set(1 if ready else 0)
        status = "200 OK" if ready else "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [f"{'ready' if ready else 'not ready'}: {reason}\n".encode()]
    with contextlib.suppress(Exception):
        READY.set(1 if _health()[0] else 0)
    return _metrics_app(environ, start_response)


_metrics_app = make_wsgi_app(REGISTRY)


def serve(port: int | None, host: str = "127.0.0.1") -> None:
    if port:
        httpd = make_server(host, port, _app, ThreadingWSGIServer, handler_class=_SilentHandler)
        threading.Thread(target=httpd.serve_forever, daemon=True, name="metrics").start()


def register_stats(prefix: str, doc: str, get: Callable[[], Any]) -> None:
    REGISTRY.register(StatsCollector(prefix, doc, get))


# The double list (docs/double-list.md): the same facts as sms.routes.health.v1 and sms.routes.decisions.v1
ROUTE_HEALTH_SCORE = Gauge(
    "smsflow_route_health_score", "1 healthy; <= 0.5 degraded (lower = nearer down); 0 down", ["route"]
)
ROUTE_HEALTH_STATE = Gauge("smsflow_route_health_state", "1 for the route's state", ["route", "state"])
ROUTE_ACTIVE = Gauge("smsflow_route_active", "1 for the list a scope's traffic uses now", ["scope", "list"])
ROUTE_BOTH_DEGRADED = Gauge(
    "smsflow_route_both_degraded", "1 while both lists of a scope are degraded: page someone", ["scope"]
)
ROUTE_PINNED = Gauge("smsflow_route_pinned", "1 while an operator's override holds a scope", ["scope"])
ROUTE_DECISIONS = Counter("smsflow_route_decisions_total", "double-list decisions", ["scope", "kind"])

# The outbound status agent (streams/outbound.py): ledger entries it skips, by why (logged as summaries)
OUTBOUND_LEDGER_SKIPPED = Counter(
    "smsflow_outbound_ledger_skipped_total",
    "sms.outbound.ledger.v1 entries the status agent skipped",
    ["reason"],
)
