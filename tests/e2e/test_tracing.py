"""Issue 5 (tracing): one SMS is one trace, from the carrier's PDU to the customer's webhook, in Zipkin.

The pipeline runs as users run it (connector and worker processes, real broker) and exports to a Zipkin server
started from its Maven Central jar. The test starts from what the customer saw — the ``traceparent`` header on
the webhook — and asks Zipkin's API for that trace.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from devkit.simulator.traffic import LONG_CN, LONG_EN, LogicalSms
from smsflow.sms.segmentation import split_for_smpp
from tests.e2e.conftest import INGEST_MODE

pytestmark = pytest.mark.e2e

CONNECTOR, WORKER = "smsflow-connector", "smsflow-worker"
# the service of the ingest spans: the direct loop is a process of its own (`smsflow ingest`)
INGEST = "smsflow-ingest" if INGEST_MODE == "loop" else WORKER


@dataclass
class Span:
    raw: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.raw["id"])

    @property
    def parent(self) -> str | None:
        return self.raw.get("parentId")

    @property
    def name(self) -> str:
        return str(self.raw.get("name", ""))

    @property
    def kind(self) -> str | None:
        return self.raw.get("kind")

    @property
    def service(self) -> str:
        return str(self.raw.get("localEndpoint", {}).get("serviceName", ""))

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.raw.get("tags", {}))


class Trace:
    def __init__(self, trace_id: str, spans: list[dict[str, Any]]) -> None:
        self.trace_id = trace_id
        self.spans = [Span(s) for s in spans]

    def named(self, name: str) -> list[Span]:
        # Zipkin stores span names in lower case
        return [s for s in self.spans if s.name == name.lower()]

    def one(self, name: str) -> Span:
        found = self.named(name)
        assert len(found) == 1, f"expected one {name!r} span, got {len(found)}: {self.describe()}"
        return found[0]

    def describe(self) -> str:
        return "; ".join(f"{s.service}:{s.name}({s.kind}) id={s.id} parent={s.parent}" for s in self.spans)


async def fetch_trace(zipkin: str, trace_id: str, names: set[str], timeout: float = 45.0) -> Trace:
    """Poll Zipkin until the trace holds a span of every given name (spans leave each process in batches)."""
    deadline = time.monotonic() + timeout
    spans: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{zipkin}/api/v2/trace/{trace_id}") as resp:
                spans = await resp.json() if resp.status == 200 else []
            if {n.lower() for n in names} <= {s.get("name") for s in spans}:
                return Trace(trace_id, spans)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"trace {trace_id} incomplete after {timeout}s: {Trace(trace_id, spans).describe()}"
                )
            await asyncio.sleep(0.5)


def _sms(n: int, text: str, dc: int, method: str) -> LogicalSms:
    return LogicalSms(f"8613800{n:06d}", "85230001000", f"{text} #{n}", dc, method, extra={"otp": "482913"})


def _segments(sms: LogicalSms) -> int:
    return len(split_for_smpp(sms.text, sms.data_coding, method=sms.method, ref=1))  # type: ignore[arg-type]


def _check_edge(t: Trace, root_kind_name: str) -> tuple[Span, Span, Span]:
    """The connector part: a SERVER root for the PDU, its Kafka write, the ingest span continuing it."""
    root = t.one(root_kind_name)
    assert root.parent is None and root.kind == "SERVER" and root.service == CONNECTOR, t.describe()
    assert root.tags["smsflow.carrier"] == "carrier-0" and root.tags["smsflow.route"] == "route-0"
    assert root.tags["smpp.command_status"] == "0"
    send_raw = t.one("send sms.raw.v1")
    assert (send_raw.parent, send_raw.kind, send_raw.service) == (root.id, "PRODUCER", CONNECTOR)
    assert "messaging.kafka.offset" in send_raw.tags
    [ingest] = [s for s in t.named("ingest") if s.parent == send_raw.id]
    assert ingest.kind == "CONSUMER" and ingest.service == INGEST, t.describe()
    assert ingest.tags["messaging.source.name"] == "sms.raw.v1"
    assert {"messaging.kafka.partition", "messaging.kafka.offset"} <= ingest.tags.keys()
    assert ingest.tags["smsflow.carrier"] == "carrier-0"
    return root, send_raw, ingest


def _check_delivery(t: Trace, after: Span, message_id: str, traceparent: str) -> None:
    """The worker's delivery part: the inbound record written under ``after``, consumed, POSTed."""
    send_inbound = t.one("send sms.inbound.v1")
    assert (send_inbound.parent, send_inbound.kind) == (after.id, "PRODUCER"), t.describe()
    assert send_inbound.tags["smsflow.message_id"] == message_id
    deliver = t.one("deliver")
    assert (deliver.parent, deliver.kind, deliver.service) == (send_inbound.id, "CONSUMER", WORKER)
    assert deliver.tags["smsflow.message_id"] == message_id
    assert deliver.tags["messaging.source.name"] == "sms.inbound.v1"
    post = t.one("webhook POST")
    assert (post.parent, post.kind, post.service) == (deliver.id, "CLIENT", WORKER), t.describe()
    assert post.tags["http.response.status_code"] == "204"
    assert post.tags["smsflow.subscription"] == "e2e-hook"
    # what the customer received is this very span: version-traceid-spanid-flags
    assert traceparent.split("-")[1:3] == [t.trace_id, post.id]


