"""The sd_notify protocol (edgekube/_cogs/sdnotify.py) against a real datagram socket."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekube._cogs import sdnotify


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def _received(sock: socket.socket) -> list[tuple[float, str]]:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append((time.monotonic(), sock.recv(4096).decode()))
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(2)
    return out


def test_from_environ_takes_the_variables_out_so_no_child_inherits_them(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid()), "HOME": "/root"}
    n = sdnotify.Notifier.from_environ(env)
    assert env == {"HOME": "/root"}
    assert n.enabled and n.watchdog_seconds == 4.0
    n.ready("up")
    msg = sock.recv(4096).decode().split("\n")
    assert msg == ["READY=1", "STATUS=up", f"MAINPID={os.getpid()}"]
    n.close()


def test_a_watchdog_meant_for_another_process_is_not_ours(listener: tuple[str, socket.socket]) -> None:
    path, _ = listener
    n = sdnotify.Notifier.from_environ({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"})
    assert n.enabled and n.watchdog_seconds is None
    bad = sdnotify.Notifier.from_environ({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "soon"})
    assert bad.watchdog_seconds is None


def test_outside_systemd_nothing_is_sent_and_nothing_fails() -> None:
    n = sdnotify.Notifier.from_environ({})
    assert not n.enabled
    n.ready("up")
    n.stopping()
    asyncio.run(asyncio.wait_for(n.watchdog(), 1))  # returns at once: no watchdog asked for


def test_an_abstract_socket_name_is_reached(tmp_path: Path) -> None:
    name = f"@edgekube-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name[1:])
    sock.settimeout(2)
    try:
        n = sdnotify.Notifier.from_environ({"NOTIFY_SOCKET": name})
        n.stopping()
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
        n.close()
    finally:
        sock.close()


def test_a_vanished_socket_is_logged_once_and_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = sdnotify.Notifier(str(tmp_path / "gone"))
    for _ in range(3):
        n.status("x")
    assert [r.getMessage() for r in caplog.records if "cannot notify systemd" in r.getMessage()] != []
    assert len([r for r in caplog.records if "cannot notify systemd" in r.getMessage()]) == 1
    n.close()


def test_the_watchdog_pings_at_half_the_interval(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    n = sdnotify.Notifier(path, watchdog_usec=200_000)  # a ping every 0.1 s

    async def main() -> None:
        task = asyncio.create_task(n.watchdog())
        await asyncio.sleep(0.55)
        task.cancel()

    asyncio.run(main())
    pings = [m for _, m in _received(sock)]
    assert set(pings) == {"WATCHDOG=1"} and 4 <= len(pings) <= 7
    n.close()


def test_no_ping_goes_out_while_the_loop_is_wedged(listener: tuple[str, socket.socket]) -> None:
    path, _ = listener
    sent: list[float] = []

    class Timed(sdnotify.Notifier):
        def send(self, *fields: str) -> None:
            sent.append(time.monotonic())

    timed = Timed(path, watchdog_usec=200_000)

    async def wedge() -> tuple[float, float]:
        task = asyncio.create_task(timed.watchdog())
        await asyncio.sleep(0.35)
        start = time.monotonic()
        time.sleep(0.6)  # noqa: ASYNC251 (the point: the loop held, no coroutine runs)
        end = time.monotonic()
        await asyncio.sleep(0.25)
        task.cancel()
        return start, end

    start, end = asyncio.run(wedge())
    assert not [t for t in sent if start < t < end]
    assert any(t < start for t in sent) and any(t >= end for t in sent)
    assert max(b - a for a, b in itertools.pairwise(sent)) >= 0.6  # the gap systemd's timer sees
    gaps_outside = [b - a for a, b in itertools.pairwise(sent) if b <= start or a >= end]
    assert gaps_outside and max(gaps_outside) < 0.3


def test_the_watchdog_is_silent_while_unhealthy(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    n = sdnotify.Notifier(path, watchdog_usec=100_000)
    healthy = [True]

    async def main() -> None:
        task = asyncio.create_task(n.watchdog(lambda: healthy[0]))
        await asyncio.sleep(0.2)
        assert _received(sock)
        healthy[0] = False
        await asyncio.sleep(0.06)
        _received(sock)
        await asyncio.sleep(0.3)
        assert _received(sock) == []
        task.cancel()

    asyncio.run(main())
    n.close()
