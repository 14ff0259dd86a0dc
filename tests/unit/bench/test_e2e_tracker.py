"""bench.e2e's Tracker: arrivals joined by tag; the two hops of smsflow's latency from the payload's times."""

from __future__ import annotations

import time

from bench.e2e import Tracker


def test_hops_count_each_tagged_message_once_from_its_first_arrival() -> None:
    tr = Tracker(expected_text={"1": "otp #1", "2": "otp #2"})
    now = time.time() * 1000
    tr.got(
        "otp #1", 1.0, now - 30, now - 10
    )  # reassembled 20 ms after the connector had it, here 10 ms later
    tr.got("otp #1", 2.0, now - 30, now - 10)  # delivered again: a duplicate, not a second latency
    tr.got("untagged text", 2.5, now - 5, now - 1)
    tr.got("otp #2", 3.0, None, now)  # no receipt time: nothing to split
    hops = tr.hops()
    assert hops is not None and tr.extra_arrivals == 1
    assert hops["connector to reassembled"]["max"] == 20
    assert 10 <= hops["reassembled to webhook"]["max"] < 1000
    assert len(tr.stamps) == 1


def test_no_stamps_no_hops() -> None:
    tr = Tracker()
    tr.got("otp #9", 1.0)
    assert tr.hops() is None
