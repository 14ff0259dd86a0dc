"""OTP extraction measured on the labelled corpus: no false positive, recall >= 98%.

The figures are computed here from the corpus, never written down: docs/enrichment.md shows how to
print them (bench/bench_enrich.py). ``otp_holdout.jsonl`` was written after the rules were tuned on
``otp_corpus.jsonl`` and is held to the same precision with a lower recall bar.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from smsflow.enrich.corpus import load_corpus, score_corpus

DATA = Path(__file__).resolve().parents[1] / "data" / "enrich"
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
    ("name", "rows", "min_recall"), [("corpus", CORPUS, 0.98), ("holdout", HOLDOUT, 0.95)]
)
def test_no_false_positive_and_recall(name: str, rows: list[dict[str, object]], min_recall: float) -> None:
    score = score_corpus(rows)  # type: ignore[arg-type]
    report = "\n".join(score.failures)
    assert score.false_positives == 0, report
    assert score.precision == 1.0
    assert score.recall >= min_recall, f"{name}: recall {score.recall:.3f}\n{report}"


def test_validity_is_read_when_stated() -> None:
    score = score_corpus(CORPUS)
    assert score.validity_stated >= 150
    assert score.validity_right / score.validity_stated >= 0.98, "\n".join(score.failures)


def test_language_of_corpus_texts() -> None:
    score = score_corpus(CORPUS + HOLDOUT)
    assert score.language_scored >= 250
    assert score.language_right / score.language_scored >= 0.97, "\n".join(score.failures)
