"""systemd's service notification protocol (`sd_notify(3)`), with the standard library only.

Under a unit of `Type=notify`, systemd passes `NOTIFY_SOCKET` (a datagram socket's path, or an
abstract name starting with `@`) and waits for `READY=1` before it calls the service started (and
starts the units ordered after it). With `WatchdogSec=`, it also passes `WATCHDOG_USEC` (and
`WATCHDOG_PID`): the service sends `WATCHDOG=1` more often than that, or systemd kills and
restarts it.

`Notifier.from_environ()` reads both and takes them out of the environment, so that no child
(runc, a container, a probe) inherits them and speaks for this process. Outside systemd (no
socket) every call is a no-op. A send that fails is logged once and otherwise ignored: the
notifications are a courtesy to the supervisor and must never stop the node.

`watchdog` is the health loop: a coroutine on the event loop that pings at half the interval (as
sd_watchdog_enabled(3) advises). A wedged event loop runs no coroutine, so the pings stop and
systemd restarts the process; `healthy` can add checks of its own (it runs on the loop and must
be cheap).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, MutableMapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        # An abstract socket's name is given with a leading "@", sent with a leading NUL.
        self._address = "\0" + address[1:] if address and address.startswith("@") else address
        self.watchdog_seconds = watchdog_usec / 1e6 if watchdog_usec else None
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """The notifier systemd asked for (none: a no-op), the variables removed from `environ`
        (default: this process's)."""
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", None) or None
        usec_text = env.pop("WATCHDOG_USEC", None)
        pid_text = env.pop("WATCHDOG_PID", None)
        usec: int | None = None
        if usec_text and (not pid_text or pid_text == str(os.getpid())):  # meant for this process
            try:
                usec = int(usec_text) or None
            except ValueError:
                log.warning("WATCHDOG_USEC=%r is not a number of microseconds: no watchdog pings", usec_text)
        if address is not None and not (address.startswith("/") or address.startswith("@")):
            log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract name: systemd is not told", address)
            address = None
        return cls(address, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> None:
        """One notification of `KEY=value` fields (a no-op outside systemd)."""
        if self._address is None:
            return
        try:
            if self._sock is None:
                # Non-blocking: a supervisor that stopped reading must not stall the event loop.
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            self._sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify systemd through %s: %s", self._address.lstrip("\0"), exc)
                self._failed = True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    async def watchdog(self, healthy: Callable[[], bool] = lambda: True) -> None:
        """Ping systemd's watchdog at half its interval while `healthy()`; returns at once when
        no watchdog was asked for."""
        if self._address is None or self.watchdog_seconds is None:
            return
        period = self.watchdog_seconds / 2
        while True:
            if healthy():
                self.send("WATCHDOG=1")
            await asyncio.sleep(period)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
