"""The pod network's netlink work, through pyroute2 (its rtnetlink client, loaded by `netlink`):
the node's bridge, a veth pair per pod, the pod's `eth0` with its addresses and default route.
No CNI binaries, no `ip` commands.

Every function blocks (netlink round trips) and is called from a worker thread. Each opens its
own pyroute2 `IPRoute` and closes it before returning: a pyroute2 socket belongs to the thread
that made it, so none is kept between calls.

Work inside a pod's network namespace goes through a netlink socket made in that namespace by a
short-lived thread of its own (`_cogs.netns.socket_in`) and handed to pyroute2
(`IPRoute(use_socket=...)`): no long-lived thread ever joins a pod's namespace, and no process
is forked (pyroute2's own `netns=` would fork a child per socket).

One pod's set-up (`attach`) is three host messages and three in the pod, about 4 ms (pyroute2
spends most of it: some 0.5 ms a message):
- the veth pair is made in one RTM_NEWLINK whose peer is created straight inside the pod's
  namespace (IFLA_NET_NS_FD) as `eth0`, with the host end already enslaved to the bridge, up and
  at the MTU; the host end is named after the pod's UID (`ekv` + 10 hex digits of its SHA-256), so
  a restart finds it again and knows whose it is, and no other software's veths (docker's are
  `veth...`) are ever taken for ours;
- the host end is put in hairpin mode (a frame may leave by the port it came in on: a pod that
  reaches itself through a Service, once the proxy masquerades it);
- inside the pod: the addresses on `eth0`, `eth0` up at the MTU, a default route per family via
  the bridge's address.

The bridge gets a fixed, locally administered MAC address when it is made: a bridge without one
takes the lowest MAC of its ports, and would change it as pods come and go, under the pods' ARP
entries for their gateway.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import ipaddress
import os
import re
import secrets
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from edgekube._cogs import netns as netns_mod
from edgekube.net import netlink

POD_IFNAME = "eth0"
HOST_PREFIX = "ekv"
HOST_NAME = re.compile(rf"^{HOST_PREFIX}[0-9a-f]{{10}}$")
DEFAULT_MTU = 1500
NETLINK_ROUTE = 0
BRPORT_MODE_HAIRPIN = 1

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class LinkError(OSError):
    """A netlink operation failed; the message names the link or namespace and the cause."""


@dataclasses.dataclass(frozen=True)
class HostLink:
    """The host's end of a pod's veth pair, as the kernel has it."""

    name: str
    index: int
    master: int  # the bridge's index, 0 when it has none
    up: bool


def host_ifname(uid: str) -> str:
    """The host's end of the pod's veth pair (15 characters at most, as IFNAMSIZ allows)."""
    return HOST_PREFIX + hashlib.sha256(uid.encode()).hexdigest()[:10]


def _fail(what: str, exc: netlink.NetlinkError | OSError) -> LinkError:
    code = exc.code if isinstance(exc, netlink.NetlinkError) else (exc.errno or 0)
    return LinkError(f"{what}: {os.strerror(code) if code else exc}")


@contextlib.contextmanager
def _route(netns: Path | None = None) -> Iterator[Any]:
    """An IPRoute of this namespace, or of the one pinned at `netns`. A netlink error that the
    caller did not name more precisely comes out as a LinkError (an OSError) naming where."""
    where = f"the pod's network namespace {netns}" if netns is not None else "the node's network namespace"
    sock: socket.socket | None = None
    if netns is not None:
        try:
            sock = netns_mod.socket_in(netns, socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
        except OSError as exc:
            raise LinkError(f"no netlink socket in {where}: {exc}") from None
    try:
        ipr = netlink.IPRoute(use_socket=sock) if sock is not None else netlink.IPRoute()
        try:
            yield ipr
        except netlink.NetlinkError as exc:
            raise _fail(f"a netlink request in {where}", exc) from None
        finally:
            ipr.close()
    finally:
        if sock is not None:
            sock.close()


def _attr(msg: Any, name: str, default: Any = None) -> Any:
    value = msg.get_attr(name)
    return default if value is None else value


def _index(ipr: Any, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


# --- the node's side ------------------------------------------------------------------------------


def uplink_mtu() -> int:
    """The MTU of the interface holding the default route (IPv4, else IPv6), else 1500 (a node
    with no uplink: a test namespace, a device offline at boot)."""
    with _route() as ipr:
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                routes = list(ipr.get_default_routes(family=family))
            except netlink.NetlinkError:
                continue
            for r in routes:
                oif = _attr(r, "RTA_OIF")
                if oif:
                    links = list(ipr.link("get", index=oif))
                    if links:
                        return int(_attr(links[0], "IFLA_MTU", DEFAULT_MTU))
    return DEFAULT_MTU


def _random_mac() -> str:
    first = (secrets.randbits(8) & 0xFC) | 0x02  # locally administered, unicast
    return ":".join(f"{b:02x}" for b in [first, *secrets.token_bytes(5)])


def ensure_bridge(name: str, *, addresses: Sequence[Interface], mtu: int) -> int:
    """The bridge `name` made (or found), with `addresses` (the pod CIDRs' gateways), at `mtu`,
    up. Global addresses it holds beyond those (an earlier pod CIDR) are removed. Returns its
    index."""
    with _route() as ipr:
        index = _index(ipr, name)
        if index is None:
            try:
                ipr.link("add", ifname=name, kind="bridge", address=_random_mac(), mtu=mtu)
            except netlink.NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise _fail(f"creating the bridge {name}", exc) from None
            index = _index(ipr, name)
            if index is None:
                raise LinkError(f"the bridge {name} vanished right after it was made")
        link = next(iter(ipr.link("get", index=index)))
        info = _attr(link, "IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        if kind != "bridge":
            raise LinkError(f"the link {name} exists and is a {kind or 'device'}, not a bridge: choose another "
                            f"pod-network.bridge name or remove it")
        try:
            if int(_attr(link, "IFLA_MTU", 0)) != mtu:
                ipr.link("set", index=index, mtu=mtu)
            have = {ipaddress.ip_interface(f"{_attr(a, 'IFA_ADDRESS')}/{a['prefixlen']}")
                    for a in ipr.get_addr(index=index)}
            for want in addresses:
                if want not in have:
                    ipr.addr("add", index=index, address=str(want.ip), prefixlen=want.network.prefixlen)
            for old in have:
                if old not in addresses and not old.ip.is_link_local:
                    ipr.addr("del", index=index, address=str(old.ip), prefixlen=old.network.prefixlen)
            ipr.link("set", index=index, state="up")
        except netlink.NetlinkError as exc:
            raise _fail(f"setting up the bridge {name} ({', '.join(map(str, addresses))}, mtu {mtu})", exc) from None
        return int(index)


def enable_forwarding(*, ipv4: bool, ipv6: bool) -> None:
    """Routing between the pods' bridge and the node's other links (this namespace's sysctls),
    and bridged traffic through the IP hooks (bridge-nf-call-iptables, as kube-proxy and
    k3s require): a reply from a pod to another pod of the same bridge is bridged, not routed,
    and without it would skip the service proxy's un-DNAT and NetworkPolicy's forward chain.
    A distribution may set these to 0 (libvirt's advice does); the kernel's own default is 1."""
    bridge_nf = Path("/proc/sys/net/bridge")
    if not bridge_nf.exists():
        raise LinkError("the kernel has no bridge netfilter (CONFIG_BRIDGE_NETFILTER, module br_netfilter): "
                        "load it (`modprobe br_netfilter`) or start edgekube with `--disable network`")
    paths = ([Path("/proc/sys/net/ipv4/ip_forward"), bridge_nf / "bridge-nf-call-iptables"] if ipv4 else []) + \
            ([Path("/proc/sys/net/ipv6/conf/all/forwarding"), bridge_nf / "bridge-nf-call-ip6tables"] if ipv6 else [])
    for p in paths:
        try:
            if p.read_text().strip() != "1":
                p.write_text("1\n")
        except OSError as exc:
            raise LinkError(f"cannot turn on forwarding ({p}): {exc.strerror or exc}") from None


def host_link(ifname: str) -> HostLink | None:
    with _route() as ipr:
        try:
            links = list(ipr.link("get", ifname=ifname))
        except netlink.NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None
            raise _fail(f"reading the link {ifname}", exc) from None
    if not links:
        return None
    link = links[0]
    return HostLink(name=ifname, index=int(link["index"]), master=int(_attr(link, "IFLA_MASTER", 0)),
                    up=bool(link["flags"] & 1))


def host_links() -> list[str]:
    """The names of the pods' host ends present on the node (links named as `host_ifname`)."""
    with _route() as ipr:
        names = [str(_attr(link, "IFLA_IFNAME", "")) for link in ipr.get_links()]
    return [n for n in names if HOST_NAME.match(n)]


def enslave(ifname: str, *, bridge: int) -> None:
    """Put an existing host end back on the bridge (a bridge made again), hairpin, up."""
    with _route() as ipr:
        try:
            index = _index(ipr, ifname)
            if index is None:
                raise LinkError(f"the link {ifname} is gone")
            ipr.link("set", index=index, master=bridge, state="up")
            ipr.brport("set", index=index, mode=BRPORT_MODE_HAIRPIN)
        except netlink.NetlinkError as exc:
            raise _fail(f"attaching {ifname} to the bridge", exc) from None


def detach(ifname: str) -> bool:
    """Delete a pod's host end (its peer in the pod goes with it). False when it was not there."""
    with _route() as ipr:
        try:
            ipr.link("del", ifname=ifname)
        except netlink.NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return False
            raise _fail(f"deleting the link {ifname}", exc) from None
    return True


# --- a pod ----------------------------------------------------------------------------------------


def attach(netns: Path, *, ifname: str, bridge: int, addresses: Sequence[Interface], gateways: Sequence[Address],
           mtu: int) -> None:
    """The pod pinned at `netns` on the bridge: a veth pair `ifname` (host) / eth0 (pod), eth0
    holding `addresses`, a default route via each of `gateways`, both ends at `mtu`, up. Whatever
    an interrupted earlier attempt left (the host end, an eth0) is replaced."""
    try:
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise LinkError(f"the pod's network namespace {netns} cannot be opened: {exc.strerror or exc}") from None
    try:
        with _route() as ipr:
            try:
                _add_pair(ipr, fd, ifname=ifname, bridge=bridge, mtu=mtu)
            except netlink.NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise _fail(f"creating the veth pair {ifname}/{POD_IFNAME} for {netns}", exc) from None
                # Left by an attempt that did not finish: start again from nothing.
                with contextlib.suppress(netlink.NetlinkError):
                    ipr.link("del", ifname=ifname)
                _remove_pod_link(netns)
                try:
                    _add_pair(ipr, fd, ifname=ifname, bridge=bridge, mtu=mtu)
                except netlink.NetlinkError as exc2:
                    raise _fail(f"creating the veth pair {ifname}/{POD_IFNAME} for {netns}", exc2) from None
            try:
                made = next(iter(ipr.link("get", ifname=ifname)), None)
                if made is None:
                    raise LinkError(f"the link {ifname} vanished right after it was made")
                ipr.brport("set", index=made["index"], mode=BRPORT_MODE_HAIRPIN)
            except netlink.NetlinkError as exc:
                raise _fail(f"hairpin mode on {ifname}", exc) from None
            # A veth's IFLA_LINK is its peer's index, in the peer's namespace: eth0's, in the pod.
            peer = int(_attr(made, "IFLA_LINK", 0))
    finally:
        os.close(fd)
    with _route(netns) as pr:
        try:
            index = peer or _index(pr, POD_IFNAME)
            if index is None:
                raise LinkError(f"{POD_IFNAME} is missing in {netns} right after it was made")
            for a in addresses:
                try:
                    pr.addr("add", index=index, address=str(a.ip), prefixlen=a.network.prefixlen)
                except netlink.NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise
            pr.link("set", index=index, state="up", mtu=mtu)
            for gw in gateways:
                dst = "0.0.0.0/0" if gw.version == 4 else "::/0"
                pr.route("replace", dst=dst, gateway=str(gw))
        except netlink.NetlinkError as exc:
            raise _fail(f"configuring {POD_IFNAME} in {netns} ({', '.join(map(str, addresses))})", exc) from None


def _add_pair(ipr: Any, fd: int, *, ifname: str, bridge: int, mtu: int) -> None:
    ipr.link("add", ifname=ifname, kind="veth", mtu=mtu, master=bridge, state="up",
             peer={"ifname": POD_IFNAME, "net_ns_fd": fd, "mtu": mtu})


def _remove_pod_link(netns: Path) -> None:
    with _route(netns) as pr, contextlib.suppress(netlink.NetlinkError):
        pr.link("del", ifname=POD_IFNAME)


def pod_addresses(netns: Path) -> list[Interface]:
    """The global addresses on the pod's eth0 (none when it has no eth0)."""
    with _route(netns) as pr:
        index = _index(pr, POD_IFNAME)
        if index is None:
            return []
        try:
            out = [ipaddress.ip_interface(f"{_attr(a, 'IFA_ADDRESS')}/{a['prefixlen']}")
                   for a in pr.get_addr(index=index)]
        except netlink.NetlinkError as exc:
            raise _fail(f"reading the addresses of {POD_IFNAME} in {netns}", exc) from None
    return [a for a in out if not a.ip.is_link_local]
