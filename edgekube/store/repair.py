"""`edgekube store check | recover | adopt | reset`: see a damaged store, and the ways back.

- `check` reads everything and changes nothing (it may run beside a live server: LMDB readers
  never block the writer). It walks the log (every record decoded, its object's name matching
  its key, its resourceVersion its revision), the index (every live key pointing at a record of
  that key) and the meta table, and compares the database with the data dir's identity. Where
  LMDB itself cannot read a page it says so and carries on past it where it can.
- `recover` rebuilds the database from what is readable: the newest readable state of every key
  still alive, at its own revision. History goes (the compacted revision moves to the top, so
  watches from before answer 410 and clients relist, as after any compaction); what could not be
  read is listed. The damaged database is kept aside, never deleted.
- `adopt` accepts the database that is there as this data dir's (a backup put back on purpose,
  a database moved from another data dir), moving its revision up to what the data dir saw so
  resourceVersions never go backwards for clients.
- `reset` starts an empty cluster, keeping the old database aside; revisions go on from the
  last one seen, for the same reason.

The last three need the data dir's lock (the server stopped) and write the identity anew.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
import shutil
import struct
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import lmdb

from edgekube._cogs import child, files
from edgekube.store import encryption, errors, identity, lmdb_log, records

P = ParamSpec("P")
R = TypeVar("R")


@dataclasses.dataclass
class Finding:
    what: str  # the key (or "revision N" when no key is known)
    problem: str


@dataclasses.dataclass
class Report:
    database: Path
    identity: str  # what the identity check says
    revision: int = 0
    compacted: int = 0
    cluster: str | None = None
    records: int = 0
    live_keys: int = 0
    readable_objects: int = 0
    structural: list[str] = dataclasses.field(default_factory=list)  # LMDB could not read a page
    findings: list[Finding] = dataclasses.field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.structural and not self.findings and self.identity == "ok"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["database"] = str(self.database)
        out["healthy"] = self.healthy
        return out


def _lmdb_failures(fn: Callable[P, R]) -> Callable[P, R]:
    """LMDB's own failures leave as a `DatabaseError` naming the database."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except lmdb.Error as exc:
            raise errors.DatabaseError(args[0] if args else "", exc) from None

    return wrapper


def _name_of(key: str) -> tuple[str | None, str]:
    """(namespace, name) that an object stored at `key` must carry."""
    parts = key.split("/")  # "", group, resource, [namespace,] name
    if len(parts) == 5:
        return parts[3], parts[4]
    return None, parts[-1]


def _check_value(key: str, revision: int, value: bytes, *, deleted: bool,
                 transformer: encryption.Transformer | None) -> str | None:
    try:
        obj = records.decode(encryption.plain(transformer, key, revision, value), key=key, revision=revision)
    except errors.CorruptRecordError as exc:
        return exc.detail
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return "the object has no metadata"
    namespace, name = _name_of(key)
    if meta.get("name") != name or (namespace is not None and meta.get("namespace") not in (namespace, None)):
        return f"the object is named {meta.get('namespace')}/{meta.get('name')}, not as its key says"
    if not deleted and meta.get("resourceVersion") != str(revision):
        return f"its resourceVersion {meta.get('resourceVersion')!r} is not its revision {revision}"
    return None


def _tolerant(cursor: Any, report_to: list[str], where: str) -> Iterator[tuple[bytes, bytes]]:
    """A cursor's entries until LMDB fails to read a page; the failure is reported, not raised."""
    try:
        yield from cursor.iternext(keys=True, values=True)
    except lmdb.Error as exc:
        report_to.append(f"{where}: {exc}")


def _open_readonly(data_dir: Path) -> tuple[Any, Any, Any, Any]:
    return _open_readonly_dir(data_dir / identity.DB_DIR)


def _open_readonly_dir(db_dir: Path) -> tuple[Any, Any, Any, Any]:
    env = lmdb.open(str(db_dir), readonly=True, max_dbs=4, subdir=True, lock=True)
    try:
        return env, env.open_db(b"log", create=False), env.open_db(b"index", create=False), env.open_db(b"meta", create=False)
    except lmdb.Error:
        env.close()
        raise


