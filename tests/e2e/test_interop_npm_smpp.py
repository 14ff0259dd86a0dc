"""Interop: the npm `smpp` package (node-smpp 0.5.1, from the npm registry) as the SMSC, driving our connector
and worker over a real broker. It pushes GSM-7 with the extension table (encoded by node-smpp itself, which
labels GSM 03.38 as data_coding 0x01: the `npm-smpp` profile), UCS-2 with emoji, UDH 8/16 in shuffled order
with escapes and surrogate pairs split across parts, message_payload, SAR, receipts with TLVs and text-only,
retransmissions, and ends its session by unbind and by dropping the connection again and again.

Must hold: every SMS once and exact at the webhook; each receipt on sms.receipts.v1; after each healthy
session the connector binds again within its initial backoff; a clean stop of the connector unbinds in < 1 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from devkit.local.jvm import free_port
from smsflow.sms.segmentation import split_for_smpp
from smsflow.sms.text import encode_text
from tests.e2e.conftest import PASSWORD
from tests.kafka_read import avro_values

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
PEER = REPO / "tests" / "peers" / "npm_smpp_smsc.js"
NODE_PREFIX = REPO / ".work" / "node"  # git-ignored
NPM_SMPP = "smpp@0.5.1"
INITIAL_BACKOFF_S = 0.5

TAG = {"sar_msg_ref_num": 0x020C, "sar_total_segments": 0x020E, "sar_segment_seqnum": 0x020F}
TLV_NAMES = {0x0424: "message_payload", 0x020C: "sar_msg_ref_num", 0x020E: "sar_total_segments"}
TLV_NAMES[0x020F] = "sar_segment_seqnum"


def _install_npm_smpp() -> None:
    """The test's own setup: node-smpp from the npm registry into a git-ignored folder (once)."""
    if (NODE_PREFIX / "node_modules" / "smpp" / "package.json").exists():
        return
    npm = shutil.which("npm")
    assert npm is not None and shutil.which("node") is not None, "node and npm are needed for this test"
    NODE_PREFIX.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(NODE_PREFIX), NPM_SMPP], check=True
    )


def _addr(src: str) -> dict[str, Any]:
    return {
        "source_addr_ton": 1,
        "source_addr_npi": 1,
        "source_addr": src,
        "dest_addr_ton": 1,
        "dest_addr_npi": 1,
        "destination_addr": "85230001000",
    }


def _segments(
    text: str, dc: int, method: str, ref: int, src: str, split_anywhere: bool
) -> list[dict[str, Any]]:
    """Byte-exact parts (from our segmenter), sent by node-smpp as raw Buffers."""
    items = []
    for seg in split_for_smpp(text, dc, method, ref=ref, split_anywhere=split_anywhere):  # type: ignore[arg-type]
        params: dict[str, Any] = {**_addr(src), "esm_class": seg.esm_class, "data_coding": dc}
        hexes: dict[str, str] = {}
        if seg.short_message:
            hexes["short_message"] = seg.short_message.hex()
        for tag, value in seg.tlvs:
            name = TLV_NAMES[tag]
            if name == "message_payload":
                hexes[name] = value.hex()
            else:
                params[name] = int.from_bytes(value, "big")
        items.append({"params": params, "hex": hexes})
    return items


def build_plan(rng: random.Random) -> tuple[dict[str, Any], set[str], list[tuple[str, str]]]:
    """The messages node-smpp sends, the bodies the webhook must see, and the receipts (id, state)."""
    messages: list[dict[str, Any]] = []
    bodies: set[str] = set()

    def node_encoded(text: str, src: str, repeat: bool = False) -> None:
        # node-smpp picks the coding itself: GSM 03.38 labelled 0x01, or UCS-2 (0x08)
        messages.append({"params": {**_addr(src), "short_message": text}, "repeat": repeat})
        bodies.add(text)

    node_encoded("Your code is 4711 {valid 5 min} [ok] € ~ ^ | \\ end", "85261234567", repeat=True)
    node_encoded("【京东】验证码 825959,请勿泄露 😀🎉 𠀋", "8613812345678", repeat=True)
    for i in range(40):  # filler traffic across the session cycles
        node_encoded(f"OTP {100000 + i * 7919} for login #{i} {{id-{i}}}", f"8526{1000000 + i}")

    multipart = [
        # (text, data_coding, method, split_anywhere): escapes and surrogate pairs split across parts
        ("{€} GSM-7 over UDH-16 with escapes at part edges " + "[]{}|^€~\\" * 30, 0, "udh16", True),
        ("UCS-2 over UDH-8 with emoji at part edges " + "😀验证码🎉" * 40, 8, "udh8", True),
        ("SAR-segmented UCS-2 短信 " + "𠀋短信😀" * 45, 8, "sar", True),
        ("GSM-7 over SAR " + "code 123456 " * 30, 0, "sar", False),
    ]
    for n, (text, dc, method, anywhere) in enumerate(multipart):
        parts = _segments(text, dc, method, 40 + n, f"8529000000{n}", anywhere)
        rng.shuffle(parts)  # any order
        parts[0]["repeat"] = True  # one part retransmitted after its ack
        messages.extend(parts)
        bodies.add(text)
    # UDH element order: a text-formatting element (0x0A) before the concatenation element
    ie_text = "UDH with another element first 验证码 😀 " * 6
    parts = _segments(ie_text, 8, "udh8", 50, "85290000008", False)
    for part in parts:
        sm = bytes.fromhex(part["hex"]["short_message"])
        assert sm[:3] == b"\x05\x00\x03"
        part["hex"]["short_message"] = (b"\x0a\x0a\x03\x00\x00\x00" + sm[1:]).hex()
    rng.shuffle(parts)
    messages.extend(parts)
    bodies.add(ie_text)
    payload_text = "message_payload: 验证码 " + "😀一二三四五六七八九十" * 60
    messages.extend(_segments(payload_text, 8, "payload", 0, "85290000009", False))
    bodies.add(payload_text)
    # Receipts: with TLVs (receipted_message_id, message_state, network_error_code) and text-only.
    messages.append(
        {
            "params": {
                **_addr("85230001000"),
                "esm_class": 0x04,
                "data_coding": 0,
                "receipted_message_id": "1A2B3C",
                "message_state": 2,
            },
            "hex": {"short_message": "", "network_error_code": "030000"},
            "repeat": True,
        }
    )
    text_receipt = (
        "id:778899 sub:001 dlvrd:001 submit date:2601011200 done date:2601011201 stat:UNDELIV err:005 text:x"
    )
    messages.append(
        {
            "params": {**_addr("85230001000"), "esm_class": 0x04, "data_coding": 0},
            "hex": {"short_message": encode_text(text_receipt, 0).hex()},
        }
    )
    receipts = [("1A2B3C", "DELIVRD"), ("778899", "UNDELIV")]
    # keep the multipart parts spread through the run, not all at the start
    rng.shuffle(messages)
    plan = {
        "messages": messages,
        "window": 4,
        "cycles": ["unbind", "drop"] * 3,
        "cycle_every": 9,
        "healthy_ms": 1500,
    }
    return plan, bodies, receipts


