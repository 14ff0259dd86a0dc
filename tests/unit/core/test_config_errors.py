"""A config the processes cannot use is refused with one ``field.path: reason`` line per bad field, every one
of them at once, in each section; the file itself (unreadable, not YAML, not a mapping) is named by its path.

Carrier fields are covered in test_carrier_profiles.py, the routing section in routing/test_model.py, the
refused Kafka security fields in test_config_unused_fields.py; this file covers the rest and the shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from smsflow.config import ConfigError, load_config, parse_config
from tests.unit.core.test_carrier_profiles import BASE

CARRIER = BASE  # carrier c1, password in $PW
SUBSCRIPTION = {"id": "s1", "url": "https://hooks.example/sms", "secret_env": "WHSEC"}


def error_lines(data: Any) -> list[str]:
    """The lines after the ``<config>: invalid config`` heading, as a user reads them."""
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    head, *lines = str(exc.value).split("\n")
    assert head == "<config>: invalid config"
    return [line.strip() for line in lines]


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ({"app_id": "my app"}, "app_id: String should match pattern '^[A-Za-z0-9_.-]+$'"),
        ({"kafka": {"partitions": 0}}, "kafka.partitions: Input should be greater than or equal to 1"),
        ({"kafka": {"replication_factor": 0}}, "kafka.replication_factor: Input should be greater than"),
        ({"tracing": {"sample_ratio": 2}}, "tracing.sample_ratio: Input should be less than or equal to 1"),
        ({"pipeline": {"dedup_window_s": 0}}, "pipeline.dedup_window_s: Input should be greater than 0"),
        ({"worker": {"store": "lmdb"}}, "worker.store: Input should be 'memory' or 'rocksdb'"),
        ({"webhooks": {"retry_delays_s": [1, -2]}}, "webhooks.retry_delays_s[1]: must be >= 0"),
        ({"webhooks": {"retry_jitter": 1}}, "webhooks.retry_jitter: Input should be less than 1"),
        ({"outbound": {"unknown_outcome": "maybe"}}, "outbound.unknown_outcome: Input should be 'hold' or"),
        ({"event_loop": "trio"}, "event_loop: Input should be 'uvloop' or 'asyncio'"),
        ({"subscriptions": [{**SUBSCRIPTION, "url": "ftp://x"}]}, "subscriptions[0].url: String should"),
        ({"subscriptions": [{**SUBSCRIPTION, "max_in_flight": 0}]}, "subscriptions[0].max_in_flight:"),
        # a typo is not silently ignored: the misspelt key is named where it stands
        ({"carriers": [{**CARRIER, "hots": "x"}]}, "carriers[0].hots: Extra inputs are not permitted"),
        ({"kafak": {}}, "kafak: Extra inputs are not permitted"),
        ({"carriers": [{**CARRIER, "host": None}]}, "carriers[0].host: Input should be a valid string"),
        ({"carriers": [{**CARRIER, "port": 0}]}, "carriers[0].port: Input should be greater than"),
        ({"carriers": [{k: v for k, v in CARRIER.items() if k != "port"}]}, "carriers[0].port: Field"),
    ],
)
def test_a_bad_field_is_named_by_its_path(data: dict[str, Any], line: str) -> None:
    [only] = error_lines(data)
    assert only.startswith(line), only


def test_every_bad_field_is_named_at_once_one_per_line() -> None:
    lines = error_lines(
        {
            "kafka": {"partitions": 0},
            "subscriptions": [SUBSCRIPTION, {**SUBSCRIPTION, "id": "s2", "url": "ftp://x"}],
            "webhooks": {"retry_delays_s": [1, -2]},
        }
    )
    assert [line.partition(":")[0] for line in lines] == [
        "kafka.partitions",
        "subscriptions[1].url",
        "webhooks.retry_delays_s[1]",
    ]


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ({"carriers": [CARRIER, {**CARRIER, "port": 2776}]}, "carriers[1].id: duplicate id 'c1'"),
        ({"subscriptions": [SUBSCRIPTION, SUBSCRIPTION]}, "subscriptions[1].id: duplicate id 's1'"),
        (
            {"carriers": [CARRIER, {**CARRIER, "id": "c2", "reconnect": {"initial_s": 5, "max_s": 2}}]},
            "carriers[1].reconnect.max_s: must be >= initial_s",
        ),
        (
            {"worker": {"session_timeout_s": 6, "heartbeat_interval_s": 3}},
            "worker.heartbeat_interval_s: must be at most a third of session_timeout_s",
        ),
        (
            {"carriers": [CARRIER], "routing": {"routes": [{"id": "a", "kind": "carrier", "carrier": "c9"}]}},
            "routing.routes[0].carrier: no carrier 'c9' in carriers",
        ),
    ],
)
def test_a_check_across_fields_names_the_field_to_change(data: dict[str, Any], line: str) -> None:
    assert error_lines(data) == [line]


@pytest.mark.parametrize("data", [[CARRIER], "carriers: []", 3])
def test_a_top_level_that_is_not_a_mapping_is_refused(data: Any) -> None:
    with pytest.raises(ConfigError, match=r"^<config>: top level must be a mapping$"):
        parse_config(data)


def test_an_empty_file_is_the_default_config(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    assert load_config(path) == parse_config({})


def test_a_file_error_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=rf"^{missing}: cannot read config: No such file"):
        load_config(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("kafka: [partitions: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{broken}: not valid YAML"):
        load_config(broken)
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka:\n  partitions: 0\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    assert str(exc.value).split("\n") == [
        f"{bad}: invalid config",
        "  kafka.partitions: Input should be greater than or equal to 1",
    ]


def test_a_secret_named_but_not_in_the_environment_names_its_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WHSEC", raising=False)
    monkeypatch.delenv("PW", raising=False)
    cfg = parse_config({"carriers": [CARRIER], "subscriptions": [SUBSCRIPTION]})
    with pytest.raises(ConfigError, match=r"^subscriptions\[s1\]\.secret_env: environment variable WHSEC"):
        cfg.subscriptions[0].secret()
    with pytest.raises(ConfigError, match=r"^carriers\[c1\]\.password_env: environment variable PW is not"):
        cfg.carriers[0].password()
    monkeypatch.setenv("WHSEC", "whsec_x")
    assert cfg.subscriptions[0].secret() == "whsec_x"


def test_a_role_without_endpoints_names_the_missing_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("SCHEMA_REGISTRY_URL", raising=False)
    with pytest.raises(ConfigError, match=r"^kafka\.bootstrap_servers: not set"):
        parse_config({}).require_endpoints()
    with pytest.raises(ConfigError, match=r"^schema_registry\.url: not set"):
        parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9092"}}).require_endpoints()
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081")
    assert parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9092"}}).require_endpoints() == (
        "127.0.0.1:9092",
        "http://127.0.0.1:8081",
    )
