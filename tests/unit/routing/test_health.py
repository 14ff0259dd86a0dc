"""Route health: scoring figures, and the hopping-window aggregator from observations to health records."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsflow.routing.aggregator import HealthAggregator, percentile
from smsflow.routing.health import HealthRecord, HealthState, assess
from smsflow.routing.model import Route, RouteKind, Thresholds
from smsflow.routing.observations import (
    AttemptOutcome,
    BindRefused,
    CarrierOutcome,
    CarrierTraffic,
    EnquireLinkRtt,
    Observation,
    ProbeReturned,
    ProbeSent,
    SessionBound,
    SessionLost,
    WebhookAttempt,
)

S = 1000
T0 = 1_700_000_000_000  # a multiple of 10 s
CARRIER = Route(id="hk-a", kind=RouteKind.CARRIER, carrier="carrier-a", pool=("+8526",))
HOOK = Route(id="hook-1", kind=RouteKind.WEBHOOK, url="https://a.example/sms")


C, W = RouteKind.CARRIER, RouteKind.WEBHOOK
SCORING = [
    ("nothing known", C, {}, "healthy", 1.0),
    ("bound, fast probes", C, {"bound_sessions": 2, "probe_latency_ms": 900}, "healthy", 1.0),
    ("no bound session", C, {"bound_sessions": 0}, "down", 0.0),
    ("probes at the degraded limit", C, {"probe_latency_ms": 5000}, "degraded", 0.5),
    ("probes halfway to down", C, {"probe_latency_ms": 12500}, "degraded", 0.3),
    ("probes at the down limit", C, {"probe_latency_ms": 20000}, "down", 0.0),
    ("errors, too few to count", C, {"outcomes": 3, "error_rate": 1.0}, "healthy", 1.0),
    ("errors, enough to count", C, {"outcomes": 40, "error_rate": 0.1}, "degraded", 0.4),
    (
        "quiet route, no baseline",
        RouteKind.CARRIER,
        {"baseline_messages": 5, "throughput_ratio": 0},
        "healthy",
        1.0,
    ),
    (
        "busy route gone silent",
        RouteKind.CARRIER,
        {"baseline_messages": 300, "throughput_ratio": 0},
        "down",
        0.0,
    ),
    (
        "busy route at a tenth",
        RouteKind.CARRIER,
        {"baseline_messages": 300, "throughput_ratio": 0.1},
        "degraded",
        0.277778,
    ),
    ("idle endpoint", W, {"attempts": 0}, "healthy", 1.0),
    ("endpoint answering 503", W, {"attempts": 20, "success_rate": 0.0}, "down", 0.0),
    (
        "slow endpoint",
        RouteKind.WEBHOOK,
        {"attempts": 20, "success_rate": 1, "latency_p95_ms": 3000},
        "degraded",
        0.45,
    ),
]


@pytest.mark.parametrize(
    ("kind", "figures", "state", "score"), [r[1:] for r in SCORING], ids=[r[0] for r in SCORING]
)
def test_scoring(kind: RouteKind, figures: dict[str, float], state: str, score: float) -> None:
    a = assess(kind, figures, Thresholds())
    assert (a.state.value, a.score) == (state, pytest.approx(score, abs=1e-6))
    assert bool(a.breaches) == (state != "healthy")


def test_the_worst_figure_decides_and_every_breach_is_named() -> None:
    a = assess(C, {"bind_failures": 1, "enquire_link_rtt_ms": 6000}, Thresholds())
    assert a.state is HealthState.DOWN
    assert [str(b) for b in a.breaches] == [
        "bind_failures=1 ≥ 1 (degraded)",
        "enquire_link_rtt_ms=6000 ≥ 5000 (down)",
    ]


def test_percentile_is_an_observed_value() -> None:
    assert percentile([5, 1, 3], 0.95) == 5 and percentile(list(range(1, 101)), 0.95) == 95


def agg(*routes: Route) -> HealthAggregator:
    return HealthAggregator(routes or (CARRIER,), start=T0)


def bound(route: str = "hk-a", at: int = T0, sessions: int = 2) -> list[Observation]:
    return [SessionBound(route, at, f"s{i}") for i in range(sessions)]


def feed(a: HealthAggregator, observations: list[Observation], until: int) -> list[HealthRecord]:
    out: list[HealthRecord] = []
    for obs in observations:
        out += a.observe(obs)
    return out + a.advance(until)


def test_one_record_per_route_per_step_over_the_last_window() -> None:
    a = agg(CARRIER, HOOK)
    records = feed(a, bound(), T0 + 30 * S)
    assert [(r.route_id, (r.window_end - T0) // S) for r in records] == [
        (rid, t) for t in (10, 20, 30) for rid in ("hk-a", "hook-1")
    ]
    assert all(r.window_end - r.window_start == 60 * S for r in records)
    assert a.advance(T0 + 39 * S) == [] and a.now == T0 + 30 * S


def test_refused_binds_make_the_route_down_within_one_step() -> None:
    a = agg()
    feed(a, bound(), T0 + 20 * S)
    lost = [SessionLost("hk-a", T0 + 21 * S, "s0"), SessionLost("hk-a", T0 + 21 * S, "s1")]
    lost += [BindRefused("hk-a", T0 + 22 * S + i, "s0", "ESME_RBINDFAIL") for i in range(3)]
    [rec] = feed(a, lost, T0 + 30 * S)
    assert rec.window_end == T0 + 30 * S and rec.state is HealthState.DOWN
    assert rec.figures["bound_sessions"] == 0 and rec.figures["bind_failures"] == 5
    assert "bound_sessions=0 < 1 (down)" in rec.breaches


def test_a_clean_unbind_is_not_a_failure() -> None:
    a = agg()
    [rec] = feed(a, [*bound(), SessionLost("hk-a", T0 + 1, "s1", clean=True)], T0 + 10 * S)
    assert rec.figures["bound_sessions"] == 1 and rec.figures["bind_failures"] == 0
    assert rec.state is HealthState.HEALTHY


def test_slow_probes_degrade_and_lost_probes_take_the_route_down() -> None:
    a = agg()
    obs = bound()
    for i in range(6):  # a probe every 10 s, back after 6 s
        sent = T0 + i * 10 * S
        obs += [ProbeSent("hk-a", sent, f"p{i}"), ProbeReturned("hk-a", sent + 6 * S, f"p{i}")]
    records = feed(a, obs, T0 + 60 * S)
    assert records[-1].state is HealthState.DEGRADED and records[-1].figures["probe_latency_ms"] == 6000

    a = agg()
    obs = bound()
    for i in range(6):  # nothing comes back: each is lost 30 s after it was sent
        obs.append(ProbeSent("hk-a", T0 + i * 10 * S, f"p{i}"))
    records = feed(a, obs, T0 + 90 * S)
    by_end = {(r.window_end - T0) // S: r for r in records}
    assert "probe_loss" not in by_end[30].figures  # the first probe is lost at 30 s, counted from then on
    assert (
        by_end[40].figures["probe_loss"] == 1.0 and by_end[40].state is HealthState.HEALTHY
    )  # 1 < min_probes
    assert by_end[60].figures["probes_resolved"] == 3 and by_end[60].state is HealthState.DOWN
    assert by_end[90].figures["probes_resolved"] == 6


def test_a_probe_back_after_its_deadline_is_lost_however_late_time_is_advanced() -> None:
    a = agg()
    feed(
        a,
        [*bound(), ProbeSent("hk-a", T0 + 1 * S, "p"), ProbeReturned("hk-a", T0 + 35 * S, "p")],
        T0 + 40 * S,
    )
    [rec] = a.advance(T0 + 50 * S)
    assert rec.figures["probe_loss"] == 1.0 and "probe_latency_ms" not in rec.figures


def test_a_busy_route_going_silent_is_down_against_its_own_baseline() -> None:
    a = agg()
    obs = bound()
    obs += [CarrierTraffic("hk-a", T0 + i * 500) for i in range(2 * 600)]  # 2 SMS/s for 10 minutes
    records = feed(a, obs, T0 + 600 * S)
    assert records[-1].state is HealthState.HEALTHY
    assert records[-1].figures["baseline_messages"] == pytest.approx(120, rel=0.01)
    silent = a.advance(T0 + 660 * S)
    states = [(int((r.window_end - T0) // S), r.state.value) for r in silent]
    assert states[0] == (610, "healthy")  # 50 s of traffic in the window: 5/6 of normal
    assert ("healthy", "degraded", "down") == tuple(dict.fromkeys(s for _, s in states))
    assert silent[-1].figures["throughput_ratio"] == 0 and silent[-1].state is HealthState.DOWN


def test_carrier_error_rates_and_enquire_link() -> None:
    a = agg()
    obs = bound()
    obs += [CarrierTraffic("hk-a", T0 + i * 100, CarrierOutcome.OK) for i in range(16)]
    obs += [CarrierTraffic("hk-a", T0 + 2000 + i, CarrierOutcome.TEMPORARY_ERROR) for i in range(4)]
    obs += [EnquireLinkRtt("hk-a", T0 + 3000, 40.0), EnquireLinkRtt("hk-a", T0 + 4000, 1500.0)]
    [rec] = feed(a, obs, T0 + 10 * S)
    assert rec.figures["temporary_error_rate"] == 0.2 and rec.figures["error_rate"] == 0
    assert rec.figures["enquire_link_rtt_ms"] == 1500 and rec.state is HealthState.DEGRADED


def test_webhook_endpoint_answering_503_or_timing_out() -> None:
    a = agg(HOOK)
    obs: list[Observation] = [
        WebhookAttempt("hook-1", T0 + i * 100, AttemptOutcome.HTTP_ERROR, 12.0) for i in range(8)
    ]
    obs += [WebhookAttempt("hook-1", T0 + 1000 + i, AttemptOutcome.TIMEOUT, 10_000.0) for i in range(2)]
    [rec] = feed(a, obs, T0 + 10 * S)
    assert rec.figures["success_rate"] == 0 and rec.figures["timeout_rate"] == 0.2
    assert rec.figures["latency_p95_ms"] == 10_000 and rec.state is HealthState.DOWN

    a = agg(HOOK)
    obs = [WebhookAttempt("hook-1", T0 + i * 100, AttemptOutcome.SUCCESS, 20.0) for i in range(19)]
    obs.append(WebhookAttempt("hook-1", T0 + 5000, AttemptOutcome.TLS_ERROR, 5.0))
    [rec] = feed(a, obs, T0 + 10 * S)
    assert rec.figures["connect_error_rate"] == 0.05 and rec.state is HealthState.DEGRADED
    # Traffic moved away: the failures are not forgotten by leaving the endpoint alone...
    idle = a.advance(T0 + 120 * S)[-1]
    assert idle.state is HealthState.DEGRADED and idle.figures["idle_ms"] == 60 * S
    # ...only fresh attempts (traffic or the stage's pings) show it has recovered.
    pings = [WebhookAttempt("hook-1", T0 + 125 * S + i, AttemptOutcome.SUCCESS, 30.0) for i in range(5)]
    assert feed(a, pings, T0 + 130 * S)[-1].state is HealthState.HEALTHY


def test_an_endpoint_never_used_is_healthy_so_an_idle_secondary_can_take_over() -> None:
    [rec] = feed(agg(HOOK), [], T0 + 10 * S)
    assert rec.state is HealthState.HEALTHY and rec.figures == {"attempts": 0}


def test_observations_for_unknown_routes_are_counted_not_used() -> None:
    a = agg()
    feed(a, [CarrierTraffic("nobody", T0 + 1), ProbeReturned("hk-a", T0 + 2, "never-sent")], T0 + 10 * S)
    assert a.ignored == 2


ROUTE_IDS = ("hk-a", "hook-1")
observation = st.one_of(
    st.builds(lambda s: SessionBound("hk-a", 0, f"s{s}"), st.integers(0, 2)),
    st.builds(lambda s, c: SessionLost("hk-a", 0, f"s{s}", c), st.integers(0, 2), st.booleans()),
    st.builds(lambda s: BindRefused("hk-a", 0, f"s{s}"), st.integers(0, 2)),
    st.builds(lambda v: EnquireLinkRtt("hk-a", 0, v), st.floats(0, 10_000)),
    st.builds(lambda o: CarrierTraffic("hk-a", 0, o), st.sampled_from(CarrierOutcome)),
    st.builds(lambda p: ProbeSent("hk-a", 0, f"p{p}"), st.integers(0, 9)),
    st.builds(lambda p: ProbeReturned("hk-a", 0, f"p{p}"), st.integers(0, 9)),
    st.builds(
        lambda o, v: WebhookAttempt("hook-1", 0, o, v), st.sampled_from(AttemptOutcome), st.floats(0, 20_000)
    ),
)
timeline = st.lists(st.tuples(st.integers(0, 15_000), observation), max_size=200)


def stamped(steps: list[tuple[int, Observation]]) -> list[Observation]:
    out, t = [], T0
    for dt, obs in steps:
        t += dt
        out.append(dataclasses.replace(obs, at=t))
    return out


@settings(max_examples=150, deadline=None)
@given(timeline, st.lists(st.integers(0, 400), max_size=30))
def test_records_depend_on_the_observations_only_not_on_when_time_is_advanced(
    steps: list[tuple[int, Observation]], extra_ticks: list[int]
) -> None:
    obs = stamped(steps)
    end = (obs[-1].at if obs else T0) + 120 * S
    plain = feed(agg(CARRIER, HOOK), obs, end)
    again = feed(agg(CARRIER, HOOK), obs, end)
    assert plain == again

    # The same observations with extra advance() calls in between (as a stage ticking every second would).
    ticks = sorted(tick for tick in (T0 + t * S for t in extra_ticks) if tick <= end)
    a, ticked = agg(CARRIER, HOOK), []
    pending = list(obs)
    for tick in ticks:
        while pending and pending[0].at <= tick:
            ticked += a.observe(pending.pop(0))
        ticked += a.advance(tick)
    ticked += feed(a, pending, end)
    assert ticked == plain
    ends = [r.window_end for r in plain]
    assert ends == sorted(ends) and len(ends) == 2 * ((end - T0) // (10 * S))


@settings(max_examples=150, deadline=None)
@given(timeline, st.data())
def test_snapshot_restore_continue_gives_the_same_records(
    steps: list[tuple[int, Observation]], data: st.DataObject
) -> None:
    obs = stamped(steps)
    end = (obs[-1].at if obs else T0) + 120 * S
    plain = feed(agg(CARRIER, HOOK), obs, end)

    cut = data.draw(st.integers(0, len(obs)))
    first = agg(CARRIER, HOOK)
    records = feed(first, obs[:cut], obs[cut].at if cut < len(obs) else end)
    second = agg(CARRIER, HOOK)  # a new worker after a crash, same config
    second.restore(json.loads(json.dumps(first.snapshot())))
    assert second.snapshot() == first.snapshot()
    records += feed(second, obs[cut:], end)
    assert records == plain
