"""The durable tier: a revision log on LMDB, following kine's log-structured model.

Three named databases in one LMDB environment:

- `log`:   8-byte big-endian revision -> msgpack `[key, op, prev_revision, value]`. Every write
  is one record; a delete record carries the object's last state (at the delete revision) so a
  replayed watch can emit DELETED with the object.
- `index`: key -> revision of its latest record, for live keys only. A read is two lookups.
- `meta`:  `rev` (highest revision written), `reserved` (highest revision handed to the memory
  tier, so revisions stay monotonic across restarts without writing per heartbeat) and
  `compacted` (records at or below it may be gone; watches from there answer 410).

All methods are synchronous. Writes (`commit`, `compact`) run on the store's single writer
thread: LMDB allows one write transaction at a time anyway, and one thread keeps the commit order
equal to the revision order. Reads take their own read-only transaction and may run on the event
loop thread (they are memory-mapped page lookups) or on an executor for long scans.

Durability: the environment is opened with `sync=True`, so `commit` returns only once the
transaction is fsync'd. Many writes share one transaction (the group commit in `store.py`).

Room ahead: the log only grows until compaction frees pages for reuse, and a commit that writes
past the end of the file makes a file system that writes in place (ext4, xfs) allocate blocks,
so its fdatasync must also commit the file system's journal (a tenth to a fifth of a commit's
time on this project's test VM). With `preallocate`, the writer keeps up to that many bytes of
zeros written ahead of the database's last page, half a chunk or more at a time, so commits
write into blocks the file already has. While the file grows that writes about a quarter more
bytes (each chunk once as zeros) in fewer write requests (one sequential write instead of a
journal commit per fsync); once compaction holds the file at its size it writes nothing. It is
off on copy-on-write and log-structured file systems, where every write goes to new blocks
anyway. LMDB never reads past its last page, and after a crash the zeros are unused space.

Room for deletes: with `reserve`, the writer measures the room left (free disk, plus pages of
the file LMDB can reuse and zeros written ahead, within the map's maximum) once a second or as
it nears the reserve; below it, only writes that free space are taken (deletes, updates of
objects being deleted, updates that shrink an object) and the rest fail with `StoreFullError`,
one write at a time, never the whole group. A full disk can then always be freed through the API.

Damage: LMDB keeps no checksums. A record that does not decode is a `CorruptRecordError` (named
by key, noted in `damage` by scans, replays and compaction, which go on past it); a read LMDB
itself cannot do is a `DatabaseError`; a file shorter than its pages is refused at open, since
reading past its end would be a SIGBUS, not an exception.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import lmdb
import msgpack

from edgekube._cogs import memdir
from edgekube.store import errors, records

_REV = struct.Struct(">Q")
_META_REV = b"rev"
_META_RESERVED = b"reserved"
_META_COMPACTED = b"compacted"
_META_CLUSTER = b"cluster"

log = logging.getLogger(__name__)

# File systems that overwrite a file's blocks in place: there, blocks the file already has cost
# no allocation (and no journal commit) when LMDB writes into them.
_IN_PLACE_FILE_SYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs"})
_ZEROS = bytes(1 << 16)
# Free space below which a failed write is taken for a full disk.
_LOW_SPACE = 1 << 20
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def rev_bytes(rev: int) -> bytes:
    return _REV.pack(rev)


def rev_int(data: bytes) -> int:
    out: int = _REV.unpack(data)[0]
    return out


@dataclasses.dataclass(slots=True)
class Write:
    """One write in a group-commit batch. `revision` is assigned before the batch commits."""

    op: records.Op
    key: str
    obj: dict[str, Any] | None
    expect_revision: int | None
    revision: int = 0


@dataclasses.dataclass(slots=True)  # one per write; not frozen, which costs ~1 us per instance
class Applied:
    revision: int
    value: bytes
    prev_value: bytes | None


Outcome = Applied | errors.StoreError


@dataclasses.dataclass(slots=True)
class LogRecord:
    revision: int
    key: str
    op: records.Op
    prev_revision: int
    value: bytes


def _set_resource_version(obj: dict[str, Any], rev: int) -> None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        obj["metadata"] = meta
    meta["resourceVersion"] = str(rev)


class ValueTransformer(Protocol):
    """Changes the values of some keys on their way to and from the disk (store/encryption.py):
    the log stores what `to_storage` gives and hands upward what `from_storage` gives back,
    which raises `CorruptRecordError` for a value it cannot turn back."""

    def covers(self, key: str) -> bool: ...

    def to_storage(self, key: str, value: bytes) -> bytes: ...

    def from_storage(self, key: str, value: bytes, *, revision: int) -> bytes: ...


def _unpack_record(rev: int, data: bytes, *, key: str = "") -> LogRecord:
    """A log record from its bytes; `CorruptRecordError` (naming `key` when the caller knows it)
    when they are not one."""
    try:
        rkey, op, prev, value = msgpack.unpackb(data, raw=False)
        rec = LogRecord(revision=rev, key=rkey, op=records.Op(op), prev_revision=prev, value=value)
    except Exception as exc:  # damaged bytes: msgpack's errors, a wrong shape, an unknown op
        raise errors.CorruptRecordError(key, revision=rev, detail=f"log record: {type(exc).__name__}: {exc}") from None
    if not (isinstance(rec.key, str) and isinstance(rec.prev_revision, int) and isinstance(rec.value, bytes)) \
            or (key and rec.key != key):
        raise errors.CorruptRecordError(key or str(rec.key)[:200], revision=rev, detail="log record has a wrong shape")
    return rec


def file_system_type(path: Path) -> str:
    """The type of the file system holding `path` (`ext4`, `tmpfs`, ...), from the mount table;
    empty when it cannot be told."""
    target = os.path.realpath(path)
    best, best_type = "", ""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    for line in lines:
        # id parent major:minor root mount-point options [optional...] - type source options
        fields, sep, rest = line.partition(" - ")
        parts = fields.split(" ")
        if not sep or len(parts) < 5:
            continue
        mount = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), parts[4])
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, best_type = mount, rest.split(" ", 1)[0]
    return best_type


def preallocation_helps(path: Path) -> bool:
    """Whether zeros written ahead save commits a journal flush on the file system of `path`."""
    return file_system_type(path) in _IN_PLACE_FILE_SYSTEMS


class _MapGate:
    """Transactions share the map; growing it (`set_mapsize`) is exclusive.

    LMDB remaps the file on `mdb_env_set_mapsize` and requires that no transaction of the
    process is open meanwhile. py-lmdb invalidates the open ones of other threads and fails the
    operations that start during the remap (an `lmdb.Error` that would read as a damaged
    database), and a write transaction's abort waits until no operation of any thread is in
    flight, which busy readers can put off for ever. So every transaction enters `shared()`;
    the writer `hold()`s the gate as soon as its transaction finds the map full (new
    transactions wait, so the abort that follows waits only for those in flight), and grows the
    map inside `exclusive()`, which waits for the open ones to end and always reopens the gate.
    A thread already inside may nest: it is never the one waited for.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active = 0  # threads inside `shared()`
        self._holder: int | None = None  # the thread that holds new transactions back
        self._depth = threading.local()

    def enter(self) -> None:
        """Into the shared side (see `shared`); `leave` once for each `enter`."""
        depth: int = getattr(self._depth, "n", 0)
        if depth == 0:
            me = threading.get_ident()
            with self._cond:
                while self._holder is not None and self._holder != me:
                    self._cond.wait()
                self._active += 1
        self._depth.n = depth + 1

    def leave(self) -> None:
        depth: int = self._depth.n - 1
        self._depth.n = depth
        if depth == 0:
            with self._cond:
                self._active -= 1
                if self._active == 0:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()

    def hold(self) -> None:
        """New transactions (of other threads) wait until this thread's `exclusive()` ends."""
        me = threading.get_ident()
        with self._cond:
            while self._holder is not None and self._holder != me:
                self._cond.wait()
            self._holder = me

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        if getattr(self._depth, "n", 0):
            raise RuntimeError("the LMDB map cannot grow while this thread has a transaction open")
        self.hold()
        try:
            with self._cond:
                while self._active:
                    self._cond.wait()
            yield
        finally:
            with self._cond:
                self._holder = None
                self._cond.notify_all()


