"""Container stdout/stderr into CRI log files, through FIFOs that survive an edgekube restart.

The mechanism, with no helper process per container:

- Each container has two FIFOs in its bundle (`stdout`, `stderr`). Before `runc create`,
  edgekube opens each FIFO **read-write** and hands those descriptors to runc as the container's
  stdout and stderr; runc passes them through to the container's init and edgekube closes its
  copies. The container so holds a reader of its own pipes: when edgekube is gone (SIGTERM,
  upgrade, `kill -9`) a write never fails with EPIPE or kills the container with SIGPIPE; it
  fills the pipe and, once the pipe is full, blocks until a reader comes back. The pipes are
  grown to the kernel's `pipe-max-size` (1 MiB by default; pages are only used when filled).
- edgekube opens the read end (non-blocking) and turns what it reads into CRI lines appended to
  the log file (O_APPEND). After a restart it opens the same FIFO paths again and carries on
  from the first unread byte: nothing the container wrote while edgekube was down is lost while
  the container still runs, and the log file (opened again in append mode) keeps its history.
- End of stream is end of the container: once every process holding the write end exits, the
  read returns EOF and the copier closes.

What this costs and what it does not do (the price of having no per-container shim):
- Lines written while edgekube is down get the time edgekube read them, not the time they were
  written.
- A container that writes more than a pipe's capacity while edgekube is down stalls in write()
  until edgekube is back (a shim would keep draining).
- A container that *exits* while edgekube is down takes its unread pipe contents with it (a
  pipe lives only as long as someone holds it): the lines written between edgekube's death and
  the container's exit are lost. With edgekube restarted by systemd within seconds this is a
  small window; a conmon-like shim would close it at ~1-2 MB RSS per container in C (a Python
  one costs ~10 MB each, which 100 pods on a Pi cannot afford), so we do without.
- A partial line (no newline yet) sits in edgekube's memory; a clean stop writes it out as a
  partial ("P") entry and the rest follows after the restart; after `kill -9` up to one
  partial line (at most 16 KiB) is lost.

The format is the CRI one containerd writes: `<RFC3339Nano> <stdout|stderr> <F|P> <line>\\n`,
UTC, trailing zeros of the fraction dropped as Go's RFC3339Nano does, line terminators ("\\n",
"\\r\\n") removed; a line longer than 16 KiB is cut into "P" entries of 16 KiB and a final "F";
bytes left without a newline at end of stream are a "P" entry. Appends are small writes to the
page cache from the loop (no fsync): cheaper than an executor hop per chunk.

Rotation (`LogFile(rotation=...)`, see `edgekube.kubelet.logrotate`): the writer counts what
the live file holds (its size when opened, after a restart too, plus every write) and, once it
reaches the policy's size, renames it away and opens a new live file itself, between two whole
writes, so no entry is ever split across files. Trimming and compressing the older rotated
files runs off the loop (an executor thread; inline when there is no running loop), one round
at a time per file.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import fcntl
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edgekube.kubelet import logrotate

log = logging.getLogger(__name__)

STDOUT = "stdout"
STDERR = "stderr"
MAX_LINE = 16 * 1024
READ_SIZE = 64 * 1024
F_SETPIPE_SZ = 1031
PIPE_MAX_SIZE = Path("/proc/sys/fs/pipe-max-size")


def timestamp(ns: int) -> str:
    """Go's time.RFC3339Nano of a UTC instant: fraction without trailing zeros."""
    secs, frac = divmod(ns, 1_000_000_000)
    base = datetime.datetime.fromtimestamp(secs, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        return f"{base}.{f'{frac:09d}'.rstrip('0')}Z"
    return f"{base}Z"


def format_entry(ns: int, stream: str, tag: str, content: bytes) -> bytes:
    return f"{timestamp(ns)} {stream} {tag} ".encode() + content + b"\n"


def make_fifos(directory: Path) -> tuple[Path, Path]:
    """The container's stdout and stderr FIFOs in `directory` (made once, kept on restart)."""
    paths = (directory / STDOUT, directory / STDERR)
    for p in paths:
        try:
            os.mkfifo(p, 0o600)
        except FileExistsError:
            if not stat.S_ISFIFO(p.lstat().st_mode):
                raise
    return paths


def open_for_container(fifo: Path) -> int:
    """The descriptor the container writes to: read-write, so the container itself keeps a
    reader and never gets EPIPE while edgekube is away; its pipe grown as far as allowed."""
    fd = os.open(fifo, os.O_RDWR | os.O_CLOEXEC)
    with contextlib.suppress(OSError, ValueError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, int(PIPE_MAX_SIZE.read_text()))
    return fd


class LogFile:
    """One CRI log file, shared by a container's two streams; every write is whole entries."""

    def __init__(self, path: Path, *, rotation: logrotate.Policy | None = None,
                 now: Callable[[], float] = time.time) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._users = 0
        self.rotation = rotation
        self._now = now
        self._size = os.fstat(self._fd).st_size  # after a restart the file goes on where it was
        self._tidy_lock = threading.Lock()
        self._tidy_due = False
        self._tidy_running = False
        self._tidy_job: asyncio.Future[None] | None = None

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._size += len(data)
        if self.rotation is not None and self._size >= self.rotation.max_size:
            self.rotate()

    def reopen(self) -> None:
        """Start a new file at `path` (after the file was renamed away by rotation)."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        os.close(self._fd)
        self._fd = fd
        self._size = os.fstat(fd).st_size

    def rotate(self) -> None:
        """Rename the live file to its rotated name and go on in a new live file; then trim and
        compress the older rotated files (off the loop when one runs)."""
        try:
            logrotate.rotate(self.path, now=self._now())
        except FileNotFoundError:
            pass  # gone already (removed under us): the reopen below starts a new one
        except OSError as exc:
            log.warning("cannot rotate container log %s: %s", self.path, exc)
            self._size = 0  # try again after another max_size, not on every write
            return
        try:
            self.reopen()
        except OSError as exc:
            # Entries keep going to the renamed file; the next rotation tries again.
            log.warning("cannot open a new container log %s after rotating it: %s", self.path, exc)
            self._size = 0
            return
        self._schedule_tidy()

    def _schedule_tidy(self) -> None:
        with self._tidy_lock:
            self._tidy_due = True
            if self._tidy_running:
                return  # the running round goes once more
            self._tidy_running = True
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            self._tidy_rounds()
        else:
            self._tidy_job = loop.run_in_executor(None, self._tidy_rounds)

    def _tidy_rounds(self) -> None:
        policy = self.rotation
        while True:
            with self._tidy_lock:
                if not self._tidy_due or policy is None:
                    self._tidy_running = False
                    return
                self._tidy_due = False
            try:
                logrotate.tidy(self.path, policy)
            except Exception:
                log.exception("cannot trim or compress the rotated logs of %s", self.path)

    async def tidied(self) -> None:
        """Until the trimming and compressing started by the last rotation are done."""
        while self._tidy_job is not None and not self._tidy_job.done():
            await asyncio.shield(self._tidy_job)

    def acquire(self) -> None:
        self._users += 1

    def release(self) -> None:
        self._users -= 1
        if self._users <= 0 and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Copier:
    """Copies one FIFO (one stream) into a LogFile as CRI entries until end of stream."""

    def __init__(self, fifo: Path, *, stream: str, log: LogFile,
                 now_ns: Callable[[], int] = time.time_ns) -> None:
        self.fifo = fifo
        self.stream = stream
        self.log = log
        self._now_ns = now_ns
        self._buf = b""
        self._fd = -1
        self._done = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self.log.acquire()
        self._loop.add_reader(self._fd, self._readable)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> None:
        """Until the stream ended (every writer closed it) and all was written."""
        await self._done.wait()

    def _readable(self) -> None:
        while True:
            try:
                chunk = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self._finish(flush=True)
                return
            if not chunk:
                self._finish(flush=True)
                return
            self._consume(chunk)
            if len(chunk) < READ_SIZE:
                return

    def _consume(self, chunk: bytes) -> None:
        now = self._now_ns()
        data = self._buf + chunk
        out: list[bytes] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            line = data[start:nl]
            start = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            while len(line) > MAX_LINE:
                out.append(format_entry(now, self.stream, "P", line[:MAX_LINE]))
                line = line[MAX_LINE:]
            out.append(format_entry(now, self.stream, "F", line))
        rest = data[start:]
        while len(rest) > MAX_LINE:
            out.append(format_entry(now, self.stream, "P", rest[:MAX_LINE]))
            rest = rest[MAX_LINE:]
        self._buf = rest
        if out:
            self.log.write(b"".join(out))

    def _flush_partial(self) -> None:
        if self._buf:
            self.log.write(format_entry(self._now_ns(), self.stream, "P", self._buf))
            self._buf = b""

    def _finish(self, *, flush: bool) -> None:
        if self._fd < 0:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
        if flush:
            self._flush_partial()
        os.close(self._fd)
        self._fd = -1
        self.log.release()
        self._done.set()

    def close(self) -> None:
        """Stop copying (edgekube is stopping, the container goes on): what was read is written,
        a pending partial line as a "P" entry; the rest stays in the pipe for the next reader."""
        if self._fd >= 0:
            # Whatever the pipe holds right now is taken too, so a clean stop loses nothing.
            with contextlib.suppress(OSError):
                self._readable()
        self._finish(flush=True)
