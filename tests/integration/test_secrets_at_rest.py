"""Secrets at rest, through a real `edgekube server` subprocess, real kubectl and the Python
client: no Secret in plaintext in any file of the data dir (after updates, deletes, compaction
and restarts), key rotation with the server running (and killed halfway), plaintext Secrets of
a database from before encryption, a wrong key, and the modes of everything a boot creates."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import msgpack
import pytest
from kubernetes import client, config

from edgekube._cogs import clock
from edgekube.api.registry import resources, rest
from edgekube.store import encryption
from edgekube.store import store as store_mod
from tests.conftest import REPO, Server

KUBECTL = str(REPO / "tools" / "bin" / "kubectl-1.33")
KUBECTL_VALUE = "kubectl-literal-7d1c2a9e"
CLIENT_VALUE = b"python-client-value-4b8e0f"
UPDATED_VALUE = "updated-value-93ac51"
DELETED_VALUE = "deleted-value-0e6b77"


def _needles(*values: str | bytes) -> list[bytes]:
    """A value as it may sit in a file: raw, and base64 as in a Secret's `data`."""
    out: list[bytes] = []
    for v in values:
        raw = v.encode() if isinstance(v, str) else v
        out += [raw, base64.b64encode(raw)]
    return out


def _plaintext_files(data_dir: Path, needles: list[bytes]) -> list[tuple[str, bytes]]:
    found = []
    for p in sorted(data_dir.rglob("*")):
        if p.is_file() and not p.is_symlink():
            content = p.read_bytes()
            found += [(str(p), n) for n in needles if n in content]
    return found


