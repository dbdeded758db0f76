"""Shared fixtures: a real `edgekube server` in a subprocess, on a private data dir and port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgekube._cogs import memdir
from tests.support.netns import NetNS, namespaces

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A running `edgekube server`; `stop()`/`kill()`/`start()` for restart tests.

    The network and DNS components are off unless the server runs in a network namespace of its
    own (`netns`). The kubelet is off unless `kubelet=True`: a test server would otherwise register this
    machine as a node and run the pods of API tests as real containers (and the scheduler would
    put the control-plane tests' pods there instead of on their test nodes)."""

    def __init__(self, data_dir: Path, *, port: int | None = None, extra: list[str] | None = None,
                 command: list[str] | None = None, kubelet: bool = False, env: dict[str, str] | None = None,
                 netns: NetNS | None = None) -> None:
        self.data_dir = data_dir
        self.netns = netns  # run inside this network namespace (tests/support/netns.py): network tests
        self.port = port or free_port()
        # The network component writes links and nft rules, and the cluster DNS binds port 53 on a
        # cluster address: only ever inside a namespace of the test's own (the network rule),
        # never in the host's, where test servers would also share that port.
        self.extra = (extra or []) + ([] if kubelet else ["--disable", "kubelet"]) + \
            ([] if netns is not None else ["--disable", "network", "--disable", "dns"])
        self.command = command or [sys.executable, "-m", "edgekube"]
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig.yaml"

    @property
    def ca(self) -> Path:
        return self.data_dir / "tls" / "ca.crt"

    def admin_context(self) -> ssl.SSLContext:
        """TLS as the admin: the cluster CA trusted, the admin's client certificate presented."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        tls = self.data_dir / "tls"
        ctx.load_cert_chain(str(tls / "admin.crt"), str(tls / "admin.key"))
        return ctx

    def start(self, *, timeout: float = 30.0) -> None:
        log = open(self.log_path, "ab")
        prefix = self.netns.argv([]) if self.netns is not None else []
        self.proc = subprocess.Popen(
            [*prefix, *self.command, "server", "--data-dir", str(self.data_dir), "--bind-address", "127.0.0.1",
             "--https-port", str(self.port), *self.extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"edgekube server exited with {self.proc.returncode}:\n{self.log()}")
            if self.ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"edgekube server not ready after {timeout}s:\n{self.log()}")

    def ready(self) -> bool:
        if self.netns is not None:
            return self.netns.call(self._ready)
        return self._ready()

    def _ready(self) -> bool:
        if not self.ca.exists():
            return False
        ctx = ssl.create_default_context(cafile=str(self.ca))
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", context=ctx, timeout=1) as r:
                return bool(r.read() == b"ok")
        except (OSError, ssl.SSLError):
            return False

    def rss_mib(self) -> float:
        """The server process's resident memory (VmRSS), in MiB."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise AssertionError(f"no VmRSS for process {self.proc.pid}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""

    def stop(self, *, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self.proc = None
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.stop(timeout=10)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        release_memory_dir(self.data_dir / "db")


def release_memory_dir(path: Path) -> None:
    """What a server kept in memory for data path `path` (LMDB's lock file: `_cogs.memdir`),
    removed once it stopped: a clean stop does it itself, a killed server leaves it."""
    own = memdir.for_path(path)
    if own is not None and own.is_dir():
        shutil.rmtree(own, ignore_errors=True)
        with contextlib.suppress(OSError):
            own.parent.rmdir()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("edgekube") / "data")
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data")
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="module")
def test_node(server: Server) -> Iterator[Any]:
    """A test node (tests/support/testnode.py) registered with the module's server: bound pods
    run there (Running and Ready unless their annotations ask otherwise)."""
    from tests.support.testnode import NodeProcess

    node = NodeProcess(server.data_dir, server.url, f"node-{server.port}").start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def netns() -> Iterator[NetNS]:
    """A network namespace of the test's own, loopback only, deleted afterwards (even on failure)."""
    with namespaces("node") as (ns,):
        yield ns
