"""The data dir knows its cluster: a lost, emptied, rolled-back or foreign database is refused.

Without this, a `data.mdb` that was removed or emptied (a bad SD card, a careless `rm`, a
restore gone wrong) boots an empty cluster with the old certificates, and every client sees
its objects vanish with no word why. So the data dir carries `DATA/store-identity` (JSON,
outside `db/` so that losing `db/` does not lose it too):

    {"cluster": "<uuid>", "revision": <highest revision seen>, "seen": "<time>"}

and the database carries the same cluster id in its meta table. Before anything else reads or
writes the data dir, `verify` compares them:

- no database and no sign of earlier use (no identity, or one at revision 0; no CA from before
  identities): the first boot. The identity is written at once, before the certificates, and its
  revision only once the system objects are stored, before the API listens: a first boot cut
  short is still a first boot, and a database lost after any client was answered is refused.
- no database, or an empty one, but the data dir was used: refused (`StoreLostError`).
- a database of another cluster (copied from another node): refused.
- a database behind the revision the data dir last saw (an older copy put back): refused, since
  clients hold newer resourceVersions and would see time run backwards.
- a database LMDB cannot open or walk: refused, naming the file (`StoreDamagedError`).
- a database from before identities (an upgrade): adopted, and the identity written.

The revision is recorded at boot and at a clean stop only: an idle node writes nothing, and the
database can only be ahead of what was recorded, never behind, unless it was replaced.

Each refusal says what happened and the way back (docs/operations.md): restore `db/` from a
backup, `edgekube store recover` (rebuild from what is readable), `edgekube store adopt`
(accept the database that is there, keeping resourceVersions monotonic), or `edgekube store
reset` (start an empty cluster, keeping the old files aside).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import uuid
from pathlib import Path
from typing import Any

import lmdb

from edgekube._cogs import child, files
from edgekube.store import errors, lmdb_log

IDENTITY_FILE = "store-identity"
DB_DIR = "db"


class StoreIdentityError(errors.StoreError):
    """The database is not the one this data dir had; the message says what to do."""


class StoreLostError(StoreIdentityError):
    pass


class StoreForeignError(StoreIdentityError):
    pass


class StoreRolledBackError(StoreIdentityError):
    pass


class StoreDamagedError(StoreIdentityError):
    pass


@dataclasses.dataclass(frozen=True)
class Identity:
    cluster: str
    revision: int
    seen: str


def db_file(data_dir: Path) -> Path:
    return data_dir / DB_DIR / "data.mdb"


def read(data_dir: Path) -> Identity | None:
    """The recorded identity; None when there is none (or it is unreadable: then the database's
    own cluster id decides, and the file is written anew)."""
    try:
        raw = json.loads((data_dir / IDENTITY_FILE).read_text())
        return Identity(cluster=str(raw["cluster"]), revision=int(raw["revision"]), seen=str(raw.get("seen", "")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write(data_dir: Path, ident: Identity) -> None:
    """Atomically (write, fsync, rename, fsync the dir): a crash leaves the old or the new."""
    files.write_atomic(data_dir / IDENTITY_FILE, json.dumps(dataclasses.asdict(ident)).encode() + b"\n")


def record(data_dir: Path, *, cluster: str, revision: int) -> None:
    """Note the highest revision seen (at boot and at a clean stop)."""
    current = read(data_dir)
    if current is not None and current.cluster == cluster and current.revision >= revision:
        return
    write(data_dir, Identity(cluster=cluster, revision=revision, seen=_now()))


def used_before(data_dir: Path) -> bool:
    """Whether a data dir without an identity served a cluster before identities (its CA)."""
    return (data_dir / "tls" / "ca.crt").exists()


def _empty(data_dir: Path) -> bool:
    try:
        return db_file(data_dir).stat().st_size == 0
    except FileNotFoundError:
        return True


def verify(data_dir: Path) -> Identity:
    """Check the database against the data dir's identity (see the module docstring); returns
    the identity to run with, written down when it is new. Raises a `StoreIdentityError` whose
    message says what to do."""
    return _verify(data_dir, write_new=True)


def verify_readonly(data_dir: Path) -> Identity:
    """`verify` without writing anything (for `edgekube store check`)."""
    return _verify(data_dir, write_new=False)


def _verify(data_dir: Path, *, write_new: bool) -> Identity:
    ident = read(data_dir)
    if _empty(data_dir):
        # Revision 0 is a first boot that stopped before serving anything (the boot records
        # its revision once the system objects are written, before the API listens).
        if (ident.revision > 0) if ident is not None else used_before(data_dir):
            raise StoreLostError(_lost_message(data_dir, ident))
        fresh = Identity(cluster=str(uuid.uuid4()), revision=0, seen=_now())
        if write_new:
            data_dir.mkdir(parents=True, exist_ok=True)
            write(data_dir, fresh)
        return fresh
    state = inspect(data_dir)
    db_cluster = state["cluster"]
    top = max(state["revision"], state["reserved"])
    if ident is None:
        # From before identities, or the file was lost: the database's word stands.
        ident = Identity(cluster=db_cluster or str(uuid.uuid4()), revision=top, seen=_now())
        if write_new:
            write(data_dir, ident)
        return ident
    if (db_cluster is not None and db_cluster != ident.cluster) or (db_cluster is None and ident.revision > 0):
        raise StoreForeignError(
            f"the database at {db_file(data_dir)} belongs to another cluster "
            f"({db_cluster or 'one from before store identities'}), not to this data dir's ({ident.cluster}). "
            f"If you put it there on purpose, run `edgekube store adopt --data-dir {data_dir}`; otherwise put "
            "this data dir's own database back (docs/operations.md)")
    if top < ident.revision:
        raise StoreRolledBackError(
            f"the database at {db_file(data_dir)} is at revision {top}, behind revision {ident.revision} that this "
            f"data dir saw on {ident.seen or 'an earlier boot'}: it was rolled back or replaced by an older copy, "
            "and clients hold newer resourceVersions. Restore the newest backup, or accept this one with "
            f"`edgekube store adopt --data-dir {data_dir}` (resourceVersions go on from {ident.revision})")
    return ident


def inspect(data_dir: Path) -> dict[str, Any]:
    """The database's cluster id and revisions, reading every page of its trees once (LMDB
    has no checksums: walking the B-trees is how structural damage shows, as MDB_CORRUPTED and
    friends, before anything serves from it).

    The walk runs in a child process: on some damage LMDB fails an assertion (abort) instead of
    returning an error, which would otherwise end this process with no word of the database."""
    path = data_dir / DB_DIR

    def walk(emit: child.Emit) -> None:
        try:
            log = lmdb_log.LmdbLog(path, map_size=1 << 20, max_size=1 << 20)
            try:
                rev, reserved, _ = log.state()
                log.walk()
                emit(json.dumps({"cluster": log.cluster_id(), "revision": rev, "reserved": reserved}).encode())
            finally:
                log.close()
        except lmdb.Error as exc:
            emit(json.dumps({"error": str(exc)}).encode())
        except errors.DatabaseError as exc:
            emit(json.dumps({"error": str(exc.cause)}).encode())

    frames, crash = child.run(walk)
    if crash is not None or not frames:
        raise StoreDamagedError(_damaged_message(data_dir, f"LMDB {crash or 'ended'} while reading it"))
    out: dict[str, Any] = json.loads(frames[0])
    if "error" in out:
        raise StoreDamagedError(_damaged_message(data_dir, out["error"]))
    return out


def _lost_message(data_dir: Path, ident: Identity | None) -> str:
    what = "is missing" if not db_file(data_dir).exists() else "is empty"
    held = (f"held cluster {ident.cluster} up to revision {ident.revision} (seen {ident.seen})" if ident is not None
            else "served a cluster before (its CA is in tls/)")
    return (f"the database {db_file(data_dir)} {what}, but this data dir {held}. Refusing to serve an empty "
            f"cluster in its place. Restore {data_dir / DB_DIR} from a backup, or start an empty cluster with "
            f"`edgekube store reset --data-dir {data_dir}` (docs/operations.md)")


def _damaged_message(data_dir: Path, exc: object) -> str:
    return (f"the database {db_file(data_dir)} is damaged ({exc}). `edgekube store check --data-dir {data_dir}` "
            f"shows what is readable; `edgekube store recover --data-dir {data_dir}` rebuilds the database from it "
            "(the damaged file is kept aside); or restore db/ from a backup (docs/operations.md)")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
