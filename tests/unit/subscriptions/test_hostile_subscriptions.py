"""One customer's subscriptions cannot slow everyone's traffic.

Every inbound message is matched against every subscription (``KafkaDelivery.targets``). Found by reading the
API as a hostile tenant would: a filter was matched by walking its lists and re-normalising every number, so a
tenant holding a prefix could list ~15,000 numbers per subscription (what fits in a 256 KB body) and make each
such subscription cost every message 10-25 ms, and nothing bounded how many subscriptions it created. Now a
filter's lists are sets built once (a match costs the same however long they are) and an owner has at most
``api.max_subscriptions_per_owner`` subscriptions, and its keys may make
``api.subscription_changes_per_minute`` changes a minute (each one makes every worker rebuild its match
index)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from smsflow.api.apikeys import ApiKeyStore
from smsflow.api.app import create_api_app
from smsflow.api.subscriptions import ApiSettings
from smsflow.config import ApiConfig
from smsflow.subscriptions import model
from smsflow.subscriptions.holdings import Holding
from smsflow.subscriptions.model import MessageFilter, number_digits
from smsflow.subscriptions.store import InMemorySubscriptionStore


def reference_match(f: MessageFilter, message: dict[str, Any]) -> bool:
    """The filter's meaning, written out plainly (what ``matches`` did before it used sets)."""
    if f.destination_numbers or f.destination_prefixes:
        to = number_digits(str(message.get("to_number") or ""))
        exact = any(to == number_digits(n) for n in f.destination_numbers)
        if not exact and not any(to.startswith(number_digits(p)) for p in f.destination_prefixes):
            return False
    if f.countries and str(message.get("country_code") or "").upper() not in f.countries:
        return False
    if f.otp_only and not message.get("otp"):
        return False
    if f.sender_signatures:
        signature = message.get("sender_signature")
        if not signature or str(signature).strip().casefold() not in {
            s.strip().casefold() for s in f.sender_signatures
        }:
            return False
    return not (f.route_ids and message.get("route_id") not in f.route_ids)


numbers = st.text(alphabet="+ -0123456789", min_size=0, max_size=8).filter(
    lambda s: any(c.isdigit() for c in s)
)
words = st.sampled_from(["JD", "jd ", "京东", "HSBC", "ß", "SS", "", "Acme"])


@settings(max_examples=400, deadline=None)
@given(
    dest=st.lists(numbers, max_size=4),
    prefixes=st.lists(numbers, max_size=4),
    countries=st.lists(st.sampled_from(["HK", "CN", "us"]), max_size=2),
    otp_only=st.booleans(),
    signatures=st.lists(words.filter(bool), max_size=3),
    routes=st.lists(st.sampled_from(["r1", "r2"]), max_size=2),
    to=st.one_of(numbers, st.just(""), st.none()),
    country=st.sampled_from(["HK", "cn", "US", None]),
    otp=st.sampled_from(["123456", None, ""]),
    signature=st.one_of(words, st.none()),
    route=st.sampled_from(["r1", "r2", None]),
)
def test_matching_with_sets_means_what_the_lists_meant(
    dest, prefixes, countries, otp_only, signatures, routes, to, country, otp, signature, route
) -> None:
    f = MessageFilter(
        destination_numbers=dest,
        destination_prefixes=prefixes,
        countries=countries,
        otp_only=otp_only,
        sender_signatures=signatures,
        route_ids=routes,
    )
    message = {"to_number": to, "country_code": country, "otp": otp, "sender_signature": signature}
    message["route_id"] = route
    assert f.matches(message) == reference_match(f, message)


def test_a_match_does_not_read_a_long_filter_again(monkeypatch: pytest.MonkeyPatch) -> None:
    listed = [f"+86106900{i:05d}" for i in range(15_000)]
    f = MessageFilter(
        destination_numbers=listed, destination_prefixes=[f"+8610691{i:04d}" for i in range(5_000)]
    )
    calls = 0
    real = model.number_digits

    def counting(number: str) -> str:
        nonlocal calls
        calls += 1
        return real(number)

    monkeypatch.setattr(model, "number_digits", counting)
    assert f.matches({"to_number": "+8610690012345"})  # listed
    assert f.matches({"to_number": "+86106910042999"})  # under a listed prefix
    assert not f.matches({"to_number": "+85230001000"})
    assert calls == 3  # the message's own number, once per match; never the 20,000 listed values


