"""The endpoint circuit reports each change of a streak, so CircuitStore can keep it in Kafka; restoring a
streak (read back from the topic) reports nothing (it would echo forever)."""

from datetime import UTC, datetime, timedelta
from typing import Any

from smsflow.delivery.events import AttemptResult, FailureKind
from smsflow.delivery.policy import CircuitConfig, EndpointCircuit
from tests.factories import attempt_result

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def res(status: int | None = 500, failure: FailureKind | None = None) -> AttemptResult:
    return attempt_result("s", status, failure)  # type: ignore[no-any-return]


def test_listener_hears_each_transition_and_not_restores() -> None:
    heard: list[tuple[str, Any]] = []
    c = EndpointCircuit(
        CircuitConfig(failing_for_s=None, max_consecutive_dead_letters=2),
        lambda sub, state: heard.append((sub, state)),
    )
    c.record_attempt(res(500), T0)  # the streak starts
    c.record_attempt(res(500), T0 + timedelta(seconds=5))  # no change: nothing written
    assert [s and s["failing_since"] for _, s in heard] == [T0.isoformat()]
    c.record_dead_letter("s", T0)
    assert c.record_dead_letter("s", T0) is not None  # trips
    assert [s["dead_letters"] for _, s in heard[1:]] == [1, 2] and heard[-1][1]["tripped"]
    c.record_attempt(res(200), T0)  # a success ends the streak
    assert heard[-1][1] == {"failing_since": None, "dead_letters": 0, "tripped": False}
    c.reset("s")
    assert heard[-1] == ("s", None)  # forgotten: a tombstone
    n = len(heard)
    c.restore("s", {"failing_since": None, "dead_letters": 1, "tripped": False})
    c.forget("s")
    c.record_attempt(res(failure=FailureKind.DEFERRED, status=None), T0)
    assert len(heard) == n