LOCK_FILE = "lock.mdb"


# Records a list reads from LMDB in one go before decoding them (see `LmdbLog.scan`).
_SCAN_BATCH = 256


def open_readonly(path: Path) -> lmdb.Environment:
    """A read-only environment on the database at `path` beside whoever else has it open (a
    running server): it shares their lock file (the reader table), following the server's link
    into memory, so no writer reuses a page this reader still reads."""
    _place_lock_file(path, move=False)
    return lmdb.open(str(path), readonly=True, max_dbs=4, subdir=True, lock=True)


def _place_lock_file(path: Path, *, move: bool) -> Path | None:
    """LMDB's lock file (its reader table: every read transaction writes its slot there, and a
    page written back costs the file an inode update too) in memory (`_cogs.memdir`) when
    `move`, through a symbolic link in its place: it describes only the processes that have the
    database open, so a reboot may lose it (LMDB makes it anew). A link found here (a server
    running, or killed) is followed by every opener, its directory made again after a reboot;
    a clean close removes link and file. Returns the directory `move` placed it in."""
    lock = path / LOCK_FILE
    own = memdir.claim(path) if move else None
    if lock.is_symlink():
        target = Path(os.readlink(lock))
        if own is not None and target == own / LOCK_FILE:
            return own
        if not move:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            return None
        if own is None:  # no memory dir here (any more): a plain file again, made by LMDB
            lock.unlink()
            return None
    elif own is None:
        return None
    link = path / (LOCK_FILE + ".link")
    link.unlink(missing_ok=True)
    link.symlink_to(own / LOCK_FILE)
    os.replace(link, lock)  # the server holds the data dir's lock: no process has the old one open
    return own


