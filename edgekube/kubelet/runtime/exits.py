"""How edgekube learns that a container's init exited, and with which status.

runc records no exit status, and a detached container's init is not runc's child for long.
Three sources, best first:

1. **Child subreaper.** edgekube marks itself PR_SET_CHILD_SUBREAPER, so when `runc create`
   exits, the container's init (runc's orphan) is re-parented to edgekube instead of PID 1.
   edgekube then reaps it with waitpid and has the exact status. This holds for every container
   started by this edgekube process.
2. **The kernel's process-events connector** (netlink, NETLINK_CONNECTOR / CN_IDX_PROC, root
   only, in most distribution kernels): every process exit is multicast with its wait status.
   It covers containers adopted after a restart, whose parent is now PID 1 and whose status
   waitpid can no longer give. A socket filter keeps only exit events; if the socket's buffer
   overflows (ENOBUFS: a storm of exits elsewhere), events may be missed, and such an exit falls
   through to 3.
3. **Nothing.** A container that exited while edgekube was down: its status went to PID 1.
   runc still says "stopped" (its pid is gone or belongs to another process), the cgroup's OOM
   counter still tells whether it was OOM-killed, but the exit code and the time it stopped are
   unknown, and are reported as unknown (None).

Exit readiness itself comes from a pidfd (pidfd_open, Linux 5.3+) watched by the event loop,
for children and non-children alike; the status is then taken from 1 or 2.

Exit codes are reported as Kubernetes does: the process's exit code, or 128+signal when it was
killed by a signal (137 for SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import errno
import logging
import os
import socket
import struct
from collections.abc import Callable

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
PROC_EVENT_EXIT = 0x80000000
NLMSG_DONE = 3
SO_ATTACH_FILTER = 26
# Offsets in a proc-connector message: nlmsghdr (16) + cn_msg (20) + proc_event header.
_WHAT_OFFSET = 36
_EXIT_OFFSET = 36 + 16  # what(4) cpu(4) timestamp(8), then pid, tgid, exit_code, exit_signal


def exit_code_of(wait_status: int) -> int:
    """Kubernetes' exit code for a wait status: the code, or 128+signal."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    if os.WIFEXITED(wait_status):
        return os.WEXITSTATUS(wait_status)
    return 128 + (wait_status & 0x7F)


