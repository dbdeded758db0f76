"""The kubelet's Node: registration, the Lease heartbeat, and Node status written only on change.

Registration (at boot, before any pod is synced): the Node object is created, or, when it exists
(a restart), its kubelet-owned labels and its status are brought up to date. Its name is the
config's `node-name` or the host name. Labels: `kubernetes.io/hostname`, `kubernetes.io/os`,
`kubernetes.io/arch` and their `beta.` twins, and `node-role.kubernetes.io/control-plane` (this
process is the control plane too, as k3s labels its server). With a pod network, its
`spec.podCIDR`/`spec.podCIDRs` are the network's (set at creation, or added to a Node that has
none; upstream's node IPAM writes them, and never changes them once set).

Status, as upstream's kubelet reports it:
- capacity: `cpu` (CPUs this process may run on), `memory` (MemTotal, or the memory limit of
  edgekube's own cgroup when lower), `pods` (`max-pods`), `ephemeral-storage` (size of the
  filesystem holding the kubelet's root dir), `hugepages-2Mi`/`hugepages-1Gi` (0: not offered).
- allocatable: capacity minus `system-reserved-cpu`, minus `system-reserved-memory` and
  `eviction-hard-memory` for memory, minus `eviction-hard-nodefs-percent` of the storage
  (upstream's Capacity - KubeReserved - SystemReserved - HardEvictionThreshold).
- conditions: MemoryPressure (MemAvailable below `eviction-hard-memory`), DiskPressure (the root
  dir's filesystem with less than `eviction-hard-nodefs-percent` free), PIDPressure (more than 90%
  of `pid_max` in use), Ready (the runtime answered at boot), with upstream's reasons and messages.
- addresses (InternalIP of the interface holding the default route, else an address of this
  network namespace the host name resolves to, else the first address of any other interface,
  such as the pods' bridge in a namespace with no uplink, else 127.0.0.1; Hostname), nodeInfo (machine and boot IDs, kernel, OS image, runc's version as
  `containerRuntimeVersion`, the Kubernetes version served as `kubeletVersion`), the images in
  the image store (the 50 largest, as upstream).

Writes. The Lease in `kube-node-lease` (a memory-tier kind: never written to flash) is renewed
every 10 s; that is the heartbeat the node lifecycle controller watches. The Node status is
computed every 10 s and written only when something other than the heartbeat times changed,
or once the last write is 5 minutes old (upstream's nodeStatusReportFrequency). Condition
`lastTransitionTime` moves only when the condition's status does. So an idle node writes its
Node (to disk) once every 5 minutes and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import datetime
import fcntl
import logging
import os
import socket
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgekube import KUBE_VERSION
from edgekube._cogs import clock as clock_mod
from edgekube.api import errors, pki, quantity
from edgekube.client import local

log = logging.getLogger(__name__)
JSON = dict[str, Any]

LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40
HEARTBEAT_SECONDS = 10.0
STATUS_CHECK_SECONDS = 10.0
STATUS_REPORT_SECONDS = 300.0  # upstream's nodeStatusReportFrequency
MAX_IMAGES = 50
PID_PRESSURE_FRACTION = 0.9
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"


@dataclasses.dataclass(frozen=True)
class Reservations:
    """What is kept from allocatable (bytes and millicores), and the pressure thresholds."""

    cpu_milli: int
    memory: int
    eviction_memory: int
    nodefs_percent: int
    max_pods: int

    @classmethod
    def parse(cls, *, cpu: str, memory: str, eviction_memory: str, nodefs_percent: int,
              max_pods: int) -> Reservations:
        return cls(cpu_milli=quantity.milli(cpu), memory=quantity.whole(memory),
                   eviction_memory=quantity.whole(eviction_memory), nodefs_percent=nodefs_percent,
                   max_pods=max_pods)


@dataclasses.dataclass(frozen=True)
class Machine:
    """What the host is made of and how loaded it is right now (read from /proc, /sys, statvfs)."""

    cpus: int
    memory: int
    memory_available: int
    storage: int
    storage_free: int
    threads: int
    pid_max: int
    machine_id: str
    system_uuid: str
    boot_id: str
    kernel: str
    os_image: str


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in _read("/proc/meminfo").splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[name] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


def _own_memory_limit() -> int | None:
    """The memory limit of the cgroup edgekube runs in (v1 or v2), when one is set."""
    for line in _read("/proc/self/cgroup").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[1] == "" and parts[0] == "0":
            text = _read(f"/sys/fs/cgroup{parts[2]}/memory.max")
        elif "memory" in parts[1].split(","):
            text = _read(f"/sys/fs/cgroup/memory{parts[2]}/memory.limit_in_bytes")
        else:
            continue
        if text.isdigit() and int(text) < (1 << 62):
            return int(text)
    return None


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return "Linux"


def machine(root_dir: Path) -> Machine:
    """A reading of the host (blocking: file reads; call in a thread)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except OSError:
        cpus = os.cpu_count() or 1
    mem = _meminfo()
    total = mem.get("MemTotal", 0)
    limit = _own_memory_limit()
    if limit is not None and 0 < limit < total:
        total = limit
    st = os.statvfs(root_dir)
    threads = 0
    loadavg = _read("/proc/loadavg").split()
    if len(loadavg) >= 4 and "/" in loadavg[3]:
        with contextlib.suppress(ValueError):
            threads = int(loadavg[3].split("/")[1])
    pid_max = int(_read("/proc/sys/kernel/pid_max") or 32768)
    return Machine(
        cpus=cpus, memory=total, memory_available=mem.get("MemAvailable", mem.get("MemFree", 0)),
        storage=st.f_blocks * st.f_frsize, storage_free=st.f_bavail * st.f_frsize, threads=threads, pid_max=pid_max,
        machine_id=_read("/etc/machine-id"), system_uuid=_read("/sys/class/dmi/id/product_uuid").lower(),
        boot_id=_read("/proc/sys/kernel/random/boot_id"), kernel=os.uname().release, os_image=_os_image())


