"""Issue 12: outbound SMS through the real pipeline, with the simulator as the SMSC.

Real broker, registry, `smsflow api`, `worker` and `connector` processes; the simulated SMSC records every
submit_sm it received (its submit ledger) and sends a DELIVRD receipt (TLVs and text form) for each one it
accepted. Customers send through POST /v1/messages; statuses are read back through GET /v1/messages/{id}.

- every message (GSM, UCS-2 Chinese, multipart of both) is submitted once per segment, on the primary
  carrier; the parts the SMSC received decode back to the text; receipts are correlated and the final status
  is delivered, per segment and overall;
- the primary carrier refusing every submit for now (ESME_RTHROTTLED): each segment is retried on it, then
  handed to the secondary and delivered there; none lost, none accepted twice;
- kill -9 of the connector and of the worker mid-run: no segment is accepted twice by the SMSC, and every
  message ends delivered except those whose submit was in flight at the kill (held: their outcome cannot be
  known, policy `hold`), at most the submit window;
- callbacks: every transition POSTed to the message's callback_url, signed with its owner's secret (checked
  with the `standardwebhooks` reference package), one per transition, in order, never at another owner's
  URL; a URL that never answers is tried on the retry schedule, then dead-lettered, holding up no one;
- a double-list decision to the secondary (the primary's binds refused): new messages are submitted on the
  secondary carrier, none on the primary, also after it binds again and after a worker restart.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiohttp import web
from confluent_kafka import Consumer, Producer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from devkit.simulator.faults import Fault, FaultKind, parse_fault
from devkit.simulator.traffic import LogicalSms
from smsflow.api.apikeys import ApiKeyStore
from smsflow.outbound.submission import SUBMIT_TOPIC, UNMATCHED_RECEIPTS_TOPIC, owner_of
from smsflow.schemas import DELIVERY_TOPIC, WEBHOOK_DLQ_TOPIC
from smsflow.smpp.constants import TlvTag
from smsflow.smpp.pdu import make_tlv
from smsflow.sms.text import decode_text
from smsflow.sms.udh import concat_info, parse_udh
from tests.e2e.test_crash_consistency import _wait_ready as wait_ready
from tests.e2e.test_double_list import TEST_NUMBER, Topics, healthy_with_probes, routing
from tests.e2e.test_webhook_api import wait_api_up
from tests.e2e.test_webhook_failures import delivery_events, free_port, json_records, wait_until

pytestmark = pytest.mark.e2e

SENDER = "+85230001000"
SENDER_2 = "+85230002000"
ESME_RTHROTTLED = 0x58
FINAL = {"delivered", "failed", "rejected", "expired"}

GSM_LONG = "Your parcel 4711 is on its way. " * 7  # 224 characters: 2 parts of GSM
CHINESE = "您的验证码是 481516，五分钟内有效。"
CHINESE_LONG = (
    "短信平台出站测试：这是一条很长的中文消息，用来检查分段与重组是否正确。" * 3
)  # 3 parts of UCS-2


class Customer:
    def __init__(self, http: aiohttp.ClientSession, base: str, token: str, sender: str = SENDER) -> None:
        self.http, self.base, self.token, self.sender = http, base, token, sender

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            return r.status, (await r.json() if r.status != 204 else None)

    async def send(self, to: str, text: str, **extra: Any) -> str:
        status, body = await self.call(
            "POST", "/v1/messages", {"to": to, "from": self.sender, "text": text, **extra}
        )
        assert status == 202, body
        return str(body["id"])

    async def statuses(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        out = {}
        for mid in ids:
            status, body = await self.call("GET", f"/v1/messages/{mid}")
            assert status == 200, body
            out[mid] = body
        return out


@dataclass(frozen=True)
class CustomerApi:
    """The `smsflow api` role's settings for a test: a free port, a keys file with one customer (acme), and
    an admin key in the env."""

    config: dict[str, Any]
    env: dict[str, str]
    token: str
    admin: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.config['port']}"

    @classmethod
    def issue(cls, tmp_path: Path, tokens: dict[str, str] | None = None) -> CustomerApi:
        """``tokens``: filled with a customer key per owner named in it (besides acme's)."""
        keys = ApiKeyStore()
        key, token = keys.issue("acme", label="e2e customer")
        issued = [key]
        for owner in tokens or {}:
            other, (tokens or {})[owner] = keys.issue(owner, label=f"e2e customer {owner}")
            issued.append(other)
        _, admin = keys.issue(None, label="e2e admin")
        keys_file = tmp_path / "keys.jsonl"
        keys_file.write_bytes(b"".join(orjson.dumps(k.to_record()) + b"\n" for k in issued))
        config = {
            "host": "127.0.0.1",
            "port": free_port(),
            "admin_key_env": "E2E_ADMIN_KEY",
            "keys_file": str(keys_file),
        }
        return cls(config, {"E2E_ADMIN_KEY": admin}, token, admin)


async def start(
    pipeline: Any,
    tmp_path: Path,
    outbound: dict[str, Any],
    carrier_extra: dict[str, Any] | None = None,
    webhooks: dict[str, Any] | None = None,
    tokens: dict[str, str] | None = None,
    **pipeline_kw: Any,
) -> tuple[Any, str, str]:
    """``tokens``: filled with a customer key per owner named in it (besides acme's, returned);
    ``pipeline_kw``: more settings of the pipeline (a routing section, the simulator's test numbers)."""
    api = CustomerApi.issue(tmp_path, tokens)
    p = await pipeline(
        carriers=2,
        receipts=True,
        api=api.config,
        extra_env=api.env,
        carrier_extra=carrier_extra,
        webhooks=webhooks,
        **pipeline_kw,
    )
    cfg = yaml.safe_load(p.config_path.read_text())
    cfg["outbound"] = outbound
    p.config_path.write_text(yaml.safe_dump(cfg))
    p.start("worker", "connector", "api")
    return p, api.base, api.token


async def hold_sender(
    http: aiohttp.ClientSession, base: str, admin: str, owner: str = "acme", sender: str = SENDER
) -> None:
    async with http.put(
        f"{base}/v1/holdings/{owner}",
        json={"numbers": [sender]},
        headers={"Authorization": f"Bearer {admin}"},
    ) as r:
        assert r.status == 200, await r.text()


def submitted_texts(p: Any, account: str | None = None) -> dict[str, list[str]]:
    """Per destination, the texts the SMSC accepted (parts joined by their concatenation reference)."""
    return joined_texts((r.dest, r.short_message, r.data_coding) for r in p.smsc.submits.accepted(account))


def joined_texts(parts: Iterable[tuple[str, bytes, int]]) -> dict[str, list[str]]:
    """Per destination ('+' and digits), the texts of submitted octets (destination, short_message,
    data_coding), a message's parts joined by their concatenation reference."""
    by_msg: dict[tuple[str, int | None], dict[int, bytes]] = defaultdict(dict)
    coding: dict[tuple[str, int | None], int] = {}
    for dest, octets, data_coding in parts:
        # the stage sets UDHI (esm_class 0x40) on parts; a carrier's ledger may keep only the octets: a
        # leading UDH length of 5 (8-bit reference) or 6 (16-bit) with a concatenation element is a part
        info = None
        body = octets
        if octets[:1] in (b"\x05", b"\x06"):
            ies, rest = parse_udh(octets)
            info = concat_info(ies)
            if info is not None:
                body = rest
        ref = info.ref if info is not None else None
        seq = info.seq if info is not None else 1
        by_msg[(dest, ref)][seq] = body
        coding[(dest, ref)] = data_coding
    out: dict[str, list[str]] = defaultdict(list)
    for (dest, ref), got in by_msg.items():
        joined = b"".join(got[i] for i in sorted(got))
        out["+" + dest].append(decode_text(joined, coding[(dest, ref)]).text)
    return out


def _complete(view: dict[str, Any]) -> bool:
    """Final, with its history read whole: the step that made a message final publishes the segment's
    transition and then the message's, and a view read between the two already says final (each entry
    carries the overall state) one entry short."""
    status = view["status"]
    return status in FINAL and any(h["segment"] is None and h["new_state"] == status for h in view["history"])


async def wait_final(customer: Customer, ids: list[str], timeout: float, p: Any) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        views = await customer.statuses(ids)
        pending = [m for m, v in views.items() if not _complete(v)]
        if not pending:
            return views
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(pending)} of {len(ids)} not final after {timeout}s: "
                f"{[(m, views[m]['status']) for m in pending[:5]]}\nsmsc={p.smsc.submits.summary('acct0')} "
                f"{p.smsc.submits.summary('acct1')}\n{p.logs()}"
            )
        await asyncio.sleep(0.5)


