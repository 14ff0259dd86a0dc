"""A worker starved of CPU (SIGSTOP / SIGCONT: a VM steal, a long GC-like stall, a debugger) while traffic
keeps arriving: once briefly (its group session survives) and once longer than ``worker.session_timeout_s``
(the group evicts it and it rejoins). Afterwards the same worker process is still up and still working,
every SMS arrived once and intact, and none under two webhook-ids.

Found by the direct-hot-loop benchmark (docs/BENCHMARKS.md): a worker paused while its topics filled exited
with status 1 on SIGCONT, the stalled-partition guard's re-read of the ``ingest-ticks`` partitions racing the
rebalance the pause caused."""

from __future__ import annotations

import asyncio
import collections
import signal

import pytest

from devkit.simulator.traffic import TrafficMix

pytestmark = pytest.mark.e2e
N = 1200
BURST = 2000  # enqueued at once during the long pause: a backlog to fetch in large batches on SIGCONT


async def _feed(p, mix: TrafficMix, count: int, per_s: float) -> None:
    for _ in range(count):
        p.smsc.enqueue(mix.next())
        await asyncio.sleep(1 / per_s)


async def _pause(p, seconds: float, meanwhile=lambda: None) -> None:
    procs = [r.proc for r in p.processes_of("worker")]  # in loop mode the ingest loop is paused with it
    for proc in procs:
        proc.send_signal(signal.SIGSTOP)
    try:
        meanwhile()
        await asyncio.sleep(seconds)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGCONT)


async def test_worker_paused_under_traffic_stays_up_and_loses_nothing(pipeline) -> None:
    p = await pipeline(carriers=2, sessions=1, dup_ratio=0.03, cross_route_ratio=0.03, window=32)
    p.start()
    await p.smsc.wait_bound(60)
    mix = TrafficMix(seed=31, multipart_ratio=0.3)
    feed = asyncio.create_task(_feed(p, mix, N, per_s=40))
    await p.wait_delivered(100, 120)
    await _pause(p, 4)  # shorter than the session timeout (10 s): no rebalance
    await p.wait_delivered(len(p.receiver.log.messages) + 100, 120)
    # longer: the group evicts the worker, which rejoins on SIGCONT and finds a backlog
    await _pause(p, 14, meanwhile=lambda: [p.smsc.enqueue(mix.next()) for _ in range(BURST)])
    await feed
    assert await p.smsc.drain(240), p.logs()
    await p.wait_delivered(N + BURST, 240)
    await asyncio.sleep(3)  # a late extra delivery would show up here
    assert all(r.alive for r in p.processes_of("worker")), f"the worker exited after the pauses\n{p.logs()}"
    msgs = p.receiver.log.messages
    bodies = collections.Counter(m["body"] for m in msgs.values())
    doubled = {b: c for b, c in bodies.items() if c > 1}
    assert not doubled, f"SMS delivered under two webhook-ids: {list(doubled)[:3]}"
    assert sorted(bodies) == sorted(s.text for s in p.smsc.accepted)
    assert len(msgs) == N + BURST
    assert p.receiver.log.bad_signatures == 0
    # still working after the pauses: a new SMS goes through at once
    p.smsc.enqueue(mix.next())
    await p.wait_delivered(N + BURST + 1, 60)
    log = (p.workdir / "logs").glob("worker-*.log")
    text = "\n".join(f.read_text(errors="replace") for f in log)
    assert "Traceback" not in text, text[-6000:]
    print(f"\npaused worker: redeliveries (same webhook-id) {p.receiver.log.redeliveries}")
