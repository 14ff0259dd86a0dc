"""Tenant isolation: every filter is bounded by its owner's holding — at create/PATCH, at match time, and in
resend/recover (issue 9 §1)."""

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from smsflow.api.apikeys import ApiKey, ApiKeyStore
from smsflow.api.app import create_api_app
from smsflow.delivery.redelivery import Redelivery
from smsflow.subscriptions.holdings import Holding, outside_holding, receives
from smsflow.subscriptions.model import MessageFilter, Subscription
from smsflow.subscriptions.store import InMemorySubscriptionStore
from streams.deliver import KafkaDelivery

A_NUMBER, B_NUMBER = "+85230001000", "+85230001001"


def msg(to: str, route: str = "route-0", mid: str = "m1", **kw: Any) -> dict[str, Any]:
    return {
        "message_id": mid,
        "from_number": "+8613800000000",
        "to_number": to,
        "body": "hi",
        "encoding": "gsm7",
        "route_id": route,
        "country_code": "HK",
        **kw,
    }


def sub(owner: str, **filters: Any) -> Subscription:
    return Subscription(owner=owner, url="https://hooks.example/x", filters=MessageFilter(**filters))


# ---------------------------------------------------------------- the intersection


def test_holding_matches_numbers_prefixes_and_routes_on_digits() -> None:
    h = Holding(owner="a", numbers=["+852 3000-1000"], prefixes=["+86106"], route_ids=["route-a"])
    assert h.holds(msg("85230001000"))
    assert h.holds(msg("+8610690001234"))
    assert h.holds(msg("+15550000000", route="route-a"))  # a dedicated route: all of its traffic
    assert not h.holds(msg(B_NUMBER))
    assert not h.holds(msg("+8613800000000"))
    assert not h.holds(msg(""))  # no number, no route: nothing


def test_empty_filter_means_everything_held_never_everything() -> None:
    a, b = Holding(owner="a", numbers=[A_NUMBER]), Holding(owner="b", numbers=[B_NUMBER])
    s = sub("b")
    assert receives(s, b, msg(B_NUMBER))
    assert not receives(s, b, msg(A_NUMBER))
    assert not receives(s, None, msg(B_NUMBER))  # holds nothing: receives nothing
    assert receives(sub("a"), a, msg(A_NUMBER))


def test_filter_and_holding_both_apply() -> None:
    h = Holding(owner="a", prefixes=["+852"])
    s = sub("a", otp_only=True)
    assert receives(s, h, msg(A_NUMBER, otp="1234"))
    assert not receives(s, h, msg(A_NUMBER))
    # a filter naming numbers beyond the holding still gets only the held ones
    wide = sub("a", destination_prefixes=["+8"])
    assert receives(wide, h, msg(A_NUMBER)) and not receives(wide, h, msg("+8610690001234"))


def test_operator_owners_need_no_holding() -> None:
    for owner in ("config", "operator"):
        assert receives(sub(owner), None, msg(A_NUMBER))
        assert not receives(sub(owner, destination_numbers=[B_NUMBER]), None, msg(A_NUMBER))


def test_outside_holding_names_each_value() -> None:
    h = Holding(owner="b", numbers=[B_NUMBER], prefixes=["+86106"])
    f = MessageFilter(
        destination_numbers=[B_NUMBER, A_NUMBER, "+8610690001234"], destination_prefixes=["+8610690", "+86"]
    )
    assert outside_holding(f, h) == [
        ("filters.destination_numbers.1", f"{A_NUMBER} is not a number this owner holds"),
        ("filters.destination_prefixes.1", "+86 reaches beyond the numbers this owner holds"),
    ]
    assert outside_holding(MessageFilter(), h) == []
    assert [f for f, _ in outside_holding(MessageFilter(), None)] == ["filters"]
    assert [f for f, _ in outside_holding(MessageFilter(), Holding(owner="b"))] == ["filters"]
    routes = Holding(owner="r", route_ids=["route-r"])
    assert outside_holding(MessageFilter(destination_numbers=[A_NUMBER]), routes) == []
    assert [f for f, _ in outside_holding(MessageFilter(route_ids=["route-x"]), routes)] == [
        "filters.route_ids.0"
    ]


digits = st.text("0123456789", min_size=1, max_size=12)


