"""POST /v1/messages and GET /v1/messages/{id} over real HTTP, with the Kafka sink replaced by a list (the
e2e test tests/e2e/test_outbound.py drives the same handlers against a real broker)."""

import pytest
from aiohttp.test_utils import TestClient, TestServer

from smsflow.api.apikeys import ApiKeyStore, Scope
from smsflow.api.app import create_api_app
from smsflow.api.messages import OutboundDesk, SinkUnavailable, UrlRules
from smsflow.delivery.callbacks import owner_callback_secrets
from smsflow.outbound.records import request_record
from smsflow.subscriptions.holdings import Holding
from smsflow.subscriptions.secretbox import SecretBox
from smsflow.subscriptions.store import InMemorySubscriptionStore

BOX = SecretBox.from_spec(f"k1:{SecretBox.generate_key()}")
HOLDINGS = [
    Holding(owner="acme", numbers=["+85230001000"], prefixes=["+8610690"], sender_ids=["ACME"]),
    Holding(owner="globex"),
]


class Api:
    def __init__(self, client, desk, keys, sent):
        self.client, self.desk, self.keys, self.sent = client, desk, keys, sent

    async def post(self, token, body, key=None):
        headers = {"Authorization": f"Bearer {token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        r = await self.client.post("/v1/messages", json=body, headers=headers)
        return r.status, await r.json()

    async def get(self, token, message_id):
        r = await self.client.get(f"/v1/messages/{message_id}", headers={"Authorization": f"Bearer {token}"})
        return r.status, await r.json()


@pytest.fixture
async def api():
    store = InMemorySubscriptionStore(holdings=HOLDINGS)
    keys = ApiKeyStore()
    sent = []
    down = {"now": False}

    async def sink(req):
        if down["now"]:
            raise SinkUnavailable("broker unreachable")
        sent.append(req)

    desk = OutboundDesk(
        sink, store.holding_of, callback_secrets=lambda owner: owner_callback_secrets(BOX, owner)
    )
    app = create_api_app(store, keys, messages=desk)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    a = Api(client, desk, keys, sent)
    a.down = down
    yield a
    await client.close()


OTP = {"to": "+85291234567", "from": "+85230001000", "text": "Your code is 481516", "priority": "otp"}


async def test_send_is_202_with_an_id_and_the_request_stored(api):
    token = api.keys.issue("acme")[1]
    status, body = await api.post(token, OTP)
    assert status == 202 and body["id"].startswith("mt_") and body["replayed"] is False
    (req,) = api.sent
    assert (req.message_id, req.owner, req.to, req.sender, req.priority) == (
        body["id"],
        "acme",
        "+85291234567",
        "+85230001000",
        "otp",
    )
    status, view = await api.get(token, body["id"])
    assert status == 200 and view["status"] == "queued" and view["history"] == []


async def test_from_must_be_a_held_number_or_a_held_sender_id(api):
    token = api.keys.issue("acme")[1]
    assert (await api.post(token, {**OTP, "from": "+8610690123"}))[0] == 202  # inside a held prefix
    assert (await api.post(token, {**OTP, "from": "ACME"}))[0] == 202
    assert (await api.post(token, {**OTP, "from": "Acme"}))[0] == 202  # the same registration
    # any tenant could send as any brand: phishing in another's name (HK's SSRS exists for it)
    status, body = await api.post(token, {**OTP, "from": "HSBC"})
    assert (status, body["error"]["field"]) == (422, "from")
    assert "not one of your sender IDs" in body["error"]["message"]
    status, body = await api.post(api.keys.issue("globex")[1], {**OTP, "from": "ACME"})
    assert status == 422 and body["error"]["field"] == "from"  # acme's sender ID is acme's
    api.desk.any_alphanumeric_sender = True  # api.alphanumeric_senders: any (a single-tenant deployment)
    assert (await api.post(token, {**OTP, "from": "HSBC"}))[0] == 202
    status, body = await api.post(token, {**OTP, "from": "+85230001001"})
    assert (
        status == 422
        and body["error"]["field"] == "from"
        and "not one of your numbers" in body["error"]["message"]
    )
    # globex holds nothing: it cannot send from acme's number
    status, body = await api.post(api.keys.issue("globex")[1], OTP)
    assert status == 422 and body["error"]["field"] == "from"


async def test_every_field_error_at_once(api):
    token = api.keys.issue("acme")[1]
    status, body = await api.post(token, {"to": "91234567", "from": "+85230001000", "text": "", "x": 1})
    assert status == 422
    assert {d["field"] for d in body["details"]} == {"x", "to", "text"}
    assert api.sent == []


async def test_idempotency_key_replays_the_first_id_and_refuses_another_body(api):
    token = api.keys.issue("acme")[1]
    s1, first = await api.post(token, OTP, key="order-17")
    # the same request written differently (spaces in the number) is the same request
    s2, again = await api.post(token, {**OTP, "to": "+852 9123 4567"}, key="order-17")
    assert (s1, s2) == (202, 202) and again == {**first, "replayed": True}
    assert len(api.sent) == 1
    s3, conflict = await api.post(token, {**OTP, "text": "another"}, key="order-17")
    assert s3 == 422 and conflict["error"]["code"] == "idempotency_conflict"
    # keys are per owner: another owner's same key is a new request
    api.desk.holding_of = lambda owner: HOLDINGS[0]
    s4, other = await api.post(api.keys.issue("initech")[1], OTP, key="order-17")
    assert s4 == 202 and other["id"] != first["id"]


async def test_idempotency_survives_a_restart_through_the_topic(api):
    """A new desk fed the stored request records (what the API reads back from sms.outbound.v1) replays."""
    token = api.keys.issue("acme")[1]
    _, first = await api.post(token, OTP, key="k1")
    sent = []

    async def sink(req):
        sent.append(req)

    fresh = OutboundDesk(sink, api.desk.holding_of)
    for req in api.sent:
        fresh.on_request(request_record(req))
    again = await fresh.send("acme", OTP, "k1")
    assert again.id == first["id"] and again.replayed and sent == []


async def test_history_is_the_owners_only(api):
    acme, globex = api.keys.issue("acme")[1], api.keys.issue("globex")[1]
    _, body = await api.post(acme, OTP)
    mid = body["id"]
    for n, (old, new) in enumerate([("queued", "submitted"), ("submitted", "sent")], 1):
        api.desk.on_status(
            {
                "event_id": f"{mid}#{n}",
                "message_id": mid,
                "owner": "acme",
                "segment": None,
                "segments_total": 1,
                "old_state": old,
                "new_state": new,
                "overall": new,
                "reason": "r",
                "at": 1_700_000_000_000 + n,
            }
        )
    status, view = await api.get(acme, mid)
    assert status == 200 and view["status"] == "sent"
    assert [h["new_state"] for h in view["history"]] == ["submitted", "sent"]
    assert (await api.get(globex, mid))[0] == 404
    assert (await api.get(acme, "mt_nope"))[0] == 404


async def test_operator_keys_and_missing_scope_cannot_send(api):
    admin = api.keys.issue(None)[1]
    assert (await api.post(admin, OTP))[0] == 403
    read_only = api.keys.issue("acme", scopes=[Scope.READ])[1]
    assert (await api.post(read_only, OTP))[0] == 403


async def test_kafka_down_is_503_and_nothing_is_remembered(api):
    token = api.keys.issue("acme")[1]
    api.down["now"] = True
    status, body = await api.post(token, OTP, key="k2")
    assert status == 503
    api.down["now"] = False
    status, body = await api.post(token, OTP, key="k2")
    assert status == 202 and body["replayed"] is False and len(api.sent) == 1


async def test_openapi_documents_what_is_served(api):
    doc = await (await api.client.get("/openapi.json")).json()
    served = {r.resource.canonical for r in api.client.app.router.routes() if r.method != "HEAD"}
    assert served == set(doc["paths"])
    assert "from" in doc["components"]["schemas"]["MessageSend"]["properties"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8080/cb", "127.0.0.1 is a loopback address"),
        ("https://10.1.2.3/cb", "10.1.2.3 is a private address"),
        ("https://[::ffff:169.254.169.254]/latest", "is a link-local address"),
        ("http://localhost/cb", "localhost is not a reachable webhook host"),
    ],
)
async def test_a_callback_url_is_held_to_the_subscription_url_rules(api, url, reason):
    token = api.keys.issue("acme")[1]
    status, body = await api.post(token, {**OTP, "callback_url": url, "to": "12345"})
    assert status == 422, body
    fields = {d["field"]: d["message"] for d in body["details"]}
    assert reason in fields["callback_url"] and "to" in fields  # every error at once
    assert api.sent == []


