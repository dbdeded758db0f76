"""Size-based rotation of CRI log files, as upstream's container log manager does it
(pkg/kubelet/logs, settings `containerLogMaxSize` 10Mi and `containerLogMaxFiles` 5).

Beside each run's live file `<n>.log` (see `crilog`):

    <n>.log                          the live file the writer appends to
    <n>.log.<YYYYmmdd-HHMMSS>        the newest rotated file, left uncompressed
    <n>.log.<YYYYmmdd-HHMMSS>.gz     older rotated files, gzip
    <n>.log.<stamp>.gz.tmp           a compression under way (a leftover one was interrupted)

Rotating, once the live file has reached `max_size`: `rotate` renames it to `<n>.log.<stamp>`
and the writer opens a new live file (`crilog.LogFile` does both); then `tidy` removes what an
interrupted earlier round left (`.tmp` files, an uncompressed file whose `.gz` exists), removes
the oldest rotated files so that at most `max_files` files remain counting the live one, and
compresses every rotated file but the newest (upstream leaves the newest uncompressed so that a
reader still at it can finish). Files are removed oldest first, so a `kubectl logs` reading an
old file is never the one broken when another would do.

Everything is in the file names: an edgekube that restarts finds the rotated files, the live
file (opened again in append mode, its size taken from the file) and any half-done compression
where the last one left them, and carries on. A crash between `rotate`'s rename and the
writer's reopen costs nothing either: the next writer creates the live file.

Differences from upstream, on purpose:
- the writer checks the size on each write instead of a 10 s poll of every container, so a live
  file never passes `max_size` by more than one write, and there is no `ReopenContainerLog`
  round trip (the writer is in this process);
- stamps are UTC (upstream uses the node's local time, which sorts wrongly across a time-zone
  change), and a second rotation within the same second gets `-<k>` after the stamp instead of
  overwriting the first (which would lose that file).

The functions here are blocking file work: `LogFile` runs `tidy` (gzip) off the event loop.
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import os
import re
import shutil
from pathlib import Path

DEFAULT_MAX_SIZE = 10 * 1024 * 1024
DEFAULT_MAX_FILES = 5
STAMP = "%Y%m%d-%H%M%S"
GZ = ".gz"
TMP = ".tmp"
COMPRESS_LEVEL = 6  # Go's gzip.DefaultCompression, which upstream uses

_ROTATED = re.compile(r"^(\d{8}-\d{6})(?:-(\d+))?(\.gz)?$")


@dataclasses.dataclass(frozen=True)
class Policy:
    """When to rotate and how many files to keep (the live one included)."""

    max_size: int = DEFAULT_MAX_SIZE
    max_files: int = DEFAULT_MAX_FILES

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError(f"container log max size must be at least 1 byte, got {self.max_size}")
        if self.max_files < 2:
            raise ValueError(f"container log max files must be at least 2 (the live file and one rotated), "
                             f"got {self.max_files}")


UPSTREAM = Policy()  # upstream's defaults: 10Mi, 5 files


def _key(path: Path, name: str) -> tuple[str, int] | None:
    """The age order of a rotated file's name (stamp, then same-second counter), or None for a
    name that is not one of `path`'s rotated files."""
    prefix = path.name + "."
    if not name.startswith(prefix):
        return None
    m = _ROTATED.match(name[len(prefix):])
    if m is None:
        return None
    return m.group(1), int(m.group(2) or 0)


def _scan(path: Path) -> tuple[list[Path], list[Path]]:
    """(rotated files in use, oldest first; leftovers of an interrupted round)."""
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return [], []
    prefix = path.name + "."
    found = set(names)
    keyed: list[tuple[tuple[str, int], Path]] = []
    unused: list[Path] = []
    for name in names:
        if not name.startswith(prefix):
            continue
        if name.endswith(TMP):
            if _key(path, name[: -len(TMP)]) is not None:
                unused.append(path.parent / name)
            continue
        key = _key(path, name)
        if key is None:
            continue
        if not name.endswith(GZ) and name + GZ in found:
            unused.append(path.parent / name)  # compressed already; the removal was interrupted
            continue
        keyed.append((key, path.parent / name))
    keyed.sort(key=lambda kv: kv[0])
    return [p for _, p in keyed], unused


def rotated(path: Path) -> list[Path]:
    """The rotated files of the live file `path`, oldest first."""
    return _scan(path)[0]


def all_files(path: Path) -> list[Path]:
    """Every file of this run's log: rotated ones (and leftovers) and the live file if present."""
    inuse, unused = _scan(path)
    live = [path] if path.exists() else []
    return [*unused, *inuse, *live]


def rotate(path: Path, *, now: float) -> Path:
    """Rename the live file to its rotated name (stamped with `now`, seconds since the epoch, UTC)
    and return that name. The writer must open a new live file afterwards."""
    stamp = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime(STAMP)
    existing = set(os.listdir(path.parent))
    name = f"{path.name}.{stamp}"
    k = 0
    while name in existing or name + GZ in existing:
        k += 1
        name = f"{path.name}.{stamp}-{k}"
    target = path.parent / name
    os.rename(path, target)
    return target


def compress(path: Path) -> Path:
    """gzip `path` to `path.gz` (through `path.gz.tmp`, renamed once complete) and remove it."""
    tmp = path.parent / (path.name + GZ + TMP)
    out = path.parent / (path.name + GZ)
    try:
        mode = os.stat(path).st_mode & 0o777
        with open(path, "rb") as src, open(tmp, "wb") as raw:
            os.fchmod(raw.fileno(), mode)
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=COMPRESS_LEVEL, mtime=0) as gz:
                shutil.copyfileobj(src, gz, 256 * 1024)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    path.unlink()
    return out


def tidy(path: Path, policy: Policy) -> None:
    """After a rotation: remove leftovers, keep the newest `max_files - 1` rotated files, and
    compress all of them but the newest."""
    inuse, unused = _scan(path)
    for p in unused:
        p.unlink(missing_ok=True)
    keep = policy.max_files - 1
    excess = len(inuse) - keep
    for p in inuse[:max(0, excess)]:
        p.unlink(missing_ok=True)
    inuse = inuse[max(0, excess):]
    for p in inuse[:-1]:
        if not p.name.endswith(GZ):
            try:
                compress(p)
            except FileNotFoundError:
                pass  # removed meanwhile (the pod went)


def remove(path: Path) -> None:
    """Remove the live file and every rotated file of it (the run's log is no longer wanted)."""
    for p in all_files(path):
        p.unlink(missing_ok=True)


def from_settings(*, max_size: int, max_files: int) -> Policy | None:
    """The policy of the kubelet settings `container-log-max-size` (0: no rotation) and
    `container-log-max-files`."""
    return Policy(max_size=max_size, max_files=max_files) if max_size > 0 else None
