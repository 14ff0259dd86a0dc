"""Trace-context plumbing per SMS, as each process does it with no exporter (context-only spans).

    .venv/bin/python -m bench.bench_telemetry [--n 20000]

The tracer provider is installed as a process does (``setup_tracing`` with no exporter), and the tracers are
taken before it, at import, as the modules take theirs. Each scenario replays the calls one SMS costs:

- ``connector``: a root SERVER span, a child PRODUCER span, ``traceparent`` into the record's headers;
- ``ingest``: ``traceparent`` read from the raw record, the CONSUMER span, the current ``traceparent`` read
  twice (the segment's, the publish plan's), the PRODUCER span, ``traceparent`` into the inbound record;
- ``worker``: ``traceparent`` read from the inbound record, the CLIENT span of the POST, the HTTP headers, the
  delivery event's headers;
- the single calls: extract, inject, a span.

Figures are µs per call, median of 5 rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from smsflow.config import TracingConfig
from smsflow.telemetry import (
    context_from_headers,
    current_traceparent,
    headers_from_context,
    http_headers_from_context,
    setup_tracing,
)
from smsflow.telemetry import tracer as get_tracer

_tracer = get_tracer("smsflow.bench.telemetry")  # before the provider, as a module at import
HEADERS = [("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), ("x-other", b"v")]


def connector() -> Any:
    with _tracer.start_as_current_span(
        "smpp deliver_sm", context=otel_context.Context(), kind=trace.SpanKind.SERVER
    ):
        with _tracer.start_as_current_span("send sms.raw.v1", kind=trace.SpanKind.PRODUCER):
            return headers_from_context()


def ingest() -> Any:
    with _tracer.start_as_current_span(
        "ingest", context=context_from_headers(HEADERS), kind=trace.SpanKind.CONSUMER
    ):
        current_traceparent()
        current_traceparent()
        with _tracer.start_as_current_span("send sms.inbound.v1", kind=trace.SpanKind.PRODUCER):
            return headers_from_context()


def worker() -> Any:
    parent = context_from_headers(HEADERS)
    with _tracer.start_as_current_span("webhook POST", context=parent, kind=trace.SpanKind.CLIENT):
        http_headers_from_context()
        return [(k, v.encode()) for k, v in http_headers_from_context().items()]


def extract() -> Any:
    return context_from_headers(HEADERS)


def span() -> Any:
    with _tracer.start_as_current_span("x") as s:
        return s


def inject() -> Any:
    return headers_from_context()


def per_call_us(fn: Callable[[], Any], n: int) -> float:
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
    setup_tracing(TracingConfig(), "bench")
    parent = context_from_headers(HEADERS)
    token = otel_context.attach(parent)  # inject/span alone run under a remote parent, as in the stages
    try:
        for name, fn in (("connector", connector), ("ingest", ingest), ("worker", worker)):
            print(f"{name:>10}  {per_call_us(fn, args.n):6.2f} µs per SMS")
        for name, fn in (("extract", extract), ("inject", inject), ("span", span)):
            print(f"{name:>10}  {per_call_us(fn, args.n):6.2f} µs per call")
    finally:
        otel_context.detach(token)


if __name__ == "__main__":
    main()
