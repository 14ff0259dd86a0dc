"""``python -m devkit.registry --bootstrap HOST:PORT [--port N]``: run the embedded registry standalone.

Credentials for basic auth come from --username/--password or SMSFLOW_REGISTRY_USERNAME /
SMSFLOW_REGISTRY_PASSWORD; with neither, the registry is open (it listens on loopback by default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal

from devkit.registry.server import EmbeddedRegistry
from devkit.registry.store import DEFAULT_COMPATIBILITY, SCHEMAS_TOPIC


async def _serve(args: argparse.Namespace) -> None:
    registry = EmbeddedRegistry(
        username=args.username or None,
        password=args.password or None,
        topic=args.topic,
        default_compatibility=args.default_compatibility,
    )
    url = await registry.start(args.bootstrap, args.host, args.port)
    auth = "basic auth" if args.username else "no auth"
    print(f"schema registry listening on {url} ({auth}; store {args.topic} @ {args.bootstrap})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await registry.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devkit.registry", description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), required=False)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--topic", default=SCHEMAS_TOPIC)
    parser.add_argument("--default-compatibility", default=DEFAULT_COMPATIBILITY)
    parser.add_argument("--username", default=os.environ.get("SMSFLOW_REGISTRY_USERNAME"))
    parser.add_argument("--password", default=os.environ.get("SMSFLOW_REGISTRY_PASSWORD"))
    args = parser.parse_args(argv)
    if not args.bootstrap:
        parser.error("--bootstrap is required (or set KAFKA_BOOTSTRAP_SERVERS)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
