"""The facts the health aggregator is fed, each stamped with the time it happened (epoch ms).

The health stage derives them from connector ops events, probe submissions and returns, and delivery events
(sms.delivery.v1 already carries each webhook attempt's outcome and duration).
"""

from __future__ import annotations

from dataclasses import dataclass
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
