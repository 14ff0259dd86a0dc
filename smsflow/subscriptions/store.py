"""Where subscriptions and owners' holdings live. The API writes through :class:`SubscriptionStore`; delivery
reads from it.

The production implementation is backed by the compacted topics ``sms.subscriptions.v1`` and
``sms.holdings.v1`` (record formats in ``model.py`` and ``holdings.py``); :class:`InMemorySubscriptionStore`
serves tests and the demo. Listeners hear every subscription change — including, in a topic-backed store,
changes made by other processes — as ``(id, subscription or None)``.
"""

from __future__ import annotations

import abc
import builtins
import logging
import threading
from collections.abc import Awaitable, Callable

from smsflow.subscriptions.holdings import Holding
from smsflow.subscriptions.index import HoldersIndex, MatchIndex, OwnerGroups, store_order
from smsflow.subscriptions.model import Subscription

log = logging.getLogger(__name__)

ChangeListener = Callable[[str, Subscription | None], Awaitable[None]]


class SubscriptionStore(abc.ABC):
    def __init__(self) -> None:
        self._listeners: list[ChangeListener] = []
        # Every subscription by id, and by owner then id. Changed only through ``_set_subscription`` (on any
        # thread: a topic-backed store applies records on its follower's), under ``_lock``.
        self._subs: dict[str, Subscription] = {}
        self._by_owner: dict[str, dict[str, Subscription]] = {}
        self._lock = threading.Lock()
        # bumped by every change of a subscription, or of a holding (``_changed``): the match index's parts
        self._subs_version = 0
        self._holdings_version = 0
        # owners whose subscriptions changed since the index was built (None: build it from all of them)
        self._dirty_owners: set[str] | None = None
        self._index: tuple[int, int, MatchIndex] | None = None

    def _set_subscription(self, sub_id: str, sub: Subscription | None) -> Subscription | None:
        """Store ``sub`` under ``sub_id`` (None: remove it), on any thread; returns what was there before."""
        with self._lock:
            before = self._subs.pop(sub_id, None) if sub is None else self._subs.get(sub_id)
            if sub is not None:
                self._subs[sub_id] = sub
            owners = set()
            if before is not None:
                owned = self._by_owner.get(before.owner)
                if owned is not None:
                    owned.pop(sub_id, None)
                    if not owned:
                        del self._by_owner[before.owner]
                owners.add(before.owner)
            if sub is not None:
                self._by_owner.setdefault(sub.owner, {})[sub_id] = sub
                owners.add(sub.owner)
            self._subs_version += 1
            if self._dirty_owners is not None:
                self._dirty_owners |= owners
        return before

    def _owned(self, owner: str) -> builtins.list[Subscription]:
        """``owner``'s subscriptions, in no particular order."""
        with self._lock:
            return list(self._by_owner.get(owner, {}).values())

    def _changed(self, *, holding: bool = False) -> None:
        """Implementations call this after every change of a holding (``holding``; a subscription's change
        is counted by ``_set_subscription``), on any thread."""
        with self._lock:
            if holding:
                self._holdings_version += 1
            else:
                self._subs_version += 1
                self._dirty_owners = None

    @abc.abstractmethod
    def _holdings_now(self) -> builtins.list[Holding]:
        """Every holding now, as a list of its own."""

    def match_index(self) -> MatchIndex:
        """Who receives a message (index.py): read for every inbound message, so each part is rebuilt only
        after a change of its own side (the holdings' part can be large: a million held numbers), and of the
        subscriptions' part only the groups of the owners whose subscriptions changed. A change made while
        it is built (a topic-backed store applies records on another thread) bumps a version again, so the
        next read rebuilds it. Read it on one thread (the deliver stage's event loop): two threads building
        it at once could keep the older build."""
        subs_v, holdings_v, cached = self._subs_version, self._holdings_version, self._index
        if cached is not None and cached[0] == subs_v and cached[1] == holdings_v:
            return cached[2]
        groups = cached[2].groups if cached is not None else None
        with self._lock:
            subs_v = self._subs_version
            dirty, self._dirty_owners = self._dirty_owners, set()
            if cached is None or cached[0] != subs_v:
                if groups is None or dirty is None:
                    groups = OwnerGroups(list(self._subs.values()))
                else:
                    groups = groups.with_owners(
                        {owner: list(self._by_owner.get(owner, {}).values()) for owner in dirty}
                    )
        holders = (
            cached[2].holders
            if cached is not None and cached[1] == holdings_v
            else HoldersIndex(self._holdings_now())
        )
        assert groups is not None
        index = MatchIndex(groups, holders)
        self._index = (subs_v, holdings_v, index)
        return index

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

    @abc.abstractmethod
    def holding_of(self, owner: str) -> Holding | None:
        """The owner's current holding (synchronous: read for every inbound message, and by scan threads)."""

    @abc.abstractmethod
    async def holdings(self) -> builtins.list[Holding]:
        """Every owner's holding, by owner."""

    @abc.abstractmethod
    async def put_holding(self, holding: Holding) -> None:
        """Create or replace an owner's holding; in effect for matching once this returns."""

    @abc.abstractmethod
    async def delete_holding(self, owner: str) -> bool:
        """True if the owner held anything."""

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
    def __init__(self, subs: list[Subscription] | None = None, holdings: list[Holding] | None = None) -> None:
        super().__init__()
        for sub in subs or []:
            self._set_subscription(sub.id, sub)
        self._holdings: dict[str, Holding] = {h.owner: h for h in holdings or []}

    def _holdings_now(self) -> builtins.list[Holding]:
        return list(self._holdings.values())

    async def get(self, subscription_id: str) -> Subscription | None:
        return self._subs.get(subscription_id)

    async def list(self, owner: str | None = None) -> list[Subscription]:
        subs = list(self._subs.values()) if owner is None else self._owned(owner)
        return sorted(subs, key=store_order)

    async def put(self, sub: Subscription) -> None:
        self._set_subscription(sub.id, sub)
        await self._notify(sub.id, sub)

    async def delete(self, subscription_id: str) -> bool:
        existed = self._set_subscription(subscription_id, None) is not None
        if existed:
            await self._notify(subscription_id, None)
        return existed

    def holding_of(self, owner: str) -> Holding | None:
        return self._holdings.get(owner)

    async def holdings(self) -> builtins.list[Holding]:
        return [self._holdings[o] for o in sorted(self._holdings)]

    async def put_holding(self, holding: Holding) -> None:
        self._holdings[holding.owner] = holding
        self._changed(holding=True)

    async def delete_holding(self, owner: str) -> bool:
        existed = self._holdings.pop(owner, None) is not None
        self._changed(holding=True)
        return existed
