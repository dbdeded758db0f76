"""The cluster's own PKI: a CA, the API server's serving certificate and an admin credential.

Made at first boot under `DATA_DIR/tls`; then kept alive (docs/certificates.md):
- `due` says what must be issued at a given time: a missing CA; a leaf (serving, admin) that is
  missing, signed by another CA (`CN=edgekube-ca@<seconds>` names each CA), expired or in its
  last 90 days (as k3s), and a serving certificate that no longer names every host name and
  address (a board moved to a new network keeps its kubeconfigs). The boot (`ensure_pki`) and
  the running server (`renew`, hourly and when the clock is stepped) issue it, each with a log
  line naming the file and why. The CA is never replaced here, since that voids every kubeconfig
  handed out: `check_ca` warns a year ahead and says what to run once it has expired, and
  `rotate` (`edgekube certs rotate [--ca]`) is the way by hand.
- Times come from the caller's trusted `now` (edgekube._cogs.timefloor), never from a clock
  that may read 1970.
- `ServingContext` loads renewed files into the listening socket's TLS context (new connections
  get them); `rewrite_kubeconfig` keeps the kubeconfig's credentials current.
Private keys are written 0600 through a temporary file and a rename, so a power cut leaves
either the old file or the new one, never half a key.

Issuing needs `cryptography` (edgekube.api.certs), whose native library alone keeps about 8 MiB
resident once loaded: it is imported only in a forked child (at boot, while the process has one
thread; while running, from the threaded server, waited for off the loop and killed if stuck), so
the server never holds it; reading certificates uses the ssl module alone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import ipaddress
import logging
import os
import signal
import socket
import ssl
import threading
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from edgekube._cogs import files

_ADMIN_USER = "kubernetes-admin"
_ADMIN_GROUPS = ("system:masters",)
log = logging.getLogger(__name__)


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


def ensure_pki(tls_dir: Path, *, hostnames: Iterable[str], addresses: Iterable[str], now: datetime.datetime) -> Pki:
    """Make what is missing and renew what is due (`due`), logging each with its reason; a
    boot's check, synchronous (a forked child when the process has one thread). `now` is the
    trusted time (edgekube._cogs.timefloor)."""
    tls_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(tls_dir, 0o700)
    pki = Pki(tls_dir)
    work = due(pki, now=now, sans=sans(hostnames, addresses))
    if work.any():
        _log_work(pki, work)
        _issue(pki, **work.issue_args(), now=now)
    return pki


async def renew(pki: Pki, *, hostnames: Iterable[str], addresses: Iterable[str], now: datetime.datetime) -> bool:
    """The running server's periodic check: renew what is due (never the CA), in a forked child
    waited for without blocking the loop. True when something was issued."""
    work = due(pki, now=now, sans=sans(hostnames, addresses))
    work = dataclasses.replace(work, ca="")
    if not work.any():
        return False
    _log_work(pki, work)
    await _issue_async(pki, **work.issue_args(), now=now)
    return True


def rotate(pki: Pki, *, hostnames: Iterable[str], addresses: Iterable[str], now: datetime.datetime,
           ca: bool) -> None:
    """Issue the leaf certificates again (and a new CA first, with `ca`): `edgekube certs rotate`."""
    dns, ips = sans(hostnames, addresses)
    _issue(pki, make_ca=ca, server_sans=(dns, ips), admin=True, now=now)


def sans(hostnames: Iterable[str], addresses: Iterable[str]) -> tuple[list[str], list[str]]:
    """The serving certificate's DNS names and IP addresses for these host names and addresses."""
    dns = _unique(["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", *hostnames])
    ips = _unique(["127.0.0.1", "::1", *addresses])
    return dns, ips


class PkiError(OSError):
    """The certificates could not be issued."""


# --- what is there, what is due ----------------------------------------------------------------

RENEW_BEFORE = datetime.timedelta(days=90)  # leaves, as k3s (CertificateRenewDays)
CA_WARN_BEFORE = datetime.timedelta(days=365)  # a CA is replaced by hand: warn a year ahead

# file name -> what it is, for log lines and `edgekube certs check`
ROLES = {
    "ca.crt": "the cluster CA",
    "server.crt": "the API server's serving certificate",
    "admin.crt": "the admin client certificate (kubeconfig.yaml)",
}


@dataclasses.dataclass(frozen=True)
class CertInfo:
    """One certificate as the ssl module decodes it (no `cryptography` in the server)."""

    path: Path
    subject: str  # its common name
    issuer: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    dns: frozenset[str]
    ips: frozenset[str]

    @property
    def role(self) -> str:
        return ROLES.get(self.path.name, self.path.name)

    def state(self, now: datetime.datetime) -> str:
        """ok, expiring (within its warning window), expired, or not yet valid."""
        if now >= self.not_after:
            return "expired"
        if now < self.not_before:
            return "not yet valid"
        window = CA_WARN_BEFORE if self.path.name == "ca.crt" else RENEW_BEFORE
        return "expiring" if self.not_after - now < window else "ok"


