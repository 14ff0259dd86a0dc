"""Small builders shared by the routing unit tests."""

from __future__ import annotations

from smsflow.routing.health import HealthRecord, scored
from smsflow.routing.model import Override, RouteKind, RoutingPolicy, Thresholds

S = 1000
H = 60 * S  # the default hold-down
SCOPE = "prefix:+8526"

# Figures that score to each state under the default thresholds.
CARRIER_FIGURES = {
    "healthy": {"bound_sessions": 2.0, "probe_latency_ms": 800.0},
    "degraded": {"bound_sessions": 2.0, "probe_latency_ms": 6000.0},
    "down": {"bound_sessions": 0.0},
}


def policy(
    primary: tuple[str, ...] = ("pa",), secondary: tuple[str, ...] = ("sb",), **kw: object
) -> RoutingPolicy:
    return RoutingPolicy.model_validate({"scope": SCOPE, "primary": primary, "secondary": secondary, **kw})


def record(route: str, end_s: float, state: str) -> HealthRecord:
    end = int(end_s * S)
    return scored(route, RouteKind.CARRIER, end - H, end, CARRIER_FIGURES[state], Thresholds())


def pin(to: str, at_s: float, for_s: float | None = 300, actor: str = "ops@example.com") -> Override:
    return Override.model_validate(
        {
            "scope": SCOPE,
            "pin": to,
            "reason": "carrier A maintenance window",
            "actor": actor,
            "at": int(at_s * S),
            "expires_at": None if for_s is None else int((at_s + for_s) * S),
        }
    )
