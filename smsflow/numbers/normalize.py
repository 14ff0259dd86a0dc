"""Normalise an SMPP address (digits + TON/NPI) to E.164 and say what kind of number it is.

libphonenumber (``phonenumbers``) decides validity, type and country; this module only decides
*how to read* the carrier's digits (from the TON, a leading ``+``/``00``, or the route's region) and
classifies what libphonenumber does not model: alphanumeric senders and Chinese service codes
(``data/numbers.yaml``). Results are cached: on the hot path the same few destination numbers and
service codes recur, and a ``NumberInfo`` is immutable.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType, shortnumberinfo

from smsflow.numbers.operators import UNKNOWN_OPERATOR, allocated_operator
from smsflow.rulefiles import load_rules

# SMPP 3.4 §5.2.5 type of number.
TON_UNKNOWN = 0
TON_INTERNATIONAL = 1
TON_NATIONAL = 2
TON_NETWORK_SPECIFIC = 3
TON_SUBSCRIBER = 4
TON_ALPHANUMERIC = 5
TON_ABBREVIATED = 6

# Every value NumberInfo.kind can take (the Avro enum can be built from this tuple).
NUMBER_KINDS = (
    "mobile",
    "fixed_line",
    "fixed_line_or_mobile",
    "toll_free",
    "premium_rate",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "short_code",
    "service_code",
    "alphanumeric",
    "unknown",
)

_KIND_OF_TYPE: dict[int, str] = {
    PhoneNumberType.MOBILE: "mobile",
    PhoneNumberType.FIXED_LINE: "fixed_line",
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "fixed_line_or_mobile",
    PhoneNumberType.TOLL_FREE: "toll_free",
    PhoneNumberType.PREMIUM_RATE: "premium_rate",
    PhoneNumberType.SHARED_COST: "shared_cost",
    PhoneNumberType.VOIP: "voip",
    PhoneNumberType.PERSONAL_NUMBER: "personal_number",
    PhoneNumberType.PAGER: "pager",
    PhoneNumberType.UAN: "uan",
    PhoneNumberType.VOICEMAIL: "voicemail",
}
# Types whose range has an operator in libphonenumber's carrier data.
_OPERATOR_TYPES: frozenset[int] = frozenset(
    {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE, PhoneNumberType.PAGER}
)


@dataclass(frozen=True, slots=True)
class NumberInfo:
    original: str  # as the carrier sent it
    e164: str | None  # '+85261234567'; None for alphanumeric senders, short/service codes, unparseable
    display: str  # e164 if known, else the original stripped
    kind: str  # one of NUMBER_KINDS
    country: str | None  # ISO 3166-1 alpha-2 ('HK', 'CN')
    calling_code: int | None  # 852, 86
    operator: str  # operator the range was ALLOCATED to (see operators.py), or 'unknown'


_RULES = load_rules("smsflow.numbers", "numbers.yaml")
_SERVICE_CODES: dict[str, re.Pattern[str]] = {
    region: re.compile("|".join(f"(?:{p})" for p in patterns))
    for region, patterns in (_RULES.get("service_codes") or {}).items()
    if patterns
}
_OPERATOR_SERVICES: dict[str, dict[str, str]] = {
    region: {str(k): str(v) for k, v in (codes or {}).items()}
    for region, codes in (_RULES.get("operator_services") or {}).items()
}

_SEPARATORS = re.compile(r"[\s\-.()/\u00a0]+")
_DIALLABLE = re.compile(r"\+?\d+")
_LETTER = re.compile(r"[^\W\d_]")
_MAX_SHORT_CODE_DIGITS = 6


def normalize_number(addr: str, ton: int = 0, npi: int = 0, default_region: str | None = None) -> NumberInfo:
    """Read an SMPP address. ``default_region`` is the route's ISO region for national numbers.

    ``npi`` is accepted for completeness but not trusted: carriers fill it inconsistently, and the
    digits together with the TON say more.
    """
    region = default_region.upper() if default_region else None
    return _normalize(addr, ton, region)


@lru_cache(maxsize=65536)
def _normalize(addr: str, ton: int, region: str | None) -> NumberInfo:
    stripped = unicodedata.normalize("NFKC", addr).strip()
    if not stripped:
        return _unknown(addr, stripped)
    compact = _SEPARATORS.sub("", stripped)
    # Letters make a sender ID ("JD", "#HSBC" from Hong Kong's registered-sender scheme) whatever
    # the TON; a TON=5 address of digits only is read as a number, as carriers put service codes there.
    if _LETTER.search(compact):
        return NumberInfo(addr, None, stripped, "alphanumeric", None, None, UNKNOWN_OPERATOR)
    if not _DIALLABLE.fullmatch(compact):
        return _unknown(addr, stripped)

    plus = compact.startswith("+")
    digits = compact.lstrip("+")
    if ton == TON_ABBREVIATED:
        return (
            _service(addr, stripped, digits, region)
            or _short(addr, stripped, digits, region)
            or _unknown(addr, stripped)
        )

    if plus:
        parsed = _international(digits[2:] if digits.startswith("00") else digits)
        return _from_parsed(addr, parsed, trust_possible=True) or _unknown(addr, stripped)

    # Service codes (data/numbers.yaml) come before the route's national reading: without its trunk
    # prefix, the SP code 1069012345 also reads as a Beijing landline (0)10-69012345.
    if ton == TON_INTERNATIONAL:
        parsed = _international(digits[2:] if digits.startswith("00") else digits)
        # Carriers mislabel national numbers as international: the route's valid reading beats an
        # invalid international one.
        return (
            _from_parsed(addr, parsed)
            or _service(addr, stripped, digits, region)
            or _from_parsed(addr, _national(digits, region))
            or _short(addr, stripped, digits, region)
            or _from_parsed(addr, parsed, trust_possible=True)
            or _unknown(addr, stripped)
        )

    if ton == TON_NATIONAL:
        return (
            _service(addr, stripped, digits, region)
            or _from_parsed(addr, _national(digits, region))
            or _short(addr, stripped, digits, region)
            or _unknown(addr, stripped)
        )

    # TON unknown (0), network specific (3), subscriber (4), alphanumeric-with-digits (5): infer.
    # A leading 00 is an international prefix everywhere we route; then the route's own numbers,
    # because when digits read validly both ways, traffic on a route is overwhelmingly national to it.
    return (
        (_from_parsed(addr, _international(digits[2:])) if digits.startswith("00") else None)
        or _service(addr, stripped, digits, region)
        or _from_parsed(addr, _national(digits, region))
        or _from_parsed(addr, _international(digits))
        or _short(addr, stripped, digits, region)
        or _unknown(addr, stripped)
    )


_Parsed = tuple[phonenumbers.PhoneNumber, int]  # number, PhoneNumberType value


def _international(digits: str) -> _Parsed | None:
    """Digits that start with a country code. The type is UNKNOWN when the number is not valid."""
    if not digits:
        return None
    try:
        number = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return None
    return number, phonenumbers.number_type(number)


def _national(digits: str, region: str | None) -> _Parsed | None:
    """Digits read in the route's region; only a valid number is returned."""
    if region is None:
        return None
    try:
        number = phonenumbers.parse(digits, region)
    except phonenumbers.NumberParseException:
        return None
    number_type = phonenumbers.number_type(number)
    if number_type == PhoneNumberType.UNKNOWN:
        return None
    return number, number_type


