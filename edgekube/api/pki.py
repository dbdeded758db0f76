"""The cluster's own PKI: a CA, the API server's serving certificate and an admin credential.

Made once at first boot under `DATA_DIR/tls` and reused afterwards; the serving certificate is
re-issued (by the same CA) when the host's names or addresses are no longer all in its SANs, so
a board that moves to a new network keeps working with the kubeconfigs already handed out.
Private keys are written 0600 through a temporary file and a rename, so a power cut leaves
either the old file or the new one, never half a key.

Issuing needs `cryptography` (edgekube.api.certs), whose native library alone keeps about 8 MiB
resident once loaded: it is imported only when something must be issued, and then in a forked
child when the process has no other thread yet (the server's boot), so the server never holds it;
a later boot checks the serving certificate with the ssl module alone.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import ipaddress
import os
import signal
import socket
import ssl
import threading
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

_ADMIN_USER = "kubernetes-admin"
_ADMIN_GROUPS = ("system:masters",)
_RENEW_BEFORE = datetime.timedelta(days=30)


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
    dns = _unique(["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", *hostnames])
    ips = _unique(["127.0.0.1", "::1", *addresses])
    make_ca = not (pki.ca_cert.exists() and pki.ca_key.exists())
    server = make_ca or not _serving_cert_covers(pki, dns, ips)
    admin = make_ca or not (pki.admin_cert.exists() and pki.admin_key.exists())
    if server or admin:
        _issue(pki, make_ca=make_ca, server_sans=(dns, ips) if server else None, admin=admin)
    return pki


class PkiError(OSError):
    """The certificates could not be issued."""


def _issue(pki: Pki, **what: Any) -> None:
    """Issue in a forked child when this process has a single thread (the server's first boot
    calls this before starting any), so `cryptography` is never loaded into the long-running
    process; in-process otherwise."""

    def issue() -> None:
        from edgekube.api import certs

        certs.issue(pki, admin_user=_ADMIN_USER, admin_groups=_ADMIN_GROUPS, write=_atomic_write, **what)

    if threading.active_count() > 1 or not hasattr(os, "fork"):
        issue()
        return
    pid = os.fork()
    if pid == 0:  # the child: issue, and leave without running the parent's clean-up
        code = 1
        try:
            with contextlib.suppress(ValueError):
                signal.set_wakeup_fd(-1)  # the parent's event loop's, not the child's to write to
            issue()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise PkiError(f"issuing the cluster certificates under {pki.dir} failed (exit status "
                       f"{os.waitstatus_to_exitcode(status)}; the error is logged above)")


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


def _serving_cert_covers(pki: Pki, dns: Sequence[str], ips: Sequence[str]) -> bool:
    if not (pki.server_cert.exists() and pki.server_key.exists()):
        return False
    try:
        decoded = ssl._ssl._test_decode_cert(str(pki.server_cert))  # type: ignore[attr-defined]
    except (AttributeError, ssl.SSLError, OSError):
        return False  # unreadable (or an ssl module without the decoder): issue it again
    have_dns: set[str] = set()
    have_ips: set[str] = set()
    for kind, value in decoded.get("subjectAltName") or ():
        if kind == "DNS":
            have_dns.add(value)
        elif kind == "IP Address":
            have_ips.add(str(ipaddress.ip_address(value.strip())))
    want_ips = {str(ipaddress.ip_address(i)) for i in ips}
    expires = datetime.datetime.fromtimestamp(ssl.cert_time_to_seconds(decoded["notAfter"]), datetime.UTC)
    if expires < datetime.datetime.now(datetime.UTC) + _RENEW_BEFORE:
        return False
    return set(dns) <= have_dns and want_ips <= have_ips


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
