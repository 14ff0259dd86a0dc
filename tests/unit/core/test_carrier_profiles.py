"""Carrier profiles: presets and overrides, settings the wire cannot carry refused by field, all wired."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from connectors.smpp.connector import SmppConnector
from connectors.smpp.session import EsmeSession, InboundPdu, SessionSettings
from smsflow.carriers import PRESETS, alphabet_overrides, looks_like_receipt_text, receipt_id_decimal
from smsflow.cli import app
from smsflow.config import CarrierConfig, ConfigError, parse_config
from smsflow.ingest.origin import RecordOrigin
from smsflow.ingest.processor import IngestProcessor, IngestSettings
from smsflow.smpp.constants import CommandId
from smsflow.smpp.pdu import decode_pdu
from smsflow.sms import gsm0338
from smsflow.sms.text import decode_text, interpret_data_coding
from tests.factories import deliver_sm_bytes, raw_record
from tests.unit.connectors.smpp.test_session import ScriptedSmsc, deliver_sm, session_with, stop_session

BASE = {
    "id": "c1",
    "route_id": "r1",
    "host": "127.0.0.1",
    "port": 2775,
    "system_id": "esme",
    "password_env": "PW",
}


def carrier(**extra: Any) -> CarrierConfig:
    return parse_config({"carriers": [{**BASE, **extra}]}).carriers[0]


def config_error(**extra: Any) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config({"carriers": [{**BASE, **extra}]})
    return str(exc.value)


# ---- config ---------------------------------------------------------------------------------------------
def test_preset_supplies_settings_and_the_carrier_overrides_them_key_by_key() -> None:
    assert carrier(profile="npm-smpp").data_coding == {0x01: "gsm7"}
    c = carrier(profile="npm-smpp", data_coding={0x00: "latin1"}, window=8)
    assert c.data_coding == {0x01: "gsm7", 0x00: "latin1"} and c.window == 8
    assert carrier(profile="npm-smpp", data_coding={"0x01": "ascii"}).data_coding == {0x01: "ascii"}
    assert set(PRESETS) >= {"npm-smpp", "net-smpp", "smsflow-simulator"}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"profile": "kannel-ish"}, "carriers[0].profile: unknown profile 'kannel-ish'"),
        ({"data_coding": {300: "gsm7"}}, "carriers[0].data_coding: key 300 is not an octet"),
        ({"data_coding": {"0x01": "klingon"}}, "carriers[0].data_coding[1]: Input should be"),
        ({"system_id": "s" * 16}, "carriers[0].system_id: at most 15 octets in SMPP 3.4"),
        ({"system_type": "t" * 13}, "carriers[0].system_type: at most 12 octets in SMPP 3.4"),
        ({"address_range": "1" * 41}, "carriers[0].address_range: at most 40 octets in SMPP 3.4"),
        ({"system_id": "系统"}, "carriers[0].system_id: must be Latin-1 text"),
        ({"bind": "transmitter"}, "carriers[0].bind: Input should be 'receiver' or 'transceiver'"),
        ({"interface_version": "3.5"}, "carriers[0].interface_version:"),
        ({"max_pdu_size": 100}, "carriers[0].max_pdu_size:"),
        ({"max_messages_per_s": 0}, "carriers[0].max_messages_per_s:"),
        ({"source_ton_npi": {"ton": 7, "npi": 1}}, "carriers[0].source_ton_npi.ton:"),
        (
            {"destination_ton_npi": {"ton": 1, "npi": 2}},
            "carriers[0].destination_ton_npi.npi: must be one of",
        ),
        ({"receipts": {"id_form": "octal"}}, "carriers[0].receipts.id_form:"),
        ({"reconnect": {"healthy_after_s": -1}}, "carriers[0].reconnect.healthy_after_s:"),
    ],
)
def test_unsupported_values_are_refused_naming_the_field(extra: dict[str, Any], expected: str) -> None:
    assert expected in config_error(**extra)


def test_a_password_the_bind_cannot_carry_is_refused_naming_the_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = carrier()
    monkeypatch.setenv("PW", "123456789")
    with pytest.raises(ConfigError, match=r"carriers\[c1\]\.password_env: PW holds 9 octets; at most 8"):
        c.password()
    monkeypatch.setenv("PW", "12345678")
    assert c.password() == "12345678"


def test_connector_refuses_such_a_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"carriers": [BASE]}), encoding="utf-8")
    monkeypatch.setenv("PW", "much-too-long")
    out = CliRunner().invoke(app, ["connector", "--config", str(cfg)])
    assert out.exit_code == 2
    assert "carriers[c1].password_env: PW holds 13 octets; at most 8 octets in SMPP 3.4" in out.output


# ---- data_coding → alphabet ----------------------------------------------------------------------------
def test_data_coding_map_decodes_gsm_labelled_ia5() -> None:
    text = "Code 1234 {ok} € ^"
    octets = gsm0338.encode_unpacked(text)
    # without the profile: read as IA5/ASCII the escapes come out as ESC and garbage
    assert decode_text(octets, 0x01, errors="replace").text != text
    assert decode_text(octets, 0x01, overrides={0x01: "gsm7"}).text == text


def test_every_data_coding_value_can_be_remapped_keeping_its_message_class() -> None:
    for dc in range(256):
        assert interpret_data_coding(dc, overrides={dc: "latin1"}).encoding == "latin1"
    assert interpret_data_coding(0xF2, overrides={0xF2: "ucs2"}).message_class == 2
    assert interpret_data_coding(0x09, overrides={0x09: "shift_jis"}).encoding == "shift_jis"  # vendor code


def test_gsm_default_alphabet_still_means_data_coding_zero() -> None:
    assert alphabet_overrides({}, "latin1") == {0: "latin1"}
    assert alphabet_overrides({0: "ascii", 3: "gsm7"}, "latin1") == {0: "ascii", 3: "gsm7"}


# ---- ingest reads the profile ---------------------------------------------------------------------------
def processor(**settings: Any) -> IngestProcessor:
    return IngestProcessor({}, {}, IngestSettings(**settings), clock=lambda: 1_700_000_000.0)


def feed(proc: IngestProcessor, pdu: bytes, dc: int, esm: int = 0, offset: int = 0) -> list[Any]:
    rec = raw_record(pdu, "85261234567", "85230001000", dc, esm)
    return proc.on_raw(rec, RecordOrigin("sms.raw.v1", 0, offset), None)


def test_ingest_applies_the_carriers_data_coding_map() -> None:
    text = "Your code is 4711 {valid 5 min} €"
    pdu = deliver_sm_bytes("85261234567", "85230001000", gsm0338.encode_unpacked(text), 0x01)
    plain = [o.record for o in feed(processor(), pdu, 0x01)]
    assert not any(r.get("body") == text for r in plain)
    out = feed(processor(alphabet_overrides={"c1": {0x01: "gsm7"}}), pdu, 0x01)
    assert [o.kind for o in out] == ["inbound"] and out[0].record["body"] == text


RECEIPT_TEXT = (
    "id:12345 sub:001 dlvrd:001 submit date:2601011200 done date:2601011201 stat:DELIVRD err:000 text:hi"
)


def test_receipt_text_in_an_esm_class_0_message_only_when_the_profile_says_so() -> None:
    pdu = deliver_sm_bytes("85261234567", "85230001000", RECEIPT_TEXT.encode(), 0)
    assert [o.kind for o in feed(processor(), pdu, 0)] == ["inbound"]
    out = feed(processor(receipts_in_text=frozenset({"c1"})), pdu, 0)
    assert [o.kind for o in out] == ["receipt"]
    assert out[0].record["message_id"] == "12345" and out[0].record["state"] == "DELIVRD"


def test_receipt_id_form_decides_the_decimal_reading() -> None:
    pdu = deliver_sm_bytes("85261234567", "85230001000", RECEIPT_TEXT.encode(), 0, esm_class=0x04)
    assert feed(processor(), pdu, 0)[0].record["message_id_decimal"] is None  # "12345" could be either
    hexed = feed(processor(receipt_id_forms={"c1": "hex"}), pdu, 0)[0].record
    assert hexed["message_id_decimal"] == str(0x12345)
    dec = feed(processor(receipt_id_forms={"c1": "decimal"}), pdu, 0)[0].record
    assert dec["message_id_decimal"] == "12345"


def test_receipt_helpers_are_bounded() -> None:
    assert receipt_id_decimal("f" * 4000, "hex", None) is None  # no int() of 4000 digits
    assert looks_like_receipt_text(RECEIPT_TEXT) and not looks_like_receipt_text("your id: 12 status ok")


# ---- the connector and session read the profile --------------------------------------------------------
class CapturingSerde:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def encode(self, topic: str, record: dict[str, Any]) -> bytes:
        self.records.append(record)
        return b""


class StoringProducer:
    async def send(self, topic: str, value: bytes, key: Any = None, headers: Any = None) -> Any:
        class Stored:
            def partition(self) -> int:
                return 0

            def offset(self) -> int:
                return 0

        return Stored()

    async def flush(self) -> None:
        return None


async def test_ton_npi_overrides_reach_the_raw_record(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW", "pw")
    c = carrier(
        source_ton_npi={"ton": 1, "npi": 1}, destination_ton_npi={"ton": 2, "npi": 1}, max_messages_per_s=50
    )
    serde = CapturingSerde()
    conn = SmppConnector([c], StoringProducer(), serde)  # type: ignore[arg-type]
    raw = deliver_sm_bytes("85261234567", "30001000", b"hi", 0, source_ton=0, dest_ton=0)
    status = await conn.store(c, InboundPdu(decode_pdu(raw), raw, "s", "r", 0))
    assert status == 0
    rec = serde.records[0]
    assert (rec["source_addr_ton"], rec["source_addr_npi"], rec["dest_addr_ton"]) == (1, 1, 2)
    assert rec["pdu"] == raw  # the bytes stay as received
    settings = conn.links[0].session.s
    assert (settings.max_pdu_size, settings.healthy_after_s) == (c.max_pdu_size, c.reconnect.healthy_after_s)
    assert settings.max_messages_per_s == c.max_messages_per_s


async def test_throughput_limit_paces_reading() -> None:
    async def ok(_: InboundPdu) -> int:
        return 0

    async with session_with(ok, max_messages_per_s=20) as (_s, smsc, _rej):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(10):
            smsc.send(deliver_sm(200 + i))
        for _ in range(10):
            await smsc.expect(CommandId.deliver_sm_resp)
        assert loop.time() - t0 >= 0.4  # 10 at 20/s: at least 9 gaps of 50 ms


async def test_interface_version_33_is_sent_in_the_bind() -> None:
    smsc = ScriptedSmsc()
    await smsc.start()

    async def ok(_: InboundPdu) -> int:
        return 0

    s = EsmeSession(
        SessionSettings(
            host="127.0.0.1", port=smsc.port, system_id="e", password="p", interface_version="3.3"
        ),
        ok,
    )
    task = asyncio.create_task(s.run())
    try:
        bind = await smsc.expect(CommandId.bind_transceiver)
        assert bind.params["interface_version"] == 0x33
    finally:
        await stop_session(s, task, smsc)
