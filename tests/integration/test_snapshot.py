"""`edgekube snapshot save|restore` (store/snapshot.py) and scheduled snapshots, against real
servers: a consistent copy taken while writes go on, a restore that brings the cluster back as it
was with resourceVersions still going forward, and files that are not snapshots refused with the
data dir untouched."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edgekube.store import snapshot
from tests.conftest import REPO, Server
from tests.support.apiclient import Api
from tests.support.waiting import until


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekube", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO)


def _cm(api: Api, name: str, **data: str) -> dict[str, Any]:
    code, body = api.call("POST", "/api/v1/namespaces/default/configmaps",
                          json.dumps({"metadata": {"name": name}, "data": data}))
    assert code == 201, body
    return body  # type: ignore[no-any-return]


def _exists(api: Api, path: str) -> bool:
    code, _ = api.call("GET", path)
    assert code in (200, 404)
    return code == 200


def _tree_digest(data_dir: Path) -> dict[str, str]:
    out = {}
    for path in sorted(data_dir.rglob("*")):
        if path.is_file() and not path.is_symlink() and "lock" not in path.name:
            out[str(path.relative_to(data_dir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_save_while_writing_then_restore_brings_the_cluster_back_going_forward(tmp_path: Path) -> None:
    server = Server(tmp_path / "data")
    server.start()
    api = Api(server)
    snap = tmp_path / "site.tar.gz"
    try:
        early = _cm(api, "early", a="1")
        code, secret = api.call("POST", "/api/v1/namespaces/default/secrets",
                                json.dumps({"metadata": {"name": "creds"}, "stringData": {"password": "hunter2"}}))
        assert code == 201, secret
        # Writes go on while the snapshot is taken: it is one consistent moment.
        stop = threading.Event()
        writer_api = Api(server)

        def write() -> None:
            i = 0
            while not stop.is_set():
                _cm(writer_api, f"busy-{i}", n=str(i))
                i += 1

        writer = threading.Thread(target=write)
        writer.start()
        try:
            time.sleep(0.3)
            out = _cli("snapshot", "save", str(snap), "--data-dir", str(server.data_dir))
        finally:
            stop.set()
            writer.join()
            writer_api.close()
        assert out.returncode == 0, out.stderr
        assert "keep it safe" in out.stdout and snap.stat().st_mode & 0o777 == 0o600
        info = snapshot.read_info(snap)
        with tarfile.open(snap) as tar:
            names = tar.getnames()
        assert names[0] == "snapshot.json" and "db/data.mdb" in names and "tls/ca.crt" in names
        assert "cred/encryption-config.json" in names and "kubeconfig.yaml" in names
        # After the snapshot: one object changed, one deleted, one made.
        assert api.call("DELETE", "/api/v1/namespaces/default/configmaps/early")[0] == 200
        later = _cm(api, "later", b="2")
        top_before = int(later["metadata"]["resourceVersion"])
        api.close()
        assert server.stop() == 0
        # The same data dir, stopped: restored.
        out = _cli("snapshot", "restore", str(snap), "--data-dir", str(server.data_dir))
        assert out.returncode == 0, out.stderr
        assert f"restored cluster {info.cluster} at revision {info.revision}" in out.stdout
        assert list(server.data_dir.glob("before-restore-*/db/data.mdb"))
        server.start()
        back = api.call("GET", "/api/v1/namespaces/default/configmaps/early")[1]
        assert back["metadata"]["uid"] == early["metadata"]["uid"] and back["data"] == {"a": "1"}
        assert not _exists(api, "/api/v1/namespaces/default/configmaps/later")
        code, secret = api.call("GET", "/api/v1/namespaces/default/secrets/creds")
        assert code == 200 and base64.b64decode(secret["data"]["password"]) == b"hunter2"
        # The busy writer's objects: exactly those up to the snapshot's revision, none after.
        code, listed = api.call("GET", "/api/v1/namespaces/default/configmaps")
        busy = sorted(int(i["metadata"]["name"].split("-")[1]) for i in listed["items"]
                      if i["metadata"]["name"].startswith("busy-"))
        assert busy == list(range(len(busy)))  # a prefix of what was written: one moment
        assert all(int(i["metadata"]["resourceVersion"]) <= info.revision for i in listed["items"])
        # Time goes forward: a new write's resourceVersion is above anything handed out before.
        after = _cm(api, "after-restore")
        assert int(after["metadata"]["resourceVersion"]) > top_before
        # A watch from a resourceVersion of before the restore is too old: 410, relist.
        code, body = api.call("GET", f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={info.revision}"
                              "&timeoutSeconds=2")
        text = body if isinstance(body, bytes) else json.dumps(body).encode()
        assert (code == 410 or b'"code":410' in text.replace(b" ", b"")), (code, text[:300])
    finally:
        api.close()
        if server.proc is not None:
            server.stop()


def test_a_new_device_restored_from_a_snapshot_is_the_same_cluster(tmp_path: Path) -> None:
    old = Server(tmp_path / "old")
    old.start()
    api = Api(old)
    snap = tmp_path / "old.tar.gz"
    try:
        _cm(api, "kept", k="v")
        assert _cli("snapshot", "save", str(snap), "--data-dir", str(old.data_dir)).returncode == 0
    finally:
        api.close()
        old.stop()
    new = Server(tmp_path / "new")
    out = _cli("snapshot", "restore", str(snap), "--data-dir", str(new.data_dir))
    assert out.returncode == 0, out.stderr
    new.start()
    try:
        # The old kubeconfig's admin certificate and CA work against the new device.
        api = Api(new)
        assert api.call("GET", "/api/v1/namespaces/default/configmaps/kept")[1]["data"] == {"k": "v"}
        assert (new.data_dir / "tls" / "ca.crt").read_bytes() == (old.data_dir / "tls" / "ca.crt").read_bytes()
        api.close()
    finally:
        new.stop()


def test_restore_refuses_a_running_node(tmp_path: Path) -> None:
    server = Server(tmp_path / "data")
    server.start()
    try:
        snap = tmp_path / "s.tar.gz"
        assert _cli("snapshot", "save", str(snap), "--data-dir", str(server.data_dir)).returncode == 0
        out = _cli("snapshot", "restore", str(snap), "--data-dir", str(server.data_dir))
        assert out.returncode == 1 and "is in use by another edgekube" in out.stderr
        assert server.ready()
    finally:
        server.stop()


def _tar(members: list[tuple[str, bytes]], *, kind: bytes = tarfile.REGTYPE) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members:
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            entry.type = kind if name != "snapshot.json" else tarfile.REGTYPE
            tar.addfile(entry, io.BytesIO(data))
    return buf.getvalue()


MANIFEST = json.dumps({"format": 1, "cluster": "c", "revision": 5, "taken": "2026-12-07T00:00:00Z"}).encode()


CASES = [
    (b"", "cannot be read as a snapshot"),
    (b"\x1f\x8b\x08\x00garbage that is not deflate", "cannot be read as a snapshot"),
    ("truncated", "cannot be read as a snapshot"),
    (_tar([("etc/passwd", b"x")]), "not an edgekube snapshot"),
    (_tar([("snapshot.json", json.dumps({"format": 9}).encode())]), "this edgekube reads format 1"),
    (_tar([("snapshot.json", MANIFEST), ("../escape", b"x")]), "unexpected member '../escape'"),
    (_tar([("snapshot.json", MANIFEST), ("/etc/cron.d/x", b"x")]), "unexpected member '/etc/cron.d/x'"),
    (_tar([("snapshot.json", MANIFEST), ("tls/link", b"")], kind=tarfile.SYMTYPE), "unexpected member 'tls/link'"),
    (_tar([("snapshot.json", MANIFEST), ("tls/ca.crt", b"x")]), "holds no database"),
    (_tar([("snapshot.json", MANIFEST), ("db/data.mdb", b"\0" * 8192)]), "damaged"),
    ("foreign", "is not the one its snapshot.json describes"),
]


@pytest.fixture(scope="module")
def stopped_node(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A stopped node's data dir with one ConfigMap, and a good snapshot of it."""
    tmp = tmp_path_factory.mktemp("snap")
    server = Server(tmp / "data")
    server.start()
    api = Api(server)
    _cm(api, "mine")
    api.close()
    good = tmp / "good.tar.gz"
    assert _cli("snapshot", "save", str(good), "--data-dir", str(server.data_dir)).returncode == 0
    server.stop()
    return server.data_dir, good


