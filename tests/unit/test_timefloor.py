"""The trusted time: never before the build, nor before the last time the data dir saw."""

from __future__ import annotations

import datetime
import os
import sys
import types
from pathlib import Path

import pytest

from edgekube._cogs import timefloor

UTC = datetime.UTC
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)


def test_build_time_from_the_stamp_the_build_writes_else_the_package_files(monkeypatch: pytest.MonkeyPatch) -> None:
    checkout = timefloor.build_time()
    assert timefloor.KNOWN_FLOOR <= checkout <= datetime.datetime.now(UTC)
    stamp = datetime.datetime(2030, 5, 1, tzinfo=UTC)
    monkeypatch.setitem(sys.modules, "edgekube._cogs._built",
                        types.SimpleNamespace(BUILD_EPOCH=int(stamp.timestamp())))  # type: ignore[arg-type]
    assert timefloor.build_time() == stamp
    assert timefloor.trusted_now(EPOCH, last_seen=None) == stamp
    monkeypatch.setitem(sys.modules, "edgekube._cogs._built", types.SimpleNamespace())  # type: ignore[arg-type]
    assert timefloor.build_time() == checkout  # a broken stamp: the fallback


def test_last_seen_is_the_latest_of_its_file_and_the_data_dirs_files(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    seen = timefloor.LastSeen(tmp_path)
    assert seen.read() is None  # an empty data dir knows no time
    data = tmp_path / "db" / "data.mdb"
    data.write_bytes(b"x")
    t = datetime.datetime(2031, 3, 4, 5, 6, 7, tzinfo=UTC)
    os.utime(data, (t.timestamp(), t.timestamp()))  # the store wrote at that time
    assert seen.read() == t
    assert timefloor.trusted_now(EPOCH, last_seen=seen.read()) == t
    later = t + datetime.timedelta(days=30)
    (tmp_path / "last-seen").write_text(later.strftime("%Y-%m-%dT%H:%M:%SZ") + "\n")
    os.utime(tmp_path / "last-seen", (0, 0))
    assert timefloor.LastSeen(tmp_path).read() == later


def test_last_seen_is_written_rarely_and_only_forward(tmp_path: Path) -> None:
    seen = timefloor.LastSeen(tmp_path)
    t = datetime.datetime(2031, 1, 1, tzinfo=UTC)
    seen.record(t, force=True)
    path = tmp_path / "last-seen"
    assert path.read_text() == "2031-01-01T00:00:00Z\n"
    os.utime(path, (0, 0))  # so that the file's own time does not count below
    seen = timefloor.LastSeen(tmp_path)
    seen.record(t + datetime.timedelta(hours=5))  # within a day: no write
    assert path.read_text() == "2031-01-01T00:00:00Z\n"
    seen.record(t - datetime.timedelta(days=400), force=True)  # backward: never
    assert path.read_text() == "2031-01-01T00:00:00Z\n"
    seen.record(t + datetime.timedelta(days=1, seconds=1))
    assert path.read_text() == "2031-01-02T00:00:01Z\n"
    seen.record(t + datetime.timedelta(days=1, hours=1), force=True)  # boot and stop: written
    assert path.read_text() == "2031-01-02T01:00:00Z\n"
