"""Realistic inbound traffic for the simulated carrier: seed-style OTPs from +852 and +86 senders.

A ``LogicalSms`` is what a handset sent; the simulator turns it into one or more deliver_sm PDUs the way
carriers do (single part, UDH 8/16-bit reference, SAR TLVs or message_payload), in GSM 03.38,
Latin-1 or UCS-2.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

CN_BRANDS = [
    "穷游",
    "高德打车",
    "m3",
    "华西证券",
    "南方航空",
    "QQ阅读",
    "广发信用卡发现精彩",
    "智慧镇江",
    "永乐票务",
    "京东",
    "美团",
    "支付宝",
    "中国银行",
    "携程旅行",
    "滴滴出行",
]
CN_TEMPLATES = [
    "【{b}】您的登录验证码是{c},有效期为5分钟,请立即验证。",
    "【{b}】验证码:{c}(有效期为3分钟),请勿泄露给他人,如非本人操作,请忽略此信息。",
    "【{b}】您的本次登录校验码为:{c},15分钟内输入有效!",
    "【{b}】您的注册验证码是 {c},请不要把验证码泄漏给其他人,如非本人请勿操作。",
    "【{b}】您的验证码是{c},在15分钟内有效。如非本人操作请忽略本短信。",
    "【{b}】{c}(登录验证码)。工作人员不会向您索要,请勿向任何人泄露,以免造成账户或资金损失。",
    "【{b}】您的验证码{c},该验证码5分钟内有效,请勿泄漏于他人!",
]
HK_TEMPLATES = [
    "【{b}】您的驗證碼是{c},有效期為5分鐘,請勿向任何人透露。",
    "{b}: Your verification code is {c}. It expires in 10 minutes.",
]
EN_TEMPLATES = [
    "Your verification code is {c}",
    "{b}: {c} is your login code. Don't share it with anyone. Valid 5 min.",
    "Use {c} to verify your account. Do not share this code. Reply STOP to opt out ~ [info] {{ok}} €5 off",
]
LONG_CN = (
    "【{b}】尊敬的客户,您本次交易的动态验证码为{c},请在10分钟内完成验证。为保障资金安全,切勿将验证码告知他人,"
    "我行工作人员不会以任何理由向您索取。如有疑问请致电客服热线,感谢您的支持与信任,祝您生活愉快!😀𠀀"
)
LONG_EN = (
    "{b}: Your one-time passcode is {c}. It is valid for 15 minutes and can be used once. Never share it, "
    "not even with our staff. If you did not request this code, please contact support at once [ref ^~|]. "
    "Thank you for banking with us - have a great day!"
)

OUR_NUMBERS = ["+85230001000", "+85230001001", "+8610690001234"]


@dataclass
class LogicalSms:
    source: str
    dest: str
    text: str
    data_coding: int  # 0 GSM7, 3 Latin-1, 8 UCS-2
    method: str = "single"  # single | udh8 | udh16 | sar | payload
    source_ton: int = 1
    source_npi: int = 1
    dest_ton: int = 1
    dest_npi: int = 1
    tag: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def _gsm_ok(text: str) -> bool:
    from smsflow.sms.gsm0338 import encode_unpacked

    try:
        encode_unpacked(text)
        return True
    except Exception:
        return False


class TrafficMix:
    """Deterministic (seeded) stream of logical SMS."""

    def __init__(
        self,
        seed: int = 1,
        multipart_ratio: float = 0.2,
        seq_start: int = 0,
        numbers: list[str] | None = None,
    ) -> None:
        """``numbers``: the destinations (our numbers) to pick from; OUR_NUMBERS by default."""
        self.rng = random.Random(seed)
        self.multipart_ratio = multipart_ratio
        self.n = seq_start
        self.numbers = numbers or OUR_NUMBERS

    def _code(self) -> str:
        return "".join(self.rng.choice("0123456789") for _ in range(self.rng.choice([4, 6, 6, 6])))

    def next(self) -> LogicalSms:
        self.n += 1
        r = self.rng
        code = self._code()
        region = r.random()
        if region < 0.5:
            src = f"86{r.choice(['138', '139', '186', '189', '177', '150'])}{r.randrange(10**8):08d}"
        else:
            src = f"852{r.choice(['6', '9', '5'])}{r.randrange(10**7):07d}"
        dest = r.choice(self.numbers)
        long = r.random() < self.multipart_ratio
        kind = r.random()
        if long:
            tmpl = LONG_CN if kind < 0.6 else LONG_EN
        elif kind < 0.55:
            tmpl = r.choice(CN_TEMPLATES)
        elif kind < 0.7:
            tmpl = r.choice(HK_TEMPLATES)
        else:
            tmpl = r.choice(EN_TEMPLATES)
        brand = r.choice(CN_BRANDS) if "【" in tmpl or kind < 0.7 else r.choice(["HSBC", "Google", "Acme"])
        # the serial makes each logical SMS distinct, so dedup never merges two generated messages
        text = tmpl.format(b=brand, c=code) + f" #{self.n}"
        if _gsm_ok(text):
            dc = 0
        else:
            dc = 8
        method = "single"
        if long:
            method = r.choice(["udh8", "udh16", "sar", "payload"])
        return LogicalSms(src, dest.lstrip("+"), text, dc, method, tag=str(self.n), extra={"otp": code})
