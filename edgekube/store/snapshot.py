"""Snapshots of a node's cluster: one file to keep off the device, and the way back from it.

`save` writes a gzip'd tar, 0600 (it holds the cluster's private keys):

    snapshot.json      {"format": 1, "cluster", "revision", "taken", "edgekube"}
    db/data.mdb        the database, as one consistent read transaction saw it (LMDB's compacting
                       copy: taken while the server writes, nothing stops)
    tls/...            the CA, the certificates and keys, the service-account signing key
    cred/...           the keys Secrets are encrypted with (without them, Secrets are lost)
    kubeconfig.yaml    the admin's kubeconfig, valid again after a restore

Events and Leases (the memory tier) are not in it: they are the moment's, and come back on their
own. The copy is taken by whoever holds the database: the server through its own environment
(LMDB allows one per process), a command beside a running server through a read-only one that
shares the server's reader table (its lock file), so the server never reuses a page the copy
is reading.

`restore` is for a stopped node (the caller holds the data dir's lock). It reads the whole file
into a scratch directory first, checks every member (regular files under the names above, nothing
else), opens and walks the database and compares it with `snapshot.json`; a corrupt or foreign
file stops there, with the data dir untouched. Then the present `db/`, `tls/`, `cred/` and
kubeconfig move aside to `before-restore-<time>/` (nothing is deleted), the snapshot's take
their place, and revisions go on above the highest this data dir or its old database ever
reached: clients that saw newer resourceVersions than the snapshot's see time go forward, and
list or watch from before get 410 (as after `edgekube store adopt`). The data dir's identity
becomes the snapshot's cluster, so the restored database is not refused as rolled back.
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import io
import json
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb

from edgekube._cogs import files
from edgekube.store import errors, identity, lmdb_log

FORMAT = 1
MANIFEST = "snapshot.json"
DIRS = ("tls", "cred")  # copied whole, besides the database
FILES = ("kubeconfig.yaml",)
_MAX_MEMBER_BYTES = 64 << 30
SUFFIX = ".tar.gz"


class SnapshotError(errors.StoreError):
    """The snapshot cannot be taken or restored; the message says why."""


@dataclasses.dataclass(frozen=True)
class Info:
    cluster: str
    revision: int
    taken: str
    edgekube: str
    path: Path | None = None


def copy_readonly(db_dir: Path) -> Callable[[Path], None]:
    """A copier for a command beside a running (or stopped) server: LMDB's compacting copy of
    `db_dir` into an empty directory, through a read-only environment sharing the lock file."""

    def copy(dest: Path) -> None:
        env = lmdb_log.open_readonly(db_dir)
        try:
            env.copy(str(dest), compact=True)
        finally:
            env.close()

    return copy


def save(data_dir: Path, dest: Path, *, copy: Callable[[Path], None], version: str,
         now: datetime.datetime) -> Info:
    """Write a snapshot of `data_dir` to `dest` (atomically, 0600). Blocking. What fails (a full
    disk, a database that cannot be read) raises `SnapshotError` and leaves nothing behind."""
    scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".d", dir=dest.parent))  # 0700, a fresh name
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)  # 0600
    tmp = Path(tmp_name)
    try:
        (scratch / identity.DB_DIR).mkdir(mode=0o700)
        try:
            copy(scratch / identity.DB_DIR)
        except lmdb.Error as exc:
            raise SnapshotError(f"the database could not be copied: {exc}") from None
        state = _copied_state(scratch / identity.DB_DIR)
        info = Info(cluster=state["cluster"] or "", revision=max(state["revision"], state["reserved"]),
                    taken=now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), edgekube=version)
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            fd = -1
            manifest = json.dumps({"format": FORMAT, **{k: v for k, v in dataclasses.asdict(info).items()
                                                        if k != "path"}}, indent=1).encode()
            entry = tarfile.TarInfo(MANIFEST)
            entry.size, entry.mode, entry.mtime = len(manifest), 0o600, int(now.timestamp())
            tar.addfile(entry, io.BytesIO(manifest))
            tar.add(scratch / identity.DB_DIR / "data.mdb", arcname=f"{identity.DB_DIR}/data.mdb", recursive=False)
            for name in DIRS:
                base = data_dir / name
                if base.is_dir():
                    for path in sorted(base.rglob("*")):
                        if path.is_file() and not path.is_symlink():
                            tar.add(path, arcname=f"{name}/{path.relative_to(base)}", recursive=False)
            for name in FILES:
                if (data_dir / name).is_file():
                    tar.add(data_dir / name, arcname=name, recursive=False)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, dest)
        files.fsync_dir(dest.parent)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)  # half a snapshot, with private keys in it
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dataclasses.replace(info, path=dest)


def _copied_state(db_dir: Path) -> dict[str, Any]:
    """cluster, revision and reserved of a copy LMDB itself just wrote, walked whole. In this
    process: the server takes scheduled snapshots in a thread, and a process with threads must
    not fork (`_cogs.child`); a fresh copy of a database that serves is not a damaged file."""
    try:
        db = lmdb_log.LmdbLog(db_dir, map_size=1 << 20, max_size=1 << 20)
    except (lmdb.Error, errors.DatabaseError) as exc:
        raise SnapshotError(f"the copy of the database does not open: {exc}") from None
    try:
        rev, reserved, _ = db.state()
        db.walk()
        return {"cluster": db.cluster_id(), "revision": rev, "reserved": reserved}
    except (lmdb.Error, errors.DatabaseError) as exc:
        raise SnapshotError(f"the copy of the database does not read back: {exc}") from None
    finally:
        db.close()


def _read_db(root: Path) -> dict[str, Any]:
    """cluster, revision and reserved of `root/db`, a file from elsewhere (walked whole, in a
    child process: damage may abort LMDB; only from a process without threads: the CLI)."""
    try:
        return identity.inspect(root)
    except identity.StoreDamagedError as exc:
        raise SnapshotError(str(exc)) from None


def _allowed(name: str) -> bool:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return False
    return (name in (MANIFEST, f"{identity.DB_DIR}/data.mdb", *FILES)
            or (parts[0] in DIRS and len(parts) >= 2))


def read_info(src: Path) -> Info:
    """The manifest of a snapshot file (reads until it: the first member)."""
    try:
        with tarfile.open(src, mode="r|gz") as tar:
            member = tar.next()
            if member is None or member.name != MANIFEST or not member.isfile():
                raise SnapshotError(f"{src} is not an edgekube snapshot (no {MANIFEST} first)")
            handle = tar.extractfile(member)
            assert handle is not None
            return _info(json.loads(handle.read(1 << 20)), src)
    except (OSError, tarfile.TarError, EOFError, ValueError, zlib.error) as exc:
        raise SnapshotError(f"{src} cannot be read as a snapshot: {exc}") from None


def _info(doc: Any, src: Path) -> Info:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SnapshotError(f"{src}: a snapshot of format {doc.get('format') if isinstance(doc, dict) else '?'}; "
                            f"this edgekube reads format {FORMAT}")
    try:
        return Info(cluster=str(doc["cluster"]), revision=int(doc["revision"]), taken=str(doc["taken"]),
                    edgekube=str(doc.get("edgekube", "")), path=src)
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"{src}: its {MANIFEST} is incomplete: {exc}") from None


def restore(data_dir: Path, src: Path, *, now: datetime.datetime) -> tuple[Info, int, Path]:
    """Put the snapshot `src` in place of the data dir's cluster (module doc). Returns (the
    snapshot's info, the revision the cluster goes on from, where the old state was put). The
    caller holds the data dir's lock. Blocking."""
    scratch = data_dir / "restore.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(mode=0o700, parents=True)
    try:
        info = _unpack(src, scratch)
        state = _read_db(scratch)
        if (state["cluster"] or "") != info.cluster or max(state["revision"], state["reserved"]) != info.revision:
            raise SnapshotError(f"{src}: its database (cluster {state['cluster']}, revision "
                                f"{max(state['revision'], state['reserved'])}) is not the one its {MANIFEST} "
                                f"describes (cluster {info.cluster}, revision {info.revision})")
        floor = max(info.revision, _highest_seen(data_dir))
        db = lmdb_log.LmdbLog(scratch / identity.DB_DIR, map_size=1 << 20, max_size=1 << 20)
        try:
            db.raise_floor(floor)
            db.set_cluster_id(info.cluster)
        finally:
            db.close()
        (scratch / identity.DB_DIR / lmdb_log.LOCK_FILE).unlink(missing_ok=True)
        aside = data_dir / f"before-restore-{now.astimezone(datetime.UTC):%Y%m%dT%H%M%SZ}"
        aside.mkdir(mode=0o700)
        for name in (identity.DB_DIR, *DIRS, *FILES):
            if (data_dir / name).exists() or (data_dir / name).is_symlink():
                os.replace(data_dir / name, aside / name)
            if (scratch / name).exists():
                os.replace(scratch / name, data_dir / name)
        files.fsync_dir(data_dir)
        identity.write(data_dir, identity.Identity(cluster=info.cluster, revision=floor, seen=identity._now()))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return info, floor, aside


