"""The per-scope double-list state machine: health records and overrides in, decisions out.

``DoubleList(policy)`` is stateless; the scope's state is a value (``ScopeState``) passed in and returned, so
the stage can keep it in a compacted table and restore it after a crash. Inputs carry their own time (a
health record's window end, an override's ``at``, a tick's ``now``), so replaying the same inputs gives the
same decisions, and stopping, restoring the state and continuing gives the same decisions as not stopping.

Rules (docs/double-list.md has the table and the proof of the flapping bound):
- on primary: primary not healthy and secondary healthy -> failover;
- on secondary: primary healthy for the whole hold-down -> failback; secondary not healthy and primary
  healthy -> back to primary at once;
- both not healthy -> "both degraded" alert, and stay on the list whose state is better (a switch only when
  the other list's state is strictly better); the alert clears once it is a hold-down old and a list has
  been healthy for the hold-down;
- two automatic switches are at least a hold-down apart (hysteresis);
- a pin holds until it expires or is cleared, whatever the health; then the rules above apply at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from smsflow.routing.health import Assessment, HealthRecord, HealthState
from smsflow.routing.model import ListName, Override, PolicyError, PolicySource, RoutingPolicy
from smsflow.routing.policy_changes import PolicyChange


class DecisionKind(StrEnum):
    FAILOVER = "failover"  # primary not healthy, secondary healthy
    FAILBACK = "failback"  # primary healthy for the hold-down
    SECONDARY_UNHEALTHY = "secondary_unhealthy"  # on secondary, it failed, primary is healthy
    BETTER_LIST = "better_list"  # both not healthy: to the list in the better state
    BOTH_DEGRADED = "both_degraded"  # alert raised: someone should look
    BOTH_DEGRADED_CLEARED = "both_degraded_cleared"  # a list has been healthy for the hold-down
    OVERRIDE_SET = "override_set"
    OVERRIDE_CLEARED = "override_cleared"
    OVERRIDE_EXPIRED = "override_expired"
    POLICY_SET = "policy_set"  # an API policy created or changed: its lists and thresholds decide from now on
    POLICY_DELETED = "policy_deleted"  # an API policy removed: the config's policy (if any) decides again


AUTOMATIC_SWITCHES = frozenset(
    {DecisionKind.FAILOVER, DecisionKind.FAILBACK, DecisionKind.SECONDARY_UNHEALTHY, DecisionKind.BETTER_LIST}
)


ALERTS = frozenset({DecisionKind.BOTH_DEGRADED, DecisionKind.BOTH_DEGRADED_CLEARED})


def ops_alert(d: Decision) -> dict[str, Any] | None:
    """The operational event (sms.ops.events.v1, key = scope) for a "both degraded" alert raised or cleared,
    else None. Operators' tooling already reads that topic (``endpoint_disabled``); the decision itself stays
    the full record. ``ts`` is the decision's input time, so a replay gives the same event."""
    if d.kind not in ALERTS:
        return None
    return {
        "type": f"routes_{d.kind.value}",
        "scope": d.scope,
        "decision_id": d.decision_id,
        "active": d.active.value,
        "primary_state": d.primary_state.value if d.primary_state else None,
        "secondary_state": d.secondary_state.value if d.secondary_state else None,
        "reason": d.reason,
        "ts": d.at,
    }


@dataclass(frozen=True)
class ListHealth:
    """A list serves while any of its routes does, so it is as healthy as its best route."""

    state: HealthState | None  # None: no record for any of its routes yet
    score: float | None
    routes: tuple[tuple[str, Assessment], ...] = ()
    as_of: int | None = None  # the oldest window end behind it: what we know holds at least until then

    @property
    def healthy(self) -> bool:
        return self.state is HealthState.HEALTHY

    @property
    def unhealthy(self) -> bool:
        return self.state is not None and self.state is not HealthState.HEALTHY

    def describe(self, name: ListName) -> str:
        if self.state is None:
            return f"{name.value} unknown (no health record yet)"
        worst = [str(b) for _, a in self.routes for b in a.breaches]
        detail = f" ({'; '.join(worst)})" if worst and not self.healthy else ""
        return f"{name.value} {self.state.value}{detail}"


@dataclass(frozen=True)
class Evidence:
    route_id: str
    list: ListName
    state: HealthState  # under the policy's thresholds
    score: float
    window_end: int
    breaches: tuple[str, ...]
    figures: Mapping[str, float]

    def to_record(self) -> dict[str, Any]:
        return {
            "route_id": self.route_id,
            "list": self.list.value,
            "state": self.state.value,
            "score": self.score,
            "window_end": self.window_end,
            "breaches": list(self.breaches),
            "figures": dict(self.figures),
        }


