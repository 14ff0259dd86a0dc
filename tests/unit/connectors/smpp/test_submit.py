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


class _Msg:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0


async def test_copies_of_one_segment_are_never_submitted_at_once():
    """A worker replay can put a segment on the submit topic twice; each copy must read the ledger only after
    the previous one is done with it, also a copy that arrives while another copy is still waiting."""
    from connectors.smpp.submit import SubmitPath
    from smsflow.config import OutboundConfig

    path = SubmitPath("t", "127.0.0.1:9", [], {}, None, OutboundConfig())  # type: ignore[arg-type]
    running = peak = 0

    async def submit(sub):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    path._submit = submit  # type: ignore[method-assign]
    sub = Submission(
        "m", 1, 1, "+852", "ACME", "alphanumeric", 0, 0, b"hi", "otp", 1, None, (Candidate("r", "c"),)
    )
    first = asyncio.create_task(path._take(_Msg(sub.to_json())))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(path._take(_Msg(sub.to_json())))  # waits for the first
    await asyncio.sleep(0.06)  # the first is done, the second is submitting
    third = asyncio.create_task(path._take(_Msg(sub.to_json())))
    await asyncio.gather(first, second, third)
    assert peak == 1


async def test_ledger_entries_and_hand_overs_are_retried_until_the_broker_stores_them(monkeypatch):
    """Nothing goes on without its record stored: a broker that refuses twice delays the intent (and so the
    submit_sm behind it) and the hand-over to the next route; it loses neither."""
    from connectors.smpp.submit import SubmitPath
    from smsflow.config import OutboundConfig
    from smsflow.outbound.ledger import Intent
    from smsflow.outbound.submission import LEDGER_TOPIC, SUBMIT_TOPIC, Carried, read_ledger

    class FlakyProducer:
        def __init__(self) -> None:
            self.refusals = 0
            self.stored: list[tuple[str, bytes, str]] = []

        async def send(self, topic: str, value: bytes, key: str) -> None:
            if self.refusals < 2:
                self.refusals += 1
                raise RuntimeError("broker unavailable")
            self.refusals = 0  # the next record is refused twice again
            self.stored.append((topic, value, key))

    waits: list[float] = []

    async def no_wait(s: float) -> None:
        waits.append(s)

    producer = FlakyProducer()
    path = SubmitPath("t", "127.0.0.1:9", [], {}, producer, OutboundConfig())  # type: ignore[arg-type]
    monkeypatch.setattr(asyncio, "sleep", no_wait)
    intent = Intent("m", 1, 1, "r0", "+852", None, 5)
    await path._write("m", Carried(intent, "c0"))
    sub = Submission(
        "m", 1, 1, "+852", "ACME", "alphanumeric", 0, 0, b"hi", "otp", 1, None,
        (Candidate("r0", "c0"), Candidate("r1", "c1")),
    )  # fmt: skip
    await path._hand_over(sub, 0x58, "refused for now")

    (ledger_topic, value, key), (submit_topic, handed, carrier) = producer.stored
    assert (ledger_topic, key, read_ledger(value)) == (LEDGER_TOPIC, "m", Carried(intent, "c0"))
    assert (submit_topic, carrier) == (SUBMIT_TOPIC, "c1")
    assert Submission.from_json(handed).route == Candidate("r1", "c1")
    assert waits == [0.2, 0.4, 0.2, 0.4]  # backing off, and the ledger holds the intent once stored
    assert path._ledger_of(("m", 1)).segments[("m", 1)][0].intent == intent
