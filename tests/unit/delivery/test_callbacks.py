"""Outbound status callbacks as the webhook engine's targets: signed with a secret per owner (verified with
the Standard Webhooks reference package, not our code), one webhook-id per transition, and a retry record
that names the target, since there is no stored subscription to look up when it is due."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from smsflow.delivery.callbacks import CallbackSigner, CallbackTarget, callback_target, owner_callback_secrets
from smsflow.delivery.effects import attempt_effects
from smsflow.delivery.engine import DeliveryOutcome
from smsflow.delivery.events import DeliveryState
from smsflow.delivery.policy import Action, RetryDecision
from smsflow.delivery.sender import webhook_body, webhook_id_for
from smsflow.delivery.signing import webhook_headers
from smsflow.outbound.callbacks import callback_payload
from smsflow.schemas import WEBHOOK_RETRY_TOPIC
from smsflow.subscriptions.model import Subscription
from smsflow.subscriptions.secretbox import SecretBox

KEY_1, KEY_2 = SecretBox.generate_key(), SecretBox.generate_key()
T0 = dt.datetime(2026, 12, 1, 6, 0, tzinfo=dt.UTC)
STATUS = {
    "event_id": "mt_1#3",
    "message_id": "mt_1",
    "owner": "acme",
    "segment": None,
    "segments_total": 2,
    "old_state": "sent",
    "new_state": "delivered",
    "overall": "delivered",
    "reason": "receipt DELIVRD",
    "at": T0,
    "carrier_message_id": None,
    "route_id": None,
    "detail": None,
    "callback_url": "https://acme.example/cb",
}


def box(spec: str) -> SecretBox:
    return SecretBox.from_spec(spec)


def signed(sub: Subscription, payload: dict) -> tuple[bytes, dict[str, str]]:
    body = webhook_body(sub, [payload])
    ts = int(dt.datetime.now(dt.UTC).timestamp())
    return body, webhook_headers(sub.signing_secrets(), webhook_id_for(sub, [payload]), body, ts)


def test_each_owner_has_its_own_secret_and_every_process_derives_the_same() -> None:
    ring = f"k1:{KEY_1}"
    acme, again, globex = (
        owner_callback_secrets(box(ring), "acme"),
        owner_callback_secrets(box(ring), "acme"),
        owner_callback_secrets(box(ring), "globex"),
    )
    assert acme == again and len(acme) == 1 and acme[0].startswith("whsec_")
    assert acme != globex


def test_a_callback_verifies_with_its_owners_secret_only() -> None:
    signer = CallbackSigner(box(f"k1:{KEY_1}"))
    sub = signer.subscription(CallbackTarget("acme", "https://acme.example/cb"))
    body, headers = signed(sub, callback_payload(STATUS))
    [acme_secret] = owner_callback_secrets(signer.box, "acme")
    [globex_secret] = owner_callback_secrets(signer.box, "globex")
    assert Webhook(acme_secret).verify(body, headers)["status"] == "delivered"
    with pytest.raises(WebhookVerificationError):
        Webhook(globex_secret).verify(body, headers)


def test_while_a_key_is_rotated_out_the_old_and_the_new_secret_both_verify() -> None:
    before = owner_callback_secrets(box(f"k1:{KEY_1}"), "acme")[0]
    rotating = CallbackSigner(box(f"k2:{KEY_2},k1:{KEY_1}"))
    after = owner_callback_secrets(rotating.box, "acme")[0]
    target = CallbackTarget("acme", "https://acme.example/cb")
    body, headers = signed(rotating.subscription(target), callback_payload(STATUS))
    assert before != after
    for secret in (before, after):
        Webhook(secret).verify(body, headers)


def test_each_transition_has_its_own_webhook_id_and_the_payload_names_message_and_status() -> None:
    sub = CallbackSigner(box(f"k1:{KEY_1}")).subscription(CallbackTarget("acme", "https://acme.example/cb"))
    first = callback_payload(
        {**STATUS, "event_id": "mt_1#1", "new_state": "submitted", "overall": "submitted"}
    )
    last = callback_payload(STATUS)
    assert webhook_id_for(sub, [first]) == "mt_1#1" and webhook_id_for(sub, [last]) == "mt_1#3"
    assert (last["message_id"], last["status"], last["sequence"], last["at"]) == (
        "mt_1",
        "delivered",
        3,
        "2026-12-01T06:00:00.000Z",
    )
    assert "callback_url" not in last and "owner" not in last


def test_a_callback_target_is_one_subscription_id_per_owner_and_url() -> None:
    a = CallbackTarget("acme", "https://acme.example/cb")
    assert a.subscription_id == CallbackTarget("acme", "https://acme.example/cb").subscription_id
    assert a.subscription_id != CallbackTarget("globex", "https://acme.example/cb").subscription_id
    assert a.subscription_id != CallbackTarget("acme", "https://acme.example/other").subscription_id
    sub = CallbackSigner(box(f"k1:{KEY_1}")).subscription(a)
    assert callback_target(sub) == a
    assert callback_target(Subscription(owner="acme", url="https://acme.example/cb")) is None


def test_a_retried_callback_names_its_target_in_the_retry_record() -> None:
    target = CallbackTarget("acme", "https://acme.example/cb")
    sub = CallbackSigner(box(f"k1:{KEY_1}")).subscription(target)
    decision = RetryDecision(
        Action.RETRY, DeliveryState.RETRY_SCHEDULED, "HTTP 503", next_attempt=2, next_attempt_at=T0
    )
    effects = attempt_effects(sub, [callback_payload(STATUS)], 1, T0, DeliveryOutcome(None, decision))
    [write] = effects.writes
    record = orjson.loads(write.value)
    assert (write.topic, write.key) == (WEBHOOK_RETRY_TOPIC, "mt_1")
    assert CallbackTarget.from_record(record["callback_target"]) == target
    assert record["message"]["event_id"] == "mt_1#3"
