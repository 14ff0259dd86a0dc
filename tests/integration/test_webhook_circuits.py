"""Issue 9 §2: the endpoint circuit (auto-disable streak) survives a restart, on a real broker.

A worker counts dead letters of an endpoint, then stops; a new worker (a restart: a new CircuitStore and a
fresh EndpointCircuit) reads sms.webhook.circuits.v1 and continues the streak, so the endpoint is switched off
at the configured count, not that count after the restart. A success written by another worker ends the
streak everywhere.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from smsflow.config import parse_config
from smsflow.delivery.circuits import CircuitStore, circuit_config
from smsflow.delivery.policy import EndpointCircuit
from smsflow.topics import TopicSpec, ensure_topics
from tests.factories import attempt_result

if TYPE_CHECKING:
    from tests.conftest import KafkaUnderTest

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def wait_for(cond, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.1)


async def test_dead_letter_streak_survives_a_restart(kafka: KafkaUnderTest, unique: str) -> None:
    topic = f"t{unique}.sms.webhook.circuits.v1"
    ensure_topics(kafka.bootstrap, [TopicSpec(topic, 1, cleanup_policy="compact")])
    cfg = parse_config({"webhooks": {"circuit": {"failing_for_s": None, "max_consecutive_dead_letters": 5}}})
    settings = circuit_config(cfg.webhooks.circuit)
    assert settings.max_consecutive_dead_letters == 5 and settings.failing_for_s is None

    first = CircuitStore(kafka.bootstrap, EndpointCircuit(settings), topic=topic)
    await first.start()
    for _ in range(4):
        assert first.circuit.record_dead_letter("sub_a", T0) is None
    first.circuit.record_dead_letter("sub_b", T0)
    await first.stop()  # written before stop returns

    restarted = CircuitStore(kafka.bootstrap, EndpointCircuit(settings), topic=topic)
    await restarted.start()
    try:
        assert restarted.circuit.snapshot("sub_a") == {
            "failing_since": T0.isoformat(),
            "dead_letters": 4,
            "tripped": False,
        }
        trip = restarted.circuit.record_dead_letter("sub_a", T0)  # the fifth in a row, across the restart
        assert trip is not None and "5 messages in a row" in trip.reason

        # another worker sees sub_b succeed: the streak ends for this one too
        other = CircuitStore(kafka.bootstrap, EndpointCircuit(settings), topic=topic)
        await other.start()
        try:
            assert other.circuit.snapshot("sub_b") is not None
            other.circuit.record_attempt(attempt_result("sub_b", 200), T0)
            await other.flush()
        finally:
            await other.stop()
        await wait_for(lambda: (restarted.circuit.snapshot("sub_b") or {}).get("dead_letters") == 0)
    finally:
        await restarted.stop()


def test_circuit_settings_are_validated_by_path() -> None:
    from smsflow.config import ConfigError

    with pytest.raises(ConfigError, match=r"webhooks\.circuit\.max_consecutive_dead_letters"):
        parse_config({"webhooks": {"circuit": {"max_consecutive_dead_letters": 0}}})
    with pytest.raises(ConfigError, match=r"webhooks\.circuit\.failing_for_s"):
        parse_config({"webhooks": {"circuit": {"failing_for_s": -1}}})
    with pytest.raises(ConfigError, match=r"webhooks\.circuit\.streak"):
        parse_config({"webhooks": {"circuit": {"streak": 3}}})
