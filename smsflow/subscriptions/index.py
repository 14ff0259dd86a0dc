"""Which subscriptions receive a message, without looking at every subscription.

The deliver stage asks this for every inbound message. Read plainly — every subscription, sorted, each owner's
holding checked again for each of its subscriptions — it cost ~8 µs per subscription, 15.5 ms per message for
1,000 customers with two subscriptions each (``python -m bench.bench_targets``): a worker then delivered at
most ~65 SMS/s however fast everything else was, and fewer with every customer added. :class:`MatchIndex` is
built once per change of the subscriptions or holdings (both change rarely, by an API call) and answers from
the message's own number: the owners that hold it (its digits, each of its prefixes, its route: as many
look-ups as the number has digits), then only their subscriptions' filters, plus the operators' (who hold
everything). The answer is exactly ``holdings.receives`` over every enabled subscription, in the store's
order (creation time, then id)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from smsflow.subscriptions.holdings import Holding, is_operator_owner
from smsflow.subscriptions.model import Subscription, number_digits, private_of

Owners = str | tuple[str, ...]  # one owner (nearly every held number), or several


class HoldersIndex:
    """Which owners hold a message, from its number and route: built from the holdings only (rebuilt when a
    holding changes, not when a subscription does). Keys are the holdings' own digit strings and values an
    owner's own name where one owner holds the value: a million held numbers take 31 MB beyond the holdings
    and 0.5 s to index, once per change of a holding."""

    def __init__(self, holdings: Iterable[Holding]) -> None:
        self._by_number: dict[str, Owners] = {}
        self._by_prefix: dict[str, Owners] = {}
        self._by_route: dict[str, Owners] = {}
        for holding in holdings:
            owner = holding.owner
            if is_operator_owner(owner):
                continue  # operators receive what their filters match, held or not
            private = private_of(holding)
            for digits in private["_numbers"]:
                _add(self._by_number, digits, owner)
            for digits in private["_prefixes"]:
                _add(self._by_prefix, digits, owner)
            for route in holding.route_ids:
                _add(self._by_route, route, owner)
        self._longest_prefix = max(map(len, self._by_prefix), default=0)

    def holders(self, message: Mapping[str, Any]) -> set[str]:
        """The owners whose holding holds ``message`` (``Holding.holds``), operators aside."""
        owners: set[str] = set()
        route = message.get("route_id")
        if route is not None:
            _union(owners, self._by_route.get(route))
        digits = number_digits(str(message.get("to_number") or ""))
        if digits:
            _union(owners, self._by_number.get(digits))
            by_prefix = self._by_prefix
            for i in range(1, min(len(digits), self._longest_prefix) + 1):
                _union(owners, by_prefix.get(digits[:i]))
        return owners


def store_order(sub: Subscription) -> tuple[Any, str]:
    """The store's order of subscriptions: creation time, then id."""
    return (sub.created_at, sub.id)


class OwnerGroups:
    """The subscriptions grouped by owner, each group in the store's order: built from the subscriptions only
    (not when a holding changes), and after a change of some owners' subscriptions only their groups are
    built again (``with_owners``): one owner changing its subscriptions must not make every worker sort every
    subscription (~100 ms at 100,000 of them) for each change."""

    def __init__(self, subscriptions: Iterable[Subscription] = ()) -> None:
        by_owner: dict[str, list[Subscription]] = {}
        for sub in subscriptions:
            by_owner.setdefault(sub.owner, []).append(sub)
        self.by_owner: dict[str, tuple[Subscription, ...]] = {
            owner: tuple(sorted(subs, key=store_order)) for owner, subs in by_owner.items()
        }
        self.operators: tuple[str, ...] = tuple(owner for owner in self.by_owner if is_operator_owner(owner))

    def with_owners(self, changed: Mapping[str, Iterable[Subscription]]) -> OwnerGroups:
        """These groups with each owner in ``changed`` given its subscriptions now (none: gone); the other
        owners' groups are shared, not rebuilt."""
        out = OwnerGroups()
        by_owner = dict(self.by_owner)
        operators = set(self.operators)
        for owner, subs in changed.items():
            group = tuple(sorted(subs, key=store_order))
            if group:
                by_owner[owner] = group
                if is_operator_owner(owner):
                    operators.add(owner)
            else:
                by_owner.pop(owner, None)
                operators.discard(owner)
        out.by_owner = by_owner
        out.operators = tuple(operators)
        return out


class MatchIndex:
    """The subscriptions that receive a message: the holders' groups and the operators'."""

    def __init__(self, groups: OwnerGroups, holders: HoldersIndex) -> None:
        self.groups = groups
        self.holders = holders

    @classmethod
    def of(cls, subscriptions: Iterable[Subscription], holdings: Iterable[Holding]) -> MatchIndex:
        return cls(OwnerGroups(subscriptions), HoldersIndex(holdings))

    def targets(self, message: Mapping[str, Any]) -> list[Subscription]:
        """The enabled subscriptions that receive ``message``: filter AND holding (``holdings.receives``)."""
        groups = self.groups
        by_owner = groups.by_owner
        out = [
            sub
            for owner in (*groups.operators, *self.holders.holders(message))
            for sub in by_owner.get(owner, ())
            if sub.enabled and sub.matches(message)
        ]
        if len(out) > 1:
            out.sort(key=store_order)
        return out


def _add(index: dict[str, Owners], key: str, owner: str) -> None:
    have = index.get(key)
    if have is None:
        index[key] = owner
    elif isinstance(have, str):
        if have != owner:
            index[key] = (have, owner)
    elif owner not in have:
        index[key] = (*have, owner)


def _union(owners: set[str], found: Owners | None) -> None:
    if found is None:
        return
    if isinstance(found, str):
        owners.add(found)
    else:
        owners.update(found)
