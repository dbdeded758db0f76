"""A lost, emptied, rolled-back, foreign or damaged database is never served as if nothing
happened: the server refuses with one line that says what to run (exit 3, which the systemd
unit does not restart on), `edgekube store check` names the damage, and each documented way back
(`store reset`, `store adopt`, `store recover`, a backup put back) gets a serving node whose
resourceVersions never go backwards."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Server

pytestmark = pytest.mark.e2e


def _create(server: Server, name: str, **data: str) -> int:
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}).encode()
    req = urllib.request.Request(f"{server.url}/api/v1/namespaces/default/configmaps", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=server.admin_context(), timeout=10) as r:
        return int(json.loads(r.read())["metadata"]["resourceVersion"])


def _names(server: Server) -> set[str]:
    with urllib.request.urlopen(f"{server.url}/api/v1/namespaces/default/configmaps", context=server.admin_context(),
                                timeout=10) as r:
        return {i["metadata"]["name"] for i in json.loads(r.read())["items"]}


def _edgekube(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekube", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120)


def _refused(server: Server, *words: str) -> str:
    """Start `server` expecting the refusal; returns its one line."""
    server.log_path.unlink(missing_ok=True)
    with pytest.raises(RuntimeError, match="exited with 3"):
        server.start(timeout=20)
    lines = server.log_path.read_text().strip().splitlines()
    assert len(lines) == 1, lines
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture
def used(tmp_path: Path) -> Any:
    """A data dir that served a cluster: objects written, then stopped cleanly."""
    server = Server(tmp_path / "data")
    server.start()
    try:
        yield server
    finally:
        server.close()


def _top(server: Server, n: int = 5, *, prefix: str = "obj") -> int:
    return max(_create(server, f"{prefix}-{i}", k=str(i)) for i in range(n))


@pytest.mark.parametrize("how", ["removed", "emptied", "db dir removed"])
def test_a_lost_database_is_refused_then_reset_starts_over_with_monotonic_revisions(used: Server, how: str) -> None:
    top = _top(used)
    used.stop()
    db = used.data_dir / "db"
    if how == "removed":
        (db / "data.mdb").unlink()
    elif how == "emptied":
        (db / "data.mdb").write_bytes(b"")
    else:
        shutil.rmtree(db)
    line = _refused(used, str(db / "data.mdb"), "store reset", "Refusing to serve an empty cluster")
    assert "revision" in line
    check = _edgekube("store", "check", "--data-dir", str(used.data_dir))
    assert check.returncode == 1 and "NOT healthy" in check.stdout, check.stdout
    assert _edgekube("store", "reset", "--data-dir", str(used.data_dir)).returncode == 2  # wants --yes
    reset = _edgekube("store", "reset", "--yes", "--data-dir", str(used.data_dir))
    assert reset.returncode == 0, reset.stderr
    used.start()
    assert not _names(used) & {f"obj-{i}" for i in range(5)}
    assert _create(used, "after-reset") > top
    assert _edgekube("store", "check", "--data-dir", str(used.data_dir)).returncode == 0


def test_an_older_copy_put_back_is_refused_then_adopted_with_monotonic_revisions(used: Server, tmp_path: Path) -> None:
    _top(used, 2)
    used.stop()
    backup = tmp_path / "backup"
    shutil.copytree(used.data_dir / "db", backup)
    used.start()
    top = _top(used, 5, prefix="later")
    used.stop()
    shutil.rmtree(used.data_dir / "db")
    shutil.copytree(backup, used.data_dir / "db")
    _refused(used, "rolled back", "store adopt")
    adopt = _edgekube("store", "adopt", "--data-dir", str(used.data_dir))
    assert adopt.returncode == 0, adopt.stderr
    used.start()
    assert {"obj-0", "obj-1"} <= _names(used)
    assert _create(used, "after-adopt") > top


def test_another_clusters_database_is_refused(used: Server, tmp_path: Path) -> None:
    other = Server(tmp_path / "other")
    other.start()
    _create(other, "from-elsewhere")
    other.stop()
    used.stop()
    shutil.rmtree(used.data_dir / "db")
    shutil.copytree(other.data_dir / "db", used.data_dir / "db")
    _refused(used, "belongs to another cluster", "store adopt")
    assert _edgekube("store", "adopt", "--data-dir", str(used.data_dir)).returncode == 0
    used.start()
    assert "from-elsewhere" in _names(used)


def test_a_data_dir_from_before_identities_is_adopted_silently(used: Server) -> None:
    _top(used, 2)
    used.stop()
    (used.data_dir / "store-identity").unlink()
    used.start()
    assert {"obj-0", "obj-1"} <= _names(used)
    assert (used.data_dir / "store-identity").exists()


def test_store_commands_need_the_server_stopped_but_check_runs_beside_it(used: Server) -> None:
    _top(used, 2)
    check = _edgekube("store", "check", "--data-dir", str(used.data_dir))
    assert check.returncode == 0 and "healthy" in check.stdout, check.stdout
    as_json = json.loads(_edgekube("store", "check", "--json", "--data-dir", str(used.data_dir)).stdout)
    assert as_json["healthy"] is True and as_json["live_keys"] > 2
    for cmd in (("recover",), ("adopt",), ("reset", "--yes")):
        out = _edgekube("store", *cmd, "--data-dir", str(used.data_dir))
        assert out.returncode == 1 and "in use by another edgekube" in out.stderr, (cmd, out.stderr)


def test_flipped_bytes_are_named_and_recover_keeps_what_is_readable(used: Server) -> None:
    """Bytes flipped anywhere in the file (a failing SD card): the node refuses to boot naming
    the database, or boots and skips the damaged records; either way `store check` names the
    damage and `store recover` gets a serving node with every readable object."""
    for i in range(300):
        _create(used, f"obj-{i}", k="v" * 40)
    used.stop()
    data = used.data_dir / "db" / "data.mdb"
    raw = bytearray(data.read_bytes())
    rnd = random.Random(7)
    used_bytes = len(raw.rstrip(b"\0"))
    for _ in range(12):
        at = rnd.randrange(4096 * 2, used_bytes)  # past LMDB's two meta pages
        raw[at] ^= 0xFF
    data.write_bytes(bytes(raw))
    check = _edgekube("store", "check", "--data-dir", str(used.data_dir))
    assert check.returncode == 1 and "DAMAGED" in check.stdout, check.stdout
    used.log_path.unlink(missing_ok=True)
    try:
        used.start(timeout=20)
        booted = True
    except RuntimeError:
        booted = False
        assert "is damaged" in used.log_path.read_text() and "store recover" in used.log_path.read_text()
    if booted:
        assert "Traceback" not in used.log()
        used.stop()
    recover = _edgekube("store", "recover", "--data-dir", str(used.data_dir))
    assert recover.returncode == 0, recover.stderr
    assert "recovered" in recover.stdout
    lost = [line for line in recover.stdout.splitlines() if line.startswith("lost")]
    used.start()
    names = _names(used)
    assert len(names) >= 300 - len(lost) - 12, (len(names), lost)
    check = _edgekube("store", "check", "--data-dir", str(used.data_dir))
    assert check.returncode == 0, check.stdout
    assert _create(used, "after-recover") > 300


def test_first_boot_cut_short_is_still_a_first_boot(tmp_path: Path) -> None:
    server = Server(tmp_path / "data")
    server.start()
    server.kill()
    # As if the power went before the database was created: identity at revision 0, no db.
    ident = json.loads((server.data_dir / "store-identity").read_text())
    ident["revision"] = 0
    (server.data_dir / "store-identity").write_text(json.dumps(ident))
    shutil.rmtree(server.data_dir / "db")
    server.start()
    server.close()


def test_refusal_is_not_restarted_by_systemd() -> None:
    unit = (REPO / "systemd" / "edgekube.service").read_text()
    assert "RestartPreventExitStatus=3" in unit



def test_a_truncated_database_is_refused_not_a_crash_and_recover_reads_what_is_left(used: Server) -> None:
    """A file cut short (a copy that ran out of space): reading past its end would kill the
    process with SIGBUS; the node refuses naming the database instead, `check` says truncated,
    and `recover` reads what is left (from a zero-padded copy)."""
    for i in range(200):
        _create(used, f"obj-{i}", k="v" * 40)
    used.stop()
    data = used.data_dir / "db" / "data.mdb"
    size = len(data.read_bytes().rstrip(b"\0"))
    with open(data, "r+b") as f:
        f.truncate(size * 2 // 3)
    _refused(used, "is damaged", "truncated", "store recover")
    check = _edgekube("store", "check", "--data-dir", str(used.data_dir))
    assert check.returncode == 1 and "truncated" in check.stdout, check.stdout
    recover = _edgekube("store", "recover", "--data-dir", str(used.data_dir))
    assert recover.returncode == 0, recover.stderr
    used.start()
    assert _create(used, "after-recover") > 200
    assert _edgekube("store", "check", "--data-dir", str(used.data_dir)).returncode == 0
