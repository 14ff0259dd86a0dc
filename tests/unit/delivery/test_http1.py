"""The webhook client (smsflow/delivery/http1.py) against real sockets answering like hostile or sloppy peers.

Each server here is a local asyncio server that reads whole requests and answers with exactly the bytes a test
scripts, so what is checked is what goes over the wire: the request as written, kept-alive connections reused
only when that is safe, every bound (header section, body, decompression, time) and every failure kind.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import socket
import ssl
import threading
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from smsflow.delivery.egress import BlockedAddress, LookupResolver
from smsflow.delivery.http1 import (
    Disconnected,
    Http1Client,
    InvalidRequest,
    InvalidResponse,
    InvalidUrl,
    LookupShares,
    ResolveError,
    no_answer,
    target,
)

OK = b"HTTP/1.1 204 No Content\r\n\r\n"
CLOSE = b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"


def answer(status: bytes, *headers: bytes, body: bytes = b"", length: bool = True) -> bytes:
    lines = [status, *headers]
    if length:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class Peer:
    """A server on 127.0.0.1: ``script(request_index)`` gives the bytes to answer (None: answer nothing and
    keep the connection open; ``close`` after them when it returns a tuple (bytes, "close"))."""

    def __init__(self, script: Callable[[int], Any]) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook?x=1"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                out = self.script(len(self.requests) - 1)
                if out is None:
                    await asyncio.sleep(3600)
                close = isinstance(out, tuple)
                data = out[0] if close else out
                if callable(data):
                    await data(writer)
                else:
                    writer.write(data)
                    await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def peer() -> AsyncIterator[Callable[[Callable[[int], Any]], Any]]:
    peers: list[Peer] = []

    async def make(script: Callable[[int], Any]) -> tuple[Peer, str]:
        p = Peer(script)
        peers.append(p)
        return p, await p.start()

    yield make
    for p in peers:
        p.close()


@pytest.fixture
async def client() -> AsyncIterator[Http1Client]:
    c = Http1Client(ssl_context=ssl.create_default_context(), user_agent="smsflow/test")
    yield c
    await c.close()


async def post(client: Http1Client, url: str, *, max_body: int = 65536, timeout_s: float = 5, **headers: str):
    return await client.post(url, b'{"a":1}', headers, max_body=max_body, timeout_s=timeout_s)


async def test_the_request_on_the_wire(peer, client) -> None:
    p, url = await peer(lambda i: OK)
    resp = await post(
        client, url, **{"webhook-id": "msg_1", "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    )
    assert resp.status == 204 and resp.body == b"" and not resp.truncated and resp.read_error is None
    head, _, body = p.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /hook?x=1 HTTP/1.1"
    fields = {k.lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
    assert fields[b"host"] == url.split("/")[2].encode()
    assert fields[b"content-type"] == b"application/json" and fields[b"content-length"] == b"7"
    assert fields[b"user-agent"] == b"smsflow/test" and fields[b"webhook-id"] == b"msg_1"
    assert fields[b"traceparent"].startswith(b"00-aaaa")
    assert body == b'{"a":1}'


def test_urls_are_read_as_a_browser_would() -> None:
    t = target("https://user:p%40ss@例子.测试:8443/a b?q=1#frag")
    assert (t.tls, t.host, t.port) == (True, "xn--fsqu00a.xn--0zwm56d", 8443)
    head = t.head.decode()
    assert head.startswith("POST /a%20b?q=1 HTTP/1.1\r\nHost: xn--fsqu00a.xn--0zwm56d:8443\r\n")
    assert "Authorization: Basic " + base64.b64encode(b"user:p@ss").decode() in head
    assert target("http://example.com/").head.startswith(b"POST / HTTP/1.1\r\nHost: example.com\r\n")
    assert target("http://[::1]:8080").head.startswith(b"POST / HTTP/1.1\r\nHost: [::1]:8080\r\n")
    for bad in ("ftp://example.com/", "http:///nohost", "not a url", "http://example.com:99999/"):
        with pytest.raises(InvalidUrl):
            target(bad)


async def test_a_line_break_in_a_header_value_is_refused_not_sent(peer, client) -> None:
    p, url = await peer(lambda i: OK)
    with pytest.raises(InvalidRequest):
        await post(client, url, **{"tracestate": "a=b\r\nX-Injected: 1"})
    assert p.requests == []


async def test_kept_alive_connection_is_reused_and_a_closing_answer_is_not(peer, client) -> None:
    p, url = await peer(
        lambda i: OK if i != 3 else (answer(b"HTTP/1.1 200 OK", b"Connection: close"), "close")
    )
    for _ in range(3):
        assert (await post(client, url)).status == 204
    assert p.connections == 1 and client.connections_made == 1
    assert (await post(client, url)).status == 200  # answered with Connection: close
    assert (await post(client, url)).status == 204
    assert p.connections == 2 and client.connections_made == 2


async def test_a_peer_that_closed_the_idle_connection_costs_no_attempt(peer, client) -> None:
    _, url = await peer(lambda i: (OK, "close"))  # answers, then closes without saying so
    assert (await post(client, url)).status == 204
    await asyncio.sleep(0.05)  # the close arrives while the connection is idle
    assert (await post(client, url)).status == 204
    assert client.connections_made == 2


async def test_informational_answers_are_skipped(peer, client) -> None:
    _, url = await peer(lambda i: b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n" + OK)
    assert (await post(client, url)).status == 204


async def test_endless_informational_answers_are_refused(peer, client) -> None:
    _, url = await peer(lambda i: b"HTTP/1.1 100 Continue\r\n\r\n" * 10_000)
    with pytest.raises(InvalidResponse, match="informational"):
        await post(client, url)


async def test_chunked_and_close_delimited_bodies(peer, client) -> None:
    chunked = b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    _, url = await peer(lambda i: chunked)
    resp = await post(client, url)
    assert (resp.status, resp.body, resp.read_error) == (500, b"hello world", None)
    eof = (answer(b"HTTP/1.0 200 OK", body=b"until the end", length=False), "close")
    _, url = await peer(lambda i: eof)
    resp = await post(client, url)
    assert (resp.status, resp.body, resp.read_error) == (200, b"until the end", None)


async def test_a_body_cut_short_keeps_the_status_with_a_read_error(peer, client) -> None:
    _, url = await peer(lambda i: (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "close"))
    resp = await post(client, url)
    assert resp.status == 200 and resp.body == b"short"
    assert resp.read_error is not None and "closed before the end of the body" in resp.read_error


async def test_a_stalled_body_keeps_the_status_when_time_is_up(peer, client) -> None:
    async def stall(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
        await writer.drain()
        await asyncio.sleep(3600)

    _, url = await peer(lambda i: stall)
    resp = await post(client, url, timeout_s=0.3)
    assert resp.status == 200 and resp.body == b"part"
    assert resp.read_error == "no complete response within 0.3s"
    assert client._idle_count == 0  # not kept: the rest of that body would be read as the next answer


async def test_no_answer_is_a_timeout(peer, client) -> None:
    _, url = await peer(lambda i: None)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(TimeoutError):
        await post(client, url, timeout_s=0.3)
    assert loop.time() - t0 < 2


async def test_the_body_kept_is_capped_and_the_connection_dropped(peer, client) -> None:
    _, url = await peer(lambda i: answer(b"HTTP/1.1 400 Bad", body=b"x" * 300_000))
    resp = await post(client, url, max_body=1000)
    assert resp.status == 400 and resp.body == b"x" * 1000 and resp.truncated
    assert (await post(client, url, max_body=1000)).truncated
    assert client.connections_made == 2


async def test_gzip_and_deflate_bodies_are_decoded(peer, client) -> None:
    text = b"accepted, thank you " * 10
    raw_deflate = zlib.compressobj(wbits=-15)
    encodings = [
        (b"gzip", gzip.compress(text)),
        (b"deflate", zlib.compress(text)),
        (b"deflate", raw_deflate.compress(text) + raw_deflate.flush()),
    ]
    _, url = await peer(
        lambda i: answer(b"HTTP/1.1 200 OK", b"Content-Encoding: " + encodings[i][0], body=encodings[i][1])
    )
    for _ in encodings:
        resp = await post(client, url)
        assert (resp.body, resp.read_error) == (text, None)


async def test_a_compression_bomb_inflates_no_further_than_the_cap(peer, client) -> None:
    bomb = gzip.compress(b"\0" * 50_000_000)  # ~50 KB on the wire
    _, url = await peer(lambda i: answer(b"HTTP/1.1 200 OK", b"Content-Encoding: gzip", body=bomb))
    resp = await post(client, url, max_body=4096)
    assert resp.status == 200 and len(resp.body) == 4096 and resp.truncated


async def test_an_undecodable_encoded_body_is_shown_as_sent_with_a_note(peer, client) -> None:
    _, url = await peer(lambda i: answer(b"HTTP/1.1 200 OK", b"Content-Encoding: gzip", body=b"not gzip"))
    resp = await post(client, url)
    assert resp.status == 200 and resp.body == b"not gzip"
    assert resp.read_error is not None and "could not be decoded" in resp.read_error


async def test_an_endless_header_section_is_cut_off(peer) -> None:
    async def endless(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(1000):
            writer.write(b"X-Pad: " + b"a" * 1000 + b"\r\n")
            await writer.drain()

    client = Http1Client(ssl_context=ssl.create_default_context(), max_header_bytes=16384)
    try:
        _, url = await peer(lambda i: endless)
        with pytest.raises(InvalidResponse, match="header section over 16384 bytes"):
            await post(client, url)
    finally:
        await client.close()


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 2000 Way Off\r\n\r\n",
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ],
)
async def test_malformed_answers_are_invalid_responses(peer, client, data: bytes) -> None:
    _, url = await peer(lambda i: (data, "close"))
    with pytest.raises(InvalidResponse):
        await post(client, url)


async def test_a_malformed_body_keeps_the_status_with_a_note(peer, client) -> None:
    _, url = await peer(lambda i: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n")
    resp = await post(client, url)
    assert resp.status == 200 and resp.body == b"ok"
    assert resp.read_error is not None and resp.read_error.startswith("malformed body:")
    assert client._idle_count == 0


async def test_a_kept_alive_connection_closed_as_it_is_reused_is_replaced_at_once(peer, client) -> None:
    p, url = await peer(
        lambda i: OK if i != 1 else (b"", "close")
    )  # the 2nd request: read, closed, no answer
    assert (await post(client, url)).status == 204
    assert (await post(client, url)).status == 204  # sent again on a new connection, within the same call
    assert p.connections == 2 and len(p.requests) == 3


async def test_a_new_connection_closed_without_an_answer_is_not_retried(peer, client) -> None:
    p, url = await peer(lambda i: (b"", "close"))
    with pytest.raises(Disconnected):
        await post(client, url)
    assert len(p.requests) == 1


async def test_a_peer_that_closes_without_answering(peer, client) -> None:
    _, url = await peer(lambda i: (b"", "close"))
    with pytest.raises(Disconnected):
        await post(client, url)


async def test_extra_bytes_after_an_answer_close_the_connection(peer, client) -> None:
    # an answer nobody asked for, whole or begun, in the same read as the real one or after it
    extras = [b"HTTP/1.1 200 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nConte"]
    _, url = await peer(lambda i: OK + extras[i] if i < len(extras) else OK)
    for made in range(1, len(extras) + 2):
        assert (await post(client, url)).status == 204
        assert client.connections_made == made
        await asyncio.sleep(0.05)


async def test_the_pool_limits_connections_in_use(peer) -> None:
    in_flight = 0
    most = 0

    async def slow(writer: asyncio.StreamWriter) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        writer.write(OK)
        await writer.drain()

    client = Http1Client(ssl_context=ssl.create_default_context(), limit=2)
    try:
        p, url = await peer(lambda i: slow)
        results = await asyncio.gather(*(post(client, url) for _ in range(8)))
        assert [r.status for r in results] == [204] * 8
        assert most == 2 and p.connections == 2
    finally:
        await client.close()


async def test_an_unresolvable_host_is_a_resolve_error(client) -> None:
    with pytest.raises(ResolveError, match=r"could not resolve no-such-host\.invalid"):
        await post(client, "http://no-such-host.invalid/hook")


async def test_a_peers_keep_alive_timeout_is_honoured_a_second_short(peer) -> None:
    now = [0.0]
    client = Http1Client(ssl_context=ssl.create_default_context(), clock=lambda: now[0])
    try:
        _, url = await peer(lambda i: answer(b"HTTP/1.1 204 No Content", b"Keep-Alive: timeout=5, max=100"))
        await post(client, url)
        now[0] += 3.9  # within 5 - 1 s: reused
        await post(client, url)
        assert client.connections_made == 1
        now[0] += 4.1  # past it: the peer may be closing it right now
        await post(client, url)
        assert client.connections_made == 2
    finally:
        await client.close()


class Names:
    """``getaddrinfo`` for the tests: a name in ``hang`` blocks until ``release`` (then fails), one in
    ``fail`` fails at once (no such name), one in ``servfail`` too (its name server failed), any other is
    127.0.0.1."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.hang: set[str] = set()
        self.fail: set[str] = set()
        self.servfail: set[str] = set()
        self.release = threading.Event()

    def __call__(self, host: str, port: int, family: int = 0, type: int = 0, flags: int = 0) -> list[Any]:
        self.calls[host] = self.calls.get(host, 0) + 1
        if host in self.hang:
            self.release.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host in self.fail:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if host in self.servfail:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]


