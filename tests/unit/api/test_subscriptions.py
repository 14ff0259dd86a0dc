"""The subscriptions API over real HTTP (aiohttp test server on a free local port)."""

from datetime import UTC, datetime, timedelta

import openapi_spec_validator
import pytest
from aiohttp.test_utils import TestClient, TestServer
from standardwebhooks import Webhook

from smsflow.api.apikeys import ApiKey, ApiKeyStore, Scope
from smsflow.api.app import create_api_app
from smsflow.api.subscriptions import ApiSettings
from smsflow.delivery.egress import AddressPolicy
from smsflow.delivery.redelivery import RecoverOutcome
from smsflow.delivery.signing import generate_secret, webhook_headers
from smsflow.subscriptions.holdings import Holding
from smsflow.subscriptions.store import InMemorySubscriptionStore


class Api:
    def __init__(self, client: TestClient, store, keys, calls):
        self.client, self.store, self.keys, self.calls = client, store, keys, calls

    def auth(self, token):
        return {"Authorization": f"Bearer {token}"}


# acme holds mainland China numbers, globex Hong Kong ones
HOLDINGS = [Holding(owner="acme", prefixes=["+86"]), Holding(owner="globex", prefixes=["+852"])]


@pytest.fixture
async def api():
    store = InMemorySubscriptionStore(holdings=HOLDINGS)
    keys = ApiKeyStore()
    calls: list[tuple] = []

    async def resend(message_id, sub):
        calls.append(("resend", message_id, sub.id))
        return message_id != "msg_unknown"

    async def recover(sub, since):
        calls.append(("recover", sub.id, since))
        return RecoverOutcome(queued=7, not_examined=2)

    app = create_api_app(
        store, keys, resend=resend, recover=recover, settings=ApiSettings(rotation_overlap_s=3600)
    )
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield Api(client, store, keys, calls)
    await client.close()


@pytest.fixture
def acme(api):
    return api.keys.issue("acme")[1]


NEW_SUB = {"url": "https://hooks.acme.example/sms", "filters": {"countries": ["cn"], "otp_only": True}}


async def create(api, token, body=NEW_SUB):
    resp = await api.client.post("/v1/subscriptions", json=body, headers=api.auth(token))
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def test_health_and_openapi_need_no_key(api):
    assert (await api.client.get("/healthz")).status == 200
    resp = await api.client.get("/openapi.json")
    doc = await resp.json()
    assert doc["openapi"] == "3.1.0"
    served = {r.resource.canonical for r in api.client.app.router.routes() if r.method != "HEAD"}
    assert served == set(doc["paths"])
    openapi_spec_validator.validate(doc)


@pytest.mark.parametrize("header", [None, "Bearer", "Basic abc", "Bearer sfk_nope_nope", "Bearer garbage"])
async def test_missing_or_bad_key_is_401(api, header):
    headers = {"Authorization": header} if header else {}
    resp = await api.client.get("/v1/subscriptions", headers=headers)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await resp.json())["error"]["code"] == "unauthorized"


async def test_revoked_key_is_401(api):
    key, token = api.keys.issue("acme")
    api.keys.revoke(key.key_id)
    assert (await api.client.get("/v1/subscriptions", headers=api.auth(token))).status == 401


async def test_keys_are_stored_hashed():
    store = ApiKeyStore()
    key, token = store.issue("acme", [Scope.READ])
    record = key.to_record()
    assert token.split("_", 2)[2] not in repr(record)
    reloaded = ApiKeyStore([ApiKey.from_record(record)])
    assert reloaded.authenticate(token) == key
    assert reloaded.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None


async def test_wrong_scope_is_403(api):
    _, read_only = api.keys.issue("acme", [Scope.READ])
    resp = await api.client.post("/v1/subscriptions", json=NEW_SUB, headers=api.auth(read_only))
    assert resp.status == 403 and "subscriptions:write" in (await resp.json())["error"]["message"]
    assert (await api.client.get("/v1/subscriptions", headers=api.auth(read_only))).status == 200


