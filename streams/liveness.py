"""Is this worker able to process? Readiness for an orchestrator, and an exit when it cannot go on.

A worker that looks alive but processes nothing is the worst failure: its partitions stay assigned to it,
so no other worker takes them over. So the worker answers ``/health`` (and ``smsflow_ready``) from what Faust
reports — recovery finished, no rebalance in progress, no crashed agent or service — and a watchdog thread,
independent of the event loop, ends the process with a non-zero status and a clear message when a problem
outlasts its grace period or the event loop stops ticking. Ending the process is safe at any moment: the
ingest state is crash-consistent (docs/consistency.md), and a restart resumes from the committed offsets.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

EXIT_CANNOT_PROCESS = 3


class WorkerCannotProcess(RuntimeError):
    """Raised where retrying cannot help; the watchdog ends the process."""


class Liveness:
    def __init__(
        self,
        app: Any,
        grace_s: float = 30.0,
        stall_s: float = 120.0,
        startup: StartupTimeline | None = None,
        max_not_ready_s: float = 900.0,
    ) -> None:
        self.app = app
        self.max_not_ready_s = max_not_ready_s
        self._not_ready_since: float | None = time.monotonic()
        self.startup = startup or StartupTimeline()
        self._was_ready = False
        self.grace_s = grace_s
        self.stall_s = stall_s
        self.last_beat = time.monotonic()
        self.fatal: str | None = None
        self._problem_since: float | None = None
        # more conditions for "ready": each returns why the worker is not ready yet, or None
        self.checks: list[Callable[[], str | None]] = []

    def require(self, check: Callable[[], str | None]) -> None:
        """``check`` must return None for the worker to be ready (e.g. a reader of its own has partitions)."""
        self.checks.append(check)

    def problem(self) -> str | None:
        """Something that stops processing, or None."""
        if self.fatal:
            return self.fatal
        app = self.app
        if getattr(app, "crashed", False):
            return f"the Faust app crashed: {getattr(app, 'crash_reason', None)!r}"
        for agent in list(getattr(app, "agents", {}).values()):
            for actor in list(getattr(agent, "_actors", ())):
                if getattr(actor, "crashed", False):
                    return f"agent {agent.name} crashed: {getattr(actor, 'crash_reason', None)!r}"
        return None

    def ready(self) -> tuple[bool, str]:
        problem = self.problem()
        if problem:
            return False, problem
        if time.monotonic() - self.last_beat > 10.0:
            return False, "the event loop has not ticked for 10 s"
        # the private slot, not the property: the property would create the Recovery service from this thread
        recovery = getattr(getattr(self.app, "tables", None), "_recovery", None)
        if recovery is None:
            return False, "starting"
        if not recovery.completed.is_set():
            return False, "recovering table state from changelogs"
        if getattr(self.app, "rebalancing", False):
            return False, "consumer group rebalance in progress"
        for check in self.checks:
            why = check()
            if why:
                return False, why
        if not self._was_ready:
            self._was_ready = True
            self.startup.mark("ready (partitions assigned, tables recovered)")
        return True, "processing"

    def beat(self) -> None:
        """Called from a timer on the event loop: the loop is alive."""
        self.last_beat = time.monotonic()
        self.ready()  # marks the moment it first is, if /health was not asked
        self.startup.flush()

    def fail(self, reason: str) -> None:
        """The worker cannot go on (after its own retries): the watchdog exits on its next check."""
        self.fatal = reason
        log.critical("worker cannot process: %s", reason)

    def watch(self, interval_s: float = 1.0) -> threading.Thread:
        t = threading.Thread(target=self._watch, args=(interval_s,), daemon=True, name="liveness")
        t.start()
        return t

    def _watch(self, interval_s: float) -> None:
        while True:
            time.sleep(interval_s)
            now = time.monotonic()
            reason = self.problem()
            if reason is None and now - self.last_beat > self.stall_s:
                reason = f"the event loop made no progress for {self.stall_s:.0f} s"
            if reason is None:
                # a worker that stays not ready (a recovery or a rebalance that never ends) holds its
                # partitions while processing nothing: after max_not_ready_s it exits, so they move on
                ready, why = self.ready()
                if ready:
                    self._not_ready_since = None
                elif self._not_ready_since is None:
                    self._not_ready_since = now
                elif now - self._not_ready_since >= self.max_not_ready_s:
                    self._exit(f"not ready for {self.max_not_ready_s:.0f} s: {why}")
            if reason is None:
                self._problem_since = None
                continue
            if self._problem_since is None:
                self._problem_since = now
            if self.fatal or now - self._problem_since >= self.grace_s:
                self._exit(reason)

    def _exit(self, reason: str) -> None:
        msg = f"smsflow worker: cannot process, exiting with status {EXIT_CANNOT_PROCESS}: {reason}"
        log.critical(msg)
        print(msg, file=sys.stderr, flush=True)
        # No clean shutdown: it could hang on what is broken. The ingest state is crash-consistent and the
        # offsets of unfinished work are not committed, so a restart loses nothing.
        os._exit(EXIT_CANNOT_PROCESS)


def since_process_start() -> float:
    """Seconds since this process was created (Linux ``/proc``), so start-up phases include the interpreter's
    own start and the imports; elsewhere, since this module was imported."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            # field 22, counted after the command name (which may contain spaces): start time in clock ticks
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime", encoding="ascii") as f:
            return float(f.read().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED_AT


_IMPORTED_AT = time.monotonic()


class StartupTimeline:
    """When each start-up phase of a worker ended, in seconds since the process started.

    After a crash, messages wait for the restarted worker's whole start-up; these marks say where that time
    goes (docs/consistency.md, "Recovery timeline"). Marks made before Faust sets up logging are kept and
    logged at the next ``flush``."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []
        self._logged = 0

    def mark(self, phase: str) -> None:
        self.marks.append((phase, since_process_start()))

    def flush(self) -> None:
        for phase, at in self.marks[self._logged :]:
            log.info("start-up: %s at %.2f s", phase, at)
        self._logged = len(self.marks)