class LmdbLog:
    def __init__(self, path: Path, *, map_size: int, max_size: int, preallocate: int = 0,
                 damage: records.Damage | None = None, reserve: int = 0,
                 transformer: ValueTransformer | None = None, lock_in_memory: bool = False) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock_dir = _place_lock_file(path, move=lock_in_memory)
        # Where scans and replays note the records they had to skip.
        self.damage = damage if damage is not None else records.Damage()
        self._max_size = max(max_size, map_size)
        self._gate = _MapGate()
        self._env = lmdb.open(
            str(path),
            map_size=map_size,
            max_dbs=4,
            subdir=True,
            sync=True,
            metasync=True,
            readahead=False,
            # Zeroed page buffers: with meminit off, LMDB writes whatever the heap held into the
            # unused part of each page, and that may be a decrypted Secret.
            meminit=True,
            max_readers=126,
            mode=0o600,
        )
        # Before any page is read: one past the file's end would kill the process (SIGBUS).
        short = missing_bytes(self._env, path / "data.mdb")
        if short:
            self._env.close()
            raise errors.DatabaseError(path, lmdb.CorruptedError(
                f"the file is truncated: {short} bytes of its pages are missing"))
        # One packer for the writer thread's encodes (`msgpack.packb` builds a new one per call);
        # the bytes are the same as `records.encode` gives.
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._transformer = transformer
        # Records handed upward: their values as they were before the transformer.
        self._unpack = _unpack_record if transformer is None else self._unpack_plain
        self._log = self._env.open_db(b"log")
        self._index = self._env.open_db(b"index")
        self._meta = self._env.open_db(b"meta")
        self._page_size: int = self._env.stat()["psize"]
        self._preallocate = preallocate
        self._data_fd = -1
        self._allocated = 0
        self._retry_after = 0
        if preallocate > 0:
            self._data_fd = os.open(path / "data.mdb", os.O_RDWR | os.O_CLOEXEC)
            self._allocated = os.fstat(self._data_fd).st_size
        # Room kept for deletes (see `room`): below it only writes that free space are taken.
        # (At most an eighth of the map's maximum: a tiny store must still take writes.)
        self._reserve = min(reserve, self._max_size // 8)
        self._map_bound = False  # whether the map's maximum, not the disk, limits the room
        self._room = -1  # estimate: the last measure, less what commits wrote since
        self._room_measured = 0.0
        self.low_space = False

    @contextlib.contextmanager
    def _begin(self, *, write: bool = False, buffers: bool = False) -> Iterator[Any]:
        """A transaction, never open while the writer grows the map (`_MapGate`)."""
        with self._gate.shared(), (self._env.begin(write=write, buffers=True) if buffers
                                   else self._env.begin(write=write)) as txn:
            yield txn

    def copy_to(self, dest: Path) -> None:
        """LMDB's compacting copy of the database into the empty directory `dest`: one read
        transaction's view, taken while writes go on (a snapshot). Blocking: run it off the loop."""
        with self._gate.shared():
            self._env.copy(str(dest), compact=True)

    def _unpack_plain(self, rev: int, data: bytes, *, key: str = "") -> LogRecord:
        """A record with its value as it was before the transformer (CorruptRecordError when
        it cannot be turned back)."""
        rec = _unpack_record(rev, data, key=key)
        assert self._transformer is not None
        if self._transformer.covers(rec.key):
            rec.value = self._transformer.from_storage(rec.key, rec.value, revision=rev)
        return rec

    def close(self) -> None:
        if self._data_fd >= 0:
            os.close(self._data_fd)
            self._data_fd = -1
        self._env.close()
        if self._lock_dir is not None:
            # Nobody else has it open (the data dir's lock is held until the process ends): the
            # link goes too, so that a stopped node's data dir copies as plain files.
            with contextlib.suppress(OSError):
                if (self._path / LOCK_FILE).is_symlink():
                    (self._path / LOCK_FILE).unlink()
            (self._lock_dir / LOCK_FILE).unlink(missing_ok=True)
            memdir.release(self._lock_dir)

    # --- state -------------------------------------------------------------------------------

    def state(self) -> tuple[int, int, int]:
        """(highest revision written, highest reserved for the memory tier, compacted revision)."""
        with self._reading(), self._begin() as txn:
            return (
                self._meta_int(txn, _META_REV),
                self._meta_int(txn, _META_RESERVED),
                self._meta_int(txn, _META_COMPACTED),
            )

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """LMDB's own read failures (a damaged page: MDB_CORRUPTED, MDB_PAGE_NOTFOUND) become a
        `DatabaseError` that names the database."""
        try:
            yield
        except lmdb.Error as exc:
            raise errors.DatabaseError(self._path, exc) from None

    def cluster_id(self) -> str | None:
        """The cluster this database belongs to (store identity); None before it was set."""
        with self._begin() as txn:
            raw = txn.get(_META_CLUSTER, db=self._meta)
        return bytes(raw).decode() if raw is not None else None

    def set_cluster_id(self, cluster: str) -> None:
        with self._begin(write=True) as txn:
            txn.put(_META_CLUSTER, cluster.encode(), db=self._meta)

    def raise_floor(self, revision: int) -> None:
        """Revisions go on above `revision`, and nothing older is served (410 for watches and
        lists from before): after a store was recovered, adopted or reset, so that clients never
        see a resourceVersion go backwards."""
        with self._begin(write=True) as txn:
            for name in (_META_REV, _META_RESERVED, _META_COMPACTED):
                if self._meta_int(txn, name) < revision:
                    txn.put(name, rev_bytes(revision), db=self._meta)

    def load(self, entries: list[tuple[str, int, bytes]]) -> None:
        """Write live objects `(key, revision, encoded value)` in revision order into an empty
        database, in one transaction (`edgekube store recover`)."""
        with self._begin(write=True) as txn:
            for key, rev, value in entries:
                raw_rev = rev_bytes(rev)
                txn.put(raw_rev, self._pack([key, int(records.Op.CREATE), 0, value]), db=self._log, append=True)
                txn.put(key.encode(), raw_rev, db=self._index)

    def walk(self) -> int:
        """Touch every page of every tree once (keys and values, no decoding): LMDB checks each
        page it reads, so structural damage raises here (`lmdb.Error`) rather than later, in
        the middle of serving. Returns the number of entries."""
        n = 0
        with self._begin(buffers=True) as txn:
            for db in (self._meta, self._index, self._log):
                # Getting a value reads its overflow pages' header too (big objects).
                for _ in txn.cursor(db=db).iternext(keys=True, values=True):
                    n += 1
        return n

    def _meta_int(self, txn: Any, name: bytes) -> int:
        raw = txn.get(name, db=self._meta)
        return rev_int(raw) if raw is not None else 0

    # --- reads -------------------------------------------------------------------------------

    def get(self, key: str) -> records.Item | None:
        # `_reading` and `_begin` written out: the store's most frequent call (every GET).
        self._gate.enter()
        try:
            with self._env.begin() as txn:
                raw_rev = txn.get(key.encode(), db=self._index)
                if raw_rev is None:
                    return None
                rev = rev_int(raw_rev)
                rec = self._unpack(rev, txn.get(raw_rev, db=self._log) or b"", key=key)
                return records.Item(key=key, revision=records.Revision(rev), value=rec.value)
        except lmdb.Error as exc:
            raise errors.DatabaseError(self._path, exc) from None
        finally:
            self._gate.leave()

    def scan(
        self,
        prefix: str,
        *,
        start_after: str | None,
        limit: int | None,
        accept: Callable[[bytes], bool] | None = None,
    ) -> records.Page:
        """Live keys under `prefix` in key order, from one consistent snapshot.

        `accept` filters on the encoded value (selectors); `limit` counts accepted items, as the
        Kubernetes API counts after filtering.
        """
        items: list[records.Item] = []
        next_key: str | None = None
        pfx = prefix.encode()
        with self._reading(), self._begin(buffers=False) as txn:
            snapshot_rev = self._meta_int(txn, _META_REV)
            cursor = txn.cursor(db=self._index)
            start = (start_after.encode() + b"\x00") if start_after else pfx
            if not cursor.set_range(start):
                return records.Page(items=[], revision=records.Revision(snapshot_rev), next_key=None)
            log_cursor = txn.cursor(db=self._log)
            pairs = iter(cursor)
            more = True
            while more and next_key is None:
                # Every LMDB call releases the interpreter lock, and each release wakes a thread
                # waiting for it (the event loop) only for this one to take it back at once: so the
                # records of a batch are read back to back, and decoded (selectors) afterwards, in
                # a stretch without releases, where the waiter's timed wait asks for the lock and
                # gets it. Without `accept`, no more is read than the limit needs.
                want = _SCAN_BATCH if accept is not None or limit is None else min(_SCAN_BATCH, limit - len(items) + 1)
                batch = []
                for raw_key, raw_rev in pairs:
                    if not raw_key.startswith(pfx):
                        more = False
                        break
                    data = log_cursor.get(raw_rev)
                    if data is not None:
                        batch.append((raw_key, raw_rev, data))
                        if len(batch) >= want:
                            break
                else:
                    more = False
                for raw_key, raw_rev, data in batch:
                    if limit is not None and len(items) >= limit:
                        # There is at least one more live key: the list continues after the last one.
                        next_key = items[-1].key
                        break
                    try:
                        rec = self._unpack(rev_int(raw_rev), data, key=raw_key.decode(errors="replace"))
                    except errors.CorruptRecordError as exc:
                        self.damage.note(exc, reader="a list")
                        continue
                    if accept is not None and not accept(rec.value):
                        continue
                    items.append(records.Item(key=rec.key, revision=records.Revision(rec.revision), value=rec.value))
        return records.Page(items=items, revision=records.Revision(snapshot_rev), next_key=next_key)

    def read_log(self, after: int, *, prefix: str, limit: int) -> list[LogRecord]:
        """Records with revision > `after` whose key starts with `prefix`, oldest first."""
        out: list[LogRecord] = []
        with self._reading(), self._begin(buffers=False) as txn:
            cursor = txn.cursor(db=self._log)
            if not cursor.set_range(rev_bytes(after + 1)):
                return out
            for raw_rev, data in cursor:
                try:
                    rec = self._unpack(rev_int(raw_rev), data)
                except errors.CorruptRecordError as exc:
                    self.damage.note(exc, reader="a watch replay")
                    continue
                if rec.key.startswith(prefix):
                    out.append(rec)
                    if len(out) >= limit:
                        break
        return out

    def iter_records(self) -> Iterator[LogRecord]:
        """Every record in revision order (for tests and tools; takes a snapshot)."""
        with self._begin(buffers=False) as txn:
            for raw_rev, data in txn.cursor(db=self._log):
                yield self._unpack(rev_int(raw_rev), data)

    # --- writes (writer thread only) ---------------------------------------------------------

    def commit(self, writes: list[Write], *, meta_rev: int, reserved: int | None) -> list[Outcome]:
        """Apply `writes` in order in one durable transaction; per-write outcome, same order.

        A write that fails its precondition gets its error and changes nothing; the others
        still commit. If the transaction itself fails (disk full, I/O error), every write fails.
        """
        while True:
            try:
                return self._commit_once(writes, meta_rev=meta_rev, reserved=reserved)
            except lmdb.MapFullError:
                # Doubled until the batch fits: one batch may need more than twice the map.
                if self._grow():
                    continue
                raise errors.StoreFullError(
                    f"the database at {self._path} reached its maximum size of "
                    f"{self._max_size // (1 << 20)} MiB (store.max-size-mb)"
                ) from None
            except lmdb.Error as exc:
                if _is_enospc(exc) or (_is_eio(exc) and self._out_of_space()):
                    raise errors.StoreFullError(f"no space left on the device holding {self._path}") from exc
                raise errors.StoreError(f"database write failed at {self._path}: {exc}") from exc

    def _keep_room_ahead(self) -> None:
        """Zero-fill the next chunk of the file when less than half a chunk is left after the
        database's last page (never past the map size: LMDB maps no further)."""
        info = self._env.info()
        # The file ends at LMDB's last page (or later, at our zeros); never write below it.
        used = (info["last_pgno"] + 1) * self._page_size
        if self._allocated - used >= self._preallocate // 2 or used < self._retry_after:
            return
        end = min(used + self._preallocate, info["map_size"])
        fd, pos = self._data_fd, max(self._allocated, used)
        if pos >= end:
            return  # at the map's end: nothing to add until the map grows
        try:
            while pos < end:
                pos += os.pwrite(fd, _ZEROS[: end - pos], pos)
            os.fdatasync(fd)
        except OSError as exc:
            # Commits go on growing the file themselves (and report a full disk if their own
            # pages no longer fit). Tried again once the database has grown half a chunk.
            log.warning("could not write room ahead in %s: %s", self._path, exc)
            self._allocated = max(used, os.fstat(fd).st_size)
            self._retry_after = used + self._preallocate // 2
            return
        self._allocated = end

    def _out_of_space(self) -> bool:
        """Whether the disk is (all but) full: LMDB reports a write cut short by a full disk as
        EIO, without the ENOSPC behind it."""
        try:
            st = os.statvfs(self._path)
        except OSError:
            return False
        # f_bavail, even for root: ext4 keeps clusters that nobody may take, and counts them
        # in f_bfree; once a write of root's fails for space, f_bavail is 0.
        return st.f_bavail * st.f_frsize < _LOW_SPACE

    def room(self, txn: Any) -> int:
        """Bytes the database can still write: free disk, plus pages of the file LMDB can reuse
        (freed by compaction and deletes) and zeros written ahead, within the map's maximum.

        The disk alone says little: the file never shrinks, so after deletes and compaction the
        room is inside it, not on the disk."""
        psize = self._page_size
        used = 2 + sum(st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
                       for st in (self._env.stat(), *(txn.stat(db) for db in (self._log, self._index, self._meta))))
        high = self._env.info()["last_pgno"] + 1
        try:
            st = os.statvfs(self._path)
            disk = st.f_bavail * st.f_frsize
        except OSError:
            disk = 0
        try:
            size = os.stat(self._path / "data.mdb").st_size
        except OSError:
            size = high * psize
        inside = max(0, high - used) * psize + max(0, size - high * psize)
        in_map = self._max_size - used * psize
        self._map_bound = in_map < disk + inside
        return int(max(0, min(disk + inside, in_map)))

    def _update_low_space(self, txn: Any) -> None:
        """Whether the room is below the reserve, measured again when the estimate nears it or
        once a second (a measure costs a statvfs and four B-tree stats: not per commit)."""
        if self._reserve <= 0:
            return
        now = time.monotonic()
        if self._room < 4 * self._reserve or now - self._room_measured > 1.0:
            self._room = self.room(txn)
            self._room_measured = now
            low = self._room < self._reserve
            if low != self.low_space:
                self.low_space = low
                if low:
                    log.warning("the database at %s has %.1f MiB of room left, below the %.0f MiB kept for deletes: "
                                "only deletes and writes that free space are taken until space is freed",
                                self._path, self._room / (1 << 20), self._reserve / (1 << 20))
                else:
                    log.warning("the database at %s has room again (%.1f MiB): writes are taken", self._path,
                                self._room / (1 << 20))

    def _refuses(self, w: Write, prev_value: bytes | None, *, size: int) -> errors.StoreFullError | None:
        """In low space: a write that would grow the database is refused. Deletes, updates of
        objects on their way out (deletionTimestamp set: finalizers removed, the status a
        terminating pod reports) and updates that shrink an object (to `size` encoded bytes)
        are taken (the reserve is for them), so a user can always free space through the API."""
        if not self.low_space or w.op is records.Op.DELETE:
            return None
        if w.op is records.Op.UPDATE and w.obj is not None:
            meta = w.obj.get("metadata")
            if isinstance(meta, dict) and meta.get("deletionTimestamp"):
                return None
            if prev_value is not None and size <= len(prev_value):
                return None
        limit = (f"its maximum size of {self._max_size // (1 << 20)} MiB (store.max-size-mb)" if self._map_bound
                 else "the disk")
        return errors.StoreFullError(
            f"the database at {self._path} has {max(self._room, 0) / (1 << 20):.1f} MiB of room left within {limit}, "
            f"below the {self._reserve / (1 << 20):.1f} MiB kept for deletes (store.reserve-mb): only deletes and "
            "writes that free space are accepted until space is freed (delete objects, or free disk space)")

    def _grow(self) -> bool:
        """Double the map (up to its maximum); False when it is at its maximum already. Ends
        the hold the writer took when its transaction found the map full."""
        with self._gate.exclusive():
            current = self._env.info()["map_size"]
            if current >= self._max_size:
                return False
            self._env.set_mapsize(min(self._max_size, current * 2))
            return True

    def _commit_once(self, writes: list[Write], *, meta_rev: int, reserved: int | None) -> list[Outcome]:
        outcomes: list[Outcome] = []
        with self._begin(write=True, buffers=False) as txn:
            if self._data_fd >= 0:
                # Inside the write transaction: LMDB's writer lock is held, and none of this
                # transaction's pages are written yet (they go out at commit).
                self._keep_room_ahead()
            self._update_low_space(txn)
            try:
                for w in writes:
                    outcomes.append(self._apply(txn, w))
                if meta_rev > self._meta_int(txn, _META_REV):
                    txn.put(_META_REV, rev_bytes(meta_rev), db=self._meta)
                if reserved is not None:
                    txn.put(_META_RESERVED, rev_bytes(reserved), db=self._meta)
            except lmdb.MapFullError:
                # Before the abort: it waits for every operation in flight, and new ones must
                # not keep it waiting. `commit` grows the map next, which reopens the gate.
                self._gate.hold()
                raise
        return outcomes

    def _apply(self, txn: Any, w: Write) -> Outcome:
        raw_key = w.key.encode()
        raw_rev = rev_bytes(w.revision)
        if w.op is records.Op.CREATE and self.low_space:
            refused = self._refuses(w, None, size=0)
            assert refused is not None  # a create always grows the database
            return refused
        if w.op is records.Op.CREATE:
            # One index lookup: the entry goes in only where there is none.
            if not txn.put(raw_key, raw_rev, db=self._index, overwrite=False):
                return errors.KeyExistsError(w.key)
            cur = 0
            prev_value = None
        else:
            raw_cur = txn.get(raw_key, db=self._index)
            if raw_cur is None:
                return errors.NotFoundError(w.key)
            cur = rev_int(raw_cur)
            if w.expect_revision is not None and w.expect_revision != cur:
                return errors.ConflictError(w.key, expected=w.expect_revision, actual=cur)
            try:
                prev_value = self._unpack(cur, txn.get(raw_cur, db=self._log) or b"", key=w.key).value
            except errors.CorruptRecordError as exc:
                if w.op is not records.Op.DELETE:
                    return exc  # an outcome, never a raise: the rest of the group commits
                prev_value = None
        if w.op is records.Op.DELETE:
            obj_or_error = deleted_state(w, prev_value, revision=cur)
            if isinstance(obj_or_error, errors.CorruptRecordError):
                return obj_or_error
            obj = obj_or_error
            if obj is w.obj:
                prev_value = None  # unreadable: no consumer should try to decode it
        else:
            assert w.obj is not None
            obj = w.obj
        _set_resource_version(obj, w.revision)
        value: bytes = records.encode_in_pieces(obj, small=self._pack)  # a large one in pieces
        if self.low_space and (refused := self._refuses(w, prev_value, size=len(value))) is not None:
            return refused  # before anything is written: the index and log stay as they were
        # The room estimate between measures: the record, its index entry, some page slack.
        self._room -= 2 * len(value) + 512
        stored = value
        if self._transformer is not None and self._transformer.covers(w.key):
            stored = self._transformer.to_storage(w.key, value)
        # Revisions only grow: appending fills log pages instead of splitting them in half.
        txn.put(raw_rev, self._pack([w.key, int(w.op), cur, stored]), db=self._log, append=True)
        if w.op is records.Op.DELETE:
            txn.delete(raw_key, db=self._index)
        elif w.op is records.Op.UPDATE:
            txn.put(raw_key, raw_rev, db=self._index)
        return Applied(revision=w.revision, value=value, prev_value=prev_value)

    def compact(self, upto: int, *, batch: int) -> tuple[int, bool]:
        """Drop what no read at a revision > `upto` can need; at most `batch` records per call.

        As etcd compacts: a record goes once a later record of its key with revision <= `upto`
        supersedes it, and a delete record (tombstone) goes once it is <= `upto`. So every key's
        state at any revision >= the compacted one can still be rebuilt from the log (consistent
        list pages, `scan_at`), and watches from there replay every change. Returns the new
        compacted revision and whether it reached `upto`.
        """
        with self._begin(write=True, buffers=False) as txn:
            start = self._meta_int(txn, _META_COMPACTED)
            if start >= upto:
                return start, True
            cursor = txn.cursor(db=self._log)
            examined = 0
            reached = start
            done = True
            if cursor.set_range(rev_bytes(start + 1)):
                while True:
                    raw_rev = cursor.key()
                    rev = rev_int(raw_rev)
                    if rev > upto:
                        break
                    if examined >= batch:
                        done = False
                        break
                    examined += 1
                    reached = rev
                    try:
                        rec = _unpack_record(rev, cursor.value())
                    except errors.CorruptRecordError as exc:
                        # Kept as it is (what it superseded cannot be told); compaction goes on.
                        self.damage.note(exc, reader="compaction")
                        if not cursor.next():
                            break
                        continue
                    if rec.prev_revision:
                        txn.delete(rev_bytes(rec.prev_revision), db=self._log)
                    if rec.op == records.Op.DELETE:
                        # cursor.delete() moves to the next record.
                        cursor.delete()
                        if not cursor.key():
                            break
                        continue
                    if not cursor.next():
                        break
            new = upto if done else reached
            txn.put(_META_COMPACTED, rev_bytes(new), db=self._meta)
        return new, done

    def scan_at(
        self,
        prefix: str,
        *,
        revision: int,
        start_after: str | None,
        limit: int | None,
        accept: Callable[[bytes], bool] | None = None,
    ) -> records.Page:
        """Keys under `prefix` as they were at `revision` (>= the compacted revision), in key
        order: the later pages of a paged list see the same snapshot as the first one.

        Live keys changed since are walked back along their `prev_revision` chain; keys deleted
        since are found through their delete records.
        """
        pfx = prefix.encode()
        with self._reading(), self._begin(buffers=False) as txn:
            compacted = self._meta_int(txn, _META_COMPACTED)
            if revision < compacted:
                raise errors.CompactedError(revision, oldest=compacted)
            state: dict[str, LogRecord] = {}

            def version_at(rec: LogRecord) -> LogRecord | None:
                while rec.revision > revision:
                    if not rec.prev_revision:
                        return None
                    data = txn.get(rev_bytes(rec.prev_revision), db=self._log)
                    if data is None:
                        raise errors.CompactedError(revision, oldest=compacted)
                    rec = _unpack_record(rec.prev_revision, data)
                return None if rec.op == records.Op.DELETE else rec

            cursor = txn.cursor(db=self._index)
            start = (start_after.encode() + b"\x00") if start_after else pfx
            if cursor.set_range(start):
                for raw_key, raw_rev in cursor:
                    if not raw_key.startswith(pfx):
                        break
                    data = txn.get(raw_rev, db=self._log)
                    if data is None:
                        continue
                    try:
                        found = version_at(_unpack_record(rev_int(raw_rev), data, key=raw_key.decode(errors="replace")))
                    except errors.CorruptRecordError as exc:
                        self.damage.note(exc, reader="a paged list")
                        continue
                    if found is not None:
                        state[found.key] = found
            log = txn.cursor(db=self._log)
            if log.set_range(rev_bytes(revision + 1)):
                for raw_rev, data in log:
                    try:
                        rec = _unpack_record(rev_int(raw_rev), data)
                        if rec.op != records.Op.DELETE or not rec.key.startswith(prefix) or rec.key in state:
                            continue
                        if start_after is not None and rec.key <= start_after:
                            continue
                        found = version_at(rec)
                    except errors.CorruptRecordError as exc:
                        self.damage.note(exc, reader="a paged list")
                        continue
                    if found is not None:
                        state[found.key] = found
        items: list[records.Item] = []
        next_key: str | None = None
        for key in sorted(state):
            rec = state[key]
            if self._transformer is not None and self._transformer.covers(key):
                try:
                    rec.value = self._transformer.from_storage(key, rec.value, revision=rec.revision)
                except errors.CorruptRecordError as exc:
                    self.damage.note(exc, reader="a paged list")
                    continue
            if accept is not None and not accept(rec.value):
                continue
            if limit is not None and len(items) >= limit:
                next_key = items[-1].key
                break
            items.append(records.Item(key=key, revision=records.Revision(rec.revision), value=rec.value))
        return records.Page(items=items, revision=records.Revision(revision), next_key=next_key)

    # --- in-place rewrites (store/encryption.py's re-encryption) ---------------------------------

    def rewrite_values(
        self, prefix: str, change: Callable[[str, int, bytes], bytes | None], *, after: int, batch: int
    ) -> tuple[int, bool]:
        """Give `change` the key, revision and stored value (as on disk, before the transformer)
        of each record after revision `after` whose key starts with `prefix`, and store what it
        returns in its place (None: keep it), at the same revision. At most `batch` records per
        call, in one write transaction; returns the last revision examined and whether the log's
        end was reached. Safe while another process writes: LMDB serialises the transactions.
        Records that cannot be decoded are left as they are (the readers report them)."""
        pfx = prefix.encode()
        last = after
        with self._reading(), self._begin(write=True, buffers=False) as txn:
            cursor = txn.cursor(db=self._log)
            if not cursor.set_range(rev_bytes(after + 1)):
                return last, True
            for _ in range(batch):
                raw_rev, data = cursor.item()
                last = rev_int(raw_rev)
                # The key is the record's first field: skip other keys without unpacking them.
                if pfx in data[: len(pfx) + 8]:
                    try:
                        rec = _unpack_record(last, data)
                    except errors.CorruptRecordError:
                        rec = None
                    if rec is not None and rec.key.startswith(prefix):
                        new = change(rec.key, last, rec.value)
                        if new is not None:
                            cursor.put(raw_rev, self._pack([rec.key, int(rec.op), rec.prev_revision, new]))
                if not cursor.next():
                    return last, True
        return last, False

    def get_meta(self, name: bytes) -> bytes | None:
        with self._reading(), self._begin(buffers=False) as txn:
            out: bytes | None = txn.get(name, db=self._meta)
            return out

    def set_meta(self, name: bytes, value: bytes) -> None:
        with self._begin(write=True) as txn:
            txn.put(name, value, db=self._meta)

    def disk_usage(self) -> int:
        return sum(f.stat().st_size for f in self._path.iterdir() if f.is_file())


def missing_bytes(env: Any, data_file: Path) -> int:
    """How many bytes of the pages LMDB's meta page counts are missing from the file (a file cut
    short: by a full disk in a copy, a bad card, a careless truncate); 0 when it is whole."""
    needed = int((env.info()["last_pgno"] + 1) * env.stat()["psize"])
    try:
        size = data_file.stat().st_size
    except OSError:
        return 0
    return max(0, needed - size)


def deleted_state(w: Write, prev_value: bytes | None, *, revision: int) -> dict[str, Any] | errors.CorruptRecordError:
    """The last state a delete records (its tombstone and DELETED event carry it): the stored
    object, or, when that cannot be read, the stand-in the deleter gave (`w.obj`), so that a
    damaged object can always be deleted."""
    if prev_value is not None:
        try:
            return records.decode(prev_value, key=w.key, revision=revision)
        except errors.CorruptRecordError as exc:
            if w.obj is None:
                return exc
    if w.obj is None:
        return errors.CorruptRecordError(w.key, revision=revision, detail="log record unreadable")
    return w.obj


def _is_eio(exc: lmdb.Error) -> bool:
    return os.strerror(errno.EIO) in str(exc)


def _is_enospc(exc: lmdb.Error) -> bool:
    text = str(exc)
    return "No space left" in text or str(errno.ENOSPC) in text.split(":")[0] or os.strerror(errno.ENOSPC) in text
