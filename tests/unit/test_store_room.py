"""Room written ahead of the LMDB file's end: commits then write into blocks the file already has.

Real file systems: the test's own directory and small tmpfs mounts the tests make and remove
(needs root, as CI runs)."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekube._cogs import memdir
from edgekube.store import errors, lmdb_log, records
from edgekube.store import store as store_mod

MiB = 1 << 20

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (needs root)")


def _batch(first: int, n: int, size: int = 500) -> list[lmdb_log.Write]:
    return [
        lmdb_log.Write(
            op=records.Op.CREATE,
            key=f"/core/configmaps/ns/c{rev:06d}",
            obj={"metadata": {"name": f"c{rev}"}, "data": {"x": "y" * size}},
            expect_revision=None,
            revision=rev,
        )
        for rev in range(first, first + n)
    ]


def _used(db: lmdb_log.LmdbLog) -> int:
    return (db._env.info()["last_pgno"] + 1) * db._page_size


def _fill_until_full(path: Path, *, preallocate: int) -> int:
    """Commit groups of 16 until the disk is full (which must be a StoreFullError saying so);
    the last revision committed."""
    db = lmdb_log.LmdbLog(path, map_size=128 * MiB, max_size=128 * MiB, preallocate=preallocate)
    committed = 0
    with pytest.raises(errors.StoreFullError, match="no space left"):
        for first in range(1, 1_000_000, 16):
            db.commit(_batch(first, 16), meta_rev=first + 15, reserved=None)
            committed = first + 15
    db.close()
    return committed


def _all_there(path: Path, committed: int) -> None:
    again = lmdb_log.LmdbLog(path, map_size=128 * MiB, max_size=128 * MiB)
    assert again.state()[0] == committed
    assert sum(1 for _ in again.iter_records()) == committed
    again.close()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[list[Path]]:
    """Mount points the test made (tmpfs, a loop-mounted image); unmounted at the end, even when it fails."""
    mounted: list[Path] = []
    yield mounted
    for m in reversed(mounted):
        # Lazily: a failed test may still hold the database open.
        subprocess.run(["umount", "-l", str(m)], check=False)


def _mount(where: Path, size: str, mounted: list[Path]) -> Path:
    where.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    mounted.append(where)
    return where


def test_room_ahead_is_zero_filled_in_chunks_and_the_database_reopens_whole(tmp_path: Path) -> None:
    db = lmdb_log.LmdbLog(tmp_path / "db", map_size=64 * MiB, max_size=64 * MiB, preallocate=MiB)
    data = tmp_path / "db" / "data.mdb"
    rev, sizes = 1, set()
    for _ in range(60):
        db.commit(_batch(rev, 32), meta_rev=rev + 31, reserved=None)
        rev += 32
        size = data.stat().st_size
        sizes.add(size)
        # Each commit fit in the room written before it (half a chunk or more); never past the map.
        assert size > _used(db)
        assert size <= 64 * MiB
    with open(data, "rb") as f:
        f.seek(_used(db))
        assert f.read() == bytes(data.stat().st_size - _used(db))
    # ~2 MiB of records in 60 commits: the file grew a few times, each by half a chunk or more.
    grown = sorted(sizes)
    assert len(grown) >= 2
    assert all(b - a >= MiB // 2 for a, b in itertools.pairwise(grown))
    db.close()

    again = lmdb_log.LmdbLog(tmp_path / "db", map_size=16 * MiB, max_size=64 * MiB)
    assert again.state()[0] == rev - 1
    keys = [r.key for r in again.iter_records()]
    assert keys == [f"/core/configmaps/ns/c{i:06d}" for i in range(1, rev)]
    again.close()


def test_commits_larger_than_the_room_keep_every_page(tmp_path: Path) -> None:
    # Each commit (~1.3 MiB) outgrows the room written before it, so the next fill starts at
    # LMDB's last page, not at the end of the old zeros: a fill that wrote below it would
    # overwrite committed pages.
    db = lmdb_log.LmdbLog(tmp_path / "db", map_size=64 * MiB, max_size=64 * MiB, preallocate=MiB)
    rev = 1
    for _ in range(6):
        db.commit(_batch(rev, 400, size=3000), meta_rev=rev + 399, reserved=None)
        rev += 400
    db.close()
    again = lmdb_log.LmdbLog(tmp_path / "db", map_size=64 * MiB, max_size=64 * MiB)
    got = list(again.iter_records())
    assert [r.revision for r in got] == list(range(1, rev))
    assert again.get("/core/configmaps/ns/c002399") is not None
    again.close()


def test_room_ahead_stops_at_the_map_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = lmdb_log.LmdbLog(tmp_path / "db", map_size=MiB, max_size=MiB, preallocate=4 * MiB)
    db.commit(_batch(1, 4), meta_rev=4, reserved=None)
    assert (tmp_path / "db" / "data.mdb").stat().st_size == MiB
    # At the map's end there is nothing to add: no more syncs of our own.
    syncs: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(lmdb_log.os, "fdatasync", lambda fd: (syncs.append(fd), real(fd))[1])
    for first in range(5, 45, 4):
        db.commit(_batch(first, 4), meta_rev=first + 3, reserved=None)
    assert syncs == []
    with pytest.raises(errors.StoreFullError, match="maximum size"):
        for first in range(45, 10_000, 8):
            db.commit(_batch(first, 8, size=2000), meta_rev=first + 7, reserved=None)
    db.close()


@needs_root
def test_a_disk_too_full_for_room_ahead_still_commits_then_reports_it_full(tmp_path: Path, tmpfs: list[Path]) -> None:
    fs = _mount(tmp_path / "small", "2m", tmpfs)
    committed = _fill_until_full(fs / "db", preallocate=8 * MiB)
    # The zeros took what the disk had, and the commits used that room: well over a MiB of records.
    assert committed * 500 > MiB
    subprocess.run(["mount", "-o", "remount,size=16m", str(fs)], check=True)
    _all_there(fs / "db", committed)


@needs_root
def test_a_full_ext4_disk_is_reported_full_not_as_an_io_error(tmp_path: Path, tmpfs: list[Path]) -> None:
    # ext4 keeps clusters even root may not take; LMDB reports the short write as EIO.
    image = tmp_path / "ext4.img"
    with open(image, "wb") as f:
        f.truncate(64 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", str(image)], check=True)
    fs = tmp_path / "ext4"
    fs.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(fs)], check=True)
    tmpfs.append(fs)
    assert lmdb_log.preallocation_helps(fs)
    committed = _fill_until_full(fs / "db", preallocate=MiB)
    assert committed * 500 > 16 * MiB
    _all_there(fs / "db", committed)


@needs_root
def test_file_system_type_comes_from_the_mount_table(tmp_path: Path, tmpfs: list[Path]) -> None:
    spaced = _mount(tmp_path / "a dir with spaces", "1m", tmpfs)
    assert lmdb_log.file_system_type(spaced / "db") == "tmpfs"
    assert not lmdb_log.preallocation_helps(spaced)
    here = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE", "--target", str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert lmdb_log.file_system_type(tmp_path) == here
    assert lmdb_log.preallocation_helps(tmp_path) == (here in ("ext2", "ext3", "ext4", "xfs"))


@needs_root
async def test_store_writes_no_room_ahead_where_it_would_not_help(tmp_path: Path, tmpfs: list[Path]) -> None:
    fs = _mount(tmp_path / "mem", "32m", tmpfs)
    s = store_mod.Store(store_mod.StoreConfig(path=fs, map_size_mb=16, compaction_interval_seconds=0), memory_prefixes=[])
    await s.start()
    for i in range(64):
        await s.create(f"/core/configmaps/ns/c{i}", {"metadata": {"name": f"c{i}"}})
    await s.close()
    assert (fs / "db" / "data.mdb").stat().st_size < MiB // 2


@needs_root
def test_below_the_reserve_only_writes_that_free_space_are_taken(tmp_path: Path, tmpfs: list[Path]) -> None:
    """The rule behind 'a full disk never blocks deletes', write by write, on a real 8 MiB tmpfs
    with 2 MiB kept: creates and growing updates are refused (naming the reserve), deletes,
    shrinking updates and updates of an object being deleted are taken, in the same group."""
    fs = _mount(tmp_path / "small", "8m", tmpfs)
    db = lmdb_log.LmdbLog(fs / "db", map_size=64 * MiB, max_size=64 * MiB, reserve=2 * MiB)
    refused: errors.StoreError | None = None
    rev = 0
    while refused is None:
        batch = _batch(rev + 1, 8, size=20_000)
        outcomes = db.commit(batch, meta_rev=rev + 8, reserved=None)
        rev += 8
        refused = next((o for o in outcomes if isinstance(o, errors.StoreError)), None)
    assert isinstance(refused, errors.StoreFullError) and "kept for deletes" in str(refused)
    assert db.low_space
    keys = [f"/core/configmaps/ns/c{r:06d}" for r in range(1, 6)]

    def update(key: str, obj: dict[str, object], r: int) -> lmdb_log.Write:
        return lmdb_log.Write(op=records.Op.UPDATE, key=key, obj=obj, expect_revision=None, revision=r)

    group = [
        lmdb_log.Write(op=records.Op.DELETE, key=keys[0], obj=None, expect_revision=None, revision=rev + 1),
        update(keys[1], {"metadata": {"name": "c2"}, "data": {"x": "small"}}, rev + 2),
        update(keys[2], {"metadata": {"name": "c3", "deletionTimestamp": "2026-01-01T00:00:00Z"},
                         "data": {"x": "y" * 20_001}}, rev + 3),
        update(keys[3], {"metadata": {"name": "c4"}, "data": {"x": "y" * 30_000}}, rev + 4),
        lmdb_log.Write(op=records.Op.CREATE, key="/core/configmaps/ns/new", obj={"metadata": {"name": "new"}},
                       expect_revision=None, revision=rev + 5),
    ]
    outcomes = db.commit(group, meta_rev=rev + 5, reserved=None)
    taken = [isinstance(o, lmdb_log.Applied) for o in outcomes]
    assert taken == [True, True, True, False, False], outcomes
    assert all(isinstance(o, errors.StoreFullError) for o in outcomes[3:])
    db.close()


def test_the_servers_lock_file_lives_in_memory_and_tools_follow_it(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """LMDB's lock file (written by every read transaction) is kept off the flash by the server
    through a link; a tool opening the database meanwhile, or after a reboot emptied the memory
    dir, follows the link; a clean close leaves plain files behind."""
    memory = tmp_path / "mem"
    monkeypatch.setattr(memdir, "memory_dir", lambda **_: memory)
    db = tmp_path / "db"
    server = lmdb_log.LmdbLog(db, map_size=1 << 20, max_size=1 << 20, lock_in_memory=True)
    lock = db / lmdb_log.LOCK_FILE
    own = memdir.for_path(db)
    assert own is not None and lock.is_symlink() and Path(os.readlink(lock)) == own / lmdb_log.LOCK_FILE
    assert (own / lmdb_log.LOCK_FILE).is_file() and (own / memdir.OWNER).read_text() == f"{db.resolve()}\n"
    server.close()
    assert not lock.exists() and not lock.is_symlink() and not memory.exists()
    # Killed, then a reboot: the link is left, its target gone; a tool opens through it.
    server = lmdb_log.LmdbLog(db, map_size=1 << 20, max_size=1 << 20, lock_in_memory=True)
    server._env.close()  # as a killed process leaves it (no clean close)
    shutil.rmtree(memory)
    tool = lmdb_log.LmdbLog(db, map_size=1 << 20, max_size=1 << 20)
    assert lock.is_symlink() and (own / lmdb_log.LOCK_FILE).is_file()
    tool.close()
    assert lock.is_symlink()  # a tool leaves the server's link as it found it
    # A server where no memory dir is to be had (any more) turns the link back into a plain file.
    monkeypatch.setattr(memdir, "memory_dir", lambda **_: None)
    server = lmdb_log.LmdbLog(db, map_size=1 << 20, max_size=1 << 20, lock_in_memory=True)
    assert lock.is_file() and not lock.is_symlink()
    server.close()