def esm0_receipt(message_id: str, *, text: bool, tlvs: bool) -> tuple[dict[str, Any], list[Any]]:
    """A receipt as some carriers send it: esm_class 0 (an ordinary SMS by its flags), with only the text form
    or only the TLVs."""
    body = (
        f"id:{message_id} sub:001 dlvrd:001 submit date:2611302100 done date:2611302101 stat:DELIVRD err:000"
    )
    params: dict[str, Any] = {
        "source_addr": "85291000000",
        "destination_addr": SENDER.lstrip("+"),
        "esm_class": 0,
        "data_coding": 0,
        "short_message": body.encode() if text else b"",
    }
    extra = (
        [make_tlv(TlvTag.receipted_message_id, message_id), make_tlv(TlvTag.message_state, 2)] if tlvs else []
    )
    return params, extra


def read_topic(
    bootstrap: str, topic: str, want: int, timeout: float, what: Callable[[Any], Any] | None = None
) -> list[Any]:
    """``want`` records of ``topic`` from its start (their values as JSON, or ``what(message)``)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"e2e-{time.time_ns()}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < want and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.value():
                out.append(orjson.loads(msg.value()) if what is None else what(msg))
    finally:
        consumer.close()
    return out


async def test_messages_are_submitted_once_and_end_delivered(pipeline, tmp_path: Path) -> None:
    p, base, token = await start(
        pipeline,
        tmp_path,
        {"attempts_per_route": 2, "retry_backoff_s": [0.3]},
        carrier_extra={"receipts": {"in_text": True}},
    )
    async with aiohttp.ClientSession() as http:
        await wait_api_up(http, base, p)
        await hold_sender(http, base, p.env["E2E_ADMIN_KEY"])
        customer = Customer(http, base, token)
        kinds = ["Your code is {n}", CHINESE, GSM_LONG, CHINESE_LONG] * 3
        texts = {f"+8529100{i:04d}": kind.format(n=100000 + i) for i, kind in enumerate(kinds)}
        ids = {}
        for i, (to, text) in enumerate(texts.items()):
            ids[to] = await customer.send(to, text, priority="otp" if i % 2 else "bulk")
        views = await wait_final(customer, list(ids.values()), 120, p)
        # receipts in esm_class 0, with only the text form or only the TLVs, for ids nobody submitted
        for mid, text, tlvs in (("DEADBEEF", True, False), ("CAFE0001", False, True)):
            params, extra = esm0_receipt(mid, text=text, tlvs=tlvs)
            sms = LogicalSms(params["source_addr"], params["destination_addr"], "", 0)
            p.smsc.enqueue_pdu(params, extra, sms, account="acct0")
        unmatched = await asyncio.to_thread(read_topic, p.stack.bootstrap, UNMATCHED_RECEIPTS_TOPIC, 2, 60)
        segments = sum(v["history"][0]["segments_total"] for v in views.values())
        owners = await asyncio.to_thread(
            read_topic, p.stack.bootstrap, SUBMIT_TOPIC, segments, 60, lambda m: owner_of(m.headers())
        )

    reasons = {u["message_id"]: u["reason"] for u in unmatched}
    assert set(reasons) == {"DEADBEEF", "CAFE0001"}, unmatched
    for rid, reason in reasons.items():
        assert reason.startswith(f"no submit to carrier-0 has id {rid} (read as hex"), reason
    assert len(p.receiver.log.messages) == 0  # receipts, not SMS: the customer's webhook got none of them
    assert {mid: v["status"] for mid, v in views.items()} == {mid: "delivered" for mid in ids.values()}
    for mid in ids.values():
        history = views[mid]["history"]
        parts = history[0]["segments_total"]
        segs = {h["segment"]: h["new_state"] for h in history if h["segment"] is not None}
        assert segs == dict.fromkeys(range(1, parts + 1), "delivered"), history
        overall = [h["new_state"] for h in history if h["segment"] is None]
        assert overall[-1] == "delivered" and overall[0] == "submitted", overall
        assert all(h["route_id"] == "route-0" for h in history if h["segment"] is not None)
    assert p.smsc.submits.submitted_twice() == []
    assert submitted_texts(p) == {to: [text] for to, text in texts.items()}
    assert p.smsc.submits.summary("acct1")["submits"] == 0
    # each submit record names its customer: the connector shares a carrier fairly between customers
    assert owners == ["acme"] * segments
    # ten days on (a tick that says so; a track is kept 5 days after the later of its validity, here 48 h,
    # and its last change), every finished track leaves the status stage's table (a tombstone in its
    # changelog: a restarted worker no longer reads every message ever sent); the API's statuses, read from
    # sms.outbound.status.v1, stay
    # and the concatenation references of the multipart ones (last used 10 days ago; kept 24 h after use)
    multipart = {to for to, text in texts.items() if text in (GSM_LONG, CHINESE_LONG)}
    pruned, refs = await asyncio.to_thread(
        prune_by_a_tick_days_later, p, set(ids.values()), multipart, 10, 60
    )
    assert pruned == set(ids.values()), p.logs()
    assert {key.rsplit("|", 1)[-1] for key in refs} == multipart, refs
    assert all(refs.values()), refs
    async with aiohttp.ClientSession() as http:
        after = await Customer(http, base, token).statuses(list(ids.values()))
    assert {mid: v["status"] for mid, v in after.items()} == {mid: "delivered" for mid in ids.values()}


def prune_by_a_tick_days_later(
    p: Any, ids: set[str], destinations: set[str], days: int, timeout: float
) -> tuple[set[str], dict[str, bool]]:
    """Write the outbound stage a tick ``days`` ahead to every partition of its tick topic. Returns the
    message ids (of ``ids``) whose track the status table's changelog then deletes (tombstones), and every
    key the references table's changelog held (waiting for one per destination of ``destinations``), with
    whether its last record deletes it."""
    ticks = f"{p.env_app_id}-outbound-ticks"
    producer = Producer({"bootstrap.servers": p.stack.bootstrap})
    partitions = producer.list_topics(ticks, timeout=10).topics[ticks].partitions
    now = orjson.dumps({"now": int(time.time() * 1000) + days * 86_400_000})
    for partition in partitions:
        producer.produce(ticks, now, partition=partition)
    assert producer.flush(10) == 0
    tracks = f"{p.env_app_id}-outbound-status-changelog"
    refs = f"{p.env_app_id}-outbound-refs-changelog"
    consumer = Consumer(
        {
            "bootstrap.servers": p.stack.bootstrap,
            "group.id": f"e2e-{time.time_ns()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([tracks, refs])
    deleted: dict[str, dict[str, bool]] = {tracks: {}, refs: {}}  # key -> its last record is a tombstone
    deadline = time.monotonic() + timeout

    def done() -> bool:
        gone = {k for k, d in deleted[tracks].items() if d}
        seen = {key.rsplit("|", 1)[-1] for key in deleted[refs]}
        return ids <= gone and destinations <= seen and all(deleted[refs].values())

    try:
        while not done() and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            key = (msg.key() or b"").decode().strip('"')
            deleted[msg.topic()][key] = msg.value() is None
    finally:
        consumer.close()
    return {k for k, d in deleted[tracks].items() if d} & ids, deleted[refs]


async def test_primary_refusing_for_now_moves_submits_to_the_secondary(pipeline, tmp_path: Path) -> None:
    p, base, token = await start(pipeline, tmp_path, {"attempts_per_route": 2, "retry_backoff_s": [0.3]})
    p.smsc.set_fault("acct0", Fault(FaultKind.submit_errors, status=ESME_RTHROTTLED, ratio=1.0))
    async with aiohttp.ClientSession() as http:
        await wait_api_up(http, base, p)
        await hold_sender(http, base, p.env["E2E_ADMIN_KEY"])
        customer = Customer(http, base, token)
        texts = {
            f"+8529200{i:04d}": t
            for i, t in enumerate([f"OTP {i}" for i in range(4)] + [GSM_LONG, CHINESE_LONG])
        }
        ids = {to: await customer.send(to, text) for to, text in texts.items()}
        views = await wait_final(customer, list(ids.values()), 120, p)
        assert {v["status"] for v in views.values()} == {"delivered"}
        segments = sum(v["history"][0]["segments_total"] for v in views.values())
        for v in views.values():
            delivered = [
                h for h in v["history"] if h["segment"] is not None and h["new_state"] == "delivered"
            ]
            assert {h["route_id"] for h in delivered} == {"route-1"}, v["history"]

        # every segment was refused for now twice on the primary, then accepted once on the secondary
        primary, secondary = p.smsc.submits.for_account("acct0"), p.smsc.submits.for_account("acct1")
        assert len(primary) == 2 * segments and {r.status for r in primary} == {ESME_RTHROTTLED}
        assert len(p.smsc.submits.accepted("acct1")) == len(secondary) == segments
        assert p.smsc.submits.submitted_twice() == []
        assert submitted_texts(p, "acct1") == {to: [text] for to, text in texts.items()}

        # a permanent error is final: rejected with the SMPP status, and not tried on the other route
        p.smsc.clear_fault("acct0")
        p.smsc.set_fault("acct0", Fault(FaultKind.submit_errors, status=0x0B, ratio=1.0))
        before = len(p.smsc.submits.for_account("acct1"))
        bad = await customer.send("+85292009999", "to a number the carrier refuses")
        (view,) = (await wait_final(customer, [bad], 60, p)).values()
        assert view["status"] == "rejected"
        assert any("0x0000000B" in (h["detail"] or "") for h in view["history"]), view["history"]
        assert len(p.smsc.submits.for_account("acct1")) == before


async def ready_customer(http: aiohttp.ClientSession, p: Any, base: str, token: str) -> Customer:
    """acme's customer, once the API is up and acme holds SENDER."""
    await wait_api_up(http, base, p)
    await hold_sender(http, base, p.env["E2E_ADMIN_KEY"])
    return Customer(http, base, token)


