"""The facts the health aggregator is fed, each stamped with the time it happened (epoch ms).

Connectors write bind events, enquire_link round trips, probes and a traffic report per route per interval;
workers write the webhook attempts made on webhook routes, gathered per route per short interval
(``AttemptTally``: one record carries every attempt of the interval, never one record per POST).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class SessionBound:
    route_id: str
    at: int
    session: str


@dataclass(frozen=True)
class SessionLost:
    """A bound session ended. ``clean`` = we unbound on purpose (shutdown), which is not a failure."""

    route_id: str
    at: int
    session: str
    clean: bool = False


@dataclass(frozen=True)
class BindRefused:
    route_id: str
    at: int
    session: str
    reason: str = ""


@dataclass(frozen=True)
class EnquireLinkRtt:
    route_id: str
    at: int
    rtt_ms: float


class CarrierOutcome(StrEnum):
    OK = "ok"
    TEMPORARY_ERROR = "temporary_error"  # throttled, system error: the carrier means "try again"
    ERROR = "error"  # permanent error status


@dataclass(frozen=True)
class CarrierTraffic:
    """One PDU exchanged on the route (an inbound deliver_sm or a submit_sm's response), with its outcome."""

    route_id: str
    at: int
    outcome: CarrierOutcome = CarrierOutcome.OK


@dataclass(frozen=True)
class ProbeSent:
    """A test SMS submitted through the route to one of our own test numbers."""

    route_id: str
    at: int
    probe_id: str


@dataclass(frozen=True)
class ProbeReturned:
    """The test SMS came back as an MO. The route is the one it was sent through (encoded in the probe)."""

    route_id: str
    at: int
    probe_id: str


class AttemptOutcome(StrEnum):
    SUCCESS = "success"  # 2xx
    HTTP_ERROR = "http_error"  # any other status, except throttling
    THROTTLED = "throttled"  # 429, or 503 with Retry-After: the endpoint asks us to slow down
    TIMEOUT = "timeout"
    CONNECT_ERROR = "connect_error"  # refused, reset, DNS
    TLS_ERROR = "tls_error"  # handshake or certificate verification


@dataclass(frozen=True)
class WebhookAttempt:
    route_id: str
    at: int
    outcome: AttemptOutcome
    latency_ms: float


Observation = (
    SessionBound
    | SessionLost
    | BindRefused
    | EnquireLinkRtt
    | CarrierTraffic
    | ProbeSent
    | ProbeReturned
    | WebhookAttempt
)


# ---- the wire form (schemas/route_observation.avsc) ----------------------------------------------------

PROBE_PREFIX = "smsflow-probe:"  # a probe's text: the prefix, then its id (<route id>:<n>)


def probe_text(probe_id: str) -> str:
    return f"{PROBE_PREFIX}{probe_id}"


def probe_id_in(text: str) -> str | None:
    """The probe id an MO's text carries, or None when the MO is a customer's SMS."""
    if not text.startswith(PROBE_PREFIX):
        return None
    probe_id = text[len(PROBE_PREFIX) :].strip()
    return probe_id or None


def _blank(route_id: str, at: int, kind: str, source: str) -> dict[str, object]:
    return {
        "route_id": route_id,
        "at": at,
        "kind": kind,
        "source": source,
        "session": "",
        "clean": False,
        "reason": "",
        "latency_ms": 0.0,
        "ok": 0,
        "temporary_errors": 0,
        "errors": 0,
        "bound_sessions": [],
        "probe_id": "",
        "outcome": "",
        "attempts": [],
    }


def observation_record(obs: Observation, source: str = "") -> dict[str, object]:
    """The Avro value of one observation."""
    rec = _blank(obs.route_id, obs.at, "", source)
    match obs:
        case SessionBound():
            rec.update(kind="session_bound", session=obs.session)
        case SessionLost():
            rec.update(kind="session_lost", session=obs.session, clean=obs.clean)
        case BindRefused():
            rec.update(kind="bind_refused", session=obs.session, reason=obs.reason)
        case EnquireLinkRtt():
            rec.update(kind="enquire_link_rtt", latency_ms=obs.rtt_ms)
        case CarrierTraffic():
            counter = {
                CarrierOutcome.OK: "ok",
                CarrierOutcome.TEMPORARY_ERROR: "temporary_errors",
                CarrierOutcome.ERROR: "errors",
            }[obs.outcome]
            rec.update({"kind": "traffic", counter: 1})
        case ProbeSent():
            rec.update(kind="probe_sent", probe_id=obs.probe_id)
        case ProbeReturned():
            rec.update(kind="probe_returned", probe_id=obs.probe_id)
        case WebhookAttempt():
            rec.update(kind="webhook_attempt", outcome=obs.outcome.value, latency_ms=obs.latency_ms)
    return rec


@dataclass
class _AttemptGroup:
    at: int  # the latest attempt's time
    latencies: dict[AttemptOutcome, list[float]] = field(default_factory=dict)


class AttemptTally:
    """Webhook attempts gathered per route and per health step, written as one ``webhook_attempts`` record
    each (``take``) instead of one record per POST.

    A record per POST cost every SMS on a webhook route a Kafka record in the worker and a record, a decode
    and a state write in the health stage, whose state write grows with the window's attempts: quadratic in
    the rate (docs/BENCHMARKS.md, "webhook routes"). Attempts of different health steps (``step_ms``, the
    window's step) never share a record, so each is counted in its own step, exactly as before; the record is
    stamped with its latest attempt's time. The caller takes the records often (well inside the stage's
    grace for late records) and before every offset commit (Invariant A, as for the attempt's own event).
    """

    def __init__(self, step_ms: int) -> None:
        if step_ms <= 0:
            raise ValueError(f"step_ms must be positive, got {step_ms}")
        self.step_ms = step_ms
        self._groups: dict[tuple[str, int], _AttemptGroup] = {}

    def __len__(self) -> int:
        """Attempts added and not taken yet."""
        return sum(len(v) for group in self._groups.values() for v in group.latencies.values())

    def add(self, attempt: WebhookAttempt) -> None:
        key = (attempt.route_id, attempt.at // self.step_ms)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _AttemptGroup(attempt.at)
        group.at = max(group.at, attempt.at)
        group.latencies.setdefault(attempt.outcome, []).append(float(attempt.latency_ms))

    def take(self, source: str = "") -> list[dict[str, object]]:
        """The records of everything added since the last call (their Avro values), oldest step first."""
        groups, self._groups = self._groups, {}
        return [
            webhook_attempts_record(route_id, group.at, group.latencies, source)
            for (route_id, _), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0]))
        ]


