"""Issuing the cluster's certificates with `cryptography` (imported by edgekube.api.pki only when
something is missing or must be renewed: the library is large and stays resident once loaded).
EC P-256 keys, SHA-256 signatures, ten-year validity as before.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from edgekube.api.pki import Pki

_CA_DAYS = 3650
_LEAF_DAYS = 3650

Writer = Callable[..., None]  # pki._atomic_write(path, data, *, mode)


def issue(pki: Pki, *, make_ca: bool, server_sans: tuple[Sequence[str], Sequence[str]] | None, admin: bool,
          admin_user: str, admin_groups: Sequence[str], write: Writer) -> None:
    """Make the CA (when `make_ca`), then the serving certificate for these DNS names and IPs
    (when given) and the admin credential (when `admin`), signed by the CA."""
    if make_ca:
        _make_ca(pki, write)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = _load_key(pki.ca_key)
    if server_sans is not None:
        dns, ips = server_sans
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(
            ca_cert,
            ca_key,
            key,
            subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgekube-apiserver")]),
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            sans=[x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips],
        )
        _write_pair(pki.server_cert, pki.server_key, cert, key, write)
    if admin:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in admin_groups]
            + [x509.NameAttribute(NameOID.COMMON_NAME, admin_user)]
        )
        cert = _issue(ca_cert, ca_key, key, subject=subject, usage=ExtendedKeyUsageOID.CLIENT_AUTH, sans=[])
        _write_pair(pki.admin_cert, pki.admin_key, cert, key, write)


def _make_ca(pki: Pki, write: Writer) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgekube-ca")])
    cert = (
        _builder(subject=name, issuer=name, key=key, days=_CA_DAYS, ca=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(pki.ca_cert, pki.ca_key, cert, key, write)


def _builder(*, subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int,
             ca: bool) -> x509.CertificateBuilder:
    """What every certificate here has: names, key, a random serial, validity from an hour ago
    (clock skew between boards) for `days`, basic constraints and key usage (a CA signs
    certificates; a leaf enciphers keys and signs)."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=not ca, data_encipherment=False,
                key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    )


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    *,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: Sequence[x509.GeneralName],
) -> x509.Certificate:
    builder = (
        _builder(subject=subject, issuer=ca_cert.subject, key=key, days=_LEAF_DAYS, ca=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: expected an EC private key")
    return key


def _write_pair(cert_path: Path, key_path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey,
                write: Writer) -> None:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    write(key_path, key_pem, mode=0o600)
    write(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
