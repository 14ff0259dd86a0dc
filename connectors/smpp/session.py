"""An SMPP 3.4 ESME session over asyncio: bind, enquire_link both ways, receive window, unbind, reconnect.

The session knows the protocol and nothing else. What to do with a ``deliver_sm``/``data_sm`` is the
``handler``'s job: it returns the command_status to answer with, and the session answers only after the
handler returns (the connector's handler returns after Kafka stored the PDU).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from connectors.smpp.pacing import Pacer
from smsflow.logsummary import SummarizedLog
from smsflow.smpp.constants import CommandId, CommandStatus
from smsflow.smpp.pdu import (
    FramingError,
    Pdu,
    PduError,
    PduReader,
    Tlv,
    decode_pdu,
    encode_pdu,
)

log = logging.getLogger(__name__)
_floods = SummarizedLog(log)  # per-record lines a flood would repeat (smsflow/logsummary.py)

SC_INTERFACE_VERSION = {"3.3": 0x33, "3.4": 0x34, "5.0": 0x50}
_MAX_SEQ = 0x7FFFFFFF


@dataclass(frozen=True)
class SessionSettings:
    host: str
    port: int
    system_id: str
    password: str
    system_type: str = ""
    bind: str = "transceiver"  # receiver | transceiver
    interface_version: str = "3.4"
    address_range: str = ""
    enquire_link_s: float = 30.0
    response_timeout_s: float = 10.0
    window: int = 32
    reconnect_initial_s: float = 1.0
    reconnect_max_s: float = 30.0
    # a session bound at least this long was healthy: the next attempt starts again from reconnect_initial_s
    healthy_after_s: float = 10.0
    # a command_length above this is a framing error: generic_nack, close, bind anew (never skip gigabytes)
    max_pdu_size: int = 64 * 1024
    # read at most this many deliver_sm/data_sm per second; TCP backpressure queues the rest at the SMSC
    max_messages_per_s: float | None = None
    name: str = "smpp"


@dataclass
class InboundPdu:
    """A request PDU from the SMSC that carries a message, with the exact bytes received."""

    pdu: Pdu
    raw: bytes
    session_id: str
    remote_addr: str
    received_at_ms: int


@dataclass
class RejectedPdu:
    """Bytes we could not accept, what we answered, and why."""

    raw: bytes
    status: int
    reason: str
    session_id: str
    remote_addr: str
    received_at_ms: int


MessageHandler = Callable[[InboundPdu], Awaitable[int]]
RejectHandler = Callable[[RejectedPdu], Awaitable[None]]


class SessionEvents(Protocol):
    """What the route's health is made of (docs/double-list.md); called on the event loop, must not block."""

    def bound(self, session: str) -> None: ...

    def lost(self, session: str, clean: bool, reason: str) -> None: ...

    def bind_failed(self, session: str, reason: str) -> None: ...

    def enquire_link_rtt(self, session: str, rtt_ms: float) -> None: ...


