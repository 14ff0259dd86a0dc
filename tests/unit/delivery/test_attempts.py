"""The attempts ledger's table logic (the restart behaviour itself: tests/e2e/test_retry_restart.py)."""

from typing import Any

import orjson

from smsflow.delivery.attempts import AttemptLedger, ledger_key, ledger_value


class Record:
    """The parts of a confluent-kafka Message the ledger reads."""

    def __init__(self, key: bytes | None, value: bytes | None, ts_ms: int) -> None:
        self._key, self._value, self._ts = key, value, ts_ms

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)


def ledger() -> AttemptLedger:
    return AttemptLedger("unused:9092", keep_s=100.0)


def test_positions_read_from_the_topic_are_done() -> None:
    lg = ledger()
    rec: Any = Record(ledger_key(3, 41), ledger_value(2, "attempted"), 1_000_000)
    lg._on_record(rec)
    assert lg.done(3, 41) and not lg.done(3, 42) and not lg.done(4, 41)
    tomb: Any = Record(ledger_key(3, 41), None, 1_000_001)
    lg._on_record(tomb)
    assert not lg.done(3, 41)


def test_own_marks_count_and_old_entries_are_pruned() -> None:
    lg = ledger()
    lg.mark(ledger_key(0, 1), at=1000.0)
    lg.mark(ledger_key(0, 2), at=1090.0)
    lg.prune(now=1150.0)  # keeps what the retry topic could still hand out again
    assert not lg.done(0, 1) and lg.done(0, 2) and len(lg) == 1


def test_value_says_which_attempt_and_outcome() -> None:
    doc = orjson.loads(ledger_value(3, "attempted"))
    assert doc["attempt"] == 3 and doc["outcome"] == "attempted" and doc["ts"] > 0