def inspect(path: Path) -> CertInfo | None:
    """The certificate in `path`, or None when it is missing or unreadable."""
    try:
        decoded = ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]
        return CertInfo(
            path=path,
            subject=_common_name(decoded.get("subject")),
            issuer=_common_name(decoded.get("issuer")),
            not_before=_cert_time(decoded["notBefore"]),
            not_after=_cert_time(decoded["notAfter"]),
            dns=frozenset(v for k, v in decoded.get("subjectAltName") or () if k == "DNS"),
            ips=frozenset(str(ipaddress.ip_address(v.strip()))
                          for k, v in decoded.get("subjectAltName") or () if k == "IP Address"),
        )
    except (AttributeError, KeyError, ValueError, ssl.SSLError, OSError):
        return None


def inspect_all(pki: Pki) -> list[tuple[Path, CertInfo | None]]:
    return [(p, inspect(p)) for p in (pki.ca_cert, pki.server_cert, pki.admin_cert)]


@dataclasses.dataclass(frozen=True)
class Work:
    """What to issue and why (empty: nothing)."""

    ca: str = ""
    server: str = ""
    admin: str = ""
    server_sans: tuple[list[str], list[str]] | None = None

    def any(self) -> bool:
        return bool(self.ca or self.server or self.admin)

    def issue_args(self) -> dict[str, Any]:
        return {"make_ca": bool(self.ca), "server_sans": self.server_sans if self.server else None,
                "admin": bool(self.admin)}


def due(pki: Pki, *, now: datetime.datetime, sans: tuple[list[str], list[str]]) -> Work:
    """What must be issued at `now`: a missing CA; a leaf that is missing, unreadable, signed by
    another CA, in its last 90 days (unless it already ends with its CA) or expired; a serving
    certificate that does not name every host name and address. An expired CA is never replaced
    here (that is `edgekube certs rotate --ca`: it invalidates every kubeconfig handed out), and
    leaves are not issued from it: `check_ca` says what to do."""
    if not (pki.ca_cert.exists() and pki.ca_key.exists()):
        return Work(ca="missing", server="missing", admin="missing", server_sans=sans)
    ca = inspect(pki.ca_cert)
    if ca is None:  # never replaced silently: that would void every kubeconfig handed out
        raise PkiError(f"{pki.ca_cert} ({ROLES['ca.crt']}) cannot be read as a certificate: restore it from a "
                       "backup, or make a new CA with `edgekube certs rotate --ca` (then replace every kubeconfig)")
    if ca.state(now) == "expired":
        return Work()
    dns, ips = sans

    def leaf(cert: Path, key: Path, extra: str = "") -> str:
        info = inspect(cert) if key.exists() else None
        if info is None:
            return "missing" if not (cert.exists() and key.exists()) else "unreadable"
        if info.issuer != ca.subject:
            return f"signed by {info.issuer!r}, not by the current CA {ca.subject!r}"
        if now >= info.not_after:
            return f"expired on {_day(info.not_after)}"
        if info.not_after - now < RENEW_BEFORE and info.not_after < ca.not_after:
            return f"expires on {_day(info.not_after)}, within {RENEW_BEFORE.days} days"
        return extra

    covers = (inspect(pki.server_cert) or CertInfo(pki.server_cert, "", "", now, now, frozenset(), frozenset()))
    want_ips = {str(ipaddress.ip_address(i)) for i in ips}
    missing = sorted(set(dns) - covers.dns) + sorted(want_ips - covers.ips)
    server = leaf(pki.server_cert, pki.server_key,
                  f"does not name {', '.join(missing)}" if missing else "")
    return Work(server=server, admin=leaf(pki.admin_cert, pki.admin_key), server_sans=sans)


def check_ca(pki: Pki, *, now: datetime.datetime) -> None:
    """Log the CA's state when it needs a person: expired (nothing verifies), expiring within a
    year, or not valid yet by `now` (the clock is behind)."""
    ca = inspect(pki.ca_cert)
    if ca is None:
        return
    state = ca.state(now)
    where = pki.ca_cert
    if state == "expired":
        log.error("%s (%s) expired on %s: clients cannot verify this server, nor it them. Run "
                  "`edgekube certs rotate --ca`, restart edgekube, and hand out the new kubeconfig",
                  where, ca.role, _day(ca.not_after))
    elif state == "expiring":
        log.warning("%s (%s) expires on %s (in %d days): run `edgekube certs rotate --ca` before then, "
                    "restart edgekube, and hand out the new kubeconfig", where, ca.role, _day(ca.not_after),
                    (ca.not_after - now).days)
    elif state == "not yet valid":
        log.warning("%s (%s) is valid only from %s, after the time now (%s): is the clock right?",
                    where, ca.role, _day(ca.not_before), _day(now))


def _log_work(pki: Pki, work: Work) -> None:
    for name, why in (("ca.crt", work.ca), ("server.crt", work.server), ("admin.crt", work.admin)):
        if why and why != "missing":
            log.warning("%s (%s) %s: issuing it again%s", pki.dir / name, ROLES[name], why,
                        "; the kubeconfig is rewritten, copies of the old one elsewhere must be replaced"
                        if name == "admin.crt" else "")
        elif why:
            log.info("issuing %s (%s)", pki.dir / name, ROLES[name])