@dataclass(frozen=True)
class Decision:
    """One transition, with the evidence behind it: the value on ``sms.routes.decisions.v1`` (key = scope)."""

    decision_id: str
    scope: str
    at: int
    kind: DecisionKind
    active: ListName
    previous: ListName
    pinned: bool
    both_degraded: bool
    reason: str
    primary_state: HealthState | None
    secondary_state: HealthState | None
    override: Override | None = None
    evidence: tuple[Evidence, ...] = ()
    policy_source: PolicySource = PolicySource.CONFIG  # the policy that made this decision
    policy_version: int | None = None  # its version when it is an API policy
    policy_actor: str | None = None  # policy_set / policy_deleted: who changed it

    def to_record(self) -> dict[str, Any]:
        """The Avro value (schemas/route_decision.avsc)."""
        ov = self.override
        return {
            "decision_id": self.decision_id,
            "scope": self.scope,
            "at": self.at,
            "kind": self.kind.value,
            "active": self.active.value,
            "previous": self.previous.value,
            "mode": "pinned" if self.pinned else "auto",
            "both_degraded": self.both_degraded,
            "reason": self.reason,
            "primary_state": self.primary_state.value if self.primary_state else None,
            "secondary_state": self.secondary_state.value if self.secondary_state else None,
            "override_pin": ov.pin.value if ov else None,
            "override_actor": ov.actor if ov else None,
            "override_reason": ov.reason if ov else None,
            "override_expires_at": ov.expires_at if ov else None,
            "evidence": [e.to_record() for e in self.evidence],
            "policy_source": self.policy_source.value,
            "policy_version": self.policy_version,
            "policy_actor": self.policy_actor,
        }


