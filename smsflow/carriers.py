"""Carrier profiles: the quirks of one SMSC as data, and the pure decisions the pipeline takes from them.

A carrier in the config may name a ``profile`` (a preset for a peer we test against); its own fields override
the preset's, field by field (``data_coding`` and ``receipts`` key by key). Every setting is documented with
the symptom it fixes in docs/carriers.md. The connector reads the session-level settings; the ingest stage
reads only what this module derives (``alphabet_overrides``, ``receipts_in_text``, ``receipt_id_decimal``)
so that stage needs no knowledge of the profile format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

ReceiptIdForm = Literal["auto", "hex", "decimal"]

# Presets for the SMSC implementations our interop tests run against. Each entry is the evidence we have, not
# a guess: change one only with the test that shows the peer's behaviour.
PRESETS: dict[str, dict[str, Any]] = {
    # npm `smpp` 0.5.1 (node-smpp): its "ASCII" encoding is GSM 03.38 but labelled data_coding 0x01 (IA5),
    # and it picks it on its own for any text the GSM alphabet covers (lib/defs.js encodings.detect).
    "npm-smpp": {"data_coding": {0x01: "gsm7"}},
    # Net::SMPP (CPAN): sends the octets and data_coding it is given, SMPP 3.4; nothing to correct.
    "net-smpp": {},
    # our own simulator (devkit/simulator): spec-conformant; receipts with receipted_message_id TLVs.
    "smsflow-simulator": {},
}

_RECEIPT_TEXT = re.compile(r"\bid:\s*\S+.*\bstat:\s*[A-Za-z]+", re.IGNORECASE | re.DOTALL)
_HEX = re.compile(r"[0-9A-Fa-f]{1,32}")
_DECIMAL = re.compile(r"[0-9]{1,40}")


def apply_preset(data: Any) -> Any:
    """Merge the named preset under a carrier's raw config mapping (the carrier's own values win).

    An unknown name is left for field validation to refuse, naming ``carriers[i].profile``.
    """
    if not isinstance(data, Mapping):
        return data
    preset = PRESETS.get(str(data.get("profile")))
    if preset is None:
        return data
    merged: dict[str, Any] = dict(preset)
    for key, value in data.items():
        base = merged.get(key)
        if isinstance(base, Mapping) and isinstance(value, Mapping):
            merged[key] = {**base, **value}
        else:
            merged[key] = value
    return merged


def alphabet_overrides(data_coding: Mapping[int, str], gsm_default_alphabet: str = "gsm7") -> dict[int, str]:
    """A carrier's data_coding → alphabet exceptions (``gsm_default_alphabet``: the older way to say 0x00)."""
    out: dict[int, str] = {}
    if gsm_default_alphabet != "gsm7":
        out[0x00] = gsm_default_alphabet
    out.update({int(k): v for k, v in data_coding.items()})
    return out


def looks_like_receipt_text(text: str) -> bool:
    """``id:… stat:…`` — the de-facto receipt text (SMPP 3.4 Appendix B) in the body of a message."""
    return _RECEIPT_TEXT.search(text[:512]) is not None


def receipt_id_decimal(message_id: str, form: ReceiptIdForm, auto: str | None) -> str | None:
    """The decimal reading of a receipt's message id, by what the carrier says the id is.

    ``auto`` (the value worked out without a profile: hex only when it has a-f digits) is kept for "auto".
    "hex": the id is hex even when it has only digits (a carrier whose submit_sm_resp is decimal but whose
    receipts print the same id in hex). "decimal": the id already is decimal; never read it as hex.
    """
    if form == "auto":
        return auto
    if form == "hex":
        return str(int(message_id, 16)) if _HEX.fullmatch(message_id) else None
    return message_id if _DECIMAL.fullmatch(message_id) else None
