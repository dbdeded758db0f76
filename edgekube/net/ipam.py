"""Pod addresses: one per family from the node's pod CIDRs, kept in one small file that outlives
edgekube.

The state is a JSON file (`<data-dir>/network/ipam.json`, 0600) holding, per pod UID, its
namespace, name and addresses, and per range the address handed out last. It is written whole,
atomically (`_cogs.files.write_atomic`: temporary file, rename), once per allocation and once per
release, and never otherwise: an idle node, a restart, a pod that keeps running write nothing (SD
cards wear with every write). A crash of edgekube at any point leaves the old state or the new
one; a pod whose allocation was written but whose link was not made yet gets the same address
when it is set up again.

The writes are not flushed (`durable=False`): the state matters only while the pods it describes
run, and a crash of edgekube (kill -9, OOM) keeps the page cache, while a power cut, which could
lose the last writes, also ends every pod: after it each pod is set up anew, and an address
forgotten by the state is held by no running pod. So a burst of pods costs the flash one
writeback by the kernel instead of two flushes per pod, and a pod's set-up no fsync (milliseconds
on an SD card). A state file a power cut left damaged or empty is moved aside at boot (`load`).

Allocation walks each range round-robin from the address handed out last, as the host-local CNI
plugin does, so an address just freed is the last to be reused (a peer's ARP or conntrack entry
for the old pod has time to expire). In a range the network address, the gateway (the first
host address, on the bridge) and, for IPv4, the broadcast address are never handed out: a /24
holds 253 pods. A pod set up again (a restart, a retried set-up) gets the allocation it has; a
full range is an `ExhaustedError` naming the range and the pod.

Dual stack is designed in: an allocation holds one address per range, in the ranges' order (IPv4
first, as the node's podCIDRs list them).

`retain(live)` releases every allocation of a UID not in `live` in one write (a pod deleted while
edgekube was down). `claim` records addresses a running pod already holds, for the case of a
state file lost or damaged (it is then moved aside and the pods' own links say who has what).

Every method blocks (file work): callers run them in a worker thread; a lock keeps concurrent
set-ups from taking the same address.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from edgekube._cogs import files

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
VERSION = 1


class IpamError(OSError):
    """The state file cannot be read or written; the message names it."""


class ExhaustedError(OSError):
    """No free address is left in a range; the message names the range and the pod."""


@dataclasses.dataclass(frozen=True)
class Allocation:
    uid: str
    namespace: str
    name: str
    ips: tuple[str, ...]  # one per range, in the ranges' order


def gateway(net: Network) -> Address:
    """The range's gateway: its first host address, held by the bridge."""
    return net.network_address + 1


def capacity(net: Network) -> int:
    """How many pods the range holds (network address, gateway and IPv4 broadcast left out)."""
    reserved = 3 if net.version == 4 else 2
    return max(0, net.num_addresses - reserved)


def _first(net: Network) -> Address:
    return net.network_address + 2


def _last(net: Network) -> Address:
    return net.broadcast_address - 1 if net.version == 4 else net.broadcast_address


