"""The records the outbound stages hand each other read back as written, and the status fold over them."""

import base64
import re

import pytest

from smsflow.outbound.ledger import Intent, Outcome
from smsflow.outbound.submission import (
    Abandoned,
    Candidate,
    Carried,
    Plan,
    ReceiptMatch,
    Submission,
    ledger_value,
    read_ledger,
    submission_identity,
)
from smsflow.outbound.tracking import Track, begin, expire, fold

ROUTES = (Candidate("route-0", "carrier-0"), Candidate("route-1", "carrier-1"))


def test_submission_round_trips_and_hands_over_to_the_next_route():
    sub = Submission(
        "m",
        1,
        2,
        "+85291234567",
        "ACME",
        "alphanumeric",
        8,
        0x40,
        b"\x05\x00\x03\x07\x02\x01\x4f\x60",
        "otp",
        99,
        7,
        ROUTES,
    )
    assert Submission.from_json(sub.to_json()) == sub
    nxt = sub.handed_over()
    assert nxt is not None and nxt.route == ROUTES[1] and nxt.handed_over() is None


def _doc(**change: object) -> bytes:
    import orjson

    sub = Submission(
        "m", 1, 2, "+85291234567", "ACME", "alphanumeric", 8, 0x40, b"hi", "otp", 99, 7, ROUTES
    )  # fmt: skip
    doc = orjson.loads(sub.to_json())
    for name, value in change.items():
        if value is ...:
            del doc[name]
        else:
            doc[name] = value
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"candidates": []}, "candidates"),  # sub.route raised IndexError in the connector's read loop
        ({"position": 2}, "position"),
        ({"position": -1}, "position"),
        ({"seq": "1"}, "seq"),
        ({"seq": 3}, "seq"),  # beyond parts
        ({"seq": True}, "seq"),
        ({"parts": 256}, "parts"),
        ({"esm_class": 256}, "esm_class"),
        ({"data_coding": -1}, "data_coding"),
        ({"short_message": "!!not base64"}, "short_message"),
        ({"short_message": base64.b64encode(b"x" * 255).decode()}, "short_message"),
        ({"sender": "A" * 21}, "sender"),
        ({"sender": "ACME\u4e2d"}, "sender"),  # our encoder writes Latin-1: it would raise after the intent
        ({"sender_kind": "number", "sender": "ACME"}, "sender"),
        ({"sender_kind": "shortcode"}, "sender_kind"),
        ({"destination": "+" + "9" * 21}, "destination"),
        ({"destination": "+852 9123"}, "destination"),
        ({"expires_at_ms": 10**15}, "expires_at_ms"),  # datetime cannot write its validity_period
        ({"expires_at_ms": 1.5}, "expires_at_ms"),
        ({"priority": "urgent"}, "priority"),
        ({"ref": 70_000}, "ref"),
        ({"message_id": ""}, "message_id"),
        ({"message_id": "m" * 129}, "message_id"),
        ({"message_id": ...}, "message_id"),
        ({"candidates": [{"route_id": "r"}]}, "candidates[0]"),
        ({"candidates": [{"route_id": "r", "carrier": 5}]}, "carrier"),
        ({"candidates": [{"route_id": "r", "carrier": "c"}] * 1025}, "candidates"),
    ],
)
def test_a_submission_record_the_connector_cannot_submit_is_refused_with_the_field_named(change, named):
    with pytest.raises(ValueError, match=re.escape(named)):
        Submission.from_json(_doc(**change))


def test_what_the_api_accepts_still_reads():
    for change in ({"sender": "Café"}, {"sender": "@home"}, {"sender_kind": "number", "sender": "+852600011"},
                   {"ref": None}, {"position": ...}, {"position": 1}, {"expires_at_ms": 0},
                   {"added_by_a_newer_worker": 1}):  # fmt: skip
        Submission.from_json(_doc(**change))


@pytest.mark.parametrize(
    ("raw", "identity"),
    [
        (b'{"message_id": "m1", "seq": 2, "candidates": []}', ("m1", 2)),
        (b'{"message_id": "m1", "seq": "2"}', None),
        (b"[1, 2]", None),
        (b"\xff not json", None),
    ],
)
def test_an_unreadable_record_names_its_segment_only_when_it_can(raw, identity):
    assert submission_identity(raw) == identity


def test_every_ledger_entry_reads_back():
    entries = [
        Plan("m", "acme", 2, 99, None, 1),
        Carried(Intent("m", 1, 1, "route-0", "+852", 7, 2), "carrier-0"),
        Carried(Outcome("m", 1, 1, "accepted", 3, "00A1", 0), "carrier-0"),
        Carried(Outcome("m", 2, 1, "retryable", 3, None, 0x58), "carrier-0"),
        Abandoned("m", 2, 4, 0x58, "every route was tried"),
        ReceiptMatch("m", 1, 5, "DELIVRD", "000", "carrier-0", "a1"),
    ]
    assert [read_ledger(ledger_value(e)) for e in entries] == entries


def test_the_fold_publishes_each_transition_once_with_stable_event_ids():
    track, records = begin(Plan("m", "acme", 1, 10_000, "https://cb.example/x", 1))
    assert records == []
    entries = [
        Carried(Intent("m", 1, 1, "route-0", "+852", None, 2), "carrier-0"),
        Carried(Outcome("m", 1, 1, "accepted", 3, "00A1", 0), "carrier-0"),
        ReceiptMatch("m", 1, 5, "DELIVRD", None, "carrier-0", "a1"),
    ]
    published = []
    for e in entries * 2:  # a replay of the same entries publishes nothing more
        out = fold(track, e)
        assert isinstance(out, tuple)
        track, records = out
        published += records
    assert [(r["event_id"], r["segment"], r["new_state"]) for r in published] == [
        ("m#1", 1, "submitted"),
        ("m#2", None, "submitted"),
        ("m#3", 1, "sent"),
        ("m#4", None, "sent"),
        ("m#5", 1, "delivered"),
        ("m#6", None, "delivered"),
    ]
    assert published[-2]["carrier_message_id"] == "00A1" and published[-2]["route_id"] == "route-0"
    assert Track.from_json(track.to_json()) == track


def test_validity_expires_what_is_not_final_and_no_route_rejects_at_once():
    track, _ = begin(Plan("m", "acme", 2, 10_000, None, 1))
    track, _ = fold(track, Carried(Intent("m", 1, 1, "route-0", "+852", 3, 2), "carrier-0"))
    assert expire(track, 9_999)[1] == []
    track, records = expire(track, 10_000)
    assert track.status.overall == "expired" and {r["reason"] for r in records} == {"validity period passed"}
    rejected, records = begin(Plan("n", "acme", 1, 10_000, None, 1, no_route="no carrier that can submit"))
    assert rejected.status.overall == "rejected" and records[-1]["reason"] == "no carrier that can submit"
