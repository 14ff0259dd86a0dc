"""CPU per webhook attempt, layer by layer: where the webhook path's share of an SMS goes (ADR 0007, step 6).

    .venv/bin/python -m bench.bench_webhook_path [--attempts 3000] [--repeat 3] [--lanes 16]

One process makes first attempts to one subscription, ``--lanes`` at a time, against a loopback endpoint that
answers 204 at once and runs in a CHILD process (its CPU is not counted). Each layer adds what the deliver
stage does around the one before it:

- ``sender``: ``WebhookSender.deliver`` (Standard Webhooks signature, the endpoint's gate, the aiohttp POST);
- ``engine``: ``DeliveryEngine.attempt`` (the above, the retry policy's decision, the attempt's events);
- ``effects``: + ``attempt_effects`` and ``event_record`` for each event (what is produced to
  sms.delivery.v1, before Avro);
- ``span``: + the CLIENT span of the POST with ``traceparent`` put in the request, as the worker does
  (tracing set up as a worker with no exporter: context-only spans).

Prints the process's CPU ms per attempt (``time.process_time``, the event loop's and aiohttp's included)
and attempts/s, per repeat; uvloop, as the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.bench_delivery import _message

LAYERS = ("sender", "engine", "effects", "span")


def _serve(port: Any) -> None:
    from bench.bench_delivery import _endpoint
    from smsflow import event_loop

    async def main() -> None:
        _runner, url = await _endpoint()
        port.put(url)
        await asyncio.Event().wait()

    event_loop.install("uvloop")
    asyncio.run(main())


async def measure(url: str, layer: str, attempts: int, lanes: int) -> tuple[float, float]:
    """(CPU ms per attempt, attempts per second) of one layer."""
    from opentelemetry import trace

    from smsflow.delivery.effects import attempt_effects
    from smsflow.delivery.engine import DeliveryEngine
    from smsflow.delivery.policy import RetryPolicy, RetrySchedule
    from smsflow.delivery.records import event_record
    from smsflow.delivery.sender import SenderConfig, WebhookSender
    from smsflow.subscriptions.model import Subscription, utcnow
    from smsflow.subscriptions.store import InMemorySubscriptionStore
    from smsflow.telemetry import http_headers_from_context, tracer

    sub = Subscription.model_validate({"owner": "bench", "url": url, "max_in_flight": 64})
    sender = WebhookSender(SenderConfig(address_policy=None))
    policy = RetryPolicy(RetrySchedule(delays_s=(1.0,), jitter=0.0, max_age_s=3600, deferred_delay_s=1.0))
    engine = DeliveryEngine(sender, store=InMemorySubscriptionStore(), policy=policy)
    spans = tracer("smsflow.bench.webhook_path")

    async def by_sender(m: dict[str, Any]) -> None:
        result = await sender.deliver(sub, [m], 1)
        assert result.ok, result.error

    async def by_engine(m: dict[str, Any]) -> None:
        outcome = await engine.attempt(sub, [m], 1, utcnow(), None)
        assert outcome.result is not None and outcome.result.ok

    async def with_effects(m: dict[str, Any], headers: Any = None) -> None:
        first = utcnow()
        outcome = await engine.attempt(sub, [m], 1, first, headers)
        effects = attempt_effects(sub, [m], 1, first, outcome)
        for ev in effects.events:
            event_record(ev)

    async def with_span(m: dict[str, Any]) -> None:
        attrs = {"smsflow.message_id": m["message_id"], "smsflow.subscription": sub.id, "smsflow.attempt": 1}
        with spans.start_as_current_span("webhook POST", kind=trace.SpanKind.CLIENT, attributes=attrs):
            await with_effects(m, http_headers_from_context())

    one: Callable[[dict[str, Any]], Awaitable[None]] = {
        "sender": by_sender,
        "engine": by_engine,
        "effects": with_effects,
        "span": with_span,
    }[layer]
    try:
        warm = (one(_message(attempts + i)) for i in range(200))  # the pool and the code paths, other ids
        await asyncio.gather(*warm)
        todo = iter(range(attempts))

        async def lane() -> None:
            for i in todo:
                await one(_message(i))

        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(lanes)))
        c1, t1 = time.process_time(), time.perf_counter()
    finally:
        await sender.close()
    return (c1 - c0) / attempts * 1000, attempts / (t1 - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--attempts", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lanes", type=int, default=16, help="attempts in flight (the prototype's 16)")
    ap.add_argument("--layers", default=",".join(LAYERS))
    args = ap.parse_args()

    from smsflow import event_loop
    from smsflow.config import TracingConfig
    from smsflow.telemetry import setup_tracing

    ctx = multiprocessing.get_context("spawn")
    port = ctx.Queue()
    endpoint = ctx.Process(target=_serve, args=(port,), daemon=True)
    endpoint.start()
    url = port.get(timeout=60)
    event_loop.install("uvloop")
    setup_tracing(TracingConfig(), "worker")
    print(f"{'layer':>8}  CPU ms per attempt (each repeat)   attempts/s")
    try:
        for layer in args.layers.split(","):
            runs = [asyncio.run(measure(url, layer, args.attempts, args.lanes)) for _ in range(args.repeat)]
            cpu = " / ".join(f"{c:.3f}" for c, _ in sorted(runs))
            rate = " / ".join(f"{r:.0f}" for _, r in runs)
            print(f"{layer:>8}  {cpu:<32}  {rate}", flush=True)
    finally:
        endpoint.terminate()


if __name__ == "__main__":
    main()
