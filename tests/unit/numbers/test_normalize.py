"""Number normalisation: the forms HK, CN and international carriers send, read through TON/NPI."""

from __future__ import annotations

import pytest

from smsflow.numbers import NUMBER_KINDS, NumberInfo, normalize_number

INTERNATIONAL, NATIONAL, UNKNOWN, ALPHANUMERIC, ABBREVIATED = 1, 2, 0, 5, 6

# addr, ton, npi, default_region -> e164, kind, country, calling_code, operator
CASES = [
    # Hong Kong mobiles in every carrier spelling
    ("85261234567", INTERNATIONAL, 1, None, "+85261234567", "mobile", "HK", 852, "HKT"),
    ("+852 6123 4567", UNKNOWN, 0, None, "+85261234567", "mobile", "HK", 852, "HKT"),
    ("+852-6123-4567", UNKNOWN, 0, "CN", "+85261234567", "mobile", "HK", 852, "HKT"),
    ("0085261234567", UNKNOWN, 0, None, "+85261234567", "mobile", "HK", 852, "HKT"),
    ("0085261234567", UNKNOWN, 0, "CN", "+85261234567", "mobile", "HK", 852, "HKT"),
    ("00185261234567", UNKNOWN, 0, "HK", "+85261234567", "mobile", "HK", 852, "HKT"),  # HK IDD 001
    ("85261234567", UNKNOWN, 0, "CN", "+85261234567", "mobile", "HK", 852, "HKT"),
    ("61234567", NATIONAL, 1, "HK", "+85261234567", "mobile", "HK", 852, "HKT"),
    ("6123 4567", UNKNOWN, 0, "HK", "+85261234567", "mobile", "HK", 852, "HKT"),
    ("85291234567", INTERNATIONAL, 1, "HK", "+85291234567", "mobile", "HK", 852, "3 Hong Kong"),
    ("85290123456", INTERNATIONAL, 1, None, "+85290123456", "mobile", "HK", 852, "SmarTone"),
    # +852 "China Mobile" is China Mobile Hong Kong, renamed by operators.yaml
    ("85251234567", INTERNATIONAL, 1, None, "+85251234567", "mobile", "HK", 852, "China Mobile Hong Kong"),
    ("+85221234567", UNKNOWN, 0, None, "+85221234567", "fixed_line", "HK", 852, "unknown"),
    # Mainland China
    ("8613812345678", INTERNATIONAL, 1, None, "+8613812345678", "mobile", "CN", 86, "China Mobile"),
    ("8613812345678", UNKNOWN, 0, "HK", "+8613812345678", "mobile", "CN", 86, "China Mobile"),
    ("+86 138 1234 5678", UNKNOWN, 0, None, "+8613812345678", "mobile", "CN", 86, "China Mobile"),
    ("13812345678", UNKNOWN, 0, "CN", "+8613812345678", "mobile", "CN", 86, "China Mobile"),
    ("13812345678", NATIONAL, 1, "CN", "+8613812345678", "mobile", "CN", 86, "China Mobile"),
    # TON=1 on national digits: carriers mislabel; the route's valid reading wins
    ("13812345678", INTERNATIONAL, 1, "CN", "+8613812345678", "mobile", "CN", 86, "China Mobile"),
    ("18612345678", UNKNOWN, 0, "CN", "+8618612345678", "mobile", "CN", 86, "China Unicom"),
    ("18912345678", UNKNOWN, 0, "CN", "+8618912345678", "mobile", "CN", 86, "China Telecom"),
    ("19212345678", UNKNOWN, 0, "CN", "+8619212345678", "mobile", "CN", 86, "China Broadnet"),
    # an MVNO block libphonenumber attributes to no single operator: unknown, not guessed
    ("16212345678", UNKNOWN, 0, "CN", "+8616212345678", "mobile", "CN", 86, "unknown"),
    ("4008208820", UNKNOWN, 0, "CN", "+864008208820", "shared_cost", "CN", 86, "unknown"),
    ("8008208820", UNKNOWN, 0, "CN", "+868008208820", "toll_free", "CN", 86, "unknown"),
    ("01012345678", NATIONAL, 1, "CN", "+861012345678", "fixed_line", "CN", 86, "unknown"),
    # full-width digits (NFKC)
    ("１３８１２３４５６７８", UNKNOWN, 0, "CN", "+8613812345678", "mobile", "CN", 86, "China Mobile"),
    # elsewhere
    ("12025550123", INTERNATIONAL, 1, None, "+12025550123", "fixed_line_or_mobile", "US", 1, "unknown"),
    ("+44 7400 123456", UNKNOWN, 0, "HK", "+447400123456", "mobile", "GB", 44, "Three"),
    ("6591234567", INTERNATIONAL, 1, None, "+6591234567", "mobile", "SG", 65, "SingTel"),
    # Chinese service codes on a CN route: never E.164, country CN
    ("10690000", UNKNOWN, 0, "CN", None, "service_code", "CN", 86, "unknown"),
    ("10690000", ALPHANUMERIC, 0, "CN", None, "service_code", "CN", 86, "unknown"),
    ("1069012345678901", UNKNOWN, 0, "CN", None, "service_code", "CN", 86, "unknown"),
    ("106575551234", NATIONAL, 1, "CN", None, "service_code", "CN", 86, "unknown"),
    ("95588", UNKNOWN, 0, "CN", None, "service_code", "CN", 86, "unknown"),
    ("95588", ABBREVIATED, 0, "CN", None, "service_code", "CN", 86, "unknown"),
    ("955880001", UNKNOWN, 0, "CN", None, "service_code", "CN", 86, "unknown"),
    ("12306", UNKNOWN, 0, "CN", None, "service_code", "CN", 86, "unknown"),
    ("10086", UNKNOWN, 0, "CN", None, "service_code", "CN", 86, "China Mobile"),
    ("10010", UNKNOWN, 0, "CN", None, "service_code", "CN", 86, "China Unicom"),
    ("10000", UNKNOWN, 0, "CN", None, "service_code", "CN", 86, "China Telecom"),
    # HK short codes
    ("18501", UNKNOWN, 0, "HK", None, "short_code", "HK", 852, "unknown"),
    ("1010", ABBREVIATED, 0, "HK", None, "short_code", "HK", 852, "unknown"),
    # a short code with no route region: no country
    ("10086", UNKNOWN, 0, None, None, "short_code", None, None, "unknown"),
    # alphanumeric sender IDs, whatever the TON
    ("JD", ALPHANUMERIC, 0, "CN", None, "alphanumeric", None, None, "unknown"),
    ("#HSBC", ALPHANUMERIC, 0, "HK", None, "alphanumeric", None, None, "unknown"),  # HK registered sender
    ("Google", UNKNOWN, 0, None, None, "alphanumeric", None, None, "unknown"),
    # cannot be read
    ("13812345678", UNKNOWN, 0, None, None, "unknown", None, None, "unknown"),  # national, no route region
    ("", UNKNOWN, 0, "HK", None, "unknown", None, None, "unknown"),
    ("*#06#", UNKNOWN, 0, "HK", None, "unknown", None, None, "unknown"),
]


