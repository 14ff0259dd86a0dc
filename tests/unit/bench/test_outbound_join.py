"""The outbound bench's join of requests to the submit_sm the SMSC read, and its Kannel sendsms config."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bench_outbound import accepted_arrivals, join_submits
from bench.kannel import KannelOptions, render_config
from devkit.simulator.submits import SubmitRecord


def record(dest: str, at: float, account: str = "a", outcome: str = "accepted") -> SubmitRecord:
    return SubmitRecord(account, 1, "85230009000", dest, b"hi", 0, 1, at, outcome, 0)  # type: ignore[arg-type]


def test_latency_is_the_first_submit_after_the_request_and_repeats_count_as_twice() -> None:
    sent = {"8529100": 10.0, "8529101": 10.5, "8529102": 11.0}
    arrivals = [("8529100", 10.02), ("8529101", 10.6), ("8529101", 10.9), ("8529999", 10.1)]
    joined = join_submits(sent, arrivals)
    assert joined.messages == 3
    assert (joined.submitted, joined.twice, joined.missing) == (2, 1, 1)
    assert sorted(round(x, 3) for x in joined.latency_ms) == [20.0, 100.0]  # the repeat is not a latency
    # 3 accepted submits of these messages over 10.0 (first request) .. 10.9 (last submit)
    assert joined.mt_per_s == pytest.approx(3 / 0.9)


def test_nothing_submitted_gives_no_rate_and_every_message_missing() -> None:
    joined = join_submits({"1": 1.0, "2": 2.0}, [])
    assert (joined.submitted, joined.missing, joined.mt_per_s, joined.latency_ms) == (0, 2, 0.0, [])


def test_only_accepted_submits_of_the_account_arrive_with_digits_only_destinations() -> None:
    records = [
        record("+852 9100", 1.0),
        record("8529101", 2.0, outcome="error"),
        record("8529102", 3.0, account="other"),
    ]
    assert accepted_arrivals(records, "a") == [("8529100", 1.0)]


def test_sendsms_user_and_message_id_bases_reach_kannel_conf(tmp_path: Path) -> None:
    opts = KannelOptions(
        "127.0.0.1", 2775, "k", "pw", "http://x/", sendsms_user=("u", "p"), msg_id_type="0x03"
    )
    conf = render_config(opts, tmp_path, 1, 2, 3)
    assert 'group = sendsms-user\nusername = "u"\npassword = "p"' in conf
    assert "msg-id-type = 0x03" in conf
    plain = render_config(KannelOptions("127.0.0.1", 2775, "k", "pw", "http://x/"), tmp_path, 1, 2, 3)
    assert "sendsms-user" not in plain and "msg-id-type = 0x01" in plain
