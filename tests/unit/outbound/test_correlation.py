"""Receipts are matched to their submit by the carrier's id in the forms real SMSCs write it."""

from __future__ import annotations

import pytest

from smsflow.ingest.receipts import parse_receipt
from smsflow.outbound.correlation import IdForm, Matched, SegmentRef, SubmitIndex, Unmatched

SEG = SegmentRef("m1", 1)
OTHER = SegmentRef("m2", 2)


def dlr_text(mid: str, stat: str = "DELIVRD") -> str:
    dates = "submit date:2611301650 done date:2611301651"
    return f"id:{mid} sub:001 dlvrd:001 {dates} stat:{stat} err:000 text:Your code"


@pytest.mark.parametrize(
    ("resp_id", "text", "tlv", "form", "read_as"),
    [
        # submit_sm_resp in hex, the receipt text in decimal: Vonage (Nexmo) documents exactly this and tells
        # Kannel users to set msg-id-type=0x01
        ("1A2B3C4D", dlr_text("439041101"), None, "decimal", "decimal"),
        ("1A2B3C4D", dlr_text("439041101"), None, "auto", "decimal"),
        # ... and the receipted_message_id TLV repeating the hex beside a decimal text
        ("1A2B3C4D", dlr_text("439041101"), "1a2b3c4d", "decimal", "hex"),
        # the same hex both ways, but lower case and zero-padded
        ("00A1B2", dlr_text("a1b2"), None, "hex", "hex"),
        ("a1b2", dlr_text("0000A1B2"), None, "auto", "hex"),
        # decimal in both places (Net::SMPP test SMSCs, many small carriers): the same digits
        ("1234567", dlr_text("1234567"), None, "hex", "hex"),
        ("0001234567", dlr_text("1234567"), None, "hex", "hex"),
        # Jasmin: a UUID in both places, compared as text
        (
            "5A7F8E9A-7D47-4A4C-9AB6-0B0C8E2B8D1E",
            dlr_text("5a7f8e9a-7d47-4a4c-9ab6-0b0c8e2b8d1e"),
            None,
            "auto",
            "text",
        ),
        # TLV only (no text form at all)
        ("FF01", "", "ff01", "hex", "hex"),
    ],
)
def test_real_world_id_forms_match(
    resp_id: str, text: str, tlv: str | None, form: IdForm, read_as: str
) -> None:
    index = SubmitIndex().remember("carrier-a", resp_id, SEG).remember("carrier-a", "FFFFFFFF", OTHER)
    receipt = parse_receipt(text, tlv, 2 if tlv else None, None)
    assert index.match("carrier-a", receipt, form) == Matched(SEG, read_as)


def test_an_id_from_another_carrier_does_not_match() -> None:
    index = SubmitIndex().remember("carrier-a", "1A2B", SEG)
    result = index.match("carrier-b", parse_receipt(dlr_text("1A2B"), None, None, None), "hex")
    assert isinstance(result, Unmatched)
    assert "no submit to carrier-b has id 1A2B" in result.reason


def test_decimal_form_is_not_read_as_hex_when_configured_hex() -> None:
    index = SubmitIndex().remember("c", "1A2B3C4D", SEG)
    result = index.match("c", parse_receipt(dlr_text("439041101"), None, None, None), "hex")
    assert isinstance(result, Unmatched)
    assert "read as hex" in result.reason


def test_auto_refuses_an_id_that_fits_two_submits() -> None:
    # "16" is 22 read as hex (resp "16") and 16 read as decimal (resp "10" is 16 in hex)
    index = SubmitIndex().remember("c", "16", SEG).remember("c", "10", OTHER)
    result = index.match("c", parse_receipt(dlr_text("16"), None, None, None), "auto")
    assert isinstance(result, Unmatched)
    assert "ambiguous" in result.reason and "m1#1" in result.reason and "m2#2" in result.reason
    # the carrier's configured form settles it
    assert index.match("c", parse_receipt(dlr_text("16"), None, None, None), "hex") == Matched(SEG, "hex")
    assert index.match("c", parse_receipt(dlr_text("16"), None, None, None), "decimal") == Matched(
        OTHER, "decimal"
    )


def test_a_receipt_without_an_id_is_unmatched_with_a_reason() -> None:
    result = SubmitIndex().match("c", parse_receipt("stat:DELIVRD err:000", None, None, None), "auto")
    assert isinstance(result, Unmatched)
    assert "no message id" in result.reason
