"""`smsflow diagnose`: a captured PDU read under each candidate setting, with the setting that fixes it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from typer.testing import CliRunner

from smsflow.cli import app
from smsflow.diagnose import diagnose, read_capture
from smsflow.sms import gsm0338
from smsflow.sms.text import encode_text
from tests.factories import deliver_sm_bytes

GSM_AS_IA5 = deliver_sm_bytes("85261234567", "85230001000", gsm0338.encode_unpacked("Code 4711 {ok} €"), 0x01)
RECEIPT_TEXT = (
    "id:12345 sub:001 dlvrd:001 submit date:2601011200 done date:2601011201 stat:DELIVRD err:000 text:x"
)


def test_gsm_labelled_ia5_suggests_the_data_coding_mapping() -> None:
    d = diagnose(GSM_AS_IA5)
    by = {r.alphabet: r for r in d.readings}
    assert not by["ascii"].clean and by["ascii"].standard
    assert by["gsm7"].clean and by["gsm7"].text == "Code 4711 {ok} €"
    assert d.suggestions == ["data_coding: {0x01: gsm7}  (reads cleanly; the standard does not)"]


def test_a_profile_that_already_maps_it_gets_no_suggestion() -> None:
    d = diagnose(GSM_AS_IA5, current={0x01: "gsm7"})
    assert not d.suggestions and "maps data_coding 0x01 to gsm7" in d.render()


def test_a_clean_standard_reading_needs_no_setting() -> None:
    pdu = deliver_sm_bytes("85261234567", "85230001000", encode_text("验证码 825959 😀", 8), 8)
    d = diagnose(pdu)
    assert next(r for r in d.readings if r.standard).clean
    assert d.render().endswith("=> no carrier setting needed for this PDU")


def test_receipt_in_text_and_ton_zero_are_pointed_out() -> None:
    pdu = deliver_sm_bytes("8613812345678", "10690000", RECEIPT_TEXT.encode(), 0, source_ton=0)
    text = diagnose(pdu).render()
    assert "receipts.in_text: true" in text and "source_ton_npi" in text


def test_quarantined_user_data_is_read_with_the_data_coding_from_the_reason() -> None:
    ud = gsm0338.encode_unpacked("Hi {there}")
    record = {
        "pdu": base64.b64encode(ud).decode(),
        "reason": "text does not decode as data_coding 0x01: ascii",
    }
    raw, reason = read_capture(json.dumps(record))
    d = diagnose(raw, reason)
    assert "data_coding: {0x01: gsm7}" in d.suggestions[0]


def test_cli_diagnoses_hex_and_compares_with_the_config(tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["diagnose", GSM_AS_IA5.hex()])
    assert out.exit_code == 0 and "data_coding: {0x01: gsm7}" in out.output
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "carriers:\n  - {id: n, route_id: r, host: h, port: 1, system_id: s, password_env: P,\n"
        "     profile: npm-smpp}\n"
    )
    out = runner.invoke(app, ["diagnose", GSM_AS_IA5.hex(), "--config", str(cfg), "--carrier", "n"])
    assert out.exit_code == 0 and "no carrier setting needed" in out.output
    bad = runner.invoke(app, ["diagnose", "zz-not-hex"])
    assert bad.exit_code == 2
