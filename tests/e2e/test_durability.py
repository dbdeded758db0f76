"""Every acknowledged write survives a `kill -9` of the server, and revisions stay monotonic."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Server


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    server = Server(tmp_path / "data")
    server.start()
    try:
        ctx = server.admin_context()
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
        ctx = server.admin_context()
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
        ctx = server.admin_context()
        body = json.dumps({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1"},
                           "spec": {"holderIdentity": "n1"}}).encode()
        req = urllib.request.Request(f"{server.url}/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                                     data=body, method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            assert r.status == 201
        assert server.stop() == 0
        server.start()
        url = f"{server.url}/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1"
        with urllib.request.urlopen(url, context=server.admin_context(), timeout=5) as r:
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
        ctx = first.admin_context()
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


class Storm:
    """One round's writers: each creates, updates and deletes its own seven names until the
    server dies under it, recording what was acknowledged and the one write left in flight."""

    def __init__(self, server: Server, *, round_: int, state: dict[str, tuple[int, str] | None]) -> None:
        self.server = server
        self.ctx = server.admin_context()
        self.round = round_
        self.state = state  # name -> (resourceVersion, value) last acknowledged; None once deleted
        self.in_flight: dict[str, str | None] = {}  # name -> value of the write cut off (None: a delete)
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def send(self, method: str, path: str, body: dict[str, object] | None) -> dict[str, object] | None:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.server.url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=5) as r:
                out: dict[str, object] = json.loads(r.read())
                return out
        except (OSError, urllib.error.URLError):
            return None  # not acknowledged (the server died under us)

    def writer(self, worker: int) -> None:
        path = "/api/v1/namespaces/default/configmaps"
        i = 0
        while not self.stop.is_set():
            name = f"r{self.round}-w{worker}-{i % 7}"
            with self.lock:
                current = self.state.get(name)
            value = f"{self.round}.{i}"
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": value}}
            deleting = current is not None and i % 5 == 4
            if current is None:
                out = self.send("POST", path, body)
            elif deleting:
                out = self.send("DELETE", f"{path}/{name}", None)
            else:
                out = self.send("PUT", f"{path}/{name}", body)
            with self.lock:
                if out is None:
                    self.in_flight[name] = None if deleting else value
                    return
                if deleting:
                    self.state[name] = None
                else:
                    meta = out["metadata"]
                    assert isinstance(meta, dict)
                    self.state[name] = (int(meta["resourceVersion"]), value)
            i += 1


def test_twenty_kill_9_rounds_under_creates_updates_and_deletes(tmp_path: Path) -> None:
    """Twenty rounds of: writers creating, updating and deleting, then kill -9 at a random
    moment. After each restart every acknowledged write is there exactly as acknowledged (its
    value and resourceVersion), or as the one write its writer had in flight at the kill (which
    may or may not have been committed); every acknowledged delete holds; revisions only grow."""
    import random

    rnd = random.Random(13)
    server = Server(tmp_path / "data")
    state: dict[str, tuple[int, str] | None] = {}
    top = 0
    try:
        server.start()
        for round_ in range(20):
            storm = Storm(server, round_=round_, state=state)
            threads = [threading.Thread(target=storm.writer, args=(w,)) for w in range(6)]
            for t in threads:
                t.start()
            time.sleep(0.3 + rnd.random() * 1.0)
            server.kill()
            storm.stop.set()
            for t in threads:
                t.join(timeout=10)
            server.start()
            top = check_after_restart(server, storm, top=top)
        assert sum(1 for v in state.values() if v is not None) > 20
    finally:
        server.close()


def check_after_restart(server: Server, storm: Storm, *, top: int) -> int:
    """After the restart that followed `storm`'s round: every acknowledged write of every round
    is there exactly as acknowledged (or as its writer's write in flight, which then counts),
    every acknowledged delete holds, revisions did not go back. Returns the newest revision."""
    state, round_ = storm.state, storm.round
    with urllib.request.urlopen(f"{server.url}/api/v1/namespaces/default/configmaps", context=server.admin_context(),
                                timeout=30) as r:
        listed = {i["metadata"]["name"]: (int(i["metadata"]["resourceVersion"]), i["data"]["v"])
                  for i in json.loads(r.read())["items"] if i["metadata"]["name"].startswith("r")}
    for name, want in list(state.items()):
        got = listed.get(name)
        if name in storm.in_flight:
            # The write in flight may have landed: then it is the state from here on.
            landed = storm.in_flight[name]
            if (landed is None and got is None) or (got is not None and got[1] == landed):
                state[name] = got
                continue
        if want is None:
            assert got is None, f"round {round_}: acknowledged delete of {name} undone"
        else:
            assert got == want, f"round {round_}: {name} is {got}, acknowledged {want}"
    for name, landed in storm.in_flight.items():
        if name not in state and name in listed:
            assert listed[name][1] == landed  # a create in flight that landed
            state[name] = listed[name]
    new_top = max((rv for rv, _ in listed.values()), default=0)
    assert new_top >= top, f"round {round_}: revisions went back from {top} to {new_top}"
    return new_top


def test_two_servers_racing_for_one_data_dir_make_exactly_one_cluster(tmp_path: Path) -> None:
    """Started at the same moment on a fresh data dir: one serves, the other exits with its one
    line, and the winner's data dir is one cluster (one CA, one identity) that takes writes."""
    a, b = Server(tmp_path / "data"), Server(tmp_path / "data")
    b.log_path = tmp_path / "b.log"
    results: dict[str, str] = {}

    def start(name: str, server: Server) -> None:
        try:
            server.start(timeout=30)
            results[name] = "serving"
        except RuntimeError as exc:
            results[name] = str(exc)

    threads = [threading.Thread(target=start, args=(n, s)) for n, s in (("a", a), ("b", b))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(v == "serving" for v in results.values()) == [False, True], results
        winner, loser = (a, b) if results["a"] == "serving" else (b, a)
        assert "is in use by another edgekube" in results["b" if winner is a else "a"]
        assert loser.proc is None or loser.proc.poll() is not None
        ctx = winner.admin_context()
        body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "won"}}).encode()
        req = urllib.request.Request(f"{winner.url}/api/v1/namespaces/default/configmaps", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            assert r.status == 201
        winner.stop()
        winner.start()  # the same cluster at the next boot: identity and CA as the winner left them
    finally:
        a.close()
        b.close()
