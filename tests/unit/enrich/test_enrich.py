"""enrich(): one call gives what a subscriber acts on, for a message as a route delivers it."""

from __future__ import annotations

from smsflow.enrich import Enrichment, Otp, enrich


def test_cn_route_otp_from_a_service_code() -> None:
    result = enrich(
        "【京东】您的验证码是 825959。如非本人操作,请忽略本短信。",
        source_addr="1069012345",
        source_ton=0,
        source_npi=1,
        dest_addr="13812345678",
        dest_ton=2,
        dest_npi=1,
        default_region="CN",
    )
    assert isinstance(result, Enrichment)
    assert result.otp == Otp("825959", None)
    assert result.signature == "京东"
    assert result.language == "zh-Hans"
    assert (result.source.kind, result.source.country, result.source.e164) == ("service_code", "CN", None)
    assert result.source.display == "1069012345"
    assert (result.destination.e164, result.destination.operator) == ("+8613812345678", "China Mobile")


def test_hk_route_english_otp_from_an_alphanumeric_sender() -> None:
    result = enrich(
        "HSBC: Your one-time password is 482019. Valid for 5 minutes.",
        source_addr="#HSBC",
        source_ton=5,
        source_npi=0,
        dest_addr="85291234567",
        dest_ton=1,
        dest_npi=1,
        default_region="HK",
    )
    assert result.otp == Otp("482019", 300)
    assert result.signature is None
    assert result.language == "en"
    assert (result.source.kind, result.source.display) == ("alphanumeric", "#HSBC")
    assert (result.destination.e164, result.destination.country, result.destination.calling_code) == (
        "+85291234567",
        "HK",
        852,
    )


def test_alert_has_no_otp() -> None:
    result = enrich(
        "【建设银行】您尾号9012的账户3月5日14:26消费支出1,580.00元，余额12,034.56元。",
        "95533",
        0,
        0,
        "8613912345678",
        1,
        1,
        "CN",
    )
    assert result.otp is None
    assert result.signature == "建设银行"
    assert result.source.kind == "service_code"