def mixed_traffic(
    customer: Customer, prefix: str, n: int, gap_s: float, validity_s: int, until: asyncio.Event | None = None
) -> tuple[dict[str, str], dict[str, str], asyncio.Task[None]]:
    """``n`` messages (a short GSM code, a Chinese OTP, a 2-part GSM text in turn), one per number
    ``prefix`` + 4 digits, sent every ``gap_s`` by a task, or until ``until`` is set: (texts and ids by
    number, the task). ``ids`` holds the ones sent."""
    kinds = ["Code {n}", CHINESE, GSM_LONG]
    texts = {f"{prefix}{i:04d}": kinds[i % 3].format(n=i) for i in range(n)}
    ids: dict[str, str] = {}

    async def send_all() -> None:
        for to, text in texts.items():
            if until is not None and until.is_set():
                return
            ids[to] = await customer.send(to, text, validity_s=validity_s)
            await asyncio.sleep(gap_s)

    return texts, ids, asyncio.create_task(send_all())


async def test_kill_9_of_connector_and_worker_submits_nothing_twice(pipeline, tmp_path: Path) -> None:
    p, base, token = await start(pipeline, tmp_path, {"attempts_per_route": 2, "retry_backoff_s": [0.3]})
    async with aiohttp.ClientSession() as http:
        customer = await ready_customer(http, p, base, token)
        texts, ids, sender = mixed_traffic(customer, "+8529300", 45, gap_s=0.1, validity_s=60)
        accepted = lambda: len(p.smsc.submits.accepted())  # noqa: E731
        await wait_until(lambda: accepted() >= 15, 60, "15 submits accepted", p.logs)
        p.kill("connector")
        p.start("connector")
        await wait_until(lambda: accepted() >= 35, 90, "35 submits accepted", p.logs)
        p.kill("worker")
        p.start("worker")
        await sender
        views = await wait_final(customer, list(ids.values()), 150, p)

    assert p.smsc.submits.submitted_twice() == []
    statuses = {to: views[mid]["status"] for to, mid in ids.items()}
    undelivered = {to: s for to, s in statuses.items() if s != "delivered"}
    # only a submit in flight at the connector's kill can end unknown (held, then expired): at most its window
    histories = {to: views[ids[to]]["history"] for to in undelivered}
    assert set(undelivered.values()) <= {"expired"} and len(undelivered) <= 10, (
        f"{undelivered}\n{histories}\n{p.logs()}"
    )
    got = submitted_texts(p)
    for to, text in texts.items():
        if to not in undelivered:
            assert got[to] == [text], to
    print(f"\nkill -9: {len(texts)} messages, {len(undelivered)} held as unknown and expired: {undelivered}")


