"""Route health: a window's figures, scored against thresholds into a state and a score.

The scoring is a table: each rule says which figure it reads, which sample count must be large enough for
the figure to mean anything, and the figure's limits come from ``Thresholds``. The aggregator scores with the
stage's thresholds (what ``sms.routes.health.v1`` shows); each policy re-scores the same figures with its own
thresholds, so one route can be strict for one scope and lenient for another without a second health stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from smsflow.routing.model import LOWER_IS_WORSE, Limits, RouteKind, Thresholds


class HealthState(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DOWN = "down"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {HealthState.DOWN: 0, HealthState.DEGRADED: 1, HealthState.HEALTHY: 2}


@dataclass(frozen=True)
class FigureRule:
    figure: str
    sample: str | None = None  # the count figure that must reach the threshold's minimum
    minimum: str | None = None  # the Thresholds attribute holding that minimum


CARRIER_RULES = (
    FigureRule("bound_sessions"),
    FigureRule("bind_failures"),
    FigureRule("enquire_link_rtt_ms"),
    FigureRule("error_rate", "outcomes", "min_outcomes"),
    FigureRule("temporary_error_rate", "outcomes", "min_outcomes"),
    FigureRule("throughput_ratio", "baseline_messages", "busy_baseline"),
    FigureRule("probe_latency_ms"),
    FigureRule("probe_loss", "probes_resolved", "min_probes"),
    FigureRule("stale_steps"),
)
WEBHOOK_RULES = (
    FigureRule("latency_p95_ms"),
    FigureRule("success_rate", "attempts", "min_attempts"),
    FigureRule("timeout_rate", "attempts", "min_attempts"),
    FigureRule("throttled_rate", "attempts", "min_attempts"),
    FigureRule("connect_error_rate", "attempts", "min_attempts"),
    FigureRule("stale_steps"),
)
RULES = {RouteKind.CARRIER: CARRIER_RULES, RouteKind.WEBHOOK: WEBHOOK_RULES}


@dataclass(frozen=True)
class Breach:
    figure: str
    value: float
    state: HealthState
    limit: float

    def __str__(self) -> str:
        side = "<" if self.figure in LOWER_IS_WORSE else "≥"
        return f"{self.figure}={self.value:g} {side} {self.limit:g} ({self.state.value})"


@dataclass(frozen=True)
class Assessment:
    state: HealthState
    score: float  # 1 healthy; (0, 0.5] degraded, nearer 0 the closer to down; 0 down
    breaches: tuple[Breach, ...] = ()


def _figure_score(figure: str, value: float, limits: Limits) -> tuple[HealthState, float, float | None]:
    lower = figure in LOWER_IS_WORSE

    def beyond(limit: float | None) -> bool:
        if limit is None:
            return False
        return value < limit if lower else value >= limit

    if beyond(limits.down):
        return HealthState.DOWN, 0.0, limits.down
    if not beyond(limits.degraded):
        return HealthState.HEALTHY, 1.0, None
    assert limits.degraded is not None
    if limits.down is None:
        return HealthState.DEGRADED, 0.3, limits.degraded
    # How far from the down limit, 1 at the degraded limit: ranks two degraded routes by margin.
    span = limits.degraded - limits.down
    margin = min(1.0, max(0.0, (value - limits.down) / span))
    return HealthState.DEGRADED, round(0.1 + 0.4 * margin, 6), limits.degraded


def assess(kind: RouteKind, figures: Mapping[str, float], thresholds: Thresholds) -> Assessment:
    """The state is the worst figure's; a figure without enough samples behind it is not judged."""
    worst = HealthState.HEALTHY
    score = 1.0
    breaches: list[Breach] = []
    for rule in RULES[kind]:
        value = figures.get(rule.figure)
        if value is None:
            continue
        if rule.sample and rule.minimum:
            if figures.get(rule.sample, 0.0) < float(getattr(thresholds, rule.minimum)):
                continue
        state, fig_score, limit = _figure_score(rule.figure, value, thresholds.limits(rule.figure))
        if limit is not None:
            breaches.append(Breach(rule.figure, value, state, limit))
        if state.rank < worst.rank:
            worst = state
        score = min(score, fig_score)
    return Assessment(worst, score, tuple(breaches))


@dataclass(frozen=True)
class HealthRecord:
    """One route's health over one window: the value written to ``sms.routes.health.v1`` (key = route id)."""

    route_id: str
    kind: RouteKind
    window_start: int  # epoch ms, inclusive
    window_end: int  # epoch ms, exclusive; the record's time
    state: HealthState
    score: float
    figures: Mapping[str, float] = field(default_factory=dict)
    breaches: tuple[str, ...] = ()

    def to_record(self) -> dict[str, Any]:
        """The Avro value (schemas/route_health.avsc)."""
        return {
            "route_id": self.route_id,
            "kind": self.kind.value,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "state": self.state.value,
            "score": self.score,
            "figures": dict(self.figures),
            "breaches": list(self.breaches),
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> HealthRecord:
        return cls(
            route_id=rec["route_id"],
            kind=RouteKind(rec["kind"]),
            window_start=int(rec["window_start"]),
            window_end=int(rec["window_end"]),
            state=HealthState(rec["state"]),
            score=float(rec["score"]),
            figures={k: float(v) for k, v in rec["figures"].items()},
            breaches=tuple(rec.get("breaches", ())),
        )

    def reassess(self, thresholds: Thresholds) -> Assessment:
        return assess(self.kind, self.figures, thresholds)


def scored(
    route_id: str, kind: RouteKind, start: int, end: int, figures: Mapping[str, float], thresholds: Thresholds
) -> HealthRecord:
    a = assess(kind, figures, thresholds)
    return HealthRecord(
        route_id, kind, start, end, a.state, a.score, dict(figures), tuple(map(str, a.breaches))
    )