class BindError(RuntimeError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class SessionStats:
    binds: int = 0
    received: int = 0
    acked: int = 0
    temp_errors: int = 0
    rejected: int = 0
    enquire_links_sent: int = 0
    enquire_links_answered: int = 0
    reconnects: int = 0
    unbind_answered: int = 0
    state: str = "closed"
    last_error: str = ""
    by_status: dict[int, int] = field(default_factory=dict)


class EsmeSession:
    """One bind to one SMSC, kept up until ``stop()``."""

    def __init__(
        self,
        settings: SessionSettings,
        handler: MessageHandler,
        on_reject: RejectHandler | None = None,
        events: SessionEvents | None = None,
    ) -> None:
        self.s = settings
        self._events = events
        self._handler = handler
        self._on_reject = on_reject
        self._seq = 0
        self._pending: dict[int, asyncio.Future[Pdu]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._out: list[bytes] = []  # PDUs encoded in this loop iteration, written together (_queue)
        self._loop: asyncio.AbstractEventLoop | None = None  # the connection's loop, set with its writer
        self._window = asyncio.Semaphore(settings.window)
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._bound = asyncio.Event()
        self._last_rx = time.monotonic()
        self._idle = asyncio.Event()  # set while no connection is being served
        self._idle.set()
        self._stop_deadline = 0.0
        self._bound_since: float | None = None
        self._pacer = Pacer(settings.max_messages_per_s)
        self.stats = SessionStats()
        self.session_id = ""
        self.remote_addr = f"{settings.host}:{settings.port}"

    # ---- public -------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, bind and serve; reconnect with jittered exponential backoff until stopped.

        Every error ends the session, never the task: it is logged, recorded in ``stats.last_error``, and the
        next attempt follows the backoff. A session that stayed bound ``healthy_after_s`` resets the backoff,
        whether it ended by our stop, the SMSC's unbind or a dropped connection.
        """
        delay = self.s.reconnect_initial_s
        while not self._stopping.is_set():
            self._bound_since = None
            try:
                await self._connect_and_serve()
            except (TimeoutError, OSError, BindError, ConnectionError) as exc:
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: session ended: %s", self.s.name, self.stats.last_error)
            except Exception as exc:  # a bug or a bind we cannot encode: rebind later, never a dead task
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("%s: session failed: %s", self.s.name, self.stats.last_error)
            if self._events is not None:
                if self._bound_since is not None:
                    # our stop is a clean unbind; anything else (peer unbind, drop, dead link) is a failure
                    self._events.lost(self.s.name, self._stopping.is_set(), self.stats.last_error)
                elif not self._stopping.is_set():
                    self._events.bind_failed(self.s.name, self.stats.last_error)  # refused, or no connection
            self.stats.state = "closed"
            self._bound.clear()
            if (
                self._bound_since is not None
                and time.monotonic() - self._bound_since >= self.s.healthy_after_s
            ):
                delay = self.s.reconnect_initial_s
            if self._stopping.is_set():
                break
            sleep = delay * random.uniform(0.5, 1.0)
            self.stats.reconnects += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=sleep)
            delay = min(delay * 2, self.s.reconnect_max_s)

    async def wait_bound(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._bound.wait(), timeout)

    @property
    def bound(self) -> bool:
        return self._bound.is_set()

    async def stop(self, timeout: float = 5.0) -> None:
        """Finish in-flight messages (their responses go out), unbind, read the unbind_resp, close.

        Done in milliseconds when the SMSC answers; bounded by about ``timeout`` when it does not.
        """
        self._stop_deadline = time.monotonic() + timeout
        self._stopping.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout + 1.0)
        if not self._idle.is_set():
            log.warning("%s: session did not end within %.1f s of stop; closing it", self.s.name, timeout)
            await self._close()

    async def request(self, pdu: Pdu, timeout: float | None = None) -> Pdu:
        """Send a request PDU and wait for its response."""
        pdu.sequence_number = self._next_seq()
        fut: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self._pending[pdu.sequence_number] = fut
        try:
            await self._send(pdu)
            return await asyncio.wait_for(fut, timeout or self.s.response_timeout_s)
        finally:
            self._pending.pop(pdu.sequence_number, None)

    # ---- internals ----------------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq = self._seq % _MAX_SEQ + 1
        return self._seq

    async def _send(self, pdu: Pdu) -> None:
        data = encode_pdu(pdu)
        writer = self._writer
        if writer is None:
            raise ConnectionError("not connected")
        self._queue(writer, data)
        await writer.drain()

    def _queue(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Write ``data`` at the end of this loop iteration, with every other PDU encoded in it: one
        socket write for the responses that one batch of Kafka acknowledgements released (they resume
        together), instead of one each. Order is the order of the calls; ``drain`` still applies the
        transport's back-pressure (the window bounds what can be queued before it)."""
        out, loop = self._out, self._loop
        if loop is None:
            raise ConnectionError("not connected")
        out.append(data)
        if len(out) == 1:
            loop.call_soon(self._flush, writer, out)

    @staticmethod
    def _flush(writer: asyncio.StreamWriter, out: list[bytes]) -> None:
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        if not writer.is_closing():
            writer.write(data)

    async def _close(self) -> None:
        writer, self._writer = self._writer, None
        self._bound.clear()
        self._fail_pending("session closed")
        if writer is not None:
            self._flush(writer, self._out)  # what was answered goes out before the close
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    def _fail_pending(self, reason: str) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError(reason))

    async def _connect_and_serve(self) -> None:
        self._idle.clear()
        try:
            await self._serve()
        finally:
            self._idle.set()

    async def _serve(self) -> None:
        self.stats.state = "connecting"
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.s.host, self.s.port), self.s.response_timeout_s
        )
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._out = []  # this connection's own queue (a flush still due for the last one writes to that one)
        peer = writer.get_extra_info("peername")
        self.remote_addr = f"{peer[0]}:{peer[1]}" if peer else self.remote_addr
        sock = writer.get_extra_info("sockname")
        self.session_id = f"{self.s.name}@{sock[0]}:{sock[1]}" if sock else self.s.name
        read_task = asyncio.create_task(self._read_loop(reader), name=f"{self.s.name}-read")
        # a reader that ended answers nothing more: fail the requests waiting on it now, not at their timeout
        read_task.add_done_callback(lambda _t: self._fail_pending("connection lost"))
        try:
            await self._bind()
            self.stats.binds += 1
            self.stats.state = "bound"
            self._bound_since = time.monotonic()
            self._bound.set()
            if self._events is not None:
                self._events.bound(self.s.name)
            log.info("%s: bound as %s to %s", self.s.name, self.s.bind, self.remote_addr)
            keepalive = asyncio.create_task(self._keepalive(), name=f"{self.s.name}-enquire")
            stop_wait = asyncio.create_task(self._stopping.wait())
            try:
                done, _ = await asyncio.wait(
                    {read_task, keepalive, stop_wait}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                keepalive.cancel()
                stop_wait.cancel()
            for task in (read_task, keepalive):
                if task in done and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            if self._stopping.is_set():
                await self._unbind()
        finally:
            # in-flight handlers finish first (after a dead link their answers are lost; the SMSC retries)
            if self._inflight:
                await asyncio.wait(self._inflight, timeout=self._budget(self.s.response_timeout_s))
            await self._close()
            read_task.cancel()
            with contextlib.suppress(BaseException):
                await read_task

    def _budget(self, cap: float) -> float:
        """Seconds a step may still take: ``cap``, or what is left of the stop timeout when stopping."""
        if not self._stopping.is_set():
            return cap
        return max(0.0, min(cap, self._stop_deadline - time.monotonic()))

    async def _unbind(self) -> None:
        """Clean stop: let in-flight messages be answered, then unbind while the reader still reads."""
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=self._budget(self.s.response_timeout_s))
        try:
            await self.request(
                Pdu(CommandId.unbind), timeout=self._budget(self.s.response_timeout_s) or 0.001
            )
        except (TimeoutError, ConnectionError, OSError) as exc:
            log.info("%s: unbind not answered (%s); closing", self.s.name, type(exc).__name__)
        else:
            self.stats.unbind_answered += 1

    async def _bind(self) -> None:
        cmd = CommandId.bind_transceiver if self.s.bind == "transceiver" else CommandId.bind_receiver
        req = Pdu(
            cmd,
            params={
                "system_id": self.s.system_id,
                "password": self.s.password,
                "system_type": self.s.system_type,
                "interface_version": SC_INTERFACE_VERSION[self.s.interface_version],
                "addr_ton": 0,
                "addr_npi": 0,
                "address_range": self.s.address_range,
            },
        )
        resp = await self.request(req)
        if resp.command_status != CommandStatus.ESME_ROK:
            raise BindError(resp.command_status, f"bind refused with status 0x{resp.command_status:08X}")

    async def _keepalive(self) -> None:
        """enquire_link after ``enquire_link_s`` of silence; no answer in time = the link is dead."""
        while True:
            idle = time.monotonic() - self._last_rx
            if idle < self.s.enquire_link_s:
                await asyncio.sleep(self.s.enquire_link_s - idle)
                continue
            self.stats.enquire_links_sent += 1
            sent = time.monotonic()
            try:
                await self.request(Pdu(CommandId.enquire_link))
            except TimeoutError:
                raise ConnectionError("enquire_link not answered: link dead") from None
            self._last_rx = time.monotonic()
            if self._events is not None:
                self._events.enquire_link_rtt(self.s.name, (self._last_rx - sent) * 1000)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        framer = PduReader(self.s.max_pdu_size)
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError("connection closed by peer")
            self._last_rx = time.monotonic()
            try:
                frames = framer.feed(chunk)
            except FramingError as exc:
                for raw in exc.pdus:  # whole PDUs that came before the bad header
                    await self._dispatch(raw)
                await self._reject(chunk[:4096], exc)  # enough to diagnose; the rest is not PDUs
                # A command_length out of range means we no longer trust where PDUs start: skipping "its"
                # octets could swallow gigabytes of traffic while looking up. Start a fresh session instead.
                raise ConnectionError(f"unframeable data from SMSC: {exc.reason}") from None
            for raw in frames:
                await self._dispatch(raw)

    async def _dispatch(self, raw: bytes) -> None:
        try:
            pdu = decode_pdu(raw)
        except PduError as exc:
            await self._reject(raw, exc)
            return
        cid = pdu.command_id
        if pdu.is_response:
            fut = self._pending.get(pdu.sequence_number)
            if fut is not None and not fut.done():
                fut.set_result(pdu)
            elif cid == CommandId.generic_nack:
                _floods.log(
                    f"{self.s.name}: generic_nack for no request in flight",
                    logging.WARNING,
                    "%s: generic_nack 0x%08X for seq %d",
                    self.s.name,
                    pdu.command_status,
                    pdu.sequence_number,
                )
            return
        if cid == CommandId.enquire_link:
            self.stats.enquire_links_answered += 1
            await self._answer(pdu, CommandStatus.ESME_ROK)
        elif cid in (CommandId.deliver_sm, CommandId.data_sm):
            await self._pacer.wait()
            await self._window.acquire()  # at most `window` in flight; beyond that we stop reading
            task = asyncio.create_task(self._handle_message(pdu, raw))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        elif cid == CommandId.unbind:
            await self._answer(pdu, CommandStatus.ESME_ROK)
            raise ConnectionError("SMSC unbound")
        elif cid == CommandId.alert_notification:
            pass  # no response is defined for alert_notification
        else:
            await self._send(Pdu(CommandId.generic_nack, CommandStatus.ESME_RINVCMDID, pdu.sequence_number))

    async def _handle_message(self, pdu: Pdu, raw: bytes) -> None:
        self.stats.received += 1
        try:
            if not self._bound.is_set():
                # the SMSC may push right behind its bind_resp, before our bind coroutine has resumed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._bound.wait(), self.s.response_timeout_s)
            if not self._bound.is_set():
                status = int(CommandStatus.ESME_RINVBNDSTS)
            elif self._stopping.is_set():
                # arrived after stop(): not taken on now; the SMSC delivers it again on the next bind
                status = int(CommandStatus.ESME_RX_T_APPN)
            else:
                item = InboundPdu(pdu, raw, self.session_id, self.remote_addr, int(time.time() * 1000))
                try:
                    status = await self._handler(item)
                except Exception as exc:
                    _floods.log(
                        f"{self.s.name}: handler failures ({type(exc).__name__})",
                        logging.ERROR,
                        "%s: handler failed; answering a temporary error",
                        self.s.name,
                        exc_info=True,
                    )
                    status = int(CommandStatus.ESME_RX_T_APPN)
            if status == CommandStatus.ESME_ROK:
                self.stats.acked += 1
            elif status == CommandStatus.ESME_RX_T_APPN:
                self.stats.temp_errors += 1
            self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
            with contextlib.suppress(ConnectionError, OSError):
                await self._answer(pdu, status)
        finally:
            self._window.release()

    async def _answer(self, req: Pdu, status: int) -> None:
        params: dict[str, int | str | bytes] = {}
        if req.command_id in (CommandId.deliver_sm, CommandId.data_sm):
            params["message_id"] = ""
        await self._send(Pdu(req.command_id | 0x80000000, status, req.sequence_number, params=params))

    async def _reject(self, raw: bytes, exc: PduError) -> None:
        self.stats.rejected += 1
        # SMPP 3.4 §4.3: generic_nack for a bad header or unknown command; otherwise the request's own
        # response carrying the error; nothing for a broken response.
        answer = exc.reply()
        if answer is not None:
            with contextlib.suppress(ConnectionError, OSError):
                await self._send(answer)
        _floods.log(
            f"{self.s.name}: rejected PDUs (status 0x{exc.status:02X})",
            logging.WARNING,
            "%s: rejected PDU (status 0x%02X): %s",
            self.s.name,
            exc.status,
            exc.reason,
        )
        if self._on_reject is not None:
            await self._on_reject(
                RejectedPdu(
                    raw, exc.status, exc.reason, self.session_id, self.remote_addr, int(time.time() * 1000)
                )
            )


__all__ = ["BindError", "EsmeSession", "InboundPdu", "RejectedPdu", "SessionEvents", "SessionSettings", "Tlv"]
