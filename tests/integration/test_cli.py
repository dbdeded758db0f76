"""The command-line contract: flags, config file precedence, TLS-only serving, clean SIGTERM."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml
from cryptography import x509

from edgekube import config as config_mod
from tests.conftest import REPO, Server, free_port

EDGEKUBE = [sys.executable, "-m", "edgekube"]


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGEKUBE, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_version() -> None:
    out = _run("version")
    assert out.returncode == 0
    assert out.stdout.startswith("edgekube 0.") and "Kubernetes API v1." in out.stdout


def test_shipped_config_file_is_the_built_in_defaults() -> None:
    shipped = yaml.safe_load((REPO / "configs" / "config.yaml").read_text())
    assert shipped == config_mod.DEFAULTS


def test_bad_usage_names_the_setting(tmp_path: Path) -> None:
    bad = _run("server", "--data-dir", str(tmp_path / "d"), "--disable", "toaster")
    assert bad.returncode == 2 and "toaster" in bad.stderr and "scheduler" in bad.stderr
    cfg = tmp_path / "c.yaml"
    cfg.write_text("store:\n  map-size-mb: 64\n  colour: blue\n")
    bad = _run("server", "--config", str(cfg), "--data-dir", str(tmp_path / "d"))
    assert bad.returncode == 2 and "store.colour" in bad.stderr
    bad = _run("server", "--config", str(tmp_path / "missing.yaml"))
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_config_file_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    file_port = free_port()
    cfg.write_text(yaml.safe_dump({"https-port": file_port, "bind-address": "127.0.0.1", "log-level": "debug"}))
    loaded = config_mod.load(config_file=cfg, overrides={"https-port": 7443, "disable": ["kubelet", "dns"]})
    assert loaded.https_port == 7443  # the flag wins over the file
    assert loaded.bind_address == "127.0.0.1" and loaded.log_level == "debug"  # the file wins over defaults
    assert not loaded.enabled("kubelet") and loaded.enabled("scheduler")
    # And for real: the file's port is used when no flag is given, every component name is accepted.
    server = Server(tmp_path / "data", port=file_port,
                    extra=["--config", str(cfg)] + [a for c in config_mod.COMPONENTS for a in ("--disable", c)])
    server.start()
    try:
        assert server.ready()
    finally:
        assert server.stop() == 0


def test_tls_only_health_and_clean_sigterm(tmp_path: Path) -> None:
    server = Server(tmp_path / "data")
    server.start()
    try:
        ctx = ssl.create_default_context(cafile=str(server.ca))
        for path in ("/readyz", "/livez"):
            with urllib.request.urlopen(f"{server.url}{path}", context=ctx, timeout=5) as r:
                assert r.read() == b"ok"
        # Plain HTTP on the API port gets no HTTP answer.
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                reply = s.recv(100)
            except ConnectionResetError:
                reply = b""
        assert not reply.startswith(b"HTTP/1.1 200")
        cert = x509.load_pem_x509_certificate((server.data_dir / "tls" / "server.crt").read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in san.get_values_for_type(x509.DNSName)
        assert socket.gethostname() in san.get_values_for_type(x509.DNSName)
        assert "127.0.0.1" in {str(i) for i in san.get_values_for_type(x509.IPAddress)}
        kubeconfig = yaml.safe_load(server.kubeconfig.read_text())
        assert kubeconfig["clusters"][0]["cluster"]["server"] == server.url
    finally:
        code = server.stop()
    assert code == 0
    assert "Traceback" not in server.log()


def _caps() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise AssertionError("no CapEff")


def test_check_config_on_this_machine(tmp_path: Path) -> None:
    # This machine runs every test of the suite: the kernel, runc and nft it has pass; only
    # CAP_SYS_RESOURCE may be missing (LXC-like), which is a warning.
    out = _run("check-config", "--data-dir", str(tmp_path / "data"), timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("edgekube check-config: Linux ")
    for name in ("cgroups v1", "overlayfs", "veth links", "bridge links", "vxlan links", "nftables", "seccomp", "runc",
                 "data dir", "capabilities"):
        assert any(line.startswith(f"  ok    {name}: ") for line in lines), (name, out.stdout)
    resource = any(line.startswith("  warn  CAP_SYS_RESOURCE: missing") for line in lines)
    assert resource == (not _caps() & (1 << 24))
    assert lines[-1].startswith("0 failed, ")
    assert not (tmp_path / "data").exists()  # it looks; it makes nothing


def test_check_config_fails_with_the_fix_and_speaks_json(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kubelet:\n  runc: /nonexistent/runc\n")
    out = _run("check-config", "--config", str(cfg), "--data-dir", str(tmp_path / "data"), timeout=60)
    assert out.returncode == 1
    assert "  FAIL  runc: `/nonexistent/runc` not found" in out.stdout
    assert "        fix: apt-get install runc, or `kubelet: {runc: /path/to/runc}` in the config" in out.stdout
    assert out.stdout.splitlines()[-1].startswith("1 failed, ")
    out = _run("check-config", "--json", "--config", str(cfg), "--data-dir", str(tmp_path / "data"), timeout=60)
    results = {r["name"]: r for r in json.loads(out.stdout)}
    assert out.returncode == 1 and results["runc"]["status"] == "FAIL" and results["overlayfs"]["status"] == "ok"
