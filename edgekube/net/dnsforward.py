"""Forwarding the names the cluster does not own to the host's nameservers (CoreDNS's forward
plugin, as `forward . /etc/resolv.conf` in k3s's Corefile), behind the answer cache.

**Upstreams** come from the resolv.conf `_cogs/resolvconf.locate` picked (systemd-resolved's real
list rather than its stub), loopback addresses left out. The file is looked at again (a stat at
most once a second) and re-read when it changed: an edge device's DHCP lease moves its
nameservers, and nothing should need a restart for that. No usable upstream at all means every
forwarded name fails at once with SERVFAIL, never a wait.

**A question** goes to one upstream over UDP (EDNS, 1232 bytes: the DNS flag day's size, which
no path fragments), then over TCP to the same server when that answer is truncated, so the
cache holds whole answers and the server truncates for each client. Each UDP exchange uses a
socket of its own, connected to the server: a fresh random source port for each question (the
defence against spoofed answers), only that server's datagrams accepted, and an ICMP "port
unreachable" reported at once instead of waited out. Servers are tried in random order, those
that failed in the last few seconds last (CoreDNS's random policy with its health marks); an
answer of SERVFAIL or REFUSED tries the next server. Each server is tried at most twice, one
second per try, and two seconds in all: an unreachable upstream costs a client two seconds and a
SERVFAIL, not a hang; a refusing one costs nothing.

**Concurrent identical questions** share one exchange (one flight per cache key): a burst of pods
asking the same name sends one question upstream. Each flight is a named task owned here; the
server bounds how many run at once, so neither tasks nor the flight table grow without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
from dns.rdataclass import RdataClass
from dns.rdatatype import RdataType

from edgekube._cogs import resolvconf
from edgekube.net import dnscache

log = logging.getLogger(__name__)

UPSTREAM_PAYLOAD = 1232
ATTEMPT_SECONDS = 1.0
BUDGET_SECONDS = 2.0
TRIES_PER_SERVER = 2
DOWN_SECONDS = 5.0  # a server that failed goes to the back of the order this long
RECHECK_SECONDS = 1.0
_FAILOVER_RCODES = (dns.rcode.SERVFAIL, dns.rcode.REFUSED)


class Upstreams:
    """The nameservers of a resolv.conf, read again when the file changes."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._checked = float("-inf")
        self._stamp: tuple[int, int, int] | None = None
        self._servers: list[str] = []

    def servers(self) -> list[str]:
        now = self._clock()
        if now - self._checked >= RECHECK_SECONDS:
            self._checked = now
            self._refresh()
        return self._servers

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp == self._stamp and self._stamp is not None:
            return
        self._stamp = stamp
        conf = resolvconf.parse(resolvconf.read(self.path))
        servers = resolvconf.upstreams(conf)
        if servers != self._servers or stamp is None:
            if servers:
                log.info("cluster DNS forwards to %s (from %s)", ", ".join(servers), self.path)
            else:
                log.warning("cluster DNS has no upstream nameserver in %s (%s): names outside the cluster "
                            "answer SERVFAIL", self.path,
                            "no such file" if stamp is None else
                            f"nameservers: {', '.join(conf.nameservers) or 'none'}; loopback ones are not used")
        self._servers = servers


def _family(server: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(server).version == 6 else socket.AF_INET


class _Exchange(asyncio.DatagramProtocol):
    """One UDP question on a connected socket: the first datagram that answers it, or the
    error the socket reports (ICMP unreachable)."""

    def __init__(self, query: dns.message.Message, done: asyncio.Future[dns.message.Message]) -> None:
        self.query = query
        self.done = done

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.done.done():
            return
        try:
            reply = dns.message.from_wire(data, ignore_trailing=True)
        except Exception:  # any junk: not the answer, keep waiting (dnspython raises many kinds)
            return
        if self.query.is_response(reply):
            self.done.set_result(reply)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("the socket closed"))


