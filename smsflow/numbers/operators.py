"""Allocated operator of a phone number range.

libphonenumber's carrier data says which operator a range was *allocated* to; ``data/operators.yaml``
renames its names per region and can override a prefix. With mobile number portability (+86, +852)
a subscriber may have moved since: the operator serving a number now needs an HLR look-up, so this
value is documented as the allocated operator and is ``"unknown"`` rather than a guess.
"""

from __future__ import annotations

import phonenumbers
from phonenumbers import carrier

from smsflow.rulefiles import load_rules

UNKNOWN_OPERATOR = "unknown"

_RULES = load_rules("smsflow.numbers", "operators.yaml")
_NAMES: dict[str, dict[str, str]] = {
    region: {str(k): str(v) for k, v in (names or {}).items()}
    for region, names in (_RULES.get("names") or {}).items()
}
_OVERRIDES: dict[str, dict[str, str]] = {
    region: {str(k): str(v) for k, v in (prefixes or {}).items()}
    for region, prefixes in (_RULES.get("overrides") or {}).items()
}
_OVERRIDE_LENGTHS: dict[str, list[int]] = {
    region: sorted({len(p) for p in prefixes}, reverse=True) for region, prefixes in _OVERRIDES.items()
}


def allocated_operator(number: phonenumbers.PhoneNumber, region: str | None) -> str:
    """Operator the number's range was allocated to, or ``"unknown"``. ``number`` must be valid."""
    if region is not None and region in _OVERRIDES:
        national = str(number.national_number)
        prefixes = _OVERRIDES[region]
        for length in _OVERRIDE_LENGTHS[region]:
            name = prefixes.get(national[:length])
            if name is not None:
                return name
    name = carrier.name_for_valid_number(number, "en")
    if not name:
        return UNKNOWN_OPERATOR
    if region is None:
        return name
    return _NAMES.get(region, {}).get(name, name)
