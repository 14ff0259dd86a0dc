"""The health stage's state: the aggregator, plus what reading observations from a topic adds to it.

``HealthFeed`` takes observation records (schemas/route_observation.avsc) with their offsets and clock ticks,
and gives health records. What it adds to ``HealthAggregator``:

- **exactly-once counting across a crash**: the snapshot holds the offset of the last record applied; after a
  kill -9 the stage re-reads from its committed offset and records at or below that offset are skipped, so
  the table (written before the offset commit) is never counted twice;
- **bind state re-sync**: each traffic report lists the sessions bound at that moment, so a lost bind event
  cannot leave a route looking bound (or unbound) for ever;
- **silent connector = down**: a carrier route whose connector has not reported for ``stale_after_windows``
  steps (the connector is dead, or cut off from Kafka) loses its sessions, so ``bound_sessions`` = 0 and the
  route is down; its next report brings the sessions back;
- **a grace for late records**: a tick at ``now`` closes windows only up to ``now - grace_ms``, so
  observations written just before the tick still count in their own window.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smsflow.routing.aggregator import HealthAggregator
from smsflow.routing.health import HealthRecord
from smsflow.routing.model import RouteKind, RoutingSection
from smsflow.routing.observations import SessionBound, SessionLost, observations_of

GRACE_MS = 1000


class HealthFeed:
    def __init__(self, section: RoutingSection, start: int, grace_ms: int = GRACE_MS) -> None:
        self.section = section
        self.grace_ms = grace_ms
        self.aggregator = HealthAggregator(section.routes, start, section.window)
        self.carrier_routes = {r.id for r in section.routes if r.kind is RouteKind.CARRIER}
        self.offset = -1  # the last observation record applied
        self.started = start
        self.sessions: dict[str, set[str]] = {}  # route -> sessions we believe bound
        self.reported: dict[str, int] = {}  # carrier route -> the latest connector record's time
        self.stale: set[str] = set()

    @property
    def stale_after_ms(self) -> int:
        return self.section.stale_after_windows * self.section.window.step_ms

    def on_record(self, rec: Mapping[str, Any], offset: int | None = None) -> list[HealthRecord]:
        if offset is not None:
            if offset <= self.offset:
                return []  # applied before a crash; the table already holds its effect
            self.offset = offset
        route_id, at, kind = str(rec["route_id"]), int(rec["at"]), str(rec["kind"])
        out: list[HealthRecord] = []
        if route_id in self.carrier_routes and str(rec.get("source", "")).startswith("connector"):
            self.reported[route_id] = max(at, self.reported.get(route_id, at))
            self.stale.discard(route_id)
        mine = self.sessions.setdefault(route_id, set())
        if kind == "traffic" and route_id in self.carrier_routes:
            bound = {str(s) for s in rec.get("bound_sessions", ())}
            for session in sorted(bound - mine):
                out += self.aggregator.observe(SessionBound(route_id, at, session))
            for session in sorted(mine - bound):
                out += self.aggregator.observe(SessionLost(route_id, at, session, clean=True))
            mine.clear()
            mine.update(bound)
        elif kind == "session_bound":
            mine.add(str(rec.get("session", "")))
        elif kind in ("session_lost", "bind_refused"):
            mine.discard(str(rec.get("session", "")))
        for obs in observations_of(dict(rec)):
            out += self.aggregator.observe(obs)
        return out

    def on_tick(self, now: int) -> list[HealthRecord]:
        out: list[HealthRecord] = []
        for route_id in sorted(self.carrier_routes - self.stale):
            last = self.reported.get(route_id, self.started)
            if now - last < self.stale_after_ms:
                continue
            # Nobody reports this route: whatever its sessions were, we cannot count on them.
            self.stale.add(route_id)
            at = last + self.stale_after_ms
            for session in sorted(self.sessions.pop(route_id, set())) or [""]:
                out += self.aggregator.observe(SessionLost(route_id, at, session, clean=True))
        out += self.aggregator.advance(now - self.grace_ms)
        return out

    def set_section(self, section: RoutingSection) -> None:
        """The same window and carrier routes, with webhook routes come or gone (subscriptions' lists)."""
        self.section = section
        self.aggregator.set_routes(section.routes)

    def snapshot(self) -> dict[str, Any]:
        return {
            "aggregator": self.aggregator.snapshot(),
            "offset": self.offset,
            "started": self.started,
            "sessions": {rid: sorted(s) for rid, s in sorted(self.sessions.items())},
            "reported": dict(sorted(self.reported.items())),
            "stale": sorted(self.stale),
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        self.aggregator.restore(data["aggregator"])
        self.offset = int(data["offset"])
        self.started = int(data["started"])
        self.sessions = {rid: set(s) for rid, s in data["sessions"].items()}
        self.reported = {rid: int(at) for rid, at in data["reported"].items()}
        self.stale = set(data["stale"]) & self.carrier_routes