@given(
    held=st.lists(digits, max_size=4),
    held_prefixes=st.lists(digits, max_size=3),
    numbers=st.lists(digits, max_size=4),
    prefixes=st.lists(digits, max_size=3),
    to=digits,
)
def test_an_accepted_filter_never_reaches_an_unheld_number(
    held: list[str], held_prefixes: list[str], numbers: list[str], prefixes: list[str], to: str
) -> None:
    h = Holding(owner="b", numbers=["+" + n for n in held], prefixes=["+" + p for p in held_prefixes])
    f = MessageFilter(destination_numbers=numbers, destination_prefixes=prefixes)
    s = Subscription(owner="b", url="https://x.example/h", filters=f)
    if (numbers or prefixes) and not outside_holding(f, h) and f.matches(msg(to)):
        assert h.holds(msg(to))  # destinations the API accepts can only ever name held numbers
    assert not receives(s, h, msg(to)) or h.holds(msg(to))  # and matching is bounded anyway


def test_no_customer_key_for_operator_owners() -> None:
    with pytest.raises(ValueError, match="reserved"):
        ApiKeyStore().issue("operator")
    with pytest.raises(ValueError, match="reserved"):
        ApiKey.from_record({"key_id": "k", "owner": "config", "scopes": [], "salt": "00", "sha256": "00"})


# ---------------------------------------------------------------- at match time and in resend


async def test_match_time_follows_the_current_holding() -> None:
    store = InMemorySubscriptionStore(holdings=[Holding(owner="b", numbers=[B_NUMBER])])
    b = sub("b")
    await store.put(b)
    await store.put(sub("config"))
    delivery = KafkaDelivery(None, None, store)  # type: ignore[arg-type] # targets() reads the store only
    assert {s.owner for s in await delivery.targets(msg(B_NUMBER))} == {"b", "config"}
    assert {s.owner for s in await delivery.targets(msg(A_NUMBER))} == {"config"}
    await store.delete_holding("b")  # removed later: delivery stops at once
    assert {s.owner for s in await delivery.targets(msg(B_NUMBER))} == {"config"}


async def test_resend_of_another_tenants_message_is_not_found() -> None:
    store = InMemorySubscriptionStore(
        holdings=[Holding(owner="a", numbers=[A_NUMBER]), Holding(owner="b", numbers=[B_NUMBER])]
    )
    red = Redelivery("unused:9092", None, holding_of=store.holding_of)  # type: ignore[arg-type]
    stored = {"a-1": msg(A_NUMBER, mid="a-1"), "b-1": msg(B_NUMBER, mid="b-1")}
    queued: list[tuple[str, str]] = []

    async def requeue(s: Subscription, payloads: list[dict[str, Any]], reason: str) -> None:
        queued.extend((s.owner, p["message_id"]) for p in payloads)

    red.find_message = stored.get  # type: ignore[method-assign] # the Kafka scan, stubbed
    red._requeue = requeue  # type: ignore[method-assign]
    red_b = sub("b")
    assert not await red.resend("a-1", red_b)
    assert await red.resend("b-1", red_b)
    assert queued == [("b", "b-1")]


# ---------------------------------------------------------------- through the API


class Api:
    def __init__(self, client: TestClient, store: InMemorySubscriptionStore, keys: ApiKeyStore) -> None:
        self.client, self.store, self.keys = client, store, keys

    async def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        resp = await self.client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {token}"}
        )
        return resp.status, (await resp.json() if resp.status != 204 else None)


@pytest.fixture
async def api():  # type: ignore[no-untyped-def]
    store, keys = InMemorySubscriptionStore(), ApiKeyStore()
    client = TestClient(TestServer(create_api_app(store, keys), host="127.0.0.1"))
    await client.start_server()
    yield Api(client, store, keys)
    await client.close()


URL = "https://hooks.example.com/sms"


async def test_only_admin_keys_manage_holdings_and_owners_see_their_own(api: Api) -> None:
    admin, b = api.keys.issue(None)[1], api.keys.issue("b")[1]
    status, body = await api.call("PUT", "/v1/holdings/b", b, {"numbers": [A_NUMBER, B_NUMBER]})
    assert status == 403 and "admin key" in body["error"]["message"]
    assert (await api.call("PUT", "/v1/holdings/a", admin, {"numbers": [A_NUMBER]}))[0] == 200
    assert (await api.call("PUT", "/v1/holdings/b", admin, {"numbers": [B_NUMBER]}))[0] == 200
    status, body = await api.call("PUT", "/v1/holdings/operator", admin, {"numbers": [A_NUMBER]})
    assert status == 422 and body["error"]["field"] == "owner"
    status, body = await api.call("PUT", "/v1/holdings/c", admin, {"prefixes": ["+"]})
    assert status == 422 and body["error"]["field"] == "prefixes"
    assert [h["owner"] for h in (await api.call("GET", "/v1/holdings", admin))[1]["data"]] == ["a", "b"]
    assert [h["owner"] for h in (await api.call("GET", "/v1/holdings", b))[1]["data"]] == ["b"]
    assert (await api.call("GET", "/v1/holdings/b", b))[1]["numbers"] == [B_NUMBER]
    assert (await api.call("GET", "/v1/holdings/a", b))[0] == 404
    assert (await api.call("DELETE", "/v1/holdings/a", b))[0] == 403
    assert (await api.call("DELETE", "/v1/holdings/a", admin))[0] == 204
    assert (await api.call("DELETE", "/v1/holdings/a", admin))[0] == 404
    assert api.store.holding_of("a") is None


