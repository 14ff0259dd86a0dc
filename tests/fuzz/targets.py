"""The fuzz targets as hypothesis tests, for any number of examples: a few hundred in CI
(tests/unit/core/test_fuzz.py), a million or more from ``python -m tests.fuzz`` (docs/fuzzing.md)."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.inputs import (
    ADDRESSES,
    CARRIERS,
    long_sms_text,
    pdu_bytes,
    raw_traffic,
    receipt_id,
    receipt_text,
    sms_text,
)
from tests.fuzz.properties import check_enrich, check_pdu, check_receipt, check_traffic

TARGETS: dict[str, Callable[[], None]] = {}


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def build(examples: int) -> dict[str, Callable[[], None]]:
    """Each target as a runnable hypothesis test of ``examples`` examples."""
    run = _settings(examples)
    return {
        "pdu": run(given(pdu_bytes)(check_pdu)),
        "receipt": run(
            given(
                receipt_text() | st.text(max_size=300),
                st.none() | receipt_id,
                st.none() | st.integers(0, 255),
                st.none() | st.binary(max_size=4),
            )(check_receipt)
        ),
        "ingest": run(given(raw_traffic)(check_traffic)),
        "enrich": run(
            given(
                long_sms_text | sms_text,
                st.sampled_from(ADDRESSES) | st.text(max_size=24),
                st.sampled_from(ADDRESSES) | st.text(max_size=24),
                st.integers(0, 255),
                st.sampled_from(sorted(CARRIERS.values(), key=str)),
            )(check_enrich)
        ),
    }
