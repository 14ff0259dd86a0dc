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

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagate import extract, get_global_textmap, inject
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio, Sampler
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util import types

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

    def start_as_current_span(  # type: ignore[override]
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
    ) -> _CurrentSpan:
        return _CurrentSpan(self.start_span(name, context, kind))


class _CurrentSpan:
    """What ``trace.use_span`` does, less what a span that records nothing needs (status, exception, end): a
    plain context manager, not a generator one (half its cost, on every span of every SMS). Use it in a
    ``with`` statement only: unlike the SDK's, it is not a decorator."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def __enter__(self) -> trace.Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self._token)


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


class _LazyTracer(trace.Tracer):
    """The tracer a module takes at import, before the process installs its provider: it asks the provider
    installed by then. (OpenTelemetry's ``ProxyTracer`` does the same, but wraps every
    ``start_as_current_span`` in one more generator context manager.)"""

    def __init__(self, name: str) -> None:
        self._name = name
        self._real: trace.Tracer | None = None

    def _tracer(self) -> trace.Tracer:
        real = self._real
        if real is None:
            provider = trace.get_tracer_provider()
            real = provider.get_tracer(self._name)
            if isinstance(provider, trace.ProxyTracerProvider):
                return real  # none installed yet: ask again next time
            self._real = real
        return real

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._tracer().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self._tracer().start_as_current_span(*args, **kwargs)


def tracer(name: str) -> trace.Tracer:
    return _LazyTracer(name)


_W3C = TraceContextTextMapPropagator()


_checked: tuple[object, bool] = (None, False)


def _w3c_only() -> bool:
    """Whether the process's propagators (``OTEL_PROPAGATORS``) are the default ``tracecontext,baggage`` or
    ``tracecontext`` alone: then W3C trace context is read and written directly (the baggage propagator is
    skipped only when the context holds no baggage; a record's baggage header is never read)."""
    global _checked
    textmap = get_global_textmap()
    if _checked[0] is not textmap:
        parts = (
            getattr(textmap, "_propagators", None) if isinstance(textmap, CompositePropagator) else [textmap]
        )
        kinds = {type(p) for p in parts or ()}
        simple = TraceContextTextMapPropagator in kinds and kinds <= {
            TraceContextTextMapPropagator,
            W3CBaggagePropagator,
        }
        _checked = (textmap, simple)
    return _checked[1]


def _carrier(ctx: otel_context.Context | None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    if _w3c_only() and not baggage.get_all(ctx):
        _W3C.inject(carrier, context=ctx)  # what the composite would write, without its loop and the baggage
    else:
        inject(carrier, context=ctx)
    return carrier


def headers_from_context(ctx: otel_context.Context | None = None) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in _carrier(ctx).items()]


def http_headers_from_context(ctx: otel_context.Context | None = None) -> dict[str, str]:
    return _carrier(ctx)


def current_traceparent() -> str | None:
    return _carrier(None).get("traceparent")


def context_from_headers(headers: Iterable[tuple[str, Any]] | dict[str, Any] | None) -> otel_context.Context:
    carrier: dict[str, str] = {}
    items: Iterable[tuple[str, Any]] = headers.items() if isinstance(headers, dict) else (headers or [])
    for k, v in items:
        if k in ("traceparent", "tracestate"):
            # a header that is not UTF-8 is no trace context (and must not stop the record)
            carrier[k] = v.decode("utf-8", "replace") if isinstance(v, bytes | bytearray) else str(v)
    if _w3c_only():  # only trace context is read from a record: the baggage propagator would find nothing
        return _W3C.extract(carrier)
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