def clocked(names: Names) -> tuple[list[float], Http1Client]:
    """A client resolving with ``names``, on a clock the test moves (``now[0]``)."""
    now = [0.0]
    client = Http1Client(
        ssl_context=ssl.create_default_context(),
        resolver=LookupResolver(getaddrinfo=names),
        clock=lambda: now[0],
    )
    return now, client


async def test_a_name_server_that_never_answers_holds_up_no_one_else(peer) -> None:
    """A customer's webhook host whose name server never answers: its lookups held threads of the event
    loop's default executor (6 on 2 cores) for the system resolver's whole timeout, one per attempt, and the
    worker flushes its Kafka producers before every commit in that executor too. Now: one lookup per name
    at a time, in the resolver's own threads; other names, the loop's executor and a name looked up before
    all go on."""
    names = Names()
    now = [0.0]
    client = Http1Client(
        ssl_context=ssl.create_default_context(),
        resolver=LookupResolver(threads=4, getaddrinfo=names),
        clock=lambda: now[0],
    )
    try:
        p, url = await peer(lambda i: OK)
        port = url.split(":")[2].split("/")[0]
        honest = f"http://honest.example:{port}/hook"
        assert (await post(client, honest)).status == 204  # resolved once, before the trouble
        names.hang = {f"slow{i}.example" for i in range(8)}
        attempts = [post(client, f"http://slow{i % 8}.example:{port}/hook", timeout_s=0.3) for i in range(80)]
        answers = await asyncio.gather(*attempts, return_exceptions=True)
        assert all(isinstance(a, TimeoutError) for a in answers)
        # 80 attempts, 8 names: 4 lookups hold the resolver's 4 threads, 4 wait for one; none twice
        assert sum(names.calls.get(f"slow{i}.example", 0) for i in range(8)) <= 8
        assert all(names.calls.get(f"slow{i}.example", 0) <= 1 for i in range(8))
        # the loop's own executor is free (Kafka flushes, other lookups of the process)
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 1), 1) == 1
        # a name looked up before is used while it is looked up again behind the hanging ones
        now[0] += 60  # past its 10 s: due for a lookup, which has to wait for a thread
        assert (await post(client, honest, timeout_s=2)).status == 204
        assert names.calls["honest.example"] == 1  # the new lookup is queued, not done
        assert p.requests and len(p.requests) == 2
    finally:
        names.release.set()
        await client.close()


