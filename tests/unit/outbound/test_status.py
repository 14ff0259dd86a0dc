"""Outbound status: transitions per segment and overall, refusals, and order-independent receipts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsflow.outbound.status import (
    Accepted,
    Event,
    MessageStatus,
    ReceiptReceived,
    Refused,
    Rejection,
    Submitted,
    ValidityChecked,
    overall_state,
)

T = 1_000_000
EXPIRES = T + 3_600_000


def run(parts: int, events: list[Event]) -> tuple[MessageStatus, list[tuple[int | None, str, str]]]:
    status = MessageStatus.new("m1", parts, EXPIRES)
    seen = []
    for ev in events:
        result = status.apply(ev)
        assert not isinstance(result, Rejection), result.reason
        status, transitions = result
        seen += [(t.seq, t.old, t.new) for t in transitions]
    return status, seen


def sent(seq: int, mid: str) -> list[Event]:
    return [Submitted(seq, T, "hk-a"), Accepted(seq, T + 1, mid)]


@pytest.mark.parametrize(
    ("events", "segment", "overall"),
    [
        ([], "queued", "queued"),
        ([Submitted(1, T, "r")], "submitted", "submitted"),
        (sent(1, "a"), "sent", "sent"),
        ([*sent(1, "a"), ReceiptReceived(1, T + 2, "ENROUTE")], "sent", "sent"),
        ([*sent(1, "a"), ReceiptReceived(1, T + 2, "DELIVRD")], "delivered", "delivered"),
        ([*sent(1, "a"), ReceiptReceived(1, T + 2, "UNDELIV", "001")], "failed", "failed"),
        ([*sent(1, "a"), ReceiptReceived(1, T + 2, "DELETED")], "failed", "failed"),
        ([*sent(1, "a"), ReceiptReceived(1, T + 2, "REJECTD")], "rejected", "rejected"),
        ([*sent(1, "a"), ReceiptReceived(1, T + 2, "EXPIRED")], "expired", "expired"),
        ([Submitted(1, T, "r"), Refused(1, T + 1, 0x0B)], "rejected", "rejected"),
        ([*sent(1, "a"), ValidityChecked(EXPIRES - 1)], "sent", "sent"),
        ([*sent(1, "a"), ValidityChecked(EXPIRES)], "expired", "expired"),
        ([ValidityChecked(EXPIRES)], "expired", "expired"),  # never submitted in time
        # a late DELIVRD proves more than our timer's expiry; a late ENROUTE changes nothing
        (
            [*sent(1, "a"), ValidityChecked(EXPIRES), ReceiptReceived(1, EXPIRES + 5, "DELIVRD")],
            "delivered",
            "delivered",
        ),
        (
            [*sent(1, "a"), ReceiptReceived(1, T + 2, "DELIVRD"), ReceiptReceived(1, T + 3, "UNDELIV")],
            "delivered",
            "delivered",
        ),
        (
            [*sent(1, "a"), ReceiptReceived(1, T + 2, "DELIVRD"), ValidityChecked(EXPIRES)],
            "delivered",
            "delivered",
        ),
        # a resubmission decided by the ledger after a lost resp
        (
            [Submitted(1, T, "r"), Submitted(1, T + 9, "r2", attempt=2), Accepted(1, T + 10, "b")],
            "sent",
            "sent",
        ),
        # the same Submitted replayed is a no-op
        ([*sent(1, "a"), Submitted(1, T, "hk-a")], "sent", "sent"),
    ],
)
def test_one_segment(events: list[Event], segment: str, overall: str) -> None:
    status, _ = run(1, events)
    assert status.segments[0].state == segment
    assert status.overall == overall


def test_transitions_are_published_once_each() -> None:
    events: list[Event] = [
        *sent(1, "a"),
        ReceiptReceived(1, T + 2, "DELIVRD"),
        ReceiptReceived(1, T + 2, "DELIVRD"),
    ]
    _, seen = run(1, events)
    assert seen == [
        (1, "queued", "submitted"),
        (None, "queued", "submitted"),
        (1, "submitted", "sent"),
        (None, "submitted", "sent"),
        (1, "sent", "delivered"),
        (None, "sent", "delivered"),
    ]


def test_a_late_resp_records_the_carrier_id_without_a_transition() -> None:
    status, seen = run(1, [Submitted(1, T, "r"), ValidityChecked(EXPIRES), Accepted(1, EXPIRES + 1, "ab")])
    assert (status.segments[0].state, status.segments[0].carrier_message_id) == ("expired", "ab")
    assert seen[-1] == (None, "submitted", "expired")  # nothing published for the id itself
    _, retried = run(1, [Submitted(1, T, "r"), Submitted(1, T + 5, "r2", attempt=2)])
    assert retried == [(1, "queued", "submitted"), (None, "queued", "submitted")]


@pytest.mark.parametrize(
    ("events", "bad", "reason"),
    [
        ([], Accepted(1, T, "a"), "no submit recorded"),
        ([], ReceiptReceived(1, T, "DELIVRD"), "no submit recorded"),
        ([ValidityChecked(EXPIRES)], ReceiptReceived(1, T, "DELIVRD"), "no submit recorded"),
        (sent(1, "a"), Submitted(1, T + 5, "r", attempt=2), "already sent"),
        (sent(1, "a"), Accepted(1, T + 5, "b"), "already has carrier id a"),
        (sent(1, "a"), ReceiptReceived(1, T, "GONE"), "not an SMPP message state"),
        ([], Submitted(3, T, "r"), "outside 1..2"),
    ],
)
def test_illegal_events_are_refused_and_change_nothing(events: list[Event], bad: Event, reason: str) -> None:
    status, _ = run(2, events)
    result = status.apply(bad)
    assert isinstance(result, Rejection)
    assert reason in result.reason


@pytest.mark.parametrize(
    ("states", "overall"),
    [
        (("delivered", "delivered", "delivered"), "delivered"),
        (("delivered", "sent", "delivered"), "sent"),
        (("delivered", "failed", "sent"), "sent"),  # not final until every part is
        (("delivered", "expired", "delivered"), "expired"),
        (("failed", "expired", "rejected"), "failed"),
        (("rejected", "expired"), "rejected"),
        (("queued", "submitted"), "submitted"),
        (("queued", "queued"), "queued"),
        (("sent", "queued"), "submitted"),
        (("expired", "queued"), "submitted"),
    ],
)
def test_overall_from_segments(states: tuple[str, ...], overall: str) -> None:
    assert overall_state(states) == overall  # type: ignore[arg-type]


RECEIPT = st.builds(
    ReceiptReceived,
    seq=st.integers(1, 3),
    at_ms=st.integers(T + 2, EXPIRES + 100),
    state=st.sampled_from(
        ["DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", "ENROUTE", "ACCEPTD", "UNKNOWN", "DELETED"]
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    receipts=st.lists(
        st.one_of(RECEIPT, st.builds(ValidityChecked, st.integers(T, EXPIRES + 100))), max_size=12
    ),
    data=st.data(),
)
def test_any_order_and_duplication_of_receipts_gives_the_same_final_status(
    receipts: list[Event], data: st.DataObject
) -> None:
    start: list[Event] = [e for seq, mid in ((1, "a"), (2, "b"), (3, "c")) for e in sent(seq, mid)]
    reference, _ = run(3, start + receipts)
    shuffled = data.draw(st.permutations(receipts))
    duplicated = (
        shuffled + data.draw(st.lists(st.sampled_from(receipts), max_size=6)) if receipts else shuffled
    )
    other, _ = run(3, start + duplicated)
    assert [s.state for s in other.segments] == [s.state for s in reference.segments]
    assert other.overall == reference.overall


def test_giving_up_rejects_a_segment_whether_or_not_it_was_submitted():
    from smsflow.outbound.status import GaveUp

    status = MessageStatus.new("m", 2, expires_at_ms=10_000)
    status, _ = status.apply(Submitted(1, 1, "route-0"))
    for seq in (1, 2):
        out = status.apply(GaveUp(seq, 5, "every route was tried"))
        assert not isinstance(out, Rejection)
        status, _ = out
    assert [s.state for s in status.segments] == ["rejected", "rejected"]
    assert status.overall == "rejected"
    # a carrier's receipt proves more than our giving up
    status, moves = status.apply(ReceiptReceived(1, 6, "DELIVRD"))
    assert status.segments[0].state == "delivered" and moves