async def test_sender_ids_are_held_like_numbers(api: Api) -> None:
    """An operator registers the alphanumeric senders an owner may send as; the owner reads them back."""
    admin, b = api.keys.issue(None)[1], api.keys.issue("b")[1]
    status, body = await api.call("PUT", "/v1/holdings/b", b, {"sender_ids": ["HSBC"]})
    assert status == 403  # an owner cannot register a brand for itself
    held = {"numbers": [B_NUMBER], "sender_ids": ["BeeBank"]}
    assert (await api.call("PUT", "/v1/holdings/b", admin, held))[0] == 200
    assert (await api.call("GET", "/v1/holdings/b", b))[1]["sender_ids"] == ["BeeBank"]
    holding = api.store.holding_of("b")
    assert holding is not None and holding.holds_sender_id("BEEBANK") and not holding.holds_sender_id("Bee")
    status, body = await api.call("PUT", "/v1/holdings/c", admin, {"sender_ids": ["TwelveLetter"]})
    assert status == 422 and body["error"]["field"].startswith("sender_ids")
    from smsflow.subscriptions.holdings import Holding, holding_from_kafka, holding_to_record

    assert holding_from_kafka(b"b", holding_to_record(holding)) == ("b", holding)
    plain = holding_to_record(Holding(owner="a", numbers=[A_NUMBER]))
    assert b"sender_ids" not in plain  # what a process from before sender IDs can still read


async def test_filters_are_refused_beyond_the_holding_at_create_and_patch(api: Api) -> None:
    admin, b = api.keys.issue(None)[1], api.keys.issue("b")[1]
    # holds nothing yet: even an empty filter is refused (it would have meant "everything")
    status, body = await api.call("POST", "/v1/subscriptions", b, {"url": URL})
    assert status == 403 and body["error"]["code"] == "not_held" and body["error"]["field"] == "filters"
    await api.call("PUT", "/v1/holdings/b", admin, {"numbers": [B_NUMBER]})
    status, created = await api.call("POST", "/v1/subscriptions", b, {"url": URL})
    assert status == 201 and created["filters"]["destination_numbers"] == []
    bad = {"url": URL, "filters": {"destination_numbers": [B_NUMBER, A_NUMBER]}}
    status, body = await api.call("POST", "/v1/subscriptions", b, bad)
    assert status == 403 and body["error"]["field"] == "filters.destination_numbers.1"
    assert A_NUMBER in body["error"]["message"]
    # an operator key creating for b is bound by b's holding too
    status, body = await api.call("POST", "/v1/subscriptions", admin, {**bad, "owner": "b"})
    assert status == 403 and body["error"]["field"] == "filters.destination_numbers.1"
    path = f"/v1/subscriptions/{created['id']}"
    status, body = await api.call("PATCH", path, b, {"filters": {"destination_prefixes": ["+852"]}})
    assert status == 403 and body["error"]["field"] == "filters.destination_prefixes.0"
    assert (await api.call("PATCH", path, b, {"filters": {"destination_numbers": [B_NUMBER]}}))[0] == 200
    # operator subscriptions need no holding and take any filter
    status, _ = await api.call("POST", "/v1/subscriptions", admin, {"url": URL, "owner": "operator"})
    assert status == 201
    # each key lists only its own
    mine = (await api.call("GET", "/v1/subscriptions", b))[1]["data"]
    assert [s["owner"] for s in mine] == ["b"]


def test_a_prefix_equal_to_a_held_number_reaches_beyond_it() -> None:
    """Found by the property above: holding the number +8 accepted the prefix 8, which also matches 80."""
    holding = Holding(owner="b", numbers=["+8"])
    outside = outside_holding(MessageFilter(destination_prefixes=["8"]), holding)
    assert [field for field, _ in outside] == ["filters.destination_prefixes.0"]
    assert outside_holding(MessageFilter(destination_numbers=["+8"]), holding) == []
