"""The pod network of one node: a bridge, a veth pair per pod, addresses from the node's pod CIDR.
It is the kubelet's `PodNetwork` (kubelet/network.py), wired by runtime.py behind the `network`
component; this module never imports the kubelet, it only has the same shape.

    node's namespace                                  pod's namespace (kubelet/netns/<uid>)
    ek0 (bridge) 10.42.0.1/24, ip_forward on          eth0 10.42.0.7/24
       `- ekv1a2b3c4d5e (hairpin) <---- veth ---->       default via 10.42.0.1

**The node's pod CIDR** follows upstream's node IPAM (the range allocator of
kube-controller-manager, as k3s runs it): the Node's `spec.podCIDRs` when it has them (a restart,
or CIDRs given by an administrator), else the first /24 (IPv4; /64 for IPv6) of each
`cluster-cidr` range that no other Node holds, a range smaller than that being taken whole. The
kubelet writes them into `spec.podCIDR`/`spec.podCIDRs` when it registers the Node (`pod_cidrs`),
so a second node, once nodes can join, takes the next /24 and only needs the overlay.
`cluster-cidr` may list one range per family, comma-separated (`10.42.0.0/16,fd42::/56`, as k3s
writes dual stack); IPv4 first is the order kept everywhere (bridge addresses, a pod's
addresses, `status.podIPs`).

**Boot** (`start`, before the kubelet): the pod CIDRs, the address state loaded (`ipam`),
forwarding turned on in the node's namespace (pods reach the node's other links, and the proxy's
masquerade takes them further), the bridge made or found with each range's gateway (the first
host address) and the MTU: `pod-network.mtu`, else the MTU of the node's uplink (the link of the
default route), else 1500. A kernel or a user that cannot do it stops the boot with a message
that says so and how to run without (`--disable network`).

**A pod** (`setup`): its allocation (an existing one, else new: one write), then `links.attach`.
A pod that already has its allocation and its host link was set up before, by this process or
the one before it (edgekube restarted, kill -9 included, while the pod ran): its addresses are
answered at once and nothing of the running pod is touched (a host link that lost its bridge, a
bridge made again, is put back on it). A pod with no allocation is new: no lookup, its links are
made (whatever an interrupted attempt left is replaced). Set-up failures raise `SetupError` (an OSError:
the kubelet reports it as FailedCreatePodSandBox and tries again later); an allocation is kept
across failed attempts, so a retry gets the same address, and goes with the pod's `teardown`.

**Restore** (`restore(live)`, at the kubelet's boot, before its sweep and before any pod is set
up): the allocations and host links of pods that are not live (deleted while edgekube was down)
are released and deleted; a live pod with a host link and no allocation (the state file was lost
or damaged) has the addresses its `eth0` holds recorded again, before any is handed out anew.

All netlink and file work runs in worker threads (`asyncio.to_thread`, the loop's bounded
executor); a debug line per pod gives the set-up's time and its parts (the kubelet benchmark reads
it: the network stage, goal 10 ms).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgekube.api import errors
from edgekube.client import local
from edgekube.net import ipam as ipam_mod
from edgekube.net import links

log = logging.getLogger(__name__)
JSON = dict[str, Any]
Network = ipam_mod.Network
NODE_MASK = {4: 24, 6: 64}  # upstream's --node-cidr-mask-size-ipv4 / -ipv6 defaults
STATE_FILE = "ipam.json"


class StartError(RuntimeError):
    """The pod network cannot start on this node; the message says why and how to go on."""


class SetupError(OSError):
    """A pod cannot be put on the network; the message names the pod and the cause."""


@dataclasses.dataclass(frozen=True)
class Settings:
    node_name: str
    cluster_cidrs: tuple[Network, ...]  # IPv4 first
    bridge: str
    mtu: int  # 0: the uplink's
    state_dir: Path  # <data-dir>/network


def parse_cidrs(text: str) -> tuple[Network, ...]:
    """`cluster-cidr`: one range, or one per family comma-separated; IPv4 first."""
    nets = [ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip()]
    if not nets:
        raise ValueError(f"{text!r} holds no CIDR")
    if len({n.version for n in nets}) != len(nets):
        raise ValueError(f"{text!r}: at most one range per family")
    return tuple(sorted(nets, key=lambda n: n.version))


def _node_cidrs(node: Mapping[str, Any]) -> list[Network]:
    spec = node.get("spec") or {}
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    out = []
    for c in cidrs:
        try:
            out.append(ipaddress.ip_network(str(c)))
        except ValueError:
            continue
    return out


def choose_cidrs(cluster: Sequence[Network], *, node_name: str, nodes: Sequence[Mapping[str, Any]]) -> tuple[Network, ...]:
    """The node's pod CIDRs: its own `spec.podCIDRs`, else per cluster range the first subnet of
    the node mask size that no other node holds (see the module's docstring)."""
    mine = next((n for n in nodes if (n.get("metadata") or {}).get("name") == node_name), None)
    if mine is not None:
        own = _node_cidrs(mine)
        if own:
            return tuple(sorted(own, key=lambda n: n.version))
    taken = [c for n in nodes if (n.get("metadata") or {}).get("name") != node_name for c in _node_cidrs(n)]
    out = []
    for rng in cluster:
        mask = NODE_MASK[rng.version]
        candidates = [rng] if rng.prefixlen >= mask else rng.subnets(new_prefix=mask)
        chosen = next((c for c in candidates
                       if not any(t.version == c.version and t.overlaps(c) for t in taken)), None)
        if chosen is None:
            raise StartError(f"no free /{mask} left in cluster-cidr {rng} for node {node_name}: every one is a "
                             f"node's spec.podCIDR")
        out.append(chosen)
    return tuple(out)


class BridgeNetwork:
    """The node's pod network (see the module's docstring)."""

    def __init__(self, settings: Settings, *, client: local.LocalClient) -> None:
        self.settings = settings
        self._client = client
        self.cidrs: tuple[Network, ...] = ()
        self.mtu = 0
        self._bridge = 0  # the bridge's link index
        self._ipam: ipam_mod.Ipam | None = None

    @property
    def pod_cidrs(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self.cidrs)

    @property
    def gateways(self) -> tuple[ipam_mod.Address, ...]:
        return tuple(ipam_mod.gateway(c) for c in self.cidrs)

    # --- boot -------------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        try:
            nodes = self._client.list("v1", "Node").items
        except errors.APIError as exc:
            raise StartError(f"network: cannot read the Nodes to choose this node's pod CIDR: {exc}") from None
        self.cidrs = choose_cidrs(s.cluster_cidrs, node_name=s.node_name, nodes=nodes)
        self._ipam = ipam_mod.Ipam(s.state_dir / STATE_FILE, ranges=self.cidrs)
        try:
            await asyncio.to_thread(self._start)
        except OSError as exc:
            raise StartError(f"network: the pod network cannot start ({exc}); it needs root (CAP_NET_ADMIN) and "
                             f"a kernel with bridge and veth; or start edgekube with --disable network") from None
        log.info("pod network: bridge %s with %s, mtu %d; %d pods' addresses kept", s.bridge,
                 ", ".join(f"{g}/{c.prefixlen}" for g, c in zip(self.gateways, self.cidrs, strict=True)), self.mtu,
                 len(self._ipam.allocations()))

    def _start(self) -> None:
        assert self._ipam is not None
        s = self.settings
        self._ipam.load()
        self.mtu = s.mtu or links.uplink_mtu()
        links.enable_forwarding(ipv4=any(c.version == 4 for c in self.cidrs),
                                ipv6=any(c.version == 6 for c in self.cidrs))
        gateways = [ipaddress.ip_interface(f"{g}/{c.prefixlen}") for g, c in zip(self.gateways, self.cidrs, strict=True)]
        self._bridge = links.ensure_bridge(s.bridge, addresses=gateways, mtu=self.mtu)

    async def restore(self, live: Mapping[str, tuple[str, str, Path]]) -> None:
        """Release what pods not in `live` hold: their addresses and host links (one write); take
        back what live pods hold that the state lost."""
        released, deleted = await asyncio.to_thread(self._restore, dict(live))
        if released or deleted:
            log.info("pod network: released the addresses of pods deleted meanwhile (%s); deleted links %s",
                     ", ".join(f"{a.namespace}/{a.name} {'/'.join(a.ips)}" for a in released) or "none",
                     ", ".join(deleted) or "none")

    def _restore(self, live: dict[str, tuple[str, str, Path]]) -> tuple[list[ipam_mod.Allocation], list[str]]:
        assert self._ipam is not None
        released = self._ipam.retain(live)
        present = set(links.host_links())
        keep = {links.host_ifname(uid): uid for uid in live}
        deleted = [name for name in sorted(present) if name not in keep and links.detach(name)]
        for name in present & keep.keys():
            uid = keep[name]
            if self._ipam.get(uid) is None:
                namespace, pod, netns = live[uid]
                self._claim(uid, namespace=namespace, name=pod, netns=netns)
        return released, deleted

    def _claim(self, uid: str, *, namespace: str, name: str, netns: Path) -> ipam_mod.Allocation | None:
        """Record the addresses the pod's eth0 holds (the state lost them); None if it has none."""
        assert self._ipam is not None
        held = links.pod_addresses(netns)
        if not held:
            return None
        alloc = self._ipam.claim(uid, namespace=namespace, name=name, ips=[str(a.ip) for a in held])
        log.warning("pod %s/%s: its link holds %s, missing from the address state: recorded again", namespace, name,
                    " ".join(alloc.ips))
        return alloc

    # --- pods -------------------------------------------------------------------------------

    async def setup(self, uid: str, *, namespace: str, name: str, netns: Path) -> tuple[str, ...]:
        t0 = time.perf_counter()
        ips, parts = await asyncio.to_thread(self._setup, uid, namespace, name, netns)
        log.debug("pod %s/%s: network set up in %.2f ms (%s): %s", namespace, name, 1000 * (time.perf_counter() - t0),
                  ", ".join(f"{k} {v:.2f} ms" for k, v in parts.items()), " ".join(ips))
        return ips

    def _setup(self, uid: str, namespace: str, name: str, netns: Path) -> tuple[tuple[str, ...], dict[str, float]]:
        assert self._ipam is not None
        parts: dict[str, float] = {}
        t = time.perf_counter()

        def lap(label: str) -> None:
            nonlocal t
            now = time.perf_counter()
            parts[label] = 1000 * (now - t)
            t = now

        ifname = links.host_ifname(uid)
        try:
            have = self._ipam.get(uid)
            if have is not None:
                # Set up before (by the process before this one, or an attempt that failed
                # half-way): a pod whose link is there keeps it, untouched.
                link = links.host_link(ifname)
                lap("lookup")
                if link is not None and all(self._in_cidrs(ip) for ip in have.ips):
                    if link.master != self._bridge or not link.up:
                        links.enslave(ifname, bridge=self._bridge)
                        lap("enslaved")
                    return have.ips, parts
                if not all(self._in_cidrs(ip) for ip in have.ips):
                    self._ipam.release(uid)  # from an earlier pod CIDR, and the pod is set up anew
            alloc = self._ipam.allocate(uid, namespace=namespace, name=name)
            lap("address")
            addresses = [ipaddress.ip_interface(f"{ip}/{self._cidr_of(ip).prefixlen}") for ip in alloc.ips]
            links.attach(netns, ifname=ifname, bridge=self._bridge, addresses=addresses, gateways=self.gateways,
                         mtu=self.mtu)
            lap("links")
        except OSError as exc:
            raise SetupError(f"failed to set up the network of pod {namespace}/{name}: {exc}") from None
        return alloc.ips, parts

    def _in_cidrs(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        return any(addr.version == c.version and addr in c for c in self.cidrs)

    def _cidr_of(self, ip: str) -> Network:
        addr = ipaddress.ip_address(ip)
        return next(c for c in self.cidrs if addr.version == c.version and addr in c)

    async def teardown(self, uid: str) -> None:
        await asyncio.to_thread(self._teardown, uid)

    def _teardown(self, uid: str) -> None:
        assert self._ipam is not None
        links.detach(links.host_ifname(uid))
        self._ipam.release(uid)