class HangingNames:
    """A client on a resolver of ``threads`` whose names are ``Names``; ``hang(party, names)`` sends one
    attempt per name (each gives up after 0.3 s; its lookup goes on) and waits until ``started`` lookups
    are running (threads: on a busy machine they may start late)."""

    def __init__(self, threads: int) -> None:
        self.names = Names()
        self.client = Http1Client(
            ssl_context=ssl.create_default_context(),
            resolver=LookupResolver(threads=threads, getaddrinfo=self.names),
        )
        self.port = ""

    async def send(self, host: str, party: str, timeout_s: float = 2) -> Any:
        url = f"http://{host}:{self.port}/h"
        return await self.client.post(url, b"{}", {}, max_body=1024, timeout_s=timeout_s, party=party)

    async def hang(self, by_party: dict[str, list[str]], started: int) -> None:
        self.names.hang = {h for hosts in by_party.values() for h in hosts}
        attempts = [self.send(h, p, 0.3) for p, hosts in by_party.items() for h in hosts]
        answers = await asyncio.gather(*attempts, return_exceptions=True)
        assert all(isinstance(a, TimeoutError) for a in answers)
        for _ in range(250):
            if sum(self.names.calls.values()) >= started:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)

    async def close(self) -> None:
        self.names.release.set()
        await self.client.close()


