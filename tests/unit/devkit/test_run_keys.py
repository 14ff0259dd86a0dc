"""``smsflow run``'s keys (issue 11): ``f`` cycles a fault on the primary carrier, and keys are read only
from a terminal, so a headless run never blocks or changes terminal modes."""

from __future__ import annotations

import asyncio
import os
import pty
import termios

from devkit.demo.keys import FaultCycle, KeyReader, fault_spec
from devkit.simulator.faults import parse_fault


def test_the_fault_key_cycles_refuse_binds_probe_latency_clear() -> None:
    cycle = FaultCycle()
    assert cycle.footer().startswith("[f] primary fault: none → next refuse binds")
    presses = [cycle.press(k) for k in "fxfFf q"]
    assert presses == [
        (True, "refuse_binds"),
        (False, None),  # any other key: nothing
        (True, "probe_latency"),
        (True, None),  # upper case too; the third press clears
        (True, "refuse_binds"),  # and round again
        (False, None),
        (False, None),
    ]
    assert cycle.current == "refuse_binds" and "next probe latency" in cycle.footer()
    for kind in ("refuse_binds", "probe_latency"):
        fault = parse_fault(fault_spec(kind), now=0.0)  # each is a fault the simulator accepts
        assert fault.kind.value == kind and fault.duration_s is None  # in force until the next press
    assert parse_fault(fault_spec("probe_latency"), now=0.0).latency_ms == 8000


async def test_keys_typed_on_a_terminal_arrive_and_the_terminal_is_restored() -> None:
    main, tty_fd = pty.openpty()
    try:
        with os.fdopen(tty_fd, "r", closefd=False) as stream:
            before = termios.tcgetattr(tty_fd)
            reader = KeyReader(stream)
            assert reader.start() and reader.active
            assert not termios.tcgetattr(tty_fd)[3] & termios.ICANON  # one key at a time
            os.write(main, b"fq")
            for _ in range(100):
                if reader.keys.qsize() >= 2:
                    break
                await asyncio.sleep(0.01)
            assert reader.pending() == ["f", "q"]
            reader.stop()
            assert termios.tcgetattr(tty_fd) == before and not reader.active
    finally:
        os.close(main)
        os.close(tty_fd)


async def test_a_headless_run_reads_no_keys() -> None:
    read_end, write_end = os.pipe()  # stdin of a CI job or `smsflow run < /dev/null`
    try:
        with os.fdopen(read_end, "r", closefd=False) as stream:
            reader = KeyReader(stream)
            assert not reader.start() and not reader.active
            os.write(write_end, b"f")
            await asyncio.sleep(0.05)
            assert reader.pending() == []
            reader.stop()  # harmless
    finally:
        os.close(read_end)
        os.close(write_end)
    assert not KeyReader(object()).start()  # type: ignore[arg-type]  # no fileno at all


def test_the_table_shows_the_keys_as_text_in_its_title_and_footer() -> None:
    """Rich reads "[f]" as markup unless escaped; and a table taller than the terminal is cropped at the
    bottom, so the title (always visible) says the key too."""
    from types import SimpleNamespace

    from rich.console import Console

    from devkit.demo.pipeline import Progress

    stats = SimpleNamespace(logical_accepted=1, sent=1, retransmissions=0, temp_errors=0)
    log = SimpleNamespace(latencies_ms=[5.0], messages={"m": 1}, redeliveries=0, bad_signatures=0)
    cycle = FaultCycle()
    cycle.press("f")
    table = Progress().table(
        1,
        SimpleNamespace(stats=stats),
        SimpleNamespace(log=log),
        [],
        None,
        None,
        "x",
        cycle.footer(),  # type: ignore[arg-type]
    )
    console = Console(record=True, width=140)
    console.print(table)
    text = console.export_text()
    assert "[f] primary fault: refuse binds → next probe latency · [q] quit" in text
    assert text.splitlines()[0].strip().endswith("· [f] primary fault: refuse binds")
