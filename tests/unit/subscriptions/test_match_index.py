"""Who receives a message, from an index instead of every subscription (smsflow/subscriptions/index.py).

``KafkaDelivery.targets`` read every subscription, sorted, for every inbound message, and checked each one's
owner holding again: 15.5 ms per message for 1,000 customers with two subscriptions each (a worker then kept
up with at most ~65 SMS/s). The index answers from the message's number; these tests hold it to exactly what
the plain reading meant, and show it looks at the subscriptions of the owners that hold the number only."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsflow.subscriptions.holdings import Holding, receives
from smsflow.subscriptions.index import MatchIndex
from smsflow.subscriptions.model import MessageFilter, Subscription
from smsflow.subscriptions.store import InMemorySubscriptionStore
from streams.deliver import KafkaDelivery

OWNERS = ["a", "b", "c", "operator", "config"]
NUMBERS = ["+85230001000", "+85230001001", "+8610690001234", "+8613800138000", "85230001000"]
PREFIXES = ["+852", "+8523000", "+86106", "+861", "+85230001000"]
ROUTES = ["r1", "r2"]
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def naive_targets(subs: list[Subscription], holdings: dict[str, Holding], msg: dict[str, Any]) -> list[str]:
    """What ``targets`` answered before the index: every enabled subscription, in creation order, that
    receives the message (filter AND holding)."""
    ordered = sorted(subs, key=lambda s: (s.created_at, s.id))
    return [s.id for s in ordered if s.enabled and receives(s, holdings.get(s.owner), msg)]


filters = st.builds(
    MessageFilter,
    destination_numbers=st.lists(st.sampled_from(NUMBERS), max_size=2),
    destination_prefixes=st.lists(st.sampled_from(PREFIXES), max_size=2),
    countries=st.lists(st.sampled_from(["HK", "CN"]), max_size=1),
    otp_only=st.booleans(),
    route_ids=st.lists(st.sampled_from(ROUTES), max_size=1),
)
subscriptions = st.lists(
    st.tuples(st.sampled_from(OWNERS), filters, st.booleans(), st.integers(0, 3)), max_size=12
)
holdings = st.dictionaries(
    st.sampled_from(["a", "b", "c", "operator"]),
    st.tuples(
        st.lists(st.sampled_from(NUMBERS), max_size=2),
        st.lists(st.sampled_from(PREFIXES), max_size=2),
        st.lists(st.sampled_from(ROUTES), max_size=1),
    ),
)
messages = st.fixed_dictionaries(
    {
        "to_number": st.sampled_from([*NUMBERS, "+85230009999", "", "+8610699"]),
        "country_code": st.sampled_from(["HK", "CN", None]),
        "otp": st.sampled_from(["123456", None]),
        "route_id": st.sampled_from([*ROUTES, None]),
    }
)


@settings(max_examples=500, deadline=None)
@given(subs=subscriptions, held=holdings, msgs=st.lists(messages, min_size=1, max_size=4))
def test_the_index_answers_exactly_what_every_subscription_read_plainly_answers(subs, held, msgs) -> None:
    made = [
        Subscription(
            owner=owner,
            url="https://hooks.example/x",
            filters=f,
            enabled=enabled,
            created_at=T0 + dt.timedelta(seconds=minute),  # ties: the id orders them
        )
        for owner, f, enabled, minute in subs
    ]
    held_by = {
        owner: Holding(owner=owner, numbers=numbers, prefixes=prefixes, route_ids=routes)
        for owner, (numbers, prefixes, routes) in held.items()
    }
    index = MatchIndex.of(made, held_by.values())
    for msg in msgs:
        assert [s.id for s in index.targets(msg)] == naive_targets(made, held_by, msg)


async def test_only_the_subscriptions_of_owners_holding_the_number_are_read(monkeypatch) -> None:
    owners = 1000
    store = InMemorySubscriptionStore(
        holdings=[Holding(owner=f"t{i}", numbers=[f"+8523000{i:04d}"]) for i in range(owners)]
    )
    for i in range(owners):
        for j in range(2):
            await store.put(Subscription(owner=f"t{i}", url=f"https://t{i}.example/{j}"))
    await store.put(Subscription(owner="operator", url="https://archive.example/"))
    read: list[str] = []
    plain = Subscription.matches

    def counting(self: Subscription, message: Any) -> bool:
        read.append(self.owner)
        return plain(self, message)

    monkeypatch.setattr(Subscription, "matches", counting)
    got = await KafkaDelivery(None, None, store).targets({"to_number": "+85230000500"})  # type: ignore[arg-type]
    assert sorted(s.owner for s in got) == ["operator", "t500", "t500"]
    assert sorted(read) == ["operator", "t500", "t500"]  # not 2,001 filters


@pytest.mark.parametrize("change", ["put", "delete", "disable", "holding", "unhold"])
async def test_a_change_is_seen_by_the_next_message(change: str) -> None:
    store = InMemorySubscriptionStore(holdings=[Holding(owner="a", numbers=["+85230001000"])])
    sub = Subscription(owner="a", url="https://a.example/")
    await store.put(sub)
    delivery = KafkaDelivery(None, None, store)  # type: ignore[arg-type]
    msg = {"to_number": "+85230001000"}
    assert [s.id for s in await delivery.targets(msg)] == [sub.id]
    if change == "put":
        more = Subscription(owner="a", url="https://a.example/2", created_at=sub.created_at + dt.timedelta(1))
        await store.put(more)
        want = [sub.id, more.id]
    elif change == "delete":
        await store.delete(sub.id)
        want = []
    elif change == "disable":
        await store.put(sub.model_copy(update={"enabled": False}))
        want = []
    elif change == "holding":
        await store.put_holding(Holding(owner="a", numbers=["+85230001001"]))
        want = []
    else:
        await store.delete_holding("a")
        want = []
    assert [s.id for s in await delivery.targets(msg)] == want


async def test_each_part_of_the_index_is_rebuilt_only_when_its_own_side_changes() -> None:
    """The holdings' part can be large (a million held numbers): a subscription change must not rebuild it,
    nor a holding change the subscriptions' part."""
    store = InMemorySubscriptionStore(holdings=[Holding(owner="a", numbers=["+85230001000"])])
    await store.put(Subscription(owner="a", url="https://a.example/"))
    first = store.match_index()
    assert store.match_index() is first  # nothing changed: the same index
    await store.put(Subscription(owner="a", url="https://a.example/2"))
    second = store.match_index()
    assert second.holders is first.holders and second.groups is not first.groups
    await store.put_holding(Holding(owner="b", numbers=["+85230001001"]))
    third = store.match_index()
    assert third.groups is second.groups and third.holders is not second.holders


