"""What the delivery stage writes after an attempt: retry, dead-letter and ops records, keyed so that a
retry or a dead letter of the same message or batch always carries the same id."""

from __future__ import annotations

import dataclasses
import datetime as dt

import orjson

from smsflow.delivery.effects import attempt_effects
from smsflow.delivery.engine import DeliveryOutcome
from smsflow.delivery.events import DeliveryState
from smsflow.delivery.policy import Action, RetryDecision
from smsflow.delivery.sender import webhook_id_for
from smsflow.schemas import OPS_TOPIC, WEBHOOK_DLQ_TOPIC, WEBHOOK_RETRY_TOPIC
from smsflow.subscriptions.model import BatchConfig, Subscription, WebhookEndpoint

T0 = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
SINGLE = Subscription(owner="acme", url="https://hooks.example/sms")
BATCHED = Subscription(owner="acme", url="https://hooks.example/sms", batch=BatchConfig(max_batch_size=10))
MESSAGES = [{"message_id": "msg_a"}, {"message_id": "msg_b"}]


def outcome(action: Action, disabled: str | None = None) -> DeliveryOutcome:
    if action is Action.RETRY:
        decision = RetryDecision(
            action, DeliveryState.RETRY_SCHEDULED, "HTTP 503", next_attempt=2, next_attempt_at=T0
        )
    elif action is Action.DONE:
        decision = RetryDecision(action, DeliveryState.DELIVERED, "HTTP 200")
    else:
        decision = RetryDecision(action, DeliveryState.DEAD_LETTERED, "HTTP 410 Gone")
    return DeliveryOutcome(result=None, decision=decision, disabled_reason=disabled)


def test_a_delivered_message_writes_nothing_but_its_events() -> None:
    effects = attempt_effects(SINGLE, MESSAGES[:1], 1, T0, outcome(Action.DONE))
    assert effects.writes == [] and effects.counts == {"delivered": 1}


def test_a_retry_is_keyed_by_message_id_and_carries_the_trace() -> None:
    effects = attempt_effects(SINGLE, MESSAGES[:1], 1, T0, outcome(Action.RETRY))
    [write] = effects.writes
    assert (write.topic, write.key, write.traced) == (WEBHOOK_RETRY_TOPIC, "msg_a", True)
    record = orjson.loads(write.value)
    assert (record["attempt"], record["message"]["message_id"]) == (2, "msg_a")
    assert effects.counts == {"retry_scheduled": 1}


def test_a_batch_retries_as_one_record_under_its_webhook_id() -> None:
    effects = attempt_effects(BATCHED, MESSAGES, 1, T0, outcome(Action.RETRY))
    [write] = effects.writes
    assert write.key == webhook_id_for(BATCHED, MESSAGES) and write.key.startswith("batch_")
    assert [m["message_id"] for m in orjson.loads(write.value)["messages"]] == ["msg_a", "msg_b"]


def test_a_dead_lettered_batch_writes_one_record_per_message_under_the_batch_webhook_id() -> None:
    effects = attempt_effects(BATCHED, MESSAGES, 8, T0, outcome(Action.DEAD_LETTER))
    assert [(w.topic, w.key) for w in effects.writes] == [
        (WEBHOOK_DLQ_TOPIC, "msg_a"),
        (WEBHOOK_DLQ_TOPIC, "msg_b"),
    ]
    records = [orjson.loads(w.value) for w in effects.writes]
    assert {r["webhook_id"] for r in records} == {webhook_id_for(BATCHED, MESSAGES)}
    assert all(r["attempts"] == 8 and r["reason"] == "HTTP 410 Gone" for r in records)
    assert effects.counts == {"dead_lettered": 2}


def test_switching_an_endpoint_off_is_an_ops_event() -> None:
    effects = attempt_effects(SINGLE, MESSAGES[:1], 3, T0, outcome(Action.DEAD_LETTER, "410 Gone"), now_ms=5)
    ops = [w for w in effects.writes if w.topic == OPS_TOPIC]
    assert [orjson.loads(w.value) for w in ops] == [
        {
            "type": "endpoint_disabled",
            "subscription_id": SINGLE.id,
            "owner": "acme",
            "reason": "410 Gone",
            "ts": 5,
        }
    ]


def test_a_retry_with_a_next_route_offered_fails_over_now_and_writes_nothing() -> None:
    """The double list's local rule: the next route is attempted in the same call, so no retry record."""
    retry = dataclasses.replace(
        outcome(Action.RETRY), next_endpoint=WebhookEndpoint(id="backup", url="https://backup.example/sms")
    )
    effects = attempt_effects(SINGLE, MESSAGES[:1], 1, T0, retry, can_fail_over=True)
    assert effects.fail_over and effects.writes == [] and effects.counts == {}
    # without a next route offered, the same decision schedules a retry
    assert not attempt_effects(SINGLE, MESSAGES[:1], 1, T0, retry).fail_over
