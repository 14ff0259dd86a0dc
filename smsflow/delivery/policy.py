"""How a webhook response is judged, when the next attempt happens, and when an endpoint is switched off.

Everything here is pure: time comes in as arguments or from an injected clock, randomness from an injected
``random.Random``, so schedules are reproducible in tests and replays.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

from smsflow.delivery.events import AttemptResult, DeliveryState, FailureKind
from smsflow.subscriptions.model import MAIN_ENDPOINT, utcnow

# Svix's schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (each after the previous attempt).
DEFAULT_DELAYS_S: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
THROTTLE_STATUSES = frozenset({429, 502, 503, 504})


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # failed; try again on the schedule
    THROTTLE = "throttle"  # endpoint overloaded: retry *and* slow this endpoint down
    GONE = "gone"  # 410: the receiver asks us to stop; disable the endpoint
    PERMANENT = "permanent"  # never sendable as configured (https required, unbuildable request)
    DEFERRED = "deferred"  # nothing was sent (local back-pressure); does not count as an attempt


@dataclass(frozen=True)
class Classification:
    verdict: Verdict
    reason: str
    retry_after_s: float | None = None


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` in seconds from ``now`` (delta-seconds or HTTP-date); None if absent or unparsable.

    Total over any string an endpoint can send: ``str.isdigit`` accepts ``²`` and other non-ASCII digits that
    ``float`` refuses, and an HTTP date with a huge year or zone overflows inside the date parser."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)  # a very long number is inf, which the cap then bounds
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:
            return None
        return max(0.0, (when - now).total_seconds())
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def classify(result: AttemptResult, now: datetime | None = None) -> Classification:
    """Only 2xx is success. 3xx is a failure (redirects are not followed: the signature covers the URL the
    customer registered, and following would let an endpoint bounce us to an address we did not vet)."""
    at = now or utcnow()
    if result.ok:
        return Classification(Verdict.DELIVERED, f"HTTP {result.status_code}")
    kind = result.failure
    if kind is FailureKind.DEFERRED:
        return Classification(Verdict.DEFERRED, result.error or "endpoint busy; not sent")
    if kind in (FailureKind.HTTPS_REQUIRED, FailureKind.INVALID_REQUEST):
        return Classification(Verdict.PERMANENT, result.error or str(kind))
    status = result.status_code
    if status is None:
        return Classification(Verdict.RETRY, result.error or str(kind))
    retry_after = parse_retry_after(result.retry_after, at)
    if status == 410:
        return Classification(Verdict.GONE, "HTTP 410 Gone: the endpoint asked to stop receiving")
    if status in THROTTLE_STATUSES:
        return Classification(Verdict.THROTTLE, f"HTTP {status}: endpoint overloaded", retry_after)
    if 300 <= status < 400:
        return Classification(
            Verdict.RETRY, result.error or f"HTTP {status}: redirect not followed", retry_after
        )
    return Classification(Verdict.RETRY, f"HTTP {status}", retry_after)


@dataclass(frozen=True)
class RetrySchedule:
    """``delays_s[n]`` is the wait before attempt ``n + 1`` (``delays_s[0]`` is the first, normally 0)."""

    delays_s: tuple[float, ...] = DEFAULT_DELAYS_S
    jitter: float = 0.2  # each delay is scaled by a uniform factor in [1 - jitter, 1 + jitter]
    max_age_s: float | None = 48 * 3600.0  # from the first attempt; past it the message expires
    retry_after_cap_s: float = 3600.0  # a Retry-After longer than this is cut to this
    deferred_delay_s: float = 5.0  # wait after a DEFERRED (not sent) result

    def __post_init__(self) -> None:
        if not self.delays_s:
            raise ValueError("delays_s: needs at least one entry (the first attempt)")
        if any(d < 0 for d in self.delays_s):
            raise ValueError("delays_s: delays must be >= 0")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter: must be in [0, 1)")
        if self.max_age_s is not None and self.max_age_s <= 0:
            raise ValueError("max_age_s: must be > 0 or None")

    @property
    def max_attempts(self) -> int:
        return len(self.delays_s)

    def delay_before(self, attempt: int, rng: random.Random | None = None) -> float:
        """Jittered wait before ``attempt`` (1-based)."""
        base = self.delays_s[attempt - 1]
        if not self.jitter or not base:
            return float(base)
        r = rng or random
        return base * r.uniform(1 - self.jitter, 1 + self.jitter)


class Action(StrEnum):
    DONE = "done"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class RetryDecision:
    action: Action
    state: DeliveryState  # the event state to publish for each message of the attempt
    reason: str
    next_attempt: int | None = None  # attempt number to send next (unchanged after DEFERRED)
    delay_s: float | None = None
    next_attempt_at: datetime | None = None
    disable_endpoint: bool = False
    throttle: bool = False


class RetryPolicy:
    def __init__(self, schedule: RetrySchedule | None = None, rng: random.Random | None = None) -> None:
        self.schedule = schedule or RetrySchedule()
        self._rng = rng or random.Random()

    def decide(
        self, result: AttemptResult, first_attempt_at: datetime, now: datetime | None = None
    ) -> RetryDecision:
        at = now or utcnow()
        c = classify(result, at)
        if c.verdict is Verdict.DELIVERED:
            return RetryDecision(Action.DONE, DeliveryState.DELIVERED, c.reason)
        if c.verdict is Verdict.GONE:
            return RetryDecision(
                Action.DEAD_LETTER,
                DeliveryState.DEAD_LETTERED,
                c.reason + "; endpoint disabled",
                disable_endpoint=True,
            )
        if c.verdict is Verdict.PERMANENT:
            return RetryDecision(Action.DEAD_LETTER, DeliveryState.DEAD_LETTERED, c.reason)
        return self._retry(result, c, first_attempt_at, at)

    def retry_elsewhere(
        self, result: AttemptResult, first_attempt_at: datetime, now: datetime, reason: str
    ) -> RetryDecision:
        """The endpoint tried is gone (410) or switched off, but the subscription has other endpoints: the
        message is not dead, its next attempt goes elsewhere, by the schedule (or at once by the local rule
        of the double list)."""
        return self._retry(result, Classification(Verdict.RETRY, reason), first_attempt_at, now)

    def _retry(
        self, result: AttemptResult, c: Classification, first_attempt_at: datetime, at: datetime
    ) -> RetryDecision:
        s = self.schedule
        if c.verdict is Verdict.DEFERRED:
            delay, next_attempt = s.deferred_delay_s, result.attempt
        else:
            if result.attempt >= s.max_attempts:
                return RetryDecision(
                    Action.DEAD_LETTER,
                    DeliveryState.DEAD_LETTERED,
                    f"{c.reason}; all {s.max_attempts} attempts failed",
                    throttle=c.verdict is Verdict.THROTTLE,
                )
            next_attempt = result.attempt + 1
            delay = s.delay_before(next_attempt, self._rng)
            if c.retry_after_s is not None:
                delay = max(delay, min(c.retry_after_s, s.retry_after_cap_s))
        if s.max_age_s is not None and (at - first_attempt_at).total_seconds() + delay > s.max_age_s:
            return RetryDecision(
                Action.DEAD_LETTER,
                DeliveryState.EXPIRED,
                f"{c.reason}; next attempt would pass the maximum age of {s.max_age_s:.0f}s",
                throttle=c.verdict is Verdict.THROTTLE,
            )
        return RetryDecision(
            Action.RETRY,
            DeliveryState.RETRY_SCHEDULED,
            c.reason,
            next_attempt=next_attempt,
            delay_s=delay,
            next_attempt_at=at + timedelta(seconds=delay),
            throttle=c.verdict is Verdict.THROTTLE,
        )


class AimdLimit:
    """Additive-increase / multiplicative-decrease concurrency limit for one endpoint.

    Starts at ``maximum``. A throttle signal (429/502/503/504) multiplies it by ``decrease_factor`` at most
    once per ``cooldown_s`` (the in-flight requests of one overload all answer 429: one signal, not ten);
    each success adds ``1 / limit``, i.e. about +1 per full window of successes, as TCP does.
    """

    def __init__(
        self,
        maximum: float,
        *,
        minimum: float = 1.0,
        decrease_factor: float = 0.5,
        cooldown_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < decrease_factor < 1:
            raise ValueError("decrease_factor: must be in (0, 1)")
        self.minimum = minimum
        self.maximum = max(minimum, maximum)
        self.limit = self.maximum
        self._factor = decrease_factor
        self._cooldown = cooldown_s
        self._clock = clock
        self._last_decrease: float | None = None

    def set_maximum(self, maximum: float) -> None:
        self.maximum = max(self.minimum, maximum)
        self.limit = min(self.limit, self.maximum)

    @property
    def fraction(self) -> float:
        """Current limit relative to the configured maximum (scales the rate limit too)."""
        return self.limit / self.maximum

    def on_success(self) -> None:
        self.limit = min(self.maximum, self.limit + 1.0 / self.limit)

    def on_throttle(self) -> bool:
        now = self._clock()
        if self._last_decrease is not None and now - self._last_decrease < self._cooldown:
            return False
        self._last_decrease = now
        self.limit = max(self.minimum, self.limit * self._factor)
        return True


@dataclass(frozen=True)
class CircuitConfig:
    """When to switch an endpoint off. Either condition trips; None turns a condition off.

    Svix disables after 5 days of failures; we do the same, and also after ``max_consecutive_dead_letters``
    messages in a row exhausted their retries with no success in between (a busy endpoint reaches that after
    about one full schedule, ~28 h, of failing).
    """

    failing_for_s: float | None = 5 * 86400.0
    max_consecutive_dead_letters: int | None = 100


@dataclass
class _EndpointRecord:
    failing_since: datetime | None = None
    dead_letters: int = 0
    tripped: bool = False


@dataclass(frozen=True)
class EndpointTrip:
    subscription_id: str
    reason: str


def circuit_key(subscription_id: str, endpoint_id: str | None) -> str:
    """Each endpoint has its own circuit, so one dead endpoint never switches off its siblings. The
    subscription's own url (endpoint ``main``) keeps the key circuits were always stored under (its id);
    another endpoint is ``<subscription>/<endpoint>`` ('/' is in neither id, so keys never collide)."""
    return subscription_id if endpoint_id in (None, MAIN_ENDPOINT) else f"{subscription_id}/{endpoint_id}"


CircuitListener = Callable[[str, dict[str, Any] | None], None]
"""``(subscription id, snapshot or None)`` after every change of an endpoint's streak (None: forgotten)."""


