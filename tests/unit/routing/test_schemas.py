"""The routing records encode with their Avro contracts and read back the same."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import fastavro.validation

from smsflow.routing.aggregator import HealthAggregator
from smsflow.routing.decisions import Decision, DoubleList
from smsflow.routing.health import HealthRecord
from smsflow.routing.model import Route, RouteKind
from smsflow.routing.observations import ProbeReturned, ProbeSent, SessionBound
from smsflow.schemas import schema_dict
from tests.routing_factories import pin, policy, record

T0 = 1_700_000_000_000


def round_trip(filename: str, rec: dict[str, Any]) -> dict[str, Any]:
    schema = fastavro.parse_schema(schema_dict(filename))
    fastavro.validation.validate(rec, schema, strict=True)  # no field the contract does not declare
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, rec)
    buf.seek(0)
    out = fastavro.schemaless_reader(buf, schema, schema, return_record_name=False)
    assert isinstance(out, dict)
    return millis(out)


def millis(value: Any) -> Any:
    """fastavro returns datetimes for timestamp-millis; compare in epoch millis, as the serde does."""
    if isinstance(value, dict):
        return {k: millis(v) for k, v in value.items()}
    if isinstance(value, list):
        return [millis(v) for v in value]
    return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else value


def test_health_records_encode_as_route_health() -> None:
    agg = HealthAggregator([Route(id="hk-a", kind=RouteKind.CARRIER, carrier="a")], start=T0)
    for obs in (
        SessionBound("hk-a", T0, "s0"),
        ProbeSent("hk-a", T0, "p"),
        ProbeReturned("hk-a", T0 + 7000, "p"),
    ):
        agg.observe(obs)
    [rec] = agg.advance(T0 + 10_000)
    assert rec.breaches  # 7 s probe latency: degraded, and the breach travels with the record
    back = round_trip("route_health.avsc", rec.to_record())
    assert back == rec.to_record()
    assert HealthRecord.from_record(back) == rec


def test_decisions_encode_as_route_decision() -> None:
    machine = DoubleList(policy())
    state = machine.initial()
    decisions: list[Decision] = []
    for ev in (record("pa", 10, "down"), record("sb", 10, "healthy")):
        state, ds = machine.on_health(state, ev)
        decisions += ds
    state, ds = machine.on_override(state, pin("primary", 20, for_s=60))
    decisions += ds
    assert [d.kind.value for d in decisions] == ["failover", "override_set"]
    for d in decisions:
        rec = d.to_record()
        back = round_trip("route_decision.avsc", rec)
        assert back == rec and [e["route_id"] for e in back["evidence"]] == ["pa", "sb"]
    assert decisions[1].to_record()["override_actor"] == "ops@example.com"
