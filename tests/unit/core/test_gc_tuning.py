"""The garbage collector's settings (smsflow/gc_tuning.py): what the config says is what the process does."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

import pytest

from smsflow import gc_tuning
from smsflow.config import GC_FREEZE_AFTER_S, GC_THRESHOLD0, ConfigError, parse_config


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def _collected_seconds(generation: str) -> float:
    return gc_tuning.GC_SECONDS.labels(generation)._value.get()


def test_defaults_and_refusals_name_the_field() -> None:
    cfg = parse_config({})
    assert (cfg.gc.threshold0, cfg.gc.freeze_after_s) == (GC_THRESHOLD0, GC_FREEZE_AFTER_S)
    assert parse_config({"gc": {"freeze_after_s": None}}).gc.freeze_after_s is None
    with pytest.raises(ConfigError, match=r"gc\.threshold0"):
        parse_config({"gc": {"threshold0": 10}})
    with pytest.raises(ConfigError, match=r"gc\.freeze_after_s"):
        parse_config({"gc": {"freeze_after_s": -1}})
    with pytest.raises(ConfigError, match=r"gc\.generations"):
        parse_config({"gc": {"generations": 2}})


def test_threshold_is_set_and_collections_are_timed(restore_gc: None) -> None:
    _, t1, t2 = gc.get_threshold()
    assert gc_tuning.configure(5_000, None, "test") is None
    assert gc.get_threshold() == (5_000, t1, t2)
    before = _collected_seconds("2")
    gc.collect()
    assert _collected_seconds("2") > before


def test_freeze_takes_what_is_alive_and_later_objects_are_still_collected(restore_gc: None) -> None:
    gc.unfreeze()
    timer = gc_tuning.configure(GC_THRESHOLD0, 0.05, "test")
    assert timer is not None and timer.daemon
    deadline = time.monotonic() + 10
    while gc.get_freeze_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gc.get_freeze_count() > 1000  # the test process's modules, classes, ...

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle made after the freeze: still the collector's
    del a, b
    assert gc.collect() >= 2


def test_no_freeze_when_not_asked(restore_gc: None) -> None:
    gc.unfreeze()
    gc_tuning.configure(GC_THRESHOLD0, None, "test")
    time.sleep(0.05)
    assert gc.get_freeze_count() == 0
