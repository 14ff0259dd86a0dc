"""Keys in ``smsflow run``'s live table: ``f`` cycles a fault on the primary carrier (refuse binds -> probe
latency -> clear), ``q`` stops the run.

Keys are read only when stdin is a terminal: a headless run (CI, a pipe, ``< /dev/null``) never reads, never
changes terminal modes, and never blocks. On a terminal, stdin is put in cbreak mode (one key at a time, no
echo) for the run and restored on the way out, whatever ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import termios
import tty
from dataclasses import dataclass
from typing import IO, Any

from devkit.demo.route_view import DEMO_FAULTS

FAULT_KEY = "f"
QUIT_KEY = "q"
# What each press of FAULT_KEY puts on the primary carrier, in turn; None clears it.
FAULT_CYCLE: tuple[str | None, ...] = ("refuse_binds", "probe_latency", None)
_SAYS = {"refuse_binds": "refuse binds", "probe_latency": "probe latency", None: "clear"}


@dataclass
class FaultCycle:
    """The key -> fault mapping: which fault the next press of ``f`` injects, and the footer that says so."""

    at: int = -1  # index in FAULT_CYCLE of the fault in force; -1: none pressed yet

    def press(self, key: str) -> tuple[bool, str | None]:
        """(True, fault or None to clear) for the fault key; (False, None) for any other key."""
        if key.lower() != FAULT_KEY:
            return False, None
        self.at = (self.at + 1) % len(FAULT_CYCLE)
        return True, FAULT_CYCLE[self.at]

    @property
    def current(self) -> str | None:
        return None if self.at < 0 else FAULT_CYCLE[self.at]

    def footer(self) -> str:
        upcoming = FAULT_CYCLE[(self.at + 1) % len(FAULT_CYCLE)]
        now = _SAYS[self.current] if self.current else "none"
        return f"[{FAULT_KEY}] primary fault: {now} → next {_SAYS[upcoming]} · [{QUIT_KEY}] quit"


def fault_spec(kind: str) -> dict[str, Any]:
    """The simulator fault for a key press: the demo's settings, in force until the next press."""
    return {"kind": kind, **DEMO_FAULTS[kind]}


class KeyReader:
    """Keys typed on ``stream`` (stdin) into a queue, while the run lasts; inactive unless it is a TTY."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdin
        self.keys: asyncio.Queue[str] = asyncio.Queue()
        self._fd: int | None = None
        self._saved: list[object] | None = None

    @property
    def active(self) -> bool:
        return self._fd is not None

    def start(self) -> bool:
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            return False  # no real stdin (a test harness, a closed stream)
        if not os.isatty(fd):
            return False
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        asyncio.get_running_loop().add_reader(fd, self._read)
        self._fd = fd
        return True

    def _read(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 32)
        except OSError:
            data = b""
        if not data:  # the terminal went away: stop reading, keep running
            self.stop()
            return
        for ch in data.decode(errors="ignore"):
            self.keys.put_nowait(ch)

    def pending(self) -> list[str]:
        out = []
        while not self.keys.empty():
            out.append(self.keys.get_nowait())
        return out

    def stop(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(fd)
        if self._saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(fd, termios.TCSADRAIN, self._saved)  # type: ignore[arg-type]
