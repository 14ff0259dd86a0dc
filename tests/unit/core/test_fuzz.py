"""A short run of the fuzz targets (tests/fuzz) in every test run; docs/fuzzing.md has the long one."""

from __future__ import annotations

import pytest

from tests.fuzz.targets import build

TARGETS = build(examples=150)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target(name: str) -> None:
    TARGETS[name]()
