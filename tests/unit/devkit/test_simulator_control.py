"""Faults injected the way an operator does it: `smsflow simulator fault ...` against the control endpoint of
a running simulator, with an ESME session bound to it seeing the effect (no broker)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import AsyncIterator

from typer.testing import CliRunner

from devkit.simulator.control import SimulatorControl
from devkit.simulator.smsc import SimulatedSmsc
from smsflow.cli import app
from tests.unit.devkit.test_simulator_faults import PROBE_NUMBER, esme, smsc_for_tests


async def cli(command: str) -> tuple[int, str, str]:
    """Run one `smsflow ...` command line in a thread, so the simulator on this loop keeps serving it."""
    result = await asyncio.to_thread(CliRunner().invoke, app, shlex.split(command))
    return result.exit_code, result.stdout, result.stderr


@contextlib.asynccontextmanager
async def controlled() -> AsyncIterator[tuple[SimulatedSmsc, str]]:
    smsc = smsc_for_tests()
    await smsc.start()
    control = SimulatorControl(smsc)
    url = await control.start()
    try:
        yield smsc, url
    finally:
        await control.stop()
        await smsc.stop()


async def test_cli_sets_lists_and_clears_faults_that_the_esme_feels() -> None:
    async with controlled() as (smsc, url), esme(smsc) as a:
        code, out, _ = await cli(f"simulator fault set silent --account alpha --duration 30 --control {url}")
        assert code == 0 and json.loads(out)["fault"]["kind"] == "silent"
        with contextlib.suppress(TimeoutError):
            await a.submit("85261234567", timeout=0.5)
            raise AssertionError("a silent carrier answered a submit_sm")

        code, out, _ = await cli(f"simulator fault list --account alpha --control {url}")
        listed = json.loads(out)["faults"]
        assert code == 0 and [f["kind"] for f in listed] == ["silent"] and 0 < listed[0]["expires_in_s"] <= 30

        code, out, _ = await cli(f"simulator fault clear --account alpha --control {url}")
        assert code == 0 and json.loads(out)["cleared"] == ["silent"]
        assert (await a.submit("85261234567")).command_status == 0

        code, out, _ = await cli(
            f"simulator fault set submit_errors --account alpha --ratio 1 --status 0x14 --control {url}"
        )
        assert code == 0 and (await a.submit("85261234567")).command_status == 0x14

        binds = a.session.stats.binds
        code, out, _ = await cli(f"simulator fault set drop --account alpha --control {url}")
        assert code == 0 and json.loads(out)["dropped"] is True
        deadline = time.monotonic() + 10
        while a.session.stats.binds == binds and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert a.session.stats.binds == binds + 1

        code, out, _ = await cli(f"simulator fault list --control {url}")
        state = json.loads(out)
        assert state["accounts"]["alpha"]["submits"]["unanswered"] == 1
        assert state["accounts"]["alpha"]["submits"]["errors"] == 1
        assert [f["kind"] for f in state["accounts"]["alpha"]["faults"]] == ["submit_errors"]
        assert state["stats"]["drops"] == 1


async def test_cli_reports_bad_faults_unknown_accounts_and_a_dead_control_port() -> None:
    async with controlled() as (_, url):
        code, _, err = await cli(
            f"simulator fault set submit_errors --account alpha --ratio 2 --control {url}"
        )
        assert code == 1 and "400 fault.ratio: must be >= 0 and <= 1" in err
        code, _, err = await cli(f"simulator fault set flood --account alpha --control {url}")
        assert code == 1 and "fault.kind: unknown fault 'flood'" in err
        code, _, err = await cli(f"simulator fault set silent --account nobody --control {url}")
        assert code == 1 and "404 account: no such account 'nobody'" in err
        code, _, err = await cli(f"simulator fault clear flood --account alpha --control {url}")
        assert code == 1 and "404 kind: unknown fault 'flood'" in err
    code, _, err = await cli(f"simulator fault list --control {url}")
    assert code == 1 and "cannot reach the simulator" in err


async def test_smsflow_simulator_process_loops_probes_back_and_takes_faults() -> None:
    """The user's command: `smsflow simulator --control-port ... --test-number ...` as its own process."""
    env = {**os.environ, "SMSFLOW_SIM_PASSWORD": "pw"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsflow.cli", "simulator", "--port", "0", "--system-id", "alpha",
        "--rate", "0", "--control-port", "0", "--test-number", f"+{PROBE_NUMBER}", "--probe-latency", "0.2",
        env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        banner = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        control = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        smpp_port = int(re.search(r"127\.0\.0\.1:(\d+)", banner).group(1))  # type: ignore[union-attr]
        url = control.split(" on ", 1)[1].strip()
        async with esme(smpp_port) as a:
            t0 = time.monotonic()
            await a.submit(PROBE_NUMBER, b"probe p-1")
            at, mo = await a.next_pdu(10)
            assert mo.params["short_message"] == b"probe p-1" and 0.2 <= at - t0 < 5
            code, _, _ = await cli(
                f"simulator fault set probe_latency --account alpha --latency-ms 1000 --control {url}"
            )
            assert code == 0
            t0 = time.monotonic()
            await a.submit(PROBE_NUMBER, b"probe p-2")
            at, mo = await a.next_pdu(10)
            assert mo.params["short_message"] == b"probe p-2" and 1.2 <= at - t0 < 6
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
