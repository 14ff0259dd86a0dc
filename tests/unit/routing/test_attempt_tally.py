"""Webhook attempts gathered per route and health step (``AttemptTally``): one record per route per interval
instead of one per POST, and the health stage counts them exactly as it counted the single records."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsflow.routing.aggregator import HealthAggregator, counted_percentile, latency_key, percentile
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


# ---- the stage's state is bounded however many attempts a window counts ----


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 600_000, allow_nan=False), min_size=1, max_size=300))
def test_the_p95_is_the_true_one_to_three_significant_digits(latencies: list[float]) -> None:
    counts: dict[str, int] = {}
    for v in latencies:
        counts[latency_key(v)] = counts.get(latency_key(v), 0) + 1
    assert counted_percentile(counts, 0.95) == float(latency_key(percentile(latencies, 0.95)))


def test_durations_that_are_no_duration_are_counted_as_zero_or_capped() -> None:
    assert [latency_key(v) for v in (-5.0, float("nan"), 0.0, float("inf"), 1e12)] == [
        "0",
        "0",
        "0",
        "1e+09",
        "1e+09",
    ]
    assert latency_key(9876.5) == "9.88e+03" and latency_key(10_000) == "1e+04" and latency_key(12.0) == "12"


def test_a_windows_state_does_not_grow_with_its_attempts() -> None:
    """A busy endpoint's attempts (long-tailed durations, 1 ms to minutes) take room in the snapshot by the
    distinct durations to three digits (at most 900 per decade), not by their number: the stage writes the
    snapshot after every record it reads."""
    rng = random.Random(7)

    def snapshot_size(attempts: int) -> int:
        a = HealthAggregator(HOOKS, start=T0)
        for i in range(attempts):
            ms = min(rng.lognormvariate(3, 1.5), 300_000.0)
            a.observe(WebhookAttempt("hook-1", T0 + i % STEP, AttemptOutcome.SUCCESS, ms))
        return len(json.dumps(a.snapshot()))

    sizes = [snapshot_size(n) for n in (20_000, 200_000)]
    assert sizes[1] < 64 * 1024 and sizes[1] < 2 * sizes[0], sizes
    # what one entry per attempt took: ~20 bytes each
    assert sizes[1] < 200_000 * 20 / 50


def test_a_snapshot_with_every_duration_listed_restores_to_the_counts() -> None:
    """Snapshots written before the durations were counted (a list each) are read after an upgrade."""
    a = HealthAggregator(HOOKS, start=T0)
    for i, v in enumerate((12.0, 12.04, 950.0, 10_000.0)):
        a.observe(WebhookAttempt("hook-1", T0 + i, AttemptOutcome.SUCCESS, v))
    snap = a.snapshot()
    old = json.loads(json.dumps(snap))
    old["routes"]["hook-1"]["buckets"][str(T0 // STEP)]["attempt_latencies"] = [12.0, 12.04, 950.0, 10_000.0]
    b = HealthAggregator(HOOKS, start=T0)
    b.restore(old)
    assert b.snapshot() == snap
    assert snap["routes"]["hook-1"]["buckets"][str(T0 // STEP)]["attempt_latencies"] == {
        "12": 2,
        "950": 1,
        "1e+04": 1,
    }
