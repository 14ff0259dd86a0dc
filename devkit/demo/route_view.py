"""What ``smsflow run`` shows of the double list: the latest health per route and state per scope, followed
from sms.routes.health.v1 and sms.routes.decisions.v1 as any client would read them."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Message

from smsflow.compacted import CompactedFollower
from smsflow.schemas import ROUTE_DECISIONS_TOPIC, ROUTE_HEALTH_TOPIC
from smsflow.serde import Serde

# what the demo can break on the primary's carrier, with the figures each fault needs
DEMO_FAULTS: dict[str, dict[str, Any]] = {
    "refuse_binds": {},
    "drop": {"every_s": 5},
    "silent": {},
    "probe_latency": {"latency_ms": 8000},
    "probe_loss": {"ratio": 1.0},
}


class RouteView:
    def __init__(self, bootstrap: str, serde: Serde, scopes: list[str] | None = None) -> None:
        self.serde = serde
        self.configured = list(scopes or [])
        self.health: dict[str, dict[str, Any]] = {}
        self.scopes: dict[str, dict[str, Any]] = {}
        self.decisions = 0
        self._followers = [
            CompactedFollower(bootstrap, [ROUTE_HEALTH_TOPIC], self._on_health, "run-route-health"),
            CompactedFollower(bootstrap, [ROUTE_DECISIONS_TOPIC], self._on_decision, "run-route-decisions"),
        ]

    def _on_health(self, msg: Message) -> None:
        if msg.value() is not None:
            rec = self.serde.decode(ROUTE_HEALTH_TOPIC, msg.value())  # type: ignore[arg-type]
            self.health[str(rec["route_id"])] = rec

    def _on_decision(self, msg: Message) -> None:
        if msg.value() is not None:
            rec = self.serde.decode(ROUTE_DECISIONS_TOPIC, msg.value())  # type: ignore[arg-type]
            self.scopes[str(rec["scope"])] = rec
            self.decisions += 1

    async def start(self) -> None:
        for f in self._followers:
            await f.start(timeout=60)

    async def stop(self) -> None:
        for f in self._followers:
            await f.stop()

    def rows(self) -> list[tuple[str, str]]:
        out = []
        for route_id, h in sorted(self.health.items()):
            figures = h["figures"]
            shown = [
                f"{name}={figures[name]:g}"
                for name in ("bound_sessions", "probe_latency_ms", "probe_loss", "success_rate")
                if name in figures
            ]
            out.append((f"route {route_id}", f"{h['state']} {h['score']:.2f} · {' '.join(shown)}"))
        for scope, d in sorted(self.scopes.items()):
            alert = " · BOTH DEGRADED" if d["both_degraded"] else ""
            out.append((f"scope {scope}", f"{d['active']} ({d['mode']}) after {d['kind']}{alert}"))
        for scope in sorted(set(self.configured) - set(self.scopes)):
            out.append((f"scope {scope}", "primary (auto), no decision yet"))
        if self.configured or self.scopes:
            out.append(("route decisions so far", str(self.decisions)))
        return out
