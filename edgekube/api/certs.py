"""Issuing the cluster's certificates with `cryptography` (imported by edgekube.api.pki only when
something is missing or must be renewed: the library is large and stays resident once loaded).
EC P-256 keys, SHA-256 signatures; the CA for ten years, leaf certificates for one (as k3s: the
server renews them in their last 90 days, edgekube.api.pki).

The end of validity comes from the caller's `now` (edgekube._cogs.timefloor: never before the
build nor the last time the node saw), never from this process's wall clock, which on a board
without an RTC may read 1970. The start is the Unix epoch: such a board cannot judge a start
date (its clock may read 1970 at every boot until NTP, if ever, sets it), and a start date
protects nothing here, where the node is its own CA; with it, the node accepts its own clients'
certificates whatever its clock says, and one clock step can never make a certificate "not yet
valid". A leaf never outlives its CA.
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

CA_DAYS = 3650
VALID_FROM = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
LEAF_DAYS = 365

Writer = Callable[..., None]  # pki._atomic_write(path, data, *, mode)


def issue(pki: Pki, *, make_ca: bool, server_sans: tuple[Sequence[str], Sequence[str]] | None, admin: bool,
          admin_user: str, admin_groups: Sequence[str], write: Writer, now: datetime.datetime) -> None:
    """Make the CA (when `make_ca`), then the serving certificate for these DNS names and IPs
    (when given) and the admin credential (when `admin`), signed by the CA."""
    if make_ca:
        _make_ca(pki, write, now=now)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = _load_key(pki.ca_key)
    until = min(now + datetime.timedelta(days=LEAF_DAYS), ca_cert.not_valid_after_utc)
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
            valid=(VALID_FROM, until),
        )
        _write_pair(pki.server_cert, pki.server_key, cert, key, write)
    if admin:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in admin_groups]
            + [x509.NameAttribute(NameOID.COMMON_NAME, admin_user)]
        )
        cert = _issue(ca_cert, ca_key, key, subject=subject, usage=ExtendedKeyUsageOID.CLIENT_AUTH, sans=[],
                      valid=(VALID_FROM, until))
        _write_pair(pki.admin_cert, pki.admin_key, cert, key, write)


def _make_ca(pki: Pki, write: Writer, *, now: datetime.datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    # A CA's name carries its issue time (as k3s's "k3s-server-ca@<seconds>"): a leaf whose
    # issuer is not the current CA's name was signed by a rotated one and is issued again.
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"edgekube-ca@{int(now.timestamp())}")])
    cert = (
        _builder(subject=name, issuer=name, key=key, valid=(VALID_FROM, now + datetime.timedelta(days=CA_DAYS)), ca=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(pki.ca_cert, pki.ca_key, cert, key, write)


def _builder(*, subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey,
             valid: tuple[datetime.datetime, datetime.datetime], ca: bool) -> x509.CertificateBuilder:
    """What every certificate here has: names, key, a random serial, validity, basic
    constraints and key usage (a CA signs certificates; a leaf enciphers keys and signs)."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
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
    valid: tuple[datetime.datetime, datetime.datetime],
) -> x509.Certificate:
    builder = (
        _builder(subject=subject, issuer=ca_cert.subject, key=key, valid=valid, ca=False)
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
    # Only the CA certificate is for anyone to read (docs/security.md); leaf certificates are
    # root's, like their keys.
    ca = cert.subject == cert.issuer
    write(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644 if ca else 0o600)