async def test_crud_round_trip(api, acme):
    created = await create(api, acme)
    sub_id = created["id"]
    assert created["owner"] == "acme" and created["filters"]["countries"] == ["CN"]
    assert created["secret"].startswith("whsec_") and created["secrets"][0]["fingerprint"]

    got = await (await api.client.get(f"/v1/subscriptions/{sub_id}", headers=api.auth(acme))).json()
    assert "secret" not in got and created["secret"] not in str(got)

    resp = await api.client.patch(
        f"/v1/subscriptions/{sub_id}",
        json={
            "max_in_flight": 3,
            "rate_limit_per_second": 5,
            "batch": {"max_batch_size": 20, "max_wait_ms": 200},
        },
        headers=api.auth(acme),
    )
    patched = await resp.json()
    assert resp.status == 200 and patched["max_in_flight"] == 3 and patched["batch"]["max_batch_size"] == 20
    assert patched["filters"]["otp_only"] is True  # untouched fields stay
    resp = await api.client.patch(
        f"/v1/subscriptions/{sub_id}", json={"rate_limit_per_second": None}, headers=api.auth(acme)
    )
    assert (await resp.json())["rate_limit_per_second"] is None

    listed = await (await api.client.get("/v1/subscriptions", headers=api.auth(acme))).json()
    assert [s["id"] for s in listed["data"]] == [sub_id]

    assert (await api.client.delete(f"/v1/subscriptions/{sub_id}", headers=api.auth(acme))).status == 204
    assert (await api.client.get(f"/v1/subscriptions/{sub_id}", headers=api.auth(acme))).status == 404
    assert await api.store.get(sub_id) is None


async def test_validation_errors_name_the_field_and_never_echo_secrets(api, acme):
    bad_secret = "whsec_" + "A" * 8
    resp = await api.client.post(
        "/v1/subscriptions", json={**NEW_SUB, "secret": bad_secret}, headers=api.auth(acme)
    )
    text = await resp.text()
    assert resp.status == 422 and bad_secret not in text and '"field":"secret.value"' in text
    resp = await api.client.post(
        "/v1/subscriptions",
        json={"url": "https://x.example", "filters": {"countries": ["CHN"]}},
        headers=api.auth(acme),
    )
    err = (await resp.json())["error"]
    assert resp.status == 422 and err["field"] == "filters.countries" and "CHN" in err["message"]
    resp = await api.client.post("/v1/subscriptions", data=b"[1,2]", headers=api.auth(acme))
    assert resp.status == 400
    resp = await api.client.post("/v1/subscriptions", json={**NEW_SUB, "surprise": 1}, headers=api.auth(acme))
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "surprise"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://10.0.0.5/hook", "private"),
        ("https://169.254.169.254/latest", "link-local"),
        ("http://localhost:8080/x", "localhost"),
        ("http://[::1]/x", "loopback"),
    ],
)
async def test_internal_urls_are_refused_at_creation(api, acme, url, why):
    resp = await api.client.post("/v1/subscriptions", json={"url": url}, headers=api.auth(acme))
    err = (await resp.json())["error"]
    assert resp.status == 422 and err["field"] == "url" and why in err["message"]


async def test_https_only_subscription_refuses_http(api, acme):
    resp = await api.client.post(
        "/v1/subscriptions",
        json={"url": "http://hooks.example.com", "https_only": True},
        headers=api.auth(acme),
    )
    assert resp.status == 422 and "https" in (await resp.json())["error"]["message"]


