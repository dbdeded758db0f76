"""Secrets encrypted at rest: a value transformer for the durable tier, and its key file.

What it does, as upstream's EncryptionConfiguration `aesgcm` provider and k3s's
`--secrets-encryption`: every value the log writes under an encrypted key prefix (Secrets,
`/core/secrets/`) is stored as

    k8s:enc:aesgcm:v1:<key name>:<12-byte random nonce><ciphertext><16-byte tag>

with AES-256-GCM and the storage key (`/core/secrets/<ns>/<name>`) as associated data, so a
value copied onto another key does not decrypt. Reads hand plaintext upward; nothing above the
store sees ciphertext. Values without the `k8s:enc:` prefix are plaintext from before encryption
(the `identity` provider) and are read as they are.

The key file, `<data-dir>/cred/encryption-config.json` (0600 in a 0700 directory), is an
upstream EncryptionConfiguration (the form k3s writes): the first key of the `aesgcm` provider
encrypts, every listed key decrypts, a trailing `identity` provider reads plaintext. It is made
at first boot. The server re-reads it when it changes (checked at each Secret write, inside the
write transaction, and when a value names a key it does not know), so key rotation works with the
server running: see `reencrypt` and docs/security.md.

Re-encryption rewrites stored values in place, at the same revision (the plaintext, and so every
resourceVersion and watch, is unchanged), in bounded write transactions over the whole log (old
revisions and delete records carry Secret values too). Each transaction is atomic, and keys are
retired only after a complete pass, so a crash at any point leaves every value readable with the
keys in the file. The log's `meta` records which key the last complete pass encrypted to: boot
makes a pass only when that differs from the key file's first key (an upgrade from plaintext, a
rotation the rotation command did not finish).

A value that cannot be decrypted (its key is not in the file, or it was damaged) raises
`DecryptError`, a `CorruptRecordError` naming the storage key and the encryption key: readers
skip it as any undecodable record (logged once and counted), a read of that one object answers
500 with the message, and a delete removes it; the server stays up.

The cipher is OpenSSL's, through `_cogs.aesgcm` (no `cryptography` import: see there why).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import fcntl
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lmdb
import orjson

from edgekube._cogs import aesgcm, files
from edgekube.store import errors, lmdb_log

log = logging.getLogger(__name__)

KEY_FILE = Path("cred") / "encryption-config.json"
PROVIDER = "aesgcm"
VALUE_PREFIX = b"k8s:enc:aesgcm:v1:"
_ENC = b"k8s:enc:"
# meta key: name of the key the last complete re-encryption pass encrypted every value to.
META_DONE = b"secrets-encrypted-with"
_API_VERSION = "apiserver.config.k8s.io/v1"
# First bytes of a msgpack map: what every stored object starts with (fixmap, map16, map32).
_PLAIN_FIRST = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


class DecryptError(errors.CorruptRecordError):
    """A stored value that cannot be turned back into its object: its key is not in the key
    file, or the value was damaged. Names the storage key and the encryption key; readers skip
    it as any record that cannot be decoded (store/records.py's `Damage`)."""

    def __init__(self, key: str, detail: str, *, revision: int, key_name: str | None = None) -> None:
        super().__init__(key, revision=revision, detail=detail)
        self.key_name = key_name


class KeyFileError(OSError):
    """The key file is unreadable or not an encryption configuration edgekube can use."""


@dataclasses.dataclass(frozen=True)
class Keyring:
    """The key file's content: `primary` encrypts (None: writes stay plaintext, as an
    `identity` first provider says), every key in `keys` decrypts."""

    primary: str | None
    keys: dict[str, bytes]
    identity: bool
    resources: tuple[str, ...] = ("secrets",)


def new_key_name(existing: dict[str, bytes], *, now: datetime.datetime | None = None) -> str:
    """`aesgcmkey-<UTC time>-<random>`: unique across key files too (a key file made again, then
    merged with the lost one's keys, must not hold two keys of one name)."""
    stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y%m%dT%H%M%SZ")
    while True:
        name = f"aesgcmkey-{stamp}-{os.urandom(3).hex()}"
        if name not in existing:
            return name


def parse(data: bytes, *, where: str) -> Keyring:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise KeyFileError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "EncryptionConfiguration":
        raise KeyFileError(f"{where} is not an EncryptionConfiguration")
    entries = doc.get("resources")
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        raise KeyFileError(f"{where}: expected one `resources` entry (for secrets)")
    resources = entries[0].get("resources")
    if resources != ["secrets"]:
        raise KeyFileError(f"{where}: only `resources: [secrets]` is supported, got {resources!r}")
    providers = entries[0].get("providers")
    if not isinstance(providers, list) or not providers:
        raise KeyFileError(f"{where}: `providers` must be a non-empty list")
    keys: dict[str, bytes] = {}
    primary: str | None = None
    identity = False
    for i, provider in enumerate(providers):
        if not isinstance(provider, dict) or len(provider) != 1:
            raise KeyFileError(f"{where}: providers[{i}] must name one provider")
        kind, body = next(iter(provider.items()))
        if kind == "identity":
            identity = True
            continue
        if kind != PROVIDER:
            raise KeyFileError(f"{where}: providers[{i}] is {kind!r}; edgekube supports aesgcm and identity")
        key_list = body.get("keys") if isinstance(body, dict) else None
        if not isinstance(key_list, list) or not key_list:
            raise KeyFileError(f"{where}: providers[{i}].aesgcm.keys must be a non-empty list")
        for j, entry in enumerate(key_list):
            name = entry.get("name") if isinstance(entry, dict) else None
            secret = entry.get("secret") if isinstance(entry, dict) else None
            if not isinstance(name, str) or not name or ":" in name or not isinstance(secret, str):
                raise KeyFileError(f"{where}: providers[{i}].aesgcm.keys[{j}] needs a `name` (no ':') and a `secret`")
            try:
                raw = base64.b64decode(secret, validate=True)
            except ValueError:
                raise KeyFileError(f"{where}: key {name!r} is not base64") from None
            if len(raw) != aesgcm.KEY_SIZE:
                raise KeyFileError(f"{where}: key {name!r} is {len(raw)} bytes; AES-256 needs {aesgcm.KEY_SIZE}")
            if name in keys:
                raise KeyFileError(f"{where}: key name {name!r} appears twice")
            keys[name] = raw
            if primary is None and i == 0 and j == 0:
                primary = name
    return Keyring(primary=primary, keys=keys, identity=identity)


def render(ring: Keyring) -> bytes:
    """The key file's bytes for `ring`: the primary key first, then the others, then identity."""
    names = ([ring.primary] if ring.primary else []) + [n for n in ring.keys if n != ring.primary]
    providers: list[dict[str, Any]] = []
    if names:
        keys = [{"name": n, "secret": base64.b64encode(ring.keys[n]).decode()} for n in names]
        providers.append({PROVIDER: {"keys": keys}})
    if ring.identity or not names:
        providers.append({"identity": {}})
    if ring.primary is None and names:
        providers.insert(0, providers.pop())  # identity first: writes stay plaintext
    doc = {"kind": "EncryptionConfiguration", "apiVersion": _API_VERSION,
           "resources": [{"resources": list(ring.resources), "providers": providers}]}
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


def read(path: Path) -> Keyring:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read the secrets encryption key file {path}: {exc.strerror}") from None
    return parse(data, where=str(path))


def write(path: Path, ring: Keyring) -> None:
    """Replace the key file atomically (0600, fsync'd, then renamed, then the directory synced):
    after a crash it is either the old file or the new one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    files.write_atomic(path, render(ring), mode=0o600)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Serialise changes of the key file (two rotation commands, a first boot): an flock on a
    lock file next to it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.parent / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def ensure(path: Path) -> Keyring:
    """The key file's keys; at first boot a new file with one fresh key (and identity, so Secrets
    written before encryption stay readable until they are re-encrypted)."""
    with locked(path):
        if not path.exists():
            name = new_key_name({})
            write(path, Keyring(primary=name, keys={name: os.urandom(aesgcm.KEY_SIZE)}, identity=True))
            log.info("created the secrets encryption key %s in %s", name, path)
        return read(path)


def key_name(value: bytes) -> str | None:
    """The name of the key a stored value is encrypted with; None for plaintext (or an unknown
    format, which `Transformer.from_storage` reports)."""
    if not value.startswith(VALUE_PREFIX):
        return None
    end = value.find(b":", len(VALUE_PREFIX))
    return value[len(VALUE_PREFIX): end].decode("utf-8", "replace") if end > 0 else None


def key_prefix(resource: str) -> str:
    """Where the store keeps a resource named as EncryptionConfiguration names it: `secrets` ->
    `/core/secrets/`, `widgets.example.com` -> `/example.com/widgets/` (the registry's layout,
    `ResourceInfo.key_prefix`; a test keeps the two the same)."""
    plural, _, group = resource.partition(".")
    return f"/{group or 'core'}/{plural}/"


def for_data_dir(data_dir: Path) -> Transformer | None:
    """The transformer of a data dir's key file, for tools that read the database (store check
    and recover); None when there is no key file (nothing was encrypted). Never creates one."""
    path = data_dir / KEY_FILE
    return Transformer(path) if path.exists() else None


def plain(transformer: Transformer | None, key: str, revision: int, value: bytes) -> bytes:
    """A stored value as it was before encryption (DecryptError when it cannot be)."""
    if transformer is None or not transformer.covers(key):
        return value
    return transformer.from_storage(key, value, revision=revision)


def _file_id(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class Transformer:
    """Encrypts values under `prefixes` on their way to storage and decrypts them back.

    Thread-safe: the writer thread encrypts; any thread decrypts. The keyring is replaced whole
    when the key file changes, never mutated."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file_id = _file_id(path)
        self.ring = read(path)
        # The resources are fixed (`parse` takes secrets only), so reloads keep these.
        self.prefixes = tuple(key_prefix(r) for r in self.ring.resources)
        self._reload_lock = threading.Lock()

    def covers(self, key: str) -> bool:
        return key.startswith(self.prefixes)

    def _maybe_reload(self) -> bool:
        """Re-read the key file when it changed (another inode, mtime or size); True if so. A
        key file that became unreadable keeps the keys in use, with an error in the log."""
        current = _file_id(self.path)
        if current == self._file_id:
            return False
        with self._reload_lock:
            if current == self._file_id:
                return False
            try:
                ring = read(self.path)
            except KeyFileError as exc:
                log.error("%s; going on with the keys read before", exc)
                self._file_id = current
                return False
            self.ring = ring
            self._file_id = current
            log.info("secrets encryption keys reloaded from %s (writing with %s)", self.path,
                     ring.primary or "no key: plaintext")
            return True

    def to_storage(self, key: str, value: bytes) -> bytes:
        self._maybe_reload()
        ring = self.ring
        if ring.primary is None:
            return value
        nonce = os.urandom(aesgcm.NONCE_SIZE)
        sealed = aesgcm.seal(ring.keys[ring.primary], nonce=nonce, plaintext=value, aad=key.encode())
        return b"".join((VALUE_PREFIX, ring.primary.encode(), b":", nonce, sealed))

    def from_storage(self, key: str, value: bytes, *, revision: int = 0) -> bytes:
        if not value.startswith(_ENC):
            if value[:1] and value[0] in _PLAIN_FIRST and self.ring.identity:
                return value
            if not self.ring.identity:
                raise self._fail(key, revision, "it is stored in plaintext and the key file has no identity provider")
            raise self._fail(key, revision, "it is neither encrypted nor a stored object (the value is damaged)")
        if not value.startswith(VALUE_PREFIX):
            provider = value[len(_ENC):].split(b":", 1)[0].decode("utf-8", "replace")
            raise self._fail(key, revision, f"it is encrypted with the {provider!r} provider; edgekube reads aesgcm")
        name = key_name(value)
        if name is None:
            raise self._fail(key, revision, "its encryption header is damaged")
        secret = self.ring.keys.get(name)
        if secret is None and self._maybe_reload():
            secret = self.ring.keys.get(name)
        if secret is None:
            raise self._fail(key, revision, f"it is encrypted with key {name!r}, which is not in {self.path}; "
                             "put that key back into the file (see docs/security.md)", key_name=name)
        body = value[len(VALUE_PREFIX) + len(name.encode()) + 1:]
        try:
            return aesgcm.open_(secret, nonce=body[: aesgcm.NONCE_SIZE], sealed=body[aesgcm.NONCE_SIZE:],
                                aad=key.encode())
        except aesgcm.AuthenticationError:
            raise self._fail(key, revision, f"the value encrypted with key {name!r} does not authenticate "
                             "(damaged, or moved from another key)", key_name=name) from None

    def _fail(self, key: str, revision: int, detail: str, *, key_name: str | None = None) -> DecryptError:
        return DecryptError(key, detail, revision=revision, key_name=key_name)


