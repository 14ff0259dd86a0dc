"""Webhook attempts gathered per route and health step (``AttemptTally``): one record per route per interval
instead of one per POST, and the health stage counts them exactly as it counted the single records."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsflow.routing.feed import HealthFeed
from smsflow.routing.model import Route, RouteKind, RoutingSection
from smsflow.routing.observations import (
    AttemptOutcome,
    AttemptTally,
    WebhookAttempt,
    observation_record,
    observations_of,
    webhook_attempts_record,
)
from tests.unit.routing.test_schemas import round_trip

S = 1000
T0 = 1_700_000_000_000  # a multiple of 10 s
STEP = 10 * S
HOOKS = (
    Route(id="hook-1", kind=RouteKind.WEBHOOK, url="https://a.example/sms"),
    Route(id="hook-2", kind=RouteKind.WEBHOOK, url="https://b.example/sms"),
)


def test_one_record_per_route_and_step_with_every_attempt_in_it() -> None:
    tally = AttemptTally(STEP)
    tally.add(WebhookAttempt("hook-1", T0 + 100, AttemptOutcome.SUCCESS, 12.0))
    tally.add(WebhookAttempt("hook-2", T0 + 200, AttemptOutcome.TIMEOUT, 10_000.0))
    tally.add(WebhookAttempt("hook-1", T0 + 300, AttemptOutcome.HTTP_ERROR, 30.0))
    tally.add(WebhookAttempt("hook-1", T0 + 250, AttemptOutcome.SUCCESS, 14.0))
    tally.add(WebhookAttempt("hook-1", T0 + STEP + 5, AttemptOutcome.SUCCESS, 9.0))  # the next step
    assert len(tally) == 5
    records = tally.take(source="worker")
    assert len(tally) == 0 and tally.take() == []
    assert [(r["route_id"], r["at"], r["kind"], r["source"]) for r in records] == [
        ("hook-1", T0 + 300, "webhook_attempts", "worker"),  # stamped with its latest attempt
        ("hook-2", T0 + 200, "webhook_attempts", "worker"),
        ("hook-1", T0 + STEP + 5, "webhook_attempts", "worker"),
    ]
    assert records[0]["attempts"] == [
        {"outcome": "http_error", "latencies_ms": [30.0]},
        {"outcome": "success", "latencies_ms": [12.0, 14.0]},
    ]
    timeout = WebhookAttempt("hook-2", T0 + 200, AttemptOutcome.TIMEOUT, 10_000.0)
    assert observations_of(records[1]) == [timeout]


def test_the_record_fits_its_avro_contract_and_reads_back_the_same() -> None:
    rec = webhook_attempts_record(
        "hook-1", T0, {AttemptOutcome.SUCCESS: [1.5, 2.5], AttemptOutcome.THROTTLED: [3.0]}, source="worker"
    )
    assert round_trip("route_observation.avsc", rec) == rec
    single = observation_record(WebhookAttempt("hook-1", T0, AttemptOutcome.SUCCESS, 4.0), source="worker")
    assert round_trip("route_observation.avsc", single) == single  # pings, and workers before the tally
    assert single["attempts"] == []


def test_what_a_reader_cannot_count_is_skipped_not_fatal() -> None:
    rec = webhook_attempts_record("hook-1", T0, {AttemptOutcome.SUCCESS: [1.0]})
    rec["attempts"] = [*rec["attempts"], {"outcome": "from_a_newer_writer", "latencies_ms": [5.0]}]  # type: ignore[list-item]
    assert observations_of(rec) == [WebhookAttempt("hook-1", T0, AttemptOutcome.SUCCESS, 1.0)]
    assert observations_of({**rec, "attempts": []}) == []


def test_a_step_must_be_positive() -> None:
    with pytest.raises(ValueError, match="step_ms"):
        AttemptTally(0)


attempt = st.builds(
    lambda r, o, v: WebhookAttempt(r, 0, o, v),
    st.sampled_from([h.id for h in HOOKS]),
    st.sampled_from(AttemptOutcome),
    st.floats(0, 20_000, allow_nan=False),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3_000), attempt), max_size=150),
    st.lists(st.integers(0, 40), max_size=20),
)
def test_the_health_records_are_those_of_one_record_per_attempt(
    steps: list[tuple[int, WebhookAttempt]], take_after: list[int]
) -> None:
    """Fed through the tally (taken after any attempts: the worker's timer and commit flushes), the stage
    makes exactly the health records it made from one record per attempt."""
    attempts, t = [], T0
    for dt, a in steps:
        t += dt
        attempts.append(dataclasses.replace(a, at=t))
    end = t + 120 * S

    def run(records: list[dict[str, object]]) -> list[object]:
        feed = HealthFeed(RoutingSection(routes=HOOKS), start=T0)
        out: list[object] = []
        for offset, rec in enumerate(records):
            out += feed.on_record(rec, offset)
        return out + feed.on_tick(end)

    singles = [observation_record(a, source="worker") for a in attempts]
    tally, tallied, cuts = AttemptTally(STEP), [], set(take_after)
    for i, a in enumerate(attempts):
        tally.add(a)
        if i in cuts:
            tallied += tally.take(source="worker")
    tallied += tally.take(source="worker")
    assert sum(len(observations_of(r)) for r in tallied) == len(attempts)
    assert run(tallied) == run(singles)