async def test_connectors_joining_and_leaving_submit_nothing_twice(pipeline, tmp_path: Path) -> None:
    """Two connector processes serving the same carriers share the submit topic's partitions: a second one
    joins mid-traffic (the first gives its partitions up and gets some back) and the first then stops (the
    second takes them all). A revocation lets go of a partition only when nothing of it runs there any more,
    and the next owner reads the ledger to its end first: no segment is submitted twice, and, with nothing
    killed, every message is delivered (a stop once committed segments it had not submitted)."""
    p, base, token = await start(pipeline, tmp_path, {"attempts_per_route": 2, "retry_backoff_s": [0.3]})
    first_log = lambda: p.procs["connector"].log_path.read_text(errors="replace")  # noqa: E731
    async with aiohttp.ClientSession() as http:
        customer = await ready_customer(http, p, base, token)
        enough = asyncio.Event()  # the traffic goes on until both hand-overs happened under it
        texts, ids, sender = mixed_traffic(customer, "+8529310", 1000, 0.12, validity_s=120, until=enough)
        accepted = lambda: len(p.smsc.submits.accepted())  # noqa: E731
        await wait_until(lambda: accepted() >= 10, 60, "10 submits accepted", p.logs)
        p._spawn("connector-2", "connector", ["connector", "--config", str(p.config_path)])
        await wait_until(lambda: "partitions revoked" in first_log(), 90, "the second one's join", p.logs)
        joined_at = accepted()
        await wait_until(lambda: accepted() >= joined_at + 20, 60, "20 submits after the join", p.logs)
        # not p.stop(): it waits for the process in this event loop, where the simulated SMSC runs too (its
        # resps to the other connector would wait, and those submits end as unknown outcomes)
        await asyncio.to_thread(p.stop, "connector")
        left_at = accepted()
        await wait_until(lambda: accepted() >= left_at + 10, 60, "10 submits after the leave", p.logs)
        enough.set()
        await sender
        views = await wait_final(customer, list(ids.values()), 150, p)
        await asyncio.to_thread(p.stop, "connector-2")

    assert p.smsc.submits.submitted_twice() == []
    statuses = {to: views[mid]["status"] for to, mid in ids.items()}
    assert set(statuses.values()) == {"delivered"}, f"{statuses}\n{p.logs()}"
    got = submitted_texts(p)
    assert {to: got[to] for to in ids} == {to: [texts[to]] for to in ids}
    revocations = first_log().count("partitions revoked")
    assert revocations >= 2, p.logs()  # the join, then its own stop
    print(f"\nconnectors: {len(ids)} messages, {accepted()} submits, the first revoked {revocations} times")