@dataclass(frozen=True)
class ScopeState:
    scope: str
    active: ListName = ListName.PRIMARY
    pinned_by: Override | None = None
    alert_since: int | None = None  # when "both degraded" was raised; None = not raised
    last_switch_at: int | None = None  # the last automatic switch: the hysteresis clock
    clock: int | None = None  # the latest input time; time never runs backwards
    seq: int = 0  # decisions emitted so far: decision ids are replay-stable
    health: Mapping[str, HealthRecord] = field(default_factory=dict)  # latest record per listed route
    # The latest window end at which each list was seen not healthy (record time, not arrival time: the
    # records of one window reach the scope one by one, and a list is not "bad now" for a record of the past).
    unhealthy_at: Mapping[ListName, int] = field(default_factory=dict)
    policy_change: int = (
        0  # the last API policy change applied (its version): a re-read one is not re-applied
    )

    @property
    def both_degraded(self) -> bool:
        return self.alert_since is not None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe value for the stage's compacted state table."""
        return {
            "scope": self.scope,
            "active": self.active.value,
            "pinned_by": self.pinned_by.model_dump(mode="json") if self.pinned_by else None,
            "alert_since": self.alert_since,
            "last_switch_at": self.last_switch_at,
            "clock": self.clock,
            "seq": self.seq,
            "health": {rid: rec.to_record() for rid, rec in sorted(self.health.items())},
            "unhealthy_at": {name.value: at for name, at in sorted(self.unhealthy_at.items())},
            "policy_change": self.policy_change,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScopeState:
        pinned = data.get("pinned_by")
        return cls(
            scope=data["scope"],
            active=ListName(data["active"]),
            pinned_by=Override.model_validate(pinned) if pinned else None,
            alert_since=data.get("alert_since"),
            last_switch_at=data.get("last_switch_at"),
            clock=data.get("clock"),
            seq=int(data.get("seq", 0)),
            health={rid: HealthRecord.from_record(rec) for rid, rec in data.get("health", {}).items()},
            unhealthy_at={ListName(k): int(v) for k, v in data.get("unhealthy_at", {}).items()},
            policy_change=int(data.get("policy_change", 0)),
        )


Step = tuple[ScopeState, list[Decision]]


class DoubleList:
    """The decision rules of one policy."""

    def __init__(self, policy: RoutingPolicy) -> None:
        self.policy = policy
        self.scope = policy.scope.key
        self.hold_down = policy.hold_down_ms
        self._list_of = {rid: name for name in ListName for rid in policy.routes(name)}

    def initial(self) -> ScopeState:
        return ScopeState(scope=self.scope)

    def on_health(self, state: ScopeState, record: HealthRecord) -> Step:
        if record.route_id in self._list_of:
            held = state.health.get(record.route_id)
            if held is None or record.window_end > held.window_end:
                state = replace(state, health={**state.health, record.route_id: record})
        return self._evaluate(state, record.window_end)

    def on_override(self, state: ScopeState, override: Override) -> Step:
        if override.scope.key != self.scope:
            raise PolicyError(f"override.scope: {override.scope.key!r} is not this policy's {self.scope!r}")
        now = _later(state.clock, override.at)
        health = self._lists(state)
        previous = state.active
        if override.pinned is None:
            state = replace(state, pinned_by=None, clock=now)
            active, _ = self._choose(state, health, now)
            state = replace(state, active=active)
            kind, why = DecisionKind.OVERRIDE_CLEARED, "pin cleared: health decides again"
        else:
            state = replace(state, pinned_by=override, active=override.pinned, clock=now)
            kind, why = DecisionKind.OVERRIDE_SET, f"pinned to {override.pinned.value}"
        why = f"{why} by {override.actor}: {override.reason}"
        state, first = self._emit(state, now, kind, previous, why, health, override)
        state, more = self._evaluate(state, now)
        return state, [first, *more]

    def on_policy(self, state: ScopeState, change: PolicyChange) -> Step:
        """An API policy set or deleted for this scope (this ``DoubleList`` has the policy that decides from
        now on, or the deleted one when nothing is left). One audited decision, then the rules at once under
        the new lists. A change already applied (a record read again after a restart) changes nothing."""
        if change.scope != self.scope:
            raise PolicyError(f"policy.scope: {change.scope!r} is not this policy's {self.scope!r}")
        if change.version <= state.policy_change:
            return state, []
        now = _later(state.clock, change.at)
        state = replace(state, clock=now, policy_change=change.version)
        health = self._lists(state)
        if change.policy is not None:
            kind = DecisionKind.POLICY_SET
            lists = f"primary {list(change.policy.primary)}, secondary {list(change.policy.secondary)}"
            why = f"policy v{change.version} set by {change.actor}: {change.reason} ({lists})"
        else:
            kind = DecisionKind.POLICY_DELETED
            after = (
                "the config's policy decides again"
                if self.policy.source is PolicySource.CONFIG
                else "no policy left for this scope"
            )
            why = f"API policy deleted (v{change.version}) by {change.actor}: {change.reason}; {after}"
        state, first = self._emit(state, now, kind, state.active, why, health, actor=change.actor)
        if change.policy is None and self.policy.source is not PolicySource.CONFIG:
            return state, [first]  # nothing decides this scope any more
        state, more = self._evaluate(state, now)
        return state, [first, *more]

    def on_tick(self, state: ScopeState, now: int) -> Step:
        """Let time pass without new health (expires pins; the stage ticks each step)."""
        return self._evaluate(state, now)

    def _lists(self, state: ScopeState) -> dict[ListName, ListHealth]:
        out = {}
        for name in ListName:
            assessed = tuple(
                (rid, state.health[rid].reassess(self.policy.thresholds))
                for rid in self.policy.routes(name)
                if rid in state.health
            )
            if not assessed:
                out[name] = ListHealth(None, None)
                continue
            best = max(assessed, key=lambda ra: (ra[1].state.rank, ra[1].score))[1]
            as_of = min(state.health[rid].window_end for rid, _ in assessed)
            out[name] = ListHealth(best.state, best.score, assessed, as_of)
        return out

    def _settled(
        self, state: ScopeState, health: Mapping[ListName, ListHealth], name: ListName, now: int
    ) -> bool:
        last_bad = state.unhealthy_at.get(name)
        return health[name].healthy and (last_bad is None or now - last_bad >= self.hold_down)

    def _choose(
        self, state: ScopeState, health: Mapping[ListName, ListHealth], now: int
    ) -> tuple[ListName, DecisionKind | None]:
        """Where the rules want traffic, ignoring the hysteresis clock."""
        p, s = health[ListName.PRIMARY], health[ListName.SECONDARY]
        both_bad = p.unhealthy and s.unhealthy
        if state.active is ListName.PRIMARY:
            if p.unhealthy and s.healthy:
                return ListName.SECONDARY, DecisionKind.FAILOVER
            if both_bad and _rank(s) > _rank(p):
                return ListName.SECONDARY, DecisionKind.BETTER_LIST
        else:
            if self._settled(state, health, ListName.PRIMARY, now):
                return ListName.PRIMARY, DecisionKind.FAILBACK
            if s.unhealthy and p.healthy:
                return ListName.PRIMARY, DecisionKind.SECONDARY_UNHEALTHY
            if both_bad and _rank(p) > _rank(s):
                return ListName.PRIMARY, DecisionKind.BETTER_LIST
        return state.active, None

    def _evaluate(self, state: ScopeState, at: int) -> Step:
        now = _later(state.clock, at)
        health = self._lists(state)
        marks = dict(state.unhealthy_at)
        for name, lh in health.items():
            if lh.unhealthy and lh.as_of is not None:
                marks[name] = max(lh.as_of, marks.get(name, lh.as_of))
        state = replace(state, clock=now, unhealthy_at=marks)
        out: list[Decision] = []

        pin = state.pinned_by
        if pin is not None and pin.expires_at is not None and now >= pin.expires_at:
            previous = state.active
            state = replace(state, pinned_by=None)
            active, _ = self._choose(state, health, now)
            state = replace(state, active=active)
            why = f"pin to {pin.pin.value} by {pin.actor} expired; health decides again"
            state, d = self._emit(state, now, DecisionKind.OVERRIDE_EXPIRED, previous, why, health, pin)
            out.append(d)

        p, s = health[ListName.PRIMARY], health[ListName.SECONDARY]
        if not state.both_degraded and p.unhealthy and s.unhealthy:
            state = replace(state, alert_since=now)
            why = "both lists degraded: manual intervention needed"
            state, d = self._emit(state, now, DecisionKind.BOTH_DEGRADED, state.active, why, health)
            out.append(d)
        elif (
            state.alert_since is not None
            and now - state.alert_since >= self.hold_down
            and any(self._settled(state, health, n, now) for n in ListName)
        ):
            state = replace(state, alert_since=None)
            why = f"a list has been healthy for the hold-down ({self.policy.hold_down_s} s)"
            state, d = self._emit(state, now, DecisionKind.BOTH_DEGRADED_CLEARED, state.active, why, health)
            out.append(d)

        if state.pinned_by is None:
            target, kind = self._choose(state, health, now)
            calm = state.last_switch_at is None or now - state.last_switch_at >= self.hold_down
            if kind is not None and target is not state.active and calm:
                previous = state.active
                state = replace(state, active=target, last_switch_at=now)
                state, d = self._emit(state, now, kind, previous, _because(kind, health), health)
                out.append(d)
        return state, out

    def _emit(
        self,
        state: ScopeState,
        now: int,
        kind: DecisionKind,
        previous: ListName,
        reason: str,
        health: Mapping[ListName, ListHealth],
        override: Override | None = None,
        actor: str | None = None,
    ) -> tuple[ScopeState, Decision]:
        evidence = tuple(
            Evidence(
                route_id=rid,
                list=name,
                state=a.state,
                score=a.score,
                window_end=state.health[rid].window_end,
                breaches=tuple(map(str, a.breaches)),
                figures=state.health[rid].figures,
            )
            for name in ListName
            for rid, a in health[name].routes
        )
        decision = Decision(
            decision_id=f"{self.scope}#{state.seq + 1}",
            scope=self.scope,
            at=now,
            kind=kind,
            active=state.active,
            previous=previous,
            pinned=state.pinned_by is not None,
            both_degraded=state.both_degraded,
            reason=reason,
            primary_state=health[ListName.PRIMARY].state,
            secondary_state=health[ListName.SECONDARY].state,
            override=override or state.pinned_by,
            evidence=evidence,
            policy_source=self.policy.source,
            policy_version=self.policy.version,
            policy_actor=actor,
        )
        return replace(state, seq=state.seq + 1), decision


def _rank(lh: ListHealth) -> int:
    return lh.state.rank if lh.state is not None else -1


def _later(clock: int | None, at: int) -> int:
    return at if clock is None else max(clock, at)


def _because(kind: DecisionKind, health: Mapping[ListName, ListHealth]) -> str:
    lists = "; ".join(health[n].describe(n) for n in ListName)
    lead = {
        DecisionKind.FAILOVER: "failover to secondary",
        DecisionKind.FAILBACK: "failback to primary after the hold-down",
        DecisionKind.SECONDARY_UNHEALTHY: "back to primary: secondary no longer healthy",
        DecisionKind.BETTER_LIST: "both lists degraded: to the better one",
    }[kind]
    return f"{lead}: {lists}"