@pytest.mark.parametrize(("content", "why"), CASES)
def test_what_is_not_a_good_snapshot_is_refused_and_the_data_dir_untouched(
        tmp_path: Path, stopped_node: tuple[Path, Path], content: bytes | str, why: str) -> None:
    source, good = stopped_node
    data_dir = tmp_path / "data"
    shutil.copytree(source, data_dir, symlinks=True)
    bad = tmp_path / "bad.tar.gz"
    if content == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif content == "foreign":  # a real database under another snapshot's manifest
        with tarfile.open(good) as tar:
            db = tar.extractfile("db/data.mdb").read()  # type: ignore[union-attr]
        bad.write_bytes(_tar([("snapshot.json", MANIFEST), ("db/data.mdb", db)]))
    else:
        assert isinstance(content, bytes)
        bad.write_bytes(content)
    before = _tree_digest(data_dir)
    out = _cli("snapshot", "restore", str(bad), "--data-dir", str(data_dir))
    assert out.returncode == 1 and why in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1  # one line, no traceback
    assert _tree_digest(data_dir) == before
    assert not (data_dir / "restore.tmp").exists() and not list(data_dir.glob("before-restore-*"))


def test_a_refused_restore_leaves_a_node_that_boots_as_it_was(tmp_path: Path, stopped_node: tuple[Path, Path]) -> None:
    source, _ = stopped_node
    data_dir = tmp_path / "data"
    shutil.copytree(source, data_dir, symlinks=True)
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(_tar([("snapshot.json", MANIFEST), ("db/data.mdb", b"\0" * 8192)]))
    assert _cli("snapshot", "restore", str(bad), "--data-dir", str(data_dir)).returncode == 1
    server = Server(data_dir)
    server.start()
    api = Api(server)
    try:
        assert _exists(api, "/api/v1/namespaces/default/configmaps/mine")
    finally:
        api.close()
        server.stop()


