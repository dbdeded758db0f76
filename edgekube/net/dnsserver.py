"""The cluster DNS server: UDP and TCP on one address, answering from the cluster's zone or
forwarding (CoreDNS's server with its kubernetes, forward, cache and prometheus plugins).

    informers (Services, EndpointSlices, Namespaces) --> dnszone.ClusterZone (indexes)
    query --> malformed? FORMERR / NOTIMP / dropped
          --> the cluster's zone or a known reverse name?  answered here, synchronously, no network
          --> anything else: dnsforward.Forwarder (cache, then the host's nameservers)

**Where it listens**: the address dns.py gives it. The sockets are bound with IP_FREEBIND, so
the server starts before that address exists (the pod network's bridge brings it) and receives
as soon as it does. Metrics for Prometheus are served on the same address, port 9153, as
CoreDNS's.

**Wire format** is dnspython's, both ways. Only a message dnspython refuses to read is looked at
by hand: its 12-byte header, to answer as miekg/dns (CoreDNS's server) does: a response, or
anything shorter than a header, is dropped; an opcode other than QUERY gets NOTIMP; a header
with other than one question (or more records than a query carries) gets FORMERR, as does a
body that does not parse; EDNS versions above 0 get BADVERS. Nothing a client sends can raise
out of the handler.

**Sizes.** A UDP answer fits the client's EDNS buffer (512 bytes without EDNS) or is truncated
with TC set, and the client asks again over TCP, where answers go up to 64 KiB. Answers carry an
OPT record when the query did (advertising 1232 bytes).

**Bounds.** Cluster answers are computed in the datagram callback, with no task and no buffer
per query. Forwarded questions run as named tasks owned here, at most `max_concurrent` at once;
more are answered REFUSED at once (CoreDNS forward's `max_concurrent`). Identical questions in
flight share one upstream exchange, and the answer cache is bounded in bytes. UDP answers the
kernel cannot take (more than 1 MiB queued) are dropped rather than buffered. TCP: at most
`max_tcp` connections (more are closed at once), 2 seconds to send a whole query, 8 seconds idle
between queries, 128 queries per connection (miekg's limits). So a flood costs CPU, never an
unbounded amount of memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import socket
import struct
from collections.abc import Callable, Coroutine
from typing import Any

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
from aiohttp import web

from edgekube.net import dnsforward, dnszone

log = logging.getLogger(__name__)

OUR_PAYLOAD = 1232
MAX_UDP_QUEUE = 1 << 20
TCP_READ_SECONDS = 2.0
TCP_IDLE_SECONDS = 8.0
TCP_WRITE_SECONDS = 10.0
TCP_MAX_QUERIES = 128
IP_FREEBIND = 15  # linux/in.h; the socket module of Python 3.11 does not name it
_HEADER = struct.Struct("!6H")
_QR, _OPCODE_SHIFT = 0x8000, 11


class _Answered:
    """The last cluster answers, as wire, by the exact bytes of their query after its ID (and
    the transport, which sets the size limit): a pod asks the same few names again and again
    (every lookup walks its search path), and the same bytes get the same answer until the zone
    changes. A hit costs a dict lookup instead of parsing and rendering; the ID is the one field
    that differs, and the answer's takes the query's. Bounded in bytes; emptied whenever the
    zone's generation moves. Forwarded names are never kept here (their TTLs run)."""

    MAX_BYTES = 1 << 20
    MAX_ANSWER = 4096  # larger answers (wide headless Services over TCP) are rendered each time

    def __init__(self) -> None:
        self._entries: collections.OrderedDict[tuple[bool, bytes], tuple[bytes, str]] = collections.OrderedDict()
        self._size = 0
        self.generation = -1

    def get(self, key: tuple[bool, bytes], generation: int) -> tuple[bytes, str] | None:
        if generation != self.generation:
            self._entries.clear()
            self._size = 0
            self.generation = generation
            return None
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
        return hit

    def put(self, key: tuple[bool, bytes], wire: bytes, rcode: str, generation: int) -> None:
        if generation != self.generation or len(wire) > self.MAX_ANSWER or key in self._entries:
            return
        self._entries[key] = (wire, rcode)
        self._size += len(key[1]) + len(wire)
        while self._size > self.MAX_BYTES:
            (_, query), (old, _) = self._entries.popitem(last=False)
            self._size -= len(query) + len(old)


