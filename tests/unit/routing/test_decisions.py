"""The double-list decision table, one scenario per row, from health records and overrides to decisions."""

from __future__ import annotations

import pytest

from smsflow.routing.decisions import Decision, DoubleList, ScopeState, ops_alert
from smsflow.routing.health import HealthRecord
from smsflow.routing.model import ListName, Override, PolicyError
from tests.routing_factories import SCOPE, S, pin, policy, record

Event = HealthRecord | Override | int  # an int is a tick at that many ms


def run(events: list[Event], machine: DoubleList | None = None) -> tuple[ScopeState, list[Decision]]:
    machine = machine or DoubleList(policy())
    state = machine.initial()
    out: list[Decision] = []
    for ev in events:
        if isinstance(ev, HealthRecord):
            state, ds = machine.on_health(state, ev)
        elif isinstance(ev, Override):
            state, ds = machine.on_override(state, ev)
        else:
            state, ds = machine.on_tick(state, ev)
        out += ds
    return state, out


def both(t: float, p: str, s: str) -> list[Event]:
    """The records of one window end: primary route pa, secondary route sb."""
    return [record("pa", t, p), record("sb", t, s)]


def series(start: float, end: float, p: str, s: str) -> list[Event]:
    """A record pair every 10 s step from start to end inclusive."""
    out: list[Event] = []
    t = start
    while t <= end:
        out += both(t, p, s)
        t += 10
    return out


def summary(decisions: list[Decision]) -> list[tuple[float, str, str]]:
    return [(d.at / S, d.kind.value, d.active.value) for d in decisions]


TABLE = [
    ("both healthy: stay on primary", series(10, 120, "healthy", "healthy"), []),
    (
        "primary degraded, secondary healthy: failover",
        both(10, "degraded", "healthy"),
        [(10, "failover", "secondary")],
    ),
    (
        "primary down, secondary healthy: failover",
        both(10, "down", "healthy"),
        [(10, "failover", "secondary")],
    ),
    (
        "both degraded: alert, keep primary (same state)",
        both(10, "degraded", "degraded"),
        [(10, "both_degraded", "primary")],
    ),
    (
        "primary down, secondary degraded: alert, move to the better list",
        both(10, "down", "degraded"),
        [(10, "both_degraded", "primary"), (10, "better_list", "secondary")],
    ),
    (
        "primary degraded, secondary down: alert, primary is the better list",
        both(10, "degraded", "down"),
        [(10, "both_degraded", "primary")],
    ),
    ("no health for the secondary yet: no failover to the unknown", [record("pa", 10, "down")], []),
    (
        "failback only after the primary has been healthy for the whole hold-down",
        both(10, "down", "healthy") + series(20, 140, "healthy", "healthy"),
        [(10, "failover", "secondary"), (70, "failback", "primary")],
    ),
    (
        "a relapse during the hold-down restarts it",
        both(10, "down", "healthy")
        + series(20, 50, "healthy", "healthy")
        + both(60, "degraded", "healthy")
        + series(70, 140, "healthy", "healthy"),
        [(10, "failover", "secondary"), (120, "failback", "primary")],
    ),
    (
        "secondary fails, primary healthy but not yet for the hold-down: back once the hysteresis allows",
        both(10, "down", "healthy")
        + series(20, 40, "healthy", "down")
        + both(50, "degraded", "down")
        + series(60, 90, "healthy", "down"),
        [
            (10, "failover", "secondary"),
            (50, "both_degraded", "secondary"),
            (70, "secondary_unhealthy", "primary"),
        ],
    ),
    (
        "both degraded clears after a list is healthy for the hold-down",
        both(10, "degraded", "degraded") + series(20, 100, "degraded", "healthy"),
        [
            (10, "both_degraded", "primary"),
            (20, "failover", "secondary"),
            (70, "both_degraded_cleared", "secondary"),
        ],
    ),
]


