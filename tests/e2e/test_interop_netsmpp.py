"""Interop: an SMSC written with Net::SMPP (CPAN; Debian libnet-smpp-perl), not by us, binds our connector
and pushes deliver_sm — single-part GSM 03.38, UCS-2 Chinese with a non-BMP character, and a concatenated
SMS with an 8-bit-reference UDH; every message arrives at the webhook, whole."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

import pytest

from smsflow.sms.segmentation import split_for_smpp
from smsflow.sms.text import encode_text
from tests.e2e.conftest import PASSWORD

pytestmark = pytest.mark.e2e
PEER = Path(__file__).resolve().parent.parent / "peers" / "netsmpp_smsc.pl"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _have_net_smpp() -> bool:
    import subprocess

    return (
        shutil.which("perl") is not None
        and subprocess.run(["perl", "-MNet::SMPP", "-e1"], capture_output=True).returncode == 0
    )


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
    port = _free_port()
    peer = await asyncio.create_subprocess_exec(
        "perl",
        str(PEER),
        str(port),
        "acct0",
        PASSWORD,
        str(msgs),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert peer.stdout is not None
    ready = await asyncio.wait_for(peer.stdout.readline(), 10)
    assert ready.startswith(b"READY"), ready
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
