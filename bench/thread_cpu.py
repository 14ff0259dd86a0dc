"""CPU per thread of smsflow's processes over a time window, from /proc (Linux): which threads pay per SMS.

Run it beside a bench, then give it the window of one scenario (the bench prints each scenario's start):

    .venv/bin/python -m bench.thread_cpu record /tmp/threads.jsonl --seconds 200 &
    flock /tmp/smsflow-broker.lock .venv/bin/python -m bench.e2e --systems smsflow --repeat 1 --rates 50 \\
        --duration 10 --count 12000
    .venv/bin/python -m bench.thread_cpu report /tmp/threads.jsonl --from 22:59:14 --to 22:59:31 --sms 12000

``record`` snapshots every thread of each ``python -m smsflow connector|ingest|worker`` once a second.
``report`` prints, per role, the CPU of its main thread (where the event loop, and all Python work but the
poll threads', runs), of librdkafka's threads (``rdk:*``) and of its other threads, in µs per SMS over the
window (times are UTC, as the bench prints them). /proc counts in clock ticks (10 ms): use windows of many
seconds."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

from bench.procstat import TICKS, _ticks

ROLES = ("connector", "ingest", "worker")


def _role(pid: str) -> str | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    words = [a.decode(errors="replace") for a in argv]
    if "smsflow" not in words:
        return None
    at = words.index("smsflow")
    return words[at + 1] if at + 1 < len(words) and words[at + 1] in ROLES else None


def snapshot() -> dict[str, int]:
    """``role/pid/thread kind/tid`` -> CPU ticks so far, for every thread of smsflow's role processes."""
    out: dict[str, int] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or (role := _role(pid)) is None:
            continue
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
                ticks = _ticks(Path(f"/proc/{pid}/task/{tid}/stat").read_text())
            except OSError:  # the thread ended meanwhile
                continue
            kind = "main" if tid == pid else ("librdkafka" if comm.startswith("rdk:") else "other")
            out[f"{role}/{pid}/{kind}/{tid}"] = ticks
    return out


def record(path: Path, seconds: float) -> None:
    end = time.time() + seconds
    with path.open("w") as f:
        while time.time() < end:
            f.write(json.dumps([time.time(), snapshot()]) + "\n")
            f.flush()
            time.sleep(1)


def report(path: Path, start: str, stop: str, sms: int) -> dict[tuple[str, str], float]:
    """µs of CPU per SMS by (role, thread kind) between the snapshots at ``start`` and ``stop`` (HH:MM:SS)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    inside = [snap for t, snap in rows if start <= time.strftime("%H:%M:%S", time.gmtime(t)) <= stop]
    if len(inside) < 2:
        raise SystemExit(f"fewer than two snapshots between {start} and {stop}")
    first, last = inside[0], inside[-1]
    out: Counter[tuple[str, str]] = Counter()
    for key, ticks in last.items():
        role, _pid, kind, _tid = key.split("/")
        out[(role, kind)] += ticks - first.get(key, 0)
    return {k: v / TICKS * 1e6 / sms for k, v in sorted(out.items())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="snapshot every second into a JSON-lines file")
    rec.add_argument("path", type=Path)
    rec.add_argument("--seconds", type=float, default=300)
    rep = sub.add_parser("report", help="µs of CPU per SMS by role and thread kind over a window")
    rep.add_argument("path", type=Path)
    rep.add_argument("--from", dest="start", required=True, help="HH:MM:SS (UTC)")
    rep.add_argument("--to", dest="stop", required=True, help="HH:MM:SS (UTC)")
    rep.add_argument("--sms", type=int, required=True, help="SMS delivered in the window")
    args = ap.parse_args(argv)
    if args.command == "record":
        record(args.path, args.seconds)
        return 0
    print("| role | thread | µs CPU per SMS |\n|---|---|---:|")
    for (role, kind), us in report(args.path, args.start, args.stop, args.sms).items():
        print(f"| {role} | {kind} | {us:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
