"""The kubelet's side of `pods/log`: CRI log files read back as upstream's kubelet reads them
(ReadLogs, pkg/kubelet/kuberuntime/logs), as the API server's `podlogs.LogSource`.

Where: the live file of each run, `<pod-log-dir>/<ns>_<pod>_<uid>/<container>/<restart>.log`
(the path `pods` gives its containers). Files rotated away beside it (`logrotate`) are not read:
as upstream, `kubectl logs` shows the live file only, `--tail` included.

What a file holds (see `crilog`): entries `<RFC3339Nano time> <stdout|stderr> <P|F>[:tags]
<content>`, one per line. An `F` entry ends a line of the container's output (its newline is put
back); `P` entries are the pieces of a longer line and are joined; an entry that does not parse
is skipped, as upstream skips it. The options, as upstream applies them:
- `tail_lines`: start at the last N lines, found by reading the file backwards from its end
  (a big file costs what the tail costs). A long line's `P` pieces and its `F` count as one line
  (upstream counts file entries, which differs only for lines over 16 KiB).
- `since_ns`: entries stamped before it are left out.
- `timestamps`: each line starts with its time in RFC 3339 with nine fraction digits
  (upstream's RFC3339NanoFixed) and a space; once per line, not once per piece.
- `limit_bytes`: the output ends after that many bytes, even mid-line.
- `stream`: Stdout or Stderr only.

Following (`follow`): at the end of the file the reader polls (every `poll` seconds: there is no
inotify in the standard library, and one fstat per follower per poll costs nothing) for more.
When the path names a new file (rotation renamed the live one away) the rest of the old file is
read, then the new one from its start, as upstream's fsnotify loop does (so a follower that
falls more than a whole file behind, more than `container-log-max-size` written within one poll,
skips to the live file, as upstream's does). Once `follow_while()` turns false (the run ended,
or the client went), the reader waits one more poll, so the last lines the copier drains from
the container's pipe get written, reads what is left, and ends.
Reads and scans run in worker threads (`asyncio.to_thread`), never on the loop.
"""

from __future__ import annotations

import asyncio
import calendar
import dataclasses
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from edgekube.api import podlogs

READ_SIZE = 256 * 1024
SCAN_BLOCK = 64 * 1024
POLL_SECONDS = 0.2

