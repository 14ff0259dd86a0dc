import logging
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from pydantic import SecretStr, ValidationError

from smsflow.delivery.events import AttemptResult, DeliveryEvent, DeliveryState, FailureKind
from smsflow.delivery.signing import generate_secret
from smsflow.subscriptions.model import (
    MessageFilter,
    SigningSecret,
    Subscription,
    subscription_from_kafka,
    subscription_from_record,
    subscription_record_key,
    subscription_to_record,
)
from smsflow.subscriptions.secretbox import SecretBox, SecretBoxError


def message(**over):
    base = {
        "message_id": "msg_01",
        "from_number": "+4915112345678",
        "to_number": "+8613800138000",
        "body": "Your code is 123456",
        "encoding": "gsm7",
        "country_code": "CN",
        "otp": "123456",
        "route_id": "route-a",
        "carrier_id": "cmcc",
        "received_at": "2026-01-01T00:00:00Z",
        "sender_signature": "【Tencent】",
    }
    base.update(over)
    return base


def sub(**over):
    return Subscription(owner="acme", url="https://hooks.example.com/sms", **over)


def test_empty_filter_matches_everything():
    assert sub().matches(message())
    assert sub().matches({"message_id": "x"})


@pytest.mark.parametrize(
    ("filters", "msg", "expected"),
    [
        ({"destination_numbers": ["+86 138-0013-8000"]}, {}, True),
        ({"destination_numbers": ["+8613800138001"]}, {}, False),
        ({"destination_prefixes": ["+86138"]}, {}, True),
        ({"destination_prefixes": ["+44"]}, {}, False),
        # a number list OR a prefix satisfies the destination criterion
        ({"destination_numbers": ["+1555"], "destination_prefixes": ["86"]}, {}, True),
        ({"countries": ["cn", "HK"]}, {}, True),
        ({"countries": ["US"]}, {}, False),
        ({"otp_only": True}, {}, True),
        ({"otp_only": True}, {"otp": None}, False),
        ({"sender_signatures": ["【tencent】"]}, {}, True),
        ({"sender_signatures": ["【Alipay】"]}, {}, False),
        ({"sender_signatures": ["【Tencent】"]}, {"sender_signature": None}, False),
        ({"route_ids": ["route-a", "route-b"]}, {}, True),
        ({"route_ids": ["route-b"]}, {}, False),
        # criteria combine with AND
        ({"countries": ["CN"], "otp_only": True, "route_ids": ["route-b"]}, {}, False),
        ({"countries": ["CN"], "otp_only": True, "destination_prefixes": ["+86"]}, {}, True),
    ],
)
def test_filters(filters, msg, expected):
    assert sub(filters=MessageFilter(**filters)).matches(message(**msg)) is expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("countries", ["CHN"]),
        ("countries", ["1A"]),
        ("destination_prefixes", ["+"]),
        ("destination_numbers", ["abc"]),
    ],
)
def test_bad_filters_name_the_field(field, value):
    with pytest.raises(ValidationError) as exc:
        MessageFilter(**{field: value})
    assert exc.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize("url", ["ftp://x.example/a", "https://", "not a url", "https://x.example/a#frag"])
def test_bad_urls_are_refused(url):
    with pytest.raises(ValidationError):
        Subscription(owner="acme", url=url)


def test_repr_and_logs_never_show_secrets_or_url_credentials(caplog):
    secret = generate_secret()
    s = Subscription(
        owner="acme", url="https://user:hunter2@hooks.example.com/x", secrets=[SigningSecret.new(secret)]
    )
    logging.getLogger("t").warning("sub %r / %s / %s", s, s, s.model_dump_json())
    text = caplog.text + repr(s.model_dump(mode="json"))
    assert secret not in text and secret[6:] not in text
    assert "hunter2" not in repr(s)
    assert s.signing_secrets() == [secret]


def test_expired_secrets_stop_signing_but_newest_always_signs():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    new, old = generate_secret(), generate_secret()
    s = sub(
        secrets=[
            SigningSecret(value=SecretStr(new), created_at=now),
            SigningSecret(
                value=SecretStr(old), created_at=now - timedelta(days=30), expires_at=now + timedelta(hours=1)
            ),
        ]
    )
    assert s.signing_secrets(now) == [new, old]
    assert s.signing_secrets(now + timedelta(hours=2)) == [new]


@pytest.fixture
def box():
    return SecretBox.from_spec(f"k2:{SecretBox.generate_key()},k1:{SecretBox.generate_key()}")


def test_topic_record_round_trips_with_secrets_sealed(box):
    secret = generate_secret()
    s = sub(
        secrets=[SigningSecret.new(secret)], filters=MessageFilter(countries=["CN"]), rate_limit_per_second=5
    )
    value = subscription_to_record(s, box)
    assert secret.encode() not in value and secret[6:].encode() not in value
    assert orjson.loads(value)["secrets"][0]["sealed"].startswith("enc:v1:k2:")
    sub_id, back = subscription_from_kafka(subscription_record_key(s.id), value, box)
    assert sub_id == s.id and back == s
    assert back.signing_secrets() == [secret]


def test_tombstone_means_deleted(box):
    assert subscription_from_kafka(b"sub_1", None, box) == ("sub_1", None)


def test_sealed_secret_does_not_open_in_another_record(box):
    a, b = sub(), sub()
    doc = orjson.loads(subscription_to_record(a, box))
    doc["id"] = b.id  # secrets copied into another subscription's record
    with pytest.raises(SecretBoxError):
        subscription_from_record(orjson.dumps(doc), box)


def test_old_key_still_opens_after_key_rotation():
    k1 = SecretBox.generate_key()
    old_box = SecretBox.from_spec(f"k1:{k1}")
    value = subscription_to_record(sub(), old_box)
    new_box = SecretBox.from_spec(f"k2:{SecretBox.generate_key()},k1:{k1}")
    assert subscription_from_record(value, new_box).id == orjson.loads(value)["id"]
    with pytest.raises(SecretBoxError, match="not in the key ring"):
        subscription_from_record(value, SecretBox.from_spec(f"k2:{SecretBox.generate_key()}"))


def test_secretbox_config_errors_name_the_entry():
    with pytest.raises(SecretBoxError, match=r"\[0\]"):
        SecretBox.from_spec("nokey")
    with pytest.raises(SecretBoxError, match="32 bytes"):
        SecretBox.from_spec("k1:AAAA")
    with pytest.raises(SecretBoxError, match="SMSFLOW_SECRETS_KEYS"):
        SecretBox.from_env({})


def test_delivery_event_is_json_and_round_trips():
    result = AttemptResult(
        subscription_id="sub_1",
        webhook_id="msg_1",
        message_ids=["msg_1"],
        attempt=2,
        url="https://x.example/",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        duration_ms=12.5,
        status_code=503,
        failure=FailureKind.HTTP_STATUS,
        error="HTTP 503",
    )
    event = DeliveryEvent.from_attempt(
        result, DeliveryState.RETRY_SCHEDULED, "msg_1", next_attempt_at=datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    )
    doc = orjson.loads(event.to_json())
    assert doc["state"] == "retry_scheduled" and doc["status_code"] == 503 and doc["attempt"] == 2
    assert doc["next_attempt_at"] == "2026-01-01T00:05:00Z"
    assert DeliveryEvent.from_json(event.to_json()) == event
