"""OpenTelemetry set-up and W3C trace context carried in Kafka record headers.

One SMS is one trace: it starts at the connector when the PDU arrives, rides in ``traceparent`` headers
through every topic, and ends at the customer's webhook response.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

from smsflow.config import TracingConfig

_configured = False


def setup_tracing(cfg: TracingConfig, role: str) -> None:
    """Install a tracer provider for this process; a no-op exporter set-up when nothing is configured."""
    global _configured
    if _configured:
        return
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"{cfg.service_name_prefix}-{role}"}),
        sampler=ParentBasedTraceIdRatio(cfg.sample_ratio),
    )
    if cfg.zipkin_url:
        from opentelemetry.exporter.zipkin.json import ZipkinExporter

        provider.add_span_processor(BatchSpanProcessor(ZipkinExporter(endpoint=cfg.zipkin_url)))
    if cfg.otlp_endpoint:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:  # optional extra
            raise RuntimeError("tracing.otlp_endpoint needs opentelemetry-exporter-otlp-proto-http") from exc
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=cfg.otlp_endpoint)))
    trace.set_tracer_provider(provider)
    _configured = True


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush(5000)
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


def context_from_headers(headers: Iterable[tuple[str, Any]] | dict[str, Any] | None) -> otel_context.Context:
    carrier: dict[str, str] = {}
    items: Iterable[tuple[str, Any]] = headers.items() if isinstance(headers, dict) else (headers or [])
    for k, v in items:
        if k in ("traceparent", "tracestate"):
            carrier[k] = v.decode() if isinstance(v, bytes | bytearray) else str(v)
    return extract(carrier)


def links_from(contexts: Sequence[otel_context.Context]) -> list[trace.Link]:
    links = []
    for ctx in contexts:
        sc = trace.get_current_span(ctx).get_span_context()
        if sc.is_valid:
            links.append(trace.Link(sc))
    return links