class EndpointCircuit:
    """Per-endpoint failure history. :meth:`snapshot`/:meth:`restore` and ``listener`` let a caller keep it in
    Kafka (``circuits.CircuitStore``), so a restart or a rebalance does not forget a failing streak."""

    def __init__(self, config: CircuitConfig | None = None, listener: CircuitListener | None = None) -> None:
        self.config = config or CircuitConfig()
        self.listener = listener
        self._records: dict[str, _EndpointRecord] = {}

    def _changed(self, subscription_id: str, before: dict[str, Any] | None) -> None:
        after = self.snapshot(subscription_id)
        if self.listener is not None and after != before:
            self.listener(subscription_id, after)

    def record_attempt(self, result: AttemptResult, now: datetime) -> EndpointTrip | None:
        if result.failure is FailureKind.DEFERRED:
            return None
        sub_id = circuit_key(result.subscription_id, result.endpoint_id)
        before = self.snapshot(sub_id)
        try:
            rec = self._records.setdefault(sub_id, _EndpointRecord())
            if result.ok:
                rec.failing_since, rec.dead_letters, rec.tripped = None, 0, False
                return None
            if rec.failing_since is None:
                rec.failing_since = now
            limit = self.config.failing_for_s
            if limit is not None and (now - rec.failing_since).total_seconds() >= limit:
                return self._trip(sub_id, rec, f"every attempt failed for {limit / 3600:g} hours")
            return None
        finally:
            self._changed(sub_id, before)

    def record_dead_letter(self, subscription_id: str, now: datetime) -> EndpointTrip | None:
        before = self.snapshot(subscription_id)
        try:
            rec = self._records.setdefault(subscription_id, _EndpointRecord())
            rec.dead_letters += 1
            if rec.failing_since is None:
                rec.failing_since = now
            limit = self.config.max_consecutive_dead_letters
            if limit is not None and rec.dead_letters >= limit:
                return self._trip(
                    subscription_id, rec, f"{rec.dead_letters} messages in a row were dead-lettered"
                )
            return None
        finally:
            self._changed(subscription_id, before)

    def reset(self, subscription_id: str) -> None:
        """Forget the streak, e.g. when an operator re-enables the endpoint."""
        before = self.snapshot(subscription_id)
        self._records.pop(subscription_id, None)
        self._changed(subscription_id, before)

    def forget(self, subscription_id: str) -> None:
        """Drop the streak without telling the listener (it was removed elsewhere)."""
        self._records.pop(subscription_id, None)

    def keys_of(self, subscription_id: str) -> list[str]:
        """The circuits of a subscription's endpoints that have a streak (see ``circuit_key``)."""
        own = f"{subscription_id}/"
        return [k for k in self._records if k == subscription_id or k.startswith(own)]

    def _trip(self, subscription_id: str, rec: _EndpointRecord, reason: str) -> EndpointTrip | None:
        if rec.tripped:
            return None
        rec.tripped = True
        return EndpointTrip(subscription_id, reason)

    def snapshot(self, subscription_id: str) -> dict[str, Any] | None:
        rec = self._records.get(subscription_id)
        if rec is None:
            return None
        return {
            "failing_since": rec.failing_since.isoformat() if rec.failing_since else None,
            "dead_letters": rec.dead_letters,
            "tripped": rec.tripped,
        }

    def restore(self, subscription_id: str, data: dict[str, Any]) -> None:
        since = data.get("failing_since")
        self._records[subscription_id] = _EndpointRecord(
            failing_since=datetime.fromisoformat(since) if since else None,
            dead_letters=int(data.get("dead_letters", 0)),
            tripped=bool(data.get("tripped", False)),
        )
