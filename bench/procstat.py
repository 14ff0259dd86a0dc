"""CPU time and memory of processes, read from /proc (Linux); no dependency.

A JVM's just-in-time compiler threads (``C1 CompilerThre``, ``C2 CompilerThre``) are counted apart, as a
process of their own named ``<name> JIT``: a freshly started broker spends its first minutes compiling its
hot paths (~20 s of CPU over the first ~1.5 min of a bench run), a cost a long-running broker has paid long
ago. ``steady_cpu`` sums what is left; every table shows both."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


JIT_SUFFIX = " JIT"
_JIT_THREADS = ("C1 CompilerThre", "C2 CompilerThre")


@dataclass(frozen=True)
class CpuSample:
    seconds: float  # user + system CPU of the process, all its threads but JIT compiler threads
    rss_mb: float
    jit_seconds: float = 0.0  # of its JIT compiler threads (a JVM's), not in ``seconds``


def _ticks(stat: str) -> int:
    # the command name (field 2) may contain spaces: split after its closing parenthesis
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _jit_ticks(pid: int) -> int:
    """CPU ticks of the process's JIT compiler threads (0 for a process that has none)."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0
    for task in tasks:
        try:
            if (task / "comm").read_text().strip() in _JIT_THREADS:
                total += _ticks((task / "stat").read_text())
        except OSError:  # the thread ended meanwhile
            continue
    return total


def sample(pid: int) -> CpuSample | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    ticks = _ticks(stat)
    jit = _jit_ticks(pid)
    rss_kb = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    return CpuSample((ticks - jit) / TICKS, rss_kb / 1024, jit / TICKS)


def snapshot(pids: dict[str, int]) -> dict[str, CpuSample]:
    out = {}
    for name, pid in pids.items():
        s = sample(pid)
        if s is not None:
            out[name] = s
    return out


def cpu_delta(before: dict[str, CpuSample], after: dict[str, CpuSample]) -> dict[str, float]:
    """CPU seconds each process used between two snapshots; a JVM's JIT compiler threads as ``<name> JIT``."""
    out = {}
    for n in after:
        if n in before:
            out[n] = after[n].seconds - before[n].seconds
            jit = after[n].jit_seconds - before[n].jit_seconds
            if after[n].jit_seconds or before[n].jit_seconds:
                out[n + JIT_SUFFIX] = jit
    return out


def steady_cpu(cpu_s: dict[str, float]) -> float:
    """The CPU seconds of ``cpu_delta``'s processes without JIT compilation (see the module docstring)."""
    return sum(v for k, v in cpu_s.items() if not k.endswith(JIT_SUFFIX))