async def test_one_customers_hanging_names_hold_a_few_lookup_threads_only(peer) -> None:
    """Eight names of one customer whose name servers never answer take at most half the resolver's threads
    (6: 3; the other half is kept for customers with no lookup running); another customer's new name is
    looked up at once on a thread left free."""
    h = HangingNames(threads=6)
    try:
        _, url = await peer(lambda i: OK)
        h.port = url.split(":")[2].split("/")[0]
        await h.hang({"mallory": [f"slow{i}.example" for i in range(8)]}, started=3)
        assert sum(h.names.calls.values()) == 3  # the other five wait for mallory's own turn
        assert (await h.send("new.example", "alice")).status == 204
    finally:
        await h.close()


async def test_several_customers_hanging_names_leave_threads_for_everyone_else(peer) -> None:
    """Three customers with eight hanging names each, on a resolver of 8 threads: with a bound per customer
    alone (4) the first two took all eight and every other customer's new name waited for their name
    servers' timeouts. Now they hold 4 + 1 + 1 (a customer's second and later lookups only while more than
    half the threads are free; a first one on any free thread), and another customer's new name is looked
    up at once."""
    h = HangingNames(threads=8)
    try:
        _, url = await peer(lambda i: OK)
        h.port = url.split(":")[2].split("/")[0]
        parties = ["mallory", "trudy", "eve"]
        await h.hang({p: [f"slow{i}.{p}.example" for i in range(8)] for p in parties}, started=6)
        calls = h.names.calls
        by_party = {p: sum(n for host, n in calls.items() if host.endswith(f".{p}.example")) for p in parties}
        assert by_party == {"mallory": 4, "trudy": 1, "eve": 1}
        for i in range(2):  # two threads are left, and more customers' names still resolve at once
            assert (await h.send(f"new{i}.example", f"alice{i}")).status == 204
    finally:
        await h.close()


