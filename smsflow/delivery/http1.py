"""A lean HTTP/1.1 client for webhook POSTs: kept-alive connections per origin, responses parsed by llhttp.

aiohttp's ``ClientSession`` spent ~100 µs of CPU on the request/response machinery of each POST around
~45 µs of real work (building the request, the socket calls, parsing the answer) — about a fifth of the
worker's CPU per SMS (docs/BENCHMARKS.md, "the webhook POST without aiohttp's client"; ADR 0007 step 6). This
client does only what a webhook POST needs, with the same well-kept pieces aiohttp itself stands on:

- ``httptools`` (llhttp, the parser of Node.js and of aiohttp's C extension) reads the response;
- ``aiohappyeyeballs`` connects (RFC 8305), through the SSRF guard's socket factory, and aiohttp's resolvers
  (the guarded one by default, smsflow/delivery/egress.py) resolve: the address checks are the same as before;
- the event loop's own TLS (``create_connection(ssl=...)``), with the sender's verifying context.

What it keeps from the aiohttp set-up it replaces: one pool of at most ``limit`` connections in use across all
endpoints, idle connections kept ``keepalive_timeout_s``; redirects never followed (a 3xx is the answer);
no cookies, no proxy from the environment; ``Accept-Encoding: gzip, deflate`` and a bounded decompression of
the answer; credentials in the URL sent as Basic auth; informational (1xx) answers skipped. What it bounds:
the response's header section (``max_header_bytes``; a peer streaming headers forever is cut off), the body
kept (``max_body`` bytes, after decompression: a compression bomb inflates no further), the informational
answers skipped, and (``timeout_s`` of :meth:`Http1Client.post`) the time of the whole exchange. A connection
is reused only after a complete answer that allows it; a timeout, a cut-off or a parse error closes it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import ipaddress
import math
import re
import socket
import ssl
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import aiohappyeyeballs
import httptools
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from smsflow.delivery.egress import LOOKUP_THREADS, LookupResolver, blocked_address

DEFAULT_MAX_HEADER_BYTES = 64 * 1024
MAX_INFORMATIONAL = 8  # 1xx answers skipped before the real one; a peer sending more is refused
DNS_CACHE_S = 10.0
# Past DNS_CACHE_S a name's last addresses are used this much longer while it is looked up again in the
# background (serve-stale, RFC 8767): a name server slow to answer (or a lookup queue held up by another
# customer's) does not hold an endpoint that resolved before. Every address is checked again by the socket
# factory at connect time, as a fresh one is.
DNS_STALE_S = 300.0
DNS_FAILURE_CACHE_S = 10.0  # a lookup that failed is not tried again for this long: the failure is re-raised
# getaddrinfo's failures to get an answer (a name server that timed out, failed or refused; the system's own
# trouble), as against an answer that the name or its addresses do not exist: after one of these a name's last
# addresses keep serving (RFC 8767 serves stale data on a failed refresh, not past an NXDOMAIN)
_NO_ANSWER = frozenset(
    getattr(socket, name)
    for name in ("EAI_AGAIN", "EAI_FAIL", "EAI_SYSTEM", "EAI_MEMORY")
    if hasattr(socket, name)
)
# Lookups one party (a customer: ``post(..., party=owner)``) may have running at once: a customer with many
# host names whose name servers never answer holds at most this many of the resolver's threads.
LOOKUPS_PER_PARTY = 4
HAPPY_EYEBALLS_DELAY_S = 0.25

SocketFactory = Callable[[tuple[Any, ...]], socket.socket]


class LookupShares:
    """Who may start a name lookup now, on the resolver's ``threads``: at most ``per_party`` lookups of one
    party at once, and a party's second and later ones only while more than ``reserve`` threads are free.

    A lookup whose name server never answers holds its thread for the system resolver's whole timeout. With a
    per-party bound alone, ``threads / per_party`` customers with such names (4 with 16 threads) held every
    thread, and every other customer's new name waited for the first of them to time out. The last
    ``reserve`` threads go only to parties with no lookup running: hanging parties hold at most ``threads -
    reserve`` threads between them, or one each when there are more of them, so another customer's lookup
    starts at once until ``threads`` different parties hang at the same time. Waiting lookups start in the
    order they asked, each as soon as it may."""

    def __init__(self, threads: int, per_party: int, reserve: int | None = None) -> None:
        self.threads = max(1, threads)
        self.per_party = max(1, per_party)
        self.reserve = min(self.threads - 1, self.threads // 2 if reserve is None else max(0, reserve))
        self.running = 0
        self._by_party: dict[str | None, int] = {}
        self._waiting: deque[tuple[str | None, asyncio.Future[None]]] = deque()

    def may_start(self, party: str | None) -> bool:
        mine = self._by_party.get(party, 0)
        if mine >= self.per_party or self.running >= self.threads:
            return False
        return mine == 0 or self.threads - self.running > self.reserve

    @contextlib.asynccontextmanager
    async def share(self, party: str | None) -> Any:
        """Hold a share of the threads for ``party`` (waiting for one first if it may not start now)."""
        # No waiter may start now (each change starts the ones that may), so one that may starts at once.
        if self.may_start(party):
            self._start(party)
        else:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append((party, fut))
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._finish(party)  # started just as the caller gave up
                else:  # nobody else may start for its going: who may start depends on what runs
                    with contextlib.suppress(ValueError):
                        self._waiting.remove((party, fut))
                raise
        try:
            yield
        finally:
            self._finish(party)

    def _start(self, party: str | None) -> None:
        self.running += 1
        self._by_party[party] = self._by_party.get(party, 0) + 1

    def _finish(self, party: str | None) -> None:
        self.running -= 1
        left = self._by_party[party] - 1
        if left:
            self._by_party[party] = left
        else:
            del self._by_party[party]
        self._wake()

    def _wake(self) -> None:
        """Start every waiter that may start now, oldest first (one that may not is passed over: a party at
        its bound holds up only its own lookups)."""
        if not self._waiting:
            return
        kept: deque[tuple[str | None, asyncio.Future[None]]] = deque()
        while self._waiting:
            party, fut = self._waiting.popleft()
            if fut.done():
                continue
            if self.may_start(party):
                self._start(party)
                fut.set_result(None)
            else:
                kept.append((party, fut))
        self._waiting = kept


class HttpClientError(Exception):
    """Any failure of an exchange (the sender maps each kind to a delivery failure)."""


class InvalidUrl(HttpClientError, ValueError):
    pass


class InvalidRequest(HttpClientError, ValueError):
    """The request cannot be written (a header value with a line break)."""


class ResolveError(HttpClientError):
    def __init__(self, host: str, os_error: OSError) -> None:
        super().__init__(f"could not resolve {host}: {os_error}")
        self.host = host
        self.os_error = os_error


def no_answer(exc: BaseException) -> bool:
    """Whether a failed lookup got no answer (the name server timed out or failed), rather than the answer
    that the name has no address, or addresses the egress policy refuses."""
    if not isinstance(exc, ResolveError) or blocked_address(exc) is not None:
        return False
    err = exc.os_error
    return isinstance(err, TimeoutError) or (isinstance(err, socket.gaierror) and err.errno in _NO_ANSWER)


class ConnectError(HttpClientError):
    def __init__(self, host: str, port: int, os_error: OSError) -> None:
        super().__init__(f"could not connect to {host}:{port}: {os_error}")
        self.host = host
        self.port = port
        self.os_error = os_error


class TlsCertificateError(HttpClientError):
    def __init__(self, host: str, error: ssl.SSLCertVerificationError) -> None:
        detail = getattr(error, "verify_message", None) or str(error)
        super().__init__(f"TLS certificate verification failed for {host}: {detail}")
        self.host = host


class TlsError(HttpClientError):
    def __init__(self, host: str, error: ssl.SSLError) -> None:
        super().__init__(f"TLS handshake with {host} failed: {error}")
        self.host = host


class Disconnected(HttpClientError):
    """The peer closed the connection before its answer's header section was complete."""