_TIME = re.compile(rb"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")
_STREAMS = (b"stdout", b"stderr")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One CRI log entry (one line of the file)."""

    time: bytes
    stream: bytes  # b"stdout" | b"stderr"
    partial: bool
    content: bytes  # without the entry's newline


def parse(line: bytes) -> Entry | None:
    """The entry of one line of a CRI log file (its newline may be there or not), or None."""
    if line.endswith(b"\n"):
        line = line[:-1]
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        return None
    ts, stream, tags = parts[0], parts[1], parts[2]
    if stream not in _STREAMS or not tags or _TIME.match(ts) is None:
        return None
    return Entry(time=ts, stream=stream, partial=tags.split(b":", 1)[0] == b"P",
                 content=parts[3] if len(parts) == 4 else b"")


def instant(ts: bytes) -> int | None:
    """An RFC 3339 time as nanoseconds since the epoch (None if it is not one)."""
    m = _TIME.match(ts)
    if m is None:
        return None
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    frac = m.group(7) or b""
    try:
        secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    zone = m.group(8)
    if zone != b"Z":
        offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
        secs -= offset if zone[:1] == b"+" else -offset
    return secs * 1_000_000_000 + (int(frac.ljust(9, b"0")) if frac else 0)


def fixed(ts: bytes) -> bytes:
    """An RFC 3339 time with exactly nine fraction digits (Go's RFC3339NanoFixed)."""
    m = _TIME.match(ts)
    if m is None:
        return ts
    head = ts[: m.start(7) - 1] if m.group(7) else ts[: m.start(8)]
    return head + b"." + (m.group(7) or b"").ljust(9, b"0") + m.group(8)


class Formatter:
    """Turns CRI entries into the text the client gets, with the options applied."""

    def __init__(self, *, since_ns: int | None = None, timestamps: bool = False, limit_bytes: int | None = None,
                 stream: str = "All") -> None:
        self._since = since_ns
        self._timestamps = timestamps
        self._remaining = limit_bytes
        self._only = {"Stdout": b"stdout", "Stderr": b"stderr"}.get(stream)
        self._mid: set[bytes] = set()  # streams whose last piece sent was partial
        self._last_ts = b""
        self._last_ns: int | None = None
        self.done = False  # limit_bytes reached

    @classmethod
    def for_options(cls, options: podlogs.Options) -> Formatter:
        return cls(since_ns=options.since_ns, timestamps=options.timestamps, limit_bytes=options.limit_bytes,
                   stream=options.stream)

    def _ns(self, ts: bytes) -> int:
        if ts != self._last_ts:  # runs of entries share a stamp: parse each stamp once
            self._last_ts, self._last_ns = ts, instant(ts)
        return self._last_ns if self._last_ns is not None else 0

    def feed(self, data: bytes) -> bytes:
        """The output for `data`, whole lines of a CRI log file (a last line without its newline
        is taken as whole too)."""
        if self.done:
            return b""
        out: list[bytes] = []
        for raw in data.split(b"\n"):
            if not raw:
                continue
            e = parse(raw)
            if e is None:
                continue
            if self._only is not None and e.stream != self._only:
                continue
            if self._since is not None and self._ns(e.time) < self._since:
                continue
            piece = e.content if e.partial else e.content + b"\n"
            if self._timestamps and e.stream not in self._mid:
                piece = fixed(e.time) + b" " + piece
            if e.partial:
                self._mid.add(e.stream)
            else:
                self._mid.discard(e.stream)
            if self._remaining is not None:
                if len(piece) >= self._remaining:
                    out.append(piece[: self._remaining])
                    self._remaining = 0
                    self.done = True
                    break
                self._remaining -= len(piece)
            out.append(piece)
        return b"".join(out)


def tail_start(fd: int, n: int, *, size: int | None = None) -> int:
    """The offset where the last `n` lines of the CRI log open as `fd` begin (0 when it has no
    more than `n`), reading backwards from the end.

    A line is an `F` entry with the `P` pieces of its stream right before it (the copier writes
    a long line's pieces together), or `P` pieces at the very end (a line still being written).
    Pieces split apart by the other stream's entries count apart, as every entry does upstream."""
    if size is None:
        size = os.fstat(fd).st_size
    if n <= 0:
        # Only what comes after the last whole entry.
        pos = size
        while pos > 0:
            start = max(0, pos - SCAN_BLOCK)
            block = os.pread(fd, pos - start, start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                return start + nl + 1
            pos = start
        return 0
    buf = b""  # the file's bytes from `pos` on (those up to `end` not looked at yet)
    pos = end = size
    counted = 0
    joining: bytes | None = None  # the stream of the line whose earlier pieces may come next
    start = size
    while end > 0:
        # The entry that ends at `end` starts after the last newline before its own end.
        nl = buf.rfind(b"\n", 0, max(0, end - pos - 1))
        while nl < 0 and pos > 0:
            earlier = max(0, pos - SCAN_BLOCK)
            buf = os.pread(fd, pos - earlier, earlier) + buf[: end - pos]
            pos = earlier
            nl = buf.rfind(b"\n", 0, max(0, end - pos - 1))
        begin = pos + nl + 1 if nl >= 0 else 0
        e = parse(buf[begin - pos:end - pos])
        end = begin
        if e is not None and e.partial and e.stream == joining:
            start = begin  # an earlier piece of the same line
            continue
        if counted >= n:
            return start
        if e is None:
            joining = None  # not an entry: skipped when read, and no line
            continue
        counted += 1
        joining = e.stream
        start = begin
    return 0


class _Reader:
    """The file being read (blocking calls, made from worker threads)."""

    def __init__(self, path: Path, fd: int, offset: int) -> None:
        self.path = path
        self.fd = fd
        self.offset = offset
        self.pending = b""  # the start of a line whose newline is not written yet

    @classmethod
    def open(cls, path: Path, *, tail: int | None) -> _Reader:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            # upstream's words (it resolves symlinks first, and that is what fails)
            raise podlogs.LogUnavailable(f'failed to try resolving symlinks in path "{path}": lstat {path}: '
                                         f"no such file or directory") from None
        except OSError as exc:
            raise podlogs.LogUnavailable(f'failed to open log file "{path}": {exc.strerror or exc}') from None
        try:
            offset = tail_start(fd, tail) if tail is not None else 0
        except OSError as exc:
            os.close(fd)
            raise podlogs.LogUnavailable(f'failed to tail {tail} lines of log file "{path}": {exc}') from None
        return cls(path, fd, offset)

    def read(self, fmt: Formatter) -> tuple[bytes, bool]:
        """(output for the whole lines read now, whether anything was read)."""
        chunk = os.pread(self.fd, READ_SIZE, self.offset)
        if not chunk:
            return b"", False
        self.offset += len(chunk)
        data = self.pending + chunk
        cut = data.rfind(b"\n") + 1
        self.pending = data[cut:]
        return fmt.feed(data[:cut]), True

    def rest(self, fmt: Formatter) -> bytes:
        """The output for a last line left without its newline (at the very end of reading)."""
        data, self.pending = self.pending, b""
        return fmt.feed(data) if data else b""

    def renewed(self) -> bool:
        """Whether the path now names another file than the one read (rotation)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False  # renamed, the new one not there yet: stay on the old one
        own = os.fstat(self.fd)
        return (st.st_dev, st.st_ino) != (own.st_dev, own.st_ino)

    def switch(self) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        os.close(self.fd)
        self.fd, self.offset, self.pending = fd, 0, b""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FileLogs:
    """`podlogs.LogSource` over the CRI log files under the pod log dir."""

    def __init__(self, pod_log_dir: Path, *, poll: float = POLL_SECONDS) -> None:
        self.pod_log_dir = pod_log_dir
        self.poll = poll

    def pod_dir(self, namespace: str, pod: str, uid: str) -> Path:
        return self.pod_log_dir / f"{namespace}_{pod}_{uid}"

    def path(self, target: podlogs.Target) -> Path:
        return self.pod_dir(target.namespace, target.pod, target.uid) / target.container / f"{target.restart}.log"

    async def open(self, target: podlogs.Target, options: podlogs.Options, *,
                   follow_while: Callable[[], bool]) -> AsyncIterator[bytes]:
        reader = await asyncio.to_thread(_Reader.open, self.path(target), tail=options.tail_lines)
        return self._stream(reader, options, follow_while)

    async def _stream(self, reader: _Reader, options: podlogs.Options,
                      follow_while: Callable[[], bool]) -> AsyncIterator[bytes]:
        fmt = Formatter.for_options(options)
        ending = False
        try:
            while not fmt.done:
                out, got = await asyncio.to_thread(reader.read, fmt)
                if out:
                    yield out
                if got:
                    continue
                if not options.follow or ending:
                    break
                rest = await asyncio.to_thread(self._next_file, reader, fmt)
                if rest is not None:
                    if rest:
                        yield rest
                    continue
                if not follow_while():
                    ending = True  # one more poll for the last lines, one more read, then done
                await asyncio.sleep(self.poll)
            if not fmt.done:
                out = reader.rest(fmt)
                if out:
                    yield out
        finally:
            reader.close()

    def _next_file(self, reader: _Reader, fmt: Formatter) -> bytes | None:
        """At the end of the file: if it was rotated away, the output for the rest of it, and the
        reader moved to the new live file; None if it was not."""
        if not reader.renewed():
            return None
        out: list[bytes] = []
        while True:
            data, got = reader.read(fmt)
            out.append(data)
            if not got or fmt.done:
                break
        out.append(reader.rest(fmt))
        try:
            reader.switch()
        except FileNotFoundError:
            pass  # gone again (the pod's logs were removed): stay on the old file, the run is over
        return b"".join(out)
