"""A pod's sandbox, without a sandbox process: its directory, its network namespace, and the
/etc/hosts, /etc/hostname and /etc/resolv.conf its containers mount.

Layout under the kubelet's root dir (all of it outlives edgekube, so a restart finds it again):

    pods/<uid>/etc-hosts, etc-hostname, resolv.conf     bind-mounted into every container
    pods/<uid>/volumes/<plugin>/<name>                  see `volumes`
    pods/<uid>/containers/<name>/termination-log-<n>   terminationMessagePath of attempt n
    pods/<uid>/ipc, pods/<uid>/shm                      the pod's IPC namespace (pinned) and /dev/shm (tmpfs)
    netns/<uid>                                         the pod's network namespace (an nsfs bind mount)

**Network namespace.** Upstream keeps a pod's namespaces alive with a pause process; here the
namespace is pinned by a bind mount instead (as `ip netns add` does), so no process per pod is
needed and the namespace survives an edgekube restart. It is made in a short-lived thread of its
own: unshare(CLONE_NEWNET) moves only the calling thread, its loopback is brought up, its
/proc/thread-self/ns/net is bind-mounted onto `netns/<uid>`, and the thread ends (it also
switches back, so even a failure leaves no thread in the wrong namespace). The pod network
(`network.PodNetwork`) then adds the pod's eth0; without one the namespace keeps loopback only
and the pod's IP is 127.0.0.1. `hostNetwork: true` pods get no namespace and the node's IP.

**IPC.** The same way, a pod gets one IPC namespace pinned at `pods/<uid>/ipc` and one 64 MiB
tmpfs at `pods/<uid>/shm`, which every container of the pod joins and mounts on /dev/shm, as
upstream's containers share their sandbox's (SysV IPC and POSIX shared memory work across the
pod's containers). `hostIPC: true` pods use the host's IPC namespace and a /dev/shm of their own. Probes and hooks reach
the pod through sockets made in its namespace (`socket_in`, a thread of its own again).

**DNS** follows upstream's kubelet (pkg/kubelet/network/dns): dnsPolicy ClusterFirst (the
default) gives the cluster DNS server with searches `<ns>.svc.<domain> svc.<domain> <domain>`
plus the host's, and `options ndots:5`; ClusterFirst with hostNetwork, and Default, give the
host's resolv.conf; ClusterFirstWithHostNet gives the cluster's with or without hostNetwork; None
gives only what `dnsConfig` says. `dnsConfig` nameservers and searches are appended
(deduplicated), options merged by name (the pod's win). At most 3 nameservers, and searches cut to
32 domains of at most 253 characters on a line of at most 2048, each cut announced by a
`DNSConfigForming` warning, as upstream. The host's file is the one `_cogs/resolvconf` locates
(systemd-resolved's real list rather than its 127.0.0.53 stub, as k3s hands its kubelet), parsed
as the kubelet parses it. With no cluster DNS configured (the dns component off), ClusterFirst
falls back to Default with a `MissingClusterDNS` warning, as upstream does.

**/etc/hosts** is upstream's managed file: localhost lines, the pod's IP with its hostname (and
`<hostname>.<subdomain>.<ns>.svc.<domain>` when `subdomain` is set), then `hostAliases`; for
hostNetwork pods, the host's /etc/hosts followed by the aliases.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import shutil
import socket
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgekube._cogs import netns as netns_mod
from edgekube._cogs import resolvconf
from edgekube.kubelet.runtime import bundle as bundle_mod

log = logging.getLogger(__name__)
JSON = dict[str, Any]
CLONE_NEWNET = 0x40000000
CLONE_NEWIPC = 0x08000000
SHM_SIZE = 64 << 20  # upstream's default /dev/shm of a pod
MS_BIND = 4096
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
MAX_NAMESERVERS = 3
MAX_SEARCHES = 32
MAX_SEARCH_CHARS = 2048
MAX_SEARCH_NAME = 253  # a search domain longer than a DNS name may be is left out

_libc = ctypes.CDLL(None, use_errno=True)


class SandboxError(OSError):
    """The pod's sandbox cannot be set up; the message names the pod's path and the cause."""


# --- paths --------------------------------------------------------------------------------------


class Layout:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.pods = root / "pods"
        self.netns_dir = root / "netns"

    def pod_dir(self, uid: str) -> Path:
        return self.pods / _safe(uid)

    def netns(self, uid: str) -> Path:
        return self.netns_dir / _safe(uid)

    def ipcns(self, uid: str) -> Path:
        return self.pod_dir(uid) / "ipc"

    def shm(self, uid: str) -> Path:
        return self.pod_dir(uid) / "shm"

    def volumes(self, uid: str) -> Path:
        return self.pod_dir(uid) / "volumes"

    def termination_log(self, uid: str, container: str, attempt: int) -> Path:
        return self.pod_dir(uid) / "containers" / _safe(container) / f"termination-log-{attempt}"

    def known_uids(self) -> set[str]:
        out: set[str] = set()
        for d in (self.pods, self.netns_dir):
            with contextlib.suppress(FileNotFoundError):
                out.update(e.name for e in os.scandir(d))
        return out


def _safe(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"{name!r} cannot name a directory")
    return name


# --- network namespace ---------------------------------------------------------------------------


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def _errno_error(what: str) -> OSError:
    err = ctypes.get_errno()
    return SandboxError(err, f"{what}: {os.strerror(err)}")


def create_netns(path: Path) -> None:
    """A new network namespace with loopback up, pinned at `path` (blocking)."""
    _pin_new_namespace(path, CLONE_NEWNET, "net", setup=_loopback_up)


def create_ipcns(path: Path) -> None:
    """A new IPC namespace pinned at `path`, for the pod's containers to share (blocking): SysV
    shared memory, semaphores and message queues work between them, as in upstream's pods,
    whose containers join their sandbox's IPC namespace."""
    _pin_new_namespace(path, CLONE_NEWIPC, "ipc")


