"""Watch over HTTP: bookmarks, timeoutSeconds, 410 Expired after compaction, and list RV rules."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Server


@pytest.fixture(scope="module")
def tight_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that compacts every second down to 20 revisions and bookmarks every second."""
    root = tmp_path_factory.mktemp("watch")
    cfg = root / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "store": {"compaction-interval-seconds": 1, "compaction-window": 20, "watch-cache-size": 10},
        "api": {"bookmark-interval-seconds": 1},
    }))
    srv = Server(root / "data", extra=["--config", str(cfg)])
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


def _ctx(server: Server) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(server.ca))
    ctx.load_cert_chain(str(server.data_dir / "tls" / "admin.crt"), str(server.data_dir / "tls" / "admin.key"))
    return ctx


def _call(server: Server, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=_ctx(server), timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _watch_lines(server: Server, path: str, *, timeout: float = 15) -> list[dict[str, Any]]:
    req = urllib.request.Request(server.url + path)
    out = []
    with urllib.request.urlopen(req, context=_ctx(server), timeout=timeout) as r:
        for line in r:
            out.append(json.loads(line))
    return out


def _make(server: Server, name: str) -> int:
    code, obj = _call(server, "POST", "/api/v1/namespaces/default/configmaps",
                      {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": name}})
    assert code == 201, obj
    return int(obj["metadata"]["resourceVersion"])


def test_watch_ends_at_timeout_with_bookmarks(tight_server: Server) -> None:
    rv = _make(tight_server, "bm-0")
    start = time.monotonic()
    events = _watch_lines(tight_server, f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}"
                                        "&allowWatchBookmarks=true&timeoutSeconds=3")
    took = time.monotonic() - start
    assert 2.5 <= took < 10, took
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks, events
    assert all(int(b["object"]["metadata"]["resourceVersion"]) >= rv for b in bookmarks)
    assert all(e["type"] == "BOOKMARK" for e in events)  # nothing changed: no ADDED replay of bm-0


def test_watch_from_a_compacted_revision_is_410(tight_server: Server) -> None:
    first = _make(tight_server, "old-0")
    for i in range(1, 40):
        _make(tight_server, f"old-{i}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        events = _watch_lines(tight_server, f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={first}"
                                            "&timeoutSeconds=1")
        if events and events[0]["type"] == "ERROR":
            break
        time.sleep(0.3)
    assert events[0]["type"] == "ERROR", events[:2]
    status = events[0]["object"]
    assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"
    # The client's recovery path: list again and watch from the list's revision.
    code, listed = _call(tight_server, "GET", "/api/v1/namespaces/default/configmaps")
    assert code == 200 and len([i for i in listed["items"] if i["metadata"]["name"].startswith("old-")]) == 40
    fresh = int(listed["metadata"]["resourceVersion"])
    events = _watch_lines(tight_server, f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={fresh}"
                                        "&timeoutSeconds=1")
    assert all(e["type"] != "ERROR" for e in events)


def test_expired_continue_token_is_410(tight_server: Server) -> None:
    for i in range(5):
        _make(tight_server, f"page-{i}")
    code, page = _call(tight_server, "GET", "/api/v1/namespaces/default/configmaps?limit=2")
    assert code == 200 and page["metadata"]["continue"]
    token = page["metadata"]["continue"]
    for i in range(40):
        _make(tight_server, f"churn-{i}")
    deadline = time.monotonic() + 10
    code = 200
    while time.monotonic() < deadline and code == 200:
        code, body = _call(tight_server, "GET", f"/api/v1/namespaces/default/configmaps?limit=2&continue={token}")
        time.sleep(0.3)
    assert code == 410 and body["reason"] == "Expired", body


def test_write_load_leaves_disk_quiet_when_idle(tight_server: Server, tmp_path: Path) -> None:
    """Leases are memory-tier: renewing one does not grow the database file."""
    db = next((tight_server.data_dir / "db").glob("*.mdb"))
    _call(tight_server, "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
          {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1"},
           "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40}})
    time.sleep(1.5)
    before = db.stat().st_mtime_ns
    for _ in range(20):
        code, lease = _call(tight_server, "GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1")
        lease["spec"]["renewTime"] = "2026-01-01T00:00:00.000000Z"
        code, _ = _call(tight_server, "PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1", lease)
        assert code == 200
    time.sleep(1.5)
    assert db.stat().st_mtime_ns == before


def test_paged_list_is_one_snapshot(tight_server: Server) -> None:
    for i in range(4):
        _make(tight_server, f"snap-{i}")
    code, first = _call(tight_server, "GET", "/api/v1/namespaces/default/configmaps?limit=2&labelSelector=")
    assert code == 200
    rv = first["metadata"]["resourceVersion"]
    names = [i["metadata"]["name"] for i in first["items"]]
    token = first["metadata"]["continue"]
    _make(tight_server, "aaa-late")  # sorts before every page: must not appear
    code, _ = _call(tight_server, "DELETE", "/api/v1/namespaces/default/configmaps/snap-3")
    assert code == 200
    while token:
        code, page = _call(tight_server, "GET", f"/api/v1/namespaces/default/configmaps?limit=2&continue={token}")
        assert code == 200 and page["metadata"]["resourceVersion"] == rv
        names += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue")
    assert "aaa-late" not in names and "snap-3" in names
    assert names == sorted(names)
