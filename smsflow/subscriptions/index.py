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
from smsflow.subscriptions.model import Subscription, number_digits


class MatchIndex:
    def __init__(self, subscriptions: Iterable[Subscription], holdings: Iterable[Holding]) -> None:
        ordered = sorted(subscriptions, key=lambda s: (s.created_at, s.id))
        self._rank = {s.id: i for i, s in enumerate(ordered)}
        by_owner: dict[str, list[Subscription]] = {}
        for sub in ordered:
            by_owner.setdefault(sub.owner, []).append(sub)
        self._by_owner = {owner: tuple(subs) for owner, subs in by_owner.items()}
        self._operators = tuple(owner for owner in self._by_owner if is_operator_owner(owner))
        self._by_number: dict[str, set[str]] = {}
        self._by_prefix: dict[str, set[str]] = {}
        self._by_route: dict[str, set[str]] = {}
        for holding in holdings:
            owner = holding.owner
            if is_operator_owner(owner) or owner not in self._by_owner:
                continue  # operators receive what their filters match; owners without subscriptions nothing
            for n in holding.numbers:
                self._by_number.setdefault(number_digits(n), set()).add(owner)
            for p in holding.prefixes:
                self._by_prefix.setdefault(number_digits(p), set()).add(owner)
            for r in holding.route_ids:
                self._by_route.setdefault(r, set()).add(owner)
        self._longest_prefix = max(map(len, self._by_prefix), default=0)

    def holders(self, message: Mapping[str, Any]) -> set[str]:
        """The owners (with subscriptions) whose holding holds ``message`` (``Holding.holds``)."""
        owners: set[str] = set()
        route = message.get("route_id")
        if route is not None and (by_route := self._by_route.get(route)):
            owners |= by_route
        digits = number_digits(str(message.get("to_number") or ""))
        if digits:
            if by_number := self._by_number.get(digits):
                owners |= by_number
            for i in range(1, min(len(digits), self._longest_prefix) + 1):
                if by_prefix := self._by_prefix.get(digits[:i]):
                    owners |= by_prefix
        return owners

    def targets(self, message: Mapping[str, Any]) -> list[Subscription]:
        """The enabled subscriptions that receive ``message``: filter AND holding (``holdings.receives``)."""
        out = [
            sub
            for owner in (*self._operators, *self.holders(message))
            for sub in self._by_owner.get(owner, ())
            if sub.enabled and sub.matches(message)
        ]
        if len(out) > 1:
            out.sort(key=lambda s: self._rank[s.id])
        return out
