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
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

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


def setup_tracing(cfg: TracingConfig, role: str) -> TracerProvider | None:
    """Install this process's tracer provider. With no exporter configured spans are still made (so trace
    context still flows to Kafka headers and to customers' webhooks), just not sent anywhere."""
    global _configured
    if _configured:
        return None
    provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": f"{cfg.service_name_prefix}-{role}",
                "service.namespace": cfg.service_name_prefix,
                "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
            }
        ),
        sampler=ParentBasedTraceIdRatio(cfg.sample_ratio),
        shutdown_on_exit=True,  # flush what is queued when the interpreter exits
    )
    delay = schedule_delay_ms(cfg)
    for exporter in exporters(cfg):
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