async def test_a_public_callback_url_is_accepted_and_https_can_be_required():
    store = InMemorySubscriptionStore(holdings=HOLDINGS)
    sent = []

    async def sink(req):
        sent.append(req)

    for rules, url, accepted in (
        (UrlRules(), "https://hooks.acme.example/cb", True),
        (UrlRules(https_only=True), "http://hooks.acme.example/cb", False),
        (UrlRules(address_policy=None), "http://127.0.0.1:9/cb", True),  # block_private_addresses: false
    ):
        desk = OutboundDesk(sink, store.holding_of, url_rules=rules)
        out = await desk.send("acme", {**OTP, "callback_url": url}, None)
        assert (not isinstance(out, list)) is accepted, (rules, url, out)
        if not accepted:
            assert out == [("callback_url", "must be https://")]
    assert [r.callback_url for r in sent] == ["https://hooks.acme.example/cb", "http://127.0.0.1:9/cb"]


async def test_the_callback_secret_is_the_owners_and_an_operator_has_none(api):
    acme, globex, admin = (api.keys.issue(o)[1] for o in ("acme", "globex", None))

    async def secret(token):
        r = await api.client.get("/v1/callback-secret", headers={"Authorization": f"Bearer {token}"})
        return r.status, await r.json()

    (s1, a), (s2, g), (s3, _) = await secret(acme), await secret(globex), await secret(admin)
    assert (s1, s2, s3) == (200, 200, 403)
    assert a["secret"] == owner_callback_secrets(BOX, "acme")[0] and a["secrets"] == [a["secret"]]
    assert g["secret"] != a["secret"]