def test_scheduled_snapshots_keep_the_newest(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("store: {snapshot-interval-hours: 0.0004, snapshot-retention: 2}\n")  # every 1.44 s
    server = Server(tmp_path / "data", extra=["--config", str(cfg)])
    server.start()
    api = Api(server)
    try:
        folder = server.data_dir / "snapshots"
        for i in range(3):
            _cm(api, f"n{i}")
            time.sleep(1.6)
        until(lambda: "older removed" in server.log(), timeout=30, what="a snapshot pruned")
        snaps = sorted(folder.glob("edgekube-*.tar.gz"))
        assert len(snaps) == 2, snaps
        infos = [snapshot.read_info(p) for p in snaps]
        assert infos[0].revision <= infos[1].revision and all(p.stat().st_mode & 0o777 == 0o600 for p in snaps)
    finally:
        api.close()
        server.stop()


def test_a_snapshot_that_fails_leaves_nothing_behind(tmp_path: Path) -> None:
    import datetime

    import lmdb

    def full_disk(dest: Path) -> None:
        (dest / "data.mdb").write_bytes(b"half")
        raise lmdb.DiskError("mdb_env_copy2: No space left on device")

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(snapshot.SnapshotError, match=r"could not be copied: .*No space left"):
        snapshot.save(tmp_path, out / "s.tar.gz", copy=full_disk, version="test",
                      now=datetime.datetime.now(datetime.UTC))
    assert list(out.iterdir()) == []  # no half file (it would hold private keys), no scratch dir


def test_pruning_keeps_the_snapshot_just_taken_whatever_its_name(tmp_path: Path) -> None:
    for stamp in ("20261201T000000Z", "20261202T000000Z", "20261203T000000Z"):
        (tmp_path / f"edgekube-n-{stamp}.tar.gz").write_bytes(b"x")
    newest = tmp_path / "edgekube-n-19700101T000010Z.tar.gz"  # taken before NTP set the clock
    newest.write_bytes(b"x")
    gone = snapshot.prune(tmp_path, keep=2, prefix="edgekube-n-", newest=newest)
    assert sorted(p.name for p in gone) == ["edgekube-n-20261201T000000Z.tar.gz", "edgekube-n-20261202T000000Z.tar.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edgekube-n-19700101T000010Z.tar.gz",
                                                          "edgekube-n-20261203T000000Z.tar.gz"]