async def test_demo_settings_allow_local_urls():
    store, keys = (
        InMemorySubscriptionStore(holdings=[Holding(owner="demo", numbers=["+85230001000"])]),
        ApiKeyStore(),
    )
    _, token = keys.issue(None)
    app = create_api_app(store, keys, settings=ApiSettings(address_policy=None))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.post(
            "/v1/subscriptions",
            json={"url": "http://127.0.0.1:9000/hook", "owner": "demo"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status == 201


async def test_owner_isolation_and_operator_keys(api, acme):
    sub_id = (await create(api, acme))["id"]
    other = api.keys.issue("globex")[1]
    for method, path in [
        ("GET", f"/v1/subscriptions/{sub_id}"),
        ("PATCH", f"/v1/subscriptions/{sub_id}"),
        ("DELETE", f"/v1/subscriptions/{sub_id}"),
        ("POST", f"/v1/subscriptions/{sub_id}/rotate-secret"),
        ("POST", f"/v1/messages/msg_1/resend?subscription_id={sub_id}"),
    ]:
        resp = await api.client.request(method, path, json={}, headers=api.auth(other))
        assert resp.status == 404, (method, path)
    assert (await (await api.client.get("/v1/subscriptions", headers=api.auth(other))).json())["data"] == []
    resp = await api.client.post(
        "/v1/subscriptions", json={**NEW_SUB, "owner": "acme"}, headers=api.auth(other)
    )
    assert resp.status == 403

    operator = api.keys.issue(None)[1]
    resp = await api.client.post("/v1/subscriptions", json=NEW_SUB, headers=api.auth(operator))
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "owner"
    await create(api, operator, {**NEW_SUB, "owner": "globex"})
    everyone = await (await api.client.get("/v1/subscriptions", headers=api.auth(operator))).json()
    assert {s["owner"] for s in everyone["data"]} == {"acme", "globex"}
    only = await (await api.client.get("/v1/subscriptions?owner=acme", headers=api.auth(operator))).json()
    assert [s["id"] for s in only["data"]] == [sub_id]


async def test_rotation_returns_new_secret_once_and_old_stays_valid_for_overlap(api, acme):
    created = await create(api, acme)
    old = created["secret"]
    resp = await api.client.post(f"/v1/subscriptions/{created['id']}/rotate-secret", headers=api.auth(acme))
    rotated = await resp.json()
    assert resp.status == 200 and rotated["secret"] != old
    valid_until = datetime.fromisoformat(rotated["previous_valid_until"])
    assert timedelta(minutes=59) < valid_until - datetime.now(UTC) <= timedelta(hours=1)

    sub = await api.store.get(created["id"])
    body = b'{"message_id":"m1"}'
    headers = webhook_headers(sub.signing_secrets(), "m1", body)
    Webhook(old).verify(body, headers)  # receivers that still hold the old secret keep working
    Webhook(rotated["secret"]).verify(body, headers)
    after = sub.signing_secrets(valid_until + timedelta(seconds=1))
    assert after == [rotated["secret"]]

    view = await (await api.client.get(f"/v1/subscriptions/{created['id']}", headers=api.auth(acme))).json()
    assert rotated["secret"] not in str(view) and len(view["secrets"]) == 2

    resp = await api.client.post(
        f"/v1/subscriptions/{created['id']}/rotate-secret",
        json={"overlap_seconds": 0},
        headers=api.auth(acme),
    )
    latest = (await resp.json())["secret"]
    assert (await api.store.get(created["id"])).signing_secrets() == [latest]


async def test_client_supplied_secret_is_used(api, acme):
    secret = generate_secret()
    created = await create(api, acme, {**NEW_SUB, "secret": secret})
    assert created["secret"] == secret
    assert (await api.store.get(created["id"])).signing_secrets() == [secret]


async def test_enable_disable(api, acme):
    sub_id = (await create(api, acme))["id"]
    resp = await api.client.post(
        f"/v1/subscriptions/{sub_id}/disable", json={"reason": "maintenance"}, headers=api.auth(acme)
    )
    assert (await resp.json())["disabled_reason"] == "maintenance"
    resp = await api.client.post(f"/v1/messages/m1/resend?subscription_id={sub_id}", headers=api.auth(acme))
    assert resp.status == 409
    resp = await api.client.post(f"/v1/subscriptions/{sub_id}/enable", headers=api.auth(acme))
    body = await resp.json()
    assert body["enabled"] is True and body["disabled_reason"] is None
    assert (await api.store.get(sub_id)).enabled


async def test_resend_and_recover_call_the_callbacks(api, acme):
    sub_id = (await create(api, acme))["id"]
    resp = await api.client.post(
        f"/v1/messages/msg_9/resend?subscription_id={sub_id}", headers=api.auth(acme)
    )
    assert resp.status == 202 and (await resp.json())["status"] == "queued"
    resp = await api.client.post(
        f"/v1/messages/msg_unknown/resend?subscription_id={sub_id}", headers=api.auth(acme)
    )
    assert resp.status == 404
    resp = await api.client.post("/v1/messages/msg_9/resend", headers=api.auth(acme))
    assert resp.status == 422
    since = "2026-01-01T00:00:00+00:00"
    resp = await api.client.post(
        f"/v1/subscriptions/{sub_id}/recover", json={"since": since}, headers=api.auth(acme)
    )
    assert resp.status == 202 and (await resp.json())["queued"] == 7
    assert (await resp.json())["not_examined"] == 2
    assert api.calls == [
        ("resend", "msg_9", sub_id),
        ("resend", "msg_unknown", sub_id),
        ("recover", sub_id, datetime(2026, 1, 1, tzinfo=UTC)),
    ]
    resp = await api.client.post(
        f"/v1/subscriptions/{sub_id}/recover", json={"since": "2026-01-01T00:00:00"}, headers=api.auth(acme)
    )
    assert resp.status == 422  # a time without a zone is ambiguous
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    resp = await api.client.post(
        f"/v1/subscriptions/{sub_id}/recover", json={"since": future}, headers=api.auth(acme)
    )
    assert resp.status == 422


async def test_callbacks_absent_is_501():
    store, keys = InMemorySubscriptionStore(holdings=HOLDINGS), ApiKeyStore()
    _, token = keys.issue("acme")
    app = create_api_app(store, keys, settings=ApiSettings(address_policy=AddressPolicy()))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        h = {"Authorization": f"Bearer {token}"}
        sub_id = (await (await client.post("/v1/subscriptions", json=NEW_SUB, headers=h)).json())["id"]
        resp = await client.post(f"/v1/messages/m/resend?subscription_id={sub_id}", headers=h)
        assert resp.status == 501


async def test_store_listeners_hear_api_changes(api, acme):
    heard = []

    async def listener(sub_id, sub):
        heard.append((sub_id, None if sub is None else sub.enabled))

    api.store.add_listener(listener)
    sub_id = (await create(api, acme))["id"]
    await api.client.post(f"/v1/subscriptions/{sub_id}/disable", headers=api.auth(acme))
    await api.client.delete(f"/v1/subscriptions/{sub_id}", headers=api.auth(acme))
    assert heard == [(sub_id, True), (sub_id, False), (sub_id, None)]


# ---- the double list: more endpoints per subscription ----

WITH_DR = {
    **NEW_SUB,
    "endpoints": [{"id": "dr", "role": "secondary", "url": "https://dr.acme.example/sms"}],
}


async def test_create_with_a_secondary_endpoint_shows_its_own_secret_once(api, acme):
    resp = await api.client.post("/v1/subscriptions", json=WITH_DR, headers=api.auth(acme))
    created = await resp.json()
    assert resp.status == 201, created
    (ep,) = created["endpoints"]
    assert (ep["id"], ep["role"], ep["url"]) == ("dr", "secondary", "https://dr.acme.example/sms")
    dr_secret = created["endpoint_secrets"]["dr"]
    assert dr_secret != created["secret"] and "secret" not in ep
    sub = await api.store.get(created["id"])
    assert sub.endpoint("dr").signing_secrets() == [dr_secret]
    # read back: fingerprints only
    got = await (await api.client.get(f"/v1/subscriptions/{created['id']}", headers=api.auth(acme))).json()
    assert "endpoint_secrets" not in got and dr_secret not in str(got)
    assert got["endpoints"][0]["secrets"][0]["fingerprint"] == ep["secrets"][0]["fingerprint"]


@pytest.mark.parametrize(
    ("url", "reason"), [("http://10.0.0.5/hook", "private"), ("http://localhost:8080/hook", "localhost")]
)
async def test_a_secondary_endpoint_passes_the_same_egress_checks(api, acme, url, reason):
    body = {**NEW_SUB, "endpoints": [{"id": "dr", "url": url}]}
    resp = await api.client.post("/v1/subscriptions", json=body, headers=api.auth(acme))
    err = (await resp.json())["error"]
    assert resp.status == 422 and err["field"] == "endpoints[0].url" and reason in err["message"]
    created = await (await api.client.post("/v1/subscriptions", json=NEW_SUB, headers=api.auth(acme))).json()
    resp = await api.client.patch(
        f"/v1/subscriptions/{created['id']}", json={"endpoints": body["endpoints"]}, headers=api.auth(acme)
    )
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "endpoints[0].url"


async def test_patch_endpoints_keeps_secrets_of_those_kept_and_shows_new_ones(api, acme):
    created = await (await api.client.post("/v1/subscriptions", json=WITH_DR, headers=api.auth(acme))).json()
    path = f"/v1/subscriptions/{created['id']}"
    dr_secret = created["endpoint_secrets"]["dr"]
    endpoints = [
        {"id": "p2", "role": "primary", "url": "https://p2.acme.example/sms"},
        {"id": "dr", "role": "secondary", "url": "https://dr2.acme.example/sms"},
    ]
    resp = await api.client.patch(path, json={"endpoints": endpoints}, headers=api.auth(acme))
    updated = await resp.json()
    assert resp.status == 200, updated
    assert list(updated["endpoint_secrets"]) == ["p2"]  # only the endpoint this request added
    sub = await api.store.get(created["id"])
    assert sub.endpoint("dr").signing_secrets() == [dr_secret] and sub.endpoint("dr").url.startswith(
        "https://dr2"
    )
    assert [ep.id for ep in sub.endpoint_list(sub.endpoints[0].role)] == ["main", "p2"]
    # a PATCH without endpoints leaves them alone; an empty list removes them
    await api.client.patch(path, json={"description": "x"}, headers=api.auth(acme))
    assert len((await api.store.get(created["id"])).endpoints) == 2
    await api.client.patch(path, json={"endpoints": []}, headers=api.auth(acme))
    assert (await api.store.get(created["id"])).endpoints == []
    resp = await api.client.patch(
        path, json={"endpoints": [{"id": "main", "url": "https://x.example/"}]}, headers=api.auth(acme)
    )
    assert resp.status == 422 and "main" in (await resp.json())["error"]["message"]


async def test_rotate_an_endpoints_secret(api, acme):
    created = await (await api.client.post("/v1/subscriptions", json=WITH_DR, headers=api.auth(acme))).json()
    path = f"/v1/subscriptions/{created['id']}/rotate-secret"
    resp = await api.client.post(path, json={"endpoint": "dr", "overlap_seconds": 0}, headers=api.auth(acme))
    rotated = await resp.json()
    assert resp.status == 200
    sub = await api.store.get(created["id"])
    assert sub.endpoint("dr").signing_secrets() == [rotated["secret"]]
    assert sub.signing_secrets() == [created["secret"]]  # the main endpoint's secret is untouched
    resp = await api.client.post(path, json={"endpoint": "nope"}, headers=api.auth(acme))
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "endpoint"