async def test_an_owner_has_at_most_the_configured_number_of_subscriptions() -> None:
    store = InMemorySubscriptionStore(
        holdings=[Holding(owner="a", numbers=["+85230001000"]), Holding(owner="b", numbers=["+85230001001"])]
    )
    keys = ApiKeyStore()
    a_token, b_token = keys.issue("a")[1], keys.issue("b")[1]
    app = create_api_app(
        store, keys, settings=ApiSettings(address_policy=None, max_subscriptions_per_owner=3)
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:

        async def create(token: str) -> tuple[int, Any]:
            r = await client.post(
                "/v1/subscriptions",
                json={"url": "https://hooks.example/x"},
                headers={"Authorization": f"Bearer {token}"},
            )
            return r.status, await r.json()

        # a burst of creates at once: exactly the limit is created, the rest refused with the setting named
        answers = await asyncio.gather(*(create(a_token) for _ in range(6)))
        assert sorted(status for status, _ in answers) == [201] * 3 + [409] * 3
        refused = next(body for status, body in answers if status == 409)
        assert refused["error"]["code"] == "subscription_limit"
        assert "api.max_subscriptions_per_owner" in refused["error"]["message"]
        assert len(await store.list("a")) == 3
        # another owner is not counted against a; a deleted subscription makes room
        assert (await create(b_token))[0] == 201
        first = (await store.list("a"))[0]
        r = await client.delete(
            f"/v1/subscriptions/{first.id}", headers={"Authorization": f"Bearer {a_token}"}
        )
        assert r.status == 204
        assert (await create(a_token))[0] == 201


def test_the_limit_is_a_bounded_setting() -> None:
    assert ApiConfig().max_subscriptions_per_owner == 100
    with pytest.raises(ValueError, match="max_subscriptions_per_owner"):
        ApiConfig(max_subscriptions_per_owner=0)


async def test_a_filters_lists_are_bounded_and_the_answer_names_the_list() -> None:
    """Matching no longer grows with the lists, but every worker and API process keeps them in memory: one
    subscription's list holds at most ``api.max_filter_entries`` entries of at most 255 characters."""
    store = InMemorySubscriptionStore(holdings=[Holding(owner="a", prefixes=["+852"])])
    keys = ApiKeyStore()
    token = keys.issue("a")[1]
    auth = {"Authorization": f"Bearer {token}"}
    app = create_api_app(store, keys, settings=ApiSettings(address_policy=None, max_filter_entries=50))
    numbers = [f"+8523000{i:04d}" for i in range(51)]
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:

        async def create(filters: dict[str, Any]) -> tuple[int, Any]:
            r = await client.post(
                "/v1/subscriptions", json={"url": "https://hooks.example/x", "filters": filters}, headers=auth
            )
            return r.status, await r.json()

        status, body = await create({"destination_numbers": numbers})
        assert status == 422 and body["error"]["field"] == "filters.destination_numbers"
        assert (
            "51 entries" in body["error"]["message"] and "api.max_filter_entries" in body["error"]["message"]
        )
        status, body = await create({"sender_signatures": ["x" * 256]})
        assert status == 422 and body["error"]["field"] == "filters.sender_signatures.0"
        status, body = await create({"route_ids": [str(i) for i in range(60)], "countries": ["HK"] * 60})
        assert status == 422 and {d["field"] for d in body["details"]} == {
            "filters.route_ids",
            "filters.countries",
        }
        assert await store.list("a") == []
        status, created = await create(
            {"destination_numbers": numbers[:50], "sender_signatures": ["x" * 255]}
        )
        assert status == 201
        # an update is held to the same bound, and leaves the subscription as it was
        r = await client.patch(
            f"/v1/subscriptions/{created['id']}",
            json={"filters": {"destination_prefixes": ["+852"] * 51}},
            headers=auth,
        )
        assert r.status == 422 and (await r.json())["error"]["field"] == "filters.destination_prefixes"
        [kept] = await store.list("a")
        assert kept.filters.destination_numbers == numbers[:50] and kept.filters.destination_prefixes == []


def test_every_list_of_a_filter_is_bounded() -> None:
    from smsflow.api.subscriptions import FILTER_LISTS

    assert set(FILTER_LISTS) == {
        "destination_numbers",
        "destination_prefixes",
        "countries",
        "sender_signatures",
        "route_ids",
    }
    assert ApiConfig().max_filter_entries == 1000
    with pytest.raises(ValueError, match="max_filter_entries"):
        ApiConfig(max_filter_entries=0)


async def test_an_owner_changing_its_subscriptions_in_a_loop_is_held_to_the_configured_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every change of a subscription is a record every worker and API process applies and rebuilds from:
    an owner's keys may make ``api.subscription_changes_per_minute`` changes a minute, every kind counted."""
    import types

    from smsflow.api import buckets

    # the clock stands still: however slowly a busy machine runs this test, no change is refilled
    monkeypatch.setattr(buckets, "time", types.SimpleNamespace(monotonic=lambda: 1000.0))
    store = InMemorySubscriptionStore(
        holdings=[Holding(owner="a", numbers=["+85230001000"]), Holding(owner="b", numbers=["+85230001001"])]
    )
    keys = ApiKeyStore()
    a = {"Authorization": f"Bearer {keys.issue('a')[1]}"}
    b = {"Authorization": f"Bearer {keys.issue('b')[1]}"}
    admin = {"Authorization": f"Bearer {keys.issue(None)[1]}"}
    app = create_api_app(
        store, keys, settings=ApiSettings(address_policy=None, subscription_changes_per_minute=6)
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        r = await client.post("/v1/subscriptions", json={"url": "https://hooks.example/a"}, headers=a)
        assert r.status == 201
        sub = (await r.json())["id"]
        r = await client.post("/v1/subscriptions", json={"url": "https://hooks.example/a2"}, headers=a)
        other = (await r.json())["id"]
        # every kind of change counts: 2 creates, an update, a rotation, a disable, an enable = 6
        calls: list[tuple[str, str, dict[str, Any] | None]] = [
            ("patch", f"/v1/subscriptions/{sub}", {"description": "one"}),
            ("post", f"/v1/subscriptions/{sub}/rotate-secret", None),
            ("post", f"/v1/subscriptions/{sub}/disable", None),
            ("post", f"/v1/subscriptions/{sub}/enable", None),
        ]
        for method, path, body in calls:
            r = await getattr(client, method)(path, json=body, headers=a)
            assert r.status == 200, (path, await r.text())
        # the seventh within the minute: refused, with the setting named and when to come back
        for method, path, body in [
            ("patch", f"/v1/subscriptions/{sub}", {"description": "seven"}),
            ("delete", f"/v1/subscriptions/{other}", None),
            ("post", "/v1/subscriptions", {"url": "https://hooks.example/a3"}),
        ]:
            r = await getattr(client, method)(path, json=body, headers=a)
            assert r.status == 429, (path, await r.text())
            error = (await r.json())["error"]
            assert error["code"] == "too_many_requests"
            assert "api.subscription_changes_per_minute" in error["message"]
            assert 1 <= int(r.headers["Retry-After"]) <= 10  # one change every 10 s at 6 a minute
        # nothing refused was changed
        kept = {s.id: s for s in await store.list("a")}
        assert set(kept) == {sub, other} and kept[sub].description == "one"
        # reads are not changes; another owner and an operator key are not held back by a's count
        assert (await client.get(f"/v1/subscriptions/{sub}", headers=a)).status == 200
        r = await client.post("/v1/subscriptions", json={"url": "https://hooks.example/b"}, headers=b)
        assert r.status == 201
        for i in range(10):
            r = await client.patch(f"/v1/subscriptions/{sub}", json={"description": f"op{i}"}, headers=admin)
            assert r.status == 200


def test_the_change_budget_refills_evenly_and_forgets_idle_owners() -> None:
    from smsflow.api.subscriptions import ChangeBudget

    now = [0.0]
    budget = ChangeBudget(60, clock=lambda: now[0])
    assert all(budget.take("a") == 0 for _ in range(60))  # a burst of a minute's worth
    assert budget.take("a") == pytest.approx(1.0)  # then one a second
    now[0] += 0.5
    assert budget.take("a") == pytest.approx(0.5)  # a refused attempt takes nothing
    now[0] += 0.5
    assert budget.take("a") == 0 and budget.take("a") > 0
    assert budget.take("b") == 0  # owners are counted apart
    now[0] += 3600  # an hour idle: full again, never more than the burst
    assert sum(budget.take("a") == 0 for _ in range(100)) == 60
    # many owners: the ones whose buckets are full again are forgotten, the ones still counting are kept
    budget = ChangeBudget(60, clock=lambda: now[0])
    budget.PRUNE_AT = 100
    for i in range(100):
        budget.take(f"idle{i}")
    now[0] += 30
    budget.take("busy")
    now[0] += 31
    assert budget.take("busy2") == 0
    assert set(budget._buckets) == {"busy", "busy2"}
    assert ApiConfig().subscription_changes_per_minute == 60
    with pytest.raises(ValueError, match="subscription_changes_per_minute"):
        ApiConfig(subscription_changes_per_minute=0)
