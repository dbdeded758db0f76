"""Every acknowledged write survives a `kill -9` of the server, and revisions stay monotonic."""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Server


def _ctx(server: Server) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(server.ca))
    tls = server.data_dir / "tls"
    ctx.load_cert_chain(str(tls / "admin.crt"), str(tls / "admin.key"))
    return ctx


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    server = Server(tmp_path / "data")
    server.start()
    try:
        ctx = _ctx(server)
        acked: dict[str, int] = {}
        lock = threading.Lock()
        stop = threading.Event()

        def storm(worker: int) -> None:
            i = 0
            while not stop.is_set() and i < 5000:
                name = f"w{worker}-{i}"
                body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                                   "data": {"i": str(i)}}).encode()
                req = urllib.request.Request(f"{server.url}/api/v1/namespaces/default/configmaps", data=body,
                                             method="POST", headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
                        rv = int(json.loads(r.read())["metadata"]["resourceVersion"])
                except (OSError, urllib.error.URLError):
                    return  # the server died under us: this write was never acknowledged
                with lock:
                    acked[name] = rv
                i += 1

        threads = [threading.Thread(target=storm, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(acked) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill()
        stop.set()
        for t in threads:
            t.join(timeout=10)
        assert len(acked) >= 300, f"only {len(acked)} writes acknowledged before the kill"

        server.start()
        ctx = _ctx(server)
        with urllib.request.urlopen(f"{server.url}/api/v1/namespaces/default/configmaps", context=ctx, timeout=30) as r:
            listed = {i["metadata"]["name"]: int(i["metadata"]["resourceVersion"]) for i in json.loads(r.read())["items"]}
        missing = sorted(set(acked) - set(listed))
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
        for name, rv in acked.items():
            assert listed[name] == rv
        body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after-restart"}}).encode()
        req = urllib.request.Request(f"{server.url}/api/v1/namespaces/default/configmaps", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            new_rv = int(json.loads(r.read())["metadata"]["resourceVersion"])
        assert new_rv > max(listed.values())
    finally:
        server.close()


def test_sigterm_stops_cleanly_and_keeps_leases(tmp_path: Path) -> None:
    server = Server(tmp_path / "data")
    server.start()
    try:
        ctx = _ctx(server)
        body = json.dumps({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1"},
                           "spec": {"holderIdentity": "n1"}}).encode()
        req = urllib.request.Request(f"{server.url}/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                                     data=body, method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            assert r.status == 201
        assert server.stop() == 0
        server.start()
        url = f"{server.url}/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1"
        with urllib.request.urlopen(url, context=_ctx(server), timeout=5) as r:
            assert json.loads(r.read())["spec"]["holderIdentity"] == "n1"
    finally:
        server.close()


def test_second_server_on_the_same_data_dir_exits_with_one_line(tmp_path: Path) -> None:
    """Two servers on one data dir would both write (lost objects, repeated resourceVersions):
    the second one exits at once, with one line naming the data dir and the holder, and the
    first one goes on serving, its data untouched."""
    first = Server(tmp_path / "data")
    first.start()
    try:
        ctx = _ctx(first)
        body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept"}}).encode()
        req = urllib.request.Request(f"{first.url}/api/v1/namespaces/default/configmaps", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            rv = json.loads(r.read())["metadata"]["resourceVersion"]
        crt = (first.data_dir / "tls" / "server.crt").read_bytes()
        second = Server(first.data_dir)
        second.log_path = tmp_path / "second.log"
        with pytest.raises(RuntimeError, match="exited with 1"):
            second.start(timeout=20)
        out = second.log_path.read_text().strip().splitlines()
        assert len(out) == 1, out
        assert first.proc is not None
        assert str(first.data_dir) in out[0] and f"pid {first.proc.pid}" in out[0], out
        # The first server still serves, and nothing of its data dir changed.
        assert (first.data_dir / "tls" / "server.crt").read_bytes() == crt
        url = f"{first.url}/api/v1/namespaces/default/configmaps/kept"
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
            assert json.loads(r.read())["metadata"]["resourceVersion"] == rv
        # Once the first one stopped, the lock is free again (and after a kill -9 too).
        first.kill()
        second.start()
        second.close()
    finally:
        first.close()