@pytest.mark.parametrize(
    ("addr", "ton", "npi", "region", "e164", "kind", "country", "calling_code", "operator"), CASES
)
def test_normalize_number(
    addr: str,
    ton: int,
    npi: int,
    region: str | None,
    e164: str | None,
    kind: str,
    country: str | None,
    calling_code: int | None,
    operator: str,
) -> None:
    info = normalize_number(addr, ton, npi, region)
    assert (info.e164, info.kind, info.country, info.calling_code, info.operator) == (
        e164,
        kind,
        country,
        calling_code,
        operator,
    )
    assert info.original == addr
    assert info.display == (e164 if e164 else addr.strip())
    assert info.kind in NUMBER_KINDS


def test_carrier_declared_international_number_in_an_unassigned_range_keeps_its_e164() -> None:
    # +86 174 is not a valid range in libphonenumber's metadata: no type, no operator, but the
    # carrier said "international" and the length is possible, so the E.164 form is kept.
    info = normalize_number("+8617412345678", INTERNATIONAL, 1)
    assert (info.e164, info.kind, info.country, info.calling_code, info.operator) == (
        "+8617412345678",
        "unknown",
        "CN",
        86,
        "unknown",
    )


def test_shared_calling_code_of_an_invalid_number_names_no_country() -> None:
    info = normalize_number("+1 999 555 0123", UNKNOWN, 0)
    assert info.calling_code == 1
    assert info.country is None  # +1 is 25 regions: never guessed


def test_region_is_case_insensitive_and_npi_is_not_trusted() -> None:
    base = normalize_number("13812345678", NATIONAL, 1, "CN")
    assert normalize_number("13812345678", NATIONAL, 1, "cn") == base
    assert normalize_number("13812345678", NATIONAL, 9, "CN") == base


def test_original_string_is_kept_verbatim() -> None:
    info = normalize_number(" +852 6123 4567 ", UNKNOWN, 0)
    assert info.original == " +852 6123 4567 "
    assert info.display == "+85261234567"


def test_results_are_immutable() -> None:
    info = normalize_number("85261234567", INTERNATIONAL, 1)
    assert isinstance(info, NumberInfo)
    with pytest.raises(AttributeError):
        info.e164 = "+1"  # type: ignore[misc]
