"""The records the outbound stages hand each other read back as written, and the status fold over them."""

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