class Forwarder:
    def __init__(self, upstreams: Upstreams, *, cache: dnscache.Cache, port: int = 53,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.upstreams = upstreams
        self.cache = cache
        self.port = port
        self._clock = clock
        self._flights: dict[dnscache.Key, asyncio.Task[bytes | None]] = {}
        self._down_until: dict[str, float] = {}
        self._complained: set[str] = set()
        self.queries = 0  # questions sent upstream
        self.failures = 0  # flights that got no answer at all

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    def cached(self, qname: dns.name.Name, qtype: RdataType, qclass: RdataClass, *, dnssec_ok: bool = False,
               checking_disabled: bool = False) -> dns.message.Message | None:
        """The cached answer (TTLs counted down), or None: no task, no wait."""
        key = dnscache.key_of(qname.to_text(), qtype, qclass, dnssec_ok=dnssec_ok, checking_disabled=checking_disabled)
        cached = self.cache.get(key)
        return dnscache.aged(*cached) if cached is not None else None

    async def resolve(self, qname: dns.name.Name, qtype: RdataType, qclass: RdataClass, *, dnssec_ok: bool = False,
                      checking_disabled: bool = False, cache_checked: bool = False) -> dns.message.Message | None:
        """The upstream's answer (from the cache when it is there, TTLs counted down), or None
        when no upstream answered. `cache_checked`: the caller just found it missing there."""
        key = dnscache.key_of(qname.to_text(), qtype, qclass, dnssec_ok=dnssec_ok, checking_disabled=checking_disabled)
        cached = None if cache_checked else self.cache.get(key)
        if cached is not None:
            return dnscache.aged(*cached)
        flight = self._flights.get(key)
        if flight is None:
            query = dns.message.make_query(qname, qtype, qclass, use_edns=0, payload=UPSTREAM_PAYLOAD,
                                           want_dnssec=dnssec_ok)
            if checking_disabled:
                query.flags |= dns.flags.CD
            flight = asyncio.get_running_loop().create_task(self._fly(key, query), name=f"dns/forward {qname}")
            self._flights[key] = flight
        # Shielded: a client that gives up must not cancel the flight others wait on.
        wire = await asyncio.shield(flight)
        return dns.message.from_wire(wire) if wire is not None else None

    async def _fly(self, key: dnscache.Key, query: dns.message.Message) -> bytes | None:
        try:
            reply = await self._ask_upstreams(query)
            if reply is None:
                self.failures += 1
                return None
            wire = reply.to_wire()
            self.cache.put(key, wire, dnscache.ttl_of(reply))
            return wire
        finally:
            self._flights.pop(key, None)

    def _order(self, servers: list[str]) -> list[str]:
        now = self._clock()
        healthy = [s for s in servers if self._down_until.get(s, 0.0) <= now]
        random.shuffle(healthy)
        return healthy + sorted((s for s in servers if s not in healthy), key=lambda s: self._down_until[s])

    async def _ask_upstreams(self, query: dns.message.Message) -> dns.message.Message | None:
        servers = self.upstreams.servers()
        if not servers:
            return None
        deadline = self._clock() + BUDGET_SECONDS
        fallback: dns.message.Message | None = None
        for server in self._order(servers) * TRIES_PER_SERVER:
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            try:
                reply = await self._exchange(server, query, seconds=min(remaining, ATTEMPT_SECONDS))
            except (OSError, EOFError, TimeoutError, dns.exception.DNSException) as exc:
                self._failed(server, exc)
                continue
            self._down_until.pop(server, None)
            self._complained.discard(server)
            if reply.rcode() in _FAILOVER_RCODES:
                fallback = fallback or reply
                continue
            return reply
        return fallback

    def _failed(self, server: str, exc: BaseException) -> None:
        self._down_until[server] = self._clock() + DOWN_SECONDS
        if server not in self._complained:  # once until it answers again: a dead upstream must not flood the log
            self._complained.add(server)
            log.warning("upstream nameserver %s did not answer: %s", server,
                        f"no answer in {ATTEMPT_SECONDS:.0f} s" if isinstance(exc, TimeoutError | dns.exception.Timeout)
                        else (str(exc) or type(exc).__name__))

    async def _exchange(self, server: str, query: dns.message.Message, *, seconds: float) -> dns.message.Message:
        self.queries += 1
        loop = asyncio.get_running_loop()
        done: asyncio.Future[dns.message.Message] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Exchange(query, done),
                                                           remote_addr=(server, self.port),
                                                           family=_family(server))
        started = self._clock()
        try:
            transport.sendto(query.to_wire())
            reply = await asyncio.wait_for(done, seconds)
        finally:
            transport.close()
            if not done.done():
                done.cancel()
            elif not done.cancelled():
                with contextlib.suppress(BaseException):
                    done.exception()  # retrieved: an error after the answer is nobody's concern
        if reply.flags & dns.flags.TC:
            left = max(0.1, seconds - (self._clock() - started))
            reply = await asyncio.wait_for(self._exchange_tcp(server, query), left)
        return reply

    async def _exchange_tcp(self, server: str, query: dns.message.Message) -> dns.message.Message:
        """The same question over TCP (RFC 7766: a two-byte length before each message), for an
        answer too large for UDP. Not dnspython's `asyncquery`: importing it loads its DNS over
        HTTPS stack (httpx and importlib.metadata where installed), megabytes an idle node keeps."""
        reader, writer = await asyncio.open_connection(server, self.port, family=_family(server))
        try:
            wire = query.to_wire()
            writer.write(len(wire).to_bytes(2, "big") + wire)
            await writer.drain()
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                reply = dns.message.from_wire(await reader.readexactly(size), ignore_trailing=True)
                if query.is_response(reply):
                    return reply
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        flights = list(self._flights.values())
        for flight in flights:
            flight.cancel()
        for flight in flights:
            with contextlib.suppress(BaseException):
                await flight
