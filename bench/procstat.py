"""CPU time and memory of processes, read from /proc (Linux); no dependency."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSample:
    seconds: float  # user + system CPU of the process, all its threads
    rss_mb: float


def sample(pid: int) -> CpuSample | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces: split after its closing parenthesis
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    rss_kb = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    return CpuSample((utime + stime) / TICKS, rss_kb / 1024)


def snapshot(pids: dict[str, int]) -> dict[str, CpuSample]:
    out = {}
    for name, pid in pids.items():
        s = sample(pid)
        if s is not None:
            out[name] = s
    return out


def cpu_delta(before: dict[str, CpuSample], after: dict[str, CpuSample]) -> dict[str, float]:
    """CPU seconds each process used between two snapshots."""
    return {n: after[n].seconds - before[n].seconds for n in after if n in before}