def check(data_dir: Path) -> Report:
    report = Report(database=identity.db_file(data_dir), identity="ok")
    try:
        identity.verify_readonly(data_dir)
    except identity.StoreIdentityError as exc:
        report.identity = str(exc)
    if not report.database.exists() or report.database.stat().st_size == 0:
        return report

    def read(emit: child.Emit) -> None:
        _check_db(data_dir, report)
        emit(json.dumps(report.to_dict()).encode())

    # In a child: on some damage LMDB aborts rather than failing (see _cogs/child.py).
    frames, crash = child.run(read)
    if frames:
        got = json.loads(frames[-1])
        for name in ("revision", "compacted", "cluster", "records", "live_keys", "readable_objects", "structural"):
            setattr(report, name, got[name])
        report.findings = [Finding(f["what"], f["problem"]) for f in got["findings"]]
    if crash is not None:
        report.structural.append(f"LMDB {crash} while reading it (a damaged page; `edgekube store recover` "
                                 "reads what is readable)")
    return report


def _check_db(data_dir: Path, report: Report) -> None:
    transformer = encryption.for_data_dir(data_dir)  # Secrets are read as they were written
    try:
        env, log_db, index_db, meta_db = _open_readonly(data_dir)
    except lmdb.Error as exc:
        report.structural.append(f"LMDB cannot open it: {exc}")
        return
    short = lmdb_log.missing_bytes(env, report.database)
    if short:
        env.close()
        report.structural.append(f"the file is truncated: {short} bytes of its pages are missing "
                                 "(`edgekube store recover` reads what is left)")
        return
    try:
        with env.begin(buffers=False) as txn:
            meta = dict(_tolerant(txn.cursor(db=meta_db), report.structural, "meta table"))
            report.revision = lmdb_log.rev_int(meta[b"rev"]) if b"rev" in meta else 0
            report.compacted = lmdb_log.rev_int(meta[b"compacted"]) if b"compacted" in meta else 0
            report.cluster = meta[b"cluster"].decode() if b"cluster" in meta else None
            top = 0
            for raw_rev, data in _tolerant(txn.cursor(db=log_db), report.structural, "log"):
                rev = lmdb_log.rev_int(raw_rev)
                top = max(top, rev)
                report.records += 1
                try:
                    rec = lmdb_log._unpack_record(rev, data)
                except errors.CorruptRecordError as exc:
                    report.findings.append(Finding(f"revision {rev}", exc.detail))
                    continue
                problem = _check_value(rec.key, rev, rec.value, deleted=rec.op is records.Op.DELETE,
                                       transformer=transformer)
                if problem is not None:
                    report.findings.append(Finding(f"{rec.key} (revision {rev})", problem))
            if top > max(report.revision, lmdb_log.rev_int(meta[b"reserved"]) if b"reserved" in meta else 0):
                report.findings.append(Finding("meta", f"the revision counter {report.revision} is behind the log's {top}"))
            for raw_key, raw_rev in _tolerant(txn.cursor(db=index_db), report.structural, "index"):
                report.live_keys += 1
                key = raw_key.decode(errors="replace")
                data = txn.get(raw_rev, db=log_db)
                if data is None:
                    report.findings.append(Finding(key, f"the index points at revision {lmdb_log.rev_int(raw_rev)}, "
                                                        "which the log does not hold"))
                    continue
                try:
                    rec = lmdb_log._unpack_record(lmdb_log.rev_int(raw_rev), data, key=key)
                    records.decode(encryption.plain(transformer, key, rec.revision, rec.value), key=key,
                                   revision=rec.revision)
                    report.readable_objects += 1
                except errors.CorruptRecordError:
                    continue  # reported with the log
    except lmdb.Error as exc:
        report.structural.append(str(exc))
    finally:
        env.close()


def _latest_readable(data_dir: Path, lost: list[str]) -> tuple[dict[str, tuple[int, int, bytes]], dict[bytes, bytes]]:
    """key -> (revision, op, value) of the newest readable record of every key, from the log and
    the index both (either tree may be the damaged one); and the meta table."""
    transformer = encryption.for_data_dir(data_dir)  # values are kept as stored, checked decrypted
    env, _, _, _ = _open_readonly(data_dir)
    short = lmdb_log.missing_bytes(env, identity.db_file(data_dir))
    if short:
        # Read a copy padded with zeros to its full length: LMDB then finds bad pages (an
        # error) where it would otherwise read past the end of the file (SIGBUS).
        env.close()
        padded = data_dir / "db.padded"
        shutil.rmtree(padded, ignore_errors=True)
        padded.mkdir()
        shutil.copyfile(identity.db_file(data_dir), padded / "data.mdb")
        with open(padded / "data.mdb", "r+b") as f:
            f.truncate(identity.db_file(data_dir).stat().st_size + short)
        try:
            return _latest_readable_in(padded, lost, transformer=transformer)
        finally:
            shutil.rmtree(padded, ignore_errors=True)
    env.close()
    return _latest_readable_in(data_dir / identity.DB_DIR, lost, transformer=transformer)


