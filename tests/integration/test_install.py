"""`edgekube install` / `uninstall` into a directory standing for a device's root (systemd does
not run these machines: the enable link is what `systemctl enable` makes). What uninstall
removes from a host running pods is in tests/e2e/test_uninstall.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

EDGEKUBE = [sys.executable, "-m", "edgekube"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGEKUBE, *args], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_install_places_binary_unit_config_and_enables_it_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    binary = tmp_path / "edgekube-bin"
    binary.write_bytes(b"\x7fELF pretend binary\n")
    out = _run("install", "--root", str(root), "--binary", str(binary), "--no-start")
    assert out.returncode == 0, out.stderr
    bin_path, unit = root / "usr/local/bin/edgekube", root / "etc/systemd/system/edgekube.service"
    config, wants = root / "etc/edgekube/config.yaml", root / "etc/systemd/system/multi-user.target.wants/edgekube.service"
    assert bin_path.read_bytes() == binary.read_bytes() and bin_path.stat().st_mode & 0o777 == 0o755
    assert unit.read_bytes() == (REPO / "systemd/edgekube.service").read_bytes()
    assert config.read_bytes() == (REPO / "configs/config.yaml").read_bytes()
    assert os.readlink(wants) == "/etc/systemd/system/edgekube.service"
    assert "kubeconfig (once it runs): " + str(root / "var/lib/edgekube/kubeconfig.yaml") in out.stdout
    assert "started" not in out.stdout  # --no-start (and systemd does not run this root)
    # Idempotent; an edited config is kept; a new binary replaces the old.
    config.write_text("node-name: edited\n")
    stamp = unit.stat().st_mtime_ns
    again = _run("install", "--root", str(root), "--binary", str(binary), "--no-start")
    assert again.returncode == 0 and "already installed: nothing changed" in again.stdout
    assert unit.stat().st_mtime_ns == stamp and config.read_text() == "node-name: edited\n"
    binary.write_bytes(b"\x7fELF a newer one\n")
    upgrade = _run("install", "--root", str(root), "--binary", str(binary), "--no-start")
    assert f"installed binary {bin_path}" in upgrade.stdout and bin_path.read_bytes() == binary.read_bytes()


def test_install_from_source_needs_the_binary() -> None:
    out = _run("install", "--root", "/nonexistent-root", "--no-start")
    assert out.returncode == 2 and "--binary" in out.stderr


def test_uninstall_under_a_root_keeps_data_and_config_unless_purged_and_touches_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "root"
    binary = tmp_path / "edgekube-bin"
    binary.write_bytes(b"\x7fELF pretend binary\n")
    assert _run("install", "--root", str(root), "--binary", str(binary), "--no-start").returncode == 0
    # The image's config names its own paths: taken under the root.
    data, logs = root / "var/lib/ek-image", root / "var/log/ek-pods"
    (data / "db").mkdir(parents=True)
    (data / "db" / "data.mdb").write_bytes(b"cluster")
    logs.mkdir(parents=True)
    host_twin = Path("/var/lib/ek-image")
    assert not host_twin.exists()
    config = root / "etc/edgekube/config.yaml"
    config.write_text("data-dir: /var/lib/ek-image\nkubelet: {pod-log-dir: /var/log/ek-pods}\n")
    out = _run("uninstall", "--root", str(root))
    assert out.returncode == 0, out.stderr
    assert "nothing running here is touched" in out.stdout and "removed 0 containers" not in out.stdout
    assert not (root / "usr/local/bin/edgekube").exists() and not (root / "etc/systemd/system/edgekube.service").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants/edgekube.service").is_symlink()
    assert (data / "db" / "data.mdb").read_bytes() == b"cluster" and logs.is_dir() and config.is_file()
    assert f"kept the data dir {data}" in out.stdout
    out = _run("uninstall", "--root", str(root), "--purge")
    assert out.returncode == 0, out.stderr
    assert not data.exists() and not logs.exists() and not config.exists()
