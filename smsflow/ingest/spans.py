"""What both ingest stages (the Faust agent, streams/ingest.py, and the direct loop, smsflow/ingest/loop.py)
say about a record in its spans, and how they encode a tick's outputs: one place, so the two cannot drift.

One SMS is one trace: a message of several segments continues the trace of the segment that arrived first
and links the others' (each segment's own trace ends at its ingest span); `assembly` works out that span.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from smsflow.ingest.processor import IngestProcessor, Outputs, Publish, Stats
from smsflow.schemas import INBOUND_TOPIC, QUARANTINE_TOPIC, RECEIPTS_TOPIC
from smsflow.telemetry import LINKED_TRACES_ATTR, context_from_traceparent, links_from, trace_id_hex

log = logging.getLogger(__name__)
KIND_TOPIC = {"inbound": INBOUND_TOPIC, "receipt": RECEIPTS_TOPIC, "quarantine": QUARANTINE_TOPIC}


def outcome(before: Stats, after: Stats, items: list[Publish]) -> str:
    """What became of one raw record, for its ingest span (the one place a dropped duplicate shows)."""
    kinds = {item.kind for item in items}
    for kind, name in (("inbound", "message"), ("receipt", "receipt"), ("quarantine", "quarantined")):
        if kind in kinds:
            return name
    if after.duplicates > before.duplicates:
        return "duplicate"
    if after.duplicate_parts > before.duplicate_parts:
        return "duplicate part"
    if after.replays > before.replays:
        return "replay"
    return "held for reassembly"


def ingest_attributes(topic: str, partition: int, offset: int) -> dict[str, Any]:
    """The CONSUMER span of one raw record (``ingest``)."""
    return {
        "messaging.system": "kafka",
        "messaging.source.name": topic,
        "messaging.kafka.partition": partition,
        "messaging.kafka.offset": offset,
    }


def send_attributes(topic: str, item: Publish) -> dict[str, Any]:
    """The PRODUCER span of one output record."""
    attrs: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.destination.name": topic,
    }
    if item.record.get("message_id"):
        attrs["smsflow.message_id"] = str(item.record["message_id"])
    return attrs


@dataclass
class Assembly:
    """The ``assemble`` span of a message of several segments: under the first segment's trace, linking the
    others'."""

    first: otel_context.Context
    links: list[trace.Link]
    attributes: dict[str, Any]


def assembly(item: Publish, here: str | None) -> Assembly | None:
    """None when the output continues the current span (a single PDU); else the ``assemble`` span to send it
    under. Notes the message id, and where the message was assembled, on the current (ingest) span."""
    current = trace.get_current_span()
    if item.record.get("message_id"):
        current.set_attribute("smsflow.message_id", str(item.record["message_id"]))
    tps = item.traceparents
    if not tps or tps == [here]:
        return None
    first = context_from_traceparent(tps[0])
    others = [context_from_traceparent(t) for t in tps[1:]]
    linked = [t for t in map(trace_id_hex, others) if t]
    first_trace = trace_id_hex(first)
    if first_trace and first_trace != trace_id_hex(otel_context.get_current()):
        current.set_attribute("smsflow.assembled_in_trace", first_trace)
    attributes: dict[str, Any] = {
        "smsflow.message_id": str(item.record.get("message_id", "")),
        "smsflow.segment_count": int(item.record.get("segment_count") or len(tps)),
        "smsflow.segments_received": len(tps),
        "smsflow.incomplete": bool(item.record.get("incomplete", False)),
    }
    if linked:
        attributes[LINKED_TRACES_ATTR] = linked
    return Assembly(first, links_from(others), attributes)


def encode_tick_outputs(processor: IngestProcessor, serde: Any, items: Outputs, partition: int) -> None:
    """Encode what a tick emitted, in place; a message the schema cannot carry is replaced by its quarantine
    record, and the others go on."""
    for i, item in enumerate(items):
        try:
            item.encoded = serde.encode(KIND_TOPIC[item.kind], item.record)
        except Exception as exc:
            log.exception("ingest tick %d: an expired message does not encode; quarantined", partition)
            reason = f"does not encode: {type(exc).__name__}: {exc}"[:1000]
            raw = {
                "carrier_id": item.record.get("carrier_id", ""),
                "route_id": item.record.get("route_id", ""),
            }
            items[i] = processor.quarantine(raw, reason, f"tick|{partition}", partition)
