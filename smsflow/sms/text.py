"""SMS text by data_coding: which alphabet a value means, and decoding/encoding user data with it.

SMPP 3.4 section 5.2.19 defines data_coding 0x00-0x0F itself (0 = SMSC default alphabet, 1 = IA5, 3 = Latin-1,
8 = UCS-2, ...); above that the value is a GSM 03.38 Data Coding Scheme (3GPP TS 23.038 section 4):
- 0x10-0x3F general data coding and 0x40-0x7F "marked for automatic deletion": bit 5 compressed (refused),
  bit 4 "class present" (class in bits 1-0), bits 3-2 alphabet (00 GSM 7-bit, 01 8-bit, 10 UCS-2).
- 0xC0-0xDF message waiting indication, GSM 7-bit; 0xE0-0xEF message waiting, UCS-2.
- 0xF0-0xFF data coding/message class: bit 2 0 = GSM 7-bit, 1 = 8-bit data; class in bits 1-0.
- 0x80-0xBF are reserved.

Binary user data has no text: `DecodedText.text` is its base64 (standard alphabet, padded), and
`encode_text` takes base64 for those codings. UCS-2 is decoded as UTF-16BE, so surrogate pairs (emoji, CJK
Extension B) come out as one character. data_coding 0 is the "SMSC default alphabet": GSM 7-bit unless the
carrier says otherwise (`default_alphabet="ascii"` or `"latin1"`). A carrier profile can go further and map
any value to an alphabet (`overrides`, e.g. {0x01: "gsm7"} for SMSCs that label GSM 03.38 as IA5): see
smsflow/carriers.py and docs/carriers.md.
"""

from __future__ import annotations

import base64
import binascii
import codecs
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from smsflow.sms import gsm0338

Errors = Literal["strict", "replace"]
DefaultAlphabet = Literal["gsm7", "ascii", "latin1"]

# Encoding names of DecodedText.encoding -> Python codec (None: handled here).
_CODECS: dict[str, str | None] = {
    "gsm7": None,
    "binary": None,
    "ascii": "ascii",
    "latin1": "latin-1",
    "ucs2": "utf-16-be",
    "shift_jis": "shift_jis",  # data_coding 5, "JIS (X 0208-1990)", is sent Shift_JIS-encoded in practice
    "iso8859_5": "iso8859-5",
    "iso8859_8": "iso8859-8",
    "iso2022_jp": "iso2022_jp",
    "euc_kr": "euc_kr",  # data_coding 0x0E, KS C 5601
}

_SMPP_CODINGS: dict[int, str] = {
    0x01: "ascii",
    0x02: "binary",
    0x03: "latin1",
    0x04: "binary",
    0x05: "shift_jis",
    0x06: "iso8859_5",
    0x07: "iso8859_8",
    0x08: "ucs2",
    0x0A: "iso2022_jp",
    0x0E: "euc_kr",
}
_UNSUPPORTED_SMPP = {0x09: "pictogram encoding", 0x0D: "extended Kanji JIS (X 0212-1990)"}
_GSM_ALPHABETS = {0b00: "gsm7", 0b01: "binary", 0b10: "ucs2"}


class TextDecodeError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TextEncodeError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Coding:
    """What a data_coding value means: the encoding and the GSM message class if it carries one."""

    encoding: str
    message_class: int | None = None


@dataclass(frozen=True)
class DecodedText:
    text: str
    encoding: str
    """gsm7, ascii, latin1, ucs2 or binary; shift_jis, iso8859_5, iso8859_8, iso2022_jp, euc_kr for the
    regional SMPP codings."""
    message_class: int | None = None


ALPHABETS = tuple(_CODECS)