# --- re-encryption -----------------------------------------------------------------------------


@dataclasses.dataclass
class Pass:
    """What one re-encryption pass saw: records per key they were found under ("" for plaintext),
    how many it rewrote, and the ones it could not read."""

    examined: int = 0
    rewritten: int = 0
    plaintext_rewritten: int = 0
    found: dict[str, int] = dataclasses.field(default_factory=dict)
    failed: list[DecryptError] = dataclasses.field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.failed


def reencrypt(db: lmdb_log.LmdbLog, transformer: Transformer, *, batch: int = 500, rewrite: bool = True) -> Pass:
    """Rewrite every stored value under the transformer's prefixes that is not encrypted with the
    current primary key (plaintext included), in place and in transactions of `batch` records.
    With `rewrite=False` only count (the status command). On a complete pass, record the primary
    key in the log's meta, so boot knows no pass is due."""
    result = Pass()

    def change(key: str, revision: int, stored: bytes) -> bytes | None:
        result.examined += 1
        name = key_name(stored)
        label = name if name is not None else ("?" if stored.startswith(_ENC) else "")
        result.found[label] = result.found.get(label, 0) + 1
        at_primary = label == (transformer.ring.primary or "")
        if rewrite and at_primary:
            return None
        try:
            plain = transformer.from_storage(key, stored, revision=revision)
        except DecryptError as exc:
            result.failed.append(exc)
            return None
        if not rewrite or at_primary:
            return None
        result.rewritten += 1
        if label == "":
            result.plaintext_rewritten += 1
        return transformer.to_storage(key, plain)

    after = 0
    for prefix in transformer.prefixes:
        after = 0
        while True:
            after, done = db.rewrite_values(prefix, change, after=after, batch=batch)
            if done:
                break
    if rewrite and result.complete:
        db.set_meta(META_DONE, (transformer.ring.primary or "").encode())
    return result