# A change of subscriptions, as a store sees it: (which of a few ids, its owner, its filter, enabled, minute);
# owner None deletes the id. Reusing an id under another owner moves the subscription between owners (a
# compacted topic's record replaced by one with another owner: the API never does it, a topic may).
changes = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.one_of(st.none(), st.sampled_from(OWNERS)),
        filters,
        st.booleans(),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(steps=changes, held=holdings, msgs=st.lists(messages, min_size=1, max_size=3), every=st.integers(1, 4))
def test_an_index_updated_change_by_change_answers_what_a_fresh_one_does(steps, held, msgs, every) -> None:
    """After a change only the changed owners' groups are built again (``OwnerGroups.with_owners``); read
    after every ``every``-th change (several owners changed at once in between), the index must answer
    exactly what the plain reading of every subscription answers."""
    asyncio.run(_changed_step_by_step(steps, held, msgs, every))


async def _changed_step_by_step(steps: Any, held: Any, msgs: Any, every: int) -> None:
    held_by = {
        owner: Holding(owner=owner, numbers=numbers, prefixes=prefixes, route_ids=routes)
        for owner, (numbers, prefixes, routes) in held.items()
    }
    store = InMemorySubscriptionStore(holdings=list(held_by.values()))
    store.match_index()
    now: dict[str, Subscription] = {}
    for n, (i, owner, f, enabled, minute) in enumerate(steps, 1):
        sub_id = f"sub_{i}"
        if owner is None:
            await store.delete(sub_id)
            now.pop(sub_id, None)
        else:
            sub = Subscription(
                id=sub_id,
                owner=owner,
                url="https://hooks.example/x",
                filters=f,
                enabled=enabled,
                created_at=T0 + dt.timedelta(seconds=minute),
            )
            await store.put(sub)
            now[sub_id] = sub
        if n % every == 0 or n == len(steps):
            index = store.match_index()
            for msg in msgs:
                assert [s.id for s in index.targets(msg)] == naive_targets(list(now.values()), held_by, msg)
    ordered = sorted(now.values(), key=lambda s: (s.created_at, s.id))
    assert [s.id for s in await store.list()] == [s.id for s in ordered]
    for owner in OWNERS:
        assert [s.id for s in await store.list(owner)] == [s.id for s in ordered if s.owner == owner]


async def test_one_owners_change_builds_only_its_own_group_again() -> None:
    """A worker with every customer's subscriptions sorted them all again after each change (~100 ms at
    100,000, on the event loop, for everyone's traffic); now the other owners' groups are kept as they are."""
    store = InMemorySubscriptionStore(
        holdings=[Holding(owner=o, numbers=["+85230001000"]) for o in ("a", "b", "operator")]
    )
    for owner in ("a", "b", "operator"):
        await store.put(Subscription(owner=owner, url=f"https://{owner}.example/"))
    first = store.match_index().groups
    await store.put(Subscription(owner="a", url="https://a.example/2"))
    second = store.match_index().groups
    assert second.by_owner["b"] is first.by_owner["b"]
    assert second.by_owner["operator"] is first.by_owner["operator"]
    assert len(second.by_owner["a"]) == 2 and second.by_owner["a"] is not first.by_owner["a"]
    # an owner whose last subscription goes is gone from the groups; an operator's likewise from operators
    for sub in await store.list("operator"):
        await store.delete(sub.id)
    third = store.match_index().groups
    assert "operator" not in third.by_owner and third.operators == ()
    assert [s.owner for s in store.match_index().targets({"to_number": "+85230001000"})] == ["a", "b", "a"]
