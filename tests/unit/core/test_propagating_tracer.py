"""With no exporter, spans record nothing but trace context still flows exactly as with a recording tracer:
every span its own id under its parent's trace, the sampled flag as the sampler says, headers on records."""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

from smsflow.telemetry import (
    PropagatingTracer,
    context_from_headers,
    current_traceparent,
    headers_from_context,
    links_from,
)

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _parts(traceparent: str | None) -> list[str]:
    assert traceparent is not None
    return traceparent.split("-")


def test_a_child_span_continues_the_carriers_trace_under_a_new_span_id() -> None:
    tracer = PropagatingTracer(ParentBasedTraceIdRatio(1.0))
    parent = context_from_headers([("traceparent", PARENT.encode())])
    with tracer.start_as_current_span("ingest", context=parent, kind=trace.SpanKind.CONSUMER) as span:
        span.set_attribute("smsflow.carrier", "c1")  # accepted, not kept
        assert not span.is_recording()
        headers = dict(headers_from_context())
        version, trace_id, span_id, flags = _parts(headers["traceparent"].decode())
        assert (version, trace_id, flags) == ("00", "0af7651916cd43dd8448eb211c80319c", "01")
        assert span_id != "b7ad6b7169203331"
        with tracer.start_as_current_span("send sms.inbound.v1") as child:
            _, child_trace, child_span, _ = _parts(current_traceparent())
            assert child_trace == trace_id and child_span not in (span_id, "b7ad6b7169203331")
            assert child.get_span_context().span_id != span.get_span_context().span_id
        assert _parts(current_traceparent())[2] == span_id  # back to the outer span once the inner ends
    assert current_traceparent() is None


def test_a_root_span_starts_a_new_trace_sampled_as_configured() -> None:
    sampled = PropagatingTracer(ParentBasedTraceIdRatio(1.0))
    unsampled = PropagatingTracer(ParentBasedTraceIdRatio(0.0))
    ids = set()
    for _ in range(20):
        with sampled.start_as_current_span("smpp deliver_sm", context=otel_context.Context()):
            _, trace_id, _, flags = _parts(current_traceparent())
            assert flags == "01"
            ids.add(trace_id)
        # a non-sampled root still propagates its trace context (flag 00), it is never dropped
        with unsampled.start_as_current_span("smpp deliver_sm", context=otel_context.Context()):
            assert _parts(current_traceparent())[3] == "00"
    assert len(ids) == 20


def test_links_to_other_segments_traces_are_still_readable() -> None:
    others = [context_from_headers([("traceparent", PARENT.encode())])]
    links = links_from(others)
    tracer = PropagatingTracer(ParentBasedTraceIdRatio(1.0))
    with tracer.start_as_current_span("assemble", context=others[0], links=links, attributes={"a": 1}):
        assert _parts(current_traceparent())[1] == "0af7651916cd43dd8448eb211c80319c"
    assert links[0].context.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)
