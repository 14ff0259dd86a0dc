"""OTP extraction measured on the labelled corpus: no false positive, recall >= 98%.

The figures are computed here from the corpus, never written down: docs/enrichment.md shows how to
print them (bench/bench_enrich.py). ``otp_holdout.jsonl`` was written after the rules were tuned on
``otp_corpus.jsonl`` and is held to the same bars: no false positive, recall >= 98%.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from smsflow.enrich.corpus import load_corpus, score_corpus

DATA = Path(__file__).resolve().parents[2] / "data" / "enrich"
CORPUS = load_corpus(DATA / "otp_corpus.jsonl")
HOLDOUT = load_corpus(DATA / "otp_holdout.jsonl")


def test_corpus_is_large_and_varied() -> None:
    assert len(CORPUS) >= 200
    categories = {row["category"] for row in CORPUS}
    assert categories == {"otp", "otp_trap", "no_otp_trap", "non_otp"}
    assert sum(row["expected_code"] is None for row in CORPUS) >= 50  # messages that must yield none
    assert {row["language"] for row in CORPUS} >= {"zh-Hans", "zh-Hant", "en"}
    assert len({row["text"] for row in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize(
    ("name", "rows", "min_recall"), [("corpus", CORPUS, 0.98), ("holdout", HOLDOUT, 0.98)]
)
def test_no_false_positive_and_recall(name: str, rows: list[dict[str, object]], min_recall: float) -> None:
    score = score_corpus(rows)  # type: ignore[arg-type]
    report = "\n".join(score.failures)
    assert score.false_positives == 0, report
    assert score.precision == 1.0
    assert score.recall >= min_recall, f"{name}: recall {score.recall:.3f}\n{report}"


def test_validity_is_read_when_stated_and_never_invented() -> None:
    score = score_corpus(CORPUS + HOLDOUT)
    # Scored only on rows that state a validity: a row without one proves nothing by matching None.
    assert score.validity_stated >= 100
    assert score.validity_right / score.validity_stated >= 0.98, "\n".join(score.failures)
    assert score.validity_invented == 0, "\n".join(score.failures)


def test_corpus_holds_spaced_codes_and_spaced_numbers_that_are_not_codes() -> None:
    spaced = [row for row in CORPUS if "spaced" in row["note"]]
    assert sum(row["expected_code"] is not None for row in spaced) >= 8
    assert sum(row["expected_code"] is None for row in spaced) >= 6  # phones, dates, card numbers
    score = score_corpus(spaced)
    assert (score.false_positives, score.false_negatives) == (0, 0), "\n".join(score.failures)


def test_language_of_corpus_texts() -> None:
    score = score_corpus(CORPUS + HOLDOUT)
    assert score.language_scored >= 250
    assert score.language_right / score.language_scored >= 0.97, "\n".join(score.failures)
