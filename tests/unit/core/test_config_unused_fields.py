"""Every config field is used or refused: a field nothing reads is an error naming its path, not silently
accepted; the Kafka security settings (wired by a later issue) are refused until then."""

import pytest

from smsflow.config import ConfigError, parse_config
from smsflow.serde import registry_client


@pytest.mark.parametrize(
    "data, path",
    [
        # removed: the deliver agent takes events one by one; batching is per subscription
        ({"pipeline": {"delivery_batch": 256}}, "pipeline.delivery_batch: Extra inputs are not permitted"),
        ({"kafka": {"security_protocol": "SASL_SSL"}}, "kafka.security_protocol: not supported yet"),
        ({"kafka": {"sasl_mechanism": "PLAIN"}}, "kafka.sasl_mechanism:"),
        ({"kafka": {"sasl_username_env": "KUSER"}}, "kafka.sasl_username_env:"),
        ({"kafka": {"sasl_password_env": "KPASS"}}, "kafka.sasl_password_env:"),
        (
            {"schema_registry": {"basic_auth_user_env": "REG_USER"}},
            "schema_registry.basic_auth_password_env: required with the other",
        ),
    ],
)
def test_unused_or_unsupported_fields_are_refused_by_path(data: dict, path: str) -> None:
    with pytest.raises(ConfigError, match=path.replace(".", r"\.").replace("[", r"\[")):
        parse_config(data)


def test_registry_basic_auth_comes_from_the_named_environment_variables() -> None:
    cfg = parse_config(
        {
            "kafka": {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"},
            "schema_registry": {
                "url": "http://127.0.0.1:8081",
                "basic_auth_user_env": "REG_USER",
                "basic_auth_password_env": "REG_PW",
            },
        }
    )
    assert cfg.registry_credentials({"REG_USER": "smsflow", "REG_PW": "s3cret"}) == ("smsflow", "s3cret")
    with pytest.raises(ConfigError, match=r"schema_registry\.basic_auth_password_env: REG_PW is not set"):
        cfg.registry_credentials({"REG_USER": "smsflow"})
    client = registry_client("http://127.0.0.1:8081", ("smsflow", "s3cret"))
    assert client._rest_client.auth == ("smsflow", "s3cret")  # what every request to the registry carries


def test_no_credentials_without_the_fields() -> None:
    assert parse_config({}).registry_credentials({"REG_USER": "x"}) is None


def test_the_connector_linger_reaches_the_connectors_producer() -> None:
    """pipeline.connector_linger_ms is the linger of the producer every raw PDU is written with (the carrier
    hears its resp only after that write); the rest of the producer's guarantees stay."""
    from smsflow.roles import connector_producer_conf

    default = connector_producer_conf(parse_config({}), "127.0.0.1:9092")
    assert default["linger.ms"] == 2
    assert default["acks"] == "all" and default["enable.idempotence"] is True
    tuned = connector_producer_conf(parse_config({"pipeline": {"connector_linger_ms": 0}}), "127.0.0.1:9092")
    assert tuned["linger.ms"] == 0
    with pytest.raises(ConfigError, match=r"pipeline\.connector_linger_ms"):
        parse_config({"pipeline": {"connector_linger_ms": 1000}})  # at most 100 ms


def test_the_connector_gather_reaches_the_connectors_producer() -> None:
    """pipeline.connector_gather_ms / _above_per_s are the window and the rate of the gather the connector's
    producer is made with (smsflow/producer.py); 0 makes a producer that never gathers."""
    from smsflow.roles import connector_gather

    default = connector_gather(parse_config({}))
    assert default is not None and default.window == 0.010 and default.above_per_s == 400
    tuned = connector_gather(
        parse_config({"pipeline": {"connector_gather_ms": 4, "connector_gather_above_per_s": 800}})
    )
    assert tuned is not None and tuned.window == 0.004 and tuned.above_per_s == 800
    assert connector_gather(parse_config({"pipeline": {"connector_gather_ms": 0}})) is None
    with pytest.raises(ConfigError, match=r"pipeline\.connector_gather_ms"):
        parse_config({"pipeline": {"connector_gather_ms": -1}})
    with pytest.raises(ConfigError, match=r"pipeline\.connector_gather_above_per_s"):
        parse_config({"pipeline": {"connector_gather_above_per_s": 0}})