def _unpack(src: Path, into: Path) -> Info:
    info: Info | None = None
    try:
        with tarfile.open(src, mode="r|gz") as tar:
            for member in tar:
                if info is None:
                    if member.name != MANIFEST or not member.isfile():
                        raise SnapshotError(f"{src} is not an edgekube snapshot (no {MANIFEST} first)")
                    handle = tar.extractfile(member)
                    assert handle is not None
                    info = _info(json.loads(handle.read(1 << 20)), src)
                    continue
                if not member.isfile() or not _allowed(member.name) or member.size > _MAX_MEMBER_BYTES:
                    raise SnapshotError(f"{src}: unexpected member {member.name!r} (a snapshot holds only regular "
                                        "files: db/data.mdb, tls/, cred/, kubeconfig.yaml)")
                target = into / member.name
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                handle = tar.extractfile(member)
                assert handle is not None
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(handle, out, 1 << 20)
                    out.flush()
                    os.fsync(out.fileno())
                if member.name == "tls/ca.crt":
                    os.chmod(target, 0o644)  # public, as the server keeps it
    except SnapshotError:
        raise
    except (OSError, tarfile.TarError, EOFError, ValueError, zlib.error) as exc:
        raise SnapshotError(f"{src} cannot be read as a snapshot: {exc}") from None
    if info is None:
        raise SnapshotError(f"{src} is empty: not an edgekube snapshot")
    if not (into / identity.DB_DIR / "data.mdb").is_file():
        raise SnapshotError(f"{src} holds no database (db/data.mdb): it is cut short or not a snapshot")
    return info


def _highest_seen(data_dir: Path) -> int:
    """The highest revision this data dir handed out: its identity's, or its database's when
    that can still be read (a crash may have left the identity behind it)."""
    ident = identity.read(data_dir)
    seen = ident.revision if ident is not None else 0
    if identity.db_file(data_dir).is_file():
        try:
            state = identity.inspect(data_dir)
            seen = max(seen, state["revision"], state["reserved"])
        except identity.StoreDamagedError:
            pass  # damaged: the reason for the restore, perhaps; its identity's word stands
    return seen


def prune(folder: Path, *, keep: int, prefix: str, newest: Path) -> list[Path]:
    """Remove all but `newest` (the one just written) and the `keep - 1` others that sort last
    by name (their time) among `prefix*SUFFIX` in `folder`. The one just written stays even when
    its name sorts first (a clock set back since the others were taken)."""
    others = sorted((p for p in folder.glob(f"{prefix}*{SUFFIX}") if p.is_file() and p != newest),
                    key=lambda p: p.name)
    gone = others[:max(0, len(others) - (keep - 1))]
    for path in gone:
        path.unlink(missing_ok=True)
    return gone
