"""A directory in memory for files that must not wear the flash and need not outlive a reboot.

runc's state (rewritten at every exec), each exec's process spec, LMDB's lock file (written by
every read transaction): on an SD card each costs erase cycles for nothing, since all of them
describe processes a reboot ends anyway. `memory_dir()` is the first of `/run/edgekube` and
`/dev/shm/edgekube` that lies on a tmpfs (None when neither does: they then stay on the disk);
`for_path(path)` a directory of its own there for one data path (by its resolved name, so that
every process that opens that path finds the same one), and `claim(path)` makes it, with an
`owner` file naming the path (for an operator, and for tests that clean up what they made).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from edgekube._cogs import mounts as mounts_mod

CANDIDATES = (Path("/run/edgekube"), Path("/dev/shm/edgekube"))
_TMPFS = frozenset({"tmpfs", "ramfs"})


def memory_dir(*, candidates: Sequence[Path] = CANDIDATES, mounts: Path = Path("/proc/self/mounts")) -> Path | None:
    """The first of `candidates` whose file system is a tmpfs (by the mount holding it)."""
    try:
        table = mounts_mod.table(mounts)
    except OSError:
        return None
    for path in candidates:
        held = mounts_mod.holder(path, table)
        if held is not None and held[1] in _TMPFS:
            return path
    return None


def for_path(path: Path, base: Path | None = None) -> Path | None:
    """The memory directory of data path `path` (not made here); None without a memory dir."""
    base = base or memory_dir()
    if base is None:
        return None
    return base / hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]


OWNER = "owner"


def claim(path: Path) -> Path | None:
    """`for_path(path)`, made (mode 0700) with its `owner` file; None without a memory dir."""
    own = for_path(path)
    if own is None:
        return None
    with contextlib.suppress(FileExistsError):
        own.parent.mkdir(mode=0o700, parents=True)
    own.mkdir(mode=0o700, exist_ok=True)
    owner = own / OWNER
    if not owner.exists():
        owner.write_text(str(path.resolve()) + "\n")
    return own


def release(own: Path) -> None:
    """Remove `own` (a directory `claim` made) once only its owner file is left, and the memory
    dir itself once empty."""
    with contextlib.suppress(OSError):
        if {p.name for p in own.iterdir()} <= {OWNER}:
            (own / OWNER).unlink(missing_ok=True)
            own.rmdir()
            os.rmdir(own.parent)
