"""Properties of the double-list state machine over any sequence of health, pins and ticks.

(a) no flapping: two automatic switches are at least a hold-down H apart, so any interval of length T holds at
    most ⌊T/H⌋ + 1 of them; the "both degraded" alert is raised (and cleared) at most ⌊T/H⌋ + 1 times too;
(b) determinism: the same inputs give the same decisions, and stopping, serialising the state to JSON,
    restoring it and continuing gives the same decisions as one run;
(c) a switch never picks a down list while the other is healthy, and the active list is never left unhealthy
    while the other is healthy, except within H of the last automatic switch (the hysteresis);
(d) a pin wins until it expires or is replaced; its expiry is announced at the first input at or after it.
The expected health of each list is recomputed here from the inputs, not read from the machine.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from smsflow.routing.decisions import AUTOMATIC_SWITCHES, Decision, DecisionKind, DoubleList, ScopeState
from smsflow.routing.health import HealthRecord, HealthState
from smsflow.routing.model import ListName, Override
from tests.routing_factories import S, pin, policy, record

ROUTES = {"pa": ListName.PRIMARY, "pb": ListName.PRIMARY, "sb": ListName.SECONDARY}

health_event = st.tuples(
    st.just("health"), st.sampled_from(sorted(ROUTES)), st.sampled_from(["healthy", "degraded", "down"])
)
pin_event = st.tuples(st.just("pin"), st.sampled_from(["primary", "secondary", "auto"]), st.integers(1, 30))
tick_event = st.tuples(st.just("tick"), st.just(""), st.just(0))
# Mostly health; a record may share its window end with the previous one (dt 0) or skip windows.
step = st.tuples(
    st.sampled_from([0, 0, 10, 10, 10, 20, 60]), st.one_of(health_event, health_event, pin_event, tick_event)
)
sequences = st.lists(step, min_size=1, max_size=150)
hold_downs = st.sampled_from([30, 60, 90])

Input = HealthRecord | Override | int


def inputs(steps: list[tuple[int, tuple[str, str, object]]]) -> list[Input]:
    out: list[Input] = []
    t = 10
    for dt, (what, arg, extra) in steps:
        t += dt
        if what == "health":
            out.append(record(arg, t, str(extra)))
        elif what == "pin":
            out.append(pin(arg, t, for_s=None if arg == "auto" else int(str(extra)) * 10))
        else:
            out.append(t * S)
    return out


def feed(machine: DoubleList, state: ScopeState, ev: Input) -> tuple[ScopeState, list[Decision]]:
    if isinstance(ev, HealthRecord):
        return machine.on_health(state, ev)
    if isinstance(ev, Override):
        return machine.on_override(state, ev)
    return machine.on_tick(state, ev)


def time_of(ev: Input) -> int:
    if isinstance(ev, HealthRecord):
        return ev.window_end
    if isinstance(ev, Override):
        return ev.at
    return ev


@dataclass
class Oracle:
    """The lists' health and the pin in force, from the inputs alone."""

    latest: dict[str, HealthRecord] = field(default_factory=dict)
    pinned: Override | None = None
    clock: int = 0

    def see(self, ev: Input) -> None:
        self.clock = max(self.clock, time_of(ev))
        if isinstance(ev, HealthRecord):
            held = self.latest.get(ev.route_id)
            if held is None or ev.window_end > held.window_end:
                self.latest[ev.route_id] = ev
        elif isinstance(ev, Override):
            self.pinned = None if ev.pin.value == "auto" else ev

    def list_state(self, name: ListName) -> HealthState | None:
        states = [r.state for rid, r in self.latest.items() if ROUTES[rid] is name]
        return max(states, key=lambda s: s.rank) if states else None


def run(machine: DoubleList, evs: list[Input]) -> list[Decision]:
    state, out = machine.initial(), []
    for ev in evs:
        state, ds = feed(machine, state, ev)
        out += ds
    return out


