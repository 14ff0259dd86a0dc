"""Sender signature: 【brand】 (or [brand]) at the start or the end of the text."""

from __future__ import annotations

import pytest

from smsflow.enrich import sender_signature


@pytest.mark.parametrize(
    ("text", "brand"),
    [
        ("【京东】您的验证码是 825959。", "京东"),
        ("【广发信用卡发现精彩】您的登录验证码是:4125", "广发信用卡发现精彩"),
        ("您尾号1234的储蓄卡支出人民币1,234.00元。【工商银行】", "工商银行"),
        ("验证码：7329【汽车之家】 ", "汽车之家"),
        ("【 京东 】验证码 1234", "京东"),
        ("【12306】验证码为581204", "12306"),
        ("［京东］验证码 1234", "京东"),
        ("[TikTok] 5310 is your verification code", "TikTok"),
        ("<#> 【美团】验证码 1653", "美团"),
        ("【京东】验证码 1234【京东商城】", "京东"),  # the leading one wins
    ],
)
def test_signature(text: str, brand: str) -> None:
    assert sender_signature(text) == brand


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Your verification code is 839080",
        "您正在登录【大众点评】，验证码 4618，5分钟内有效。",  # mid-text: a mention, not a signature
        "[1/2] 您的订单已发货",  # multipart counter
        "Your code is 1234 [2]",
        "您的验证码是【123456】",  # digits closing a text: a code (at the start, 【12306】 is a brand)
        "[482019] is your verification code",
    ],
)
def test_no_signature(text: str) -> None:
    assert sender_signature(text) is None
