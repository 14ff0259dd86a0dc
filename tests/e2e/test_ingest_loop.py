"""ADR 0007 step 2: the direct ingest loop (``smsflow ingest``) takes over from the Faust ingest agent of a
running pipeline, and survives kill -9.

One run, as a deployment would switch: the Faust worker with every stage handles the first traffic; it is
stopped mid-traffic and replaced by a worker without the ingest stage plus two ingest-loop processes
(their own consumer group, seeded from where the Faust group committed; the tables read back from the
changelog the Faust worker wrote); then the loops are killed with SIGKILL in turn and restarted. Paced
mixed traffic with multipart SMS and carrier retransmissions throughout. Asserted, as a receiver sees it:
every SMS delivered, none under two webhook-ids, none incomplete, every signature good; the loops restored
the Faust-written tables and never started a partition before where the Faust group stopped.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from devkit.demo.pipeline import RoleProcess
from devkit.local.jvm import free_port
from devkit.simulator.traffic import TrafficMix
from smsflow.roles import stage_args_beside_ingest_loop
from tests.e2e.test_crash_consistency import RATE, _feed, _wait_ready

pytestmark = pytest.mark.e2e

KILLS = 2
AFTER_RESTART_DELIVERED = 40


def _config(p: Any, name: str, metrics: dict[str, Any]) -> Path:
    cfg = yaml.safe_load(p.config_path.read_text(encoding="utf-8"))
    cfg["data_dir"] = str(p.workdir / f"data-{name}")
    cfg["metrics"] = {"host": "127.0.0.1", **metrics}
    # static membership as in production; a short session, so a switch waits little for a stopped member
    cfg.setdefault("worker", {}).update({"instance_id": name, "session_timeout_s": 6})
    path = p.workdir / f"config-{name}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def eval_starts(text: str) -> dict[int, int | None]:
    """``{0: 12, 1: None}`` as the loop logs its start offsets."""
    out: dict[int, int | None] = {}
    for part, offset in re.findall(r"(\d+): (None|-?\d+)", text):
        out[int(part)] = None if offset == "None" else int(offset)
    return out


def _committed(bootstrap: str, group: str) -> dict[int, int]:
    """The Faust worker group's committed offsets of sms.raw.v1 (frozen once it stopped)."""
    from confluent_kafka import Consumer, TopicPartition

    from smsflow.schemas import RAW_TOPIC
    from smsflow.topics import partition_count

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(RAW_TOPIC, i) for i in range(partition_count(bootstrap, RAW_TOPIC))]
        return {tp.partition: tp.offset for tp in c.committed(tps, timeout=30) if tp.offset >= 0}
    finally:
        c.close()


def _start(p: Any, key: str, args: list[str]) -> None:
    proc = RoleProcess(
        key.split("-")[0], args, p.env, p.workdir / "logs" / f"{key}-{len(p.procs)}-{time.monotonic_ns()}.log"
    )
    proc.start()
    p.procs[key] = proc


async def _refused(p: Any, args: list[str], reason: str) -> None:
    """The process exits at once with EXIT_CANNOT_PROCESS (3) and says why."""
    log = p.workdir / "logs" / f"refused-{time.monotonic_ns()}.log"
    proc = RoleProcess(args[0], args, p.env, log)
    proc.start()
    assert proc.proc is not None
    code = await asyncio.to_thread(proc.proc.wait, 60)
    text = log.read_text(errors="replace")
    assert code == 3 and reason in text, (code, text[-2000:])


async def test_ingest_loop_takes_over_from_faust_and_survives_kill_9(pipeline: Any) -> None:
    p = await pipeline(
        carriers=2,
        sessions=2,
        dup_ratio=0.06,  # retransmissions of single PDUs, including single parts of multipart SMS
        window=32,
        pipeline_cfg={"reassembly_timeout_s": 60},
    )
    faust_port = free_port()
    faust_cfg = _config(p, "worker-a", {"worker_port": faust_port})
    _start(p, "worker-faust", ["worker", "--config", str(faust_cfg), "--loglevel", "info"])
    p.start("connector")
    await p.smsc.wait_bound(60)
    await _wait_ready(faust_port, 90)
    mix = TrafficMix(seed=202, multipart_ratio=0.4)
    sent: list[float] = []
    feeder = asyncio.create_task(_feed(p, mix, RATE * 60, sent))
    # the two kinds of ingest never run at once: a loop started beside the Faust ingest stage refuses (after
    # waiting a session timeout for the member to go)
    refusal = asyncio.create_task(
        _refused(p, ["ingest", "--config", str(faust_cfg)], "Faust workers with the ingest stage")
    )
    await p.wait_delivered(RATE * 5, 120)
    await refusal

    # the switch: the Faust worker stops (its group commits), a worker without ingest and two loops start
    p.stop("worker-faust")
    before_switch = len(p.receiver.log.messages)
    worker_port = free_port()
    worker_cfg = _config(p, "worker-b", {"worker_port": worker_port})
    stages = stage_args_beside_ingest_loop()
    _start(p, "worker-deliver", ["worker", "--config", str(worker_cfg), "--loglevel", "info", *stages])
    loops = {name: free_port() for name in ("ingest-a", "ingest-b")}
    configs = {name: _config(p, name, {"ingest_port": port}) for name, port in loops.items()}
    for name in loops:
        _start(p, name, ["ingest", "--config", str(configs[name]), "--loglevel", "info"])
    for port in loops.values():
        await _wait_ready(port, 90)
    await _wait_ready(worker_port, 90)
    await p.wait_delivered(before_switch + AFTER_RESTART_DELIVERED, 120)
    # ... and a worker with the ingest stage started beside the loops refuses too
    refusal = asyncio.create_task(
        _refused(p, ["worker", "--config", str(faust_cfg)], "direct ingest loops (smsflow ingest)")
    )

    for k in range(KILLS):
        await asyncio.sleep(3)
        victim = list(loops)[k % len(loops)]
        p.kill(victim)
        await asyncio.sleep(1.0)
        _start(p, victim, ["ingest", "--config", str(configs[victim]), "--loglevel", "info"])
        await _wait_ready(loops[victim], 90)
        assert not feeder.done(), "the traffic ended before this kill: make it longer"
        await p.wait_delivered(len(p.receiver.log.messages) + AFTER_RESTART_DELIVERED, 120)
    await refusal
    await feeder
    expected = await p.drain_and_check_each_sms_once()

    # the loops' own account of the switch: they restored what the Faust worker's tables held, and the first
    # assignment of each partition started at a committed offset (the Faust group's), never at the beginning
    logs = "\n".join(f.read_text(errors="replace") for f in (p.workdir / "logs").glob("ingest-*.log"))
    restored = [int(n) for n in re.findall(r"(\d+) table records restored", logs)]
    assert restored and max(restored) > 0, logs[-4000:]
    starts = [eval_starts(s) for s in re.findall(r"start offsets (\{[^}]*\})", logs)]
    faust = _committed(p.stack.bootstrap, p.env_app_id)
    assert starts and any(s for s in starts), logs[-4000:]
    for s in starts:
        for partition, offset in s.items():
            # never before where the Faust group stopped: nothing it handled was read again
            assert (offset if offset is not None else -1) >= faust.get(partition, -1), (s, faust)
    print(
        f"\ningest loop: {expected} SMS, {before_switch} before the switch, redeliveries under the same "
        f"webhook-id {p.receiver.log.redeliveries}, carrier retransmissions {p.smsc.stats.retransmissions}, "
        f"restored per assignment {restored}"
    )
