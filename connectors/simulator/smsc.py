"""A simulated carrier SMSC: an SMPP 3.4 server that accepts binds and pushes deliver_sm like a carrier.

It behaves as the carriers our users meet: it retries a deliver_sm answered with a temporary error
(ESME_RX_T_APPN) or not answered in time, can retransmit PDUs it already had acknowledged (``dup_ratio``),
shuffles the segments of long messages (``shuffle``), spreads them over all binds, and keeps a ledger of
what each bind acknowledged so tests can check that nothing acknowledged was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from connectors.simulator.traffic import LogicalSms
from smsflow.smpp.constants import CommandId, CommandStatus
from smsflow.smpp.pdu import Pdu, PduError, PduReader, Tlv, decode_pdu, encode_pdu
from smsflow.sms.segmentation import split_for_smpp

log = logging.getLogger(__name__)


def deliver_sm_params(
    source: str,
    dest: str,
    short_message: bytes,
    data_coding: int,
    esm_class: int = 0,
    source_ton: int = 1,
    dest_ton: int = 1,
    npi: int = 1,
) -> dict[str, int | str | bytes]:
    """The mandatory deliver_sm parameters a carrier sets for an MO SMS (the rest take their defaults)."""
    return {
        "source_addr_ton": source_ton,
        "source_addr_npi": npi,
        "source_addr": source,
        "dest_addr_ton": dest_ton,
        "dest_addr_npi": npi,
        "destination_addr": dest,
        "esm_class": esm_class,
        "data_coding": data_coding,
        "short_message": short_message,
    }


@dataclass
class Outgoing:
    pdu_params: dict[str, int | str | bytes]
    tlvs: list[object]
    logical: LogicalSms
    account: str = ""
    attempts: int = 0
    first_sent: float = 0.0
    counted: bool = True  # False for carrier retransmissions and cross-route copies: not a new SMS
    raw_tail: bytes = b""  # octets appended to the encoded PDU as they are: malformed TLVs for hostile tests


@dataclass
class SmscStats:
    binds: int = 0
    bind_failures: int = 0
    sent: int = 0
    acked: int = 0
    temp_errors: int = 0
    other_errors: int = 0
    timeouts: int = 0
    retransmissions: int = 0
    cross_route_copies: int = 0
    logical_accepted: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


class _Session:
    def __init__(
        self, smsc: SimulatedSmsc, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.smsc = smsc
        self.reader = reader
        self.writer = writer
        self.bound = False
        self.can_receive = False
        self.system_id = ""
        self.seq = itertools.count(1)
        self.pending: dict[int, asyncio.Future[Pdu]] = {}
        self.lock = asyncio.Lock()
        self.window = asyncio.Semaphore(smsc.window)
        self.closed = asyncio.Event()

    async def send(self, pdu: Pdu, raw_tail: bytes = b"") -> None:
        data = encode_pdu(pdu)
        if raw_tail:  # a hostile carrier: bytes our encoder would refuse, with command_length covering them
            data = (len(data) + len(raw_tail)).to_bytes(4, "big") + data[4:] + raw_tail
        async with self.lock:
            self.writer.write(data)
            await self.writer.drain()

    async def request(self, pdu: Pdu, timeout: float, raw_tail: bytes = b"") -> Pdu:
        pdu.sequence_number = next(self.seq)
        fut: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self.pending[pdu.sequence_number] = fut
        try:
            await self.send(pdu, raw_tail)
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.pending.pop(pdu.sequence_number, None)

    async def serve(self) -> None:
        framer = PduReader()
        try:
            while True:
                chunk = await self.reader.read(65536)
                if not chunk:
                    break
                for raw in framer.feed(chunk):
                    await self.handle(raw)
        except (ConnectionError, PduError, OSError) as exc:
            log.info("smsc: session %s ended: %s", self.system_id, exc)
        finally:
            self.bound = False
            self.closed.set()
            for f in self.pending.values():
                if not f.done():
                    f.set_exception(ConnectionError("closed"))
            self.writer.close()

    async def handle(self, raw: bytes) -> None:
        try:
            pdu = decode_pdu(raw)
        except PduError as exc:
            await self.send(Pdu(CommandId.generic_nack, exc.status, exc.sequence_number or 0))
            return
        cid = pdu.command_id
        if pdu.is_response:
            f = self.pending.get(pdu.sequence_number)
            if f is not None and not f.done():
                f.set_result(pdu)
            return
        if cid in (CommandId.bind_receiver, CommandId.bind_transceiver, CommandId.bind_transmitter):
            sid, pw = str(pdu.params.get("system_id", "")), str(pdu.params.get("password", ""))
            ok = self.smsc.accounts.get(sid) == pw
            status = CommandStatus.ESME_ROK if ok else CommandStatus.ESME_RINVPASWD
            await self.send(
                Pdu(cid | 0x80000000, status, pdu.sequence_number, params={"system_id": "SIMSMSC"})
            )
            if ok:
                self.bound, self.system_id = True, sid
                self.can_receive = cid != CommandId.bind_transmitter
                self.smsc.stats.binds += 1
                self.smsc._session_bound(self)
            else:
                self.smsc.stats.bind_failures += 1
        elif cid == CommandId.enquire_link:
            await self.send(Pdu(CommandId.enquire_link_resp, 0, pdu.sequence_number))
        elif cid == CommandId.unbind:
            await self.send(Pdu(CommandId.unbind_resp, 0, pdu.sequence_number))
            self.bound = False
            self.writer.close()
        elif cid == CommandId.submit_sm:
            mid = f"{next(self.smsc._mt_ids):08X}"
            await self.send(Pdu(CommandId.submit_sm_resp, 0, pdu.sequence_number, params={"message_id": mid}))
        else:
            await self.send(Pdu(CommandId.generic_nack, CommandStatus.ESME_RINVCMDID, pdu.sequence_number))


class SimulatedSmsc:
    def __init__(
        self,
        accounts: dict[str, str],
        host: str = "127.0.0.1",
        port: int = 0,
        window: int = 64,
        response_timeout_s: float = 10.0,
        retry_delay_s: float = 1.0,
        dup_ratio: float = 0.0,
        cross_route_ratio: float = 0.0,
        shuffle: bool = True,
        seed: int = 7,
    ) -> None:
        self.accounts = accounts
        self.host, self.port = host, port
        self.window = window
        self.response_timeout_s = response_timeout_s
        self.retry_delay_s = retry_delay_s
        self.dup_ratio = dup_ratio
        self.cross_route_ratio = cross_route_ratio
        self.shuffle = shuffle
        self.rng = random.Random(seed)
        self.stats = SmscStats()
        self.sessions: list[_Session] = []
        # one queue per account: a carrier sends an SMS's parts over its own binds, never another account's
        self._queues: dict[str, deque[Outgoing]] = {a: deque() for a in accounts}
        self._next_account = itertools.cycle(sorted(accounts))
        self._queue_event = asyncio.Event()
        self._server: asyncio.base_events.Server | None = None
        self._pushers: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._bound_event = asyncio.Event()
        self._rr = 0
        self._ref = itertools.count(self.rng.randrange(1, 200))
        self._mt_ids = itertools.count(0x1A2B3C)
        self._outstanding = 0
        self._logical_pending: dict[int, int] = {}  # id(logical) -> parts not yet acked
        self.accepted: list[LogicalSms] = []  # logical SMS whose every part was acknowledged
        self.ack_latency: list[float] = []
        # benchmarks: called when a PDU of a logical SMS goes out for the first time (time.monotonic())
        self.on_first_send: Callable[[LogicalSms, float], None] | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._on_connect, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        for t in self._pushers:
            t.cancel()
        for s in list(self.sessions):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.request(Pdu(CommandId.unbind), 2.0), 2.0)
            s.writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s = _Session(self, reader, writer)
        self.sessions.append(s)
        try:
            await s.serve()
        finally:
            self.sessions.remove(s)

    def _session_bound(self, s: _Session) -> None:
        if s.can_receive:
            self._bound_event.set()
            self._pushers.append(asyncio.create_task(self._pusher(s)))

    async def wait_bound(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(self._bound_event.wait(), timeout)

    # ---- traffic ------------------------------------------------------------------------------------
    def enqueue(self, sms: LogicalSms, account: str | None = None, counted: bool = True) -> int:
        """Queue one logical SMS (split into PDUs) for one account; returns the number of PDUs.

        With ``cross_route_ratio`` the same SMS is also sent over another account (a second route), with its
        own reference and segmentation, as happens during a route failover."""
        account = account or next(self._next_account)
        if (
            counted
            and len(self._queues) > 1
            and self.cross_route_ratio
            and self.rng.random() < self.cross_route_ratio
        ):
            other = next(a for a in self._next_account if a != account)
            self.stats.cross_route_copies += 1
            self.enqueue(sms, other, counted=False)
        segs = split_for_smpp(
            sms.text,
            sms.data_coding,
            method=sms.method,  # type: ignore[arg-type]
            ref=next(self._ref) % (256 if sms.method == "udh8" else 65536),
        )  # type: ignore[arg-type]
        if self.shuffle and len(segs) > 1:
            self.rng.shuffle(segs)
        if counted:
            self._logical_pending[id(sms)] = len(segs)
        for seg in segs:
            params = deliver_sm_params(
                sms.source,
                sms.dest,
                seg.short_message,
                sms.data_coding,
                seg.esm_class,
                sms.source_ton,
                sms.dest_ton,
                sms.source_npi,
            )
            tlvs: list[object] = [Tlv(t, v) for t, v in seg.tlvs]
            self._queues[account].append(Outgoing(params, tlvs, sms, account, counted=counted))
        self._queue_event.set()
        return len(segs)

    def enqueue_pdu(
        self,
        params: dict[str, int | str | bytes],
        tlvs: list[object],
        sms: LogicalSms,
        account: str | None = None,
        raw_tail: bytes = b"",
    ) -> None:
        """Queue one hand-made deliver_sm (receipts, malformed bodies, ...); ``raw_tail`` is appended to
        the encoded PDU unchecked (malformed TLVs)."""
        account = account or next(self._next_account)
        self._logical_pending[id(sms)] = self._logical_pending.get(id(sms), 0) + 1
        self._queues[account].append(Outgoing(params, tlvs, sms, account, raw_tail=raw_tail))
        self._queue_event.set()

    @property
    def backlog(self) -> int:
        return sum(len(q) for q in self._queues.values()) + self._outstanding

    async def drain(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.backlog and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.backlog == 0

    async def _pusher(self, s: _Session) -> None:
        queue = self._queues[s.system_id]
        while s.bound and not s.closed.is_set():
            if not queue:
                self._queue_event.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._queue_event.wait(), 0.5)
                continue
            await s.window.acquire()
            if not queue or not s.bound:
                s.window.release()
                continue
            item = queue.popleft()
            self._outstanding += 1
            task = asyncio.create_task(self._deliver(s, item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, s: _Session, item: Outgoing) -> None:
        item.attempts += 1
        if not item.first_sent:
            item.first_sent = time.monotonic()
            if self.on_first_send is not None and item.counted:
                self.on_first_send(item.logical, item.first_sent)
        pdu = Pdu(CommandId.deliver_sm, params=dict(item.pdu_params), tlvs=list(item.tlvs))  # type: ignore[arg-type]
        self.stats.sent += 1
        status: int | None = None
        try:
            resp = await s.request(pdu, self.response_timeout_s, item.raw_tail)
            status = resp.command_status
        except TimeoutError:
            self.stats.timeouts += 1
        except (ConnectionError, OSError):
            pass
        finally:
            s.window.release()
        self._outstanding -= 1
        if status is not None:
            self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
        if status == CommandStatus.ESME_ROK:
            self.stats.acked += 1
            if not item.counted:
                return
            self.ack_latency.append(time.monotonic() - item.first_sent)
            left = self._logical_pending.get(id(item.logical), 1) - 1
            self._logical_pending[id(item.logical)] = left
            if left == 0:
                self.stats.logical_accepted += 1
                self.accepted.append(item.logical)
            if self.dup_ratio and self.rng.random() < self.dup_ratio:
                # the carrier "lost" our response and sends the same PDU again
                self.stats.retransmissions += 1
                dup = Outgoing(item.pdu_params, item.tlvs, item.logical, item.account, counted=False)
                self._queues[item.account].append(dup)
                self._queue_event.set()
            return
        if status is not None and status != CommandStatus.ESME_RX_T_APPN:
            self.stats.other_errors += 1
            # permanent error from the ESME: a real SMSC drops the message; we record it as not accepted
            return
        if status == CommandStatus.ESME_RX_T_APPN:
            self.stats.temp_errors += 1
        await asyncio.sleep(self.retry_delay_s)
        self._queues[item.account].appendleft(item)
        self._queue_event.set()
