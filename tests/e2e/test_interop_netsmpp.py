"""Interop: an SMSC written with Net::SMPP (CPAN; Debian libnet-smpp-perl), not by us, binds our connector.

- inbound: it pushes deliver_sm — single-part GSM 03.38, UCS-2 Chinese with a non-BMP character, and a
  concatenated SMS with an 8-bit-reference UDH; every message arrives at the webhook, whole;
- outbound (issue 12): it takes our submit_sm (GSM, UCS-2, multipart with UDH), answers with its own message
  ids and sends delivery receipts (text form, TLVs, both); every message ends delivered."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from devkit.local.jvm import free_port
from smsflow.sms.segmentation import split_for_smpp
from smsflow.sms.text import encode_text
from tests.e2e.conftest import PASSWORD
from tests.e2e.test_outbound import (
    CHINESE,
    CHINESE_LONG,
    GSM_LONG,
    SENDER,
    Customer,
    CustomerApi,
    hold_sender,
    joined_texts,
    wait_final,
)
from tests.e2e.test_webhook_api import wait_api_up

pytestmark = pytest.mark.e2e
PEER = Path(__file__).resolve().parent.parent / "peers" / "netsmpp_smsc.pl"


def _have_net_smpp() -> bool:
    import subprocess

    return (
        shutil.which("perl") is not None
        and subprocess.run(["perl", "-MNet::SMPP", "-e1"], capture_output=True).returncode == 0
    )


async def start_peer(script: Path, *args: str) -> asyncio.subprocess.Process:
    """The Perl SMSC, once it says it listens."""
    peer = await asyncio.create_subprocess_exec(
        "perl", str(script), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert peer.stdout is not None
    ready = await asyncio.wait_for(peer.stdout.readline(), 10)
    assert ready.startswith(b"READY"), ready
    return peer


@pytest.mark.skipif(not _have_net_smpp(), reason="Net::SMPP not installed (infra/bootstrap.sh installs it)")
async def test_net_smpp_smsc_to_webhook(pipeline, tmp_path: Path) -> None:
    texts = [
        ("85261234567", "Your verification code is 839080 {ok} €", 0),
        ("8613812345678", "【京东】您的验证码是 825959。如非本人操作,请忽略本短信。😀", 8),
    ]
    long_text = "【华西证券】您的注册验证码是 4426,请不要把验证码泄漏给其他人,如非本人请勿操作。" * 3
    lines = [f"{src}\t85230001000\t{dc}\t0\t{encode_text(t, dc).hex()}" for src, t, dc in texts]
    for seg in split_for_smpp(long_text, 8, "udh8", ref=77):
        lines.append(f"85298765432\t85230001000\t8\t{seg.esm_class}\t{seg.short_message.hex()}")
    msgs = tmp_path / "messages.tsv"
    msgs.write_text("\n".join(lines) + "\n", encoding="ascii")
    port = free_port()
    peer = await start_peer(PEER, str(port), "acct0", PASSWORD, str(msgs))
    assert peer.stdout is not None
    p = await pipeline(carriers=1, carrier_port=port)
    p.start()
    try:
        await p.wait_delivered(3, 90)
        out, _ = await asyncio.wait_for(peer.communicate(), 30)
    finally:
        if peer.returncode is None:
            peer.kill()
            print("peer said:", (await peer.stdout.read()).decode(errors="replace"))
    lines_out = out.decode().splitlines()
    assert "BOUND" in lines_out and f"DONE {len(lines)}" in lines_out, lines_out
    assert sum(1 for line in lines_out if line.startswith("ACK")) == len(lines)
    got = {m["body"]: m for m in p.receiver.log.messages.values()}
    assert set(got) == {t for _, t, _ in texts} | {long_text}
    assert got[long_text]["segment_count"] == len(lines) - 2
    assert got[texts[1][1]]["otp"] == "825959" and got[texts[1][1]]["sender_signature"] == "京东"
    assert p.receiver.log.bad_signatures == 0


MT_PEER = Path(__file__).resolve().parent.parent / "peers" / "netsmpp_mt_smsc.pl"


@dataclass(frozen=True)
class PeerSubmit:
    """One submit_sm as Net::SMPP decoded it, and the message id the peer answered with."""

    message_id: str
    source: str
    dest: str
    data_coding: int
    esm_class: int
    registered_delivery: int
    octets: bytes


def read_peer_lines(lines: list[str]) -> tuple[list[str], list[PeerSubmit], dict[str, tuple[str, int]]]:
    """The peer's output: bind lines, submits, and per message id the receipt's form and deliver_sm_resp
    status."""
    binds, submits, receipts = [], [], {}
    for line in lines:
        kind, *f = line.split("\t")
        if kind == "BOUND":
            binds.append(f[0])
        elif kind == "SUBMIT":
            submits.append(PeerSubmit(f[0], f[1], f[2], int(f[3]), int(f[4]), int(f[5]), bytes.fromhex(f[6])))
        elif kind == "RECEIPT":
            receipts[f[0]] = (f[1], int(f[2]))
    return binds, submits, receipts


@pytest.mark.skipif(not _have_net_smpp(), reason="Net::SMPP not installed (infra/bootstrap.sh installs it)")
async def test_net_smpp_smsc_takes_our_submits_and_its_receipts_end_them_delivered(
    pipeline, tmp_path: Path
) -> None:
    """Our connector binds a Net::SMPP SMSC as a transceiver and submits GSM, UCS-2 Chinese (with a non-BMP
    character) and multipart messages with 8-bit-reference UDH; the peer answers with hex message ids and
    sends DELIVRD receipts in the text form, the TLVs, or both; every message ends delivered through
    GET /v1/messages/{id}, and what the peer decoded is what the customer sent, each segment once."""
    port = free_port()
    peer = await start_peer(MT_PEER, str(port), "acct0", PASSWORD)
    out: list[str] = []

    async def read_peer() -> None:
        assert peer.stdout is not None
        while line := await peer.stdout.readline():
            out.append(line.decode(errors="replace").rstrip("\n"))

    reader = asyncio.create_task(read_peer())
    api = CustomerApi.issue(tmp_path)
    p = await pipeline(carriers=1, carrier_port=port, api=api.config, extra_env=api.env)
    p.start("worker", "connector", "api")
    base, token, admin = api.base, api.token, api.admin
    texts = {
        "+85291000001": "Your code is 839080 {ok} €",  # GSM with extension-table characters
        "+8613812345678": CHINESE + "😀",  # UCS-2, a surrogate pair
        "+85291000002": GSM_LONG,  # 2 parts of GSM, 8-bit reference UDH
        "+8613812345679": CHINESE_LONG + CHINESE + "😀" * 5,  # 3 parts of UCS-2, pairs at the cut
    }
    try:
        async with aiohttp.ClientSession() as http:
            await wait_api_up(http, base, p)
            await hold_sender(http, base, admin)
            customer = Customer(http, base, token)
            ids = {to: await customer.send(to, text) for to, text in texts.items()}
            views = await wait_final(customer, list(ids.values()), 90, p)
    finally:
        peer.kill()
        await peer.wait()
        await asyncio.wait_for(reader, 10)
    binds, submits, receipts = read_peer_lines(out)
    assert binds and set(binds) == {"transceiver"}, out
    assert {mid: v["status"] for mid, v in views.items()} == dict.fromkeys(ids.values(), "delivered"), out
    segments = {mid: v["history"][0]["segments_total"] for mid, v in views.items()}
    assert segments == {ids[to]: n for to, n in zip(texts, (1, 1, 2, 3), strict=True)}
    for mid, v in views.items():
        delivered = {h["segment"] for h in v["history"] if h["segment"] and h["new_state"] == "delivered"}
        assert delivered == set(range(1, segments[mid] + 1)), v["history"]

    # what Net::SMPP decoded: each segment once, from our sender, asking for a receipt, the texts whole
    assert len(submits) == sum(segments.values()), out
    assert len({(s.dest, s.octets) for s in submits}) == len(submits)
    assert {s.source for s in submits} == {SENDER.lstrip("+")}
    assert {s.registered_delivery & 1 for s in submits} == {1}
    coding = {s.dest: s.data_coding for s in submits}
    assert coding == {"85291000001": 0, "8613812345678": 8, "85291000002": 0, "8613812345679": 8}
    parts = [s for s in submits if s.dest in ("85291000002", "8613812345679")]
    assert all(s.esm_class & 0x40 for s in parts) and not any(
        s.esm_class & 0x40 for s in submits if s not in parts
    )
    assert joined_texts((s.dest, s.octets, s.data_coding) for s in submits) == {
        to: [text] for to, text in texts.items()
    }
    # every receipt, in each of the three forms, was taken by our connector (deliver_sm_resp OK)
    assert set(receipts) == {s.message_id for s in submits}
    assert {form for form, _ in receipts.values()} == {"both", "text", "tlv"}
    assert {status for _, status in receipts.values()} == {0}