def webhook_attempts_record(
    route_id: str, at: int, latencies: dict[AttemptOutcome, list[float]], source: str = ""
) -> dict[str, object]:
    """Many webhook attempts on one route in one record: per outcome, the duration of each attempt."""
    rec = _blank(route_id, at, "webhook_attempts", source)
    rec["attempts"] = [
        {"outcome": outcome.value, "latencies_ms": list(values)}
        for outcome, values in sorted(latencies.items())
        if values
    ]
    return rec


def traffic_report(
    route_id: str, at: int, ok: int, temporary_errors: int, errors: int, bound: list[str], source: str = ""
) -> dict[str, object]:
    """The connector's per-interval report of one route: counters (never a record per SMS) and its binds."""
    rec = _blank(route_id, at, "traffic", source)
    rec.update(ok=ok, temporary_errors=temporary_errors, errors=errors, bound_sessions=sorted(bound))
    return rec


def observations_of(rec: dict[str, object]) -> list[Observation]:
    """What the aggregator is fed for one record: a traffic report becomes one ``CarrierTraffic`` per PDU it
    counts (its ``bound_sessions`` are read by the stage, which re-syncs bind state from them)."""
    route_id, at, kind = str(rec["route_id"]), int(rec["at"]), str(rec["kind"])  # type: ignore[call-overload]
    session = str(rec.get("session", ""))
    match kind:
        case "session_bound":
            return [SessionBound(route_id, at, session)]
        case "session_lost":
            return [SessionLost(route_id, at, session, bool(rec.get("clean", False)))]
        case "bind_refused":
            return [BindRefused(route_id, at, session, str(rec.get("reason", "")))]
        case "enquire_link_rtt":
            return [EnquireLinkRtt(route_id, at, float(rec["latency_ms"]))]  # type: ignore[arg-type]
        case "traffic":
            out: list[Observation] = []
            for field_name, outcome in (
                ("ok", CarrierOutcome.OK),
                ("temporary_errors", CarrierOutcome.TEMPORARY_ERROR),
                ("errors", CarrierOutcome.ERROR),
            ):
                out += [CarrierTraffic(route_id, at, outcome)] * int(rec.get(field_name, 0))  # type: ignore[call-overload]
            return out
        case "probe_sent":
            return [ProbeSent(route_id, at, str(rec["probe_id"]))]
        case "probe_returned":
            return [ProbeReturned(route_id, at, str(rec["probe_id"]))]
        case "webhook_attempt":
            attempt = AttemptOutcome(str(rec["outcome"]))
            return [WebhookAttempt(route_id, at, attempt, float(rec["latency_ms"]))]  # type: ignore[arg-type]
        case "webhook_attempts":
            return _attempts_of(route_id, at, rec.get("attempts") or ())  # type: ignore[arg-type]
    return []  # a kind from a newer writer: ignored, not fatal


_OUTCOMES = {o.value: o for o in AttemptOutcome}


def _attempts_of(route_id: str, at: int, groups: Sequence[dict[str, object]]) -> list[Observation]:
    out: list[Observation] = []
    for group in groups:
        outcome = _OUTCOMES.get(str(group.get("outcome", "")))
        if outcome is None:
            continue  # an outcome from a newer writer: not counted, not fatal
        out += [WebhookAttempt(route_id, at, outcome, float(v)) for v in group.get("latencies_ms") or ()]  # type: ignore[attr-defined]
    return out
