"""With no exporter, spans record nothing but trace context still flows exactly as with a recording tracer:
every span its own id under its parent's trace, the sampled flag as the sampler says, headers on records."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

from smsflow.telemetry import (
    PropagatingTracer,
    _w3c_only,
    context_from_headers,
    current_traceparent,
    headers_from_context,
    http_headers_from_context,
    links_from,
    tracer,
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


# --- the direct W3C path against OpenTelemetry's own propagators -----------------------------------------

_HEX = "0123456789abcdef"
_traceparents = st.one_of(
    st.builds(
        lambda v, t, s, f, tail: f"{v}-{t}-{s}-{f}{tail}",
        st.sampled_from(["00", "01", "ff", "cc", "0g"]),
        st.one_of(st.just("0" * 32), st.text(_HEX, min_size=32, max_size=32), st.text(_HEX, max_size=33)),
        st.one_of(st.just("0" * 16), st.text(_HEX, min_size=16, max_size=16)),
        st.sampled_from(["00", "01", "03", "ff", "0"]),
        st.sampled_from(["", "-extra", " ", "\t", "-"]),
    ),
    st.text(max_size=80),  # anything at all
    st.just("00-" + "a" * 32 + "-" + "b" * 16 + "-01" + " " * 600),  # past the length limit
)
_tracestates = st.one_of(
    st.none(),
    st.just("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
    st.just("a=1," * 40),  # more members than allowed
    st.text(max_size=60),
)


def _carrier_of(traceparent: str, tracestate: str | None, as_bytes: bool) -> list[tuple[str, object]]:
    items: list[tuple[str, object]] = [("x-other", b"v"), ("traceparent", traceparent), ("baggage", "k=v")]
    if tracestate is not None:
        items.append(("tracestate", tracestate))
    return [
        (k, v.encode("utf-8", "surrogatepass") if as_bytes and isinstance(v, str) else v) for k, v in items
    ]


@settings(max_examples=400, deadline=None)
@given(traceparent=_traceparents, tracestate=_tracestates, as_bytes=st.booleans())
def test_reading_a_records_trace_context_is_what_opentelemetry_reads(
    traceparent, tracestate, as_bytes
) -> None:
    assert _w3c_only()  # the direct path is the one under test (the default OTEL_PROPAGATORS)
    items = _carrier_of(traceparent, tracestate, as_bytes)
    ours = context_from_headers(items)
    # what the process's composite propagator makes of the same two headers (the baggage one is not read)
    carrier = {
        k: (v.decode("utf-8") if isinstance(v, bytes) else v)
        for k, v in items
        if k in ("traceparent", "tracestate")
    }
    theirs = extract(carrier)
    assert (
        trace.get_current_span(ours).get_span_context() == trace.get_current_span(theirs).get_span_context()
    )
    assert list(ours) == list(theirs)


@settings(max_examples=200, deadline=None)
@given(
    trace_id=st.integers(0, 2**128 - 1),
    span_id=st.integers(0, 2**64 - 1),
    flags=st.integers(0, 255),
    tracestate=st.sampled_from([None, "congo=t61rcWkgMzE", "a=1,b=2"]),
    remote=st.booleans(),
)
def test_writing_trace_context_is_what_opentelemetry_writes(
    trace_id, span_id, flags, tracestate, remote
) -> None:
    state = trace.TraceState.from_header([tracestate]) if tracestate else None
    sc = trace.SpanContext(
        trace_id, span_id, is_remote=remote, trace_flags=trace.TraceFlags(flags), trace_state=state
    )
    ctx = trace.set_span_in_context(trace.NonRecordingSpan(sc))
    theirs: dict[str, str] = {}
    inject(theirs, context=ctx)
    assert http_headers_from_context(ctx) == theirs
    assert headers_from_context(ctx) == [(k, v.encode()) for k, v in theirs.items()]
    token = otel_context.attach(ctx)
    try:
        assert current_traceparent() == theirs.get("traceparent")
    finally:
        otel_context.detach(token)


def test_baggage_in_the_context_is_still_written_by_the_baggage_propagator() -> None:
    ctx = baggage.set_baggage("tenant", "acme", context_from_headers([("traceparent", PARENT.encode())]))
    headers = http_headers_from_context(ctx)
    assert headers["traceparent"] == PARENT and headers["baggage"] == "tenant=acme"


def test_a_module_tracer_taken_before_the_provider_uses_the_provider_installed_later() -> None:
    handle = tracer("smsflow.test.lazy")  # as a module at import
    with handle.start_as_current_span("x") as span:
        assert isinstance(span, trace.Span)
    with handle.start_as_current_span("root", context=otel_context.Context()):
        inner = trace.get_current_span()
    assert inner is not None


def test_a_header_that_is_not_utf8_is_no_trace_context() -> None:
    ctx = context_from_headers([("traceparent", b"\xff\xfe" + PARENT.encode())])
    assert not trace.get_current_span(ctx).get_span_context().is_valid
