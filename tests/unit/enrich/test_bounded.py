"""Enrichment work per message is bounded: no pattern backtracks, and only a window of a long text is
read. The time bounds are generous (they catch hangs; bench/bench_enrich.py measures)."""

from __future__ import annotations

import time

import pytest

from smsflow.enrich import Otp, detect_language, enrich, extract_otp, sender_signature
from smsflow.enrich.window import SCAN_CHARS

BOUND_SECONDS = 0.5
LONGEST_SMS = 255 * 153  # 255 concatenated GSM-7 parts
PAYLOAD = 65_000  # a message_payload TLV close to its 64 KiB limit

# Each of these took seconds to minutes before: `\S+@\S+` and `[\w.+\-]+@` retried from every
# position of a long run; `\s+…?\s*` pairs; candidates compared with every other candidate.
ADVERSARIAL = {
    "letters then @": "a" * (PAYLOAD - 1) + "@",
    "keyword then letters": "code " + "a" * PAYLOAD,
    "dotted run": "code " + "a." * (PAYLOAD // 2),
    "cyrillic run": "Ё" * PAYLOAD,
    "open bracket": "【" + "a" * PAYLOAD,
    "close bracket": "a" * PAYLOAD + "】",
    "spaced digit groups": "验证码" + "1234 " * (PAYLOAD // 5),
    "single spaced digits": "验证码 " + "1 " * (PAYLOAD // 2),
    "at signs": "x@" * (PAYLOAD // 2),
    "valid then spaces": "valid" + " " * PAYLOAD + "x",
    "validity with spaces": "有效期" + " " * PAYLOAD + "5分钟",
    "keyword words": "verification code " * (PAYLOAD // 18),
    "longest legal sms": ("a" * 152 + "@") * 255,
    "longest legal sms of codes": ("验证码 123456。" * 4000)[:LONGEST_SMS],
}


def _enrich(text: str) -> float:
    start = time.perf_counter()
    enrich(text, "85261234567", 1, 1, "85230001000", 1, 1, "HK")
    return time.perf_counter() - start


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_enrich_of_a_hostile_text_finishes_fast(name: str) -> None:
    assert _enrich(ADVERSARIAL[name]) < BOUND_SECONDS


def test_each_component_is_bounded_on_a_64k_text() -> None:
    text = "a" * (PAYLOAD - 1) + "@"
    for component in (extract_otp, detect_language, sender_signature):
        start = time.perf_counter()
        component(text)
        assert time.perf_counter() - start < BOUND_SECONDS, component.__name__


def test_a_code_in_the_window_of_a_long_text_is_found() -> None:
    text = "Your verification code is 482019. " + "Lorem ipsum dolor sit amet. " * 2000
    assert extract_otp(text) == Otp("482019", None)
    assert detect_language(text) is not None


def test_a_code_starting_at_the_window_edge_is_read_whole() -> None:
    pad = "x" * (SCAN_CHARS - len("code: ") - 3) + " "
    text = pad + "code: 48201937 and more text " * 10
    code = extract_otp(text)
    assert code is not None and code.code == "48201937"  # never the cut "482"/"4820"


def test_a_code_past_the_window_is_not_read() -> None:
    # The documented trade: the body is delivered whole, the OTP field is left empty.
    text = "x " * SCAN_CHARS + "Your verification code is 482019."
    assert extract_otp(text) is None


def test_signature_at_the_end_of_a_long_text() -> None:
    assert sender_signature("a" * PAYLOAD + "【京东】  ") == "京东"
