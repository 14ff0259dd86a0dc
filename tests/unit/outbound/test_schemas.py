"""The outbound records encode with their Avro contracts and read back the same."""

from __future__ import annotations

from smsflow.outbound.records import request_record, status_record
from smsflow.outbound.request import OutboundRequest, read_request
from smsflow.outbound.status import Accepted, MessageStatus, ReceiptReceived, Rejection, Submitted, Transition
from smsflow.topics import MANIFEST, load_manifest
from tests.unit.routing.test_schemas import round_trip

T0 = 1_700_000_000_000


def test_request_round_trips() -> None:
    req = read_request(
        {"to": "+85291234567", "from": "AcmeBank", "text": "验证码 123456", "priority": "otp"},
        message_id="m1",
        owner="acme",
        holdings=[],
        sender_ids=None,
        now_ms=T0,
        idempotency_key="k1",
    )
    assert isinstance(req, OutboundRequest)
    rec = request_record(req)
    assert round_trip("outbound_request.avsc", rec) == rec


def test_every_transition_of_a_message_round_trips() -> None:
    status = MessageStatus.new("m1", 2, T0 + 3_600_000)
    records = []
    events = [
        Submitted(1, T0, "hk-a"),
        Submitted(2, T0, "hk-a"),
        Accepted(1, T0 + 5, "1A2B"),
        Accepted(2, T0 + 6, "1A2C"),
        ReceiptReceived(1, T0 + 900, "DELIVRD"),
        ReceiptReceived(2, T0 + 950, "UNDELIV", "001"),
    ]
    transitions: list[Transition] = []
    for ev in events:
        result = status.apply(ev)
        assert not isinstance(result, Rejection)
        status, new = result
        transitions += new
        records += [
            status_record("acme", status, t, len(transitions) - len(new) + i + 1) for i, t in enumerate(new)
        ]
    for rec in records:
        assert round_trip("outbound_status.avsc", rec) == rec
    last = records[-1]
    assert (last["segment"], last["new_state"], last["overall"]) == (None, "failed", "failed")
    assert [r["event_id"] for r in records] == [f"m1#{n}" for n in range(1, len(records) + 1)]
    failed = next(r for r in records if r["segment"] == 2 and r["new_state"] == "failed")
    assert (failed["carrier_message_id"], failed["detail"]) == ("1A2C", "receipt UNDELIV err:001")


def test_the_topics_are_declared() -> None:
    specs = {s.name: s for s in load_manifest(MANIFEST)}
    assert specs["sms.outbound.v1"].cleanup_policy == "delete"
    assert "destination" in specs["sms.outbound.v1"].key
    assert "message id" in specs["sms.outbound.status.v1"].key


def test_a_request_reads_back_from_its_avro_record():
    from smsflow.outbound.records import request_from_record

    req = read_request(
        {"to": "+85291234567", "from": "ACME", "text": "hi", "callback_url": "https://x.example/cb"},
        message_id="mt_1",
        owner="acme",
        holdings=(),
        sender_ids=None,
        now_ms=1_700_000_000_123,
        idempotency_key="k",
    )
    assert isinstance(req, OutboundRequest)
    assert request_from_record(round_trip("outbound_request.avsc", request_record(req))) == req
