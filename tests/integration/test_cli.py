"""The command-line contract: flags, config file precedence, TLS-only serving, clean SIGTERM."""

from __future__ import annotations

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
