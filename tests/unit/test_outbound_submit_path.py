"""The connector submit path's pieces that need no SMSC: the OTP-first window, the commit point, the PDU."""

import asyncio

from connectors.smpp.submit import PriorityWindow, _Progress, submit_pdu
from smsflow.outbound.submission import Candidate, Submission
from smsflow.smpp.pdu import decode_pdu, encode_pdu


async def test_the_window_lets_otp_in_before_bulk_that_waited_longer():
    window = PriorityWindow(1)
    await window.acquire(2)  # the one slot is taken
    order: list[str] = []

    async def wait(name: str, rank: int) -> None:
        await window.acquire(rank)
        order.append(name)
        window.release()

    bulk = asyncio.create_task(wait("bulk", 2))
    await asyncio.sleep(0)
    otp = asyncio.create_task(wait("otp", 0))
    await asyncio.sleep(0)
    window.release()
    await asyncio.gather(bulk, otp)
    assert order == ["otp", "bulk"] and window.free == 1


def test_offsets_commit_only_past_the_finished_prefix():
    p = _Progress()
    for off in (5, 6, 7):
        p.take(off)
    p.finish(6)
    assert p.commit_point() is None  # 5 is still in flight: a crash must replay it
    p.finish(5)
    assert p.commit_point() == 7
    p.finish(7)
    assert p.commit_point() == 8


def test_submit_sm_carries_the_segment_as_encoded():
    sub = Submission(
        "m",
        1,
        2,
        "+85291234567",
        "ACME",
        "alphanumeric",
        8,
        0x40,
        b"\x05\x00\x03\x07\x02\x01\x4f\x60",
        "otp",
        1_796_000_000_000,
        7,
        (Candidate("route-0", "carrier-0"),),
    )
    pdu = decode_pdu(encode_pdu(submit_pdu(sub, sub.expires_at_ms)))
    p = pdu.params
    assert (p["source_addr"], p["source_addr_ton"], p["destination_addr"]) == ("ACME", 5, "85291234567")
    assert (p["esm_class"], p["data_coding"], p["short_message"]) == (0x40, 8, sub.short_message)
    assert p["registered_delivery"] == 1 and p["priority_flag"] == 1
    assert p["validity_period"] == "261130005320000+"  # absolute, UTC (2026-11-30 00:53:20)
