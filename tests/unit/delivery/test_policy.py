import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsflow.delivery.events import AttemptResult, DeliveryState, FailureKind
from smsflow.delivery.policy import (
    DEFAULT_DELAYS_S,
    Action,
    AimdLimit,
    CircuitConfig,
    EndpointCircuit,
    RetryPolicy,
    RetrySchedule,
    Verdict,
    classify,
    parse_retry_after,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def res(status=None, failure=None, attempt=1, retry_after=None, sub="sub_1"):
    if failure is None and status is not None and not 200 <= status < 300:
        failure = FailureKind.REDIRECT if 300 <= status < 400 else FailureKind.HTTP_STATUS
    return AttemptResult(
        subscription_id=sub,
        webhook_id="msg_1",
        message_ids=["msg_1"],
        attempt=attempt,
        url="https://x.example/",
        started_at=T0,
        duration_ms=1.0,
        status_code=status,
        failure=failure,
        error=None if failure is None else str(failure),
        retry_after=retry_after,
    )


@pytest.mark.parametrize(
    ("result", "verdict"),
    [
        (res(200), Verdict.DELIVERED),
        (res(204), Verdict.DELIVERED),
        (res(301), Verdict.RETRY),
        (res(302), Verdict.RETRY),
        (res(400), Verdict.RETRY),
        (res(401), Verdict.RETRY),
        (res(404), Verdict.RETRY),
        (res(410), Verdict.GONE),
        (res(429), Verdict.THROTTLE),
        (res(500), Verdict.RETRY),
        (res(502), Verdict.THROTTLE),
        (res(503), Verdict.THROTTLE),
        (res(504), Verdict.THROTTLE),
        (res(failure=FailureKind.TIMEOUT), Verdict.RETRY),
        (res(failure=FailureKind.CONNECTION), Verdict.RETRY),
        (res(failure=FailureKind.TLS), Verdict.RETRY),
        (res(failure=FailureKind.DNS), Verdict.RETRY),
        (res(failure=FailureKind.BLOCKED_ADDRESS), Verdict.RETRY),
        (res(failure=FailureKind.HTTPS_REQUIRED), Verdict.PERMANENT),
        (res(failure=FailureKind.DEFERRED), Verdict.DEFERRED),
    ],
)
def test_classification(result, verdict):
    assert classify(result, T0).verdict is verdict


def test_retry_after_forms():
    assert parse_retry_after("120", T0) == 120
    assert parse_retry_after(format_datetime(T0 + timedelta(seconds=90), usegmt=True), T0) == 90
    assert parse_retry_after(format_datetime(T0 - timedelta(seconds=90), usegmt=True), T0) == 0
    assert parse_retry_after("soon", T0) is None
    assert parse_retry_after(None, T0) is None


def exact():
    return RetryPolicy(RetrySchedule(jitter=0, max_age_s=None))


def test_default_schedule_is_svix_like():
    assert DEFAULT_DELAYS_S == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    policy, now, delays = exact(), T0, []
    attempt = 1
    while True:
        d = policy.decide(res(500, attempt=attempt), T0, now)
        if d.action is not Action.RETRY:
            break
        assert d.state is DeliveryState.RETRY_SCHEDULED and d.next_attempt == attempt + 1
        assert d.next_attempt_at == now + timedelta(seconds=d.delay_s)
        delays.append(d.delay_s)
        now, attempt = d.next_attempt_at, attempt + 1
    assert delays == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert d.action is Action.DEAD_LETTER and d.state is DeliveryState.DEAD_LETTERED
    assert "all 8 attempts failed" in d.reason


def test_success_is_done():
    d = exact().decide(res(200), T0, T0)
    assert d.action is Action.DONE and d.state is DeliveryState.DELIVERED


def test_gone_disables_endpoint_without_retry():
    d = exact().decide(res(410), T0, T0)
    assert d.action is Action.DEAD_LETTER and d.disable_endpoint and d.next_attempt is None


def test_https_required_is_not_retried():
    d = exact().decide(res(failure=FailureKind.HTTPS_REQUIRED), T0, T0)
    assert d.action is Action.DEAD_LETTER and not d.disable_endpoint


def test_deferred_keeps_attempt_number():
    d = exact().decide(res(failure=FailureKind.DEFERRED, attempt=3), T0, T0)
    assert d.action is Action.RETRY and d.next_attempt == 3 and d.delay_s == 5


def test_retry_after_lengthens_but_never_shortens_and_is_capped():
    p = RetryPolicy(RetrySchedule(jitter=0, max_age_s=None, retry_after_cap_s=600))
    assert p.decide(res(429, retry_after="60"), T0, T0).delay_s == 60  # schedule says 5 s
    assert p.decide(res(429, attempt=2, retry_after="60"), T0, T0).delay_s == 300  # schedule says 300 s
    assert p.decide(res(503, retry_after="86400"), T0, T0).delay_s == 600
    date = format_datetime(T0 + timedelta(seconds=120), usegmt=True)
    d = p.decide(res(503, retry_after=date), T0, T0)
    assert d.delay_s == 120 and d.throttle


def test_max_age_expires():
    p = RetryPolicy(RetrySchedule(jitter=0, max_age_s=3600))
    d = p.decide(res(500, attempt=3), T0, T0 + timedelta(minutes=40))  # next wait 30 min > 20 min left
    assert d.action is Action.DEAD_LETTER and d.state is DeliveryState.EXPIRED
    assert "maximum age" in d.reason


def test_jitter_is_deterministic_when_seeded():
    a = RetryPolicy(rng=random.Random(7))
    b = RetryPolicy(rng=random.Random(7))
    da = [a.decide(res(500, attempt=n), T0, T0).delay_s for n in range(1, 8)]
    db = [b.decide(res(500, attempt=n), T0, T0).delay_s for n in range(1, 8)]
    assert da == db
    assert da != [5, 300, 1800, 7200, 18000, 36000, 36000]


@given(seed=st.integers(), attempt=st.integers(min_value=1, max_value=7), jitter=st.floats(0, 0.9))
def test_jitter_stays_within_bounds(seed, attempt, jitter):
    s = RetrySchedule(jitter=jitter, max_age_s=None)
    d = RetryPolicy(s, random.Random(seed)).decide(res(500, attempt=attempt), T0, T0)
    base = s.delays_s[attempt]
    assert base * (1 - jitter) - 1e-9 <= d.delay_s <= base * (1 + jitter) + 1e-9


def test_custom_schedule_and_validation():
    p = RetryPolicy(RetrySchedule(delays_s=(0, 1, 2), jitter=0, max_age_s=None))
    assert p.decide(res(500, attempt=2), T0, T0).delay_s == 2
    assert p.decide(res(500, attempt=3), T0, T0).action is Action.DEAD_LETTER
    with pytest.raises(ValueError, match="delays_s"):
        RetrySchedule(delays_s=())
    with pytest.raises(ValueError, match="jitter"):
        RetrySchedule(jitter=1.5)


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_aimd_halves_once_per_cooldown_and_recovers_additively():
    clock = FakeClock()
    aimd = AimdLimit(16, clock=clock, cooldown_s=1.0)
    assert aimd.on_throttle() and aimd.limit == 8
    assert not aimd.on_throttle() and aimd.limit == 8  # same overload burst
    clock.t = 1.5
    assert aimd.on_throttle() and aimd.limit == 4
    for _ in range(4):
        aimd.on_success()
    assert 4.9 < aimd.limit < 5.1  # about +1 per window of successes
    for _ in range(1000):
        aimd.on_success()
    assert aimd.limit == 16
    for i in range(10):
        clock.t = 10 + 2 * i
        aimd.on_throttle()
    assert aimd.limit == 1  # never below the minimum


def test_circuit_disables_after_failing_for_too_long_and_resets_on_success():
    circuit = EndpointCircuit(CircuitConfig(failing_for_s=3600, max_consecutive_dead_letters=None))
    assert circuit.record_attempt(res(500), T0) is None
    assert circuit.record_attempt(res(500), T0 + timedelta(minutes=59)) is None
    trip = circuit.record_attempt(res(500), T0 + timedelta(minutes=61))
    assert trip is not None and trip.subscription_id == "sub_1" and "1 hours" in trip.reason
    assert circuit.record_attempt(res(500), T0 + timedelta(minutes=62)) is None  # reported once
    # an endpoint that recovers starts a new streak
    circuit.reset("sub_1")
    circuit.record_attempt(res(500), T0 + timedelta(hours=2))
    circuit.record_attempt(res(200), T0 + timedelta(hours=2, minutes=30))
    assert circuit.record_attempt(res(500), T0 + timedelta(hours=3, minutes=1)) is None


def test_circuit_disables_after_consecutive_dead_letters_and_snapshot_restores():
    circuit = EndpointCircuit(CircuitConfig(failing_for_s=None, max_consecutive_dead_letters=3))
    assert circuit.record_dead_letter("sub_1", T0) is None
    assert circuit.record_dead_letter("sub_1", T0) is None
    restored = EndpointCircuit(circuit.config)
    restored.restore("sub_1", circuit.snapshot("sub_1"))
    trip = restored.record_dead_letter("sub_1", T0)
    assert trip is not None and "3 messages in a row" in trip.reason
    assert circuit.record_dead_letter("sub_2", T0) is None  # endpoints are independent


def test_deferred_does_not_count_toward_circuit():
    circuit = EndpointCircuit(CircuitConfig(failing_for_s=1, max_consecutive_dead_letters=None))
    for i in range(5):
        assert circuit.record_attempt(res(failure=FailureKind.DEFERRED), T0 + timedelta(seconds=i)) is None
    assert circuit.snapshot("sub_1") is None
