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


def test_the_bound_halves_on_a_saturated_sample_and_climbs_while_reached_on_an_idle_one() -> None:
    load = event_loop.LoopLoad(512, 4096, 256, interval_s=0.1, busy_share=0.85, late_s=0.05)
    assert load.limit == 512 and not load.saturated()  # a burst before the first sample: only the floor
    for _ in range(20):  # records waiting on slow endpoints: the bound is reached, the loop mostly idle
        load.observe(load.limit)
        load.sample(0.1, 0.02)
    assert load.limit == 4096  # the ceiling within 1.4 s
    load.observe(4096)
    load.sample(0.1, 0.09)  # busy
    assert load.saturated() and load.limit == 2048
    load.observe(2048)
    load.sample(0.1, 0.0)
    assert not load.saturated() and load.limit == 2304
    load.observe(2304)
    load.sample(0.2, 0.0)  # no CPU for the thread but 100 ms late: a loop the machine holds back
    assert load.saturated() and load.limit == 1152
    for _ in range(5):
        load.sample(0.1, 0.1)
    assert load.limit == 512  # never below the floor
    assert load.saturated_samples == 7


def test_a_bound_not_reached_shrinks_to_what_was_used() -> None:
    # an idle loop after a busy spell: the next burst must not find a bound of 4,096 that it fills at once
    load = event_loop.LoopLoad(512, 4096, 256)
    for _ in range(20):
        load.observe(load.limit)
        load.sample(0.1, 0.0)
    assert load.limit == 4096
    load.observe(1000)
    load.sample(0.1, 0.0)
    assert load.limit == 1256  # what was used, plus a step
    load.sample(0.1, 0.0)  # nothing taken at all
    assert load.limit == 512


async def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        while time.monotonic() - t < 0.02:
            pass
        await asyncio.sleep(0)


async def test_a_loop_kept_busy_is_saturated_and_an_idle_one_is_not() -> None:
    load = event_loop.LoopLoad(floor=8, ceiling=64, step=8, interval_s=0.05)
    sampler = asyncio.ensure_future(load.run())
    try:
        await asyncio.sleep(0.5)
        # idle: its thread wanted little CPU (lateness is not asserted: a loaded machine may schedule the
        # thread late, which is what it is for), and nothing was taken: the bound stays at the floor
        assert load.limit == 8 and load.last is not None and load.last[0] < 0.5
        await _spin(0.5)
        assert load.saturated() and load.limit == 8
    finally:
        sampler.cancel()


def test_thread_demand_counts_the_time_on_a_cpu() -> None:
    d0, c0 = event_loop.thread_demand_s(), time.thread_time()
    t = time.monotonic()
    while time.monotonic() - t < 0.1:
        pass
    assert event_loop.thread_demand_s() - d0 >= 0.9 * (time.thread_time() - c0)


async def test_each_sample_exports_how_late_it_ran_and_the_threads_wait_for_a_cpu() -> None:
    """What an operator reads to tell a loop that stalls (late samples) from one that a full machine holds
    back (run-queue wait): smsflow_event_loop_lateness_seconds, smsflow_event_loop_runqueue_wait_seconds."""
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"loop": "test-loop", **labels}) or 0.0

    waited = [0.0]

    def wait_clock() -> float:
        waited[0] += 0.01  # 10 ms of run-queue wait between any two readings
        return waited[0]

    before = value("smsflow_event_loop_lateness_seconds_count")
    late_before = before - value("smsflow_event_loop_lateness_seconds_bucket", le="0.1")
    wait_before = value("smsflow_event_loop_runqueue_wait_seconds_total")
    load = event_loop.LoopLoad(
        floor=8, ceiling=64, step=8, interval_s=0.05, wait_clock=wait_clock, name="test-loop"
    )
    sampler = asyncio.ensure_future(load.run())
    try:
        await asyncio.sleep(0.3)
        time.sleep(0.35)  # noqa: ASYNC251 -- the loop blocked on purpose: the sample due runs ~0.3 s late
        await asyncio.sleep(0.1)
    finally:
        sampler.cancel()
    samples = value("smsflow_event_loop_lateness_seconds_count") - before
    late = samples - value("smsflow_event_loop_lateness_seconds_bucket", le="0.1") - late_before
    assert samples >= 3 and late >= 1
    assert value("smsflow_event_loop_runqueue_wait_seconds_total") - wait_before >= 0.01 * samples - 1e-9