def _kubectl(server: Server, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([KUBECTL, "--kubeconfig", str(server.kubeconfig), *args], capture_output=True, text=True,
                         timeout=60, check=False)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def _secrets_cli(data_dir: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekube", "secrets-encrypt", command, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=120, check=False, cwd=REPO)


def _core(server: Server) -> client.CoreV1Api:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(server.kubeconfig), client_configuration=cfg)
    return client.CoreV1Api(client.ApiClient(cfg))


def _read(server: Server, name: str, key: str = "pw") -> bytes:
    """One Secret's value through both clients, which must agree."""
    got = _kubectl(server, "get", "secret", name, "-o", f"jsonpath={{.data.{key}}}").stdout
    from_client = _core(server).read_namespaced_secret(name, "default").data[key]
    assert got == from_client
    return base64.b64decode(got)


def _get(server: Server, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{server.url}{path}", context=server.admin_context(), timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    cfg = tmp_path / "config.yaml"
    # Compaction every second, keeping one revision: old Secret values leave the log quickly.
    cfg.write_text("store:\n  compaction-interval-seconds: 1\n  compaction-window: 1\n")
    server = Server(tmp_path / "data", extra=["--config", str(cfg)])
    server.start()
    try:
        yield server
    finally:
        server.close()


def _create_secrets(server: Server) -> None:
    _kubectl(server, "create", "secret", "generic", "by-kubectl", f"--from-literal=pw={KUBECTL_VALUE}")
    _core(server).create_namespaced_secret("default", client.V1Secret(
        metadata=client.V1ObjectMeta(name="by-client"), data={"pw": base64.b64encode(CLIENT_VALUE).decode()}))
    _kubectl(server, "create", "secret", "generic", "updated", "--from-literal=pw=first-value-55d0e1")
    patch = json.dumps({"stringData": {"pw": UPDATED_VALUE}})
    _kubectl(server, "patch", "secret", "updated", "-p", patch)
    _kubectl(server, "create", "secret", "generic", "deleted", f"--from-literal=pw={DELETED_VALUE}")
    _kubectl(server, "delete", "secret", "deleted")


def _check_secrets(server: Server) -> None:
    assert _read(server, "by-kubectl") == KUBECTL_VALUE.encode()
    assert _read(server, "by-client") == CLIENT_VALUE
    assert _read(server, "updated") == UPDATED_VALUE.encode()
    assert _kubectl(server, "get", "secret", "deleted", check=False).returncode != 0


def test_no_secret_in_plaintext_in_any_file_of_the_data_dir(srv: Server) -> None:
    _create_secrets(srv)
    needles = _needles(KUBECTL_VALUE, CLIENT_VALUE, UPDATED_VALUE, DELETED_VALUE, "first-value-55d0e1")
    assert _plaintext_files(srv.data_dir, needles) == []
    # Wait for compaction to pass the Secrets' writes: a list page taken now, continued once
    # two more writes are in and compaction ran, is then 410 Gone.
    code, page = _get(srv, "/api/v1/namespaces/default/secrets?limit=1")
    assert code == 200 and page["metadata"]["continue"]
    for i in range(2):
        _kubectl(srv, "create", "configmap", f"after-{i}")
    token = urllib.parse.quote(page["metadata"]["continue"])
    while _get(srv, f"/api/v1/namespaces/default/secrets?limit=1&continue={token}")[0] != 410:
        time.sleep(0.2)
    assert _plaintext_files(srv.data_dir, needles) == []
    _check_secrets(srv)
    assert srv.stop() == 0
    assert _plaintext_files(srv.data_dir, needles) == []
    srv.start()
    _check_secrets(srv)
    srv.kill()
    srv.start()
    _check_secrets(srv)
    assert _plaintext_files(srv.data_dir, needles) == []


def _modes(data_dir: Path) -> dict[str, str]:
    out = {".": oct(stat.S_IMODE(data_dir.stat().st_mode))}
    for p in data_dir.rglob("*"):
        if p.is_symlink():  # LMDB's lock file while the server runs: in memory, checked apart
            continue
        out[str(p.relative_to(data_dir))] = oct(stat.S_IMODE(p.lstat().st_mode))
    return out


def _expected_mode(rel: str, is_dir: bool) -> str:
    if is_dir:
        return "0o700"
    return "0o644" if rel == "tls/ca.crt" else "0o600"


def test_the_data_dir_is_private_and_older_installs_are_fixed_at_boot(srv: Server) -> None:
    _create_secrets(srv)
    assert srv.stop() == 0
    data_dir = srv.data_dir
    expected = {rel: _expected_mode(rel, (data_dir / rel).is_dir()) for rel in _modes(data_dir)}
    assert _modes(data_dir) == expected
    assert {"db/data.mdb", "tls/ca.key", "kubeconfig.yaml", "cred/encryption-config.json"} <= set(expected)
    # An install from before: everything readable by all.
    for p in [data_dir, *data_dir.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    srv.start()
    assert _modes(data_dir) == expected
    lock = Path(os.readlink(data_dir / "db" / "lock.mdb"))  # in memory, as private
    assert (oct(stat.S_IMODE(lock.stat().st_mode)), oct(stat.S_IMODE(lock.parent.stat().st_mode))) == ("0o600", "0o700")
    _check_secrets(srv)


def test_rotate_keys_with_the_server_running(srv: Server) -> None:
    _create_secrets(srv)
    key_file = srv.data_dir / encryption.KEY_FILE
    old = encryption.read(key_file).primary
    out = _secrets_cli(srv.data_dir, "rotate-keys")
    assert out.returncode == 0, out.stderr
    ring = encryption.read(key_file)
    assert ring.primary != old and list(ring.keys) == [ring.primary]
    assert f"dropped {old}" in out.stdout
    _check_secrets(srv)
    _kubectl(srv, "create", "secret", "generic", "after-rotation", "--from-literal=pw=after-rotation-2f7d")
    status = _secrets_cli(srv.data_dir, "status")
    assert status.returncode == 0, status.stderr
    assert f"Active Key: {ring.primary}" in status.stdout
    assert "Current Rotation Stage: reencrypt_finished" in status.stdout
    srv.stop()
    srv.start()
    _check_secrets(srv)
    assert _read(srv, "after-rotation") == b"after-rotation-2f7d"


def _stored_key_names(data_dir: Path) -> dict[str | None, int]:
    """How many stored Secret values each key encrypts, read from the database beside the server."""
    env = lmdb.open(str(data_dir / "db"), readonly=True, max_dbs=4, lock=True)
    try:
        names: dict[str | None, int] = {}
        with env.begin(db=env.open_db(b"log", create=False), buffers=False) as txn:
            for _, data in txn.cursor():
                key, _, _, value = msgpack.unpackb(data, raw=False)
                if key.startswith("/core/secrets/"):
                    name = encryption.key_name(value)
                    names[name] = names.get(name, 0) + 1
        return names
    finally:
        env.close()


def test_rotation_killed_halfway_loses_nothing(srv: Server) -> None:
    n = 1000
    items = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"many-{i}"},
              "stringData": {"pw": f"many-value-{i}"}} for i in range(n)]
    out = subprocess.run([KUBECTL, "--kubeconfig", str(srv.kubeconfig), "create", "-f", "-"], capture_output=True,
                         text=True, input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    expected = {f"many-{i}": f"many-value-{i}".encode() for i in range(n)}
    key_file = srv.data_dir / encryption.KEY_FILE
    old = encryption.read(key_file).primary
    # One record per transaction: the pass takes a thousand commits, and is killed among them.
    proc = subprocess.Popen([sys.executable, "-m", "edgekube", "secrets-encrypt", "rotate-keys", "--batch", "1",
                             "--data-dir", str(srv.data_dir)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None and len(_stored_key_names(srv.data_dir)) < 2:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the rotation ended before it could be killed halfway"
    ring = encryption.read(key_file)
    assert ring.primary != old and set(ring.keys) == {ring.primary, old}
    halfway = _stored_key_names(srv.data_dir)
    assert halfway.get(old) and halfway.get(ring.primary), halfway
    core = _core(srv)

    def values() -> dict[str, bytes]:
        return {s.metadata.name: base64.b64decode(s.data["pw"]) for s in core.list_namespaced_secret("default").items}

    # Every Secret reads back, from the server that stayed up, and after a kill -9 of it.
    assert values() == expected
    srv.kill()
    srv.start()
    core = _core(srv)
    assert values() == expected
    # The boot finished the pass (it never drops keys); `reencrypt` then drops the old one.
    assert set(_stored_key_names(srv.data_dir)) == {ring.primary}
    out = _secrets_cli(srv.data_dir, "reencrypt")
    assert out.returncode == 0, out.stderr
    assert list(encryption.read(key_file).keys) == [ring.primary]
    assert values() == expected
    srv.stop()
    srv.start()
    assert _read(srv, f"many-{n - 1}") == f"many-value-{n - 1}".encode()


async def _old_database(data_dir: Path) -> None:
    """A data dir as edgekube wrote it before encryption: Secrets stored as they are."""
    catalog = resources.Catalog()
    store = store_mod.Store(store_mod.StoreConfig(path=data_dir, compaction_interval_seconds=0),
                            memory_prefixes=[i.key_prefix() for i in catalog.all() if i.memory_tier])
    await store.start()
    try:
        registry = rest.Registry(store, catalog=catalog, clock=clock.WallClock(), network=rest.ServiceNetwork())
        await registry.ensure_system_namespaces()
        info = catalog.lookup("", "v1", "secrets")
        assert info is not None
        for name, value in (("legacy", "legacy-value-61fe20"), ("legacy-updated", "legacy-first-8a8a")):
            await registry.create(info, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                                         "stringData": {"pw": value}}, namespace="default")
        obj = registry.get(info, namespace="default", name="legacy-updated")
        obj["data"] = {"pw": base64.b64encode(b"legacy-second-9b9b").decode()}
        await registry.update(info, obj, namespace="default", name="legacy-updated")
    finally:
        await store.close()


def test_plaintext_secrets_from_before_encryption_are_read_and_encrypted(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    asyncio.run(_old_database(data_dir))
    needles = _needles("legacy-value-61fe20", "legacy-first-8a8a", "legacy-second-9b9b")
    assert _plaintext_files(data_dir, needles)  # the old layout: there they are
    server = Server(data_dir)
    server.start()
    try:
        assert _read(server, "legacy") == b"legacy-value-61fe20"
        assert _read(server, "legacy-updated") == b"legacy-second-9b9b"
        assert _plaintext_files(data_dir, needles) == []
        status = _secrets_cli(data_dir, "status")
        assert status.returncode == 0, status.stderr
        primary = encryption.read(data_dir / encryption.KEY_FILE).primary
        assert f"Stored Secret Values: 3 {primary}\n" in status.stdout  # 2 Secrets, one updated
        assert "Current Rotation Stage: reencrypt_finished" in status.stdout
        server.stop()
        server.start()
        assert _read(server, "legacy") == b"legacy-value-61fe20"
    finally:
        server.close()
    assert _plaintext_files(data_dir, needles) == []


def test_a_wrong_key_is_reported_by_name_and_the_server_stays_up(srv: Server) -> None:
    _create_secrets(srv)
    assert srv.stop() == 0
    key_file = srv.data_dir / encryption.KEY_FILE
    ring = encryption.read(key_file)
    assert ring.primary is not None
    # The file now holds another key under a new name: the stored values name one it lacks.
    encryption.write(key_file, encryption.Keyring(primary="replacement", keys={"replacement": os.urandom(32)},
                                                  identity=True))
    srv.start()
    code, body = _get(srv, "/api/v1/namespaces/default/secrets/by-kubectl")
    assert code == 500 and body["kind"] == "Status" and body["reason"] == "InternalError"
    assert "/core/secrets/default/by-kubectl" in body["message"] and ring.primary in body["message"]
    assert "not in" in body["message"] and str(key_file) in body["message"]
    out = _kubectl(srv, "get", "secret", "by-kubectl", check=False)
    assert out.returncode != 0 and ring.primary in out.stderr
    # The rest of the API works, Secrets included; the list leaves the unreadable ones out.
    _kubectl(srv, "create", "secret", "generic", "fresh", "--from-literal=pw=fresh-value-12ab")
    assert _read(srv, "fresh") == b"fresh-value-12ab"
    names = [s.metadata.name for s in _core(srv).list_namespaced_secret("default").items]
    assert names == ["fresh"]
    assert srv.ready()
    assert "stored object /core/secrets/default/by-kubectl (revision" in srv.log()
    assert f"it is encrypted with key '{ring.primary}', which is not in {key_file}" in srv.log()
    status = _secrets_cli(srv.data_dir, "status")
    assert status.returncode == 1 and "/core/secrets/default/by-kubectl" in status.stderr
    check = subprocess.run([sys.executable, "-m", "edgekube", "store", "check", "--data-dir", str(srv.data_dir)],
                           capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert check.returncode == 1 and "/core/secrets/default/by-kubectl" in check.stdout + check.stderr
    assert "/core/secrets/default/fresh" not in check.stdout + check.stderr
    # One of them can be deleted as it is (the way out when its key is gone for good).
    _kubectl(srv, "delete", "secret", "updated")
    # Putting the key back (as docs/security.md says) makes the others readable again.
    both = encryption.Keyring(primary="replacement", keys={"replacement": encryption.read(key_file).keys["replacement"],
                                                            **ring.keys}, identity=True)
    encryption.write(key_file, both)
    assert _read(srv, "by-kubectl") == KUBECTL_VALUE.encode()
    assert _read(srv, "by-client") == CLIENT_VALUE
    assert _kubectl(srv, "get", "secret", "updated", check=False).returncode != 0
