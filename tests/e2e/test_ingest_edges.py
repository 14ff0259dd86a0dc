"""Issue 3 on the real broker: reassembly timeout (incomplete), receipts on their own topic, malformed PDUs
answered per protocol and quarantined, and expired dedup/reassembly state leaving the store — also after a
worker restart (checked on the tables' changelog topics, which is what a restarted worker recovers from)."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import Producer

from devkit.simulator.smsc import deliver_sm_params
from devkit.simulator.traffic import LogicalSms
from smsflow.smpp.constants import CommandStatus
from smsflow.smpp.pdu import Tlv
from smsflow.sms.segmentation import split_for_smpp
from tests.kafka_read import avro_values, read_topic

pytestmark = pytest.mark.e2e


async def test_timeout_receipts_quarantine_and_expiry(pipeline) -> None:
    p = await pipeline(pipeline_cfg={"reassembly_timeout_s": 3, "dedup_window_s": 6, "tick_interval_s": 0.5})
    p.start()
    await p.smsc.wait_bound(60)
    src, dst = "85261234567", "85230001000"
    whole = LogicalSms(src, dst, "Code 424242 is yours", 0)
    p.smsc.enqueue(whole)
    # a long SMS whose part 2 never comes
    long_text = "【京东】尊敬的客户您好,您的验证码是 825959,请在5分钟内完成验证,切勿告知他人。" * 4
    partial = LogicalSms("8613812345678", dst, long_text, 8)
    segs = split_for_smpp(long_text, 8, "udh16", ref=4242)
    for seg in segs:
        if seg.seq != 2:
            p.smsc.enqueue_pdu(
                deliver_sm_params(partial.source, dst, seg.short_message, 8, seg.esm_class), [], partial
            )
    # a delivery receipt, by text and by TLVs
    dlr = LogicalSms(src, dst, "dlr", 0)
    text = b"id:0A1B2C3D sub:001 dlvrd:001 submit date:2611260101 done date:2611260102 "
    text += b"stat:DELIVRD err:000 text:"
    p.smsc.enqueue_pdu(deliver_sm_params(src, dst, text, 0, 0x04), [], dlr)
    p.smsc.enqueue_pdu(
        deliver_sm_params(src, dst, b"", 0, 0x04), [Tlv(0x001E, b"998877\x00"), Tlv(0x0427, bytes([5]))], dlr
    )
    # a deliver_sm whose UDH claims more octets than the message has: a protocol-level error
    bad = LogicalSms(src, dst, "bad", 0)
    p.smsc.enqueue_pdu(deliver_sm_params(src, dst, b"\x0b\x00\x03\x01\x02\x01", 0, 0x40), [], bad)

    await p.wait_delivered(2, 60)  # the whole one, and the incomplete one after the timeout
    msgs = {m["segment_count"]: m for m in p.receiver.log.messages.values()}
    assert msgs[1]["body"] == "Code 424242 is yours" and not msgs[1]["incomplete"]
    inc = msgs[len(segs)]
    assert inc["incomplete"] and inc["missing_segments"] == [2]
    assert p.smsc.stats.by_status.get(int(CommandStatus.ESME_ROK), 0) >= len(segs) + 3

    receipts = avro_values(p.stack.bootstrap, p.stack.registry_url, "sms.receipts.v1")
    assert sorted((r["message_id"], r["state"]) for r in receipts) == [
        ("0A1B2C3D", "DELIVRD"),
        ("998877", "UNDELIV"),
    ]
    quarantined = avro_values(p.stack.bootstrap, p.stack.registry_url, "sms.quarantine.v1")
    assert len(quarantined) == 1 and "user data header" in quarantined[0]["reason"]
    assert not any(m["body"] == "dlr" for m in p.receiver.log.messages.values()), (
        "receipts never reach customers"
    )

    # a record on sms.inbound.v1 that does not decode is quarantined by delivery, and delivery goes on
    producer = Producer({"bootstrap.servers": p.stack.bootstrap})
    producer.produce("sms.inbound.v1", value=b"\x00not avro", key=b"+85230001000")
    producer.flush(10)
    p.smsc.enqueue(LogicalSms(src, dst, "Code 515151 after a poison record", 0))
    await p.wait_delivered(3, 60)
    quarantined = avro_values(p.stack.bootstrap, p.stack.registry_url, "sms.quarantine.v1")
    by_stage = {q["stage"]: q for q in quarantined}
    assert sorted(by_stage) == ["deliver", "ingest"] and len(quarantined) == 2
    poison = by_stage["deliver"]
    assert poison["pdu"] == b"\x00not avro" and "does not decode" in poison["reason"]

    # restart the worker, let the windows pass, and check that every table key ended in a tombstone
    p.stop("worker")
    p.start("worker")
    await asyncio.sleep(12)
    app_id = p.env_app_id
    for table in ("ingest-seen", "ingest-partials"):
        latest: dict[bytes, bytes | None] = {}
        for _part, _off, key, value in read_topic(p.stack.bootstrap, f"{app_id}-{table}-changelog"):
            latest[key or b""] = value
        assert latest, f"{table}: nothing was ever stored?"
        live = [k for k, v in latest.items() if v is not None]
        assert not live, f"{table}: {len(live)} keys never expired: {live[:3]}"
