"""The decision stage's rules around ``DoubleList``: which scopes a health record concerns, and staleness.

``ScopeDesk`` takes health records and overrides for one scope (the stage keys them by scope) and returns the
new ``ScopeState`` and the decisions. On top of ``DoubleList`` it adds the rule for **health records that stop
arriving**: when a record of one route of a policy arrives at window end W and another route of that policy
has had no record since W - ``stale_after_windows`` steps, that route is judged on a *stale* record (its last
figures plus ``stale_steps``, which is down at 1). Staleness is measured on record time, never on the wall
clock, so replaying the health topic gives the same decisions. A route with no record at all stays
"unknown" (DoubleList never fails over to the unknown).
"""

from __future__ import annotations

from smsflow.routing.decisions import Decision, DoubleList, ScopeState, Step
from smsflow.routing.health import HealthRecord, scored
from smsflow.routing.model import Override, RoutingPolicy, RoutingSection, Thresholds
from smsflow.routing.policy_changes import PolicyChange


def scopes_of(section: RoutingSection, route_id: str) -> list[str]:
    """The scopes whose lists include ``route_id``: each gets the route's health records."""
    return [p.scope.key for p in section.policies if route_id in (*p.primary, *p.secondary)]


def stale_record(held: HealthRecord, now: int, step_ms: int) -> HealthRecord:
    steps = (now - held.window_end) // step_ms
    figures = {**held.figures, "stale_steps": float(steps)}
    return scored(held.route_id, held.kind, held.window_start, now, figures, Thresholds())


class ScopeDesk:
    def __init__(self, section: RoutingSection, policy: RoutingPolicy) -> None:
        self.policy = policy
        self.double_list = DoubleList(policy)
        self.step_ms = section.window.step_ms
        self.stale_ms = section.stale_after_windows * self.step_ms

    def initial(self) -> ScopeState:
        return self.double_list.initial()

    def on_health(self, state: ScopeState, record: HealthRecord) -> Step:
        out: list[Decision] = []
        now = record.window_end
        for route_id in (*self.policy.primary, *self.policy.secondary):
            held = state.health.get(route_id)
            if route_id == record.route_id or held is None:
                continue
            if now - held.window_end >= self.stale_ms and "stale_steps" not in held.figures:
                state, more = self.double_list.on_health(state, stale_record(held, now, self.step_ms))
                out += more
        state, more = self.double_list.on_health(state, record)
        return state, out + more

    def on_override(self, state: ScopeState, override: Override) -> Step:
        return self.double_list.on_override(state, override)

    def on_policy(self, state: ScopeState, change: PolicyChange) -> Step:
        return self.double_list.on_policy(state, change)

    def on_tick(self, state: ScopeState, now: int) -> Step:
        return self.double_list.on_tick(state, now)
