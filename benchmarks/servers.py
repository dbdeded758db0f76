"""Start and stop the real edgekube server and the bare aiohttp baseline as subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from benchmarks import common

READY_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client_ssl(tls: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.load_verify_locations(str(tls / "ca.crt"))
    ctx.load_cert_chain(str(tls / "admin.crt"), str(tls / "admin.key"))
    return ctx


class Proc:
    """A child process with its log file; `stop()` sends SIGTERM and waits."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, *, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.started = time.time()  # wall clock at exec, for timings against the child's log
        self.popen = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=common.REPO,
            env=env,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode


class EdgekubeServer(Proc):
    """`edgekube server` on a private data dir; the kubelet is off unless `kubelet=True` (the API
    benchmarks must not run their pods as real containers on this machine). `launcher` replaces
    `python -m edgekube` (the kubelet benchmark's `kubelet_server.py`), `env` the environment."""

    def __init__(self, data_dir: Path, *, extra: list[str] | None = None, kubelet: bool = False,
                 launcher: list[str] | None = None, env: dict[str, str] | None = None, network: bool = False) -> None:
        if not kubelet:
            extra = [*(extra or []), "--disable", "kubelet"]
        if not network:  # the service proxy writes nft rules: only in a network namespace of its own
            extra = [*(extra or []), "--disable", "network"]
        self.data_dir = data_dir
        self.port = free_port()
        self.base = f"https://127.0.0.1:{self.port}"
        cmd = [
            *(launcher or [sys.executable, "-m", "edgekube"]), "server",
            "--data-dir", str(data_dir),
            "--bind-address", "127.0.0.1",
            "--https-port", str(self.port),
            *(extra or []),
        ]  # fmt: skip
        super().__init__("edgekube server", cmd, data_dir.parent / f"{data_dir.name}.log", env=env)

    @property
    def tls(self) -> Path:
        return self.data_dir / "tls"

    def ssl_context(self) -> ssl.SSLContext:
        return client_ssl(self.tls)

    async def wait_ready(self) -> float:
        """Seconds from now until /readyz answers `ok`."""
        start = time.monotonic()
        deadline = start + READY_TIMEOUT
        needed = [self.tls / n for n in ("ca.crt", "admin.crt", "admin.key")]
        last = ""
        while time.monotonic() < deadline:
            self.check_alive()
            if all(p.exists() for p in needed):
                try:
                    conn = aiohttp.TCPConnector(ssl=self.ssl_context())
                    async with (
                        aiohttp.ClientSession(connector=conn) as session,
                        session.get(
                            f"{self.base}/readyz", timeout=aiohttp.ClientTimeout(total=2)
                        ) as r,
                    ):
                        text = await r.text()
                        if r.status == 200 and text.strip() == "ok":
                            return time.monotonic() - start
                        last = f"{r.status} {text[:200]!r}"
                except (aiohttp.ClientError, ssl.SSLError, OSError, TimeoutError) as e:
                    last = repr(e)
            await asyncio.sleep(0.1)
        raise RuntimeError(
            f"edgekube server not ready after {READY_TIMEOUT}s (last: {last}):\n{self.log_tail()}"
        )


class BareServer(Proc):
    """`benchmarks/bare_server.py`: GET answers a fixed body; with `db`, POST stores its body in
    that LMDB directory, one fsync'd transaction per request."""

    def __init__(self, tls: Path, body_file: Path, log_path: Path, *, env: dict[str, str] | None = None,
                 db: Path | None = None) -> None:
        self.port = free_port()
        self.base = f"https://127.0.0.1:{self.port}"
        cmd = [
            sys.executable, str(Path(__file__).with_name("bare_server.py")),
            "--port", str(self.port),
            "--cert", str(tls / "server.crt"),
            "--key", str(tls / "server.key"),
            "--ca", str(tls / "ca.crt"),
            "--body", str(body_file),
            *(["--db", str(db)] if db is not None else []),
        ]  # fmt: skip
        super().__init__("bare aiohttp server", cmd, log_path, env=env)

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if "ready" in self.log_path.read_text(errors="replace"):
                    return
            except OSError:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError(f"bare server not ready:\n{self.log_tail()}")


def read_proc_io(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k.strip()] = int(v)
    return out


def read_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def children(pid: int) -> list[int]:
    """Direct and indirect child pids (from /proc/*/stat), for information."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        parent_of[int(entry)] = int(fields[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        found.extend(kids)
        frontier.extend(kids)
    return found