def _latest_readable_in(db_dir: Path, lost: list[str], *, transformer: encryption.Transformer | None
                        ) -> tuple[dict[str, tuple[int, int, bytes]], dict[bytes, bytes]]:
    """The salvage proper. Every read of the damaged file happens in a child process (LMDB may
    abort on a bad page rather than fail): the children stream back what they read, and when
    one dies the next starts past the point it reached, skipping further each time no record
    came through (over a run of bad pages)."""
    latest: dict[str, tuple[int, int, bytes]] = {}

    def read_meta(emit: child.Emit) -> None:
        env, _, _, meta_db = _open_readonly_dir(db_dir)
        with env.begin(buffers=False) as txn:
            for key, value in _tolerant(txn.cursor(db=meta_db), [], "meta"):
                emit(_LEN.pack(len(key)) + key + value)

    frames, _ = child.run(read_meta)
    meta: dict[bytes, bytes] = {}
    for f in frames:
        (n,) = _LEN.unpack_from(f)
        meta[f[_LEN.size:_LEN.size + n]] = f[_LEN.size + n:]
    top = max([lmdb_log.rev_int(meta[k]) for k in (b"rev", b"reserved") if len(meta.get(k, b"")) == 8] or [0])

    def take(rev: int, data: bytes) -> None:
        try:
            rec = lmdb_log._unpack_record(rev, data)
        except errors.CorruptRecordError:
            return
        if rec.op is not records.Op.DELETE:
            try:
                records.decode(encryption.plain(transformer, rec.key, rev, rec.value), key=rec.key, revision=rev)
            except errors.CorruptRecordError:
                return
        if rec.key not in latest or latest[rec.key][0] < rev:
            latest[rec.key] = (rev, int(rec.op), rec.value)

    start, skip = 1, 1
    while start <= (top or _REV_MAX):

        def read_log(emit: child.Emit, start: int = start) -> None:
            env, log_db, _, _ = _open_readonly_dir(db_dir)
            with env.begin(buffers=False) as txn:
                cursor = txn.cursor(db=log_db)
                try:
                    if cursor.set_range(lmdb_log.rev_bytes(start)):
                        for raw_rev, data in cursor.iternext(keys=True, values=True):
                            if len(raw_rev) == 8:  # a damaged page can yield keys of any shape
                                emit(raw_rev + data)
                    emit(_DONE)
                except lmdb.Error:
                    pass

        frames, _ = child.run(read_log)
        last = start - 1
        for f in frames:
            if f == _DONE:
                last = -1
                break
            rev = lmdb_log.rev_int(f[:8]) if len(f) >= 8 else 0
            if not max(start, last + 1) <= rev <= (top or _REV_MAX):
                continue  # a key read off a damaged page: no revision of this log
            last = rev
            take(rev, f[8:])
        if last < 0:
            break
        if last >= start:
            start, skip = last + 1, 1  # progress: resume right after the last record read
        else:
            start, skip = start + skip, skip * 2  # none: jump ahead, further each time

    def read_index(emit: child.Emit) -> None:
        env, _, index_db, _ = _open_readonly_dir(db_dir)
        with env.begin(buffers=False) as txn:
            for key, raw_rev in _tolerant(txn.cursor(db=index_db), [], "index"):
                if len(raw_rev) == 8:
                    emit(raw_rev + key)

    frames, _ = child.run(read_index)
    for f in frames:
        key = f[8:].decode(errors="replace")
        if key not in latest or latest[key][1] == int(records.Op.DELETE):
            lost.append(key)  # alive, but no readable state of it is left
        elif latest[key][0] < lmdb_log.rev_int(f[:8]):
            lost.append(f"{key} (its newest state; an older one is kept)")
    return latest, meta


_DONE = b"\x00done"
_REV_MAX = (1 << 63) - 1
_LEN = struct.Struct(">I")


