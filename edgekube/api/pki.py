"""The cluster's own PKI: a CA, the API server's serving certificate and an admin credential.

Made once at first boot under `DATA_DIR/tls` and reused afterwards; the serving certificate is
re-issued (by the same CA) when the host's names or addresses are no longer all in its SANs, so
a board that moves to a new network keeps working with the kubeconfigs already handed out.
Private keys are written 0600 through a temporary file and a rename, so a power cut leaves
either the old file or the new one, never half a key.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_CA_DAYS = 3650
_LEAF_DAYS = 3650
_ADMIN_USER = "kubernetes-admin"
_ADMIN_GROUPS = ("system:masters",)


@dataclasses.dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.dir / "server.key"

    @property
    def admin_cert(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"


def host_identities() -> tuple[list[str], list[str]]:
    """The host's names and the addresses they resolve to (no network traffic: local lookups)."""
    names: list[str] = []
    for name in (socket.gethostname(), socket.getfqdn()):
        if name and name not in names:
            names.append(name)
    addresses: list[str] = []
    for name in names:
        try:
            infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
        except OSError:
            continue
        for info in infos:
            addr = str(info[4][0]).split("%", 1)[0]
            if addr not in addresses:
                addresses.append(addr)
    return names, addresses


def ensure_pki(tls_dir: Path, *, hostnames: Iterable[str], addresses: Iterable[str]) -> Pki:
    tls_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(tls_dir, 0o700)
    pki = Pki(tls_dir)
    if not (pki.ca_cert.exists() and pki.ca_key.exists()):
        _make_ca(pki)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = _load_key(pki.ca_key)
    dns = _unique(["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", *hostnames])
    ips = _unique(["127.0.0.1", "::1", *addresses])
    if not _serving_cert_covers(pki, dns, ips):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(
            ca_cert,
            ca_key,
            key,
            subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgekube-apiserver")]),
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            sans=[x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips],
        )
        _write_pair(pki.server_cert, pki.server_key, cert, key)
    if not (pki.admin_cert.exists() and pki.admin_key.exists()):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in _ADMIN_GROUPS]
            + [x509.NameAttribute(NameOID.COMMON_NAME, _ADMIN_USER)]
        )
        cert = _issue(ca_cert, ca_key, key, subject=subject, usage=ExtendedKeyUsageOID.CLIENT_AUTH, sans=[])
        _write_pair(pki.admin_cert, pki.admin_key, cert, key)
    return pki


def server_ssl_context(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.load_verify_locations(cafile=str(pki.ca_cert))
    # Client certificates are optional at the TLS layer: bearer tokens and the public health
    # endpoints need no certificate; the auth middleware decides.
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def client_identity(peercert: Any) -> tuple[str, list[str]] | None:
    """(user, groups) from a verified client certificate: CN is the user, O the groups."""
    if not peercert or not isinstance(peercert, dict):
        return None
    user: str | None = None
    groups: list[str] = []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                user = value
            elif key == "organizationName":
                groups.append(value)
    if not user:
        return None
    return user, groups


def write_kubeconfig(path: Path, *, server_url: str, pki: Pki) -> None:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "edgekube", "cluster": {"server": server_url, "certificate-authority-data": b64(pki.ca_cert)}}
        ],
        "users": [
            {
                "name": "edgekube-admin",
                "user": {"client-certificate-data": b64(pki.admin_cert), "client-key-data": b64(pki.admin_key)},
            }
        ],
        "contexts": [{"name": "edgekube", "context": {"cluster": "edgekube", "user": "edgekube-admin"}}],
        "current-context": "edgekube",
        "preferences": {},
    }
    text = yaml.safe_dump(doc, sort_keys=False).encode()
    if path.exists() and path.read_bytes() == text:
        return
    _atomic_write(path, text, mode=0o600)


# --- internals ----------------------------------------------------------------------------


def _unique(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        if v and v not in out:
            out.append(v)
    return out


def _make_ca(pki: Pki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgekube-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(pki.ca_cert, pki.ca_key, cert, key)


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    *,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: Sequence[x509.GeneralName],
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=_LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _serving_cert_covers(pki: Pki, dns: Sequence[str], ips: Sequence[str]) -> bool:
    if not (pki.server_cert.exists() and pki.server_key.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    have_dns = set(san.get_values_for_type(x509.DNSName))
    have_ips = {str(i) for i in san.get_values_for_type(x509.IPAddress)}
    want_ips = {str(ipaddress.ip_address(i)) for i in ips}
    if cert.not_valid_after_utc < datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30):
        return False
    return set(dns) <= have_dns and want_ips <= have_ips


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: expected an EC private key")
    return key


def _write_pair(cert_path: Path, key_path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    _atomic_write(key_path, key_pem, mode=0o600)
    _atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def _atomic_write(path: Path, data: bytes, *, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
