"""Config fields that nothing reads are refused with their path, not accepted and silently ignored."""

import pytest

from smsflow.config import ConfigError, parse_config


@pytest.mark.parametrize(
    "data, path",
    [
        ({"pipeline": {"delivery_batch": 64}}, "pipeline.delivery_batch: not used"),
        ({"schema_registry": {"basic_auth_user_env": "REG_USER"}}, "schema_registry.basic_auth_user_env:"),
        (
            {"schema_registry": {"basic_auth_password_env": "REG_PW"}},
            "schema_registry.basic_auth_password_env:",
        ),
        ({"kafka": {"security_protocol": "SASL_SSL"}}, "kafka.security_protocol: not supported yet"),
        ({"kafka": {"sasl_mechanism": "PLAIN"}}, "kafka.sasl_mechanism:"),
        ({"kafka": {"sasl_username_env": "KUSER"}}, "kafka.sasl_username_env:"),
        ({"kafka": {"sasl_password_env": "KPASS"}}, "kafka.sasl_password_env:"),
    ],
)
def test_unused_fields_are_refused_by_path(data: dict, path: str) -> None:
    with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
        parse_config(data)


def test_their_defaults_still_load() -> None:
    cfg = parse_config(
        {
            "pipeline": {"delivery_batch": 256},
            "schema_registry": {"basic_auth_user_env": None},
            "kafka": {"security_protocol": "PLAINTEXT"},
        }
    )
    assert cfg.pipeline.delivery_batch == 256
