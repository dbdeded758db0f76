"""One process per data dir: an exclusive lock held for the life of the process.

Two servers on one data dir would each count revisions from what they read at boot and both
write: acknowledged objects vanish and resourceVersions repeat. So the server takes this lock
before it touches anything in the data dir (certificates, database, containers), and so do
commands that change the store offline.

The lock is `flock(2)` on `DATA/lock`, not a pid file: the kernel drops it when the process
ends, however it ends (kill -9, power loss), so there is never a stale lock to clean up by
hand. The file also carries the holder's pid, for the message the second process prints. The
descriptor is close-on-exec: a container started by runc must never inherit it, or the lock
would outlive edgekube with the container and keep the next edgekube out.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILE = "lock"


class LockedError(Exception):
    """The data dir is held by another process."""

    def __init__(self, data_dir: Path, *, holder: int | None) -> None:
        who = f"another edgekube (pid {holder})" if holder else "another edgekube"
        super().__init__(
            f"the data dir {data_dir} is in use by {who}; stop it first, or give this one another --data-dir"
        )
        self.data_dir = data_dir
        self.holder = holder


class DirLock:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._fd = -1

    def acquire(self) -> None:
        """Take the lock or raise `LockedError` at once (never wait for the holder)."""
        if self._fd >= 0:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise LockedError(self.data_dir, holder=holder) from None
        except BaseException:
            os.close(fd)
            raise
        # The pid is for the other process's message only; losing it in a crash costs nothing.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = -1

    def __enter__(self) -> DirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