async def test_lookup_shares_bound_each_party_and_keep_a_reserve() -> None:
    shares = LookupShares(threads=8, per_party=4)  # reserve: half
    assert shares.reserve == 4
    held: list[Any] = []

    async def hold(party: str) -> None:
        cm = shares.share(party)
        await cm.__aenter__()
        held.append(cm)

    for _ in range(4):
        await hold("m")
    assert shares.running == 4 and not shares.may_start("m")  # its bound, and no more than 8 - 4 either
    await hold("t")  # a first lookup takes a reserved thread
    assert not shares.may_start("t")  # a second one does not: only 3 are free
    await hold("e")
    await hold("a")
    await hold("b")
    assert shares.running == 8 and not shares.may_start("c")  # full
    waiting = asyncio.ensure_future(hold("t"))
    await asyncio.sleep(0)
    assert not waiting.done()
    await held.pop().__aexit__(None, None, None)  # "b" ends: 1 free, not more than the reserve
    await asyncio.sleep(0)
    assert not waiting.done() and shares.may_start("c")  # another party's first still may
    for cm in (held.pop(), held.pop(), held.pop(3)):  # "a", "e" and one of "m"'s end too: 4 free
        await cm.__aexit__(None, None, None)
    await asyncio.sleep(0)
    assert not waiting.done()  # 4 free is not more than the reserve, and "t" has one running
    await held.pop(0).__aexit__(None, None, None)  # another of "m"'s: 5 free
    await asyncio.sleep(0)
    assert waiting.done() and shares.running == 4 and shares._by_party == {"m": 2, "t": 2}
    for cm in held:
        await cm.__aexit__(None, None, None)
    assert shares.running == 0 and not shares._by_party and not shares._waiting


async def test_lookup_shares_a_waiter_that_gives_up_leaves_nothing_behind() -> None:
    shares = LookupShares(threads=2, per_party=1, reserve=0)

    async def hold(party: str, gate: asyncio.Event) -> None:
        async with shares.share(party):
            await gate.wait()

    gate = asyncio.Event()
    first = asyncio.ensure_future(hold("m", gate))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(hold("m", gate))  # waits: "m" is at its bound
    third = asyncio.ensure_future(hold("m", gate))
    await asyncio.sleep(0)
    assert shares.running == 1 and len(shares._waiting) == 2
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)
    assert len(shares._waiting) == 1
    gate.set()
    await asyncio.gather(first, third)
    assert shares.running == 0 and not shares._by_party and not shares._waiting


async def test_a_failed_lookup_is_remembered_for_a_while() -> None:
    names = Names()
    names.fail = {"gone.example"}
    now = [0.0]
    client = Http1Client(
        ssl_context=ssl.create_default_context(),
        resolver=LookupResolver(getaddrinfo=names),
        clock=lambda: now[0],
    )
    try:
        for _ in range(5):  # every attempt, and every retry, of every message to it
            with pytest.raises(ResolveError, match=r"could not resolve gone\.example"):
                await post(client, "http://gone.example:8080/hook")
        assert names.calls["gone.example"] == 1
        now[0] += 11
        with pytest.raises(ResolveError):
            await post(client, "http://gone.example:8080/hook")
        assert names.calls["gone.example"] == 2
    finally:
        await client.close()


