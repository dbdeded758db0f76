"""cgroups for pods and containers: QoS and pod parents, limits from requests and limits, usage,
OOM kills; cgroup v1 through cgroupspy, cgroup v2 through the unified files.

Layout (upstream's with the cgroupfs driver; the parent's name is settable, `kubepods` by default):

    /kubepods                          node level (allocatable)
    /kubepods/pod<uid>                 Guaranteed pods sit directly under the parent
    /kubepods/burstable/pod<uid>       Burstable
    /kubepods/besteffort/pod<uid>      BestEffort (cpu.shares 2)
    /kubepods/<qos...>/pod<uid>/<container id>   made by runc from the absolute `cgroupsPath`

The same relative path exists in every v1 hierarchy (runc joins all of them, the named
`name=systemd` one and the hybrid unified mount included), so a pod's directory is created, and
removed, in each; limits go to cpu, memory and pids. On v2 the path is one directory of the
unified tree, and the parents enable `+cpu +memory +pids` in `cgroup.subtree_control`.

Limits follow upstream's kubelet exactly:
- cpu.shares from the cpu request (`MilliCPUToShares`: milli*1024/1000, at least 2, at most
  262144); a container with only a limit gets shares from its limit; no request gives 2.
- CFS quota from the cpu limit over a 100 ms period (`MilliCPUToQuota`, at least 1 ms); no limit,
  no quota.
- memory limit from the memory limit; pids limit from the kubelet's pod pids limit.
- the pod cgroup (`ResourceConfigForPod`): shares from the pod's requests for every QoS but
  BestEffort (2); quota only when every container declares a cpu limit, memory only when every
  container declares a memory limit (Guaranteed always does).
- v2: cpu.weight = 1 + (shares-2)*9999/262142 (upstream's `CpuSharesToCpuWeight`, 10000 at the
  maximum), cpu.max "<quota> <period>" or "max <period>", memory.max, pids.max.

Usage for metrics: cpu in nanoseconds (v1 cpuacct.usage, v2 cpu.stat usage_usec) and memory
working set = usage minus inactive file pages, floored at 0 (cAdvisor's figure, which kubectl top
and eviction use). OOM kills: the `oom_kill` counter of v1 memory.oom_control (kernel 4.13+) or of
v2 memory.events; the counter outlives the container's processes until the cgroup is removed, so
an OOM kill is visible even for a container that died while edgekube was down.

This kernel cannot mount a pure v2 hierarchy, so `V2` is tested against a directory tree (its
writes are plain file writes; nothing here needs the kernel's cgroupfs except enforcement).
Everything here is blocking file work: callers on the event loop run it in an executor.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from cgroupspy import nodes

from edgekube.api import quantity
from edgekube.api.registry import quota

GUARANTEED = "Guaranteed"
BURSTABLE = "Burstable"
BEST_EFFORT = "BestEffort"

MIN_SHARES = 2
MAX_SHARES = 262144
SHARES_PER_CPU = 1024
QUOTA_PERIOD_US = 100_000
MIN_QUOTA_US = 1000

MOUNTINFO = Path("/proc/self/mountinfo")


class CgroupError(OSError):
    """A cgroup operation failed; the message names the path and what was attempted."""


# --- upstream's formulas ---------------------------------------------------------------------


def milli_cpu_to_shares(milli_cpu: int) -> int:
    """Upstream's MilliCPUToShares."""
    if milli_cpu <= 0:
        return MIN_SHARES
    shares = milli_cpu * SHARES_PER_CPU // 1000
    return max(MIN_SHARES, min(MAX_SHARES, shares))


