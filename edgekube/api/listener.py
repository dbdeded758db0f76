"""Accepting the API's TLS connections: a cap on them, deadlines for slow and idle clients, and
memory given back when they close.

A client that connects and then does nothing, or sends its request a byte at a time, must not
hold the server's memory or a connection slot for long. The limits follow Go's net/http server as
kube-apiserver configures it, plus a cap kube-apiserver leaves to the kernel:

- **TLS handshake** (`tls-handshake-timeout-seconds`): a connection that has not finished its
  handshake by then is aborted. The same bound applies to the closing handshake (close_notify) of
  a connection the server closes, once its last answer is sent, so a peer that never answers it
  cannot keep the slot either.
- **Request head** (`request-header-timeout-seconds`, upstream's ReadHeaderTimeout): the request
  line and every header must have arrived within this many seconds of the head's first byte, or
  of the handshake for a connection's first request. The deadline is for the whole head, not per
  line: a client sending one header line every few seconds (slowloris) is cut off at the
  deadline however often it sends. (A head pipelined behind a request being served has only the
  idle deadline, counted from that request's response.)
- **Idle keep-alive** (`idle-timeout-seconds`, upstream's IdleTimeout): aiohttp's keep-alive
  timer closes a connection that has waited this long for its next request. A request being
  served is never idle: a watch or a log stream stays open as long as it runs. A connection
  closed while its client is still taking the last answer is closed behind that answer.
- **Request body** (`request-body-timeout-seconds`) is enforced where the body is read
  (`handlers`), since only the handler knows that it wants one.
- **A client that stops reading** (`send-stall-timeout-seconds`, as nginx's send_timeout): when
  what the server sends piles up unread (the transport asks to pause writing) and none of it is
  taken for this long, the connection is aborted. A watch or a followed log whose client stopped
  reading would otherwise hold its connection, and what piled up, for as long as it runs, and a
  large answer nobody reads would wait in memory. A client that takes anything, however slowly,
  restarts the count.
- **The cap** (`max-connections`): a connection accepted while that many are open is closed at
  once, before its TLS handshake costs anything; the client sees the connection reset and can
  retry. Connections already open, and the requests and watches on them, are untouched. Closing
  at once, rather than leaving new connections unaccepted in the kernel's backlog (Go's
  LimitListener), tells a client immediately instead of letting it hang until its own timeout.
  The cap is lowered, with a warning, to leave a quarter of the process's open-file limit to the
  rest of the server: past that limit the store, the kubelet's files and asyncio's own accept
  would fail instead (a shell's default of 1024; systemd's unit allows far more).

asyncio's TLS server protocol reads the socket through a 256 KiB buffer that every connection
allocates (and zero-fills) when it is accepted: 300 idle TLS connections cost 80 MiB. Connections
here read through one TLS record's worth (16 KiB): a body of a few MiB takes a few hundred reads
instead of a dozen. What connections used is freed when they close, but glibc keeps freed heap
pages (the whole 80 MiB stayed after the 300 closed): `memory.release_free_memory` gives them back
to the kernel 2 s after a close, so a burst of closes costs one malloc_trim (~2 ms after 300) and
steady churn at most one every 2 s (~0.3 ms when there is little to return).

Layering: `Site` (an aiohttp site, so `AppRunner.cleanup` stops it like a TCPSite) accepts plain
TCP through `loop.create_server`, and its protocol factory either refuses the connection or wraps
it in `_TLS`, asyncio's own TLS protocol with the smaller buffer, around `_Conn`, which forwards
to aiohttp's request handler and owns the head deadline (`_TLS` the send deadline).
`Connections.middleware` tells `_Conn` when a request is being served, so the head deadline only
runs while a head is awaited. `_TLS` leans on asyncio's SSLProtocol beyond its public face (the
constructor, `max_size`, `_check_shutdown_timeout`), the same in CPython 3.11 to 3.13;
tests/e2e/test_connections.py would notice a change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import resource
import ssl
from asyncio import sslproto
from collections.abc import Awaitable, Callable

from aiohttp import web, web_protocol

from edgekube._cogs import memory

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Freed connection memory is given back this long after a close (see the module's docstring).
_TRIM_DELAY = 2.0
# A refused connection is logged at most this often (each refusal is counted).
_REFUSAL_LOG_INTERVAL = 60.0


@dataclasses.dataclass(frozen=True)
class Limits:
    max_connections: int
    tls_handshake_timeout: int  # seconds; also bounds the closing TLS handshake
    request_header_timeout: int  # seconds for a whole request head
    send_stall_timeout: int  # seconds a client may leave what is sent to it unread


class _TLS(sslproto.SSLProtocol):
    """asyncio's server-side TLS protocol, reading through one TLS record's worth of buffer
    instead of 256 KiB, running the send deadline, and telling its `Connections` when the
    connection is gone.

    The send deadline runs while the socket's transport has asked to pause writing (more is
    buffered than the kernel takes): each time it fires, the buffer must have shrunk since the
    last time (the client took something), else the connection is aborted. Progress, not
    draining, is asked for, so a large answer to a slow but steady client is never cut. It is
    watched here, below TLS, because a one-shot answer is handed down whole and waits in the
    socket's transport: the levels above never pause for it. While paused, TLS adds nothing to
    that buffer, so it can only shrink.

    For the same reason the closing handshake's bound (asyncio's ssl_shutdown_timeout, here the
    handshake timeout) only counts once that buffer is empty: a connection closed after an answer
    (`Connection: close`, or idle while the client is still taking a large answer) would otherwise
    be aborted with the answer half sent, however steadily the client reads it."""

    max_size = 16 * 1024 + 256  # a TLS record's largest plaintext and its header

    def __init__(self, conn: _Conn, *, loop: asyncio.AbstractEventLoop, owner: Connections,
                 context: ssl.SSLContext, timeout: int) -> None:
        waiter: asyncio.Future[None] = loop.create_future()
        # Nobody awaits the handshake: its failures (a bad certificate, the timeout) are the
        # connection's own business, so the outcome is read here to keep asyncio from reporting
        # "exception never retrieved".
        waiter.add_done_callback(_consume)
        super().__init__(loop, conn, context, waiter, server_side=True, ssl_handshake_timeout=timeout,
                         ssl_shutdown_timeout=float(timeout))
        self._owner = owner
        self._raw: asyncio.BaseTransport | None = None
        self._stall: asyncio.TimerHandle | None = None
        self._unsent = 0  # the socket transport's buffer when the send deadline was last set

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = transport
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        _cancel(self._stall)
        self._stall = None
        self._raw = None
        try:
            super().connection_lost(exc)
        finally:
            self._owner.closed()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall is None:
            self._expect_progress()

    def resume_writing(self) -> None:
        _cancel(self._stall)
        self._stall = None
        super().resume_writing()

    def _check_shutdown_timeout(self) -> None:
        if isinstance(self._raw, asyncio.WriteTransport) and self._raw.get_write_buffer_size():
            # Still sending the answer: the send deadline stops a client that takes nothing.
            asyncio.get_running_loop().call_later(self._owner.limits.tls_handshake_timeout,
                                                  self._check_shutdown_timeout)
            return
        sslproto.SSLProtocol._check_shutdown_timeout(self)  # type: ignore[attr-defined]  # asyncio's, not in typeshed

    def _expect_progress(self) -> None:
        if isinstance(self._raw, asyncio.WriteTransport):
            self._unsent = self._raw.get_write_buffer_size()
            self._stall = asyncio.get_running_loop().call_later(self._owner.limits.send_stall_timeout, self._stalled)

    def _stalled(self) -> None:
        self._stall = None
        if not isinstance(self._raw, asyncio.WriteTransport):
            return
        if self._raw.get_write_buffer_size() < self._unsent:
            self._expect_progress()
            return
        log.debug("aborting a connection whose client took nothing for %ss", self._owner.limits.send_stall_timeout)
        self._raw.abort()  # not closed: a close would first wait for the unread data to be taken


def _consume(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


def _cancel(timer: asyncio.TimerHandle | None) -> None:
    if timer is not None:
        timer.cancel()


class _Refused(asyncio.Protocol):
    """A connection accepted over the cap: closed before a byte of TLS is spent on it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.Transport):
            transport.abort()
        else:
            transport.close()


