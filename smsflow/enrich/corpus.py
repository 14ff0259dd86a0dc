"""Score OTP extraction and language detection against a labelled corpus (JSON lines).

Each line: ``text``, ``expected_code`` (null when the message has no OTP),
``expected_validity_seconds`` (null: the text states none), ``language`` (null: not scored),
``category``, ``note``. Validity is scored on the rows that state one, among the codes found; a
validity read where the row states none is counted apart (``validity_invented``).
A returned code that differs from the expected one counts as a false positive AND a false negative:
for the user a wrong code is worse than none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smsflow.enrich.language import detect_language
from smsflow.enrich.otp import extract_otp


@dataclass
class CorpusScore:
    messages: int = 0
    with_code: int = 0
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    validity_right: int = 0
    validity_stated: int = 0  # codes found whose row states a validity
    validity_invented: int = 0  # codes found with a validity their row does not state
    language_right: int = 0
    language_scored: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        returned = self.true_positives + self.false_positives
        return self.true_positives / returned if returned else 1.0

    @property
    def recall(self) -> float:
        expected = self.true_positives + self.false_negatives
        return self.true_positives / expected if expected else 1.0


def load_corpus(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def score_corpus(rows: list[dict[str, Any]]) -> CorpusScore:
    score = CorpusScore()
    for row in rows:
        text, expected = row["text"], row["expected_code"]
        score.messages += 1
        otp = extract_otp(text)
        got = otp.code if otp else None
        if expected is not None:
            score.with_code += 1
        if otp is not None and got == expected:
            score.true_positives += 1
            expected_validity = row["expected_validity_seconds"]
            # Only a row that states a validity scores it: None == None is no evidence of reading one.
            if expected_validity is not None:
                score.validity_stated += 1
                score.validity_right += otp.validity_seconds == expected_validity
            elif otp.validity_seconds is not None:
                score.validity_invented += 1
            if otp.validity_seconds != expected_validity:
                score.failures.append(f"validity: expected {expected_validity}, got {otp}: {text!r}")
        elif got != expected:
            score.false_positives += got is not None
            score.false_negatives += expected is not None
            score.failures.append(f"otp: expected {expected!r}, got {got!r}: {text!r}")
        if row.get("language") is not None:
            score.language_scored += 1
            language = detect_language(text)
            if language == row["language"]:
                score.language_right += 1
            else:
                score.failures.append(f"language: expected {row['language']}, got {language}: {text!r}")
    return score
