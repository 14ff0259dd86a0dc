"""The carrier simulator's faults and submit_sm handling, as our own ESME session sees them (no broker).

Each test binds a real ``EsmeSession`` to a real ``SimulatedSmsc`` on loopback, switches a fault on (and off)
while both run, and checks what the ESME observes: bind refusals, dropped links, late deliver_sm, submit_sm
answers, probes coming back as MOs after the set latency, receipts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from connectors.smpp.session import EsmeSession, InboundPdu, SessionSettings
from devkit.simulator.faults import FaultError, FaultKind, parse_fault
from devkit.simulator.smsc import SimulatedSmsc
from devkit.simulator.traffic import LogicalSms
from smsflow.ingest.receipts import parse_receipt
from smsflow.smpp.constants import CommandId, CommandStatus, TlvTag
from smsflow.smpp.pdu import Pdu

PROBE_NUMBER = "85230009999"
OUR_NUMBER = "85230001000"
BASE_PROBE_LATENCY_S = 0.3


@dataclass
class Esme:
    """An ESME bound to the simulator, recording each deliver_sm with the time it arrived."""

    session: EsmeSession
    task: asyncio.Task[None]
    received: asyncio.Queue[tuple[float, Pdu]] = field(default_factory=asyncio.Queue)

    async def next_pdu(self, timeout: float = 5.0) -> tuple[float, Pdu]:
        return await asyncio.wait_for(self.received.get(), timeout)

    async def submit(
        self, dest: str, text: bytes = b"probe 42", registered_delivery: int = 0, timeout: float = 2.0
    ) -> Pdu:
        return await self.session.request(
            Pdu(
                CommandId.submit_sm,
                params={
                    "source_addr_ton": 1,
                    "source_addr_npi": 1,
                    "source_addr": OUR_NUMBER,
                    "dest_addr_ton": 1,
                    "dest_addr_npi": 1,
                    "destination_addr": dest,
                    "registered_delivery": registered_delivery,
                    "short_message": text,
                },
            ),
            timeout=timeout,
        )


def smsc_for_tests(**kw: object) -> SimulatedSmsc:
    return SimulatedSmsc(
        {"alpha": "pw", "beta": "pw"},
        retry_delay_s=0.1,
        response_timeout_s=2.0,
        test_numbers=[f"+{PROBE_NUMBER}"],
        probe_latency_s=BASE_PROBE_LATENCY_S,
        **kw,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def running(smsc: SimulatedSmsc) -> AsyncIterator[SimulatedSmsc]:
    await smsc.start()
    try:
        yield smsc
    finally:
        await smsc.stop()


@contextlib.asynccontextmanager
async def esme(
    smsc: SimulatedSmsc | int, account: str = "alpha", bind: str = "transceiver", wait: bool = True
) -> AsyncIterator[Esme]:
    """An ESME session bound to a simulator (or to whatever listens on that loopback port)."""
    settings = SessionSettings(
        host="127.0.0.1",
        port=smsc if isinstance(smsc, int) else smsc.port,
        system_id=account,
        password="pw",
        bind=bind,
        reconnect_initial_s=0.05,
        reconnect_max_s=0.1,
        response_timeout_s=2.0,
        enquire_link_s=30.0,
        name=account,
    )
    queue: asyncio.Queue[tuple[float, Pdu]] = asyncio.Queue()

    async def handler(item: InboundPdu) -> int:
        await queue.put((time.monotonic(), item.pdu))
        return 0

    session = EsmeSession(settings, handler)
    task = asyncio.create_task(session.run())
    client = Esme(session, task, queue)
    try:
        if wait:
            await session.wait_bound(10)
        yield client
    finally:
        # short: EsmeSession.stop cancels its reader before the unbind_resp can arrive, so it always waits
        # out this timeout (a session.py issue, reported); nothing here depends on the unbind
        await session.stop(0.2)
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


def sms(n: int) -> LogicalSms:
    return LogicalSms("85261234567", OUR_NUMBER, f"hello {n}", 0, tag=str(n))


def put(smsc: SimulatedSmsc, account: str, **fault: object) -> None:
    """Switch a fault on, from the JSON form the control endpoint takes."""
    smsc.set_fault(account, parse_fault(fault))


async def until(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# ---- binds and connections --------------------------------------------------------------------------------


async def test_an_accounts_binds_share_its_traffic_at_a_low_rate_too() -> None:
    # one SMS at a time (each answered before the next): no window is ever full, yet both binds carry it,
    # as a carrier spreads over an account's binds; the bench's scale-out runs rely on it (two connectors)
    async with running(smsc_for_tests()) as smsc, esme(smsc, "alpha") as a, esme(smsc, "alpha") as b:
        for n in range(20):
            smsc.enqueue(sms(n), "alpha")
            await until(lambda n=n: smsc.stats.acked == n + 1)
        assert (a.received.qsize(), b.received.qsize()) == (10, 10)
        # one bind alone takes everything, without waiting for a peer
        async with esme(smsc, "beta") as c:
            t0 = time.monotonic()
            for n in range(20, 30):
                smsc.enqueue(sms(n), "beta")
                await until(lambda n=n: smsc.stats.acked == n + 1)
            assert c.received.qsize() == 10 and time.monotonic() - t0 < 2.0
        assert smsc.stats.spread_yields >= 10 and c.session.stats.received == 10
        # a burst: both windows busy, neither bind waits for work, so none holds a PDU back for the other
        yields = smsc.stats.spread_yields
        for n in range(30, 430):
            smsc.enqueue(sms(n), "alpha")
        await until(lambda: smsc.stats.acked == 430)
        assert smsc.stats.spread_yields - yields <= 20
        assert a.received.qsize() > 100 and b.received.qsize() > 100


async def test_refused_binds_carry_the_chosen_status_on_that_account_only_and_lapse() -> None:
    async with running(smsc_for_tests()) as smsc:
        put(smsc, "alpha", kind="refuse_binds", status="ESME_RSYSERR", duration_s=1.0)
        async with esme(smsc, "alpha", wait=False) as a, esme(smsc, "beta") as b:
            await until(lambda: "0x00000008" in a.session.stats.last_error)
            assert not a.session.bound and b.session.bound
            assert smsc.stats.bind_failures >= 1
            # the fault lapses by itself; the ESME's next attempt binds
            await a.session.wait_bound(10)
            assert smsc.faults.listing("alpha") == []


async def test_drop_now_cuts_the_link_and_the_esme_binds_again() -> None:
    async with running(smsc_for_tests()) as smsc, esme(smsc) as a:
        assert a.session.stats.binds == 1
        assert smsc.set_fault("alpha", parse_fault({"kind": "drop"})) is None  # one-off, not kept
        await until(lambda: a.session.stats.binds == 2)
        assert smsc.stats.drops == 1
        assert "closed" in a.session.stats.last_error


async def test_drop_every_n_seconds_until_cleared() -> None:
    async with running(smsc_for_tests()) as smsc, esme(smsc) as a:
        put(smsc, "alpha", kind="drop", every_s=0.2)
        await until(lambda: a.session.stats.binds >= 4)
        smsc.clear_fault("alpha", FaultKind.drop)
        drops = smsc.stats.drops
        await asyncio.sleep(0.6)  # three periods of the lifted fault: the carrier cuts nothing more
        await a.session.wait_bound(5)
        binds = a.session.stats.binds
        await asyncio.sleep(0.6)
        assert smsc.stats.drops == drops and a.session.bound and a.session.stats.binds == binds


# ---- deliver_sm --------------------------------------------------------------------------------


async def test_deliver_latency_holds_each_deliver_sm_and_switches_off() -> None:
    async with running(smsc_for_tests()) as smsc, esme(smsc) as a:
        put(smsc, "alpha", kind="deliver_latency", latency_ms=800)
        t0 = time.monotonic()
        smsc.enqueue(sms(1), "alpha")
        at, pdu = await a.next_pdu()
        slow = at - t0
        assert pdu.params["short_message"] == b"hello 1"
        assert 0.8 <= slow < 5.0
        smsc.clear_fault("alpha")
        t0 = time.monotonic()
        smsc.enqueue(sms(2), "alpha")
        at, _ = await a.next_pdu()
        assert at - t0 < slow


async def test_silent_keeps_the_bind_and_enquire_link_but_pushes_and_answers_nothing() -> None:
    async with running(smsc_for_tests()) as smsc, esme(smsc) as a:
        put(smsc, "alpha", kind="silent")
        smsc.enqueue(sms(1), "alpha")
        resp = await a.session.request(Pdu(CommandId.enquire_link), timeout=2.0)
        assert resp.command_id == CommandId.enquire_link_resp and resp.command_status == 0
        with pytest.raises(TimeoutError):
            await a.submit("85261234567", timeout=0.5)
        with pytest.raises(TimeoutError):
            await a.next_pdu(timeout=0.5)
        assert smsc.submits.records[-1].outcome == "unanswered"
        smsc.clear_fault("alpha", FaultKind.silent)
        _, pdu = await a.next_pdu()  # the carrier speaks again: what it held comes through
        assert pdu.params["short_message"] == b"hello 1"
        assert (await a.submit("85261234567")).command_status == 0


async def test_throttle_caps_submits_per_second_and_paces_deliver_sm() -> None:
    async with running(smsc_for_tests()) as smsc, esme(smsc) as a:
        put(smsc, "alpha", kind="throttle", tps=4)
        t0 = time.monotonic()
        statuses = [(await a.submit("85261234567", f"m{i}".encode())).command_status for i in range(12)]
        accepted, elapsed = statuses.count(0), time.monotonic() - t0
        # a burst of one second's worth, then 4/s (elapsed is long on a loaded machine: the bound follows it)
        assert 4 <= accepted <= 4 + 4 * elapsed + 1, (statuses, elapsed)
        assert accepted < 12 and statuses.count(CommandStatus.ESME_RTHROTTLED) == 12 - accepted
        t0 = time.monotonic()
        for i in range(8):
            smsc.enqueue(sms(i), "alpha")
        arrivals = [(await a.next_pdu())[0] for _ in range(8)]
        # the bucket may be near-empty after the submits' burst; 8 pushes at 4/s need >= 1 s of refill
        assert arrivals[-1] - t0 >= 0.9


# ---- submit_sm --------------------------------------------------------------------------------


async def test_submit_errors_at_a_ratio_with_temporary_or_permanent_status() -> None:
    async with running(smsc_for_tests()) as smsc, esme(smsc) as a:
        put(smsc, "alpha", kind="submit_errors", ratio=1.0, status="ESME_RMSGQFUL")
        assert (await a.submit("85261234567")).command_status == CommandStatus.ESME_RMSGQFUL
        put(smsc, "alpha", kind="submit_errors", ratio=1.0, status="ESME_RSUBMITFAIL")
        assert (await a.submit("85261234567")).command_status == CommandStatus.ESME_RSUBMITFAIL
        put(smsc, "alpha", kind="submit_errors", ratio=0.5)
        statuses = [(await a.submit("85261234567", f"x{i}".encode())).command_status for i in range(60)]
        throttled = statuses.count(CommandStatus.ESME_RTHROTTLED)
        assert 15 <= throttled <= 45 and statuses.count(0) == 60 - throttled
        smsc.clear_fault("alpha")
        assert (await a.submit("85261234567")).command_status == 0
        assert smsc.submits.summary("alpha")["errors"] == 2 + throttled


async def test_submit_answered_with_a_message_id_and_kept_in_the_ledger() -> None:
    async with running(smsc_for_tests()) as smsc, esme(smsc) as a, esme(smsc, "beta", "receiver") as rx:
        first = await a.submit("85261234567", b"one")
        second = await a.submit("85261234567", b"two")
        ids = [str(first.params["message_id"]), str(second.params["message_id"])]
        assert all(len(i) == 8 and int(i, 16) for i in ids) and ids[0] != ids[1]
        assert smsc.submits.submitted_twice() == []
        await a.submit("85261234567", b"one")
        assert smsc.submits.submitted_twice() == [(("85230001000", "85261234567", b"one", 0), 2)]
        # a receiver bind may not submit
        assert (await rx.submit("85261234567")).command_status == CommandStatus.ESME_RINVBNDSTS
    async with running(smsc_for_tests(message_id_format="decimal")) as smsc, esme(smsc) as a:
        assert str((await a.submit("85261234567")).params["message_id"]).isdecimal()


async def test_probe_loops_back_as_an_mo_after_the_set_latency() -> None:
    async with running(smsc_for_tests()) as smsc, esme(smsc) as a:
        t0 = time.monotonic()
        resp = await a.submit(PROBE_NUMBER, b"probe p-1")
        at, mo = await a.next_pdu()
        assert resp.command_status == 0
        assert (mo.params["source_addr"], mo.params["destination_addr"]) == (PROBE_NUMBER, OUR_NUMBER)
        assert mo.params["short_message"] == b"probe p-1" and mo.params["esm_class"] == 0
        assert BASE_PROBE_LATENCY_S <= at - t0 < BASE_PROBE_LATENCY_S + 2.0
        # a fault adds to the configured latency
        put(smsc, "alpha", kind="probe_latency", latency_ms=1000)
        t0 = time.monotonic()
        await a.submit(PROBE_NUMBER, b"probe p-2")
        at, mo = await a.next_pdu()
        assert mo.params["short_message"] == b"probe p-2"
        assert BASE_PROBE_LATENCY_S + 1.0 <= at - t0 < BASE_PROBE_LATENCY_S + 3.0
        # a customer's number is not a probe: nothing comes back
        await a.submit("85261234567", b"to a customer")
        with pytest.raises(TimeoutError):
            await a.next_pdu(timeout=BASE_PROBE_LATENCY_S + 0.5)
        assert [r.probe for r in smsc.submits.records] == ["looped", "looped", None]


async def test_probe_loss_eats_probes_at_the_ratio() -> None:
    async with running(smsc_for_tests()) as smsc, esme(smsc) as a:
        put(smsc, "alpha", kind="probe_loss", ratio=1.0, duration_s=60)
        for i in range(3):
            assert (await a.submit(PROBE_NUMBER, f"probe l-{i}".encode())).command_status == 0
        with pytest.raises(TimeoutError):
            await a.next_pdu(timeout=BASE_PROBE_LATENCY_S + 0.7)
        put(smsc, "alpha", kind="probe_loss", ratio=0.5)
        for i in range(40):
            await a.submit(PROBE_NUMBER, f"probe h-{i}".encode())
        summary = smsc.submits.summary("alpha")
        assert summary["probes_lost"] == 3 + (40 - summary["probes_looped"] - summary["probes_pending"])
        assert 10 <= summary["probes_lost"] - 3 <= 30
        await until(lambda: smsc.submits.summary("alpha")["probes_pending"] == 0)
        back = [await a.next_pdu() for _ in range(smsc.submits.summary("alpha")["probes_looped"])]
        assert all(p.params["short_message"].startswith(b"probe h-") for _, p in back)  # type: ignore[union-attr]


async def test_receipt_for_each_submit_that_asked_for_one() -> None:
    async with running(smsc_for_tests(receipts=True, receipt_delay_s=0.1)) as smsc, esme(smsc) as a:
        resp = await a.submit("85261234567", b"your order shipped", registered_delivery=1)
        _, dlr = await a.next_pdu()
        mid = str(resp.params["message_id"])
        assert dlr.params["esm_class"] == 0x04
        assert (dlr.params["source_addr"], dlr.params["destination_addr"]) == ("85261234567", OUR_NUMBER)
        info = parse_receipt(
            bytes(dlr.params["short_message"]).decode("latin-1"),  # type: ignore[arg-type]
            None,
            None,
            None,
        )
        assert (info["message_id"], info["state"]) == (mid, "DELIVRD")  # the text form alone
        assert dlr.tlv_value(TlvTag.receipted_message_id) == mid
        assert dlr.tlv_value(TlvTag.message_state) == 2
        await a.submit("85261234567", b"no receipt wanted", registered_delivery=0)
        with pytest.raises(TimeoutError):
            await a.next_pdu(timeout=0.6)


# ---- the fault values themselves ---------------------------------------------------------------------------


async def test_faults_expire_and_list_their_remaining_time() -> None:
    async with running(smsc_for_tests()) as smsc:
        put(smsc, "beta", kind="silent", duration_s=0.3)
        put(smsc, "beta", kind="throttle", tps=2)
        listed = smsc.account_state("beta")["faults"]
        assert [f["kind"] for f in listed] == ["silent", "throttle"]  # type: ignore[index]
        assert 0 < listed[0]["expires_in_s"] <= 0.3  # type: ignore[index]
        await asyncio.sleep(0.35)
        assert [f.kind for f in smsc.faults.listing("beta")] == [FaultKind.throttle]
        assert smsc.faults.listing("alpha") == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"kind": "flood"}, "fault.kind: unknown fault 'flood'"),
        ({"kind": "submit_errors"}, "fault.ratio: required for a submit_errors fault"),
        ({"kind": "submit_errors", "ratio": 1.5}, "fault.ratio: must be >= 0 and <= 1"),
        (
            {"kind": "submit_errors", "ratio": 0.1, "status": "ESME_NOPE"},
            "fault.status: unknown command_status",
        ),
        ({"kind": "refuse_binds", "status": 0}, "fault.status: must be a non-zero"),
        ({"kind": "throttle", "tps": 0}, "fault.tps: must be > 0"),
        ({"kind": "silent", "latency_ms": 5}, "fault.latency_ms: not a field of a silent fault"),
        ({"kind": "silent", "duration_s": -1}, "fault.duration_s: must be > 0"),
        ({"kind": "deliver_latency", "latency_ms": "slow"}, "fault.latency_ms: must be a number"),
    ],
)
def test_a_bad_fault_names_the_field_and_why(body: dict[str, object], message: str) -> None:
    with pytest.raises(FaultError) as err:
        parse_fault(body)
    assert str(err.value).startswith(message)


def test_statuses_by_name_or_number() -> None:
    assert parse_fault({"kind": "refuse_binds"}).status == CommandStatus.ESME_RBINDFAIL
    assert parse_fault({"kind": "refuse_binds", "status": "0x0E"}).status == CommandStatus.ESME_RINVPASWD
    assert parse_fault({"kind": "submit_errors", "ratio": 1, "status": 0x58}).status == 0x58


# ---- an independent client ----------------------------------------------------------------------


def smpplib_probe_round_trip(port: int, dest: str) -> tuple[str, bytes, str, float]:
    """smpplib (blocking) binds as a transceiver, submits one SMS and reads until the MO copy comes back."""
    import smpplib.client

    client = smpplib.client.Client("127.0.0.1", port, timeout=5, allow_unknown_opt_params=True)
    sent: list[str] = []
    received: list[tuple[bytes, str]] = []
    client.set_message_sent_handler(lambda pdu: sent.append(pdu.message_id.decode()))
    client.set_message_received_handler(
        lambda pdu: received.append((pdu.short_message, pdu.source_addr.decode()))
    )
    client.connect()
    try:
        client.bind_transceiver(system_id="alpha", password="pw")
        t0 = time.monotonic()
        client.send_message(
            source_addr_ton=1, source_addr=OUR_NUMBER, dest_addr_ton=1, destination_addr=dest,
            short_message=b"probe via smpplib",
        )  # fmt: skip
        while not received:
            client.read_once()
        return sent[0], received[0][0], received[0][1], time.monotonic() - t0
    finally:
        client.disconnect()


async def test_smpplib_submits_and_gets_the_probe_back() -> None:
    async with running(smsc_for_tests()) as smsc:
        message_id, text, source, rtt = await asyncio.to_thread(
            smpplib_probe_round_trip, smsc.port, PROBE_NUMBER
        )
        assert message_id == smsc.submits.records[0].message_id and len(message_id) == 8
        assert (text, source) == (b"probe via smpplib", PROBE_NUMBER)
        assert BASE_PROBE_LATENCY_S <= rtt < BASE_PROBE_LATENCY_S + 3.0