def interpret_data_coding(
    data_coding: int,
    default_alphabet: DefaultAlphabet = "gsm7",
    overrides: Mapping[int, str] | None = None,
) -> Coding:
    """The `Coding` a data_coding value stands for; `TextDecodeError` when it is reserved or unsupported.

    `overrides` (a carrier profile's data_coding map) wins over the standard meaning; the GSM message class
    of the value is kept when the standard defines one.
    """
    if default_alphabet not in ("gsm7", "ascii", "latin1"):
        raise ValueError(f"default_alphabet must be gsm7, ascii or latin1, not {default_alphabet!r}")
    dc = data_coding
    if not 0 <= dc <= 0xFF:
        raise TextDecodeError(f"data_coding {dc} is not an octet")
    if overrides and dc in overrides:
        mapped = overrides[dc]
        if mapped not in _CODECS:
            raise ValueError(f"data_coding 0x{dc:02X} mapped to unknown alphabet {mapped!r}")
        try:
            message_class = interpret_data_coding(dc, default_alphabet).message_class
        except TextDecodeError:
            message_class = None
        return Coding(mapped, message_class)
    if dc == 0x00:
        return Coding(default_alphabet)
    if dc <= 0x0F:
        if dc in _SMPP_CODINGS:
            return Coding(_SMPP_CODINGS[dc])
        what = _UNSUPPORTED_SMPP.get(dc, "reserved")
        raise TextDecodeError(f"data_coding 0x{dc:02X} ({what}) is not supported")
    if dc <= 0x7F:
        if dc & 0x20:
            raise TextDecodeError(
                f"data_coding 0x{dc:02X} marks compressed text (3GPP TS 23.042): not supported"
            )
        alphabet = _GSM_ALPHABETS.get((dc >> 2) & 0b11)
        if alphabet is None:
            raise TextDecodeError(f"data_coding 0x{dc:02X} uses the reserved alphabet bits 11")
        return Coding(alphabet, dc & 0b11 if dc & 0x10 else None)
    if dc <= 0xBF:
        raise TextDecodeError(f"data_coding 0x{dc:02X} is in a reserved coding group")
    if dc <= 0xDF:
        return Coding("gsm7")
    if dc <= 0xEF:
        return Coding("ucs2")
    # 0xF0-0xFF; bit 3 is reserved and ignored.
    return Coding("binary" if dc & 0x04 else "gsm7", dc & 0b11)


def decode_text(
    data: bytes,
    data_coding: int,
    *,
    default_alphabet: DefaultAlphabet = "gsm7",
    errors: Errors = "strict",
    overrides: Mapping[int, str] | None = None,
) -> DecodedText:
    """Decode user data (UDH already removed, segments already joined).

    With `errors="strict"` any octet that is invalid for the coding raises `TextDecodeError`; with
    `errors="replace"` it becomes U+FFFD (an odd trailing octet of UCS-2 included). GSM-specific display
    rules for escapes apply in both modes (see `smsflow.sms.gsm0338`).
    """
    coding = interpret_data_coding(data_coding, default_alphabet, overrides)
    data = bytes(data)
    enc = coding.encoding
    if enc == "binary":
        text = base64.b64encode(data).decode("ascii")
    elif enc == "gsm7":
        try:
            text = gsm0338.decode_unpacked(data, errors)
        except gsm0338.GsmDecodeError as exc:
            raise TextDecodeError(f"GSM 7-bit: {exc.reason}") from None
    else:
        if enc == "ucs2" and len(data) % 2 and errors == "strict":
            raise TextDecodeError(f"UCS-2 data has an odd number of octets ({len(data)})")
        codec = _CODECS[enc]
        assert codec is not None
        try:
            text = codecs.decode(data, codec, errors)
        except UnicodeDecodeError as exc:
            raise TextDecodeError(f"{enc}: {exc.reason} at octet {exc.start}") from None
    return DecodedText(text, enc, coding.message_class)


def encode_text(
    text: str,
    data_coding: int,
    *,
    default_alphabet: DefaultAlphabet = "gsm7",
    errors: Errors = "strict",
    overrides: Mapping[int, str] | None = None,
) -> bytes:
    """Encode text for a data_coding (GSM 7-bit unpacked). Binary codings take base64 text.

    `errors="replace"` puts "?" in place of characters the coding lacks; strict raises `TextEncodeError`.
    """
    try:
        coding = interpret_data_coding(data_coding, default_alphabet, overrides)
    except TextDecodeError as exc:
        raise TextEncodeError(exc.reason) from None
    enc = coding.encoding
    if enc == "binary":
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise TextEncodeError("binary data_coding needs base64 text") from None
    if enc == "gsm7":
        try:
            return gsm0338.encode_unpacked(text, errors)
        except gsm0338.GsmEncodeError as exc:
            raise TextEncodeError(f"GSM 7-bit: {exc.reason}") from None
    codec = _CODECS[enc]
    assert codec is not None
    try:
        return codecs.encode(text, codec, errors)
    except UnicodeEncodeError as exc:
        raise TextEncodeError(f"{enc}: {exc.reason} at character {exc.start}") from None
