"""Run risky reading in a forked child, so that a crash there cannot take this process with it.

LMDB keeps no checksums and trusts its pages: on a damaged file it may return an error, but it
may also fail one of its own assertions (abort) or read past the end of a file cut short
(SIGBUS). Neither can be caught. So code that walks a database which may be damaged (the boot's
structure check, `edgekube store check`, `store recover`) runs in a child: it sends its results
back as frames on a pipe, and the parent learns how it ended. A child that dies by a signal
still delivered every frame it sent before.

Fork without exec: call it only while the process has no other thread (the server checks its
data dir before anything starts a thread; the CLI has none), as the certificates' child does.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
from collections.abc import Callable

_LEN = struct.Struct(">I")

Emit = Callable[[bytes], None]


def run(work: Callable[[Emit], None]) -> tuple[list[bytes], str | None]:
    """Frames `work` emitted, and None when it returned, else how the child ended."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            os.close(read_fd)
            with os.fdopen(write_fd, "wb", buffering=1 << 16) as out:

                def emit(frame: bytes) -> None:
                    out.write(_LEN.pack(len(frame)) + frame)
                    out.flush()

                work(emit)
        except BaseException as exc:  # reported as the child's end, never raised into the parent's code
            code = 2
            try:
                sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
            except Exception:
                pass
        os._exit(code)
    os.close(write_fd)
    frames: list[bytes] = []
    with os.fdopen(read_fd, "rb") as inp:
        data = inp.read()
    at = 0
    while at + _LEN.size <= len(data):
        (n,) = _LEN.unpack_from(data, at)
        at += _LEN.size
        if at + n > len(data):
            break  # cut off by the child's death
        frames.append(data[at:at + n])
        at += n
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return frames, f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    code = os.WEXITSTATUS(status)
    return frames, None if code == 0 else f"failed (exit {code})"
