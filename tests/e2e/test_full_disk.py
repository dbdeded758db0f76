"""A full disk: the API refuses what would grow the database with 507, and keeps taking what frees
space (DELETE, finalizers removed from an object being deleted, a PATCH that shrinks an object),
so a user can always make room through the API; once deletes are compacted, creates work again,
and nothing acknowledged is lost.

The data dir is a small, real ext4 file system (a loop-mounted image, as on an SD card), which
the test fills with ConfigMaps through the API."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server

pytestmark = pytest.mark.e2e

MiB = 1 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(48 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", str(image)], check=True)
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _call(server: Server, method: str, path: str, body: Any = None,
          content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    ctx = server.admin_context()
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{server.url}{path}", data=data, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


CMS = "/api/v1/namespaces/default/configmaps"


def _cm(name: str, size: int, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **meta}, "data": {"blob": "x" * size}}


def test_a_full_disk_takes_deletes_and_frees_room(small_disk: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("store:\n  reserve-mb: 4\n")
    server = Server(small_disk / "data", extra=["--config", str(config)])
    server.start()
    try:
        code, _ = _call(server, "POST", CMS, _cm("held", 1000, finalizers=["example.com/keep"]))
        assert code == 201
        acked: list[str] = []
        status: dict[str, Any] = {}
        for i in range(2000):
            code, status = _call(server, "POST", CMS, _cm(f"fill-{i}", 200_000))
            if code != 201:
                break
            acked.append(f"fill-{i}")
        assert code == 507, (code, status)
        assert status.get("reason") == "InsufficientStorage", status
        assert "kept for deletes" in status["message"] and "store.reserve-mb" in status["message"]
        assert len(acked) > 50
        # What grows is refused; what frees space is taken.
        code, _ = _call(server, "PATCH", f"{CMS}/{acked[0]}", {"data": {"more": "y" * 1000}},
                        content_type="application/merge-patch+json")
        assert code == 507
        code, _ = _call(server, "PATCH", f"{CMS}/{acked[1]}", {"data": {"blob": "small"}},
                        content_type="application/merge-patch+json")
        assert code == 200
        code, held = _call(server, "DELETE", f"{CMS}/held")
        assert code == 200 and held["metadata"].get("deletionTimestamp"), held
        code, _ = _call(server, "PATCH", f"{CMS}/held", {"metadata": {"finalizers": None}},
                        content_type="application/merge-patch+json")
        assert code == 200
        assert _call(server, "GET", f"{CMS}/held")[0] == 404
        deleted = acked[2:40]
        for name in deleted:
            code, out = _call(server, "DELETE", f"{CMS}/{name}")
            assert code == 200, (name, code, out)
        # Compaction frees what the deletes released; then creates are taken again.
        deadline = time.monotonic() + 30
        while True:
            code, out = _call(server, "POST", CMS, _cm("after", 1000))
            if code == 201 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert code == 201, out
        assert server.proc is not None and server.proc.poll() is None
        server.kill()
        server.start()
        code, listed = _call(server, "GET", CMS)
        names = {i["metadata"]["name"] for i in listed["items"]}
        kept = set(acked) - set(deleted)
        assert kept <= names, sorted(kept - names)[:5]
        assert "after" in names and not names & set(deleted)
    finally:
        server.close()
