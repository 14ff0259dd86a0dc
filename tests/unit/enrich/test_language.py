"""Language of the text: script first (zh-Hans / zh-Hant / ja / ko ...), fastText for Latin text."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smsflow.enrich import detect_language, language
from smsflow.enrich.corpus import load_corpus
from smsflow.enrich.signature import signature_spans
from smsflow.enrich.window import SCAN_CHARS


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("【京东】您的验证码是 825959。如非本人操作,请忽略本短信。", "zh-Hans"),
        ("【滙豐】您的一次性密碼為 482913，請勿向任何人透露。", "zh-Hant"),
        ("【foodpanda】你嘅驗證碼係 4826，唔好同其他人分享。", "zh-Hant"),
        ("【Apple】你的 Apple ID 验证码为：683024。请勿与他人共享。", "zh-Hans"),
        ("【拼多多】Your verification code is 5831, valid for 5 minutes.", "en"),  # the brand is not the text
        ("Your verification code is 839080", "en"),
        ("G-123456 is your Google verification code.", "en"),
        ("Votre code de vérification est 482910.", "fr"),
        ("Tu código de verificación es 739102", "es"),
        ("Ваш код подтверждения: 4821", "ru"),
        ("認証コード：382910 このコードは10分間有効です。", "ja"),
        ("【LINE】認証番号：4920", "ja"),  # Japanese-only kanji, no kana
        ("[카카오] 인증번호 [482019]를 입력해주세요.", "ko"),
        ("รหัส OTP ของคุณคือ 482019", "th"),
        ("Mã xác minh của bạn là 528103.", "vi"),
    ],
)
def test_language(text: str, language: str) -> None:
    assert detect_language(text) == language


@pytest.mark.parametrize("text", ["", "Code 5678", "123456", "【京东】", "OK"])
def test_too_short_or_no_letters_is_none(text: str) -> None:
    assert detect_language(text) is None


def test_han_without_distinguishing_characters_is_plain_zh() -> None:
    assert detect_language("您的 123456") == "zh"


# ---- digit runs: one answer per template -----------------------------------------------------------------
# detect_language reads every ASCII digit run as one "0" and keeps the answers (an OTP template's texts differ
# only in their digits). That is sound only if no rule reads a digit's value or a run's length.
_plain = language._language_of_body.__wrapped__  # the body's reading, not cached and digits as they are
CORPORA = sorted((Path(__file__).resolve().parents[2] / "data" / "enrich").glob("*.jsonl"))


def _reference(text: str) -> str | None:
    """detect_language as it was: the body's digits as sent, nothing kept."""
    if not text:
        return None
    text = text[:SCAN_CHARS]
    body = text
    for start, end, _ in reversed(signature_spans(text)):
        body = body[:start] + " " + body[end:]
    return _plain(body)


@pytest.mark.parametrize("corpus", CORPORA, ids=lambda p: p.name)
def test_every_corpus_text_reads_as_it_did(corpus: Path) -> None:
    rows = load_corpus(corpus)
    assert rows
    for row in rows:
        assert language.detect_language(row["text"]) == _reference(row["text"]), row["text"]


PIECES = st.sampled_from(
    ["1", "22", "0", "123456", "9" * 40, "a", "ab", "Code", "ä", "é", " ", "-", "_", ".", "@", "://",
     "http", "www.", "<#>", "验证码", "驗證", "コード", "인증", "รหัส", "код", "١٢٣", "【", "】", "[", "]",
     "\n", "x1y", "Your code is", "您的验证码是"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(PIECES, max_size=30).map("".join))
@example("a1b2c3d4e5f6g7h8i")  # digits between letters separate words: dropping them would make one word
@example("Your1verification22code333is4444here")
def test_digit_runs_never_change_the_answer(body: str) -> None:
    assert _plain(body) == _plain(language._DIGIT_RUN.sub("0", body))


@settings(max_examples=200, deadline=None)
@given(st.lists(PIECES, max_size=30).map("".join))
@example("a1b2c3d4e5f6g7h8i")
@example("【12306】Your1verification22code333is4444here")
def test_the_kept_answer_is_the_answer(text: str) -> None:
    assert language.detect_language(text) == _reference(text)
