"""The worker's and the connector's loop is what the config says."""

from __future__ import annotations

import asyncio

import pytest

from smsflow import event_loop
from smsflow.config import Config, ConfigError, load_config


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.parametrize(("choice", "module"), [("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_run_uses_the_configured_loop(choice: event_loop.EventLoopChoice, module: str) -> None:
    try:
        assert event_loop.run(_loop_module(), choice).split(".")[0] == module
    finally:
        asyncio.set_event_loop_policy(None)


def test_uvloop_is_the_default_and_a_bad_choice_names_the_field(tmp_path) -> None:
    assert Config().event_loop == "uvloop"
    path = tmp_path / "c.yaml"
    path.write_text("event_loop: twisted\n")
    with pytest.raises(ConfigError, match="event_loop"):
        load_config(path)
