"""The local Zipkin takes a span (Zipkin v2 JSON, as opentelemetry-exporter-zipkin-json sends it) and shows it
back as a trace."""

from __future__ import annotations

import secrets
import time

import pytest
import requests

pytestmark = pytest.mark.integration


def test_span_in_trace_out(zipkin: str) -> None:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    span = {
        "traceId": trace_id,
        "id": span_id,
        "name": "deliver_sm",
        "kind": "SERVER",
        "timestamp": int(time.time() * 1_000_000),
        "duration": 1500,
        "localEndpoint": {"serviceName": "smsflow-test-connector"},
        "tags": {"smpp.sequence_number": "7"},
    }
    resp = requests.post(f"{zipkin}/api/v2/spans", json=[span], timeout=10)
    assert resp.status_code == 202, resp.text

    deadline = time.monotonic() + 20
    while True:
        got = requests.get(f"{zipkin}/api/v2/trace/{trace_id}", timeout=10)
        if got.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got.status_code == 200, got.text
    [stored] = got.json()
    assert (stored["id"], stored["name"], stored["tags"]) == (span_id, "deliver_sm", span["tags"])

    traces = requests.get(
        f"{zipkin}/api/v2/traces", params={"serviceName": "smsflow-test-connector"}, timeout=10
    ).json()
    assert any(t[0]["traceId"] == trace_id for t in traces)