@settings(max_examples=300, deadline=None)
@given(sequences, hold_downs)
def test_no_flapping(steps: list[tuple[int, tuple[str, str, object]]], hold_s: int) -> None:
    machine = DoubleList(policy(primary=("pa", "pb"), hold_down_s=hold_s))
    hold = hold_s * S
    decisions = run(machine, inputs(steps))
    for kinds in (AUTOMATIC_SWITCHES, {DecisionKind.BOTH_DEGRADED}, {DecisionKind.BOTH_DEGRADED_CLEARED}):
        times = [d.at for d in decisions if d.kind in kinds]
        assert all(b - a >= hold for a, b in itertools.pairwise(times)), (kinds, times)
        # The stated bound, checked directly over every interval that starts at one of them.
        for t0 in times:
            for length in (0, hold - 1, hold, 2 * hold + 7, 5 * hold):
                inside = [t for t in times if t0 <= t <= t0 + length]
                assert len(inside) <= length // hold + 1


@settings(max_examples=200, deadline=None)
@given(sequences, st.data())
def test_replay_and_restore_give_the_same_decisions(
    steps: list[tuple[int, tuple[str, str, object]]], data: st.DataObject
) -> None:
    machine = DoubleList(policy(primary=("pa", "pb")))
    evs = inputs(steps)
    once = [d.to_record() for d in run(machine, evs)]
    assert once == [d.to_record() for d in run(DoubleList(policy(primary=("pa", "pb"))), evs)]

    cut = data.draw(st.integers(0, len(evs)))
    state, split = machine.initial(), []
    for ev in evs[:cut]:
        state, ds = feed(machine, state, ev)
        split += ds
    stored = json.dumps(state.to_dict())  # what the compacted state table would hold
    restored = ScopeState.from_dict(json.loads(stored))
    assert restored == state
    state = restored
    for ev in evs[cut:]:
        state, ds = feed(machine, state, ev)
        split += ds
    assert [d.to_record() for d in split] == once


@settings(max_examples=300, deadline=None)
@given(sequences)
def test_never_picks_or_keeps_a_bad_list_when_a_healthy_one_exists(
    steps: list[tuple[int, tuple[str, str, object]]],
) -> None:
    machine = DoubleList(policy(primary=("pa", "pb")))
    hold = machine.hold_down
    oracle, state, last_switch = Oracle(), machine.initial(), None
    for ev in inputs(steps):
        oracle.see(ev)
        state, decisions = feed(machine, state, ev)
        for d in decisions:
            if d.kind in AUTOMATIC_SWITCHES:
                last_switch = d.at
                chosen, other = oracle.list_state(d.active), oracle.list_state(d.active.other)
                assert not (chosen is HealthState.DOWN and other is HealthState.HEALTHY), d
        if state.pinned_by is not None:
            continue
        here, there = oracle.list_state(state.active), oracle.list_state(state.active.other)
        stuck = here is not None and here is not HealthState.HEALTHY and there is HealthState.HEALTHY
        if stuck:
            assert last_switch is not None and oracle.clock - last_switch < hold, (state, oracle.clock)


@settings(max_examples=300, deadline=None)
@given(sequences)
def test_a_pin_wins_until_it_expires(steps: list[tuple[int, tuple[str, str, object]]]) -> None:
    machine = DoubleList(policy(primary=("pa", "pb")))
    oracle, state = Oracle(), machine.initial()
    for ev in inputs(steps):
        oracle.see(ev)
        state, decisions = feed(machine, state, ev)
        pinned = oracle.pinned
        if pinned is None:
            continue
        assert pinned.expires_at is not None
        if oracle.clock < pinned.expires_at:
            assert state.active.value == pinned.pin.value and state.pinned_by == pinned
            assert all(d.active.value == pinned.pin.value for d in decisions)
            assert not any(d.kind in AUTOMATIC_SWITCHES for d in decisions)
        else:
            assert [d.kind for d in decisions][:1] == [DecisionKind.OVERRIDE_EXPIRED]
            assert state.pinned_by is None
            oracle.pinned = None