class Ipam:
    def __init__(self, path: Path, *, ranges: Sequence[Network]) -> None:
        if not ranges:
            raise ValueError("the IPAM needs at least one range")
        self.path = path
        self.ranges = tuple(ranges)
        self._lock = threading.Lock()
        self._pods: dict[str, Allocation] = {}
        self._last: dict[str, str] = {}  # str(range) -> the address handed out last

    # --- state file ---------------------------------------------------------------------------

    def load(self) -> None:
        """Read the state file (none yet: empty). A damaged one is moved aside with an error in
        the log: the running pods' links then tell their addresses (`claim`)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            data = json.loads(raw)
            pods, last = self._parse(data)
        except (ValueError, TypeError, KeyError) as exc:
            aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            log.error("the pod address state %s is damaged (%s); moved to %s and started empty: running pods "
                      "keep the addresses their links hold", self.path, exc, aside)
            return
        with self._lock:
            self._pods, self._last = pods, last
        outside = [a for a in pods.values() if not any(self._in_ranges(ip) for ip in a.ips)]
        if outside:
            log.warning("pods %s hold addresses outside the pod CIDRs %s (the CIDR changed): they keep them until "
                        "they are deleted", ", ".join(f"{a.namespace}/{a.name}" for a in outside),
                        ", ".join(map(str, self.ranges)))

    @staticmethod
    def _parse(data: Any) -> tuple[dict[str, Allocation], dict[str, str]]:
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError(f"expected a mapping with version {VERSION}")
        pods: dict[str, Allocation] = {}
        for uid, entry in (data.get("pods") or {}).items():
            ips = tuple(str(ipaddress.ip_address(ip)) for ip in entry["ips"])
            pods[str(uid)] = Allocation(uid=str(uid), namespace=str(entry["namespace"]), name=str(entry["name"]),
                                        ips=ips)
        last = {str(k): str(ipaddress.ip_address(v)) for k, v in (data.get("last") or {}).items()}
        return pods, last

    def _save(self) -> None:
        data = {
            "version": VERSION,
            "ranges": [str(r) for r in self.ranges],
            "last": self._last,
            "pods": {uid: {"namespace": a.namespace, "name": a.name, "ips": list(a.ips)}
                     for uid, a in sorted(self._pods.items())},
        }
        try:
            files.write_atomic(self.path, json.dumps(data, sort_keys=True, separators=(",", ":")).encode(),
                               mode=0o600, durable=False)
        except OSError as exc:
            raise IpamError(f"cannot write the pod address state {self.path}: {exc}") from None

    # --- queries ----------------------------------------------------------------------------

    def get(self, uid: str) -> Allocation | None:
        with self._lock:
            return self._pods.get(uid)

    def allocations(self) -> list[Allocation]:
        with self._lock:
            return list(self._pods.values())

    def _in_ranges(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        return any(addr.version == r.version and addr in r for r in self.ranges)

    # --- changes ----------------------------------------------------------------------------

    def allocate(self, uid: str, *, namespace: str, name: str) -> Allocation:
        """The pod's allocation: the one it has, else a new address from each range (one write)."""
        with self._lock:
            have = self._pods.get(uid)
            if have is not None:
                return have
            taken = {ip for a in self._pods.values() for ip in a.ips}
            ips = tuple(str(self._next_free(r, taken, namespace=namespace, name=name)) for r in self.ranges)
            before = dict(self._last)
            for r, ip in zip(self.ranges, ips, strict=True):
                self._last[str(r)] = ip
            alloc = self._pods[uid] = Allocation(uid=uid, namespace=namespace, name=name, ips=ips)
            try:
                self._save()
            except IpamError:
                del self._pods[uid]
                self._last = before
                raise
            return alloc

    def _next_free(self, net: Network, taken: set[str], *, namespace: str, name: str) -> Address:
        in_range = sum(1 for ip in taken if self._contains(net, ip))
        if in_range >= capacity(net):
            raise ExhaustedError(
                f"no free address in the pod CIDR {net} for pod {namespace}/{name}: all {capacity(net)} are "
                f"held by pods on this node (raise the node's pod CIDR size or run fewer pods)")
        first, last = int(_first(net)), int(_last(net))
        make = type(net.network_address)
        start = first
        prev = self._last.get(str(net))
        if prev is not None and self._contains(net, prev):
            after = int(ipaddress.ip_address(prev)) + 1
            start = after if first <= after <= last else first
        candidate = start
        while str(make(candidate)) in taken:
            candidate = candidate + 1 if candidate < last else first
        return make(candidate)

    @staticmethod
    def _contains(net: Network, ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        return addr.version == net.version and addr in net

    def claim(self, uid: str, *, namespace: str, name: str, ips: Sequence[str]) -> Allocation:
        """Record addresses the pod already holds (its link has them, the state did not): one
        write. Addresses another pod holds are refused (IpamError)."""
        with self._lock:
            clash = {ip: a for a in self._pods.values() if a.uid != uid for ip in a.ips if ip in ips}
            if clash:
                ip, other = next(iter(clash.items()))
                raise IpamError(f"pod {namespace}/{name} holds {ip}, which is recorded for pod "
                                    f"{other.namespace}/{other.name}")
            alloc = Allocation(uid=uid, namespace=namespace, name=name, ips=tuple(ips))
            if self._pods.get(uid) != alloc:
                before = self._pods.get(uid)
                self._pods[uid] = alloc
                try:
                    self._save()
                except IpamError:
                    if before is None:
                        del self._pods[uid]
                    else:
                        self._pods[uid] = before
                    raise
            return alloc

    def release(self, uid: str) -> Allocation | None:
        """Free the pod's addresses (one write; nothing held: nothing written)."""
        with self._lock:
            alloc = self._pods.pop(uid, None)
            if alloc is not None:
                try:
                    self._save()
                except IpamError:
                    self._pods[uid] = alloc
                    raise
            return alloc

    def retain(self, live: Collection[str]) -> list[Allocation]:
        """Release every allocation of a pod not in `live` (one write, if any)."""
        with self._lock:
            gone = [a for uid, a in self._pods.items() if uid not in live]
            if not gone:
                return []
            for a in gone:
                del self._pods[a.uid]
            try:
                self._save()
            except IpamError:
                for a in gone:
                    self._pods[a.uid] = a
                raise
            return gone
