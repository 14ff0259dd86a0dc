"""OpenTelemetry set-up and W3C trace context carried in Kafka record headers.

One SMS is one trace: it starts at the connector when the PDU arrives, rides in ``traceparent`` headers
through every topic, and ends at the customer's webhook response (see docs/tracing.md for the span tree).

Spans leave the process in batches (``BatchSpanProcessor``) every ``schedule_delay_ms``: 1 s by default so a
trace shows up in the UI about a second after the message, configurable with the standard
``OTEL_BSP_SCHEDULE_DELAY`` variable. What is still queued is flushed on shutdown (``shutdown_tracing``, and
the SDK's exit hook for processes that end through ``sys.exit``, such as the Faust worker).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio, Sampler
from opentelemetry.util import types
from opentelemetry.util._decorator import _agnosticcontextmanager

from smsflow.config import TracingConfig

DEFAULT_SCHEDULE_DELAY_MS = 1000.0
# Span attribute naming the traces a span is linked to: Zipkin v2 has no links, so they ride as a tag too.
LINKED_TRACES_ATTR = "smsflow.linked_trace_ids"

_configured = False
_shut_down = False


def schedule_delay_ms(cfg: TracingConfig) -> float:
    """How long finished spans may wait before export: config field if the model has one, else the
    standard environment variable, else 1 s (the SDK's own default of 5 s feels broken in a live UI)."""
    configured = getattr(cfg, "schedule_delay_ms", None)
    if configured is not None:
        return float(configured)
    env = os.environ.get("OTEL_BSP_SCHEDULE_DELAY")
    return float(env) if env else DEFAULT_SCHEDULE_DELAY_MS


def exporters(cfg: TracingConfig) -> list[SpanExporter]:
    out: list[SpanExporter] = []
    if cfg.zipkin_url:
        from opentelemetry.exporter.zipkin.json import ZipkinExporter

        out.append(ZipkinExporter(endpoint=cfg.zipkin_url, timeout=5))
    if cfg.otlp_endpoint:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:  # optional extra
            raise RuntimeError("tracing.otlp_endpoint needs opentelemetry-exporter-otlp-proto-http") from exc
        out.append(OTLPSpanExporter(endpoint=cfg.otlp_endpoint))
    return out


class PropagatingTracer(trace.Tracer):
    """Spans that carry trace context and nothing else: for a process with no exporter.

    Each span gets its own span id under its parent's trace (or a new trace at a root, sampled as the
    configured sampler says), so ``traceparent`` headers on Kafka records and webhooks are exactly what a
    recording tracer would write. What it skips is what nobody would ever read: attributes, events, status,
    timing and the span processor pipeline (7-9% of the worker's CPU and a quarter of the connector's,
    docs/BENCHMARKS.md).
    """

    def __init__(self, sampler: Sampler) -> None:
        self._sampler = sampler
        self._ids = RandomIdGenerator()

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            trace_id, flags, state = parent.trace_id, parent.trace_flags, parent.trace_state
        else:
            trace_id, state = self._ids.generate_trace_id(), None
            sampled = self._sampler.should_sample(context, trace_id, name, kind).decision.is_sampled()
            flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if sampled else trace.TraceFlags.DEFAULT)
        span_context = trace.SpanContext(
            trace_id, self._ids.generate_span_id(), is_remote=False, trace_flags=flags, trace_state=state
        )
        return trace.NonRecordingSpan(span_context)

    @_agnosticcontextmanager
    def start_as_current_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind)
        # what trace.use_span does, less what a span that records nothing needs (status, exception, end)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield span
        finally:
            otel_context.detach(token)


class PropagatingTracerProvider(trace.TracerProvider):
    def __init__(self, sampler: Sampler) -> None:
        self._tracer = PropagatingTracer(sampler)

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return self._tracer


def setup_tracing(cfg: TracingConfig, role: str) -> TracerProvider | None:
    """Install this process's tracer provider.

    With an exporter configured, spans are recorded and exported. With none, spans still carry trace context
    (so it still flows to Kafka headers and to customers' webhooks) but record nothing that would only be
    thrown away (``PropagatingTracer``)."""
    global _configured
    if _configured:
        return None
    sampler = ParentBasedTraceIdRatio(cfg.sample_ratio)
    chosen = exporters(cfg)
    if not chosen:
        trace.set_tracer_provider(PropagatingTracerProvider(sampler))
        _configured = True
        return None
    provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": f"{cfg.service_name_prefix}-{role}",
                "service.namespace": cfg.service_name_prefix,
                "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
            }
        ),
        sampler=sampler,
        shutdown_on_exit=True,  # flush what is queued when the interpreter exits
    )
    delay = schedule_delay_ms(cfg)
    for exporter in chosen:
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=delay))
    trace.set_tracer_provider(provider)
    _configured = True
    return provider


def shutdown_tracing(timeout_ms: int = 5000) -> None:
    """Export every finished span, then stop the exporters. Safe to call twice."""
    global _shut_down
    provider = trace.get_tracer_provider()
    if _shut_down or not isinstance(provider, TracerProvider):
        return
    _shut_down = True
    provider.force_flush(timeout_ms)
    provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def headers_from_context(ctx: otel_context.Context | None = None) -> list[tuple[str, bytes]]:
    carrier: dict[str, str] = {}
    inject(carrier, context=ctx)
    return [(k, v.encode()) for k, v in carrier.items()]


def http_headers_from_context(ctx: otel_context.Context | None = None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    inject(carrier, context=ctx)
    return carrier


def current_traceparent() -> str | None:
    return http_headers_from_context().get("traceparent")


def context_from_headers(headers: Iterable[tuple[str, Any]] | dict[str, Any] | None) -> otel_context.Context:
    carrier: dict[str, str] = {}
    items: Iterable[tuple[str, Any]] = headers.items() if isinstance(headers, dict) else (headers or [])
    for k, v in items:
        if k in ("traceparent", "tracestate"):
            carrier[k] = v.decode() if isinstance(v, bytes | bytearray) else str(v)
    return extract(carrier)


def context_from_traceparent(traceparent: str) -> otel_context.Context:
    return context_from_headers([("traceparent", traceparent)])


def links_from(contexts: Sequence[otel_context.Context]) -> list[trace.Link]:
    links = []
    for ctx in contexts:
        sc = trace.get_current_span(ctx).get_span_context()
        if sc.is_valid:
            links.append(trace.Link(sc))
    return links


def trace_id_hex(ctx: otel_context.Context) -> str | None:
    sc = trace.get_current_span(ctx).get_span_context()
    return trace.format_trace_id(sc.trace_id) if sc.is_valid else None