async def _read_until(peer: asyncio.subprocess.Process, lines: list[str], prefix: str, timeout: float) -> str:
    assert peer.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"peer never said {prefix!r}; it said: {lines[-30:]}")
        raw = await asyncio.wait_for(peer.stdout.readline(), left)
        if not raw:
            raise AssertionError(f"peer exited before {prefix!r}; it said: {lines[-30:]}")
        line = raw.decode().strip()
        lines.append(line)
        if line.startswith(prefix):
            return line


async def test_npm_smpp_smsc_every_case_once_rebinds_fast_and_stops_clean(pipeline, tmp_path: Path) -> None:
    await asyncio.to_thread(_install_npm_smpp)
    plan, bodies, receipts = build_plan(random.Random(14))
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan), encoding="utf-8")
    port = free_port()
    peer = await asyncio.create_subprocess_exec(
        "node",
        str(PEER),
        str(port),
        "acct0",
        PASSWORD,
        str(plan_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NPM_SMPP_PREFIX": str(NODE_PREFIX)},
    )
    lines: list[str] = []
    try:
        await _read_until(peer, lines, "READY", 20)
        p = await pipeline(
            carriers=1,
            carrier_port=port,
            carrier_extra={
                "profile": "npm-smpp",
                "reconnect": {"initial_s": INITIAL_BACKOFF_S, "max_s": 8, "healthy_after_s": 1.0},
            },
        )
        p.start()
        await _read_until(peer, lines, "DONE", 150)
        await p.wait_delivered(len(bodies), 90)
        # a clean stop: SIGTERM → the SMSC sees our unbind (and answers it) within a second
        t0 = time.time()
        stopping = asyncio.create_task(asyncio.to_thread(p.procs["connector"].stop))
        unbind_line = await _read_until(peer, lines, "ESME_UNBIND", 10)
        stop_ms = int(unbind_line.split()[1]) - t0 * 1000
        await _read_until(peer, lines, "CLOSED", 10)
        rc = await stopping
        exited_s = time.time() - t0
    finally:
        if peer.returncode is None:
            peer.kill()
        await peer.wait()
    # every SMS once and exact
    got = p.receiver.log.messages
    assert sorted(m["body"] for m in got.values()) == sorted(bodies), set(bodies) ^ {
        m["body"] for m in got.values()
    }
    assert p.receiver.log.redeliveries == 0 and p.receiver.log.bad_signatures == 0
    gsm = next(m for m in got.values() if m["body"].startswith("Your code is 4711"))
    assert gsm["encoding"] == "gsm7", "node-smpp's 0x01 read as GSM 03.38 (npm-smpp profile)"
    with_ie = next(m for m in got.values() if m["body"].startswith("UDH with another element first"))
    assert [e["iei"] for e in with_ie["udh_elements"]] == [0x0A], with_ie["udh_elements"]
    # receipts to their topic, not to the customer
    seen = avro_values(p.stack.bootstrap, p.stack.registry_url, "sms.receipts.v1")
    assert sorted({(r["message_id"], r["state"]) for r in seen}) == sorted(receipts)
    # re-bind within the initial backoff after each healthy session (before: 0.25 s, 0.5 s, 1 s, 2 s, ...)
    rebinds = [(line.split()[1], int(line.split()[2])) for line in lines if line.startswith("REBIND")]
    assert len(rebinds) == 6, lines
    slack_ms = 700  # connect + bind on a loaded 2-core machine
    assert all(gap <= INITIAL_BACKOFF_S * 1000 + slack_ms for _, gap in rebinds), rebinds
    assert stop_ms < 1000, f"clean stop: unbind reached the SMSC {stop_ms:.0f} ms after SIGTERM"
    assert rc == 0 and exited_s < 10, (rc, exited_s)
    print(f"rebind gaps (ms): {rebinds}; stop→unbind {stop_ms:.0f} ms; process exit {exited_s:.2f} s")