class _Conn(asyncio.Protocol):
    """Forwards a TLS connection to aiohttp's request handler and runs the head deadline: armed
    when the handshake completes and when the first byte after a served request arrives,
    cleared when a request starts being served, and closing the connection if it fires first.

    The deadline's timer is not cancelled when a request starts: the next head re-arms the
    deadline in place, and a timer that fires early sets itself again for the time left. A
    kept-alive connection then makes a timer per `request-header-timeout`, not per request."""

    def __init__(self, handler: web_protocol.RequestHandler, *, owner: Connections) -> None:
        self._handler = handler
        self._owner = owner
        self._loop = asyncio.get_running_loop()
        self._deadline: asyncio.TimerHandle | None = None
        self._head_since: float | None = None  # when the head being awaited began; None: none is
        self._serving = 0  # requests of this connection being served (the middleware counts)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._owner.opened(self._handler, self)
        self._handler.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if not self._serving and self._head_since is None:
            self._arm()  # the first bytes of a head
        self._handler.data_received(data)

    def eof_received(self) -> None:
        self._handler.eof_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        _cancel(self._deadline)
        self._deadline = self._head_since = None
        self._owner.forget(self._handler)
        self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()

    def serving(self) -> None:
        self._serving += 1
        self._head_since = None

    def served(self) -> None:
        self._serving -= 1

    def _arm(self) -> None:
        self._head_since = self._loop.time()
        if self._deadline is None:
            self._deadline = self._loop.call_later(self._owner.limits.request_header_timeout, self._expired)

    def _expired(self) -> None:
        self._deadline = None
        since = self._head_since
        if since is None or self._serving:
            return
        left = since + self._owner.limits.request_header_timeout - self._loop.time()
        if left > 0:  # a later head than the one this timer was set for
            self._deadline = self._loop.call_later(left, self._expired)
            return
        log.debug("closing a connection whose request head did not arrive within %ss",
                  self._owner.limits.request_header_timeout)
        self._handler.force_close()