def due(db: lmdb_log.LmdbLog, transformer: Transformer) -> bool:
    """Whether values may be stored under another key than the primary one (or in plaintext)."""
    done = db.get_meta(META_DONE)
    return done is None or done.decode("utf-8", "replace") != (transformer.ring.primary or "")


# --- boot ----------------------------------------------------------------------------------------


def boot(db_dir: Path, open_db: Callable[[Transformer], lmdb_log.LmdbLog], *,
         key_file: Path) -> tuple[lmdb_log.LmdbLog, Transformer]:
    """Open the log with encryption: the key file (made at first boot), then a re-encryption pass
    when one is due. When that pass turned plaintext into ciphertext, the database is rewritten
    into a new file, so the old plaintext is not left behind in LMDB's free pages."""
    had_keys = key_file.exists()
    ensure(key_file)
    transformer = Transformer(key_file)
    db = open_db(transformer)
    done = db.get_meta(META_DONE)
    if not had_keys and done:
        log.error("the secrets encryption key file %s was missing and a new one was made, but this database's "
                  "Secrets were encrypted with key %s: they cannot be read until that key is put back into the "
                  "file (from a backup of %s; docs/security.md)", key_file, done.decode("utf-8", "replace"),
                  key_file.parent)
    if not due(db, transformer):
        return db, transformer
    result = reencrypt(db, transformer)
    if result.rewritten:
        log.info("re-encrypted %d stored Secret values with key %s (%d were plaintext)", result.rewritten,
                 transformer.ring.primary, result.plaintext_rewritten)
    for exc in result.failed:
        db.damage.note(exc, reader="re-encryption at boot")
    if result.plaintext_rewritten:
        db.close()
        try:
            rebuild(db_dir)
        except (OSError, lmdb.Error) as exc:
            # The Secrets are encrypted all the same; only the old plaintext stays in free pages
            # until LMDB reuses them. Never a reason not to serve.
            log.warning("could not rewrite %s without the pages that held plaintext Secrets (%s); they stay "
                        "until the database reuses them", db_dir / "data.mdb", exc)
            shutil.rmtree(db_dir / "rebuild.tmp", ignore_errors=True)
        db = open_db(transformer)
    return db, transformer