async def _looked_up(client: Http1Client) -> None:
    """Until no lookup is running (they run in threads: on a busy machine they may end late)."""
    for _ in range(500):
        if not client._lookups:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("a lookup did not end")


async def resolved_once(peer: Any, client: Http1Client, name: str) -> tuple[Any, str]:
    """A peer that closes each connection (so every attempt needs the name's addresses), and its url by
    ``name``, delivered to once."""
    p, url = await peer(lambda i: CLOSE)
    hook = f"http://{name}:{url.split(':')[2]}"
    assert (await post(client, hook)).status == 204
    return p, hook


async def test_a_name_server_that_fails_does_not_hold_an_endpoint_that_resolved_before(peer) -> None:
    """Serve-stale (RFC 8767) on a failed refresh: a name that resolved before is due for a new lookup and its
    name server fails (SERVFAIL, a timeout: EAI_AGAIN). Its last addresses keep serving for up to
    DNS_STALE_S past their 10 s; before, the failure was answered from memory for 10 s after every failed
    refresh, and every attempt to the endpoint in that time failed."""
    names = Names()
    now, client = clocked(names)
    try:
        p, hook = await resolved_once(peer, client, "flaky.example")
        names.servfail = {"flaky.example"}
        for _ in range(3):  # each refresh fails; every attempt between them is delivered all the same
            now[0] += 11
            for _ in range(3):
                assert (await post(client, hook)).status == 204
                await _looked_up(client)
        assert len(p.requests) == 10 and names.calls["flaky.example"] == 4
        now[0] += 300  # past DNS_STALE_S: nothing older is used
        with pytest.raises(ResolveError, match="Temporary failure"):
            await post(client, hook)
        names.servfail = set()
        now[0] += 11
        assert (await post(client, hook)).status == 204
    finally:
        await client.close()


async def test_a_name_that_is_gone_is_not_served_from_its_last_addresses(peer) -> None:
    """An answer that the name does not exist (NXDOMAIN: EAI_NONAME) is not a failure to get one: the name's
    cached addresses go with it, and attempts fail from then on, not every other 10 s."""
    names = Names()
    now, client = clocked(names)
    try:
        p, hook = await resolved_once(peer, client, "moved.example")
        names.fail = {"moved.example"}
        now[0] += 11
        assert (await post(client, hook)).status == 204  # served while the name is looked up again
        await _looked_up(client)
        for step in (0, 5, 6, 10):  # within the failure's 10 s, and past it (a new lookup, failing again)
            now[0] += step
            with pytest.raises(ResolveError, match="Name or service not known"):
                await post(client, hook)
        assert len(p.requests) == 2
    finally:
        await client.close()


def test_which_failed_lookups_got_no_answer() -> None:
    def failed(err: OSError) -> ResolveError:
        return ResolveError("x.example", err)

    assert no_answer(failed(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")))
    assert no_answer(failed(socket.gaierror(socket.EAI_FAIL, "Non-recoverable failure in name resolution")))
    assert no_answer(failed(TimeoutError()))
    assert not no_answer(failed(socket.gaierror(socket.EAI_NONAME, "Name or service not known")))
    assert not no_answer(failed(OSError("no address for x.example")))
    assert not no_answer(BlockedAddress("x.example", "10.0.0.1", "private"))
    assert not no_answer(failed(BlockedAddress("x.example", "10.0.0.1", "private")))


async def test_a_name_is_resolved_by_the_system_through_the_resolvers_own_threads(peer, client) -> None:
    """``LookupResolver`` against the real getaddrinfo (/etc/hosts): ``localhost`` may answer ::1 and
    127.0.0.1; the peer listens on the second, and the client connects to it."""
    _, url = await peer(lambda i: OK)
    port = url.split(":")[2].split("/")[0]
    assert (await post(client, f"http://localhost:{port}/hook")).status == 204
    resolver = LookupResolver()
    try:
        results = await resolver.resolve("localhost", int(port), socket.AF_UNSPEC)
    finally:
        await resolver.close()
    assert {r["host"] for r in results} & {"127.0.0.1", "::1"}
    assert all(r["port"] == int(port) and r["hostname"] == "localhost" for r in results)
