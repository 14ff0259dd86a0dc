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
  known, policy `hold`), at most the submit window.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from confluent_kafka import Consumer

from devkit.simulator.faults import Fault, FaultKind
from devkit.simulator.traffic import LogicalSms
from smsflow.api.apikeys import ApiKeyStore
from smsflow.outbound.submission import UNMATCHED_RECEIPTS_TOPIC
from smsflow.smpp.constants import TlvTag
from smsflow.smpp.pdu import make_tlv
from smsflow.sms.text import decode_text
from smsflow.sms.udh import concat_info, parse_udh
from tests.e2e.test_webhook_api import wait_api_up
from tests.e2e.test_webhook_failures import free_port, wait_until

pytestmark = pytest.mark.e2e

SENDER = "+85230001000"
ESME_RTHROTTLED = 0x58
FINAL = {"delivered", "failed", "rejected", "expired"}

GSM_LONG = "Your parcel 4711 is on its way. " * 7  # 224 characters: 2 parts of GSM
CHINESE = "您的验证码是 481516，五分钟内有效。"
CHINESE_LONG = (
    "短信平台出站测试：这是一条很长的中文消息，用来检查分段与重组是否正确。" * 3
)  # 3 parts of UCS-2


class Customer:
    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http, self.base, self.token = http, base, token

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            return r.status, (await r.json() if r.status != 204 else None)

    async def send(self, to: str, text: str, **extra: Any) -> str:
        status, body = await self.call(
            "POST", "/v1/messages", {"to": to, "from": SENDER, "text": text, **extra}
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
    def issue(cls, tmp_path: Path) -> CustomerApi:
        keys = ApiKeyStore()
        key, token = keys.issue("acme", label="e2e customer")
        _, admin = keys.issue(None, label="e2e admin")
        keys_file = tmp_path / "keys.jsonl"
        keys_file.write_bytes(orjson.dumps(key.to_record()) + b"\n")
        config = {
            "host": "127.0.0.1",
            "port": free_port(),
            "admin_key_env": "E2E_ADMIN_KEY",
            "keys_file": str(keys_file),
        }
        return cls(config, {"E2E_ADMIN_KEY": admin}, token, admin)


async def start(
    pipeline: Any, tmp_path: Path, outbound: dict[str, Any], carrier_extra: dict[str, Any] | None = None
) -> tuple[Any, str, str]:
    api = CustomerApi.issue(tmp_path)
    p = await pipeline(
        carriers=2, receipts=True, api=api.config, extra_env=api.env, carrier_extra=carrier_extra
    )
    cfg = yaml.safe_load(p.config_path.read_text())
    cfg["outbound"] = outbound
    p.config_path.write_text(yaml.safe_dump(cfg))
    p.start("worker", "connector", "api")
    return p, api.base, api.token


async def hold_sender(http: aiohttp.ClientSession, base: str, admin: str) -> None:
    async with http.put(
        f"{base}/v1/holdings/acme", json={"numbers": [SENDER]}, headers={"Authorization": f"Bearer {admin}"}
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


async def wait_final(customer: Customer, ids: list[str], timeout: float, p: Any) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        views = await customer.statuses(ids)
        pending = [m for m, v in views.items() if v["status"] not in FINAL]
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


def read_topic(bootstrap: str, topic: str, want: int, timeout: float) -> list[dict[str, Any]]:
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
                out.append(orjson.loads(msg.value()))
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


async def test_kill_9_of_connector_and_worker_submits_nothing_twice(pipeline, tmp_path: Path) -> None:
    p, base, token = await start(pipeline, tmp_path, {"attempts_per_route": 2, "retry_backoff_s": [0.3]})
    async with aiohttp.ClientSession() as http:
        await wait_api_up(http, base, p)
        await hold_sender(http, base, p.env["E2E_ADMIN_KEY"])
        customer = Customer(http, base, token)
        kinds = ["Code {n}", CHINESE, GSM_LONG]
        texts = {f"+8529300{i:04d}": kinds[i % 3].format(n=i) for i in range(45)}
        ids: dict[str, str] = {}

        async def send_all() -> None:
            for to, text in texts.items():
                ids[to] = await customer.send(to, text, validity_s=60)
                await asyncio.sleep(0.1)

        sender = asyncio.create_task(send_all())
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
