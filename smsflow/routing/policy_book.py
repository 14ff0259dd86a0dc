"""The API's routing policies as every process reads them: ``sms.routes.policies.v1`` read whole, then
followed (``CompactedFollower``), so a change made through any API instance reaches every worker's routes
stage within a poll interval, without a restart. The API writes through ``put`` (broker-acknowledged, then its
own view updated at once: read-your-writes). The records and their rules are in ``policy_changes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from confluent_kafka import Message

from smsflow.compacted import CompactedFollower
from smsflow.routing.model import PolicyError
from smsflow.routing.policy_changes import POLICY_CHANGE, ApiPolicies, PolicyChange
from smsflow.schemas import ROUTE_OVERRIDES_TOPIC, ROUTE_POLICIES_TOPIC

log = logging.getLogger(__name__)

PolicyListener = Callable[[PolicyChange], Awaitable[None]]


class PolicyBook:
    def __init__(self, bootstrap: str, name: str = "route-policies") -> None:
        self.bootstrap = bootstrap
        self.api = ApiPolicies()
        self.listeners: list[PolicyListener] = []
        self._follower = CompactedFollower(bootstrap, [ROUTE_POLICIES_TOPIC], self._on_record, name)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.loaded = asyncio.Event()

    async def start(self, timeout: float = 30.0) -> None:
        self._loop = asyncio.get_running_loop()
        await self._follower.start(timeout)
        self.loaded.set()

    async def stop(self) -> None:
        await self._follower.stop()

    def _on_record(self, msg: Message) -> None:
        value = msg.value()
        if value is None:
            return  # a tombstone (an operator cleaning the topic): the record before it stays in memory
        try:
            change = PolicyChange.from_record(orjson.loads(value))
        except (PolicyError, ValueError) as exc:
            log.error("%s@%s: not a policy change, skipped: %s", msg.topic(), msg.offset(), exc)
            return
        if self.api.apply(change) and self._loop is not None and self._follower.loaded:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                asyncio.run_coroutine_threadsafe(self._notify(change), self._loop)

    async def _notify(self, change: PolicyChange) -> None:
        for listener in list(self.listeners):
            try:
                await listener(change)
            except Exception:  # one broken listener must not stop the others
                log.exception("policy change listener failed for %s", change.scope)

    async def put(self, change: PolicyChange, write: Callable[[PolicyChange], Awaitable[None]]) -> None:
        """Write ``change`` (``policy_writer``: acknowledged by the broker), then see it at once."""
        await write(change)
        if self.api.apply(change):
            await self._notify(change)


def policy_writer(producer: Any) -> Callable[[PolicyChange], Awaitable[None]]:
    """Write a change to sms.routes.policies.v1 (the state every process reads), then its copy to
    sms.routes.overrides.v1, which the decide agent reads in order with pins and turns into the audited
    decision (an agent does not read the compacted topic itself: its offset gaps would hold the commit)."""

    async def write(change: PolicyChange) -> None:
        key = change.scope.encode()
        record = change.to_record()
        await producer.send(ROUTE_POLICIES_TOPIC, orjson.dumps(record), key=key)
        await producer.send(ROUTE_OVERRIDES_TOPIC, orjson.dumps({POLICY_CHANGE: record}), key=key)

    return write
