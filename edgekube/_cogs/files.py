"""Durable small-file writes: a crash leaves the old file or the new one, never half of either.

Write to a temporary name, fsync it, rename it over the old one, then fsync the directory so the
rename itself survives a power loss (on ext4 without the directory fsync a crash can leave the
old name, or none).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600, durable: bool = True) -> None:
    """`path` holds `data` with permission bits `mode` (whatever the umask), or is as it was.
    `durable=False` skips both fsyncs: still all or nothing for any reader and across a crash of
    the process (the page cache keeps it), but a power cut may leave the old content, an empty
    file or none; for state that a power cut makes moot anyway, written often, where the flash
    is spared the flushes (the kernel writes a burst of changes back once)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)
