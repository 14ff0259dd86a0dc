"""Stand-alone simulator and receiver processes (``smsflow simulator`` / ``smsflow receiver``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from devkit.demo.receiver import WebhookReceiver
from devkit.simulator.control import SimulatorControl
from devkit.simulator.smsc import SimulatedSmsc
from devkit.simulator.submits import MessageIdFormat
from devkit.simulator.traffic import TrafficMix


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
    test_numbers: tuple[str, ...] = (),
    probe_latency_s: float = 1.0,
    receipts: bool = False,
    message_id_format: MessageIdFormat = "hex",
    control_port: int | None = None,
) -> None:
    smsc = SimulatedSmsc(
        {system_id: password},
        port=port,
        dup_ratio=duplicates,
        test_numbers=test_numbers,
        probe_latency_s=probe_latency_s,
        receipts=receipts,
        message_id_format=message_id_format,
    )
    await smsc.start()
    print(f"simulated SMSC listening on 127.0.0.1:{smsc.port} (system_id {system_id})", flush=True)
    control = SimulatorControl(smsc, port=control_port) if control_port is not None else None
    if control is not None:
        print(f"simulator control on {await control.start()}", flush=True)
    stop = _stop_event()
    bound = asyncio.create_task(smsc.wait_bound(timeout=3600))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({bound, stopped}, return_when=asyncio.FIRST_COMPLETED)
    bound.cancel()
    stopped.cancel()
    n = 0
    if rate > 0:
        n = await feed(smsc, TrafficMix(seed, multipart), rate, count, stop)
    if count:  # a bounded run ends when its traffic is through
        await smsc.drain(30)
    else:  # no traffic of its own (rate 0): serve submits, probes and faults until stopped
        await stop.wait()
    print(
        f"offered {n} SMS; acknowledged {smsc.stats.logical_accepted}; PDUs sent {smsc.stats.sent}",
        flush=True,
    )
    if control is not None:
        await control.stop()
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
