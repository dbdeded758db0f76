"""No stored object, whatever it holds, may stop the server.

Records that cannot be decoded are planted in a stopped server's database the way they arise on
a device: an object with non-string map keys (written by a version that let them in), a value
with flipped bytes, a log record whose framing is damaged. Then the server boots and must serve:
lists and watches skip them, a GET names the key with a 500, informers and controllers go on,
a DELETE removes them, and the log names each key once.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import msgpack
import pytest

from edgekube.store import lmdb_log
from edgekube.store import store as store_mod
from tests.conftest import REPO, Server

pytestmark = pytest.mark.e2e

KUBECTL = REPO / "tools" / "bin" / "kubectl-1.36"


def _cm(name: str, ns: str = "default", **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, **extra}


def _log_value(data_dir: Path, key: str) -> tuple[int, list[Any]]:
    env = lmdb.open(str(data_dir / "db"), max_dbs=4, readonly=True, lock=False)
    try:
        index, log = env.open_db(b"index", create=False), env.open_db(b"log", create=False)
        with env.begin() as txn:
            raw_rev = txn.get(key.encode(), db=index)
            return lmdb_log.rev_int(raw_rev), msgpack.unpackb(txn.get(raw_rev, db=log), raw=False)
    finally:
        env.close()


def _overwrite(data_dir: Path, revision: int, raw: bytes) -> None:
    env = lmdb.open(str(data_dir / "db"), max_dbs=4)
    try:
        log = env.open_db(b"log", create=False)
        with env.begin(write=True) as txn:
            txn.put(lmdb_log.rev_bytes(revision), raw, db=log)
    finally:
        env.close()


async def _plant(data_dir: Path) -> None:
    store = store_mod.Store(store_mod.StoreConfig(path=data_dir), memory_prefixes=())
    await store.start()
    try:
        # Non-string keys anywhere: data, labels, deep in a pod spec (the kind every informer of
        # the scheduler and the controllers reads).
        await store.create("/core/configmaps/default/int-key", _cm("int-key", data={1: "a"}))
        await store.create("/core/configmaps/default/label-key", _cm("label-key") | {
            "metadata": {"name": "label-key", "namespace": "default", "labels": {True: "x", None: "y", 1.5: "z"}}})
        await store.create("/core/pods/default/bad-pod", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad-pod", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "env": {0: 1}}]}})
        await store.create("/apps/deployments/default/bad-deploy", {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bad-deploy", "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {2: "x"}}}})
        for name in ("flipped", "framing", "good"):
            await store.create(f"/core/configmaps/default/{name}", _cm(name, data={"k": "v"}))
    finally:
        await store.close()
    # Flipped bytes inside one object's value, and a log record whose framing is broken.
    rev, (key, op, prev, value) = _log_value(data_dir, "/core/configmaps/default/flipped")
    damaged = bytearray(value)
    for at in range(len(damaged) // 3, len(damaged) // 3 + 4):
        damaged[at] = 0xC1  # never valid in msgpack
    _overwrite(data_dir, rev, msgpack.packb([key, op, prev, bytes(damaged)], use_bin_type=True))
    rev, _ = _log_value(data_dir, "/core/configmaps/default/framing")
    _overwrite(data_dir, rev, b"\x94\xa5bad")


@pytest.fixture(scope="module")
def damaged_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("damage") / "data"
    first = Server(data_dir)  # a normal first boot: namespaces, certificates
    first.start()
    first.stop()
    asyncio.run(_plant(data_dir))
    server = Server(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.close()


def _call(server: Server, method: str, path: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(f"{server.url}{path}", method=method)
    try:
        with urllib.request.urlopen(req, context=server.admin_context(), timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _kubectl(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KUBECTL), "--kubeconfig", str(server.kubeconfig), *args], capture_output=True,
                          text=True, timeout=60)


DAMAGED = ("int-key", "label-key", "flipped", "framing")


def test_server_boots_and_serves_past_damaged_records(damaged_server: Server) -> None:
    assert damaged_server.proc is not None and damaged_server.proc.poll() is None
    code, listed = _call(damaged_server, "GET", "/api/v1/namespaces/default/configmaps")
    assert code == 200
    names = {i["metadata"]["name"] for i in listed["items"]}
    assert "good" in names and not names & set(DAMAGED)
    # kubectl lists, and with a selector (the filter reads stored bytes too).
    out = _kubectl(damaged_server, "get", "configmaps", "-n", "default", "-o", "name")
    assert out.returncode == 0 and "configmap/good" in out.stdout, out.stderr
    out = _kubectl(damaged_server, "get", "configmaps", "-n", "default", "-l", "app!=x", "-o", "name")
    assert out.returncode == 0 and "configmap/good" in out.stdout, out.stderr
    out = _kubectl(damaged_server, "get", "pods,deployments", "-A")
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("name", DAMAGED)
def test_get_of_a_damaged_object_names_its_key(damaged_server: Server, name: str) -> None:
    code, status = _call(damaged_server, "GET", f"/api/v1/namespaces/default/configmaps/{name}")
    assert code == 500 and status["kind"] == "Status" and status["reason"] == "InternalError"
    assert f"/core/configmaps/default/{name}" in status["message"] and "edgekube store check" in status["message"]


def test_each_damaged_record_is_logged_once_with_its_key(damaged_server: Server) -> None:
    log = damaged_server.log()
    for key in ("/core/configmaps/default/int-key", "/core/pods/default/bad-pod", "/apps/deployments/default/bad-deploy",
                "/core/configmaps/default/flipped"):
        assert f"stored object {key} (revision" in log, key
    assert "Traceback" not in log


def test_controllers_and_watches_go_on(damaged_server: Server) -> None:
    """A new Deployment still gets its ReplicaSet and pods (the informers that skipped the
    damaged pod and deployment keep running), and a watch streams past the damaged records."""
    manifest = json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "fine", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "fine"}},
                 "template": {"metadata": {"labels": {"app": "fine"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    out = subprocess.run([str(KUBECTL), "--kubeconfig", str(damaged_server.kubeconfig), "apply", "-f", "-"],
                         input=manifest, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    out = _kubectl(damaged_server, "wait", "--for=jsonpath={.status.replicas}=2", "deployment/fine", "-n", "default",
                   "--timeout=30s")
    assert out.returncode == 0, out.stderr
    url = f"{damaged_server.url}/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1"
    with urllib.request.urlopen(url, context=damaged_server.admin_context(), timeout=10) as r:
        events = [json.loads(line) for line in r.read().splitlines()]
    names = {e["object"]["metadata"]["name"] for e in events}
    assert "good" in names and not names & set(DAMAGED)


def test_a_damaged_object_can_be_deleted(damaged_server: Server) -> None:
    out = _kubectl(damaged_server, "delete", "configmap", "flipped", "framing", "-n", "default")
    assert out.returncode == 0, out.stderr
    out = _kubectl(damaged_server, "delete", "pod", "bad-pod", "-n", "default", "--wait=false")
    assert out.returncode == 0, out.stderr
    for name in ("flipped", "framing"):
        code, _ = _call(damaged_server, "GET", f"/api/v1/namespaces/default/configmaps/{name}")
        assert code == 404
    out = _kubectl(damaged_server, "create", "configmap", "flipped", "-n", "default", "--from-literal=k=v")
    assert out.returncode == 0, out.stderr


def test_restart_with_damaged_records_still_boots(damaged_server: Server) -> None:
    damaged_server.kill()
    damaged_server.start()
    code, _ = _call(damaged_server, "GET", "/api/v1/namespaces/default/configmaps/good")
    assert code == 200