_REBUILD_BATCH = 10_000


def rebuild(db_dir: Path) -> None:
    """Copy every named database of the LMDB environment in `db_dir` into a fresh file, record by
    record, and put it in place of the old one (atomically: a crash leaves the old or the new).
    The new file holds only live data on zeroed pages: nothing an earlier write left in a free
    page, or in the unused middle of a page, survives. The environment must be closed."""
    tmp = db_dir / "rebuild.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    size = max((db_dir / "data.mdb").stat().st_size, 1 << 20)
    src = lmdb.open(str(db_dir), map_size=size, max_dbs=8, readonly=True, lock=False)
    dst = lmdb.open(str(tmp), map_size=size * 2, max_dbs=8, sync=False, meminit=True, mode=0o600)
    try:
        with src.begin() as rtxn:
            names = [bytes(k) for k, _ in rtxn.cursor()]
        for name in names:
            sdb = src.open_db(name, create=False)
            ddb = dst.open_db(name)
            with src.begin(buffers=False) as rtxn:
                cursor = rtxn.cursor(db=sdb)
                more = cursor.first()
                while more:
                    with dst.begin(write=True, db=ddb) as wtxn:
                        for _ in range(_REBUILD_BATCH):
                            wtxn.put(cursor.key(), cursor.value(), append=True)
                            more = cursor.next()
                            if not more:
                                break
        dst.sync(True)
    finally:
        src.close()
        dst.close()
    os.replace(tmp / "data.mdb", db_dir / "data.mdb")
    files.fsync_dir(db_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("rewrote %s into a new file without the pages that held plaintext", db_dir / "data.mdb")


# --- rotation ------------------------------------------------------------------------------------


def add_primary_key(key_file: Path) -> str:
    """Put a new key first in the key file (it encrypts from now on); the others stay, so every
    stored value remains readable. Returns its name."""
    with locked(key_file):
        ring = read(key_file)
        name = new_key_name(ring.keys)
        keys = {name: os.urandom(aesgcm.KEY_SIZE), **ring.keys}
        write(key_file, dataclasses.replace(ring, primary=name, keys=keys, identity=True))
    return name


def retire_keys(key_file: Path, *, primary: str | None) -> list[str]:
    """Drop every key but `primary` from the key file, once a complete pass has encrypted all
    values with it; nothing when the file's first key is no longer `primary` (another rotation
    began meanwhile: its pass retires them). Returns the names dropped."""
    with locked(key_file):
        ring = read(key_file)
        if ring.primary != primary or primary is None:
            return []
        old = [n for n in ring.keys if n != primary]
        if old:
            write(key_file, dataclasses.replace(ring, keys={primary: ring.keys[primary]}))
    return old