def milli_cpu_to_quota(milli_cpu: int, *, period: int = QUOTA_PERIOD_US) -> int:
    """Upstream's MilliCPUToQuota: 0 (no quota) for no limit, else at least 1 ms."""
    if milli_cpu <= 0:
        return 0
    return max(MIN_QUOTA_US, milli_cpu * period // 1000)


def shares_to_weight(shares: int) -> int:
    """cgroup v2 cpu.weight for a v1 cpu.shares value (upstream's CpuSharesToCpuWeight)."""
    if shares >= MAX_SHARES:
        return 10000
    return 1 + ((max(shares, MIN_SHARES) - 2) * 9999) // 262142


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a cgroup is limited to; None leaves the cgroup's default (unlimited)."""

    cpu_shares: int | None = None
    cpu_quota: int | None = None  # microseconds per period; None or 0: no quota
    cpu_period: int | None = None
    memory: int | None = None  # bytes
    pids: int | None = None

    def oci(self) -> dict[str, Any]:
        """The OCI `linux.resources` object runc applies to the container's cgroup."""
        out: dict[str, Any] = {}
        cpu: dict[str, Any] = {}
        if self.cpu_shares is not None:
            cpu["shares"] = self.cpu_shares
        if self.cpu_quota:
            cpu["quota"] = self.cpu_quota
            cpu["period"] = self.cpu_period or QUOTA_PERIOD_US
        if cpu:
            out["cpu"] = cpu
        if self.memory:
            out["memory"] = {"limit": self.memory}
        if self.pids is not None and self.pids > 0:
            out["pids"] = {"limit": self.pids}
        return out


def _quantity(values: Any, name: str, *, milli: bool) -> int:
    if not isinstance(values, Mapping) or name not in values:
        return 0
    try:
        return quantity.milli(values[name]) if milli else quantity.whole(values[name])
    except quantity.QuantityError:
        return 0


def container_limits(container: Mapping[str, Any], *, pids_limit: int | None = None) -> Limits:
    """A container's cgroup limits (upstream's calculateLinuxResources)."""
    res = container.get("resources") or {}
    requests, limits = res.get("requests") or {}, res.get("limits") or {}
    cpu_request = _quantity(requests, "cpu", milli=True)
    cpu_limit = _quantity(limits, "cpu", milli=True)
    memory_limit = _quantity(limits, "memory", milli=False)
    # A request left unset with a limit set defaults to the limit (the API does this for new
    # pods; upstream's kubelet repeats it for pods stored before that default existed).
    shares = milli_cpu_to_shares(cpu_limit if cpu_request == 0 and cpu_limit else cpu_request)
    quota = milli_cpu_to_quota(cpu_limit)
    return Limits(cpu_shares=shares, cpu_quota=quota or None, cpu_period=QUOTA_PERIOD_US if quota else None,
                  memory=memory_limit or None, pids=pids_limit)


def pod_limits(pod: Mapping[str, Any], *, pids_limit: int | None = None) -> Limits:
    """The pod cgroup's limits (upstream's ResourceConfigForPod, CFS quota enforced)."""
    qos = qos_class(pod)
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    cpu_declared = all(_quantity((c.get("resources") or {}).get("limits"), "cpu", milli=True) for c in containers)
    memory_declared = all(_quantity((c.get("resources") or {}).get("limits"), "memory", milli=False)
                          for c in containers)
    requests = quota.pod_resources(dict(pod), "requests", overhead=True)
    limits = quota.pod_resources(dict(pod), "limits", overhead=True)
    cpu_requests = quantity.milli(str(requests["cpu"])) if "cpu" in requests else 0
    cpu_limits = quantity.milli(str(limits["cpu"])) if "cpu" in limits else 0
    memory_limits = quantity.whole(str(limits["memory"])) if "memory" in limits else 0
    shares = milli_cpu_to_shares(cpu_requests)
    quota_us = milli_cpu_to_quota(cpu_limits)
    if qos == GUARANTEED:
        return Limits(cpu_shares=shares, cpu_quota=quota_us or None, cpu_period=QUOTA_PERIOD_US,
                      memory=memory_limits or None, pids=pids_limit)
    if qos == BURSTABLE:
        return Limits(cpu_shares=shares,
                      cpu_quota=(quota_us or None) if cpu_declared else None,
                      cpu_period=QUOTA_PERIOD_US if cpu_declared else None,
                      memory=(memory_limits or None) if memory_declared else None, pids=pids_limit)
    return Limits(cpu_shares=MIN_SHARES, pids=pids_limit)


def burstable_shares(pods: Sequence[Mapping[str, Any]]) -> int:
    """cpu.shares of the burstable parent: the cpu requests of its pods (upstream's QoS manager
    keeps it so, so that burstable pods as a whole get their share against Guaranteed ones)."""
    total = 0
    for p in pods:
        if qos_class(p) == BURSTABLE:
            req = quota.pod_resources(dict(p), "requests", overhead=True)
            total += quantity.milli(str(req["cpu"])) if "cpu" in req else 0
    return milli_cpu_to_shares(total)


def qos_class(pod: Mapping[str, Any]) -> str:
    return quota.qos_class(dict(pod))


def oom_score_adj(pod: Mapping[str, Any], container: Mapping[str, Any], *, memory_capacity: int) -> int:
    """Upstream's GetContainerOOMScoreAdjust (node-critical pods aside)."""
    qos = qos_class(pod)
    if qos == GUARANTEED:
        return -997
    if qos == BEST_EFFORT:
        return 1000
    request = _quantity((container.get("resources") or {}).get("requests"), "memory", milli=False)
    if memory_capacity <= 0:
        return 999
    adj = 1000 - (1000 * request) // memory_capacity
    # Below a Guaranteed pod's 1000-997, and never level with BestEffort.
    return max(3, min(999, adj))


_CAP_SYS_RESOURCE = 24


def oom_score_adj_floor(*, status: Path = Path("/proc/self/status"),
                        own: Path = Path("/proc/self/oom_score_adj")) -> int | None:
    """The lowest `oom_score_adj` this process can give its children: None (any) when it holds
    CAP_SYS_RESOURCE, else its own value (the kernel refuses a lower one: in LXC, in containers,
    on hosts that drop the capability, runc would fail the container's start). containerd's
    `restrict_oom_score_adj` clamps to the same floor."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                if int(line.split()[1], 16) & (1 << _CAP_SYS_RESOURCE):
                    return None
                break
        return int(own.read_text())
    except (OSError, ValueError, IndexError):
        return None


# --- paths -----------------------------------------------------------------------------------


def pod_cgroup_path(pod_uid: str, qos: str, *, parent: str = "kubepods") -> str:
    """The pod's cgroup, as an absolute cgroup path ("/kubepods/burstable/pod<uid>")."""
    base = "/" + parent.strip("/")
    if qos == GUARANTEED:
        return f"{base}/pod{pod_uid}"
    return f"{base}/{qos.lower()}/pod{pod_uid}"


def container_cgroup_path(pod_path: str, container_id: str) -> str:
    """The absolute `cgroupsPath` runc gets for a container of the pod."""
    return f"{pod_path.rstrip('/')}/{container_id}"


@dataclasses.dataclass(frozen=True)
class Usage:
    cpu_ns: int
    memory_usage: int
    memory_working_set: int


class Cgroups(Protocol):
    """What the kubelet needs from either cgroup version."""

    version: int
    parent: str

    def ensure_parents(self, *, allocatable: Limits | None = None) -> None: ...
    def ensure_pod(self, pod_uid: str, *, qos: str, limits: Limits) -> str: ...
    def set_limits(self, path: str, limits: Limits) -> None: ...
    def remove(self, path: str) -> None: ...
    def exists(self, path: str) -> bool: ...
    def pods(self) -> dict[str, str]: ...
    def usage(self, path: str) -> Usage: ...
    def oom_kills(self, path: str) -> int: ...
    def procs(self, path: str) -> list[int]: ...
    def dirs(self, path: str) -> list[Path]: ...


# --- mount discovery -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CgroupMount:
    mountpoint: Path
    version: int
    controllers: tuple[str, ...]  # v1: from the super options ("cpu", "cpuacct", "name=systemd")


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def cgroup_mounts(mountinfo: Path = MOUNTINFO) -> list[CgroupMount]:
    """Every cgroup mount of this mount namespace (a hierarchy mounted twice counted once)."""
    seen: set[tuple[int, tuple[str, ...]]] = set()
    out: list[CgroupMount] = []
    for line in mountinfo.read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3 or rfields[0] not in ("cgroup", "cgroup2"):
            continue
        if fields[3] != "/":  # a bind of a sub-tree (e.g. inside a container): not a root
            continue
        version = 2 if rfields[0] == "cgroup2" else 1
        ctrls: tuple[str, ...] = ()
        if version == 1:
            ctrls = tuple(sorted(o for o in rfields[2].split(",") if o not in ("rw", "ro") and (
                o.startswith("name=") or "=" not in o) and o not in (
                "relatime", "noatime", "nosuid", "nodev", "noexec", "clone_children", "noprefix",
                "xattr", "cpuset_v2_mode", "favordynmods")))
        key = (version, ctrls)
        if key in seen:
            continue
        seen.add(key)
        out.append(CgroupMount(Path(_unescape(fields[4])), version, ctrls))
    return out


def detect(*, parent: str = "kubepods", mountinfo: Path = MOUNTINFO) -> Cgroups:
    """The machine's cgroup setup: V2 when /sys/fs/cgroup is a pure unified hierarchy, else V1
    over every v1 hierarchy (plus the hybrid unified mount, which runc joins too)."""
    mounts = cgroup_mounts(mountinfo)
    for m in mounts:
        if m.version == 2 and m.mountpoint == Path("/sys/fs/cgroup"):
            return V2(root=m.mountpoint, parent=parent)
    v1 = [m for m in mounts if m.version == 1]
    if not v1:
        raise CgroupError(errno.ENOENT, "no cgroup hierarchy is mounted (looked in /proc/self/mountinfo)")
    return V1(mounts=mounts, parent=parent)


# --- shared file helpers ---------------------------------------------------------------------


def _write(path: Path, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise CgroupError(exc.errno or errno.EIO, f"cannot write {value!r} to {path}: {exc.strerror}") from exc


def _read(path: Path) -> str:
    return path.read_text()


def _keyed(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def _rel(path: str) -> str:
    rel = path.strip("/")
    if not rel or ".." in rel.split("/"):
        raise CgroupError(errno.EINVAL, f"cgroup path {path!r} must be absolute, below the root, without '..'")
    return rel


def _remove_tree(dirs: Sequence[Path], *, procs_file: str = "cgroup.procs", attempts: int = 50) -> None:
    """rmdir each directory bottom-up; processes still inside are SIGKILLed first (a cgroup
    cannot be removed while it has members), and the removal is retried while they die."""
    for top in dirs:
        if not top.is_dir():
            continue
        tree = sorted((p for p in _walk_dirs(top)), key=lambda p: len(p.parts), reverse=True)
        for d in tree:
            for attempt in range(attempts):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or attempt == attempts - 1:
                        raise CgroupError(exc.errno or errno.EIO, f"cannot remove cgroup {d}: {exc.strerror}") from exc
                    _kill_members(d / procs_file)
                    time.sleep(0.02)


def _walk_dirs(top: Path) -> Iterator[Path]:
    yield top
    try:
        entries = list(os.scandir(top))
    except FileNotFoundError:
        return
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            yield from _walk_dirs(Path(e.path))


def _kill_members(procs: Path) -> None:
    try:
        pids = [int(p) for p in procs.read_text().split()]
    except (OSError, ValueError):
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --- cgroup v1 -------------------------------------------------------------------------------


class V1:
    """cgroup v1: one cgroupspy node per hierarchy; the pod path is made in each."""

    version = 1

    def __init__(self, *, mounts: Sequence[CgroupMount], parent: str = "kubepods") -> None:
        self.parent = parent.strip("/")
        self._roots: dict[tuple[str, ...], Any] = {}
        self._by_controller: dict[str, Path] = {}
        self._unified: Path | None = None
        for m in mounts:
            if m.version == 2:
                # Hybrid: the unified mount beside v1 holds no controllers we limit, but runc
                # makes the container's directory there too, so pods get one to be removed.
                self._unified = m.mountpoint
                continue
            self._roots[m.controllers] = self._node_for(m)
            for c in m.controllers:
                self._by_controller[c] = m.mountpoint

    @staticmethod
    def _node_for(m: CgroupMount) -> Any:
        root = nodes.Node(os.fsencode(m.mountpoint.parent))
        node = nodes.Node(os.fsencode(m.mountpoint.name), parent=root)
        # cgroupspy picks the controller from the directory's name; a co-mounted hierarchy
        # ("cpu,cpuacct") gets the first controller cgroupspy knows among its controllers.
        if node.controller is None:
            for c in m.controllers:
                cls = nodes.Node.CONTROLLERS.get(c.encode())
                if cls is not None:
                    node.controller_type = c.encode()
                    node.controller = cls(node)
                    break
        return node

    def _hierarchies(self) -> list[Path]:
        out = [Path(os.fsdecode(n.full_path)) for n in self._roots.values()]
        if self._unified is not None:
            out.append(self._unified)
        return out

    def _dir(self, controller: str, path: str) -> Path:
        mount = self._by_controller.get(controller)
        if mount is None:
            raise CgroupError(errno.ENOENT, f"the {controller} cgroup controller is not mounted")
        return mount / _rel(path)

    def _make(self, rel: str) -> None:
        """mkdir -p `rel` in every hierarchy through cgroupspy, copying cpuset's cpus and mems
        down (a new cpuset cgroup starts empty and could hold no process)."""
        for ctrls, root in self._roots.items():
            node = root
            for part in rel.split("/"):
                child = nodes.Node(part.encode(), parent=node)
                if not os.path.isdir(child.full_path):
                    try:
                        child = node.create_cgroup(part.encode())
                    except OSError as exc:
                        raise CgroupError(exc.errno or errno.EIO,
                                          f"cannot create cgroup {os.fsdecode(child.full_path)}: {exc.strerror}") from exc
                    if "cpuset" in ctrls:
                        for f in ("cpuset.cpus", "cpuset.mems"):
                            value = _read(Path(os.fsdecode(node.full_path)) / f).strip()
                            _write(Path(os.fsdecode(child.full_path)) / f, value)
                node = child
        if self._unified is not None:
            (self._unified / rel).mkdir(parents=True, exist_ok=True)

    def ensure_parents(self, *, allocatable: Limits | None = None) -> None:
        self._make(self.parent)
        for qos in ("burstable", "besteffort"):
            self._make(f"{self.parent}/{qos}")
        if allocatable is not None:
            self.set_limits("/" + self.parent, allocatable)
        self.set_limits(f"/{self.parent}/besteffort", Limits(cpu_shares=MIN_SHARES))

    def ensure_pod(self, pod_uid: str, *, qos: str, limits: Limits) -> str:
        path = pod_cgroup_path(pod_uid, qos, parent=self.parent)
        self._make(_rel(path))
        self.set_limits(path, limits)
        return path

    def set_limits(self, path: str, limits: Limits) -> None:
        cpu = self._controller_node("cpu", path)
        if limits.cpu_shares is not None:
            cpu.controller.shares = limits.cpu_shares
        if limits.cpu_quota is not None or limits.cpu_period is not None:
            if limits.cpu_period:
                cpu.controller.cfs_period_us = limits.cpu_period
            cpu.controller.cfs_quota_us = limits.cpu_quota if limits.cpu_quota else -1
        if limits.memory is not None:
            mem = self._controller_node("memory", path)
            mem.controller.limit_in_bytes = limits.memory if limits.memory > 0 else -1
        if limits.pids is not None and "pids" in self._by_controller:
            # cgroupspy has no pids controller: the file directly.
            _write(self._dir("pids", path) / "pids.max", str(limits.pids) if limits.pids > 0 else "max")

    def _controller_node(self, controller: str, path: str) -> Any:
        for ctrls, root in self._roots.items():
            if controller in ctrls:
                node = root
                for part in _rel(path).split("/"):
                    node = nodes.Node(part.encode(), parent=node)
                if not os.path.isdir(node.full_path):
                    raise CgroupError(errno.ENOENT, f"cgroup {os.fsdecode(node.full_path)} does not exist")
                return node
        raise CgroupError(errno.ENOENT, f"the {controller} cgroup controller is not mounted")

    def remove(self, path: str) -> None:
        rel = _rel(path)
        _remove_tree([h / rel for h in self._hierarchies()])

    def exists(self, path: str) -> bool:
        rel = _rel(path)
        return any((h / rel).is_dir() for h in self._hierarchies())

    def dirs(self, path: str) -> list[Path]:
        rel = _rel(path)
        return [h / rel for h in self._hierarchies() if (h / rel).is_dir()]

    def pods(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for h in self._hierarchies():
            for qos_dir in ("", "burstable", "besteffort"):
                base = h / self.parent / qos_dir if qos_dir else h / self.parent
                if not base.is_dir():
                    continue
                for e in os.scandir(base):
                    if e.is_dir() and e.name.startswith("pod"):
                        found.setdefault(e.name[3:], "/" + str(Path(e.path).relative_to(h)))
        return found

    def procs(self, path: str) -> list[int]:
        pids: set[int] = set()
        for d in self.dirs(path):
            for sub in _walk_dirs(d):
                try:
                    pids.update(int(p) for p in (sub / "cgroup.procs").read_text().split())
                except (OSError, ValueError):
                    continue
        return sorted(pids)

    def usage(self, path: str) -> Usage:
        cpu_ns = int(_read(self._dir("cpuacct", path) / "cpuacct.usage").strip())
        mem_dir = self._dir("memory", path)
        usage = int(_read(mem_dir / "memory.usage_in_bytes").strip())
        stat = _keyed(_read(mem_dir / "memory.stat"))
        inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
        return Usage(cpu_ns=cpu_ns, memory_usage=usage, memory_working_set=max(0, usage - inactive))

    def oom_kills(self, path: str) -> int:
        try:
            return _keyed(_read(self._dir("memory", path) / "memory.oom_control")).get("oom_kill", 0)
        except FileNotFoundError:
            return 0


# --- cgroup v2 -------------------------------------------------------------------------------


class V2:
    """cgroup v2 through the unified files, under `root` (/sys/fs/cgroup, or a test's tree)."""

    version = 2
    CONTROLLERS = ("cpu", "memory", "pids")

    def __init__(self, *, root: Path, parent: str = "kubepods") -> None:
        self.root = root
        self.parent = parent.strip("/")

    def _dir(self, path: str) -> Path:
        return self.root / _rel(path)

    def _make(self, rel: str) -> None:
        d = self.root
        for part in rel.split("/"):
            # A controller is usable in a child only when its parent delegates it.
            self._enable_controllers(d)
            d = d / part
            d.mkdir(exist_ok=True)

    def _enable_controllers(self, d: Path) -> None:
        control = d / "cgroup.subtree_control"
        try:
            enabled = set(control.read_text().split())
        except FileNotFoundError:
            enabled = set()
        missing = [c for c in self.CONTROLLERS if c not in enabled]
        if missing:
            _write(control, " ".join(f"+{c}" for c in missing))

    def ensure_parents(self, *, allocatable: Limits | None = None) -> None:
        self._make(self.parent)
        for qos in ("burstable", "besteffort"):
            self._make(f"{self.parent}/{qos}")
        self._enable_controllers(self._dir(self.parent))
        for qos in ("burstable", "besteffort"):
            self._enable_controllers(self._dir(f"{self.parent}/{qos}"))
        if allocatable is not None:
            self.set_limits("/" + self.parent, allocatable)
        self.set_limits(f"/{self.parent}/besteffort", Limits(cpu_shares=MIN_SHARES))

    def ensure_pod(self, pod_uid: str, *, qos: str, limits: Limits) -> str:
        path = pod_cgroup_path(pod_uid, qos, parent=self.parent)
        self._make(_rel(path))
        self._enable_controllers(self._dir(path))
        self.set_limits(path, limits)
        return path

    def set_limits(self, path: str, limits: Limits) -> None:
        d = self._dir(path)
        if not d.is_dir():
            raise CgroupError(errno.ENOENT, f"cgroup {d} does not exist")
        if limits.cpu_shares is not None:
            _write(d / "cpu.weight", str(shares_to_weight(limits.cpu_shares)))
        if limits.cpu_quota is not None or limits.cpu_period is not None:
            period = limits.cpu_period or QUOTA_PERIOD_US
            _write(d / "cpu.max", f"{limits.cpu_quota if limits.cpu_quota else 'max'} {period}")
        if limits.memory is not None:
            _write(d / "memory.max", str(limits.memory) if limits.memory > 0 else "max")
        if limits.pids is not None:
            _write(d / "pids.max", str(limits.pids) if limits.pids > 0 else "max")

    def remove(self, path: str) -> None:
        _remove_tree([self._dir(path)])

    def exists(self, path: str) -> bool:
        return self._dir(path).is_dir()

    def dirs(self, path: str) -> list[Path]:
        d = self._dir(path)
        return [d] if d.is_dir() else []

    def pods(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for qos_dir in ("", "burstable", "besteffort"):
            base = self.root / self.parent / qos_dir if qos_dir else self.root / self.parent
            if base.is_dir():
                for e in os.scandir(base):
                    if e.is_dir() and e.name.startswith("pod"):
                        found.setdefault(e.name[3:], "/" + str(Path(e.path).relative_to(self.root)))
        return found

    def procs(self, path: str) -> list[int]:
        pids: set[int] = set()
        for d in self.dirs(path):
            for sub in _walk_dirs(d):
                try:
                    pids.update(int(p) for p in (sub / "cgroup.procs").read_text().split())
                except (OSError, ValueError):
                    continue
        return sorted(pids)

    def usage(self, path: str) -> Usage:
        d = self._dir(path)
        cpu_ns = _keyed(_read(d / "cpu.stat")).get("usage_usec", 0) * 1000
        usage = int(_read(d / "memory.current").strip())
        inactive = _keyed(_read(d / "memory.stat")).get("inactive_file", 0)
        return Usage(cpu_ns=cpu_ns, memory_usage=usage, memory_working_set=max(0, usage - inactive))

    def oom_kills(self, path: str) -> int:
        try:
            return _keyed(_read(self._dir(path) / "memory.events")).get("oom_kill", 0)
        except FileNotFoundError:
            return 0
