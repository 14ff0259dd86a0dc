"""Webhook delivery throughput and the latency it adds, without Kafka: the sender the delivery agent uses
(one pooled session, per-endpoint gates, Standard Webhooks signing) against local aiohttp endpoints.

    .venv/bin/python -m bench.bench_delivery [--messages 5000] [--endpoints 1 20] [--in-flight 256]

Prints deliveries/s and the per-POST latency (sign + HTTP round trip to a loopback endpoint that answers at
once) for one endpoint and for many. The harness and the endpoints share the machine's cores with the sender.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from aiohttp import web

from smsflow.delivery.sender import SenderConfig, WebhookSender
from smsflow.subscriptions.model import Subscription


async def _endpoint() -> tuple[web.AppRunner, str]:
    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/hook"


def _message(i: int) -> dict[str, object]:
    return {
        "type": "sms.inbound",
        "message_id": f"msg_{i:08d}",
        "from_number": "+8613812345678",
        "to_number": "+85230001000",
        "body": "【京东】您的验证码是 825959。如非本人操作,请忽略本短信。",
        "timestamp": "2026-11-26T03:00:00.000Z",
        "encoding": "unicode",
        "country_code": "CN",
        "otp": "825959",
    }


async def run(messages: int, endpoints: int, in_flight: int, max_in_flight: int) -> dict[str, float]:
    servers = [await _endpoint() for _ in range(endpoints)]
    subs = [Subscription(owner="bench", url=url, max_in_flight=max_in_flight) for _, url in servers]
    latencies: list[float] = []
    gate = asyncio.Semaphore(in_flight)
    async with WebhookSender(SenderConfig(address_policy=None)) as sender:

        async def one(i: int) -> None:
            async with gate:
                t0 = time.perf_counter()
                result = await sender.deliver(subs[i % endpoints], [_message(i)], 1)
                latencies.append((time.perf_counter() - t0) * 1000)
                assert result.ok, result.error

        await asyncio.gather(*(one(i) for i in range(min(200, messages))))  # warm the pools
        latencies.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(messages)))
        elapsed = time.perf_counter() - t0
    for runner, _ in servers:
        await runner.cleanup()
    latencies.sort()
    return {
        "per_s": messages / elapsed,
        "p50": statistics.median(latencies),
        "p99": latencies[int(len(latencies) * 0.99) - 1],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--endpoints", type=int, nargs="+", default=[1, 20])
    ap.add_argument("--in-flight", type=int, default=256, help="deliveries in flight overall")
    ap.add_argument("--max-in-flight", type=int, default=64, help="per endpoint (subscription.max_in_flight)")
    args = ap.parse_args()
    print(f"{'endpoints':>9} {'deliveries/s':>13} {'p50 ms':>8} {'p99 ms':>8}")
    for n in args.endpoints:
        r = asyncio.run(run(args.messages, n, args.in_flight, args.max_in_flight))
        print(f"{n:>9} {r['per_s']:>13.0f} {r['p50']:>8.2f} {r['p99']:>8.2f}")


if __name__ == "__main__":
    main()
