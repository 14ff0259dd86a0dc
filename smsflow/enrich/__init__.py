"""Enrichment of an inbound SMS, computed once in the stream so every subscriber and sink gets it:
E.164 numbers with country, kind and allocated operator; the OTP code and its validity; the sender
signature; the language. docs/enrichment.md describes every field and rule.

Everything is compiled at import (rule files under ``data/``, the language model); the functions
are pure and safe to call from any thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from smsflow.enrich.language import detect_language
from smsflow.enrich.otp import Otp, extract_otp
from smsflow.enrich.signature import sender_signature
from smsflow.numbers import NUMBER_KINDS, UNKNOWN_OPERATOR, NumberInfo, normalize_number

__all__ = [
    "NUMBER_KINDS",
    "UNKNOWN_OPERATOR",
    "Enrichment",
    "NumberInfo",
    "Otp",
    "detect_language",
    "enrich",
    "extract_otp",
    "normalize_number",
    "sender_signature",
]


@dataclass(frozen=True, slots=True)
class Enrichment:
    source: NumberInfo
    destination: NumberInfo
    otp: Otp | None
    signature: str | None
    language: str | None


def enrich(
    text: str,
    source_addr: str,
    source_ton: int,
    source_npi: int,
    dest_addr: str,
    dest_ton: int,
    dest_npi: int,
    default_region: str | None = None,
    numbers: tuple[NumberInfo, NumberInfo] | None = None,
) -> Enrichment:
    """Enrich one whole (reassembled, decoded) message. ``default_region`` is the ISO region of the
    route the message came in on (from the carrier config): it reads national numbers. ``numbers``:
    the two addresses already read that way (smsflow/numbers/handoff.py), if they were."""
    if numbers is None:
        numbers = (
            normalize_number(source_addr, source_ton, source_npi, default_region),
            normalize_number(dest_addr, dest_ton, dest_npi, default_region),
        )
    return Enrichment(
        source=numbers[0],
        destination=numbers[1],
        otp=extract_otp(text),
        signature=sender_signature(text),
        language=detect_language(text),
    )
