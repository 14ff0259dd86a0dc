"""Which asyncio event loop the long-running processes (worker, connector) run on.

uvloop (libuv) runs the same asyncio programs with cheaper callbacks, futures and socket readiness than the
standard selector loop; the worker spends a quarter of its CPU in the loop's own frames (docs/BENCHMARKS.md).
``event_loop: asyncio`` in the config keeps the standard loop (for debugging, or where uvloop is missing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")
EventLoopChoice = Literal["uvloop", "asyncio"]


def install(choice: EventLoopChoice) -> None:
    """Make every loop created from now on in this process of the chosen kind (Faust creates its own)."""
    if choice == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())


def run(main: Coroutine[Any, Any, T], choice: EventLoopChoice) -> T:
    install(choice)
    return asyncio.run(main)