def allowed_connections(wanted: int, *, fd_limit: int) -> int:
    """`wanted`, or fewer so that a quarter of `fd_limit` (at least 128) stays for the rest."""
    if fd_limit == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, fd_limit - max(128, fd_limit // 4)))


class Connections:
    """The open connections of one listener: the cap, the middleware that marks the requests
    being served, and the memory given back after closes."""

    def __init__(self, limits: Limits) -> None:
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        cap = allowed_connections(limits.max_connections, fd_limit=fd_limit)
        if cap < limits.max_connections:
            log.warning("api.max-connections is %d but the open-file limit is %d: serving at most %d connections "
                        "(raise the limit, e.g. LimitNOFILE= in the systemd unit, for more)",
                        limits.max_connections, fd_limit, cap)
            limits = dataclasses.replace(limits, max_connections=cap)
        self.limits = limits
        self.open = 0  # accepted and not yet closed, handshakes included
        self.refused = 0  # refused at the cap since start
        self._conns: dict[web_protocol.RequestHandler, _Conn] = {}
        self._trim: asyncio.TimerHandle | None = None
        self._refusal_logged = -_REFUSAL_LOG_INTERVAL

    def protocol(self, server: web.Server, *, context: ssl.SSLContext) -> asyncio.BaseProtocol:
        """The protocol for a connection just accepted: refused at the cap, else TLS to aiohttp."""
        loop = asyncio.get_running_loop()
        if self.open >= self.limits.max_connections:
            self.refused += 1
            now = loop.time()
            if now - self._refusal_logged >= _REFUSAL_LOG_INTERVAL:
                self._refusal_logged = now
                log.warning("refusing new API connections: %d are open, the limit set by api.max-connections "
                            "(%d refused so far)", self.open, self.refused)
            return _Refused()
        tls = _TLS(_Conn(server(), owner=self), loop=loop, owner=self, context=context,
                   timeout=self.limits.tls_handshake_timeout)
        self.open += 1  # and one less when `tls` loses its connection
        return tls

    def opened(self, handler: web_protocol.RequestHandler, conn: _Conn) -> None:
        self._conns[handler] = conn

    def forget(self, handler: web_protocol.RequestHandler) -> None:
        self._conns.pop(handler, None)

    def closed(self) -> None:
        self.open -= 1
        if self._trim is None:
            self._trim = asyncio.get_running_loop().call_later(_TRIM_DELAY, self._release)

    def _release(self) -> None:
        self._trim = None
        # Off the loop: glibc walks the whole heap (some ms; ctypes lets go of the interpreter lock).
        asyncio.get_running_loop().run_in_executor(None, memory.release_free_memory)

    def cancel(self) -> None:
        _cancel(self._trim)
        self._trim = None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        conn = self._conns.get(request.protocol)
        if conn is None:
            return await handler(request)
        conn.serving()
        try:
            return await handler(request)
        finally:
            conn.served()


class Site(web.BaseSite):
    """An aiohttp site serving TLS on host:port through `Connections`."""

    __slots__ = ("_connections", "_host", "_port")

    def __init__(self, runner: web.BaseRunner, connections: Connections, *, host: str, port: int,
                 ssl_context: ssl.SSLContext, backlog: int = 128) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._connections = connections
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        context = self._ssl_context
        assert server is not None and context is not None
        connections = self._connections

        def accept() -> asyncio.BaseProtocol:
            return connections.protocol(server, context=context)

        self._server = await asyncio.get_running_loop().create_server(
            accept, self._host, self._port, backlog=self._backlog, reuse_address=True)

    async def stop(self) -> None:
        await super().stop()
        self._connections.cancel()