class CallbackSite:
    """The customers' callback endpoints: /acme and /globex answer 204 to anything, /dead never answers (the
    sender's timeout ends each attempt); the first request to ``slow_once`` is answered ``slow_s`` late.
    Every request is kept, in arrival order, to be verified later."""

    def __init__(self, slow_once: str = "", slow_s: float = 0.0) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes, float]] = []
        self._runner: web.AppRunner | None = None
        self.base = ""
        self.slow_once, self.slow_s = slow_once, slow_s
        self.slowed: str | None = None  # the webhook-id of the request answered late

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append((request.path, headers, body, time.monotonic()))
        if request.path == "/dead":
            await asyncio.sleep(3600)
        if request.path == self.slow_once and self.slowed is None:
            self.slowed = headers["webhook-id"]
            await asyncio.sleep(self.slow_s)
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def at(self, path: str) -> list[tuple[dict[str, str], bytes, float]]:
        return [(h, b, t) for p, h, b, t in self.requests if p == path]


async def test_callbacks_are_signed_one_per_transition_in_order_and_a_dead_url_is_dead_lettered(
    pipeline, tmp_path: Path
) -> None:
    tokens = {"globex": ""}
    p, base, token = await start(
        pipeline,
        tmp_path,
        {"attempts_per_route": 2, "retry_backoff_s": [0.3], "callback_timeout_s": 2},
        webhooks={"retry_delays_s": [0, 2, 2], "retry_jitter": 0},
        tokens=tokens,
    )
    # globex's endpoint answers its first callback after the sender's 2 s: received, yet failed for the
    # sender, so it is sent again under the same webhook-id, after the transitions behind it
    site = CallbackSite(slow_once="/globex", slow_s=3)
    await site.start()
    try:
        async with aiohttp.ClientSession() as http:
            await wait_api_up(http, base, p)
            admin = p.env["E2E_ADMIN_KEY"]
            await hold_sender(http, base, admin)
            await hold_sender(http, base, admin, "globex", SENDER_2)
            acme, globex = Customer(http, base, token), Customer(http, base, tokens["globex"], SENDER_2)
            secrets = {}
            for owner, customer in (("acme", acme), ("globex", globex)):
                status, body = await customer.call("GET", "/v1/callback-secret")
                assert status == 200, body
                secrets[owner] = body["secret"]
            assert secrets["acme"] != secrets["globex"]

            # the dead URL's message first: its callbacks must hold up nobody else's
            dead = await acme.send("+85294000000", "Code 1", callback_url=f"{site.base}/dead")
            sent = {
                "acme": [
                    await acme.send(f"+8529400{i:04d}", text, callback_url=f"{site.base}/acme")
                    for i, text in enumerate(["Code 2", CHINESE, GSM_LONG], start=1)
                ],
                "globex": [
                    await globex.send(f"+8529500{i:04d}", text, callback_url=f"{site.base}/globex")
                    for i, text in enumerate(["Code 3", CHINESE_LONG])
                ],
            }
            silent = await acme.send("+85294009999", "no callback for this one")
            views = await wait_final(acme, [dead, *sent["acme"], silent], 120, p)
            views |= await wait_final(globex, sent["globex"], 120, p)
            expected = {mid: [h["event_id"] for h in views[mid]["history"]] for mid in views}

            def arrived(owner: str) -> dict[str, list[str]]:
                got: dict[str, list[str]] = defaultdict(list)
                for headers, body, _t in site.at(f"/{owner}"):
                    got[orjson.loads(body)["message_id"]].append(headers["webhook-id"])
                return got

            live = {m for o in sent for m in sent[o]}

            def callback_attempts() -> list[dict[str, Any]]:
                return [
                    e
                    for e in delivery_events(p.stack.bootstrap, p.stack.registry_url)
                    if e["message_id"] in live
                ]

            def problems(attempts: list[dict[str, Any]] | None) -> dict[str, str]:
                got = {o: arrived(o) for o in sent}
                out = {}
                for o in sent:
                    for m in sent[o]:
                        if got[o].get(m) == expected[m]:
                            continue  # the common case: each once, in order, nothing to look up
                        if attempts is None:
                            out[m] = "not yet"
                            continue
                        why = arrival_problem(got[o].get(m, []), expected[m], resent(attempts))
                        if why:
                            out[m] = why
                return out

            def all_arrived() -> bool:
                if not problems(None):
                    return True
                got = {o: arrived(o) for o in sent}
                if any(not set(expected[m]) <= set(got[o].get(m, ())) for o in sent for m in sent[o]):
                    return False  # some transition has not arrived at all yet
                return not problems(callback_attempts())  # a re-sent one: the sender must have seen it fail

            try:
                await wait_until(all_arrived, 60, "a callback per transition of every live message", p.logs)
            except AssertionError as exc:
                attempts = callback_attempts()
                sender_saw = [  # what the sender saw of each POST: when, which transition, how it ended
                    f"{e['ts']:%H:%M:%S.%f} {e['webhook_id']} #{e['attempt']} {e['state']} "
                    f"{e['duration_ms'] or 0:.0f}ms {e['error'] or ''}"
                    for e in attempts
                ]
                raise AssertionError(
                    f"callbacks not as promised: {problems(attempts)}\n"
                    f"attempts on {DELIVERY_TOPIC}: {sender_saw}\n{exc}"
                ) from None

            # every transition of the dead URL's message: attempted 3 times (2 s timeout each), then DLQ
            def dead_lettered() -> list[dict[str, Any]]:
                return [
                    r
                    for r in json_records(p.stack.bootstrap, WEBHOOK_DLQ_TOPIC)
                    if r["message"].get("message_id") == dead
                ]

            await wait_until(
                lambda: len(dead_lettered()) >= len(expected[dead]),
                120,
                "dead callbacks dead-lettered",
                p.logs,
            )
            dlq = dead_lettered()
            # read after the dead URL's attempts (seconds after the live ones): a live transition re-sent
            # after a failed POST can arrive after the check above saw each once, in order
            attempts = callback_attempts()
    finally:
        await site.stop()

    # signed with the owner's secret (the Standard Webhooks reference verifier), never another owner's;
    # one request per transition, in the message's order, naming the message and its status
    for owner, other in (("acme", "globex"), ("globex", "acme")):
        for headers, body, _t in site.at(f"/{owner}"):
            payload = Webhook(secrets[owner]).verify(body, headers)
            with pytest.raises(WebhookVerificationError):
                Webhook(secrets[other]).verify(body, headers)
            assert payload["message_id"] in sent[owner], (owner, payload)
            assert headers["webhook-id"] == payload["event_id"]
            entry = next(
                h for h in views[payload["message_id"]]["history"] if h["event_id"] == payload["event_id"]
            )
            assert (payload["status"], payload["new_state"], payload["segment"]) == (
                entry["overall"],
                entry["new_state"],
                entry["segment"],
            )
    # each once, in order (a transition whose POST failed on the sender's side: see arrival_problem); the one
    # answered late was sent again and received again
    assert not problems(attempts), problems(attempts)
    # (at least twice: its retry too may meet a stall on a loaded machine)
    assert site.slowed is not None, "the globex endpoint got no callback"
    assert resent(attempts).get(site.slowed, 0) >= 2, (site.slowed, resent(attempts))
    assert [h["webhook-id"] for h, _b, _t in site.at("/globex")].count(site.slowed) >= 2
    for mid in sent["acme"] + sent["globex"]:
        assert views[mid]["status"] == "delivered" and arrived_status(site, mid) == "delivered"
    assert {path for path, *_ in site.requests} == {"/acme", "/globex", "/dead"}
    assert not any(silent in b.decode() for *_, b, _t in site.requests)  # no callback_url: no callback
    assert len(p.receiver.log.messages) == 0  # nor anything on the inbound subscription's webhook

    # the dead URL: each transition tried 3 times, then dead-lettered with the reason, once
    assert sorted(r["message"]["event_id"] for r in dlq) == sorted(expected[dead]), dlq
    assert {r["attempts"] for r in dlq} == {3} and all("within 2s" in r["reason"] for r in dlq), dlq
    dead_calls = site.at("/dead")
    assert len(dead_calls) == 3 * len(expected[dead])
    for headers, body, _t in dead_calls:
        assert Webhook(secrets["acme"]).verify(body, headers)["message_id"] == dead
    # ... and nobody waited for it: every live callback arrived before the dead URL's last attempt began
    last_live = max(t for o in sent for _h, _b, t in site.at(f"/{o}"))
    assert last_live < max(t for _h, _b, t in dead_calls)
    print(
        f"\ncallbacks: {sum(len(site.at(f'/{o}')) for o in sent)} delivered signed to 2 owners, "
        f"{len(dlq)} dead-lettered after {len(dead_calls)} attempts at the dead URL; "
        f"{len(resent(attempts))} live ones tried again (a failed POST or no free slot)"
    )