async def test_each_sms_is_one_trace_in_zipkin(pipeline, zipkin: str) -> None:
    p = await pipeline(
        carriers=1,
        tracing={"zipkin_url": f"{zipkin}/api/v2/spans"},
        webhooks={"retry_delays_s": [0, 0.5, 1], "retry_jitter": 0},
    )
    p.start()
    await p.smsc.wait_bound(60)
    singles = [
        _sms(1, "Your verification code is 482913", 0, "single"),
        _sms(2, "【京东】您的验证码是482913,在15分钟内有效。", 8, "single"),
    ]
    multis = [
        _sms(3, LONG_EN.format(b="Acme", c="482913"), 0, "udh8"),
        _sms(4, LONG_CN.format(b="中国银行", c="482913"), 8, "udh16"),
        _sms(5, LONG_EN.format(b="HSBC", c="482913"), 0, "sar"),
    ]
    for sms in singles + multis:
        p.smsc.enqueue(sms)
    assert await p.smsc.drain(60), p.logs()
    await p.wait_delivered(len(singles) + len(multis), 60)
    by_body = {m["body"]: m for m in p.receiver.log.messages.values()}

    for sms in singles:
        msg = by_body[sms.text]
        tp = p.receiver.log.headers[msg["message_id"]]["traceparent"]
        trace_id = tp.split("-")[1]
        names = {
            "smpp deliver_sm",
            "send sms.raw.v1",
            "ingest",
            "send sms.inbound.v1",
            "deliver",
            "webhook POST",
        }
        t = await fetch_trace(zipkin, trace_id, names)
        _, _, ingest = _check_edge(t, "smpp deliver_sm")
        assert ingest.tags["smsflow.outcome"] == "message"
        assert ingest.tags["smsflow.message_id"] == msg["message_id"]
        assert not t.named("assemble")
        _check_delivery(t, ingest, msg["message_id"], tp)
        assert len(t.spans) == len(names), t.describe()

    for sms in multis:
        msg = by_body[sms.text]
        n = _segments(sms)
        assert n >= 2 and msg["segment_count"] == n
        tp = p.receiver.log.headers[msg["message_id"]]["traceparent"]
        trace_id = tp.split("-")[1]
        names = {"smpp deliver_sm", "send sms.raw.v1", "ingest", "assemble", "send sms.inbound.v1", "deliver"}
        t = await fetch_trace(zipkin, trace_id, names | {"webhook POST"})
        # the trace is the first-arrived segment's: its PDU, its Kafka write, its ingest, then the assembly
        _, _, ingest = _check_edge(t, "smpp deliver_sm")
        assemble = t.one("assemble")
        assert assemble.parent == ingest.id and assemble.service == INGEST, t.describe()
        assert assemble.tags["smsflow.message_id"] == msg["message_id"]
        assert assemble.tags["smsflow.segment_count"] == str(n)
        assert assemble.tags["smsflow.segments_received"] == str(n)
        # the other segments are traces of their own, referenced from the assembly (Zipkin has no links)
        linked = json.loads(assemble.tags["smsflow.linked_trace_ids"])
        assert len(linked) == n - 1 and trace_id not in linked and len(set(linked)) == n - 1
        completed_by = []
        for other in linked:
            st = await fetch_trace(zipkin, other, {"smpp deliver_sm", "send sms.raw.v1", "ingest"})
            _, _, seg_ingest = _check_edge(st, "smpp deliver_sm")
            assert not st.named("deliver"), "a segment's own trace ends at ingest"
            if seg_ingest.tags.get("smsflow.assembled_in_trace"):
                assert seg_ingest.tags["smsflow.assembled_in_trace"] == trace_id
                assert seg_ingest.tags["smsflow.outcome"] == "message"
                completed_by.append(other)
            else:
                assert seg_ingest.tags["smsflow.outcome"] == "held for reassembly"
        assert len(completed_by) == 1, "the last segment to arrive points at the message's trace"
        _check_delivery(t, assemble, msg["message_id"], tp)

    # A retry stays in the trace: the second attempt is a child of the failed first one, and the customer
    # gets the traceparent of the attempt that succeeded.
    p.receiver.fail_next = 1
    retried = _sms(6, "Your verification code is 482913", 0, "single")
    p.smsc.enqueue(retried)
    await p.wait_delivered(len(singles) + len(multis) + 1, 60)
    msg = next(m for m in p.receiver.log.messages.values() if m["body"] == retried.text)
    tp = p.receiver.log.headers[msg["message_id"]]["traceparent"]
    trace_id = tp.split("-")[1]
    deadline = time.monotonic() + 30
    while (
        len((t := await fetch_trace(zipkin, trace_id, {"deliver", "webhook POST"})).named("webhook POST")) < 2
    ):
        assert time.monotonic() < deadline, t.describe()
        await asyncio.sleep(0.5)
    deliver = t.one("deliver")
    first, second = sorted(t.named("webhook POST"), key=lambda s: s.tags["smsflow.attempt"])
    assert (first.parent, first.tags["smsflow.attempt"]) == (deliver.id, "1"), t.describe()
    assert first.tags["http.response.status_code"] == "503" and first.tags["smsflow.decision"] == "retry"
    assert first.tags.get("otel.status_code") == "ERROR" or "error" in first.tags
    assert (second.parent, second.tags["smsflow.attempt"]) == (first.id, "2"), t.describe()
    assert second.tags["http.response.status_code"] == "204" and second.tags["smsflow.decision"] == "done"
    assert tp.split("-")[2] == second.id