@dataclasses.dataclass
class Metrics:
    requests: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)  # by proto
    responses: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)  # by rcode
    dropped: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)  # by reason


def bind_socket(address: str, port: int, kind: socket.SocketKind) -> socket.socket:
    """A socket bound to `address:port` even before the address exists on any interface."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        sock.bind((address, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (the selector loop's datagram transport does not subclass DatagramTransport in 3.11)
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.server.metrics.requests["udp"] += 1
        out = self.server.handle(data, tcp=False)
        if isinstance(out, bytes):
            self.send(out, addr)
        elif out is not None:
            self.server.spawn(self._later(out, addr), name="dns/udp query")

    async def _later(self, pending: Coroutine[Any, Any, bytes | None], addr: tuple[str | Any, int]) -> None:
        out = await pending
        if out is not None:
            self.send(out, addr)

    def send(self, wire: bytes, addr: tuple[str | Any, int]) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        # (the selector transport has the method; typeshed's DatagramTransport does not name it)
        queued: int = getattr(self.transport, "get_write_buffer_size", lambda: 0)()
        if queued > MAX_UDP_QUEUE:
            self.server.metrics.dropped["udp queue full"] += 1
            return
        self.transport.sendto(wire, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error for an answer sent earlier: the client is gone; nothing to do


class DnsServer:
    def __init__(self, zone: dnszone.ClusterZone, forwarder: dnsforward.Forwarder, *, address: str, port: int = 53,
                 metrics_port: int = 9153, max_concurrent: int = 1000, max_tcp: int = 256,
                 synced: Callable[[], bool] = lambda: True) -> None:
        self.zone = zone
        self.forwarder = forwarder
        self.address = address
        self.port = port
        self.metrics_port = metrics_port
        self.max_concurrent = max_concurrent
        self.max_tcp = max_tcp
        self._synced = synced
        self.metrics = Metrics()
        self._answered = _Answered()
        self._pending = 0  # forwarded questions being answered
        self._tasks: set[asyncio.Task[None]] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._metrics_runner: web.AppRunner | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind UDP, TCP and the metrics port; an OSError says which could not be bound."""
        loop = asyncio.get_running_loop()
        try:
            udp = bind_socket(self.address, self.port, socket.SOCK_DGRAM)
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=udp)
            if self.port == 0:  # tests: the kernel chose; TCP takes the same number
                self.port = udp.getsockname()[1]
            tcp = bind_socket(self.address, self.port, socket.SOCK_STREAM)
            self._tcp = await asyncio.start_server(self._tcp_client, sock=tcp)
            if self.metrics_port:
                app = web.Application()
                app.router.add_get("/metrics", self._serve_metrics)
                self._metrics_runner = web.AppRunner(app, access_log=None)
                await self._metrics_runner.setup()
                msock = bind_socket(self.address, self.metrics_port, socket.SOCK_STREAM)
                await web.SockSite(self._metrics_runner, msock).start()
        except OSError as exc:
            await self.close()
            raise OSError(exc.errno, f"cluster DNS cannot listen on {self.address} (ports {self.port} and "
                                     f"{self.metrics_port}): {exc.strerror or exc}; another DNS server there? "
                                     "Set dns.listen-address / dns.port, or run with --disable dns") from exc
        log.info("cluster DNS listening on %s port %d (UDP and TCP)", self.address, self.port)

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._tcp_writers):
                writer.close()
            await self._tcp.wait_closed()
            self._tcp = None
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
            self._metrics_runner = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self.forwarder.close()

    # --- one message ---------------------------------------------------------------------------------

    def handle(self, data: bytes, *, tcp: bool) -> bytes | Coroutine[Any, Any, bytes | None] | None:
        """The answer's wire, a coroutine that makes it (forwarded names), or None (dropped)."""
        try:
            return self._handle(data, tcp=tcp)
        except Exception:  # a bug must cost one answer, never the server
            log.exception("cluster DNS failed to answer a %d-byte query", len(data))
            self.metrics.dropped["internal error"] += 1
            return None

    def _handle(self, data: bytes, *, tcp: bool) -> bytes | Coroutine[Any, Any, bytes | None] | None:
        if len(data) < _HEADER.size:
            self.metrics.dropped["short"] += 1
            return None
        if not self.zone.synced and self._synced():
            self.zone.synced = True
        key = (tcp, data[2:])
        hit = self._answered.get(key, self.zone.generation)
        if hit is not None:
            wire, rcode = hit
            self.metrics.responses[rcode] += 1
            return data[:2] + wire[2:]
        qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
        if flags & _QR:
            self.metrics.dropped["response"] += 1
            return None
        opcode = (flags >> _OPCODE_SHIFT) & 0xF
        if opcode != dns.opcode.QUERY:
            return self._header_reply(qid, flags, dns.rcode.NOTIMP)
        if qdcount != 1 or ancount > 1 or nscount > 1 or arcount > 2:
            return self._header_reply(qid, flags, dns.rcode.FORMERR)
        try:
            query = dns.message.from_wire(data)
        except Exception:  # dnspython raises a dozen kinds for a dozen defects: all are FORMERR
            return self._header_reply(qid, flags, dns.rcode.FORMERR)
        if query.edns > 0:
            response = dns.message.make_response(query, our_payload=OUR_PAYLOAD)
            response.use_edns(0, 0, OUR_PAYLOAD)
            response.set_rcode(dns.rcode.BADVERS)
            return self._wire(query, response, tcp=tcp)
        question = query.question[0]
        answer = self.zone.answer(question.name, question.rdtype, question.rdclass)
        if answer is not None and answer.chase is None:
            response = self._zone_response(query, answer)
            wire = self._wire(query, response, tcp=tcp)
            self._answered.put(key, wire, dns.rcode.to_text(response.rcode()), self.zone.generation)
            return wire
        if answer is None:  # a forwarded name already in the cache: answered here, no task
            cached = self.forwarder.cached(question.name, question.rdtype, question.rdclass,
                                           dnssec_ok=bool(query.ednsflags & dns.flags.DO),
                                           checking_disabled=bool(query.flags & dns.flags.CD))
            if cached is not None:
                return self._wire(query, self._relay(query, cached), tcp=tcp)
        if self._pending >= self.max_concurrent:
            self.metrics.dropped["over max-concurrent"] += 1
            return self._wire(query, self._refused(query), tcp=tcp)
        self._pending += 1
        return self._resolve(query, answer, tcp=tcp)

    async def _resolve(self, query: dns.message.Message, answer: dnszone.Answer | None, *, tcp: bool) -> bytes | None:
        try:
            question = query.question[0]
            do = bool(query.ednsflags & dns.flags.DO)
            cd = bool(query.flags & dns.flags.CD)
            if answer is not None and answer.chase is not None:
                # An ExternalName's outside target: its records follow the CNAME.
                target, rdtype = answer.chase
                chased = await self.forwarder.resolve(target, rdtype, dns.rdataclass.IN, dnssec_ok=do,
                                                      checking_disabled=cd)
                response = self._zone_response(query, answer)
                if chased is not None:
                    response.answer += chased.answer
                    if chased.flags & dns.flags.TC:
                        response.flags |= dns.flags.TC
                return self._wire(query, response, tcp=tcp)
            upstream = await self.forwarder.resolve(question.name, question.rdtype, question.rdclass,
                                                    dnssec_ok=do, checking_disabled=cd, cache_checked=True)
            return self._wire(query, self._relay(query, upstream), tcp=tcp)
        except Exception:
            log.exception("cluster DNS failed to forward %s", query.question[0] if query.question else "a query")
            response = dns.message.make_response(query, our_payload=OUR_PAYLOAD)
            response.set_rcode(dns.rcode.SERVFAIL)
            return self._wire(query, response, tcp=tcp)
        finally:
            self._pending -= 1

    def _zone_response(self, query: dns.message.Message, answer: dnszone.Answer) -> dns.message.Message:
        response = dns.message.make_response(query, our_payload=OUR_PAYLOAD)
        if answer.authoritative:
            response.flags |= dns.flags.AA
        response.set_rcode(answer.rcode)
        response.answer = list(answer.answer)
        response.authority = list(answer.authority)
        response.additional = list(answer.additional)
        return response

    def _relay(self, query: dns.message.Message, upstream: dns.message.Message | None) -> dns.message.Message:
        """The upstream's answer under the client's question (its spelling, its ID), with RA, and
        AD only for a client that asked for DNSSEC data (RFC 6840); SERVFAIL when none came."""
        response = dns.message.make_response(query, our_payload=OUR_PAYLOAD)
        if upstream is None:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        response.flags |= upstream.flags & dns.flags.RA
        if query.flags & dns.flags.AD or query.ednsflags & dns.flags.DO:
            response.flags |= upstream.flags & dns.flags.AD
        response.flags |= query.flags & dns.flags.CD
        if query.edns >= 0:
            response.ednsflags |= query.ednsflags & dns.flags.DO
        response.set_rcode(upstream.rcode())
        response.answer = upstream.answer
        response.authority = upstream.authority
        response.additional = upstream.additional
        return response

    def _refused(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query, our_payload=OUR_PAYLOAD)
        response.set_rcode(dns.rcode.REFUSED)
        return response

    def _wire(self, query: dns.message.Message, response: dns.message.Message, *, tcp: bool) -> bytes:
        if query.edns >= 0:
            response.ednsflags |= query.ednsflags & dns.flags.DO
        limit = 65535 if tcp else (max(512, query.payload) if query.edns >= 0 else 512)
        self.metrics.responses[dns.rcode.to_text(response.rcode())] += 1
        return response.to_wire(max_size=limit, prefer_truncation=True)

    def _header_reply(self, qid: int, flags: int, rcode: dns.rcode.Rcode) -> bytes:
        """An answer of a header only, for a query dnspython could not (or need not) read."""
        reply = dns.message.Message(id=qid)
        reply.flags = _QR | (flags & (0xF << _OPCODE_SHIFT)) | (flags & dns.flags.RD)
        reply.set_rcode(rcode)
        self.metrics.responses[dns.rcode.to_text(rcode)] += 1
        return reply.to_wire()

    # --- TCP -----------------------------------------------------------------------------------------------

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            task.set_name("dns/tcp client")
        if len(self._tcp_writers) >= self.max_tcp:
            self.metrics.dropped["over max tcp connections"] += 1
            writer.close()
            return
        self._tcp_writers.add(writer)
        try:
            for n in range(TCP_MAX_QUERIES):
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_SECONDS if n else TCP_READ_SECONDS)
                data = await asyncio.wait_for(reader.readexactly(int.from_bytes(head, "big")), TCP_READ_SECONDS)
                self.metrics.requests["tcp"] += 1
                out = self.handle(data, tcp=True)
                if out is not None and not isinstance(out, bytes):
                    out = await out
                if out is None:
                    continue
                writer.write(len(out).to_bytes(2, "big") + out)
                await asyncio.wait_for(writer.drain(), TCP_WRITE_SECONDS)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass  # the client closed, stalled or went away: the connection ends
        finally:
            self._tcp_writers.discard(writer)
            writer.close()

    # --- metrics -----------------------------------------------------------------------------------------

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.render_metrics(), content_type="text/plain")

    def render_metrics(self) -> str:
        """Prometheus text, under CoreDNS's names where the meaning is the same."""
        m, cache = self.metrics, self.forwarder.cache
        out = ["# TYPE coredns_dns_requests_total counter"]
        out += [f'coredns_dns_requests_total{{proto="{p}"}} {n}' for p, n in sorted(m.requests.items())]
        out.append("# TYPE coredns_dns_responses_total counter")
        out += [f'coredns_dns_responses_total{{rcode="{r}"}} {n}' for r, n in sorted(m.responses.items())]
        out += ["# TYPE coredns_cache_entries gauge", f"coredns_cache_entries {len(cache)}",
                "# TYPE coredns_cache_hits_total counter", f"coredns_cache_hits_total {cache.hits}",
                "# TYPE coredns_cache_misses_total counter", f"coredns_cache_misses_total {cache.misses}",
                "# TYPE coredns_forward_requests_total counter",
                f"coredns_forward_requests_total {self.forwarder.queries}",
                "# TYPE edgekube_dns_forward_failures_total counter",
                f"edgekube_dns_forward_failures_total {self.forwarder.failures}",
                "# TYPE edgekube_dns_dropped_total counter"]
        out += [f'edgekube_dns_dropped_total{{reason="{r}"}} {n}' for r, n in sorted(m.dropped.items())]
        return "\n".join(out) + "\n"