def mount_shm(path: Path, *, size: int = SHM_SIZE) -> None:
    """The pod's /dev/shm: one tmpfs every container of the pod bind-mounts (blocking)."""
    if is_mounted(path):
        return
    path.mkdir(parents=True, exist_ok=True)
    rc = _libc.mount(b"shm", os.fsencode(path), b"tmpfs", ctypes.c_ulong(MS_NOSUID | MS_NODEV | MS_NOEXEC),
                     f"mode=1777,size={size}".encode())
    if rc != 0:
        raise _errno_error(f"mounting the pod's /dev/shm on {path}")


def _pin_new_namespace(path: Path, flag: int, kind: str, *, setup: Callable[[], None] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    if is_mounted(path):
        return
    with open(path, "a"):
        pass
    failure: list[BaseException] = []

    def work() -> None:
        try:
            own = os.open(f"/proc/thread-self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.unshare(flag) != 0:
                    raise _errno_error(f"unshare({kind} namespace) for {path}")
                try:
                    if setup is not None:
                        setup()
                    rc = _libc.mount(f"/proc/thread-self/ns/{kind}".encode(), os.fsencode(path), None,
                                     ctypes.c_ulong(MS_BIND), None)
                    if rc != 0:
                        raise _errno_error(f"bind-mounting the {kind} namespace onto {path}")
                finally:
                    if _libc.setns(own, flag) != 0:
                        failure.append(_errno_error(f"setns back to the host's {kind} namespace"))
            finally:
                os.close(own)
        except BaseException as exc:  # carried to the caller's thread
            failure.append(exc)

    t = threading.Thread(target=work, name=f"{kind}ns", daemon=True)
    t.start()
    t.join()
    if failure:
        with contextlib.suppress(OSError):
            remove_netns(path)
        exc = failure[0]
        raise exc if isinstance(exc, OSError) else SandboxError(errno.EIO, f"{path}: {exc}")


def is_mounted(path: Path) -> bool:
    return path in bundle_mod.mountpoints()


async def socket_in(netns: Path | None, family: int) -> socket.socket:
    """A non-blocking TCP socket of the network namespace pinned at `netns` (the host's when
    None), for the probes and hooks that connect to a pod. A socket belongs to the namespace
    it was made in, whichever thread uses it later: a short-lived thread of its own joins the
    namespace, makes it and switches back (a thread that cannot switch back just ends), so
    neither the loop nor a pooled thread ever leaves the host's namespace."""
    if netns is None:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        return sock
    loop = asyncio.get_running_loop()
    made: asyncio.Future[socket.socket] = loop.create_future()

    def settle(result: socket.socket | BaseException) -> None:
        if made.done():  # the caller gave up meanwhile
            if isinstance(result, socket.socket):
                result.close()
        elif isinstance(result, BaseException):
            made.set_exception(result)
        else:
            made.set_result(result)

    def work() -> None:
        result: socket.socket | BaseException
        try:
            result = _socket_in_thread(netns, family)
        except BaseException as exc:  # carried to the caller
            result = exc if isinstance(exc, OSError) else SandboxError(errno.EIO, f"{netns}: {exc}")
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result)

    threading.Thread(target=work, name="netns-socket", daemon=True).start()
    return await made


def _socket_in_thread(netns: Path, family: int) -> socket.socket:
    sock = netns_mod.make_socket(netns, family, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock


def remove_netns(path: Path) -> None:
    """Unpin the namespace (it goes once nothing is in it) and remove its file (blocking)."""
    bundle_mod.unmount(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# --- files --------------------------------------------------------------------------------------

HOSTS_HEADER = "# Kubernetes-managed hosts file.\n"
HOSTS_HEADER_HOST_NETWORK = "# Kubernetes-managed hosts file (host network).\n"
LOCALHOST = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "fe00::0\tip6-mcastprefix\n"
    "fe00::1\tip6-allnodes\n"
    "fe00::2\tip6-allrouters\n"
)


def _aliases(spec: Mapping[str, Any]) -> str:
    lines = []
    for a in spec.get("hostAliases") or []:
        if isinstance(a, Mapping) and a.get("ip") and a.get("hostnames"):
            lines.append(f"{a['ip']}\t" + "\t".join(str(h) for h in a["hostnames"]) + "\n")
    return "# Entries added by HostAliases.\n" + "".join(lines) if lines else ""


def hosts_file(pod: Mapping[str, Any], *, pod_ip: str, hostname: str, cluster_domain: str,
               host_hosts: str = "") -> str:
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork"):
        return HOSTS_HEADER_HOST_NETWORK + host_hosts + ("" if not host_hosts or host_hosts.endswith("\n") else "\n") \
            + _aliases(spec)
    ns = (pod.get("metadata") or {}).get("namespace") or "default"
    sub = spec.get("subdomain")
    own = f"{pod_ip}\t{hostname}.{sub}.{ns}.svc.{cluster_domain}\t{hostname}\n" if sub else f"{pod_ip}\t{hostname}\n"
    return HOSTS_HEADER + LOCALHOST + own + _aliases(spec)


def _dedupe(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def _merge_options(base: Sequence[str], extra: Sequence[Mapping[str, Any]]) -> list[str]:
    merged: dict[str, str] = {}
    for text in base:
        merged[text.partition(":")[0]] = text
    for o in extra:
        if isinstance(o, Mapping) and o.get("name"):
            merged[str(o["name"])] = f"{o['name']}:{o['value']}" if o.get("value") not in (None, "") else str(o["name"])
    return list(merged.values())


def dns_policy(pod: Mapping[str, Any], *, cluster_dns: str) -> tuple[str, str]:
    """("cluster" | "host" | "none", a MissingClusterDNS warning or "")."""
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "None":
        return "none", ""
    if policy == "Default" or (policy == "ClusterFirst" and spec.get("hostNetwork")):
        return "host", ""
    if not cluster_dns:
        meta = pod.get("metadata") or {}
        # upstream's words, format.Pod naming the pod, and "ClusterFirst" whichever cluster policy it was
        return "host", (f'pod: "{meta.get("name")}_{meta.get("namespace")}({meta.get("uid")})". kubelet does not '
                        'have ClusterDNS IP configured and cannot create Pod using "ClusterFirst" policy. '
                        'Falling back to "Default" policy.')
    return "cluster", ""


def _fit_searches(searches: list[str]) -> tuple[list[str], bool]:
    """Upstream's formDNSSearchFitsLimits: the first 32 domains, without those longer than a
    DNS name may be (glibc aborts on them), then domains cut from the end until the line fits."""
    fitted = [s for s in searches[:MAX_SEARCHES] if len(s) <= MAX_SEARCH_NAME]
    cut = len(fitted) != len(searches)
    while fitted and len(" ".join(fitted)) > MAX_SEARCH_CHARS:
        fitted.pop()
        cut = True
    return fitted, cut


def resolv_conf(pod: Mapping[str, Any], *, cluster_dns: str, cluster_domain: str,
                host_resolv: str) -> tuple[str, list[tuple[str, str]]]:
    """(the pod's resolv.conf, warnings as (event reason, message) pairs), as upstream's
    Configurer.GetPodDNS: `host_resolv` is the text of the host's resolv.conf (the file
    `resolvconf.locate` picked, as k3s hands the kubelet)."""
    kind, missing = dns_policy(pod, cluster_dns=cluster_dns)
    warnings = [("MissingClusterDNS", missing)] if missing else []
    host = resolvconf.parse(host_resolv)
    ns = (pod.get("metadata") or {}).get("namespace") or "default"
    if kind == "cluster":
        servers = [cluster_dns]
        searches = _dedupe([f"{ns}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain, *host.searches]
                           if cluster_domain else host.searches)
        options = ["ndots:5"]
    elif kind == "host":
        servers, searches, options = list(host.nameservers), list(host.searches), list(host.options)
    else:
        servers, searches, options = [], [], []
    cfg = (pod.get("spec") or {}).get("dnsConfig")
    if isinstance(cfg, Mapping):  # set at all, even empty: upstream's appendDNSConfig then dedupes
        servers = _dedupe([*servers, *(str(s) for s in cfg.get("nameservers") or [])])
        searches = _dedupe([*searches, *(str(s) for s in cfg.get("searches") or [])])
        options = _merge_options(options, cfg.get("options") or [])
    if len(servers) > MAX_NAMESERVERS:
        servers = servers[:MAX_NAMESERVERS]
        warnings.append(("DNSConfigForming", "Nameserver limits were exceeded, some nameservers have been omitted, "
                                             f"the applied nameserver line is: {' '.join(servers)}"))
    searches, cut = _fit_searches(searches)
    if cut:
        warnings.append(("DNSConfigForming", "Search Line limits were exceeded, some search paths have been omitted, "
                                             f"the applied search line is: {' '.join(searches)}"))
    text = ""
    if searches:
        text += "search " + " ".join(searches) + "\n"
    text += "".join(f"nameserver {s}\n" for s in servers)
    if options:
        text += "options " + " ".join(options) + "\n"
    return text, warnings


def write_if_changed(path: Path, text: str, *, mode: int = 0o644) -> bool:
    """Write atomically when the content differs (blocking). The file keeps its inode only when
    unchanged: a bind mount of it would not see a replacement, so callers write these files
    before the first container mounts them and change them in place afterwards."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        return True
    with open(path, "r+") as f:
        f.write(text)
        f.truncate()
    return True


def remove_pod_dir(path: Path) -> None:
    """Unmount whatever is still mounted below the pod's directory, then delete it (blocking)."""
    for mp in sorted((m for m in bundle_mod.mountpoints() if m == path or path in m.parents),
                     key=lambda m: len(m.parts), reverse=True):
        bundle_mod.unmount(mp)
    if path.exists():
        shutil.rmtree(path)