def _issue(pki: Pki, **what: Any) -> None:
    """Issue in a forked child when this process has a single thread (the server's first boot
    calls this before starting any), so `cryptography` is never loaded into the long-running
    process; in-process otherwise."""
    if threading.active_count() > 1 or not hasattr(os, "fork"):
        _issue_here(pki, **what)
        return
    pid = _fork_issue(pki, **what)
    _, status = os.waitpid(pid, 0)
    _check_child(pki, status)


async def _issue_async(pki: Pki, **what: Any) -> None:
    """Issue in a forked child of the running (threaded) server, waiting without blocking its
    loop. The child only builds keys and certificates and writes files: it takes no lock another
    thread could hold at the fork (no logging, no store); a child stuck anyway is killed."""
    pid = _fork_issue(pki, **what)
    waited = asyncio.ensure_future(asyncio.to_thread(os.waitpid, pid, 0))
    try:
        _, status = await asyncio.wait_for(asyncio.shield(waited), _CHILD_TIMEOUT)
    except (TimeoutError, asyncio.CancelledError) as exc:
        os.kill(pid, signal.SIGKILL)
        await waited  # reaped: no zombie left behind
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise PkiError(f"issuing the cluster certificates under {pki.dir} took over {_CHILD_TIMEOUT:.0f} s; "
                       "the child was killed (it is tried again at the next check)") from None
    _check_child(pki, status)


_CHILD_TIMEOUT = 120.0



def _issue_here(pki: Pki, **what: Any) -> None:
    from edgekube.api import certs

    certs.issue(pki, admin_user=_ADMIN_USER, admin_groups=_ADMIN_GROUPS, write=files.write_atomic, **what)


def _fork_issue(pki: Pki, **what: Any) -> int:
    pid = os.fork()
    if pid == 0:  # the child: issue, and leave without running the parent's clean-up
        code = 1
        try:
            with contextlib.suppress(ValueError):
                signal.set_wakeup_fd(-1)  # the parent's event loop's, not the child's to write to
            _issue_here(pki, **what)
            code = 0
        except BaseException:
            with contextlib.suppress(BaseException):
                traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _check_child(pki: Pki, status: int) -> None:
    if os.waitstatus_to_exitcode(status) != 0:
        raise PkiError(f"issuing the cluster certificates under {pki.dir} failed (exit status "
                       f"{os.waitstatus_to_exitcode(status)}; the error is logged above)")


def server_ssl_context(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.load_verify_locations(cafile=str(pki.ca_cert))
    # Client certificates are optional at the TLS layer: bearer tokens and the public health
    # endpoints need no certificate; the auth middleware decides. One that is sent must verify:
    # a certificate from another CA fails the handshake with an alert (edgekube._cogs.tlsalert
    # makes sure the alert is sent), so clients fail at once with "unknown certificate authority".
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class ServingContext:
    """The API's TLS context, kept up to date with the files: `reload` loads a renewed serving
    certificate (and a rotated CA, trusted next to the old one until a restart) into the same
    context, so new connections get it and open ones keep theirs; no restart, no new listener."""

    def __init__(self, pki: Pki) -> None:
        self.pki = pki
        self.context = server_ssl_context(pki)
        self._stamp = self._files()

    def _files(self) -> tuple[tuple[int, int, int], ...]:
        out = []
        for p in (self.pki.ca_cert, self.pki.server_cert, self.pki.server_key, self.pki.admin_cert):
            try:
                st = p.stat()
                out.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((0, 0, 0))
        return tuple(out)

    def changed(self) -> bool:
        """Whether the files differ from those last loaded (a stat each: no read, no write)."""
        return self._files() != self._stamp

    def reload(self) -> None:
        """Load the files again; ssl.SSLError/OSError (a key that does not match its certificate,
        half a rotation) leaves the context as it was, and the caller tries again later."""
        stamp = self._files()
        self.context.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        self.context.load_verify_locations(cafile=str(self.pki.ca_cert))
        self._stamp = stamp


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
    files.write_atomic(path, text, mode=0o600)


def rewrite_kubeconfig(path: Path, *, pki: Pki, default_url: str) -> None:
    """Write the kubeconfig again with the current certificates, keeping the server URL it has
    (or `default_url` when there is none)."""
    url = default_url
    with contextlib.suppress(OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
        url = str(yaml.safe_load(path.read_text())["clusters"][0]["cluster"]["server"]) or default_url
    write_kubeconfig(path, server_url=url, pki=pki)


# --- internals ----------------------------------------------------------------------------


def _unique(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        if v and v not in out:
            out.append(v)
    return out


def _common_name(rdns: Any) -> str:
    for rdn in rdns or ():
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def _cert_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ssl.cert_time_to_seconds(text), datetime.UTC)


def _day(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


