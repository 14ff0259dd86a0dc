"""Stand-alone simulator and receiver processes (``smsflow simulator`` / ``smsflow receiver``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from connectors.simulator.smsc import SimulatedSmsc
from connectors.simulator.traffic import TrafficMix
from smsflow.demo.receiver import WebhookReceiver


async def feed(smsc: SimulatedSmsc, mix: TrafficMix, rate: float, count: int, stop: asyncio.Event) -> int:
    """Offer ``rate`` logical SMS per second until ``count`` (0 = endless) or ``stop``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = 0
    while not stop.is_set() and (count == 0 or n < count):
        due = start + n / rate
        delay = due - loop.time()
        if delay > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            continue
        smsc.enqueue(mix.next())
        n += 1
    return n


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_simulator(
    port: int,
    system_id: str,
    password: str,
    rate: float,
    count: int,
    multipart: float,
    duplicates: float,
    seed: int,
) -> None:
    smsc = SimulatedSmsc({system_id: password}, port=port, dup_ratio=duplicates)
    await smsc.start()
    print(f"simulated SMSC listening on 127.0.0.1:{smsc.port} (system_id {system_id})", flush=True)
    stop = _stop_event()
    await smsc.wait_bound(timeout=3600)
    n = await feed(smsc, TrafficMix(seed, multipart), rate, count, stop)
    await smsc.drain(30)
    print(
        f"offered {n} SMS; acknowledged {smsc.stats.logical_accepted}; PDUs sent {smsc.stats.sent}",
        flush=True,
    )
    await smsc.stop()


async def run_receiver(port: int, secret: str) -> None:
    rx = WebhookReceiver(secret, port=port)
    url = await rx.start()
    print(f"webhook receiver on {url}", flush=True)
    stop = _stop_event()
    seen = 0
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        msgs = list(rx.log.messages.values())
        for m in msgs[seen:]:
            print(
                f"{m['timestamp']} {m['from_number']} -> {m['to_number']} "
                f"otp={m.get('otp')} {m['body'][:60]!r}",
                flush=True,
            )
        seen = len(msgs)
    await rx.stop()