# --- addresses ----------------------------------------------------------------------------------

SIOCGIFADDR = 0x8915


def _default_route_interface() -> str | None:
    for line in _read("/proc/net/route").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000":
            return fields[0]
    return None


def _interface_ipv4(name: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            res = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(res[20:24])


def _is_local(address: str) -> bool:
    """Whether `address` is one of this network namespace's (a bind to it succeeds)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, 0))
        except OSError:
            return False
    return True


def internal_ip() -> str:
    """The node's InternalIP: the address of the interface with the default route, else a
    non-loopback address the host name resolves to that this network namespace has, else the
    first IPv4 address of another interface (in a namespace with no uplink: the pods' bridge),
    else 127.0.0.1 (no traffic is sent)."""
    iface = _default_route_interface()
    if iface:
        ip = _interface_ipv4(iface)
        if ip:
            return ip
    _, addresses = pki.host_identities()
    for a in addresses:
        if not a.startswith("127.") and a != "::1" and _is_local(a):
            return a
    for _, name in socket.if_nameindex():
        if name != "lo":
            ip = _interface_ipv4(name)
            if ip and not ip.startswith("127."):
                return ip
    return "127.0.0.1"


# --- the Node object ----------------------------------------------------------------------------


def _ki(n: int) -> str:
    return f"{max(0, n) // 1024}Ki"


def _milli(m: int) -> str:
    m = max(0, m)
    return str(m // 1000) if m % 1000 == 0 else f"{m}m"


def resources(m: Machine, r: Reservations) -> tuple[JSON, JSON]:
    """(capacity, allocatable)."""
    capacity = {"cpu": str(m.cpus), "memory": _ki(m.memory), "pods": str(r.max_pods),
                "ephemeral-storage": _ki(m.storage), "hugepages-1Gi": "0", "hugepages-2Mi": "0"}
    storage_alloc = m.storage - m.storage * r.nodefs_percent // 100
    allocatable = {"cpu": _milli(m.cpus * 1000 - r.cpu_milli), "memory": _ki(m.memory - r.memory - r.eviction_memory),
                   "pods": str(r.max_pods), "ephemeral-storage": str(max(0, storage_alloc)),
                   "hugepages-1Gi": "0", "hugepages-2Mi": "0"}
    return capacity, allocatable


def pressure(m: Machine, r: Reservations) -> dict[str, bool]:
    return {
        "MemoryPressure": m.memory_available < r.eviction_memory,
        "DiskPressure": bool(m.storage) and m.storage_free * 100 < m.storage * r.nodefs_percent,
        "PIDPressure": bool(m.pid_max) and m.threads > m.pid_max * PID_PRESSURE_FRACTION,
    }


_CONDITION_TEXT = {
    ("MemoryPressure", False): ("KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("MemoryPressure", True): ("KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
    ("DiskPressure", False): ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("DiskPressure", True): ("KubeletHasDiskPressure", "kubelet has disk pressure"),
    ("PIDPressure", False): ("KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("PIDPressure", True): ("KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
    ("Ready", True): ("KubeletReady", "kubelet is posting ready status"),
    ("Ready", False): ("KubeletNotReady", "container runtime is down"),
}


def conditions(flags: Mapping[str, bool], *, ready: bool, now: str, previous: Sequence[JSON]) -> list[JSON]:
    """The four node conditions; lastTransitionTime kept from `previous` when the status holds."""
    before = {c.get("type"): c for c in previous if isinstance(c, dict)}
    out = []
    for kind, value in (("MemoryPressure", flags["MemoryPressure"]), ("DiskPressure", flags["DiskPressure"]),
                        ("PIDPressure", flags["PIDPressure"]), ("Ready", ready)):
        status = "True" if value else "False"
        reason, message = _CONDITION_TEXT[(kind, value)]
        old = before.get(kind) or {}
        transition = old.get("lastTransitionTime") if old.get("status") == status and old.get("lastTransitionTime") else now
        out.append({"type": kind, "status": status, "lastHeartbeatTime": now, "lastTransitionTime": transition,
                    "reason": reason, "message": message})
    return out


def labels(node_name: str, *, arch: str) -> dict[str, str]:
    return {"kubernetes.io/hostname": node_name, "kubernetes.io/os": "linux", "kubernetes.io/arch": arch,
            "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": arch, CONTROL_PLANE_LABEL: "true"}


def _comparable(status: Mapping[str, Any]) -> JSON:
    """A status without the heartbeat times and empty fields (what decides whether a write is
    due)."""
    out = copy.deepcopy({k: v for k, v in status.items() if v not in (None, [], {}, "")})
    for c in out.get("conditions") or []:
        c.pop("lastHeartbeatTime", None)
    return out


class NodeAgent:
    """Registers the Node, renews its Lease, writes its status when it changed."""

    def __init__(self, client: local.LocalClient, *, name: str, clock: clock_mod.Clock, root_dir: Path,
                 reservations: Reservations, arch: str, runtime_version: str,
                 images: Callable[[], list[JSON]] = list, pod_cidrs: Sequence[str] = ()) -> None:
        self._client = client
        self.name = name
        self._clock = clock
        self._root = root_dir
        self._res = reservations
        self._arch = arch
        self._runtime_version = runtime_version
        self._images = images
        self._pod_cidrs = list(pod_cidrs)
        self.ready = True
        self.address = "127.0.0.1"
        self.hostname = socket.gethostname()
        self.allocatable: dict[str, str] = {}
        self._written: JSON | None = None  # the status last written, comparable form
        self._written_at = 0.0
        self._uid = ""

    # --- status ----------------------------------------------------------------------------

    async def desired_status(self, previous: JSON) -> JSON:
        m = await asyncio.to_thread(machine, self._root)
        capacity, allocatable = resources(m, self._res)
        self.allocatable = allocatable
        now = clock_mod.rfc3339(self._clock.now())
        return {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": conditions(pressure(m, self._res), ready=self.ready, now=now,
                                     previous=previous.get("conditions") or []),
            "addresses": [{"type": "InternalIP", "address": self.address}, {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": m.machine_id, "systemUUID": m.system_uuid, "bootID": m.boot_id,
                "kernelVersion": m.kernel, "osImage": m.os_image, "containerRuntimeVersion": self._runtime_version,
                "kubeletVersion": KUBE_VERSION, "kubeProxyVersion": "", "operatingSystem": "linux",
                "architecture": self._arch,
            },
            "images": self._images()[:MAX_IMAGES],
        }

    async def register(self) -> None:
        self.address = await asyncio.to_thread(internal_ip)
        try:
            current = self._client.get("v1", "Node", name=self.name)
        except errors.APIError as exc:
            if exc.code != 404:
                raise
            current = None
        wanted_labels = labels(self.name, arch=self._arch)
        if current is None:
            status = await self.desired_status({})
            node = {"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": self.name, "labels": wanted_labels}, "spec": self._cidr_spec(),
                    "status": status}
            try:
                created = await self._client.create(node)
                self._uid = str(created["metadata"]["uid"])
                if _comparable(created.get("status") or {}) != _comparable(status):
                    await self._write_status(status)
                else:
                    self._written, self._written_at = _comparable(status), self._clock.monotonic()
                log.info("registered node %s", self.name)
                return
            except errors.APIError as exc:
                if exc.code != 409:
                    raise
                current = self._client.get("v1", "Node", name=self.name)
        have = (current.get("metadata") or {}).get("labels") or {}
        cidrs = self._cidr_spec() if not (current.get("spec") or {}).get("podCIDR") else {}
        if any(have.get(k) != v for k, v in wanted_labels.items()) or cidrs:
            def relabel(obj: JSON) -> JSON:
                obj["metadata"].setdefault("labels", {}).update(wanted_labels)
                if not (obj.get("spec") or {}).get("podCIDR"):
                    obj.setdefault("spec", {}).update(cidrs)
                return obj

            current = await self._client.patch("v1", "Node", name=self.name, mutate=relabel)
        self._uid = str(current["metadata"]["uid"])
        await self._write_status(await self.desired_status(current.get("status") or {}))
        log.info("node %s registered again (it existed)", self.name)

    def _cidr_spec(self) -> JSON:
        """The Node's spec fields for the pod network's CIDRs (none without a pod network)."""
        return {"podCIDR": self._pod_cidrs[0], "podCIDRs": list(self._pod_cidrs)} if self._pod_cidrs else {}

    async def _write_status(self, status: JSON) -> None:
        def put(obj: JSON) -> JSON:
            st = obj.setdefault("status", {})
            for k, v in status.items():
                st[k] = v
            return obj

        await self._client.patch("v1", "Node", name=self.name, mutate=put, subresource="status")
        self._written = _comparable(status)
        self._written_at = self._clock.monotonic()

    async def sync_status(self) -> bool:
        """Write the status when it changed (or is due for the periodic report). Returns whether
        it wrote."""
        try:
            current = self._client.get("v1", "Node", name=self.name)
        except errors.APIError as exc:
            if exc.code != 404:
                raise
            log.warning("node %s was deleted; registering it again", self.name)
            await self.register()
            return True
        status = await self.desired_status(current.get("status") or {})
        present = current.get("status") or {}
        have = _comparable({k: present.get(k) for k in status})
        due = self._clock.monotonic() - self._written_at >= STATUS_REPORT_SECONDS
        if not due and _comparable(status) == have:
            return False
        await self._write_status(status)
        return True

    async def status_loop(self) -> None:
        while True:
            await asyncio.sleep(STATUS_CHECK_SECONDS)
            try:
                await self.sync_status()
            except errors.APIError as exc:
                log.warning("node %s: status not written: %s", self.name, exc)

    # --- lease -----------------------------------------------------------------------------

    async def renew_lease(self) -> None:
        now = self._clock.now().astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

        def renew(obj: JSON) -> JSON:
            spec = obj.setdefault("spec", {})
            spec.update(holderIdentity=self.name, leaseDurationSeconds=LEASE_DURATION_SECONDS, renewTime=now)
            return obj

        try:
            await self._client.patch("coordination.k8s.io/v1", "Lease", name=self.name, namespace=LEASE_NAMESPACE,
                                     mutate=renew)
            return
        except errors.APIError as exc:
            if exc.code != 404:
                raise
        owner = [{"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self._uid}] if self._uid else []
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": self.name, "namespace": LEASE_NAMESPACE, "ownerReferences": owner},
                 "spec": {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                          "renewTime": now}}
        try:
            await self._client.create(lease)
        except errors.APIError as exc:
            if exc.code != 409:
                raise

    async def lease_loop(self) -> None:
        while True:
            try:
                await self.renew_lease()
            except errors.APIError as exc:
                log.warning("node %s: lease not renewed: %s", self.name, exc)
            await asyncio.sleep(HEARTBEAT_SECONDS)

