"""The traffic mix's destinations: its three numbers by default (the same seeded stream as before), or the
ones given (bench.e2e --numbers, to spread delivery over sms.inbound.v1's partitions)."""

from __future__ import annotations

import pytest

from bench.e2e import destination_numbers
from devkit.simulator.traffic import OUR_NUMBERS, TrafficMix


def test_default_destinations_are_our_three_numbers_and_the_stream_is_unchanged_by_the_option() -> None:
    mix_a, mix_b = TrafficMix(seed=7), TrafficMix(seed=7, numbers=None)
    a = [mix_a.next() for _ in range(200)]
    b = [mix_b.next() for _ in range(200)]
    assert [(m.source, m.dest, m.text) for m in a] == [(m.source, m.dest, m.text) for m in b]
    assert {"+" + m.dest for m in a} == set(OUR_NUMBERS)


def test_given_destinations_are_all_used_and_nothing_else() -> None:
    numbers = destination_numbers(50)
    assert numbers is not None and len(set(numbers)) == 50
    mix = TrafficMix(seed=3, numbers=numbers)
    seen = {"+" + mix.next().dest for _ in range(2000)}
    assert seen == set(numbers)


def test_zero_means_the_mix_default_and_absurd_counts_are_refused() -> None:
    assert destination_numbers(0) is None
    with pytest.raises(SystemExit, match="--numbers"):
        destination_numbers(10_001)
    with pytest.raises(SystemExit, match="--numbers"):
        destination_numbers(-1)
