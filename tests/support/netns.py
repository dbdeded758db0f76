"""Network namespaces for the tests that create interfaces, routes or nft rules (issue 14).

The network rule of this project: such a test runs edgekube inside a network namespace of its own
with no uplink, and where it needs an outside host, a second namespace joined to the first by a
veth pair with addresses from the test-only range 198.18.0.0/24. No packet of a test leaves the
machine, and nothing in the host's own namespace is changed.

- `NetNS` is one named namespace (`ip netns add`, so `ip netns list` shows it while a test runs),
  with loopback up and nothing else. Its name carries the test process's pid, so a run killed
  half-way leaves namespaces that the next run's `sweep_stale()` removes.
- Programs run inside it through `nsenter --net=...` (`run`, `popen`, `argv`), never
  `ip netns exec`, which remounts /sys and hides the cgroup mounts from the program.
- Python code of the test itself runs inside it through `call(fn)`: a thread of its own that
  joins the namespace with setns(2) and ends afterwards, so the test process's other threads
  never change namespace (sockets keep the namespace they were made in; that is how the
  Python `kubernetes` client and urllib reach an edgekube that listens inside).
- `close()` deletes the namespace: every link inside it (and the far end of each veth pair, in
  whichever namespace) and every nft table go with it. It first kills what still runs inside.
- `link(a, b)` joins two namespaces by a veth pair made inside `a`, so the pair never exists in
  the host's namespace even for a moment.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
PREFIX = "ektest-"
OUTSIDE_NET = "198.18.0"  # RFC 2544 benchmarking range: never routed anywhere
_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)  # os.setns is Python 3.12+


class NetNS:
    """One named network namespace with loopback up and no uplink."""

    def __init__(self, label: str = "ns") -> None:
        self.name = f"{PREFIX}{os.getpid()}-{next(_counter)}-{label}"[:60]
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        try:
            self.run(["ip", "link", "set", "lo", "up"])
        except BaseException:
            self.close()
            raise

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    def argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this namespace (only the network namespace changes)."""
        return ["nsenter", f"--net={self.path}", *argv]

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 60.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=timeout, input=input)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {self.name} failed ({done.returncode}): "
                               f"{done.stderr.strip() or done.stdout.strip()}")
        return done

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(argv), **kwargs)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(*args, **kwargs) in a thread that has joined this namespace; its result or its error."""
        box: dict[str, Any] = {}

        def body() -> None:
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns into {self.path}: {os.strerror(err)}")
                finally:
                    os.close(fd)
                box["result"] = fn(*args, **kwargs)
            except BaseException as e:  # handed to the caller's thread
                box["error"] = e

        thread = threading.Thread(target=body, name=f"in-{self.name}")
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["result"]  # type: ignore[no-any-return]

    def links(self) -> list[str]:
        out = self.run(["ip", "-o", "link", "show"]).stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.strip()]

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def close(self) -> None:
        """Kill what still runs inside, then delete the namespace (and all it holds)."""
        if not self.path.exists():
            return
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)

    def __enter__(self) -> NetNS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def link(a: NetNS, b: NetNS, *, a_name: str = "out0", b_name: str = "out0",
         a_addr: str = f"{OUTSIDE_NET}.1/24", b_addr: str = f"{OUTSIDE_NET}.2/24") -> None:
    """Join `a` and `b` by a veth pair made inside `a` (its peer moved straight into `b`), both
    ends up with their addresses from the test-only range."""
    a.run(["ip", "link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", str(b.path)])
    a.run(["ip", "addr", "add", a_addr, "dev", a_name])
    a.run(["ip", "link", "set", a_name, "up"])
    b.run(["ip", "addr", "add", b_addr, "dev", b_name])
    b.run(["ip", "link", "set", b_name, "up"])


def sweep_stale() -> list[str]:
    """Delete the test namespaces left by test processes that no longer run (a killed run)."""
    removed = []
    for entry in NETNS_DIR.glob(f"{PREFIX}*") if NETNS_DIR.exists() else []:
        try:
            pid = int(entry.name[len(PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if pid == os.getpid() or Path(f"/proc/{pid}").exists():
            continue
        subprocess.run(["ip", "netns", "del", entry.name], capture_output=True, check=False)
        removed.append(entry.name)
    return removed


@contextlib.contextmanager
def namespaces(*labels: str) -> Iterator[list[NetNS]]:
    """Namespaces that are deleted at the end even when the test fails."""
    sweep_stale()
    made: list[NetNS] = []
    try:
        for label in labels:
            made.append(NetNS(label))
        yield made
    finally:
        for ns in reversed(made):
            ns.close()
