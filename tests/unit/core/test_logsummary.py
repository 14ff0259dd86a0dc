"""SummarizedLog: the first event of a kind is logged as it is; a flood of it, one line per interval."""

from __future__ import annotations

import logging
from typing import Any

from smsflow.logsummary import SummarizedLog

LOGGER = "tests.logsummary"


def lines(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_a_flood_is_one_line_then_a_count_per_interval_and_kinds_are_apart(caplog: Any) -> None:
    now = [100.0]
    out = SummarizedLog(logging.getLogger(LOGGER), interval_s=60, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert out.log("bad things", logging.WARNING, "bad %s", "a")
        assert not any(out.log("bad things", logging.WARNING, "bad %s", i) for i in range(1000))
        assert out.log("other things", logging.INFO, "other %s", 1)  # another kind is not held back
        now[0] = 159.9
        assert not out.log("bad things", logging.WARNING, "bad %s", "late")
        now[0] = 160.0  # the interval has passed: the count, then the event itself
        assert out.log("bad things", logging.WARNING, "bad %s", "b")
    assert lines(caplog) == [
        "bad a",
        "other 1",
        "1001 more bad things in the last 60 s (not logged one by one)",
        "bad b",
    ]
    assert [r.levelno for r in caplog.records if r.name == LOGGER][2] == logging.WARNING


def test_flush_says_the_count_once_the_interval_passed_and_forgets_quiet_kinds(caplog: Any) -> None:
    now = [0.0]
    out = SummarizedLog(logging.getLogger(LOGGER), interval_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        out.log("skips", logging.INFO, "skip 1")
        out.log("skips", logging.INFO, "skip 2")
        out.log("lone", logging.INFO, "lone 1")
        now[0] = 5.0
        out.flush()  # within the interval: nothing yet
        assert lines(caplog) == ["skip 1", "lone 1"]
        now[0] = 12.0
        out.flush()
        out.flush()  # said once
        assert lines(caplog) == ["skip 1", "lone 1", "1 more skips in the last 12 s (not logged one by one)"]
        out.log("skips", logging.INFO, "skip 3")  # after a flush the next event is logged as it is
        out.log("lone", logging.INFO, "lone 2")
    assert lines(caplog)[-2:] == ["skip 3", "lone 2"]


def test_a_quiet_kinds_count_is_said_by_the_next_event_of_any_kind(caplog: Any) -> None:
    """A burst that stops is summed up by what is logged next once its interval passed, without a timer."""
    now = [0.0]
    out = SummarizedLog(logging.getLogger(LOGGER), interval_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _ in range(5):
            out.log("rejected PDUs", logging.WARNING, "rejected")
        now[0] = 9.0
        out.log("other", logging.INFO, "other 1")  # before the burst's interval passed: no count yet
        now[0] = 10.5
        out.log("another", logging.INFO, "another 1")
    assert lines(caplog) == [
        "rejected",
        "other 1",
        "4 more rejected PDUs in the last 10 s (not logged one by one)",
        "another 1",
    ]


def test_the_first_event_keeps_its_traceback_and_the_repeats_do_not(caplog: Any) -> None:
    out = SummarizedLog(logging.getLogger(LOGGER), interval_s=60, clock=lambda: 0.0)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for i in range(3):
            try:
                raise ValueError(f"boom {i}")
            except ValueError:
                out.log("processing failed (ValueError)", logging.ERROR, "record %d failed", i, exc_info=True)
    records = [r for r in caplog.records if r.name == LOGGER]
    assert [r.getMessage() for r in records] == ["record 0 failed"]
    assert records[0].exc_info is not None and "boom 0" in str(records[0].exc_info[1])


def test_kinds_beyond_the_cap_share_one_so_memory_stays_bounded(caplog: Any) -> None:
    out = SummarizedLog(logging.getLogger(LOGGER), interval_s=60, clock=lambda: 0.0, max_kinds=3)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        logged = [out.log(f"kind {i}", logging.WARNING, "event %d", i) for i in range(100)]
    assert logged[:4] == [True, True, True, True]  # three kinds, then the shared one once
    assert not any(logged[4:])
    assert len(out._kinds) == 4
    assert lines(caplog) == ["event 0", "event 1", "event 2", "event 3"]
