"""Where subscriptions live. The API writes through :class:`SubscriptionStore`; delivery reads from it.

The production implementation is backed by the compacted topic ``sms.subscriptions.v1`` (record format in
``model.py``); :class:`InMemorySubscriptionStore` serves tests and the demo. Listeners hear every change —
including, in a topic-backed store, changes made by other processes — as ``(id, subscription or None)``.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Awaitable, Callable

from smsflow.webhooks.model import Subscription

log = logging.getLogger(__name__)

ChangeListener = Callable[[str, Subscription | None], Awaitable[None]]


class SubscriptionStore(abc.ABC):
    def __init__(self) -> None:
        self._listeners: list[ChangeListener] = []

    @abc.abstractmethod
    async def get(self, subscription_id: str) -> Subscription | None: ...

    @abc.abstractmethod
    async def list(self, owner: str | None = None) -> list[Subscription]:
        """All subscriptions, or one owner's, in a stable order (creation time, then id)."""

    @abc.abstractmethod
    async def put(self, sub: Subscription) -> None:
        """Create or replace; implementations call :meth:`_notify` once the change is durable."""

    @abc.abstractmethod
    async def delete(self, subscription_id: str) -> bool:
        """True if it existed."""

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: ChangeListener) -> None:
        self._listeners.remove(listener)

    async def _notify(self, subscription_id: str, sub: Subscription | None) -> None:
        for listener in list(self._listeners):
            try:
                await listener(subscription_id, sub)
            except Exception:
                # One broken listener must not stop the others or fail the write that already happened.
                log.exception("subscription change listener failed for %s", subscription_id)


class InMemorySubscriptionStore(SubscriptionStore):
    def __init__(self, subs: list[Subscription] | None = None) -> None:
        super().__init__()
        self._subs: dict[str, Subscription] = {s.id: s for s in subs or []}

    async def get(self, subscription_id: str) -> Subscription | None:
        return self._subs.get(subscription_id)

    async def list(self, owner: str | None = None) -> list[Subscription]:
        subs = [s for s in self._subs.values() if owner is None or s.owner == owner]
        return sorted(subs, key=lambda s: (s.created_at, s.id))

    async def put(self, sub: Subscription) -> None:
        self._subs[sub.id] = sub
        await self._notify(sub.id, sub)

    async def delete(self, subscription_id: str) -> bool:
        existed = self._subs.pop(subscription_id, None) is not None
        if existed:
            await self._notify(subscription_id, None)
        return existed
