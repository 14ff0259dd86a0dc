"""What the connector tells the health stage about its carrier routes, on sms.routes.observations.v1.

Kept cheap on purpose: a bind event, an enquire_link round trip and a probe are one record each, but traffic
is counted in memory and reported once per ``report_interval_s`` per route (counters of ok / temporary /
permanent error statuses, and the sessions bound at that moment, which re-syncs bind state if an event was
lost). Publishing is best effort: an observation that cannot be written is logged and dropped, never allowed
to hold up an SMS; the health stage judges a route whose reports stop as stale (docs/double-list.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from smsflow.producer import AsyncProducer
from smsflow.routing.model import RouteKind, RoutingSection
from smsflow.routing.observations import (
    BindRefused,
    CarrierOutcome,
    EnquireLinkRtt,
    Observation,
    ProbeReturned,
    ProbeSent,
    SessionBound,
    SessionLost,
    observation_record,
    traffic_report,
)
from smsflow.schemas import ROUTE_OBSERVATIONS_TOPIC
from smsflow.serde import Serde

log = logging.getLogger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


def carrier_routes(routing: RoutingSection) -> dict[str, list[str]]:
    """carrier id -> the ids of the routing routes over that carrier connection."""
    out: dict[str, list[str]] = {}
    for route in routing.routes:
        if route.kind is RouteKind.CARRIER and route.carrier:
            out.setdefault(route.carrier, []).append(route.id)
    return out


class CarrierEvents:
    """One carrier's ``SessionEvents``: every event is an observation of each route over that carrier."""

    def __init__(self, observer: RouteObserver, carrier_id: str) -> None:
        self.observer = observer
        self.carrier_id = carrier_id

    def bound(self, session: str) -> None:
        self.observer.sessions[self.carrier_id].add(session)
        self.observer.emit(self.carrier_id, lambda rid, at: SessionBound(rid, at, session))

    def lost(self, session: str, clean: bool, reason: str) -> None:
        self.observer.sessions[self.carrier_id].discard(session)
        self.observer.emit(self.carrier_id, lambda rid, at: SessionLost(rid, at, session, clean))

    def bind_failed(self, session: str, reason: str) -> None:
        self.observer.emit(self.carrier_id, lambda rid, at: BindRefused(rid, at, session, reason))

    def enquire_link_rtt(self, session: str, rtt_ms: float) -> None:
        self.observer.emit(self.carrier_id, lambda rid, at: EnquireLinkRtt(rid, at, rtt_ms))


class RouteObserver:
    def __init__(
        self,
        routes_of: Mapping[str, Iterable[str]],
        producer: AsyncProducer,
        serde: Serde,
        report_interval_s: float = 2.0,
    ) -> None:
        self.routes_of = {carrier: list(ids) for carrier, ids in routes_of.items()}
        self.producer = producer
        self.serde = serde
        self.report_interval_s = report_interval_s
        self.sessions: dict[str, set[str]] = {carrier: set() for carrier in self.routes_of}
        self._counts: dict[str, Counter[CarrierOutcome]] = {c: Counter() for c in self.routes_of}
        self._pending: set[asyncio.Task[None]] = set()
        self._reporter: asyncio.Task[None] | None = None
        self.published = 0
        self.failed = 0

    def events_for(self, carrier_id: str) -> CarrierEvents | None:
        return CarrierEvents(self, carrier_id) if carrier_id in self.routes_of else None

    def count(self, carrier_id: str, outcome: CarrierOutcome) -> None:
        counts = self._counts.get(carrier_id)
        if counts is not None:
            counts[outcome] += 1

    def probe_sent(self, route_id: str, probe_id: str, at: int) -> None:
        self._publish(route_id, observation_record(ProbeSent(route_id, at, probe_id), "connector"))

    def probe_returned(self, route_id: str, probe_id: str, at: int) -> None:
        self._publish(route_id, observation_record(ProbeReturned(route_id, at, probe_id), "connector"))

    def emit(self, carrier_id: str, make: Callable[[str, int], Observation]) -> None:
        at = now_ms()
        for route_id in self.routes_of.get(carrier_id, ()):
            self._publish(route_id, observation_record(make(route_id, at), f"connector:{carrier_id}"))

    def report(self) -> None:
        at = now_ms()
        for carrier_id, route_ids in self.routes_of.items():
            counts, self._counts[carrier_id] = self._counts[carrier_id], Counter()
            for route_id in route_ids:
                rec = traffic_report(
                    route_id,
                    at,
                    ok=counts[CarrierOutcome.OK],
                    temporary_errors=counts[CarrierOutcome.TEMPORARY_ERROR],
                    errors=counts[CarrierOutcome.ERROR],
                    bound=list(self.sessions[carrier_id]),
                    source=f"connector:{carrier_id}",
                )
                self._publish(route_id, rec)

    def _publish(self, route_id: str, record: dict[str, object]) -> None:
        task = asyncio.get_running_loop().create_task(self._send(route_id, record))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, route_id: str, record: dict[str, object]) -> None:
        try:
            value = self.serde.encode(ROUTE_OBSERVATIONS_TOPIC, record)
            await self.producer.send(ROUTE_OBSERVATIONS_TOPIC, value, key=route_id)
            self.published += 1
        except Exception as exc:  # best effort: health judges silence, an SMS never waits on this
            self.failed += 1
            log.warning("route %s: observation %s not published: %s", route_id, record["kind"], exc)

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.report_interval_s)
            self.report()

    def start(self) -> None:
        if self.routes_of:
            self._reporter = asyncio.create_task(self._report_loop(), name="route-reports")

    async def stop(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reporter
            self.report()
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=5.0)
