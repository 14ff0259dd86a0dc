"""The double list's decisions, read into the delivery worker: which list each subscription uses now.

``sms.routes.decisions.v1`` is compacted with key = scope, and every decision carries the scope's whole
current state (active list, and the evidence: each route's latest health), so the latest record of a key is
all delivery needs. :class:`ActiveLists` reads the topic whole before the first delivery and then follows it,
as the subscriptions and the attempts ledger are read (``smsflow.compacted``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Message

from smsflow.compacted import CompactedFollower
from smsflow.delivery.failover import ActiveList, subscription_scope
from smsflow.routing.model import ScopeKind
from smsflow.schemas import ROUTE_DECISIONS_TOPIC

log = logging.getLogger(__name__)

_SUBSCRIPTION_PREFIX = f"{ScopeKind.SUBSCRIPTION.value}:"


class ActiveLists:
    """The active list of every subscription scope; scopes without a decision are on their primary list."""

    def __init__(self, route_urls: Mapping[str, str] | None = None) -> None:
        self._lists: dict[str, ActiveList] = {}
        # the config's webhook routes (id -> URL): a policy written in the config names endpoints so
        self._route_urls = dict(route_urls or {})

    def of(self, subscription_id: str) -> ActiveList | None:
        return self._lists.get(subscription_scope(subscription_id))

    def apply(self, scope: str, record: dict[str, Any] | None) -> None:
        """One decision (None: a tombstone, the scope's policy is gone)."""
        if not scope.startswith(_SUBSCRIPTION_PREFIX):
            return  # carrier scopes: the number lookup and the probes follow those, not delivery
        if record is None:
            self._lists.pop(scope, None)
        else:
            self._lists[scope] = ActiveList.from_decision(record, self._route_urls)

    def __len__(self) -> int:
        return len(self._lists)


class FollowedActiveLists(ActiveLists):
    """:class:`ActiveLists` kept up to date from the decisions topic."""

    def __init__(
        self,
        bootstrap: str,
        decode: Callable[[bytes], dict[str, Any]],
        route_urls: Mapping[str, str] | None = None,
        topic: str = ROUTE_DECISIONS_TOPIC,
    ) -> None:
        super().__init__(route_urls)
        self._decode = decode
        self._follower = CompactedFollower(bootstrap, (topic,), self._on_record, "route-decisions")

    async def start(self, timeout: float = 60.0) -> None:
        await self._follower.start(timeout)

    async def stop(self) -> None:
        await self._follower.stop()

    def _on_record(self, msg: Message) -> None:
        key = msg.key()
        if key is None:
            return
        value = msg.value()
        self.apply(key.decode("utf-8"), None if value is None else self._decode(value))
