"""The host's resolver configuration: which resolv.conf to believe, and what it says.

Two readers share it: the kubelet, which builds pods' resolv.conf from the host's (dnsPolicy
Default, and the host's search domains under ClusterFirst), and the cluster DNS server, which
forwards the names it does not own to the host's nameservers.

**Which file** (k3s's `locateOrGenerateResolvConf`): a path set in the config wins; otherwise
/etc/resolv.conf when every nameserver in it is a global unicast address, else
/run/systemd/resolve/resolv.conf under the same test. A host running systemd-resolved names only
its stub (127.0.0.53) in /etc/resolv.conf: useless inside a pod's namespace, and a loop risk for a
forwarder; the real upstream list is in systemd-resolved's own file. Where neither file passes,
k3s writes `nameserver 8.8.8.8`; an edge device must not send its queries to the internet unasked,
so /etc/resolv.conf is kept, and `upstreams` below leaves it with no usable server: forwarded
names then fail at once (SERVFAIL) instead of leaking or hanging.

**What it says** is parsed as upstream's kubelet parses it (pkg/kubelet/network/dns
parseResolvConf): lines starting with `#` are comments; `nameserver` lines accumulate; the last
`search` line wins, its domains without a trailing dot; the last `options` line wins. `domain`
lines are ignored, as the kubelet ignores them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from pathlib import Path

HOST_FILE = Path("/etc/resolv.conf")
SYSTEMD_RESOLVED_FILE = Path("/run/systemd/resolve/resolv.conf")
MAX_BYTES = 10 << 20  # the kubelet's limit (maxResolveConfLength)
_NAMESERVER = re.compile(r"^nameserver\s+(\S*)")


@dataclasses.dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


def parse(text: str) -> ResolvConf:
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for line in text.split("\n"):
        trimmed = line.strip()
        if trimmed.startswith("#"):
            continue
        fields = trimmed.split()
        if not fields:
            continue
        if fields[0] == "nameserver" and len(fields) >= 2:
            servers.append(fields[1])
        elif fields[0] == "search":
            searches = [s.removesuffix(".") for s in fields[1:]]
        elif fields[0] == "options":
            options = fields[1:]
    return ResolvConf(tuple(servers), tuple(searches), tuple(options))


def read(path: Path) -> str:
    """The file's text ("" when it cannot be read: no file means no configuration)."""
    try:
        with open(path, "rb") as f:
            return f.read(MAX_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _global_unicast(text: str) -> bool:
    """Go's net.IP.IsGlobalUnicast, which k3s asks: private ranges count, loopback, link-local,
    multicast, unspecified and the limited broadcast do not (nor anything that is not an IP)."""
    ip = _address(text)
    if ip is None or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        return False
    return ip != ipaddress.IPv4Address("255.255.255.255")


def usable(text: str) -> bool:
    """k3s's isValidResolvConf: at least one `nameserver` line, and each a global unicast IP."""
    found = False
    for line in text.split("\n"):
        m = _NAMESERVER.match(line)
        if m is None:
            continue
        if not _global_unicast(m.group(1)):
            return False
        found = True
    return found


def locate(configured: Path | None, *,
           candidates: tuple[Path, Path] = (HOST_FILE, SYSTEMD_RESOLVED_FILE)) -> Path:
    """The resolv.conf to use (see the module doc): `configured`, else the first usable of the
    host's file and systemd-resolved's, else the host's."""
    if configured is not None:
        return configured
    for candidate in candidates:
        if usable(read(candidate)):
            return candidate
    return candidates[0]


def upstreams(conf: ResolvConf) -> list[str]:
    """The nameservers a forwarder may use: IP addresses only, canonical, each once; loopback
    and unspecified addresses left out (a local stub is this host's own resolver, which may in
    turn ask the cluster DNS: a loop), as the kubelet and k3s leave them out of pods' view."""
    out: list[str] = []
    for text in conf.nameservers:
        ip = _address(text)
        if ip is None or ip.is_loopback or ip.is_unspecified:
            continue
        if str(ip) not in out:
            out.append(str(ip))
    return out
