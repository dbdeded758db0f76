"""edgekube under systemd: the unit file as systemd reads it, and the notifications a real server
sends through a real NOTIFY_SOCKET (READY=1 when /readyz first answers ok, watchdog pings from
the event loop, STOPPING=1)."""

from __future__ import annotations

import configparser
import itertools
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.conftest import REPO, Server

UNIT = REPO / "systemd" / "edgekube.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def test_the_unit_file_is_what_systemd_analyze_verify_accepts(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: `make setup` installs the systemd package"
    # verify checks that ExecStart's program exists: point it at this checkout's edgekube.
    text = UNIT.read_text().replace("ExecStart=/usr/local/bin/edgekube server",
                                    f"ExecStart={sys.executable} -m edgekube server")
    assert text != UNIT.read_text()
    unit = tmp_path / "edgekube.service"
    unit.write_text(text)
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # Any warning (an unknown key, a bad value, a missing program) is printed and fails this.
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done.stdout + done.stderr


def test_the_unit_asks_for_what_edgekube_does() -> None:
    service = _unit()["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["WatchdogSec"] == "60s"  # the loop pings every 30 s
    assert service["KillMode"] == "process"  # containers survive a restart of edgekube
    assert service["Delegate"] == "yes"
    assert service["RestartPreventExitStatus"] == "3"  # the data dir needs an operator


def test_a_server_tells_systemd_when_it_is_ready_pings_its_watchdog_and_says_it_stops(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    server = Server(tmp_path / "data", env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    received: list[tuple[float, str, bool]] = []  # (when, message, /readyz ok at that moment)
    stop = threading.Event()

    def receive() -> None:
        while not stop.is_set():
            try:
                msg = sock.recv(4096).decode()
            except TimeoutError:
                continue
            ready = server.ready() if msg.startswith("READY=1") or msg.startswith("STATUS=starting") else False
            received.append((time.monotonic(), msg, ready))

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    try:
        server.start()
        assert server.proc is not None
        pid = server.proc.pid
        time.sleep(1.2)
        assert server.stop() == 0
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()
        if server.proc is not None:
            server.kill()
    messages = [m for _, m, _ in received]
    assert messages[0] == "STATUS=starting" and not received[0][2]  # before /readyz said ok
    readies = [(t, m, ok) for t, m, ok in received if m.startswith("READY=1")]
    assert len(readies) == 1, messages
    t_ready, ready, ok = readies[0]
    assert ok, "READY=1 sent before /readyz answered ok"
    assert ready.split("\n") == ["READY=1", f"STATUS=ready: node {socket.gethostname().lower()}, API on port {server.port}",
                                 f"MAINPID={pid}"]
    # Pings every 0.2 s from the start, through the boot, until the process ends.
    pings = [t for t, m, _ in received if m == "WATCHDOG=1"]
    after_ready = [t for t in pings if t > t_ready]
    assert len(after_ready) >= 4, messages
    assert max(b - a for a, b in itertools.pairwise(after_ready)) < 1.0
    stopping = [i for i, m in enumerate(messages) if m.startswith("STOPPING=1")]
    assert len(stopping) == 1 and messages.index(ready) < stopping[0]


def test_children_of_the_server_do_not_inherit_the_notification_variables() -> None:
    # The server takes them out of its own environment before it starts anything (runc, probes).
    code = ("import os, subprocess; from edgekube._cogs import sdnotify; os.environ['NOTIFY_SOCKET'] = '/x'; "
            "os.environ['WATCHDOG_USEC'] = '1'; sdnotify.Notifier.from_environ(); "
            "print(subprocess.run(['env'], capture_output=True, text=True).stdout)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60).stdout
    assert "PATH=" in out
    assert "NOTIFY_SOCKET=" not in out and "WATCHDOG_USEC=" not in out
