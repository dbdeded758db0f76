"""The cluster PKI: made once, reused, re-issued when the host's addresses change."""

from __future__ import annotations

import datetime
import logging
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from edgekube.api import pki

NOW = datetime.datetime.now(datetime.UTC)


def _sans(path: Path) -> tuple[set[str], set[str]]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)), {str(i) for i in san.get_values_for_type(x509.IPAddress)}


def test_pki_is_made_once_and_covers_the_host(tmp_path: Path) -> None:
    p = pki.ensure_pki(tmp_path / "tls", hostnames=["board-1"], addresses=["10.43.0.1", "192.0.2.7"], now=NOW)
    dns, ips = _sans(p.server_cert)
    assert {"localhost", "board-1", "kubernetes.default.svc"} <= dns
    assert {"127.0.0.1", "10.43.0.1", "192.0.2.7"} <= ips
    for key in (p.ca_key, p.server_key, p.admin_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = {f.name: f.read_bytes() for f in (tmp_path / "tls").iterdir()}
    pki.ensure_pki(tmp_path / "tls", hostnames=["board-1"], addresses=["192.0.2.7"], now=NOW)
    assert {f.name: f.read_bytes() for f in (tmp_path / "tls").iterdir()} == before
    # A new address: the serving certificate is re-issued by the same CA, the rest is kept.
    pki.ensure_pki(tmp_path / "tls", hostnames=["board-1"], addresses=["198.51.100.3"], now=NOW)
    assert "198.51.100.3" in _sans(p.server_cert)[1]
    assert p.ca_cert.read_bytes() == before["ca.crt"] and p.admin_key.read_bytes() == before["admin.key"]
    ctx = ssl.create_default_context(cafile=str(p.ca_cert))
    assert ctx is not None


def test_client_identity_and_kubeconfig(tmp_path: Path) -> None:
    p = pki.ensure_pki(tmp_path / "tls", hostnames=[], addresses=[], now=NOW)
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
    code = ("import sys, datetime; from edgekube import runtime, cli; from edgekube.api import pki; from pathlib import Path; "
            f"p = pki.ensure_pki(Path({str(tmp_path / 'tls')!r}), hostnames=['board-1'], addresses=['192.0.2.7'], "
            "now=datetime.datetime.now(datetime.UTC)); "
            "print(p.server_cert.exists(), sorted(m for m in sys.modules if m.startswith('cryptography')))")
    for _ in ("first boot: issued", "second boot: read"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "True []"
    dns, ips = _sans(tmp_path / "tls" / "server.crt")
    assert "board-1" in dns and "192.0.2.7" in ips


DAY = datetime.timedelta(days=1)
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _validity(path: Path) -> tuple[datetime.datetime, datetime.datetime]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.not_valid_before_utc, cert.not_valid_after_utc


def _files(p: pki.Pki) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in p.dir.iterdir()}


def test_certificates_end_by_the_trusted_time_and_start_at_the_epoch(tmp_path: Path) -> None:
    """A board without an RTC: the wall clock says 1970, the trusted time is today. Everything is
    valid for years from today, and from 1970 (the board verifies it whatever its clock says)."""
    p = pki.ensure_pki(tmp_path / "tls", hostnames=[], addresses=[], now=NOW)
    for cert, years in ((p.ca_cert, 9), (p.server_cert, 0), (p.admin_cert, 0)):
        start, end = _validity(cert)
        assert start == EPOCH
        assert end >= NOW + datetime.timedelta(days=364 + 365 * years)
    assert pki.inspect(p.ca_cert).state(NOW) == "ok"  # type: ignore[union-attr]


def test_leaves_are_renewed_in_their_last_90_days_the_ca_is_kept_and_nothing_churns(tmp_path: Path) -> None:
    p = pki.ensure_pki(tmp_path / "tls", hostnames=["board-1"], addresses=[], now=NOW)
    first = _files(p)
    later = NOW + 280 * DAY  # 85 days before the leaves' end
    assert pki.due(p, now=NOW + 200 * DAY, sans=pki.sans(["board-1"], [])) == pki.Work(
        server_sans=pki.sans(["board-1"], []))
    pki.ensure_pki(p.dir, hostnames=["board-1"], addresses=[], now=later)
    second = _files(p)
    assert second["ca.crt"] == first["ca.crt"] and second["ca.key"] == first["ca.key"]
    for name in ("server.crt", "server.key", "admin.crt", "admin.key"):
        assert second[name] != first[name]
    assert _validity(p.server_cert)[1] >= later + 364 * DAY
    pki.ensure_pki(p.dir, hostnames=["board-1"], addresses=[], now=later)
    assert _files(p) == second  # renewed once, not at every check
    # Near the CA's end the leaves end with it: issued once more, then left alone.
    ca_end = _validity(p.ca_cert)[1]
    pki.ensure_pki(p.dir, hostnames=["board-1"], addresses=[], now=ca_end - 30 * DAY)
    assert _validity(p.server_cert)[1] == ca_end
    third = _files(p)
    pki.ensure_pki(p.dir, hostnames=["board-1"], addresses=[], now=ca_end - 29 * DAY)
    assert _files(p) == third


def test_expired_leaves_are_renewed_and_an_expired_ca_is_named_not_replaced(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = pki.ensure_pki(tmp_path / "tls", hostnames=[], addresses=[], now=NOW)
    with caplog.at_level(logging.WARNING):
        pki.ensure_pki(p.dir, hostnames=[], addresses=[], now=NOW + 400 * DAY)
    assert f"{p.server_cert} (the API server's serving certificate) expired on" in caplog.text
    assert "admin.crt (the admin client certificate (kubeconfig.yaml)) expired on" in caplog.text
    assert "kubeconfig is rewritten" in caplog.text
    assert pki.inspect(p.server_cert).state(NOW + 400 * DAY) == "ok"  # type: ignore[union-attr]
    caplog.clear()
    before = _files(p)
    after_ca = _validity(p.ca_cert)[1] + DAY
    with caplog.at_level(logging.WARNING):
        pki.ensure_pki(p.dir, hostnames=[], addresses=[], now=after_ca)
        pki.check_ca(p, now=after_ca)
    assert _files(p) == before
    assert f"{p.ca_cert} (the cluster CA) expired on" in caplog.text
    assert "edgekube certs rotate --ca" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        pki.check_ca(p, now=after_ca - 200 * DAY)
    assert "expires on" in caplog.text and "in 199 days" in caplog.text


def test_a_rotated_ca_reissues_the_leaves_it_did_not_sign(tmp_path: Path) -> None:
    p = pki.ensure_pki(tmp_path / "tls", hostnames=[], addresses=[], now=NOW)
    old = _files(p)
    pki.rotate(p, hostnames=[], addresses=[], now=NOW + DAY, ca=True)
    new_ca = x509.load_pem_x509_certificate(p.ca_cert.read_bytes())
    assert p.ca_cert.read_bytes() != old["ca.crt"]
    for leaf in (p.server_cert, p.admin_cert):
        assert x509.load_pem_x509_certificate(leaf.read_bytes()).issuer == new_ca.subject
    # Half a rotation (the new CA written, the old leaves left): the next check issues them again.
    for name in ("server.crt", "server.key"):
        (p.dir / name).write_bytes(old[name])
    work = pki.due(p, now=NOW + DAY, sans=pki.sans([], []))
    assert work.server.startswith("signed by") and not work.admin and not work.ca


def test_the_running_server_renews_in_a_child_without_loading_cryptography(tmp_path: Path) -> None:
    """The periodic renewal runs while the server has threads: still a forked child, so the
    process never loads `cryptography`."""
    pki.ensure_pki(tmp_path / "tls", hostnames=[], addresses=[], now=NOW)
    code = ("import sys, asyncio, datetime, threading; from pathlib import Path; from edgekube.api import pki; "
            "stop = threading.Event(); threading.Thread(target=stop.wait).start(); "
            f"p = pki.Pki(Path({str(tmp_path / 'tls')!r})); "
            "later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=300); "
            "done = asyncio.run(pki.renew(p, hostnames=[], addresses=[], now=later)); "
            "again = asyncio.run(pki.renew(p, hostnames=[], addresses=[], now=later)); stop.set(); "
            "print(done, again, sorted(m for m in sys.modules if m.startswith('cryptography')))")
    before = (tmp_path / "tls" / "server.crt").read_bytes()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True False []"
    assert (tmp_path / "tls" / "server.crt").read_bytes() != before


def test_a_renewed_serving_certificate_is_loaded_into_the_same_context(tmp_path: Path) -> None:
    p = pki.ensure_pki(tmp_path / "tls", hostnames=[], addresses=[], now=NOW)
    tls = pki.ServingContext(p)
    assert not tls.changed()
    pki.rotate(p, hostnames=[], addresses=[], now=NOW, ca=False)
    assert tls.changed()
    ctx = tls.context
    tls.reload()
    assert tls.context is ctx and not tls.changed()
    # Half-written pair (a key from another issue): refused, the context keeps what it had.
    (p.dir / "server.key").write_bytes((p.dir / "admin.key").read_bytes())
    with pytest.raises(ssl.SSLError):
        tls.reload()
    assert tls.changed()


def test_an_unreadable_ca_is_named_never_replaced(tmp_path: Path) -> None:
    p = pki.ensure_pki(tmp_path / "tls", hostnames=[], addresses=[], now=NOW)
    p.ca_cert.write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    before = _files(p)
    with pytest.raises(pki.PkiError, match=r"ca.crt \(the cluster CA\) cannot be read.*certs rotate --ca"):
        pki.ensure_pki(p.dir, hostnames=[], addresses=[], now=NOW)
    assert _files(p) == before
