"""Secrets at rest (store/encryption.py): the AES-GCM primitive, the key file, the log's value
transformer, re-encryption passes, and what an unknown key or a damaged value does."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import lmdb
import msgpack
import pytest

from edgekube._cogs import aesgcm
from edgekube.api.registry import resources
from edgekube.store import encryption, lmdb_log, records, repair
from edgekube.store import store as store_mod

REPO = Path(__file__).resolve().parents[2]
PREFIX = "/core/secrets/"
SECRET_VALUE = b"unit-secret-0c9f1e"


def _secret(name: str, value: bytes = SECRET_VALUE) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"},
            "data": {"pw": base64.b64encode(value).decode()}, "raw": value}


def _store(tmp_path: Path, *, encrypted: bool = True) -> store_mod.Store:
    return store_mod.Store(
        store_mod.StoreConfig(path=tmp_path, map_size_mb=16, max_size_mb=64, compaction_interval_seconds=0,
                              compaction_window=1,
                              encryption_key_file=tmp_path / encryption.KEY_FILE if encrypted else None),
        memory_prefixes=[])


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_aesgcm_round_trip_and_authentication() -> None:
    key, nonce = os.urandom(32), os.urandom(12)
    sealed = aesgcm.seal(key, nonce=nonce, plaintext=b"hello", aad=b"/core/secrets/a/b")
    assert b"hello" not in sealed and len(sealed) == 5 + aesgcm.TAG_SIZE
    assert aesgcm.open_(key, nonce=nonce, sealed=sealed, aad=b"/core/secrets/a/b") == b"hello"
    for bad_key, bad_aad, bad in ((os.urandom(32), b"/core/secrets/a/b", sealed),
                                  (key, b"/core/secrets/a/c", sealed),
                                  (key, b"/core/secrets/a/b", bytes([sealed[0] ^ 1]) + sealed[1:])):
        with pytest.raises(aesgcm.AuthenticationError):
            aesgcm.open_(bad_key, nonce=nonce, sealed=bad, aad=bad_aad)


def test_aesgcm_uses_the_libcrypto_that_ssl_loaded() -> None:
    import _ssl  # noqa: F401

    with open("/proc/self/maps") as f:
        mapped = {line.split()[-1] for line in f if "libcrypto" in line}
    assert aesgcm.library() in mapped


_UPGRADE_PROBE = """
import os, shutil, sys
import _ssl
lib = sys.argv[1]
fresh = lib + ".new"
shutil.copyfile(lib, fresh)
os.replace(fresh, lib)  # what dpkg does to a library it upgrades: the mapped file is now deleted
maps = open("/proc/self/maps").read()
assert lib + " (deleted)" in maps, maps
from edgekube._cogs import aesgcm, jwsig
key, nonce = os.urandom(32), os.urandom(12)
sealed = aesgcm.seal(key, nonce=nonce, plaintext=b"after the upgrade", aad=b"a")
assert aesgcm.open_(key, nonce=nonce, sealed=sealed, aad=b"a") == b"after the upgrade"
key2 = jwsig.generate()
assert key2.public().verify(key2.sign(b"t"), b"t")
print("ok", aesgcm.library())
"""


def test_a_libcrypto_upgraded_under_a_running_node_keeps_serving(tmp_path: Path) -> None:
    """dpkg replaced libcrypto while the node ran (unattended-upgrades): secrets are still
    sealed and tokens signed, through the library already mapped (it was refused as
    "<path> (deleted)" before)."""
    import _ssl  # noqa: F401

    with open("/proc/self/maps") as f:
        system = next(line.split()[-1] for line in f if "/libcrypto" in line)
    libs = tmp_path / "lib"
    libs.mkdir()
    for name in ("libcrypto.so.3", "libssl.so.3"):  # _ssl loads both from here (LD_LIBRARY_PATH)
        shutil.copyfile(Path(system).with_name(name), libs / name)
    out = subprocess.run([sys.executable, "-c", _UPGRADE_PROBE, str(libs / "libcrypto.so.3")],
                         capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
                         env={**os.environ, "LD_LIBRARY_PATH": str(libs)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", str(libs / "libcrypto.so.3")]


def test_key_file_made_at_first_use_private_and_upstream_shaped(tmp_path: Path) -> None:
    path = tmp_path / encryption.KEY_FILE
    ring = encryption.ensure(path)
    assert ring.primary is not None and ring.primary.startswith("aesgcmkey-") and ring.identity
    assert len(ring.keys[ring.primary]) == 32
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert encryption.ensure(path) == ring  # not replaced at the next boot
    assert b'"kind": "EncryptionConfiguration"' in path.read_bytes()


@pytest.mark.parametrize(("text", "message"), [
    (b"{", "not valid JSON"),
    (b'{"kind": "EncryptionConfiguration", "resources": [{"resources": ["configmaps"], "providers": []}]}',
     "only `resources: [secrets]`"),
    (b'{"kind": "EncryptionConfiguration", "resources": [{"resources": ["secrets"], "providers": '
     b'[{"aescbc": {"keys": [{"name": "k", "secret": "AAAA"}]}}]}]}', "'aescbc'"),
    (b'{"kind": "EncryptionConfiguration", "resources": [{"resources": ["secrets"], "providers": '
     b'[{"aesgcm": {"keys": [{"name": "k", "secret": "AAAA"}]}}]}]}', "is 3 bytes"),
])
def test_a_bad_key_file_is_refused_with_the_reason(tmp_path: Path, text: bytes, message: str) -> None:
    path = tmp_path / "k.json"
    path.write_bytes(text)
    with pytest.raises(encryption.KeyFileError, match=re.escape(message)) as info:
        encryption.read(path)
    assert str(path) in str(info.value)


async def test_values_are_encrypted_on_disk_and_plain_above_the_store(tmp_path: Path) -> None:
    store = _store(tmp_path)
    await store.start()
    try:
        await store.create(PREFIX + "default/a", _secret("a"))
        applied = await store.update(PREFIX + "default/a", _secret("a", b"second-value-77aa"), expect_revision=None)
        await store.create(PREFIX + "default/gone", _secret("gone", b"deleted-value-5b5b"))
        await store.delete(PREFIX + "default/gone", expect_revision=None)
        await store.create("/core/configmaps/default/c", {"data": {"x": "not-a-secret-3e3e"}})
        item = store.get(PREFIX + "default/a")
        assert item is not None and item.object()["raw"] == b"second-value-77aa"
        assert records.decode(applied.value)["raw"] == b"second-value-77aa"
        assert [i.object()["raw"] for i in store.scan(PREFIX).items] == [b"second-value-77aa"]
        # An older revision, a delete replayed from the log: plaintext too.
        old = store.scan(PREFIX, revision=applied.revision - 1).items
        assert [i.object()["raw"] for i in old] == [SECRET_VALUE]
        # What a watch replays from the log (older than its in-memory ring).
        replayed = [records.decode(r.value)["raw"] for r in store._db.read_log(0, prefix=PREFIX, limit=100)]
        assert replayed == [SECRET_VALUE, b"second-value-77aa", b"deleted-value-5b5b", b"deleted-value-5b5b"]
        await store.compact()
    finally:
        await store.close()
    for needle in (SECRET_VALUE, b"second-value-77aa", b"deleted-value-5b5b",
                   base64.b64encode(SECRET_VALUE)):
        assert _files_containing(tmp_path, needle) == []
    assert _files_containing(tmp_path, b"not-a-secret-3e3e")  # only Secrets are encrypted
    with _raw(tmp_path) as raw:
        stored = [r.value for r in raw.iter_records() if r.key.startswith(PREFIX)]
    assert stored and all(v.startswith(encryption.VALUE_PREFIX) for v in stored)


class _raw:
    """The log opened without the transformer: what is on disk."""

    def __init__(self, root: Path) -> None:
        self.db = lmdb_log.LmdbLog(root / "db", map_size=16 << 20, max_size=64 << 20)

    def __enter__(self) -> lmdb_log.LmdbLog:
        return self.db

    def __exit__(self, *exc: object) -> None:
        self.db.close()


def _stored(root: Path) -> dict[int, bytes]:
    with _raw(root) as raw:
        return {r.revision: r.value for r in raw.iter_records() if r.key.startswith(PREFIX)}


def _key_names(root: Path) -> set[str | None]:
    return {encryption.key_name(v) for v in _stored(root).values()}


def _first(i: int) -> bytes:
    """Values long enough that no ciphertext holds them by chance."""
    return b"first-value-%d-5e1f0a9c" % i


def _second(i: int) -> bytes:
    return b"second-value-%d-7b3d2e64" % i


async def _fill(store: store_mod.Store, n: int) -> None:
    for i in range(n):
        await store.create(f"{PREFIX}default/s{i}", _secret(f"s{i}", _first(i)))
        await store.update(f"{PREFIX}default/s{i}", _secret(f"s{i}", _second(i)), expect_revision=None)


async def _check_all(store: store_mod.Store, n: int) -> None:
    items = store.scan(PREFIX).items
    assert sorted(i.object()["raw"] for i in items) == sorted(_second(i) for i in range(n))


async def _boot_and_check(root: Path, n: int) -> None:
    """Open the store (a boot, with its re-encryption pass when due) and read every Secret."""
    store = _store(root)
    await store.start()
    try:
        await _check_all(store, n)
    finally:
        await store.close()


async def test_plaintext_from_before_is_read_then_encrypted_and_scrubbed_at_boot(tmp_path: Path) -> None:
    old = _store(tmp_path, encrypted=False)
    await old.start()
    await _fill(old, 5)
    await old.close()
    assert _files_containing(tmp_path, _second(3))  # the old layout: plaintext in data.mdb
    assert _key_names(tmp_path) == {None}
    store = _store(tmp_path)
    await store.start()
    try:
        await _check_all(store, 5)
        # History too: the first revision of a Secret is readable and was re-encrypted.
        first = store.scan(PREFIX, revision=1).items
        assert [i.object()["raw"] for i in first] == [_first(0)]
    finally:
        await store.close()
    names = _key_names(tmp_path)
    assert len(names) == 1 and None not in names
    for needle in (_first(3), _second(3), base64.b64encode(_second(3))):
        assert _files_containing(tmp_path, needle) == [], needle


async def test_rotation_interrupted_at_any_batch_leaves_everything_readable(tmp_path: Path) -> None:
    store = _store(tmp_path)
    await store.start()
    await _fill(store, 6)
    await store.close()
    key_file = tmp_path / encryption.KEY_FILE
    first = encryption.read(key_file).primary
    new = encryption.add_primary_key(key_file)
    t = encryption.Transformer(key_file)
    db = lmdb_log.LmdbLog(tmp_path / "db", map_size=16 << 20, max_size=64 << 20, transformer=t)
    # A crash after the first few records: one batch of the pass, no more.
    _, done = db.rewrite_values(PREFIX, lambda k, _rev, v: t.to_storage(k, t.from_storage(k, v)), after=0,
                                batch=3)
    db.close()
    assert not done and _key_names(tmp_path) == {first, new}
    # The next boot reads both and finishes the pass (the log's meta says it is due).
    await _boot_and_check(tmp_path, 6)
    assert _key_names(tmp_path) == {new}
    assert set(encryption.read(key_file).keys) == {first, new}  # boot never drops keys
    t = encryption.Transformer(key_file)
    db = lmdb_log.LmdbLog(tmp_path / "db", map_size=16 << 20, max_size=64 << 20, transformer=t)
    try:
        assert encryption.reencrypt(db, t).complete
    finally:
        db.close()
    assert encryption.retire_keys(key_file, primary=new) == [first]
    await _boot_and_check(tmp_path, 6)


async def test_a_running_store_writes_with_the_key_the_file_names_now(tmp_path: Path) -> None:
    store = _store(tmp_path)
    await store.start()
    try:
        await store.create(PREFIX + "default/a", _secret("a"))
        new = encryption.add_primary_key(tmp_path / encryption.KEY_FILE)
        await store.create(PREFIX + "default/b", _secret("b"))
    finally:
        await store.close()
    values = _stored(tmp_path)
    assert encryption.key_name(values[max(values)]) == new


def _damage(root: Path, revision: int, change: Any) -> None:
    env = lmdb.open(str(root / "db"), max_dbs=4, map_size=16 << 20)
    log = env.open_db(b"log")
    with env.begin(write=True, db=log) as txn:
        rec = msgpack.unpackb(txn.get(lmdb_log.rev_bytes(revision)), raw=False)
        rec[3] = change(rec[3])
        txn.put(lmdb_log.rev_bytes(revision), msgpack.packb(rec, use_bin_type=True))
    env.close()


@pytest.mark.parametrize("damage", ["flipped-byte", "unknown-key", "garbage"])
async def test_an_undecryptable_value_is_named_skipped_in_lists_and_nothing_else_fails(
        tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    store = _store(tmp_path)
    await store.start()
    await store.create(PREFIX + "default/good", _secret("good"))
    bad = await store.create(PREFIX + "default/bad", _secret("bad"))
    await store.close()
    changes = {
        "flipped-byte": lambda v: v[:-5] + bytes([v[-5] ^ 0x40]) + v[-4:],
        "unknown-key": lambda v: v.replace(v[len(encryption.VALUE_PREFIX):v.index(b":", len(encryption.VALUE_PREFIX))],
                                           b"lost-key"),
        "garbage": lambda v: b"\x07\x00garbage",
    }
    _damage(tmp_path, bad.revision, changes[damage])
    store = _store(tmp_path)  # the boot pass meets it too, and the store opens all the same
    await store.start()
    try:
        with pytest.raises(encryption.DecryptError) as info:
            store.get(PREFIX + "default/bad")
        assert "/core/secrets/default/bad" in str(info.value)
        if damage == "unknown-key":
            assert "'lost-key'" in str(info.value) and info.value.key_name == "lost-key"
        # Lists and watch replays skip it; the good one is there.
        assert [i.key for i in store.scan(PREFIX).items] == [PREFIX + "default/good"]
        assert [r.key for r in store._db.read_log(0, prefix=PREFIX, limit=10)] == [PREFIX + "default/good"]
        # Writing it fails alone: a write in the same group commit goes through.
        f1 = store.update(PREFIX + "default/bad", _secret("bad"), expect_revision=None)
        f2 = store.create(PREFIX + "default/other", _secret("other"))
        with pytest.raises(encryption.DecryptError):
            await f1
        assert (await f2).revision > 0
        assert store.damage.skipped >= 1
    finally:
        await store.close()
    assert any("/core/secrets/default/bad" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


def test_the_key_file_names_resources_where_the_registry_stores_them() -> None:
    info = resources.Catalog().lookup("", "v1", "secrets")
    assert info is not None and encryption.key_prefix("secrets") == info.key_prefix() == PREFIX


async def test_store_check_and_recover_read_encrypted_secrets(tmp_path: Path) -> None:
    store = _store(tmp_path)
    await store.start()
    await _fill(store, 3)
    await store.close()
    report = repair.check(tmp_path)
    assert report.findings == [] and report.readable_objects == 3
    kept, lost, _ = repair.recover(tmp_path)
    assert kept == 3 and lost == []
    assert _key_names(tmp_path) == {encryption.read(tmp_path / encryption.KEY_FILE).primary}
    await _boot_and_check(tmp_path, 3)


async def test_a_lost_key_file_is_said_at_boot_with_the_key_to_put_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = _store(tmp_path)
    await store.start()
    await _fill(store, 2)
    await store.close()
    key_file = tmp_path / encryption.KEY_FILE
    lost = encryption.read(key_file)
    key_file.unlink()
    store = _store(tmp_path)
    await store.start()
    try:
        assert store.scan(PREFIX).items == []  # unreadable, skipped: the store serves on
        assert store.damage.skipped >= 2
        # The way back: the old key into the file (the store follows it without a restart).
        now = encryption.read(key_file)
        encryption.write(key_file, encryption.Keyring(primary=now.primary, keys={**now.keys, **lost.keys},
                                                      identity=True))
        await _check_all(store, 2)
    finally:
        await store.close()
    assert any(f"encrypted with key {lost.primary}" in r.getMessage() and str(key_file) in r.getMessage()
               for r in caplog.records if r.levelname == "ERROR")