def resent(attempts: list[dict[str, Any]]) -> dict[str, int]:
    """Webhook ids the sender had to try again, per sms.delivery.v1 (a POST that failed on its side, or a
    deferral: no free slot, nothing sent), with the number of requests it made for each."""
    late = {e["webhook_id"] for e in attempts if e["state"] in ("failed", "retry_scheduled")}
    sent = {
        (e["webhook_id"], e["attempt"])
        for e in attempts
        if e["webhook_id"] in late
        and e["state"] in ("delivered", "sent", "failed")
        and e["failure"] != "deferred"
    }
    return {w: max(1, sum(1 for x, _a in sent if x == w)) for w in late}


def arrival_problem(arrived: list[str], expected: list[str], resent: dict[str, int]) -> str | None:
    """Why the callbacks of one message (webhook ids in arrival order) are not what the sender promises, or
    None. The promise: each transition once, in the message's order. The exception is a transition the
    sender had to try again (``resent``: its requests): after a POST that failed on its side (a timeout, a
    broken connection) the receiver may have got it anyway, and the retry, like that of a deferred one,
    comes later, after the transitions behind it, under the same webhook-id (the payload's ``sequence``
    orders it)."""
    if set(arrived) != set(expected):
        return f"arrived {arrived}, expected {expected}"
    for webhook_id, n in Counter(arrived).items():
        if n > resent.get(webhook_id, 1):
            return f"{webhook_id} arrived {n} times, sent {resent.get(webhook_id, 1)}: {arrived}"
    firsts = [w for w in dict.fromkeys(arrived) if w not in resent]
    if firsts != [w for w in expected if w not in resent]:
        return f"out of order: arrived {arrived}, expected {expected}"
    return None


