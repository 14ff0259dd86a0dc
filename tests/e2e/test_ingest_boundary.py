"""Issue 9: one guarded boundary per record in the ingest agent, on the real broker and worker process.

Receipts that used to crash-loop the ingest agent (a counter above 2^31 that Avro ``int`` rejects, an id of
4,000 hex digits past Python's int-string limit) are sent between normal SMS of the same partition key. Each
hostile record ends either processed (a receipt) or quarantined with a reason — never an agent crash — and the
normal SMS around them, including the one right after each, are delivered once, whole."""

from __future__ import annotations

import asyncio

import pytest

from devkit.simulator.smsc import deliver_sm_params
from devkit.simulator.traffic import LogicalSms
from smsflow.smpp.pdu import Tlv
from tests.kafka_read import avro_values

pytestmark = pytest.mark.e2e

SRC, DST = "85261234567", "85230001000"


async def test_hostile_records_neither_crash_the_agent_nor_hold_back_their_neighbours(pipeline) -> None:
    p = await pipeline()
    p.start()
    await p.smsc.wait_bound(60)
    hostile = [
        b"id:1A2B sub:4294967296 dlvrd:4294967296 submit date:2611260101 done date:2611260102 "
        b"stat:DELIVRD err:000",
        b"id:" + b"F" * 4000 + b" sub:001 dlvrd:001 submit date:2611260101 done date:2611260102 stat:DELIVRD",
    ]
    texts = []
    for i, body in enumerate(hostile):
        before, after = f"Code {100000 + i} before", f"Code {200000 + i} after"
        texts += [before, after]
        p.smsc.enqueue(LogicalSms(SRC, DST, before, 0))
        # a body beyond short_message's 254 octets rides in message_payload, as a carrier would send it
        sm, tlvs = (body, []) if len(body) <= 254 else (b"", [Tlv(0x0424, body)])
        p.smsc.enqueue_pdu(deliver_sm_params(SRC, DST, sm, 0, 0x04), tlvs, LogicalSms(SRC, DST, "dlr", 0))
        p.smsc.enqueue(LogicalSms(SRC, DST, after, 0))
    await p.wait_delivered(len(texts), 90)
    await asyncio.sleep(2)
    bodies = sorted(m["body"] for m in p.receiver.log.messages.values())
    assert bodies == sorted(texts)
    receipts = avro_values(p.stack.bootstrap, p.stack.registry_url, "sms.receipts.v1")
    quarantined = [
        q
        for q in avro_values(p.stack.bootstrap, p.stack.registry_url, "sms.quarantine.v1")
        if q["stage"] == "ingest"
    ]
    # every hostile record is accounted for: a receipt (once the parser clamps it) or quarantined with why;
    # before the guarded boundary each crashed the agent and vanished (neither here nor there)
    assert len(receipts) + len(quarantined) == len(hostile), (receipts, quarantined)
    assert all(q["reason"] for q in quarantined)
    log = "\n".join(f.read_text(errors="replace") for f in (p.workdir / "logs").glob("worker*.log"))
    # mode logs "Crashed reason=..." when an agent's actor dies (a rebalance cancels actors: not a crash)
    crashes = [line for line in log.splitlines() if "Crashed reason" in line and "CancelledError" not in line]
    assert not crashes, crashes