def _from_parsed(addr: str, parsed: _Parsed | None, trust_possible: bool = False) -> NumberInfo | None:
    """NumberInfo for a valid parsed number, else None. With ``trust_possible`` (the carrier said
    the number is international) an invalid number of possible length keeps its E.164 form, as kind
    "unknown": libphonenumber can lag behind a newly opened range, and dropping the number would
    lose more than it protects."""
    if parsed is None:
        return None
    number, number_type = parsed
    if number_type == PhoneNumberType.UNKNOWN:
        if not (trust_possible and phonenumbers.is_possible_number(number)):
            return None
        e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
        calling_code = number.country_code or 0
        # Only a calling code of one region names the country (+1 and +44 are shared).
        regions = phonenumbers.region_codes_for_country_code(calling_code)
        country = regions[0] if len(regions) == 1 else None
        return NumberInfo(addr, e164, e164, "unknown", country, calling_code or None, UNKNOWN_OPERATOR)
    region = phonenumbers.region_code_for_number(number)
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    operator = allocated_operator(number, region) if number_type in _OPERATOR_TYPES else UNKNOWN_OPERATOR
    kind = _KIND_OF_TYPE.get(number_type, "unknown")
    return NumberInfo(addr, e164, e164, kind, region, number.country_code, operator)


def _service(addr: str, stripped: str, digits: str, region: str | None) -> NumberInfo | None:
    """A service code of the route's region (data/numbers.yaml)."""
    if region is None:
        return None
    pattern = _SERVICE_CODES.get(region)
    if pattern is None or not pattern.fullmatch(digits):
        return None
    calling_code = phonenumbers.country_code_for_region(region) or None
    operator = _OPERATOR_SERVICES.get(region, {}).get(digits, UNKNOWN_OPERATOR)
    return NumberInfo(addr, None, stripped, "service_code", region, calling_code, operator)


def _short(addr: str, stripped: str, digits: str, region: str | None) -> NumberInfo | None:
    """A short code: of the route's region when libphonenumber finds it possible there."""
    if not digits or len(digits) > _MAX_SHORT_CODE_DIGITS:
        return None  # libphonenumber calls some 11-digit strings "possible short numbers"
    if region is None:
        return NumberInfo(addr, None, stripped, "short_code", None, None, UNKNOWN_OPERATOR)
    try:
        short = phonenumbers.parse(digits, region)
    except phonenumbers.NumberParseException:
        return None
    if not shortnumberinfo.is_possible_short_number_for_region(short, region):
        return None
    calling_code = phonenumbers.country_code_for_region(region) or None
    return NumberInfo(addr, None, stripped, "short_code", region, calling_code, UNKNOWN_OPERATOR)


def _unknown(addr: str, stripped: str) -> NumberInfo:
    return NumberInfo(addr, None, stripped, "unknown", None, None, UNKNOWN_OPERATOR)
