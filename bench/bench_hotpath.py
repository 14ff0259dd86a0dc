"""Per-record costs of the hot path's plumbing, old way against new way, in one process (no Kafka).

    .venv/bin/python -m bench.bench_hotpath [--n 20000]

- Avro: confluent-kafka's AvroSerializer/AvroDeserializer per call (what smsflow/serde.py did) against the
  precompiled fastavro schemaless writer/reader behind the same 5-byte header (what it does now), for a
  RawPdu (connector writes, ingest reads) and an InboundMessage (ingest writes, deliver reads).
- Spans: what the connector does per PDU (a root span, a child PRODUCER span, ``traceparent`` injected into
  the record's headers), with the SDK's recording tracer (no exporter: spans built and dropped) against
  ``PropagatingTracer`` (what a process with no exporter now uses).

Figures are µs per call, median of 5 rounds; the registry is confluent-kafka's in-memory mock.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

from smsflow.schemas import INBOUND_TOPIC, RAW_TOPIC, schema_for_topic
from smsflow.serde import Serde
from smsflow.telemetry import PropagatingTracer, headers_from_context
from tests.factories import inbound_record, raw_record


def per_call_us(fn: Callable[[], Any], n: int, rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(times)


def avro_rows(n: int) -> list[tuple[str, float, float]]:
    client = MockSchemaRegistryClient({"url": "mock://bench"})
    serde = Serde(client)
    serde.warm_up([RAW_TOPIC, INBOUND_TOPIC])
    records = {
        RAW_TOPIC: raw_record(bytes(140), "85261234567", "85230001000", 8, esm_class=0x40),
        INBOUND_TOPIC: inbound_record("msg_1"),
    }
    rows = []
    for topic, record in records.items():
        ctx = SerializationContext(topic, MessageField.VALUE)
        ser = AvroSerializer(client, schema_for_topic(topic), conf={"auto.register.schemas": True})
        de = AvroDeserializer(client, schema_for_topic(topic))
        data = serde.encode(topic, record)
        assert ser(record, ctx) == data and serde.decode(topic, data) == record
        rows.append(
            (
                f"{topic} encode",
                per_call_us(partial(ser, record, ctx), n),
                per_call_us(partial(serde.encode, topic, record), n),
            )
        )
        rows.append(
            (
                f"{topic} decode",
                per_call_us(partial(de, data, ctx), n),
                per_call_us(partial(serde.decode, topic, data), n),
            )
        )
    return rows


def connector_spans(tracer: trace.Tracer) -> Callable[[], Any]:
    attrs = {
        "rpc.system": "smpp",
        "smsflow.carrier": "sim",
        "smsflow.route": "sim-route",
        "smsflow.session": "sim#0",
        "smpp.sequence_number": 7,
        "smpp.esm_class": 0,
        "smpp.data_coding": 8,
        "smpp.pdu_bytes": 160,
    }
    send_attrs = {"messaging.system": "kafka", "messaging.destination.name": RAW_TOPIC}

    def one_pdu() -> None:
        with tracer.start_as_current_span(
            "smpp deliver_sm", context=otel_context.Context(), kind=trace.SpanKind.SERVER, attributes=attrs
        ) as span:
            with tracer.start_as_current_span(
                f"send {RAW_TOPIC}", kind=trace.SpanKind.PRODUCER, attributes=send_attrs
            ) as send:
                headers_from_context()
                send.set_attribute("messaging.kafka.offset", 1)
            span.set_attribute("smpp.command_status", 0)

    return one_pdu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="calls per round")
    n = ap.parse_args().n
    print("| what | before µs | after µs |")
    print("|---|---:|---:|")
    for name, before, after in avro_rows(n):
        print(f"| Avro {name} | {before:.1f} | {after:.1f} |")
    sampler = ParentBasedTraceIdRatio(1.0)
    recording = TracerProvider(sampler=sampler).get_tracer("bench")
    before = per_call_us(connector_spans(recording), n)
    after = per_call_us(connector_spans(PropagatingTracer(sampler)), n)
    print(f"| spans of one PDU in the connector (2 spans + inject) | {before:.1f} | {after:.1f} |")


if __name__ == "__main__":
    main()
