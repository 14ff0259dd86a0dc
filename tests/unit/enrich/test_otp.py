"""OTP extraction: the rules one at a time (the corpus test measures them together)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsflow.enrich import Otp, extract_otp


@pytest.mark.parametrize(
    ("text", "code", "validity"),
    [
        # seed styles
        ("【穷游】您的登录验证码是191595,有效期为5分钟,请立即验证。", "191595", 300),
        ("【高德打车】验证码:7966(有效期为3分钟),请勿泄露给他人。", "7966", 180),
        ("【m3】您的本次登录校验码为:332328,15分钟内输入有效!", "332328", 900),
        ("【智慧镇江】979714(登录验证码)。工作人员不会向您索要。", "979714", None),
        ("Your verification code is 839080", "839080", None),
        # full-width colon, brackets and digits
        ("【京东】验证码：８２５９５９（５分钟内有效）", "825959", 300),
        # code forms and how they are published
        ("G-123456 is your Google verification code.", "123456", None),
        ("Your WhatsApp code: 123-456", "123456", None),
        ("123 456 is your Instagram code.", "123456", None),
        ("Verification code: A7X2K9. Expires in 10 minutes.", "A7X2K9", 600),
        # spaced digit groups right after a strong keyword (common in Chinese OTP texts)
        ("验证码：1234 5678", "12345678", None),
        ("Your ExpressVPN sign-in code is 8102 4719", "81024719", None),
        ("您的验证码为 8 1 0 2，5分钟内有效。", "8102", 300),
        ("校验码 93 27 41", "932741", None),
        # digits of other scripts are published as 0-9 (found by the fuzzer: "꧕123456" was a code)
        ("Your verification code is ४८२०१९. Valid for ५ minutes.", "482019", 300),
        ("验证码 ꧕12345", "512345", None),
        ("验证码 482019，有效期为0分钟", "482019", None),  # a validity of 0 is none (fuzzer)
        ("【联通】您的验证码为：0429", "0429", None),  # leading zero kept
        ("您的验证码是【123456】", "123456", None),
        # validity wordings
        ("验证码 1234，有效期为半小时", "1234", 1800),
        ("验证码 1234，十五分钟内有效", "1234", 900),
        ("驗證碼 1234，有效時間為 5 分鐘", "1234", 300),
        ("一次性密碼 123456，此密碼將於 5 分鐘後失效", "123456", 300),
        ("验证码 123456，有效时间为120秒", "123456", 120),
        ("Your code is 4821, valid 5 min", "4821", 300),
        ("Your OTP is 482019. It will expire in 2 hours.", "482019", 7200),
        ("認証コード：382910 このコードは10分間有効です。", "382910", 600),
    ],
)
def test_extracts_code_and_validity(text: str, code: str, validity: int | None) -> None:
    assert extract_otp(text) == Otp(code, validity)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("【招商银行】尾号4021的卡支付金额¥2,368.00，验证码492018", "492018"),
        ("【建设银行】验证码：603915。交易金额1299.00元", "603915"),
        ("【京东】验证码：093517，订单号 558210 支付中", "093517"),
        ("【12306】验证码为581204", "581204"),  # the brand is a number
        ("【交管12123】验证码：204816，您正在登录交管12123", "204816"),
        ("【滙豐】您的一次性密碼為 482913。如非本人操作，請致電 2233 3000。", "482913"),
        ("验证码 4921：您的行程 2026-03-05 12:30 已结束", "4921"),
        ("OTP for txn of INR 5000 at Amazon is 123456.", "123456"),
        ("Your OTP is 902714 for the card ending 4452 of HKD 888.00.", "902714"),
        ("验证码 842917，您正在向张*转账 20000 元", "842917"),
        ("【交通银行】您尾号**5512的信用卡申请验证码为 731048", "731048"),
        ("Your code is 620194. Call 2888 8888 if you did not request it.", "620194"),
        ("您的验证码为 830152，如非本人操作请致电 95568。", "830152"),
    ],
)
def test_trap_numbers_next_to_a_code_are_not_taken(text: str, code: str) -> None:
    otp = extract_otp(text)
    assert otp is not None and otp.code == code


@pytest.mark.parametrize(
    "text",
    [
        "",
        "验证码发送过于频繁，请60秒后再试。",
        "【京东】验证码已发送至尾号 5678 的手机，请注意查收。",
        "【招商银行】请勿将验证码透露给任何人，客服热线 95555。",
        "【中国移动】您的验证码将于2026-03-05 23:59过期。",
        "【银行】任何索要验证码的都是骗子，请拨打 400-820-8820。",
        "您尾号1234的储蓄卡于03月05日12:30支出人民币1,234.00元。",
        "【顺丰】取件码 621830，请在 24 小时内取件。",  # pickup code: not an OTP
        "【拼多多】您的优惠码 8826 已到账，回T退订。",
        "Use promo code SPRING2026 for 20% off. Shop now!",
        "Use code SAVE20 for 20% off your next order!",
        "Your booking confirmation code is X7K9QP.",
        "Your gift card code is 8391-2045-7712.",
        "To verify your account, call 1800 123 456.",
        "Your Wi-Fi code for today is 4471.",
        # spaced digit groups that are not a code
        "验证码已发送至 138 1234 5678",  # a phone number: 11 digits, and not right after the keyword
        "验证码 12 34 56 78 90",  # ten digits: more than a code
        "验证码 2026 11 30 发送",  # a date
        "如未收到验证码，请致电 2233 3000",  # a phone number
        "Your code is 1234 5678 9012 3456",  # a card number
        "旧验证码 1234，新验证码 5678",  # two codes equally close: unsure -> none
    ],
)
def test_no_otp(text: str) -> None:
    assert extract_otp(text) is None


def test_same_code_twice_is_one_code() -> None:
    text = "Your Apple Account code is: 602183.\n\n@apple.com #602183"
    assert extract_otp(text) == Otp("602183", None)


# Property: numbers in the shapes of amounts, dates, times, phone numbers, card tails and order
# numbers are never returned, whatever their digits, even with a keyword in the message.
_TRAPS = st.one_of(
    st.integers(1000, 99999999).map(lambda n: f"¥{n}.00"),
    st.integers(1000, 99999).map(lambda n: f"HK${n:,}.50"),
    st.integers(1000, 999999).map(lambda n: f"金额{n}元"),
    st.integers(1000, 9999).map(lambda n: f"尾号{n}"),
    st.integers(1000, 9999).map(lambda n: f"card ending {n}"),
    st.integers(100000, 99999999).map(lambda n: f"订单号 {n}"),
    st.integers(2000, 2099).map(lambda y: f"{y}-03-05"),
    st.integers(2000, 2099).map(lambda y: f"{y}年3月5日"),
    st.integers(1000, 9999).map(lambda n: f"{n // 100:02d}:{n % 100:02d}"),
    st.integers(20000000, 99999999).map(lambda n: f"请致电 {n // 10000} {n % 10000:04d}"),
    st.integers(10000, 99999).map(lambda n: f"客服热线{n}"),
    st.integers(1000, 99999).map(lambda n: f"call {n}"),
)


@settings(max_examples=300, deadline=None)
@given(
    trap=_TRAPS, template=st.sampled_from(["验证码请勿泄露，{trap}。", "您的验证码已失效，{trap}", "{trap}"])
)
def test_trap_shapes_are_never_a_code(trap: str, template: str) -> None:
    assert extract_otp(template.format(trap=trap)) is None


@settings(max_examples=300, deadline=None)
@given(
    code=st.integers(0, 999999).map(lambda n: f"{n:06d}"),
    trap=_TRAPS,
    template=st.sampled_from(
        [
            "【银行】您的验证码是{code}，{trap}，请勿泄露。",
            "【银行】{trap}，验证码{code}，5分钟内有效。",
            "Your verification code is {code}. {trap}",
        ]
    ),
)
def test_code_is_found_next_to_any_trap(code: str, trap: str, template: str) -> None:
    otp = extract_otp(template.format(code=code, trap=trap))
    assert otp is not None and otp.code == code