def arrived_status(site: CallbackSite, message_id: str) -> str:
    """The status named by the last callback of a message."""
    last = [orjson.loads(b) for p, _h, b, _t in site.requests if orjson.loads(b)["message_id"] == message_id]
    return str(max(last, key=lambda c: c["sequence"])["status"])


async def test_a_route_decision_to_the_secondary_moves_submits_there_before_any_fails_on_the_primary(
    pipeline, tmp_path: Path
) -> None:
    """The double list decides, outbound obeys: the primary carrier's binds refused -> a failover decision
    (sms.routes.decisions.v1) -> new messages are submitted on the secondary carrier first, and stay there
    while the decision stands: after the primary binds again (the hold-down keeps the decision) and after a
    kill -9 and restart of the worker (which reads the decisions again: no stale "primary")."""
    p, base, token = await start(
        pipeline,
        tmp_path,
        {"attempts_per_route": 2, "retry_backoff_s": [0.3]},
        routing=routing(hold_down_s=600),
        test_numbers=[TEST_NUMBER],
        probe_latency_s=0.3,
        metrics={"worker_port": (health_port := free_port())},
    )
    topics = Topics(p)

    def submits(account: str) -> list[Any]:  # the messages' submits, not the double list's probes
        return [r for r in p.smsc.submits.for_account(account) if "+" + r.dest != TEST_NUMBER]

    def primary_bound() -> bool:
        return any(s.system_id == "acct0" and s.bound and not s.closed.is_set() for s in p.smsc.sessions)

    async with aiohttp.ClientSession() as http:
        await wait_api_up(http, base, p)
        await hold_sender(http, base, p.env["E2E_ADMIN_KEY"])
        customer = Customer(http, base, token)
        for route in ("hk-a", "hk-b"):
            await topics.wait(f"{route} healthy, probed", topics.health, healthy_with_probes(route), 120)
        kinds = ["Code {n}", CHINESE, GSM_LONG]
        ids: dict[str, list[str]] = defaultdict(list)

        async def send(phase: str, n: int, offset: int) -> None:
            for i in range(n):
                to = f"+8526{offset + i:07d}"
                ids[phase].append(await customer.send(to, kinds[i % 3].format(n=offset + i)))

        # before: the primary list's carrier
        await send("before", 3, 1000)
        await wait_final(customer, ids["before"], 60, p)
        assert len(submits("acct0")) >= 3 and submits("acct1") == []

        p.smsc.set_fault("acct0", parse_fault({"kind": "refuse_binds"}, now=time.monotonic()))
        p.smsc.drop_now("acct0")
        decisions = await topics.wait(
            "failover", topics.decisions, lambda rs: any(r["kind"] == "failover" for r in rs), 90
        )
        assert decisions[-1]["active"] == "secondary", decisions[-1]
        on_primary = len(submits("acct0"))
        await send("decided", 3, 2000)  # the primary is down: straight to the secondary, no bind wait

        # the primary binds again; the decision stands (hold-down 600 s), so the secondary stays first
        p.smsc.clear_fault("acct0")
        await wait_until(primary_bound, 60, "the primary carrier bound again", p.logs)
        await send("rebound", 6, 3000)
        await wait_final(customer, ids["decided"] + ids["rebound"], 90, p)

        # a restarted worker reads the decisions again before it plans anything
        p.kill("worker")
        p.start("worker")
        # sent once the new worker is ready: what is shown is the decisions it read, not the records a
        # restarting Faust worker can drop at the tail of a partition (docs/consistency.md)
        await wait_ready(health_port, 90)
        await send("restarted", 3, 4000)
        views = await wait_final(customer, [m for phase in ids.values() for m in phase], 120, p)
        assert await topics.decisions() == decisions  # still the same decision: nothing switched back

    after = [m for phase in ("decided", "rebound", "restarted") for m in ids[phase]]
    assert {views[m]["status"] for m in views} == {"delivered"}, {m: v["status"] for m, v in views.items()}
    assert len(submits("acct0")) == on_primary  # not one submit of theirs reached the primary
    for mid in after:
        routes = {h["route_id"] for h in views[mid]["history"] if h["segment"] is not None}
        assert routes == {"hk-b"}, views[mid]["history"]
    segments = sum(views[m]["history"][0]["segments_total"] for m in after)
    assert len(submits("acct1")) == len(p.smsc.submits.accepted("acct1")) - probes_accepted(p) == segments
    assert p.smsc.submits.submitted_twice() == []
    print(f"\nroute decision: {len(after)} messages ({segments} segments) on the secondary, 0 on the primary")


def probes_accepted(p: Any) -> int:
    return sum(1 for r in p.smsc.submits.accepted("acct1") if "+" + r.dest == TEST_NUMBER)