@_lmdb_failures
def recover(data_dir: Path) -> tuple[int, list[str], Path]:
    """Rebuild `db/` from what is readable. Returns (objects kept, keys lost, where the old
    database was put). Needs the data dir's lock."""
    lost: list[str] = []
    latest, meta = _latest_readable(data_dir, lost)
    top = max([r for r, _, _ in latest.values()] + [lmdb_log.rev_int(meta[k]) for k in (b"rev", b"reserved")
                                                     if len(meta.get(k, b"")) == 8] + [_seen(data_dir)])
    ident = identity.read(data_dir)
    # The data dir's own cluster first: the meta table may be among what was lost.
    cluster = ident.cluster if ident else (meta[b"cluster"].decode(errors="replace") if b"cluster" in meta
                                          else _new_cluster())
    live = {k: v for k, v in latest.items() if v[1] != int(records.Op.DELETE)}
    new_dir = data_dir / "db.recovering"
    shutil.rmtree(new_dir, ignore_errors=True)
    _write_database(new_dir, live, top=top, cluster=cluster)
    aside = _swap_in(data_dir, new_dir, reason="damaged")
    identity.write(data_dir, identity.Identity(cluster=cluster, revision=top, seen=identity._now()))
    return len(live), lost, aside


@_lmdb_failures
def adopt(data_dir: Path) -> tuple[str, int]:
    """Make the present database this data dir's; returns (cluster, revision it goes on from)."""
    ident = identity.read(data_dir)
    state = identity.inspect(data_dir)
    floor = max(state["revision"], state["reserved"], ident.revision if ident else 0)
    cluster = ident.cluster if ident else (state["cluster"] or _new_cluster())
    log = lmdb_log.LmdbLog(data_dir / identity.DB_DIR, map_size=1 << 20, max_size=1 << 20)
    try:
        log.set_cluster_id(cluster)
        log.raise_floor(floor)
    finally:
        log.close()
    identity.write(data_dir, identity.Identity(cluster=cluster, revision=floor, seen=identity._now()))
    return cluster, floor


@_lmdb_failures
def reset(data_dir: Path) -> tuple[Path | None, int]:
    """Start an empty cluster; returns (where the old database was put, the revision it goes on
    from)."""
    floor = _seen(data_dir)
    db = data_dir / identity.DB_DIR
    aside = None
    if db.exists():
        aside = _aside(data_dir, "reset")
        os.replace(db, aside)
    new_dir = data_dir / "db.recovering"
    shutil.rmtree(new_dir, ignore_errors=True)
    cluster = _new_cluster()
    _write_database(new_dir, {}, top=floor, cluster=cluster)
    os.replace(new_dir, db)
    files.fsync_dir(data_dir)
    identity.write(data_dir, identity.Identity(cluster=cluster, revision=floor, seen=identity._now()))
    return aside, floor


def _seen(data_dir: Path) -> int:
    ident = identity.read(data_dir)
    return ident.revision if ident else 0


def _new_cluster() -> str:
    return str(uuid.uuid4())


def _write_database(path: Path, live: dict[str, tuple[int, int, bytes]], *, top: int, cluster: str) -> None:
    log = lmdb_log.LmdbLog(path, map_size=max(1 << 24, 4 * sum(len(v) for _, _, v in live.values())),
                           max_size=1 << 40)
    try:
        log.load([(key, rev, value) for key, (rev, _, value) in sorted(live.items(), key=lambda kv: kv[1][0])])
        log.raise_floor(top)
        log.set_cluster_id(cluster)
    finally:
        log.close()


def _aside(data_dir: Path, reason: str) -> Path:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return data_dir / f"db.{reason}-{stamp}"


def _swap_in(data_dir: Path, new_dir: Path, *, reason: str) -> Path:
    db = data_dir / identity.DB_DIR
    aside = _aside(data_dir, reason)
    os.replace(db, aside)
    os.replace(new_dir, db)
    files.fsync_dir(data_dir)
    return aside


def format_report(report: Report, *, as_json: bool = False) -> str:
    if as_json:
        return json.dumps(report.to_dict(), indent=2)
    lines = [
        f"database:  {report.database}",
        f"identity:  {report.identity}",
        f"cluster:   {report.cluster or '-'}",
        f"revision:  {report.revision} (compacted {report.compacted})",
        f"records:   {report.records} in the log, {report.live_keys} live keys, {report.readable_objects} readable",
    ]
    for s in report.structural:
        lines.append(f"DAMAGED PAGES: {s}")
    for f in report.findings:
        lines.append(f"DAMAGED: {f.what}: {f.problem}")
    lines.append("healthy" if report.healthy else
                 "NOT healthy: see docs/operations.md (`edgekube store recover`, `adopt`, `reset`, or a backup)")
    return "\n".join(lines)