@pytest.mark.parametrize(("events", "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_decision_table(events: list[Event], expected: list[tuple[float, str, str]]) -> None:
    assert summary(run(events)[1]) == expected


def test_a_list_serves_while_any_of_its_routes_is_healthy() -> None:
    machine = DoubleList(policy(primary=("pa", "pb")))
    _, decisions = run(
        [record("pa", 10, "down"), record("pb", 10, "healthy"), record("sb", 10, "healthy")], machine
    )
    assert decisions == []
    _, decisions = run(
        [record("pa", 10, "down"), record("pb", 10, "down"), record("sb", 10, "healthy")], machine
    )
    assert summary(decisions) == [(10, "failover", "secondary")]


def test_policy_thresholds_rescore_the_stage_records() -> None:
    # The stage called 800 ms probe latency healthy; this policy's limit is 500 ms.
    strict = DoubleList(policy(thresholds={"probe_latency_ms": {"degraded": 500}}))
    _, decisions = run(both(10, "healthy", "healthy"), strict)
    assert summary(decisions) == [(10, "both_degraded", "primary")]
    [alert] = decisions
    pa = next(e for e in alert.evidence if e.route_id == "pa")
    assert pa.state.value == "degraded" and pa.breaches == ("probe_latency_ms=800 ≥ 500 (degraded)",)


def test_decision_carries_its_evidence_and_reason() -> None:
    _, [d] = run(both(10, "degraded", "healthy"))
    assert d.decision_id == f"{SCOPE}#1" and d.scope == SCOPE and d.previous is ListName.PRIMARY
    assert [(e.route_id, e.list.value, e.state.value) for e in d.evidence] == [
        ("pa", "primary", "degraded"),
        ("sb", "secondary", "healthy"),
    ]
    assert d.reason.startswith("failover to secondary: primary degraded (probe_latency_ms=6000 ≥ 5000")
    assert d.primary_state is not None and d.primary_state.value == "degraded"


def test_latency_flapping_for_two_minutes_gives_at_most_three_switches() -> None:
    # The primary's probe latency crosses the limit every window for 2 minutes: the hold-down (60 s)
    # allows ⌊120/60⌋ + 1 = 3 automatic switches, and this sequence uses exactly one.
    events: list[Event] = []
    for i, t in enumerate(range(10, 131, 10)):
        events += both(t, "degraded" if i % 2 == 0 else "healthy", "healthy")
    decisions = run(events)[1]
    assert summary(decisions) == [(10, "failover", "secondary")]


def test_pin_holds_against_health_until_it_expires() -> None:
    events: list[Event] = [*both(10, "healthy", "healthy"), pin("secondary", at_s=15, for_s=100)]
    events += series(20, 110, "healthy", "down")  # the pinned list is down: the pin still holds
    events += series(120, 130, "healthy", "down")
    state, decisions = run(events)
    assert summary(decisions) == [(15, "override_set", "secondary"), (120, "override_expired", "primary")]
    assert state.pinned_by is None and state.active is ListName.PRIMARY
    assert decisions[0].pinned and decisions[0].override is not None
    assert decisions[0].override.actor == "ops@example.com"
    assert decisions[1].reason.startswith("pin to secondary by ops@example.com expired")
    assert not decisions[1].pinned


def test_expiry_is_seen_on_a_tick_without_health() -> None:
    _, decisions = run([*both(10, "healthy", "healthy"), pin("secondary", 15, for_s=30), 44 * S, 45 * S])
    assert summary(decisions) == [(15, "override_set", "secondary"), (45, "override_expired", "primary")]


def test_pin_auto_clears_and_health_decides_at_once() -> None:
    events: list[Event] = [*both(10, "down", "healthy"), pin("primary", 12), *both(20, "down", "healthy")]
    events.append(pin("auto", 25, for_s=None))
    _, decisions = run(events)
    assert summary(decisions) == [
        (10, "failover", "secondary"),
        (12, "override_set", "primary"),
        (25, "override_cleared", "secondary"),
    ]


def test_an_override_for_another_scope_is_refused() -> None:
    other = Override.model_validate(
        {"scope": "country:HK", "pin": "secondary", "reason": "r", "actor": "a", "at": 0, "expires_at": 9}
    )
    machine = DoubleList(policy())
    with pytest.raises(PolicyError, match=r"override\.scope"):
        machine.on_override(machine.initial(), other)


def test_health_of_routes_outside_the_policy_is_ignored_and_old_records_do_not_win() -> None:
    _, decisions = run(
        [record("elsewhere", 10, "down"), *both(20, "healthy", "healthy"), record("pa", 10, "down")]
    )
    assert decisions == []


def test_time_never_runs_backwards() -> None:
    # A late record is evaluated at the scope's clock, so hysteresis cannot be cheated by a stale timestamp.
    state, decisions = run([*both(100, "down", "healthy"), record("pa", 50, "healthy")])
    assert state.clock == 100 * S and summary(decisions) == [(100, "failover", "secondary")]


def test_both_degraded_raised_and_cleared_are_operational_events_and_nothing_else_is() -> None:
    """The alert reaches sms.ops.events.v1 (what operators' tooling reads), once raised and once cleared."""
    _, decisions = run(both(10, "degraded", "degraded") + series(20, 100, "degraded", "healthy"))
    alerts = [a for a in map(ops_alert, decisions) if a is not None]
    assert [(a["type"], a["ts"] / S, a["active"]) for a in alerts] == [
        ("routes_both_degraded", 10, "primary"),
        ("routes_both_degraded_cleared", 70, "secondary"),
    ]
    raised = alerts[0]
    assert raised["scope"] == SCOPE and raised["decision_id"] == decisions[0].decision_id
    assert raised["primary_state"] == raised["secondary_state"] == "degraded"
    assert "degraded" in raised["reason"]