async def test_spans_still_queued_are_flushed_when_the_processes_stop(pipeline, zipkin: str) -> None:
    p = await pipeline(carriers=1, tracing={"zipkin_url": f"{zipkin}/api/v2/spans"})
    p.env["OTEL_BSP_SCHEDULE_DELAY"] = "600000"  # no timed export during the test: only the shutdown flush
    p.start()
    await p.smsc.wait_bound(60)
    p.smsc.enqueue(_sms(9, "Your login code is 482913", 0, "single"))
    await p.wait_delivered(1, 60)
    [msg] = p.receiver.log.messages.values()
    tp = p.receiver.log.headers[msg["message_id"]]["traceparent"]
    trace_id = tp.split("-")[1]
    await asyncio.sleep(2)
    async with aiohttp.ClientSession() as http, http.get(f"{zipkin}/api/v2/trace/{trace_id}") as resp:
        assert resp.status == 404, "spans left before shutdown: the export delay was not applied"
    await asyncio.to_thread(p.stop, "connector")
    await asyncio.to_thread(p.stop, "worker")
    names = {"smpp deliver_sm", "send sms.raw.v1", "ingest", "send sms.inbound.v1", "deliver", "webhook POST"}
    t = await fetch_trace(zipkin, trace_id, names, timeout=20)
    _, _, ingest = _check_edge(t, "smpp deliver_sm")
    _check_delivery(t, ingest, msg["message_id"], tp)
