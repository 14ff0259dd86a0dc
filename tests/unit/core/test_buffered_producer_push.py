"""``BufferedProducer.push`` sends what lingers without taking a failure away from the commit's ``flush``.

No broker is needed: a producer pointed at a closed port gives its record up after ``message.timeout.ms``,
which is the failure a commit's flush must still see after the observations timer pushed (Invariant A,
docs/consistency.md)."""

from __future__ import annotations

import socket
import time

import pytest

from smsflow.producer import BufferedProducer, KafkaUnavailable, producer_conf


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_push_leaves_a_record_that_could_not_be_stored_for_the_commits_flush() -> None:
    conf = producer_conf(
        f"127.0.0.1:{closed_port()}",
        # librdkafka wants message.timeout.ms above linger.ms
        **{"linger.ms": 200, "message.timeout.ms": 400, "reconnect.backoff.max.ms": 100, "log_level": 0},
    )
    p = BufferedProducer(conf)
    await p.send("sms.delivery.v1", b"v", b"k")
    assert len(p) >= 1  # librdkafka counts its pending requests and events too
    started = time.monotonic()
    while len(p) and time.monotonic() - started < 10:
        await p.push(timeout_s=0.5)  # the record is given up on after 400 ms
    assert len(p) == 0, "the record was neither stored nor given up on"
    with pytest.raises(KafkaUnavailable, match=r"sms\.delivery\.v1"):
        await p.flush()  # the push did not swallow the failure
    await p.flush()  # reported once


async def test_a_push_with_nothing_lingering_returns_at_once() -> None:
    p = BufferedProducer(producer_conf(f"127.0.0.1:{closed_port()}", **{"log_level": 0}))
    started = time.monotonic()
    await p.push(timeout_s=5.0)
    assert time.monotonic() - started < 1.0
