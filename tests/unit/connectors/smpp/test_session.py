"""The ESME session against a scripted SMSC on loopback: answers, windows, keepalive, errors, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from connectors.smpp.session import EsmeSession, InboundPdu, RejectedPdu, SessionSettings
from smsflow.smpp.constants import CommandId, CommandStatus
from smsflow.smpp.pdu import Pdu, PduReader, decode_pdu, encode_pdu


class ScriptedSmsc:
    """Accepts connections, answers binds, and lets a test push raw bytes and read what the ESME sent."""

    def __init__(self, bind_status: int = 0) -> None:
        self.bind_status = bind_status
        self.conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.received: asyncio.Queue[Pdu] = asyncio.Queue()
        self.connected = asyncio.Event()
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self.answer_enquire_link = True

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for _, w in self.conns:
            w.close()
        if self._server:
            self._server.close()

    async def _on_conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.conns.append((r, w))
        framer = PduReader()
        with contextlib.suppress(ConnectionError, OSError):
            while data := await r.read(65536):
                for raw in framer.feed(data):
                    pdu = decode_pdu(raw)
                    if pdu.command_id in (CommandId.bind_transceiver, CommandId.bind_receiver):
                        w.write(encode_pdu(pdu.make_response(self.bind_status, {"system_id": "SMSC"})))
                        if self.bind_status == 0:
                            self.connected.set()
                    elif pdu.command_id == CommandId.enquire_link and self.answer_enquire_link:
                        w.write(encode_pdu(pdu.make_response(0)))
                    elif pdu.command_id == CommandId.unbind:
                        w.write(encode_pdu(pdu.make_response(0)))
                    await self.received.put(pdu)

    def send(self, data: bytes) -> None:
        self.conns[-1][1].write(data)

    async def expect(self, command_id: int, timeout: float = 5.0) -> Pdu:
        while True:
            pdu = await asyncio.wait_for(self.received.get(), timeout)
            if pdu.command_id == command_id:
                return pdu


def deliver_sm(seq: int, text: bytes = b"hello") -> bytes:
    return encode_pdu(
        Pdu(
            CommandId.deliver_sm,
            0,
            seq,
            params={"source_addr": "85261234567", "destination_addr": "85230001000", "short_message": text},
        )
    )


Handler = Callable[[InboundPdu], Awaitable[int]]


async def ok(_: InboundPdu) -> int:
    return 0


async def stop_session(s: EsmeSession, task: asyncio.Task[None], smsc: ScriptedSmsc) -> None:
    await s.stop(0.5)
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    await smsc.stop()


def settings_for(smsc: ScriptedSmsc, **kw: object) -> SessionSettings:
    """Session settings against ``smsc`` with quick reconnects; ``kw`` overrides any of them."""
    base: dict[str, object] = {
        "host": "127.0.0.1",
        "port": smsc.port,
        "system_id": "esme",
        "password": "pw",
        "reconnect_initial_s": 0.05,
        "reconnect_max_s": 0.2,
        "response_timeout_s": 1.0,
    }
    return SessionSettings(**{**base, **kw})  # type: ignore[arg-type]


StartSession = Callable[..., Awaitable[tuple[EsmeSession, ScriptedSmsc, asyncio.Task[None]]]]


@pytest.fixture
async def start_session() -> AsyncIterator[StartSession]:
    """Starts a session against a scripted SMSC without waiting for a bind (for tests of binding itself);
    every session it started is stopped, and its SMSC closed, after the test."""
    running: list[tuple[EsmeSession, asyncio.Task[None], ScriptedSmsc]] = []

    async def start(
        smsc: ScriptedSmsc | None = None, **kw: object
    ) -> tuple[EsmeSession, ScriptedSmsc, asyncio.Task[None]]:
        smsc = smsc or ScriptedSmsc()
        await smsc.start()
        s = EsmeSession(settings_for(smsc, **kw), ok)
        task = asyncio.create_task(s.run())
        running.append((s, task, smsc))
        return s, smsc, task

    yield start
    for s, task, smsc in running:
        await stop_session(s, task, smsc)


@contextlib.asynccontextmanager
async def session_with(handler: Handler, smsc: ScriptedSmsc | None = None, **kw):  # type: ignore[no-untyped-def]
    smsc = smsc or ScriptedSmsc()
    await smsc.start()
    rejected: list[RejectedPdu] = []

    async def on_reject(r: RejectedPdu) -> None:
        rejected.append(r)

    s = EsmeSession(settings_for(smsc, **kw), handler, on_reject)
    task = asyncio.create_task(s.run())
    try:
        await asyncio.wait_for(smsc.connected.wait(), 5)
        await s.wait_bound(5)
        yield s, smsc, rejected
    finally:
        await stop_session(s, task, smsc)


async def test_deliver_sm_answered_after_the_handler_with_its_status() -> None:
    gate = asyncio.Event()
    seen: list[InboundPdu] = []

    async def handler(item: InboundPdu) -> int:
        seen.append(item)
        await gate.wait()
        return int(CommandStatus.ESME_RX_T_APPN) if len(seen) == 1 else 0

    async with session_with(handler) as (_, smsc, _rej):
        smsc.send(deliver_sm(7))
        await asyncio.sleep(0.3)
        early = [smsc.received.get_nowait().command_id for _ in range(smsc.received.qsize())]
        assert CommandId.deliver_sm_resp not in early, "no answer before the handler (Kafka) is done"
        gate.set()
        resp = await smsc.expect(CommandId.deliver_sm_resp)
        assert (resp.sequence_number, resp.command_status) == (7, CommandStatus.ESME_RX_T_APPN)
        smsc.send(deliver_sm(8))
        resp = await smsc.expect(CommandId.deliver_sm_resp)
        assert (resp.sequence_number, resp.command_status) == (8, 0)
        assert seen[0].raw == deliver_sm(7) and seen[0].pdu.params["short_message"] == b"hello"


async def test_window_bounds_messages_in_flight() -> None:
    inflight, peak = 0, 0
    release = asyncio.Event()

    async def handler(_: InboundPdu) -> int:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await release.wait()
        inflight -= 1
        return 0

    async with session_with(handler, window=3) as (_, smsc, _rej):
        for i in range(10):
            smsc.send(deliver_sm(i + 1))
        await asyncio.sleep(0.5)
        assert peak == 3
        release.set()
        for _ in range(10):
            await smsc.expect(CommandId.deliver_sm_resp)
        assert peak == 3


async def test_answers_enquire_link_and_generic_nacks_unknown_commands_staying_up() -> None:
    async with session_with(ok) as (s, smsc, _rej):
        smsc.send(encode_pdu(Pdu(CommandId.enquire_link, 0, 41)))
        assert (await smsc.expect(CommandId.enquire_link_resp)).sequence_number == 41
        smsc.send(struct.pack(">IIII", 16, 0x000000F7, 0, 42))  # a command id nobody defined
        nack = await smsc.expect(CommandId.generic_nack)
        assert (nack.sequence_number, nack.command_status) == (42, CommandStatus.ESME_RINVCMDID)
        smsc.send(deliver_sm(43))
        assert (await smsc.expect(CommandId.deliver_sm_resp)).command_status == 0
        assert s.stats.binds == 1


async def test_malformed_deliver_sm_answered_with_its_error_quarantined_session_stays_up() -> None:
    async with session_with(ok) as (s, smsc, rejected):
        good = deliver_sm(50, b"abc")
        body = bytearray(good)
        body[-4] = 200  # sm_length claims 200 octets; there are 3
        smsc.send(bytes(body))
        resp = await smsc.expect(CommandId.deliver_sm_resp)
        assert resp.sequence_number == 50 and resp.command_status != 0
        assert len(rejected) == 1 and rejected[0].raw == bytes(body) and rejected[0].reason
        smsc.send(deliver_sm(51))
        assert (await smsc.expect(CommandId.deliver_sm_resp)).command_status == 0
        assert s.stats.binds == 1


async def test_oversized_pdu_is_nacked_the_session_closes_and_binds_anew() -> None:
    async with session_with(ok) as (s, smsc, rejected):
        huge = 70_000  # above the 64 KiB limit: a corrupt length, so nothing after it can be trusted
        smsc.send(struct.pack(">IIII", huge, CommandId.deliver_sm, 0, 61) + b"x" * 100)
        nack = await smsc.expect(CommandId.generic_nack)
        assert (nack.command_status, nack.sequence_number) == (CommandStatus.ESME_RINVCMDLEN, 61)
        await smsc.expect(CommandId.bind_transceiver)  # a fresh session, not 4 GiB skipped "while up"
        await s.wait_bound(5)
        smsc.send(deliver_sm(62))
        resp = await smsc.expect(CommandId.deliver_sm_resp)
        assert (resp.sequence_number, resp.command_status) == (62, 0)
        assert s.stats.binds == 2 and rejected and "exceeds" in rejected[0].reason


async def test_max_pdu_size_is_a_setting() -> None:
    async with session_with(ok, max_pdu_size=1024) as (_s, smsc, _rej):
        smsc.send(deliver_sm(63, b"x" * 200))  # under the limit
        assert (await smsc.expect(CommandId.deliver_sm_resp)).command_status == 0
        smsc.send(struct.pack(">IIII", 2000, CommandId.deliver_sm, 0, 64) + b"x" * 1984)
        nack = await smsc.expect(CommandId.generic_nack)
        assert nack.command_status == CommandStatus.ESME_RINVCMDLEN
        await smsc.expect(CommandId.bind_transceiver)


async def test_unframeable_length_is_nacked_and_the_session_rebinds() -> None:
    async with session_with(ok) as (_s, smsc, rejected):
        smsc.send(struct.pack(">IIII", 8, CommandId.deliver_sm, 0, 60))  # command_length < 16
        nack = await smsc.expect(CommandId.generic_nack)
        assert nack.command_status == CommandStatus.ESME_RINVCMDLEN
        await smsc.expect(CommandId.bind_transceiver)  # reconnected and bound again
        assert rejected


async def test_smsc_unbind_is_answered_then_reconnect() -> None:
    async with session_with(ok) as (_s, smsc, _rej):
        smsc.send(encode_pdu(Pdu(CommandId.unbind, 0, 70)))
        assert (await smsc.expect(CommandId.unbind_resp)).sequence_number == 70
        await smsc.expect(CommandId.bind_transceiver)


async def test_dead_link_detected_by_unanswered_enquire_link() -> None:
    smsc = ScriptedSmsc()
    smsc.answer_enquire_link = False
    async with session_with(ok, smsc, enquire_link_s=0.2) as (s, smsc, _rej):
        await smsc.expect(CommandId.enquire_link)
        await smsc.expect(CommandId.bind_transceiver, timeout=5)  # gave up on the link, bound anew
        assert s.stats.enquire_links_sent >= 1


async def test_clean_stop_unbinds() -> None:
    async with session_with(ok) as (_s, smsc, _rej):
        pass
    # session_with stopped the session: the SMSC must have seen an unbind
    seen = []
    while not smsc.received.empty():
        seen.append(smsc.received.get_nowait().command_id)
    assert CommandId.unbind in seen


async def test_bind_refused_retries_with_backoff(start_session: StartSession) -> None:
    refusing = ScriptedSmsc(bind_status=int(CommandStatus.ESME_RINVPASWD))
    s, smsc, _ = await start_session(refusing, password="bad", reconnect_max_s=0.1)
    await smsc.expect(CommandId.bind_transceiver)
    await smsc.expect(CommandId.bind_transceiver)
    assert not s.bound and "0x0000000E" in s.stats.last_error


@pytest.mark.parametrize("bind", ["receiver", "transceiver"])
async def test_bind_type_from_config(bind: str) -> None:
    async with session_with(ok, bind=bind) as (_, smsc, _rej):
        pass
    ids = []
    while not smsc.received.empty():
        ids.append(smsc.received.get_nowait().command_id)
    assert (CommandId.bind_receiver if bind == "receiver" else CommandId.bind_transceiver) in ids


async def test_backoff_starts_again_from_the_initial_delay_after_a_healthy_session(
    start_session: StartSession,
) -> None:
    """Before: the reset ran only when a session returned normally; an SMSC unbind raised, so each re-bind
    waited twice as long as the last (0.9 → 29.8 s in production)."""
    s, smsc, _ = await start_session(
        reconnect_initial_s=0.2, reconnect_max_s=30.0, healthy_after_s=0.3, response_timeout_s=10.0
    )
    gaps = []
    for i in range(5):
        await s.wait_bound(10)
        await asyncio.sleep(0.4)  # bound long enough to count as healthy
        smsc.send(encode_pdu(Pdu(CommandId.unbind, 0, 100 + i)))
        await smsc.expect(CommandId.unbind_resp)
        t0 = asyncio.get_running_loop().time()
        await smsc.expect(CommandId.bind_transceiver, timeout=30)
        gaps.append(asyncio.get_running_loop().time() - t0)
    # initial 0.2 s with jitter 0.5-1.0; without the reset the 5th gap would be 1.6-3.2 s
    assert max(gaps) < 0.6, gaps


async def test_backoff_still_grows_while_binds_fail(start_session: StartSession) -> None:
    _, smsc, _ = await start_session(
        ScriptedSmsc(bind_status=int(CommandStatus.ESME_RBINDFAIL)),
        reconnect_initial_s=0.1,
        reconnect_max_s=30.0,
        healthy_after_s=0.0,  # a refused bind never was bound: no reset even at 0
        response_timeout_s=10.0,
    )
    loop = asyncio.get_running_loop()
    await smsc.expect(CommandId.bind_transceiver)
    times = [loop.time()]
    for _ in range(4):
        await smsc.expect(CommandId.bind_transceiver, timeout=10)
        times.append(loop.time())
    assert times[-1] - times[-2] >= 0.4  # 0.8 s × jitter ≥ 0.5


async def test_clean_stop_reads_the_unbind_resp_and_takes_milliseconds() -> None:
    """Before: stop() cancelled the reader first, so it always waited out the unbind timeout."""
    async with session_with(ok) as (s, smsc, _rej):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await s.stop(5.0)
        took = loop.time() - t0
        assert s.stats.unbind_answered == 1, "the unbind_resp must be read, not only the unbind sent"
        assert took < 0.5, took
        assert (await smsc.expect(CommandId.unbind)).command_id == CommandId.unbind
        assert not s.bound


async def test_stop_is_bounded_when_the_smsc_never_answers_the_unbind() -> None:
    smsc = ScriptedSmsc()
    original = smsc._on_conn

    async def mute_unbind(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        class NoUnbindResp:
            def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
                return getattr(w, name)

            def write(self, data: bytes) -> None:
                if struct.unpack(">I", data[4:8])[0] != CommandId.unbind_resp:
                    w.write(data)

        await original(r, NoUnbindResp())  # type: ignore[arg-type]

    smsc._on_conn = mute_unbind  # type: ignore[method-assign]
    async with session_with(ok, smsc) as (s, smsc, _rej):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await s.stop(0.3)
        took = loop.time() - t0
        assert s.stats.unbind_answered == 0 and 0.2 < took < 2.0, took


async def test_message_in_flight_at_stop_is_answered_before_the_unbind() -> None:
    gate = asyncio.Event()

    async def slow(_: InboundPdu) -> int:
        await gate.wait()
        return 0

    async with session_with(slow) as (s, smsc, _rej):
        smsc.send(deliver_sm(90))
        await asyncio.sleep(0.1)
        stopping = asyncio.create_task(s.stop(5.0))
        await asyncio.sleep(0.1)
        gate.set()
        await stopping
        first = await smsc.expect(CommandId.deliver_sm_resp)
        assert (first.sequence_number, first.command_status) == (90, 0)
        await smsc.expect(CommandId.unbind)
        assert s.stats.unbind_answered == 1


async def test_a_bind_that_cannot_be_encoded_is_logged_and_retried_not_a_dead_task(
    start_session: StartSession,
) -> None:
    """Before: the encoding error escaped run() and the session task died silently for good."""
    # 13 octets of password; SMPP 3.4 carries 8
    s, _, task = await start_session(password="much-too-long", reconnect_max_s=0.1)
    for _ in range(50):
        if s.stats.reconnects >= 2:
            break
        await asyncio.sleep(0.05)
    assert not task.done(), "the session task must stay alive"
    assert s.stats.reconnects >= 2 and "password" in s.stats.last_error


async def test_answers_released_together_go_out_in_one_write_in_their_order() -> None:
    """The handlers of one batch of Kafka acknowledgements resume in one loop iteration: their responses
    are one socket write (not one each), in the order the handlers finished."""
    release = asyncio.Event()
    order: list[int] = []

    async def handler(item: InboundPdu) -> int:
        await release.wait()
        order.append(item.pdu.sequence_number)
        return 0

    async with session_with(handler, window=20) as (s, smsc, _rej):
        writer = s._writer
        assert writer is not None
        writes: list[bytes] = []
        plain_write = writer.write

        def counting_write(data: bytes) -> None:
            writes.append(bytes(data))
            plain_write(data)

        writer.write = counting_write  # type: ignore[method-assign]
        for seq in range(1, 11):
            smsc.send(deliver_sm(seq))
        while len(s._inflight) < 10:
            await asyncio.sleep(0.01)
        release.set()
        answered = [(await smsc.expect(CommandId.deliver_sm_resp)).sequence_number for _ in range(10)]
        assert answered == order and sorted(order) == list(range(1, 11))
        assert len(writes) == 1, f"{len(writes)} writes for 10 answers released together"
        # later answers, one at a time, are written at once (nothing waits for a fuller batch)
        smsc.send(deliver_sm(11))
        assert (await smsc.expect(CommandId.deliver_sm_resp, timeout=1.0)).sequence_number == 11
        assert len(writes) == 2


async def test_a_flood_of_malformed_pdus_is_each_answered_and_quarantined_but_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A carrier (or an attacker on its link) sending malformed PDUs at line rate: each is answered and
    quarantined, and the log says it once, not once per PDU (a line each would be its own flood: disk, and
    the logging's CPU on the event loop that serves every session)."""
    from connectors.smpp import session as session_module

    session_module._floods.flush()
    session_module._floods._kinds.clear()  # no earlier test's line of the same kind holds this one back
    with caplog.at_level(logging.WARNING, logger="connectors.smpp.session"):
        async with session_with(ok) as (s, smsc, rejected):
            good = deliver_sm(1, b"abc")
            for seq in range(100, 600):
                body = bytearray(deliver_sm(seq, b"abc"))
                body[-4] = 200  # sm_length claims 200 octets; there are 3
                smsc.send(bytes(body))
            for _ in range(500):
                assert (await smsc.expect(CommandId.deliver_sm_resp)).command_status != 0
            smsc.send(good)
            assert (await smsc.expect(CommandId.deliver_sm_resp)).command_status == 0
            assert len(rejected) == 500 and s.stats.rejected == 500 and s.stats.binds == 1
    lines = [r.getMessage() for r in caplog.records if "rejected PDU" in r.getMessage()]
    assert len(lines) == 1 and "0x" in lines[0], lines[:3]
