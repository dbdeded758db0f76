"""The cluster PKI: made once, reused, re-issued when the host's addresses change."""

from __future__ import annotations

import ssl
import stat
import subprocess
import sys
from pathlib import Path

import yaml
from cryptography import x509

from edgekube.api import pki


def _sans(path: Path) -> tuple[set[str], set[str]]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)), {str(i) for i in san.get_values_for_type(x509.IPAddress)}


def test_pki_is_made_once_and_covers_the_host(tmp_path: Path) -> None:
    p = pki.ensure_pki(tmp_path / "tls", hostnames=["board-1"], addresses=["10.43.0.1", "192.0.2.7"])
    dns, ips = _sans(p.server_cert)
    assert {"localhost", "board-1", "kubernetes.default.svc"} <= dns
    assert {"127.0.0.1", "10.43.0.1", "192.0.2.7"} <= ips
    for key in (p.ca_key, p.server_key, p.admin_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = {f.name: f.read_bytes() for f in (tmp_path / "tls").iterdir()}
    pki.ensure_pki(tmp_path / "tls", hostnames=["board-1"], addresses=["192.0.2.7"])
    assert {f.name: f.read_bytes() for f in (tmp_path / "tls").iterdir()} == before
    # A new address: the serving certificate is re-issued by the same CA, the rest is kept.
    pki.ensure_pki(tmp_path / "tls", hostnames=["board-1"], addresses=["198.51.100.3"])
    assert "198.51.100.3" in _sans(p.server_cert)[1]
    assert p.ca_cert.read_bytes() == before["ca.crt"] and p.admin_key.read_bytes() == before["admin.key"]
    ctx = ssl.create_default_context(cafile=str(p.ca_cert))
    assert ctx is not None


def test_client_identity_and_kubeconfig(tmp_path: Path) -> None:
    p = pki.ensure_pki(tmp_path / "tls", hostnames=[], addresses=[])
    admin = x509.load_pem_x509_certificate(p.admin_cert.read_bytes())
    assert admin.subject.rfc4514_string() == "CN=kubernetes-admin,O=system:masters"
    peer = {"subject": ((("organizationName", "system:masters"),), (("commonName", "kubernetes-admin"),))}
    assert pki.client_identity(peer) == ("kubernetes-admin", ["system:masters"])
    assert pki.client_identity({}) is None
    assert pki.client_identity(None) is None
    kc = tmp_path / "kubeconfig.yaml"
    pki.write_kubeconfig(kc, server_url="https://127.0.0.1:6443", pki=p)
    doc = yaml.safe_load(kc.read_text())
    assert doc["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert doc["users"][0]["user"]["client-key-data"]
    assert stat.S_IMODE(kc.stat().st_mode) == 0o600


def test_the_server_process_never_loads_cryptography(tmp_path: Path) -> None:
    """cryptography's native library stays resident once loaded (about 8 MiB): a single-threaded
    process (the server at boot) issues in a forked child, and a boot with the PKI in place
    only reads it with the ssl module."""
    code = ("import sys; from edgekube import runtime, cli; from edgekube.api import pki; from pathlib import Path; "
            f"p = pki.ensure_pki(Path({str(tmp_path / 'tls')!r}), hostnames=['board-1'], addresses=['192.0.2.7']); "
            "print(p.server_cert.exists(), sorted(m for m in sys.modules if m.startswith('cryptography')))")
    for _ in ("first boot: issued", "second boot: read"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "True []"
    dns, ips = _sans(tmp_path / "tls" / "server.crt")
    assert "board-1" in dns and "192.0.2.7" in ips
