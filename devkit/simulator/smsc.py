"""A simulated carrier SMSC: an SMPP 3.4 server that accepts binds and pushes deliver_sm like a carrier.

It behaves as the carriers our users meet: it retries a deliver_sm answered with a temporary error
(ESME_RX_T_APPN) or not answered in time, can retransmit PDUs it already had acknowledged (``dup_ratio``),
shuffles the segments of long messages (``shuffle``), spreads them over all binds, and keeps a ledger of
what each bind acknowledged so tests can check that nothing acknowledged was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from devkit.simulator.faults import Fault, FaultBoard, FaultError, FaultKind
from devkit.simulator.submits import (
    MessageIdFormat,
    SubmitLedger,
    SubmitRecord,
    digits,
    format_message_id,
    probe_deliver_sm,
    receipt_deliver_sm,
    submit_text,
)
from devkit.simulator.traffic import LogicalSms
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
    drops: int = 0  # connections closed by the drop fault
    spread_yields: int = 0  # a bind let a peer that waited for work take a PDU (the spread at low rates)
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
        self.can_transmit = False
        self.bound_at = 0.0
        self.waiting = False  # its pusher waits for the account's queue to have work

    def abort(self) -> None:
        """Cut the TCP connection without an unbind, as a carrier's link failure does."""
        self.bound = False
        self.writer.transport.abort()

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
            status = int(CommandStatus.ESME_ROK if ok else CommandStatus.ESME_RINVPASWD)
            refusal = self.smsc.faults.active(sid, FaultKind.refuse_binds) if ok else None
            if refusal is not None:
                ok, status = False, refusal.status
            await self.send(
                Pdu(cid | 0x80000000, status, pdu.sequence_number, params={"system_id": "SIMSMSC"})
            )
            if ok:
                self.bound, self.system_id = True, sid
                self.can_receive = cid != CommandId.bind_transmitter
                self.can_transmit = cid != CommandId.bind_receiver
                self.bound_at = self.smsc.faults.clock()
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
            await self.smsc._on_submit(self, pdu)
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
        test_numbers: Iterable[str] = (),
        probe_latency_s: float = 0.5,
        receipts: bool = False,
        receipt_delay_s: float = 0.2,
        message_id_format: MessageIdFormat = "hex",
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
        self._last_taker: dict[str, _Session] = {}  # per account, the bind that took its latest PDU
        self._ref = itertools.count(self.rng.randrange(1, 200))
        self._mt_ids = itertools.count(0x1A2B3C)
        self._outstanding = 0
        self._logical_pending: dict[int, int] = {}  # id(logical) -> parts not yet acked
        self.accepted: list[LogicalSms] = []  # logical SMS whose every part was acknowledged
        self.ack_latency: list[float] = []
        # benchmarks: called when a PDU of a logical SMS goes out for the first time (time.monotonic())
        self.on_first_send: Callable[[LogicalSms, float], None] | None = None
        # outbound side: submits to these numbers are probes, looped back as MOs after probe_latency_s
        self.test_numbers = {digits(n) for n in test_numbers}
        self.probe_latency_s = probe_latency_s
        self.receipts = receipts  # a DELIVRD receipt for each accepted submit that asked for one
        self.receipt_delay_s = receipt_delay_s
        self.message_id_format: MessageIdFormat = message_id_format
        self.submits = SubmitLedger()
        self.faults = FaultBoard()
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._on_connect, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._watcher = asyncio.create_task(self._watch_drops())
        return self.port

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
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
            if queue and self.faults.active(s.system_id, FaultKind.silent):
                await asyncio.sleep(0.05)  # a silent carrier keeps the bind but pushes nothing
                continue
            gate = self.faults.gate(s.system_id, "deliver") if queue else None
            if gate is not None:
                wait = gate.wait_s(self.faults.clock())
                if wait > 0:
                    await asyncio.sleep(min(wait, 0.5))
                    continue
                gate.take(self.faults.clock())
            if not queue:
                self._queue_event.clear()
                s.waiting = True
                try:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._queue_event.wait(), 0.5)
                finally:
                    s.waiting = False
                continue
            if self._last_taker.get(s.system_id) is s and self._waiting_peer(s):
                # a carrier spreads its traffic over an account's binds at any rate, not only once one bind's
                # window is full: the bind that took the last PDU lets a peer that waits for work (woken by
                # the same event, it runs within the millisecond) take this one, and takes it itself if that
                # one does not. Under load no peer waits for work, so nothing is held back.
                self.stats.spread_yields += 1
                await asyncio.sleep(0.001)
                if not queue:
                    continue
            await s.window.acquire()
            if not queue or not s.bound:
                s.window.release()
                continue
            item = queue.popleft()
            self._last_taker[s.system_id] = s
            self._outstanding += 1
            task = asyncio.create_task(self._deliver(s, item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _waiting_peer(self, s: _Session) -> bool:
        """Whether another bind of the same account waits for work (its pusher found the queue empty)."""
        return any(p is not s and p.system_id == s.system_id and p.waiting and p.bound for p in self.sessions)

    async def _deliver(self, s: _Session, item: Outgoing) -> None:
        item.attempts += 1
        if not item.first_sent:
            item.first_sent = time.monotonic()
            if self.on_first_send is not None and item.counted:
                self.on_first_send(item.logical, item.first_sent)
        pdu = Pdu(CommandId.deliver_sm, params=dict(item.pdu_params), tlvs=list(item.tlvs))  # type: ignore[arg-type]
        status: int | None = None
        try:
            latency = self.faults.active(s.system_id, FaultKind.deliver_latency)
            if latency is not None:
                await asyncio.sleep(latency.latency_ms / 1000)
            self.stats.sent += 1
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

    # ---- faults -------------------------------------------------------------------------------------
    def set_fault(self, account: str, fault: Fault) -> Fault | None:
        """Put a fault in force on an account. A ``drop`` without ``every_s`` acts at once and is not kept:
        it returns None."""
        if account not in self.accounts:
            raise FaultError("account", f"no such account {account!r}")
        if fault.kind == FaultKind.drop and fault.every_s is None:
            self.drop_now(account)
            return None
        return self.faults.set(account, fault)

    def clear_fault(self, account: str, kind: FaultKind | None = None) -> list[Fault]:
        if account not in self.accounts:
            raise FaultError("account", f"no such account {account!r}")
        return self.faults.clear(account, kind)

    def drop_now(self, account: str) -> int:
        """Close every connection of an account; returns how many."""
        victims = [s for s in self.sessions if s.system_id == account and not s.closed.is_set()]
        for s in victims:
            s.abort()
        self.stats.drops += len(victims)
        return len(victims)

    async def _watch_drops(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            now = self.faults.clock()
            for s in list(self.sessions):
                if not s.bound:
                    continue
                fault = self.faults.active(s.system_id, FaultKind.drop)
                if fault is not None and fault.every_s is not None and now - s.bound_at >= fault.every_s:
                    self.stats.drops += 1
                    s.abort()

    def account_state(self, account: str) -> dict[str, object]:
        sessions = [s for s in self.sessions if s.system_id == account]
        now = self.faults.clock()
        return {
            "bound": sum(1 for s in sessions if s.bound),
            "queued": len(self._queues.get(account, ())),
            "faults": [f.to_dict(now) for f in self.faults.listing(account)],
            "submits": self.submits.summary(account),
        }

    # ---- submit_sm ----------------------------------------------------------------------------------
    async def _on_submit(self, s: _Session, pdu: Pdu) -> None:
        account = s.system_id
        record = self.submits.add(
            SubmitRecord(
                account=account,
                sequence_number=pdu.sequence_number,
                source=str(pdu.params.get("source_addr", "")),
                dest=str(pdu.params.get("destination_addr", "")),
                short_message=submit_text(pdu),
                data_coding=int(pdu.params.get("data_coding", 0) or 0),
                registered_delivery=int(pdu.params.get("registered_delivery", 0) or 0),
                received_at=time.monotonic(),
                outcome="error",
                status=None,
            )
        )
        if not s.bound or not s.can_transmit:
            await self._answer_submit(s, pdu, record, int(CommandStatus.ESME_RINVBNDSTS))
            return
        if self.faults.active(account, FaultKind.silent):
            record.outcome = "unanswered"
            return
        gate = self.faults.gate(account, "submit")
        if gate is not None and not gate.take(self.faults.clock()):
            await self._answer_submit(s, pdu, record, int(CommandStatus.ESME_RTHROTTLED))
            return
        errors = self.faults.active(account, FaultKind.submit_errors)
        if errors is not None and self.rng.random() < errors.ratio:
            await self._answer_submit(s, pdu, record, errors.status)
            return
        record.outcome = "accepted"
        record.message_id = format_message_id(next(self._mt_ids), self.message_id_format)
        submitted_wall = time.time()
        await self._answer_submit(s, pdu, record, int(CommandStatus.ESME_ROK))
        if digits(record.dest) in self.test_numbers:
            loss = self.faults.active(account, FaultKind.probe_loss)
            if loss is not None and self.rng.random() < loss.ratio:
                record.probe = "lost"
            else:
                record.probe = "pending"
                extra = self.faults.active(account, FaultKind.probe_latency)
                delay = self.probe_latency_s + (extra.latency_ms / 1000 if extra is not None else 0.0)
                params, tlvs = probe_deliver_sm(record, pdu)
                self._later(delay, functools.partial(self._loop_probe, record, params, tlvs))
        if self.receipts and record.registered_delivery & 0x01:
            record.receipt_queued = True
            params, tlvs = receipt_deliver_sm(record, submitted_wall)
            tag = f"receipt:{record.message_id}"
            receipt = functools.partial(self._push_extra, account, params, tlvs, tag)
            self._later(self.receipt_delay_s, receipt)

    async def _answer_submit(self, s: _Session, pdu: Pdu, record: SubmitRecord, status: int) -> None:
        record.status = status
        params: dict[str, int | str | bytes] = {"message_id": record.message_id}
        with contextlib.suppress(ConnectionError, OSError):
            await s.send(Pdu(CommandId.submit_sm_resp, status, pdu.sequence_number, params=params))

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_later(delay, action)

    def _loop_probe(
        self, record: SubmitRecord, params: dict[str, int | str | bytes], tlvs: list[Tlv]
    ) -> None:
        record.probe = "looped"
        record.looped_at = time.monotonic()
        self._push_extra(record.account, params, tlvs, f"probe:{record.message_id}")

    def _push_extra(
        self, account: str, params: dict[str, int | str | bytes], tlvs: list[Tlv], tag: str
    ) -> None:
        """Queue a deliver_sm the carrier makes itself (probe copy, receipt): not a customer SMS, so it is not
        counted among the accepted logical SMS, but it is retried like any other until acknowledged."""
        logical = LogicalSms(str(params["source_addr"]), str(params["destination_addr"]), "", 0, tag=tag)
        self._queues[account].append(Outgoing(dict(params), list(tlvs), logical, account, counted=False))
        self._queue_event.set()
