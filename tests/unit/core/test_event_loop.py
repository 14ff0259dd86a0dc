"""The worker's and the connector's loop is what the config says."""

from __future__ import annotations

import asyncio
import time

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


def test_load_is_saturated_by_a_busy_window_or_a_late_sample() -> None:
    load = event_loop.LoopLoad(interval_s=0.1, window=3, busy_share=0.85, late_s=0.05)
    assert not load.saturated()  # nothing sampled yet: nothing known, nothing held back
    for _ in range(3):
        load.sample(0.1, 0.05)
    assert not load.saturated()
    for _ in range(3):
        load.sample(0.1, 0.095)
    assert load.saturated()
    load.sample(0.1, 0.0)
    load.sample(0.1, 0.0)
    assert not load.saturated()  # the window's mean share fell to a third
    load.sample(0.2, 0.0)  # a thread that got no CPU but ran 100 ms late: a loaded machine
    assert load.saturated()
    load.sample(0.1, 0.0)
    assert not load.saturated()


async def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        while time.monotonic() - t < 0.02:
            pass
        await asyncio.sleep(0)


async def test_a_loop_kept_busy_is_saturated_and_an_idle_one_is_not() -> None:
    load = event_loop.LoopLoad(interval_s=0.05, window=4)
    sampler = asyncio.ensure_future(load.run())
    try:
        await asyncio.sleep(0.4)
        # idle: its thread spent almost nothing on a CPU (lateness is not asserted: a loaded machine may
        # schedule the thread late, which is what it is for)
        assert sum(b for b, _ in load._samples) / len(load._samples) < 0.5
        await _spin(0.5)
        assert load.saturated()
    finally:
        sampler.cancel()
