"""Probes: a test SMS through each carrier route to one of our own test numbers, timed until it comes back.

Every ``probe_interval_s`` each carrier route with ``test_numbers`` gets one submit_sm (from its
``probe_source``, else its first pool entry) whose text is ``smsflow-probe:<route id>:<n>``. The carrier hands
it back as an MO deliver_sm; the connector recognises the text before anything is stored, so a probe never
reaches sms.raw.v1 nor a customer, and reports ``probe_returned``. The health stage times the round trip and
counts probes that never come back as lost. All routes are probed, the active list's and the other one's:
that keeps the secondary's binds warm and its health known before traffic needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Sequence

from connectors.smpp.route_observer import RouteObserver, now_ms
from connectors.smpp.session import EsmeSession
from smsflow.routing.model import Route, RouteKind, RoutingSection
from smsflow.routing.observations import CarrierOutcome, probe_id_in, probe_text
from smsflow.smpp.constants import CommandId, CommandStatus
from smsflow.smpp.pdu import Pdu

log = logging.getLogger(__name__)

# submit_sm statuses that mean "try again later", not "this route refuses the message"
_TEMPORARY = frozenset(
    {int(CommandStatus.ESME_RTHROTTLED), int(CommandStatus.ESME_RMSGQFUL), int(CommandStatus.ESME_RX_T_APPN)}
)


def probe_route(probe_id: str) -> str:
    """The route a probe was sent through: its id is ``<route id>:<n>``."""
    return probe_id.rpartition(":")[0]


def returned_probe(text: bytes) -> str | None:
    """The probe id carried by an MO's octets, or None for a customer's SMS."""
    return probe_id_in(text.decode("latin-1"))


def probed_routes(routing: RoutingSection) -> list[Route]:
    return [r for r in routing.routes if r.kind is RouteKind.CARRIER and r.test_numbers and r.carrier]


class Prober:
    def __init__(
        self,
        routes: Sequence[Route],
        sessions_of: Callable[[str], Sequence[EsmeSession]],
        observer: RouteObserver,
        interval_s: float = 10.0,
    ) -> None:
        self.routes = list(routes)
        self.sessions_of = sessions_of
        self.observer = observer
        self.interval_s = interval_s
        self._seq = itertools.count(1)
        self._targets = {r.id: itertools.cycle(r.test_numbers) for r in self.routes}
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self.sent = 0

    def start(self) -> None:
        if self.routes:
            self._task = asyncio.create_task(self._run(), name="probes")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for t in list(self._inflight):
            t.cancel()

    async def _run(self) -> None:
        while True:
            for route in self.routes:
                task = asyncio.create_task(self.probe(route))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            await asyncio.sleep(self.interval_s)

    async def probe(self, route: Route) -> None:
        """One probe through ``route``, on its first bound session; nothing to send on is not a probe (the
        bind events already tell the stage the route is down)."""
        assert route.carrier is not None
        sessions = self.sessions_of(route.carrier)
        session = next((s for s in sessions if s.bound and s.s.bind != "receiver"), None)
        if session is None:
            return
        probe_id = f"{route.id}:{next(self._seq)}"
        source = route.probe_source or (route.pool[0] if route.pool else "")
        pdu = Pdu(
            CommandId.submit_sm,
            params={
                "source_addr_ton": 1,
                "source_addr_npi": 1,
                "source_addr": source.lstrip("+"),
                "dest_addr_ton": 1,
                "dest_addr_npi": 1,
                "destination_addr": next(self._targets[route.id]).lstrip("+"),
                "registered_delivery": 0,
                "short_message": probe_text(probe_id).encode("latin-1"),
            },
        )
        self.observer.probe_sent(route.id, probe_id, now_ms())
        self.sent += 1
        try:
            resp = await session.request(pdu)
        except (TimeoutError, ConnectionError, OSError) as exc:
            # unanswered: the probe may still come back; if not, the stage counts it lost at its timeout
            log.info("%s: probe %s not answered: %s", route.id, probe_id, type(exc).__name__)
            return
        if resp.command_status == CommandStatus.ESME_ROK:
            outcome = CarrierOutcome.OK
        elif resp.command_status in _TEMPORARY:
            outcome = CarrierOutcome.TEMPORARY_ERROR
        else:
            outcome = CarrierOutcome.ERROR
        self.observer.count(route.carrier, outcome)