def set_subreaper(on: bool = True) -> bool:
    """Make this process the reaper of its descendants' orphans (or stop being one). False if
    the kernel refuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0)) == 0


@dataclasses.dataclass(frozen=True)
class Exit:
    pid: int
    exit_code: int | None  # None: the process is gone but its status could not be learnt
    source: str  # "waitpid" | "connector" | "unknown"


class ProcConnector:
    """Exit events of every process on the host, from the kernel's proc connector."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self.statuses: dict[int, int] = {}  # tgid -> wait status, for pids someone watches
        self.wanted: set[int] = set()
        self.lost = False

    def open(self) -> bool:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
            sock.bind((0, CN_IDX_PROC))
            self._attach_filter(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.send(_control(PROC_CN_MCAST_LISTEN))
            sock.setblocking(False)
        except OSError as exc:
            log.info("process-events connector unavailable (%s): exit codes of adopted containers "
                     "will be unknown", exc)
            return False
        self._sock = sock
        return True

    @staticmethod
    def _attach_filter(sock: socket.socket) -> None:
        # Classic BPF: accept only messages whose proc_event.what is PROC_EVENT_EXIT.
        # ld [36] (network order load; the field is host order, so compare byte-swapped)
        what = struct.unpack(">I", struct.pack("=I", PROC_EVENT_EXIT))[0]
        prog = [
            (0x20, 0, 0, _WHAT_OFFSET),  # BPF_LD|BPF_W|BPF_ABS
            (0x15, 0, 1, what),  # BPF_JMP|BPF_JEQ|BPF_K
            (0x06, 0, 0, 0xFFFFFFFF),  # BPF_RET|BPF_K accept
            (0x06, 0, 0, 0),  # drop
        ]
        raw = b"".join(struct.pack("=HBBI", *ins) for ins in prog)
        buf = ctypes.create_string_buffer(raw)
        fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def drain(self) -> None:
        """Read every pending event, keeping the statuses of watched pids."""
        if self._sock is None:
            return
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.lost = True
                    continue
                return
            off = 0
            while off + 16 <= len(data):
                length = struct.unpack_from("=I", data, off)[0]
                if length < 16:
                    break
                msg = data[off:off + length]
                if len(msg) >= _EXIT_OFFSET + 16 and struct.unpack_from("=I", msg, _WHAT_OFFSET)[0] == PROC_EVENT_EXIT:
                    _pid, tgid, status, _sig = struct.unpack_from("=IIII", msg, _EXIT_OFFSET)
                    if tgid in self.wanted:
                        # The last thread of the group to exit carries the group's status.
                        self.statuses[tgid] = status
                off += (length + 3) & ~3

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.send(_control(PROC_CN_MCAST_IGNORE))
            self._sock.close()
            self._sock = None


def _control(op: int) -> bytes:
    payload = struct.pack("=I", op)
    cn = struct.pack("=IIIIHH", CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
    return struct.pack("=IHHII", 16 + len(cn), NLMSG_DONE, 0, 0, 0) + cn


class Watcher:
    """Calls back once per watched pid when it has exited, with what could be learnt."""

    def __init__(self, *, subreaper: bool = True) -> None:
        self.connector = ProcConnector()
        self._want_subreaper = subreaper
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pidfds: dict[int, int] = {}
        self._callbacks: dict[int, Callable[[Exit], None]] = {}
        self.subreaper = False

    def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.subreaper = self._want_subreaper and set_subreaper()
        if self.connector.open():
            self._loop.add_reader(self.connector.fileno(), self.connector.drain)

    def watch(self, pid: int, callback: Callable[[Exit], None]) -> bool:
        """Watch `pid`; False if it is already gone (the caller then asks `reap_now`)."""
        assert self._loop is not None, "Watcher.open() first"
        if pid in self._pidfds:
            self._callbacks[pid] = callback
            return True
        self.connector.wanted.add(pid)
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.connector.wanted.discard(pid)
            return False
        self._pidfds[pid] = fd
        self._callbacks[pid] = callback
        self._loop.add_reader(fd, self._exited, pid)
        return True

    def unwatch(self, pid: int) -> None:
        fd = self._pidfds.pop(pid, None)
        self._callbacks.pop(pid, None)
        self.connector.wanted.discard(pid)
        self.connector.statuses.pop(pid, None)
        if fd is not None:
            if self._loop is not None:
                self._loop.remove_reader(fd)
            os.close(fd)

    def reap_now(self, pid: int) -> Exit:
        """What can be learnt now about an exited pid: waitpid if it is our child (a zombie
        waiting for us), else the connector's record, else unknown."""
        status = _waitpid(pid)
        if status is not None:
            return Exit(pid, exit_code_of(status), "waitpid")
        self.connector.drain()
        status = self.connector.statuses.pop(pid, None)
        if status is not None:
            return Exit(pid, exit_code_of(status), "connector")
        return Exit(pid, None, "unknown")

    def reap_orphans(self) -> int:
        """Reap our zombie children that are processes of a container but not its init: an
        exec'd process whose `runc exec` died first (killed past its time) is re-parented to us,
        the subreaper. Until it is reaped, the container's init cannot finish exiting (the kernel
        waits for every process of its pid namespace) and the pod stays Terminating. Container
        inits (namespace pid 1) and watched pids are left to `_exited`, runc and asyncio's own
        children (in edgekube's own pid namespace, one level less deep) to asyncio. Returns how
        many were reaped."""
        reaped = 0
        # edgekube itself may run in a pid namespace (LXC, a container): 1 in the host's
        depth = len(_status("self").get("NSpid", "1").split())
        for pid in _children():
            if pid in self._pidfds:
                continue
            fields = _status(str(pid))
            nspid = fields.get("NSpid", "").split()
            if not fields.get("State", "").strip().startswith("Z") or len(nspid) <= depth or nspid[-1] == "1":
                continue
            if _waitpid(pid) is not None:
                reaped += 1
                log.info("reaped pid %s, a container process orphaned by its runc exec", pid)
        return reaped

    def _exited(self, pid: int) -> None:
        callback = self._callbacks.get(pid)
        result = self.reap_now(pid)
        self.unwatch(pid)
        if callback is not None:
            callback(result)

    def close(self) -> None:
        for pid in list(self._pidfds):
            self.unwatch(pid)
        if self._loop is not None and self.connector.fileno() >= 0:
            self._loop.remove_reader(self.connector.fileno())
        self.connector.close()


def _status(pid: str) -> dict[str, str]:
    """/proc/<pid>/status as a dict ("NSpid": "\t812\t5\n", ...); empty once the pid is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            return dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return {}


def _children() -> list[int]:
    """This process's children, from every thread's /proc children list."""
    out: list[int] = []
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/children", encoding="ascii") as f:
                out.extend(int(p) for p in f.read().split())
        except (OSError, ValueError):
            continue
    return out


def _waitpid(pid: int) -> int | None:
    try:
        got, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if got == 0:
        return None  # our child, still running: not an exit (a pidfd only fires at the end)
    return status