class InvalidResponse(HttpClientError):
    """The peer's answer is not HTTP/1.x we can read (malformed, or a header section over the limit)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    truncated: bool  # more body arrived than was kept
    read_error: str | None  # the header section was read but the body could not be (it is what arrived)


@dataclass(frozen=True, slots=True)
class Target:
    """What a URL says about where and how to send: parsed once per URL (``target``)."""

    tls: bool
    host: str  # IDNA-encoded, no brackets
    port: int
    head: bytes  # "POST <path> HTTP/1.1\r\nHost: ...\r\n" (+ Authorization)

    @property
    def key(self) -> tuple[bool, str, int]:
        return (self.tls, self.host, self.port)


@lru_cache(maxsize=4096)
def target(url: str) -> Target:
    """Parse a webhook URL. Raises :class:`InvalidUrl`."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise InvalidUrl(f"{url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise InvalidUrl(f"{url!r}: the scheme must be http or https")
    host = parsed.raw_host
    if not host:
        raise InvalidUrl(f"{url!r}: no host")
    port = parsed.port
    if port is None or not 0 < port < 65536:
        raise InvalidUrl(f"{url!r}: bad port")
    path = parsed.raw_path_qs or "/"
    authority = parsed.host_port_subcomponent or host
    lines = [f"POST {path} HTTP/1.1", f"Host: {authority}"]
    if parsed.user is not None:  # as aiohttp did: URL credentials are Basic auth (latin-1, RFC 7617)
        pair = f"{parsed.user}:{parsed.password or ''}".encode("latin-1", "strict")
        lines.append("Authorization: Basic " + base64.b64encode(pair).decode("ascii"))
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in path + authority):
        raise InvalidUrl(f"{url!r}: characters a request line cannot carry")  # yarl encodes them: a guard
    encoded = ("\r\n".join(lines) + "\r\n").encode("ascii")
    return Target(parsed.scheme == "https", host.strip("[]"), port, encoded)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


