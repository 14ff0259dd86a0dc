"""bench/bench_webhook_path.py measures what it says: every layer makes real, successful POSTs."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestServer

from bench.bench_webhook_path import LAYERS, measure


async def test_every_layer_posts_each_attempt_once() -> None:
    hits: list[str] = []

    async def ok(request: web.Request) -> web.Response:
        hits.append(request.headers["webhook-id"])
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", ok)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("/hook"))
    try:
        for layer in LAYERS:
            hits.clear()
            cpu_ms, rate = await measure(url, layer, attempts=30, lanes=4)
            assert cpu_ms > 0 and rate > 0
            assert len(hits) == len(set(hits)) == 200 + 30  # the warm-up and the measured ones, each once
    finally:
        await server.close()
