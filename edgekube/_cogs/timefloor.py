"""A wall-clock time that can be trusted: never before this program was built, nor before the
last time the node saw.

A board without a real-time clock (a Raspberry Pi) boots at 1970 or at whatever an image saved,
and NTP corrects it minutes later, if ever. Anything that stamps a durable time from the wall
clock at that moment (a certificate's validity above all) would be wrong for years. So "now",
for such stamps, is the latest of three readings:

- the wall clock;
- the build time: `edgekube/_cogs/_built.py`, written by packaging/build.sh into the binary
  (SOURCE_DATE_EPOCH when set, else the time of the build). A source checkout has no such file:
  it falls back to the newest modification time of the package's own top-level files (a
  checkout, an install or an unpack happened after the code was written), and at least
  `KNOWN_FLOOR`, a date no edgekube predates;
- the last time the node saw (`LastSeen`), kept in the data dir. It costs no write of its own on
  a busy node: the kernel stamps every file the store writes with the wall clock, so the newest
  modification time in the data dir is read as well. The file itself is written at boot, at a
  clean stop and at most once a day while running, and only when the clock moved forward: SD
  cards wear with writes, and an idle node writes nearly nothing.

Durations never come from here (nor from the wall clock at all): they are measured on the
monotonic clock, which no clock setting moves.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import os
from collections.abc import Iterable
from pathlib import Path

UTC = datetime.UTC
# No edgekube was built before this date; the floor of last resort.
KNOWN_FLOOR = datetime.datetime(2026, 12, 1, tzinfo=UTC)
_BUILT_MODULE = "edgekube._cogs._built"  # BUILD_EPOCH = <int>, written by packaging/build.sh
LAST_SEEN_FILE = "last-seen"
# While running, the file is rewritten when it lags the clock by this much (once a day at most).
_RECORD_EVERY = datetime.timedelta(days=1)


def build_time() -> datetime.datetime:
    """When this program was built (see the module docstring for a source checkout)."""
    try:
        built = importlib.import_module(_BUILT_MODULE)
        return max(KNOWN_FLOOR, datetime.datetime.fromtimestamp(int(built.BUILD_EPOCH), UTC))
    except (ImportError, AttributeError, TypeError, ValueError, OverflowError):
        pass
    package = Path(__file__).resolve().parent.parent
    return max([KNOWN_FLOOR, *(_mtime(p) for p in _entries([package]) if p.suffix == ".py")])


def _entries(dirs: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for d in dirs:
        with contextlib.suppress(OSError), os.scandir(d) as it:
            found.extend(Path(e.path) for e in it if e.is_file(follow_symlinks=False))
    return found


def _mtime(path: Path) -> datetime.datetime:
    try:
        return datetime.datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except (OSError, OverflowError, ValueError):
        return KNOWN_FLOOR


class LastSeen:
    """The last wall-clock time this data dir saw: its `last-seen` file (an RFC 3339 line) and
    the modification times of the entries of the data dir and of its direct subdirectories (the
    store's files among them), which the kernel keeps up to date for free."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        self.path = data_dir / LAST_SEEN_FILE
        self._recorded: datetime.datetime | None = None

    def read(self) -> datetime.datetime | None:
        times: list[datetime.datetime] = []
        with contextlib.suppress(OSError, ValueError, OverflowError):
            times.append(datetime.datetime.fromisoformat(self.path.read_text().strip().replace("Z", "+00:00")))
        dirs = [self.dir]
        with contextlib.suppress(OSError), os.scandir(self.dir) as it:
            dirs.extend(Path(e.path) for e in it if e.is_dir(follow_symlinks=False))
        times.extend(_mtime(p) for p in _entries(dirs))
        found = max(times, default=None)
        if self._recorded is None and found is not None:
            self._recorded = found
        return found

    def record(self, now: datetime.datetime, *, force: bool = False) -> None:
        """Write `now` when it is later than what the file holds by a day (or at all, with
        `force`: boot and clean stop). Failure to write is not an error: the floor is a help."""
        if self._recorded is None:
            self.read()
        if self._recorded is not None and (now <= self._recorded or (not force and now - self._recorded < _RECORD_EVERY)):
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with contextlib.suppress(OSError):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, (now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") + "\n").encode())
            finally:
                os.close(fd)
            os.replace(tmp, self.path)  # no fsync: a lost update only makes the floor older
            self._recorded = now


def trusted_now(wall: datetime.datetime, *, last_seen: datetime.datetime | None) -> datetime.datetime:
    """The latest of the wall clock, the build time and the last time seen."""
    return max([wall, build_time(), *([last_seen] if last_seen is not None else [])])
