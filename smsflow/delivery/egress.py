"""SSRF guard: webhook URLs are chosen by customers, so they must not reach our own network.

Two checkpoints, both on the addresses aiohttp really uses:

* :class:`GuardedResolver` resolves a host name and refuses it if *any* resolved address is blocked (a mixed
  answer is how DNS-rebinding and "first public, then private" tricks are played);
* :func:`guarded_socket_factory` is handed to the connector and checks the exact socket address right before
  ``connect()`` — this also covers literal IPs (aiohttp does not resolve those) and what a DNS cache holds.

Because the connector connects only to what the resolver returned, and the socket factory sees the address
itself, there is no window between "check" and "connect" for a second DNS answer to slip into.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

# System lookups (getaddrinfo) at once, in threads of the resolver's own. A thread waiting on a name server
# costs little but its stack; half of them are kept for customers with no lookup running (LookupShares).
LOOKUP_THREADS = 32


class LookupResolver(AbstractResolver):
    """The system's resolver (``getaddrinfo``: /etc/hosts, search domains, whatever nsswitch says), in
    threads of its own.

    aiohttp's threaded resolver runs ``getaddrinfo`` in the event loop's default executor (6 threads on 2
    cores), which the worker also uses to flush Kafka producers before its commits. A customer's webhook
    host whose name server never answers holds a thread for the system resolver's whole timeout (10-30 s),
    so a few such hosts stalled everyone's commits and every other lookup. Here lookups wait for threads
    of their own only; ``Http1Client`` adds one lookup per name at a time, shares the threads between
    customers (``LookupShares``), remembers failures, and keeps using a name's last addresses while it looks
    the name up again."""

    def __init__(
        self, threads: int = LOOKUP_THREADS, getaddrinfo: Callable[..., Any] = socket.getaddrinfo
    ) -> None:
        self._getaddrinfo = getaddrinfo
        self.threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dns")

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        lookup = functools.partial(
            self._getaddrinfo, host, port, family=family, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG
        )
        infos = await loop.run_in_executor(self._pool, lookup)
        out: list[ResolveResult] = []
        for fam, _, proto, _, address in infos:
            if fam == socket.AF_INET6:
                if len(address) < 3:
                    continue  # IPv6 not supported by this Python build
                resolved, resolved_port = address[0], address[1]
                if address[3]:  # a link-local address keeps its scope ("fe80::1%eth0")
                    resolved, resolved_port_s = await loop.run_in_executor(
                        self._pool, socket.getnameinfo, address, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
                    )
                    resolved_port = int(resolved_port_s)
            elif fam == socket.AF_INET:
                resolved, resolved_port = address[0], address[1]
            else:
                continue
            out.append(
                ResolveResult(
                    hostname=host,
                    host=resolved,
                    port=resolved_port,
                    family=fam,
                    proto=proto,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            )
        return out

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


_REFUSED = "blocked by the egress policy"


class BlockedAddress(OSError):
    """Connecting to this address is refused by the egress policy."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(f"{host} -> {address} is {_REFUSED} ({reason})")
        self.host = host
        self.address = address
        self.reason = reason


def blocked_address(exc: BaseException) -> BlockedAddress | None:
    """The policy refusal ``exc`` is or was caused by, if any: the exception itself, one in its cause chain,
    or — several blocked addresses folded into one ``OSError`` by happy-eyeballs — one named in its text."""
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        if isinstance(cur, BlockedAddress):
            return cur
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    text = str(exc)
    if _REFUSED in text:
        return BlockedAddress("?", "?", text)
    return None


def _networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


@dataclass(frozen=True)
class AddressPolicy:
    """Which destination addresses webhooks may reach.

    By default only globally routable unicast addresses pass. ``allow`` lists networks to let through anyway
    (e.g. ``127.0.0.0/8`` for a local demo); ``deny`` adds networks to block (e.g. your own public ranges).
    """

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    _allow: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)
    _deny: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_allow", _networks(self.allow))
        object.__setattr__(self, "_deny", _networks(self.deny))

    def blocked_reason(self, address: str) -> str | None:
        """Why ``address`` may not be connected to, or None if it may."""
        try:
            ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return "not an IP address"
        # An IPv4 address wrapped in IPv6 is judged as the IPv4 address it reaches.
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            elif ip in _NAT64:
                ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if any(ip in net for net in self._allow if net.version == ip.version):
            return None
        if any(ip in net for net in self._deny if net.version == ip.version):
            return "denied network"
        if ip.is_loopback:
            return "loopback"
        if ip.is_link_local:
            return "link-local"
        if ip.is_multicast:
            return "multicast"
        if ip.is_unspecified:
            return "unspecified"
        if ip.is_private:
            return "private"
        if ip.is_reserved:
            return "reserved"
        if not ip.is_global:
            return "not globally routable"
        return None

    def check(self, host: str, address: str) -> None:
        reason = self.blocked_reason(address)
        if reason is not None:
            raise BlockedAddress(host, address, reason)


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` and refuses the whole answer if any address is blocked."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner

    @property
    def threads(self) -> int:
        """The inner resolver's lookups at once (``LookupResolver``'s threads)."""
        return int(getattr(self._inner, "threads", LOOKUP_THREADS))

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = LookupResolver()
        results = await self._inner.resolve(host, port, family)
        for r in results:
            self._policy.check(host, r["host"])
        return results

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def guarded_socket_factory(policy: AddressPolicy) -> Any:
    """A connector ``socket_factory`` that checks the address each socket is about to connect to."""

    def factory(addr_info: tuple[Any, ...]) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        policy.check(str(sockaddr[0]), str(sockaddr[0]))
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


def url_refusal(url: str, *, https_only: bool, policy: AddressPolicy | None) -> str | None:
    """Why a customer-given webhook URL is refused when it is given (a subscription's, an endpoint's, a
    message's callback_url), or None. Only what the URL itself shows is judged here: https when required, a
    localhost name, a literal blocked IP; a host name is checked on every connection by the resolver and the
    socket factory above (its DNS answer can change after this check). ``policy`` None accepts any host
    (``webhooks.block_private_addresses: false``, local runs and tests)."""
    parts = urlsplit(url)
    if https_only and parts.scheme != "https":
        return "must be https://"
    host = (parts.hostname or "").rstrip(".").lower()
    if policy is None or not host:
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return "localhost is not a reachable webhook host"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    reason = policy.blocked_reason(host)
    return None if reason is None else f"{host} is a {reason} address"