_KEEP_ALIVE_TIMEOUT = re.compile(r"(?:^|[,;\s])timeout\s*=\s*(\d{1,9})", re.IGNORECASE)


def _keep_alive_limit(value: str, current: float) -> float:
    """The idle time after which a connection is no longer reused, from the peer's ``Keep-Alive: timeout=N``
    (seconds; RFC 2068 §19.7.1, sent by Node, Apache, nginx with ``keepalive_timeout`` set): a second short of
    it, so that a reuse does not race the peer's own close. Node says ``timeout=5`` by default."""
    match = _KEEP_ALIVE_TIMEOUT.search(value)
    if match is None:
        return current
    return min(current, max(0.0, int(match.group(1)) - 1.0))


def _addr_info(address: str, port: int, proto: int) -> tuple[Any, ...]:
    """What ``aiohappyeyeballs`` connects to; the family is the address's own (some resolvers echo the
    AF_UNSPEC they were asked with)."""
    if ":" in address:
        return (socket.AF_INET6, socket.SOCK_STREAM, proto or socket.IPPROTO_TCP, "", (address, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, proto or socket.IPPROTO_TCP, "", (address, port))


class _Body:
    """The body kept, at most ``cap`` bytes after decoding ``Content-Encoding`` gzip/deflate (bounded: the
    decompressor is never asked for more than the room left)."""

    __slots__ = ("_deflate_raw_tried", "_inflate", "cap", "chunks", "note", "size", "truncated")

    def __init__(self, cap: int, encoding: str | None) -> None:
        self.cap = cap
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False
        self.note: str | None = None
        self._deflate_raw_tried = encoding != "deflate"
        self._inflate: Any = None
        if encoding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._inflate = zlib.decompressobj(zlib.MAX_WBITS)

    def add(self, data: bytes) -> None:
        """Keep what fits; ``truncated`` once anything did not."""
        if self._inflate is not None:
            data = self._decode(data)
        room = self.cap - self.size
        if len(data) > room:
            data = data[:room]
            self.truncated = True
        if data:
            self.chunks.append(data)
            self.size += len(data)

    def _decode(self, data: bytes) -> bytes:
        room = self.cap - self.size
        try:
            out = self._inflate.decompress(data, room + 1)
        except zlib.error:
            if not self._deflate_raw_tried and self.size == 0:  # "deflate" sent as a raw stream (common)
                self._deflate_raw_tried = True
                self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                return self._decode(data)
            self.note = "response body: its Content-Encoding could not be decoded; shown as sent"
            self._inflate = None
            return data
        if self._inflate.unconsumed_tail:
            self.truncated = True
        return out

    def value(self) -> bytes:
        return b"".join(self.chunks)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one exchange at a time, the parser's callbacks on it."""

    def __init__(self, key: tuple[bool, str, int], max_header_bytes: int) -> None:
        self.key = key
        self.max_header_bytes = max_header_bytes
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self.idle_limit_s = math.inf  # how long it may stay idle and still be reused (the peer's Keep-Alive)
        self._waiter: asyncio.Future[Response] | None = None
        self._parser: Any = None
        self._reset(0)

    def _reset(self, max_body: int) -> None:
        self._max_body = max_body
        self._status = 0
        self._raw_headers: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._fed = 0
        self._headers_done = False
        self._delimited = False  # Content-Length or chunked: the end of the body is known without EOF
        self._body: _Body | None = None
        self._reusable = False
        self._complete = False  # the final answer is read
        self._extra = False  # and more came after it
        self._got_bytes = False  # anything came from the peer in this exchange
        self._informational = 0  # 1xx answers skipped so far

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._waiter is None or self._waiter.done():
            return
        if not self._headers_done:
            reason = f": {exc}" if exc else ""
            self._fail(Disconnected(f"the server closed the connection before answering{reason}"))
        elif self._delimited:
            self._finish(read_error="the connection closed before the end of the body")
        else:  # a body that ends with the connection (no Content-Length, not chunked)
            self._finish()

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            # nothing asked: a peer talking out of turn is not kept
            if self.transport is not None:
                self.transport.close()
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
            if not self._headers_done:
                # bytes read while the header section is still open (llhttp buffers an unfinished one)
                self._fed += len(data)
                if self._fed > self.max_header_bytes:
                    self._fail(InvalidResponse(f"response header section over {self.max_header_bytes} bytes"))
        except httptools.HttpParserUpgrade:
            self._finish()  # 101 Switching Protocols: an answer (not 2xx), and the connection is not reused
        except httptools.HttpParserError as exc:  # HttpParserCallbackError too: a callback refused
            cause = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else None
            if isinstance(cause, InvalidResponse):
                self._fail(cause)
            elif self._headers_done:  # the status was read: it stands, the body is what came (as a note)
                self._finish(read_error=f"malformed body: {cause or exc}")
                self.close()
            else:
                self._fail(InvalidResponse(f"malformed HTTP response: {cause or exc}"))

    def eof_received(self) -> bool:
        return False  # close; connection_lost completes or fails the exchange

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self._complete:  # bytes after the answer, read with it: a peer talking out of turn is not kept
            self._reusable = False
            self._extra = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > self.max_header_bytes:
            raise InvalidResponse(f"response header section over {self.max_header_bytes} bytes")
        # as aiohttp: undecodable octets survive as surrogates (safe_text shows them as escapes)
        key = name.decode("latin-1")
        text = value.decode("utf-8", "surrogateescape")
        self._raw_headers.append((key, text))
        lowered = key.lower()
        if lowered == "content-length" or (lowered == "transfer-encoding" and "chunked" in text.lower()):
            self._delimited = True

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        if 100 <= self._status < 200 and self._status != 101:
            return  # informational: the answer follows
        self._headers_done = True
        encoding = None
        for k, v in self._raw_headers:
            lowered = k.lower()
            if lowered == "content-encoding":
                encoding = v.strip().lower()
            elif lowered == "keep-alive":
                self.idle_limit_s = _keep_alive_limit(v, self.idle_limit_s)
        self._body = _Body(self._max_body, encoding)

    def on_body(self, data: bytes) -> None:
        body = self._body
        if body is None:
            return
        body.add(data)
        if body.truncated:
            self._finish()  # the rest is not read: the connection is closed, not reused

    def on_message_complete(self) -> None:
        if not self._headers_done:  # the end of a 1xx: start over for the real answer
            self._informational += 1
            if self._informational > MAX_INFORMATIONAL:  # a peer streaming 1xx answers at line rate
                raise InvalidResponse(f"more than {MAX_INFORMATIONAL} informational (1xx) answers")
            self._raw_headers = []
            self._header_bytes = 0
            self._fed = 0
            return
        if self._complete:
            return
        self._complete = True
        self._reusable = self._parser.should_keep_alive() and not self._extra
        self._finish()

    # the exchange
    async def exchange(self, request: bytes, max_body: int) -> Response:
        self._reset(max_body)
        if self.lost or self.transport is None or self.transport.is_closing():
            raise Disconnected("the server closed the kept-alive connection")
        loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        waiter = self._waiter = loop.create_future()
        self.transport.write(request)
        try:
            return await waiter
        finally:
            self._waiter = None

    @property
    def reusable(self) -> bool:
        transport = self.transport
        return self._reusable and not self.lost and transport is not None and not transport.is_closing()

    @property
    def got_bytes(self) -> bool:
        return self._got_bytes

    @property
    def headers_done(self) -> bool:
        return self._headers_done

    def partial(self, read_error: str) -> Response:
        """The answer so far (its header section is complete), after the body could not be read whole."""
        self._reusable = False
        return self._response(read_error)

    def _response(self, read_error: str | None) -> Response:
        body = self._body or _Body(0, None)
        if body.note and not read_error:
            read_error = body.note
        headers = CIMultiDictProxy(CIMultiDict(self._raw_headers))
        return Response(self._status, headers, body.value(), body.truncated, read_error)

    def _finish(self, read_error: str | None = None) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if read_error or (self._body is not None and self._body.truncated):
            self._reusable = False
        waiter.set_result(self._response(read_error))

    def _fail(self, exc: Exception) -> None:
        self._reusable = False
        if self.transport is not None:
            self.transport.close()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self._reusable = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class Http1Client:
    """POSTs over pooled HTTP/1.1 connections. Create and use it inside one running event loop."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        resolver: AbstractResolver | None = None,
        socket_factory: SocketFactory | None = None,
        limit: int = 1000,
        keepalive_timeout_s: float = 30.0,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        user_agent: str = "smsflow",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ssl = ssl_context
        self._resolver = resolver
        self._socket_factory = socket_factory
        self._limit = limit
        self._keepalive_s = keepalive_timeout_s
        self._max_header_bytes = max_header_bytes
        self._clock = clock
        if any(ord(c) < 0x20 or ord(c) > 0x7E for c in user_agent):
            raise ValueError("user_agent: printable ASCII only")
        self._common = (
            f"user-agent: {user_agent}\r\naccept-encoding: gzip, deflate\r\n"
            "content-type: application/json\r\n"
        ).encode("ascii")
        self._in_use = asyncio.Semaphore(limit)
        self._idle: dict[tuple[bool, str, int], list[_Connection]] = {}
        self._idle_count = 0
        self._busy: set[_Connection] = set()
        self._dns: dict[tuple[str, int], tuple[float, list[Any]]] = {}
        self._dns_failed: dict[tuple[str, int], tuple[float, Exception]] = {}
        self._lookups: dict[tuple[str, int], asyncio.Future[list[Any]]] = {}  # one per name at a time
        # the resolver's threads shared between customers (LookupShares); sized by the resolver's own pool
        self._shares = LookupShares(getattr(resolver, "threads", LOOKUP_THREADS), LOOKUPS_PER_PARTY)
        self._cleanup: asyncio.TimerHandle | None = None
        self.closed = False
        self.connections_made = 0  # how many connections were opened (tests read it)

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        max_body: int,
        timeout_s: float,
        party: str | None = None,
    ) -> Response:
        """POST ``body`` (JSON) with ``headers`` (besides Host, Content-Type, Content-Length, User-Agent,
        Accept-Encoding, which are the client's), all of it — waiting for a connection slot, resolving,
        connecting, the answer — within ``timeout_s``. Raises an :class:`HttpClientError`, or ``TimeoutError``
        when no answer's header section came in time; an answer whose body did not is returned with a
        ``read_error``. ``party``: whose request it is (the subscription's owner): a lookup of a name it
        starts counts against its ``LOOKUPS_PER_PARTY``."""
        if self.closed:
            raise RuntimeError("the HTTP client is closed")
        t = target(url)
        request = self._request(t, body, headers)
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(timeout_s), self._in_use:
                conn = self._take_idle(t.key)
                if conn is not None:
                    self._busy.add(conn)
                    try:
                        return self._after(conn, await conn.exchange(request, max_body))
                    except Disconnected:
                        # The peer closed the kept-alive connection as we reused it (its idle timeout ran
                        # out): nothing of an answer came, so once more, at once, on a new connection.
                        # It may have read the request: a receiver dedups by webhook-id (as for any retry).
                        if conn.got_bytes:
                            raise
                        conn.close()
                        self._busy.discard(conn)
                conn = await self._connect(t, party)
                self._busy.add(conn)
                response = await conn.exchange(request, max_body)
        except TimeoutError:
            if conn is None or not conn.headers_done:
                raise
            response = conn.partial(f"no complete response within {timeout_s:g}s")
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        finally:
            if conn is not None:
                self._busy.discard(conn)
        return self._after(conn, response)

    def _after(self, conn: _Connection, response: Response) -> Response:
        if conn.reusable and not self.closed:
            self._put_idle(conn)
        else:
            conn.close()
        return response

    def _request(self, t: Target, body: bytes, headers: Mapping[str, str]) -> bytes:
        parts = [t.head, self._common, b"content-length: %d\r\n" % len(body)]
        for name, value in headers.items():
            line = f"{name}: {value}\r\n"
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
                raise InvalidRequest(f"header {name!r}: a line break or colon in it")
            parts.append(line.encode("utf-8"))
        parts.append(b"\r\n")
        parts.append(body)
        return b"".join(parts)

    def _fresh(self, conn: _Connection, now: float) -> bool:
        """Still reusable: open, and idle less than our keep-alive and the peer's (``idle_limit_s``)."""
        return conn.reusable and now - conn.idle_since < min(self._keepalive_s, conn.idle_limit_s)

    def _take_idle(self, key: tuple[bool, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = self._clock()
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to have been closed by the peer
            self._idle_count -= 1
            if self._fresh(conn, now):
                return conn
            conn.close()
        return None

    def _put_idle(self, conn: _Connection) -> None:
        conn.idle_since = self._clock()
        self._idle.setdefault(conn.key, []).append(conn)
        self._idle_count += 1
        if self._idle_count > self._limit:  # bound the sockets kept open: drop the oldest idle one
            oldest_key = min(
                (k for k, v in self._idle.items() if v), key=lambda k: self._idle[k][0].idle_since
            )
            self._idle[oldest_key].pop(0).close()
            self._idle_count -= 1
        if self._cleanup is None:
            loop = asyncio.get_running_loop()
            self._cleanup = loop.call_later(self._keepalive_s, self._expire_idle)

    def _expire_idle(self) -> None:
        self._cleanup = None
        now = self._clock()
        for key, idle in list(self._idle.items()):
            keep = [c for c in idle if self._fresh(c, now)]
            for c in idle:
                if c not in keep:
                    c.close()
            self._idle_count -= len(idle) - len(keep)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle_count and not self.closed:
            self._cleanup = asyncio.get_running_loop().call_later(self._keepalive_s, self._expire_idle)

    async def _addr_infos(self, host: str, port: int, party: str | None = None) -> list[Any]:
        """The addresses to connect to: cached for ``DNS_CACHE_S``; then the cached ones while the name is
        looked up again, and after a lookup that got no answer (``no_answer``), up to ``DNS_STALE_S`` more;
        one lookup per name at a time, whoever asks; a failed lookup answered from memory for
        ``DNS_FAILURE_CACHE_S``, and one that says the name has no (allowed) address drops the cached ones."""
        if _is_ip(host):  # a literal address is not resolved; the socket factory checks it
            return [_addr_info(host, port, 0)]
        key = (host, port)
        now = self._clock()
        cached = self._dns.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        stale = cached[1] if cached is not None and now < cached[0] + DNS_STALE_S else None
        failed = self._dns_failed.get(key)
        if failed is not None and failed[0] > now:
            if stale is not None and no_answer(failed[1]):
                return stale  # the name server failed, not the name: its last addresses still serve
            raise failed[1].with_traceback(None)
        lookup = self._lookups.get(key)
        if lookup is None:
            lookup = self._lookups[key] = asyncio.ensure_future(self._look_up(host, port, party))
            lookup.add_done_callback(functools.partial(self._looked_up, key))
        if stale is not None:
            return stale  # the last addresses, while the name is looked up again
        # shielded: a request that gives up (its timeout) leaves the lookup to the others waiting for it
        return await asyncio.shield(lookup)

    async def _look_up(self, host: str, port: int, party: str | None) -> list[Any]:
        if self._resolver is None:
            self._resolver = LookupResolver()
        try:
            async with self._shares.share(party):
                results = await self._resolver.resolve(host, port, family=socket.AF_UNSPEC)
        except OSError as exc:
            if blocked_address(exc) is not None:  # the SSRF guard's refusal stays itself
                raise
            raise ResolveError(host, exc) from exc
        infos: list[Any] = []
        for r in results:
            infos.append(_addr_info(r["host"], r["port"], r["proto"]))
        if not infos:
            raise ResolveError(host, OSError(f"no address for {host}"))
        return infos

    def _looked_up(self, key: tuple[str, int], lookup: asyncio.Future[list[Any]]) -> None:
        self._lookups.pop(key, None)
        if lookup.cancelled():
            return
        exc = lookup.exception()  # retrieved here: a background refresh nobody awaits may fail
        now = self._clock()
        if exc is None:
            if len(self._dns) > 4096:
                self._dns.clear()
            self._dns[key] = (now + DNS_CACHE_S, lookup.result())
            self._dns_failed.pop(key, None)
        elif isinstance(exc, Exception):
            if len(self._dns_failed) > 4096:
                self._dns_failed.clear()
            self._dns_failed[key] = (now + DNS_FAILURE_CACHE_S, exc)
            if not no_answer(exc):  # the name is gone (or refused by the egress policy): so are its addresses
                self._dns.pop(key, None)

    async def _connect(self, t: Target, party: str | None = None) -> _Connection:
        infos = await self._addr_infos(t.host, t.port, party)
        loop = asyncio.get_running_loop()
        try:
            sock = await aiohappyeyeballs.start_connection(
                infos,
                happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S,
                interleave=1,
                socket_factory=self._socket_factory,
            )
        except OSError as exc:
            if blocked_address(exc) is not None:  # the SSRF guard's refusal stays itself
                raise
            raise ConnectError(t.host, t.port, exc) from exc
        key, limit = t.key, self._max_header_bytes
        try:
            _transport, conn = await loop.create_connection(
                lambda: _Connection(key, limit),
                sock=sock,
                ssl=self._ssl if t.tls else None,
                server_hostname=t.host if t.tls else None,
            )
        except ssl.SSLCertVerificationError as exc:
            raise TlsCertificateError(t.host, exc) from exc
        except ssl.SSLError as exc:
            raise TlsError(t.host, exc) from exc
        except OSError as exc:
            raise ConnectError(t.host, t.port, exc) from exc
        except BaseException:
            sock.close()
            raise
        self.connections_made += 1
        return conn

    async def close(self) -> None:
        """Close every connection (one in use fails its exchange) and the resolver."""
        self.closed = True
        if self._cleanup is not None:
            self._cleanup.cancel()
            self._cleanup = None
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        self._idle_count = 0
        for conn in list(self._busy):
            conn.close()
        for lookup in list(self._lookups.values()):
            lookup.cancel()
        if self._resolver is not None:
            with contextlib.suppress(Exception):
                await self._resolver.close()