async def test_one_owners_flood_is_429_before_anything_is_stored_and_others_send_on(api):
    """Nothing bounded what one tenant sent: a flood filled sms.outbound.v1, the carriers' windows and
    the connectors' 20,000 waiting places ahead of everyone else's OTPs. Each owner now has a rate in segments
    (a two-part message counts two); refused, invalid, replayed and unstored requests cost nothing."""
    from smsflow.api.buckets import OwnerBuckets

    now = [0.0]
    api.desk.rates = OwnerBuckets(10, 2.0, clock=lambda: now[0], limits={"globex": (20, 5.0)})
    api.desk.holding_of = lambda owner: HOLDINGS[0]
    acme, globex = api.keys.issue("acme")[1], api.keys.issue("globex")[1]
    long = {**OTP, "text": "x" * 200}  # two segments
    assert [(await api.post(acme, long))[0] for _ in range(5)] == [202] * 5  # the burst: 10 segments
    assert (await api.post(acme, {**OTP, "to": "12"}))[0] == 422  # invalid: counted nowhere
    r = await api.client.post("/v1/messages", json=OTP, headers={"Authorization": f"Bearer {acme}"})
    body = await r.json()
    assert (r.status, r.headers["Retry-After"], body["error"]["code"]) == (429, "1", "too_many_requests")
    assert "2 segments per second after a burst of 10" in body["error"]["message"]
    assert len(api.sent) == 5  # the refused one was not stored
    statuses = [(await api.post(globex, OTP))[0] for _ in range(21)]
    assert statuses == [202] * 20 + [429]  # another owner, its own bucket (and its own limit)
    now[0] += 1.0  # two segments more for acme
    assert (await api.post(acme, long))[0] == 202 and (await api.post(acme, OTP))[0] == 429
    now[0] += 0.5
    api.down["now"] = True  # not stored: its segment is given back
    assert (await api.post(acme, OTP, key="k"))[0] == 503
    api.down["now"] = False
    assert (await api.post(acme, OTP, key="k"))[0] == 202
    assert (await api.post(acme, OTP, key="k"))[1]["replayed"] is True  # a replay sends and costs nothing


def test_buckets_refill_by_their_own_limit_and_forget_full_ones():
    from smsflow.api.buckets import OwnerBuckets

    now = [0.0]
    b = OwnerBuckets(10, 1.0, clock=lambda: now[0], limits={"big": (100, 50.0)})
    assert b.take("a", 10) == 0 and b.take("a", 3) == pytest.approx(3.0)
    assert b.take("a", 11) == float("inf")  # more than it may ever hold
    assert b.take("big", 100) == 0 and b.take("big", 50) == pytest.approx(1.0)
    b.give_back("big", 25)
    assert b.take("big", 50) == pytest.approx(0.5)
    b.PRUNE_AT = 2
    now[0] += 3.0  # big is full again after 2 s, a after 10 s
    b.take("c")
    assert set(b._buckets) == {"a", "c"}
    with pytest.raises(ValueError):
        OwnerBuckets(0, 1.0)


def test_send_rate_settings_are_checked_by_name():
    from smsflow.config import ApiConfig

    cfg = ApiConfig()
    defaults = (cfg.segments_per_second_per_owner, cfg.segments_burst_per_owner, cfg.segment_rates)
    assert defaults == (100, 1000, {})
    with pytest.raises(ValueError, match="segments_burst_per_owner"):
        ApiConfig(segments_burst_per_owner=9)  # a 10-part message could never be sent
    with pytest.raises(ValueError, match=r"segment_rates\.acme\.per_second"):
        ApiConfig(segment_rates={"acme": {"per_second": 0, "burst": 100}})
    own = ApiConfig(segment_rates={"acme": {"per_second": 500, "burst": 5000}}).segment_rates["acme"]
    assert (own.per_second, own.burst) == (500, 5000)


async def test_idempotency_keys_cost_no_memory_once_their_requests_are_answered(api):
    """A lock per Idempotency-Key serialises concurrent requests with it; they were never dropped (one per
    key ever used, growing with every request)."""
    token = api.keys.issue("acme")[1]
    for i in range(20):
        assert (await api.post(token, {**OTP, "text": f"code {i}"}, key=f"k{i}"))[0] == 202
    assert (await api.post(token, {**OTP, "text": "code 3"}, key="k3"))[1]["replayed"] is True
    assert len(api.desk._key_locks) == 0 and api.desk._book.count("acme") == 20
