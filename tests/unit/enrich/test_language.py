"""Language of the text: script first (zh-Hans / zh-Hant / ja / ko ...), fastText for Latin text."""

from __future__ import annotations

import pytest

from smsflow.enrich import detect_language


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
