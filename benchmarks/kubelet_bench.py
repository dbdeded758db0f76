"""Section 6: the kubelet (issue 5), each figure against a baseline measured in the same run.

Every server here is `edgekube server` with its kubelet and its pod network on (root, real runc,
a bridge and a veth per pod), on a private data dir, kubelet root, pod log dir and cgroup parent
(`edgekube-bench-<label>-<random>`), all swept after the run whatever happened (`KubeletHost.cleanup`): the kubelet's containers outlive the
server on purpose, so the benchmark removes them, their mounts, cgroups and network namespaces
itself. The image is busybox built with umoci from Debian's busybox-static (as the tests build
it), handed to the server as a docker-archive tarball in `DATA/images/` (boot import, no network)
and used with `imagePullPolicy: IfNotPresent`; pods run `sleep 3600` with no requests. The whole
run happens inside a network namespace of its own with no uplink (tests/support/netns.py; the
network rule holds for benchmarks too): the servers, their clients, the baselines; deleting it
at the end takes every link the pod network made.

- Pod startup: pods POSTed one after another, each waited for until the watch shows it Running
  (the headline: upstream's density test measures it so), then the same number POSTed at once.
  A watch on the namespace timestamps each pod's first sight (in the store), first sight bound
  (`spec.nodeName`), first sight with `status.containerStatuses` (the kubelet's first status
  write, made once the sandbox and volumes are set up) and first sight Running. The server runs
  through `kubelet_server.py` with `edgekube.kubelet.runtime.containers` at DEBUG, whose one line
  per container start gives the container's own phases (rootfs overlay mount, config.json and
  FIFOs, runc create, runc start), ending at the line's time; the rest is computed from the
  watch. `edgekube.net.podnet` at DEBUG gives the network stage of each pod on its own (its
  address written, the veth pair made into the pod's namespace, eth0 configured; part of the
  sandbox stage), against the same links made by `ip` (one `ip -batch` on the node and one inside
  the pod's namespace, on a bridge of its own) for each of as many fresh namespaces. Baseline: `runc run -d` of a bundle from `runc spec` running the same `sleep 3600` on
  the same image unpacked by umoci, in a cgroup of its own, one after another (and as many at
  once for the burst); for information, also of the kubelet's own config.json (with and without
  its seccomp profile), which tells runc's share from edgekube's.
- Deployment 0 -> 100: one PATCH of the `scale` subresource, to 100 pods Running on the watch.
  Baseline: 100 `runc run -d` at once.
- RSS (VmRSS, with its anonymous and file-backed parts) of the server idle (after settling,
  before any pod) and with the 100 pods running (after settling). Baseline: the bare aiohttp
  server's RSS. A fresh interpreter importing the server's dependencies layer by layer tells
  what each import costs; when idle is over target, a diagnostic run of the server under
  tracemalloc tells where the Python heap goes.
- Boot: from exec of `python -m edgekube server` to `/readyz` answering ok (the kubelet's gate
  opens once its Node is registered Ready; the Node's Ready condition is then read through the
  API), polled every 10 ms on one keep-alive connection; restarts on the same data dir (the
  case of a device rebooting) and, for information, the first boot of a fresh data dir (TLS
  material generated) and a boot without a bytecode cache. Baseline: exec of the bare aiohttp
  server to its first answer. Bytecode is cached in a private `PYTHONPYCACHEPREFIX` (warmed by an
  unmeasured boot), as an installed edgekube would have it. Where the time goes: one boot through
  the launcher (its `edgekube imported` line and the server's own log lines), and one under
  `python -X importtime`.
- Power cut and offline boot (issue 16): a Deployment of 20 pods Running, then three times the
  server and every container killed at once, every mount, cgroup, link and nft table gone, /run
  emptied, the disk as it was (`tests.support.kubelet.power_cut`), and the server started again
  with no uplink: from exec until every pod runs again, ready, in a new container. Target: 2 s.
  Baseline: 20 `runc run -d` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import math
import os
import re
import secrets
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from benchmarks import common, servers
from benchmarks import controlplane_bench as cp
from edgekube.kubelet.runtime import cgroups
from edgekube.kubelet.runtime import containers as containers_mod
from tests.support import images as test_images
from tests.support import kubelet as test_kubelet
from tests.support import netns as netns_mod

JSON = dict[str, Any]
NAMESPACE = "kubelet-bench"
IMAGE = "bench.local/busybox:1.0"
DEPLOYMENT = "bench"
CONTAINERS_LOGGER = "edgekube.kubelet.runtime.containers"
NETWORK_LOGGER = "edgekube.net.podnet"
LAUNCHER = Path(__file__).with_name("kubelet_server.py")
POLL_S = 0.01  # readiness polling interval of the boot measurement
TIMEOUT = 180.0
WARM_UP_PODS = 2
IDLE_TARGET_MIB = 64.0  # issue 5; over it, a diagnostic run tells where the memory goes
REBOOT_PODS = 20  # issue 16: every pod Running again <= 2 s after edgekube starts on a rebooted node
REBOOT_TARGET_S = 2.0

_LOG_TIME = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
_START_LINE = re.compile(
    _LOG_TIME + r" DEBUG " + re.escape(CONTAINERS_LOGGER) + r": container \w+ \(pod ([^/]+)/([^,]+), [^)]+\) "
    r"started in ([\d.]+) ms: rootfs ([\d.]+) ms, config ([\d.]+) ms, runc create ([\d.]+) ms, runc start ([\d.]+) ms")
_NETWORK_LINE = re.compile(
    _LOG_TIME + r" DEBUG " + re.escape(NETWORK_LOGGER) + r": pod ([^/]+)/(\S+): network set up in ([\d.]+) ms")
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


# --- results --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ContainerPhases:
    """From the kubelet's debug line: the container's own start, in ms."""

    began_ms: float  # relative to the pod's POST
    total_ms: float  # rootfs mount -> runc start returned (includes the hop between create and start)
    rootfs_ms: float
    config_ms: float
    runc_create_ms: float
    runc_start_ms: float


@dataclasses.dataclass(frozen=True)
class PodStart:
    """One pod, ms from just before its POST."""

    name: str
    t0_wall: float  # unix time just before the POST
    posted_ms: float  # POST answered
    seen_ms: float  # first sight on the watch
    bound_ms: float  # ... with spec.nodeName
    status_ms: float  # ... with status.containerStatuses (the kubelet's first status write)
    running_ms: float  # ... Running
    phases: ContainerPhases | None = None

    def stages(self) -> dict[str, float]:
        """Where this pod's time went, ms, by STAGES (NaN for the log's without its line)."""
        out = {"api": self.seen_ms, "scheduling": self.bound_ms - self.seen_ms, "sandbox": self.status_ms - self.bound_ms}
        p = self.phases
        if p is None:
            return {k: out.get(k, math.nan) for k in STAGES}
        out.update({
            "before container": p.began_ms - self.status_ms,
            "rootfs": p.rootfs_ms, "config": p.config_ms, "runc create": p.runc_create_ms,
            "runc start": p.runc_start_ms,
            "create -> start": p.total_ms - p.rootfs_ms - p.config_ms - p.runc_create_ms - p.runc_start_ms,
            "status back": self.running_ms - p.began_ms - p.total_ms,
        })
        return out


# Each stage ends where the next begins; [log] ones come from the kubelet's debug line.
STAGES: dict[str, str] = {
    "api": "POST -> the pod seen on the watch (admission, durable write, watch)",
    "scheduling": "-> seen with `spec.nodeName` (scheduler's informer and cycle, binding write)",
    "sandbox": "-> seen with the kubelet's first status (pod informer and worker, pod cgroup, network "
               "namespace, pod network, hosts/hostname/resolv.conf, volumes, status write)",
    "before container": "-> the container's set-up begins (image lookup, env, termination log) [log]",
    "rootfs": "bundle directories and overlay mount [log]",
    "config": "config.json built and written, log FIFOs, back on the loop [log]",
    "runc create": "`runc create` [log]",
    "create -> start": "log copiers, exit watch, the Created event [log]",
    "runc start": "`runc start`, status.json [log]",
    "status back": "-> seen Running (pod status computed and written, watch)",
}
# The split of the summary: groups of stages.
GROUPS: dict[str, tuple[str, ...]] = {
    "API": ("api",),
    "scheduling": ("scheduling",),
    "kubelet set-up": ("sandbox", "before container"),
    "container": ("rootfs", "config", "runc create", "create -> start", "runc start"),
    "runc": ("runc create", "runc start"),
    "status back": ("status back",),
}


def group_medians(starts: list[PodStart]) -> dict[str, float]:
    """Median over pods of each group's ms (NaN when no pod had its log line)."""
    with_lines = [p.stages() for p in starts if p.phases is not None]
    return {g: common.percentile([sum(st[k] for k in keys) for st in with_lines], 50) for g, keys in GROUPS.items()}


@dataclasses.dataclass(frozen=True)
class ScaleRun:
    replicas: int
    created_s: float
    bound_s: float
    running_s: float
    down_s: float


@dataclasses.dataclass(frozen=True)
class Rss:
    rss_kib: int
    anon_kib: int
    file_kib: int

    @property
    def mib(self) -> float:
        return self.rss_kib / 1024.0

    def text(self) -> str:
        return f"{self.mib:.1f} MiB (anon {self.anon_kib / 1024:.1f}, file {self.file_kib / 1024:.1f})"


@dataclasses.dataclass(frozen=True)
class BootRun:
    ready_s: float  # exec -> /readyz ok seen
    imported_s: float | None  # exec -> `edgekube imported` (launcher runs only)
    serving_s: float | None  # exec -> "edgekube API serving" logged
    node_s: float | None  # exec -> "kubelet: node ... is Ready" logged


@dataclasses.dataclass(frozen=True)
class ImportCost:
    label: str
    rss_mib: float  # after this step, cumulative
    modules: int


@dataclasses.dataclass(frozen=True)
class PodsResult:
    pods: int
    sequential: list[PodStart]
    burst: list[PodStart]
    raw_sequential_ms: list[float]  # `runc spec` bundles, one after another
    raw_kubelet_ms: list[float]  # the kubelet's config.json (see RawRunc.kubelet_spec)
    raw_kubelet_noseccomp_ms: list[float]  # ... without its seccomp profile
    raw_burst_s: float  # `pods` runc run -d at once, until the last returned
    scale: ScaleRun
    raw_scale_s: float  # `scale.replicas` runc run -d at once
    idle: Rss
    loaded: Rss  # with the Deployment's pods running
    after: Rss  # once they are gone again
    settle_s: float
    network_seq_ms: list[float] = dataclasses.field(default_factory=list)  # the network stage, one after another
    network_burst_ms: list[float] = dataclasses.field(default_factory=list)  # ... POSTed at once
    raw_network_ms: list[float] = dataclasses.field(default_factory=list)  # the same links made by `ip`

    def seq_ms(self) -> list[float]:
        return [p.running_ms for p in self.sequential]

    def burst_ms(self) -> list[float]:
        return [p.running_ms for p in self.burst]


@dataclasses.dataclass
class BootResult:
    first: BootRun | None = None  # a fresh data dir
    restart: list[BootRun] = dataclasses.field(default_factory=list)
    split: BootRun | None = None  # a restart through the launcher
    uncached: BootRun | None = None  # a restart without a bytecode cache for edgekube
    bare_s: list[float] = dataclasses.field(default_factory=list)
    bare_rss: Rss | None = None
    python_s: float = 0.0  # `python -c pass`
    import_by_package: list[tuple[str, float]] = dataclasses.field(default_factory=list)  # self ms
    import_top: list[tuple[str, float, float]] = dataclasses.field(default_factory=list)  # module, self, cumulative
    import_total_ms: float = 0.0
    import_modules: int = 0

    @property
    def ready_median(self) -> float:
        return float(statistics.median(r.ready_s for r in self.restart))

    @property
    def ready_worst(self) -> float:
        return max(r.ready_s for r in self.restart)

    @property
    def bare_median(self) -> float:
        return float(statistics.median(self.bare_s))


@dataclasses.dataclass
class RebootResult:
    """Power cuts of a node running `pods` pods, each followed by a boot with no network."""

    pods: int
    ready_s: list[float] = dataclasses.field(default_factory=list)  # exec -> /readyz ok
    running_s: list[float] = dataclasses.field(default_factory=list)  # exec -> every pod Running again
    raw_s: list[float] = dataclasses.field(default_factory=list)  # as many `runc run -d` at once

    @property
    def median(self) -> float:
        return float(statistics.median(self.running_s))

    @property
    def worst(self) -> float:
        return max(self.running_s)


@dataclasses.dataclass
class BinaryResult:
    """The shipped binary (`make binary`: dist/edgekube) booted and idle as the interpreted server
    is, kubelet on, in the same run."""

    path: str
    size_mib: float
    first_s: float  # exec -> /readyz ok on a fresh data dir (the first start of this build)
    restart_s: list[float] = dataclasses.field(default_factory=list)  # ... restarts
    idle: Rss | None = None  # every process of the server (a onefile's bootstrap with its payload)
    processes: int = 0

    @property
    def median(self) -> float:
        return float(statistics.median(self.restart_s))

    @property
    def worst(self) -> float:
        return max(self.restart_s)


@dataclasses.dataclass(frozen=True)
class KubeletResult:
    pods: PodsResult
    boot: BootResult
    import_rss: list[ImportCost]
    heap: JSON | None  # tracemalloc by owner of an idle server, when its RSS was over target
    reboot: RebootResult | None = None
    binary: BinaryResult | None = None


# --- the host: private dirs and cgroup parent, swept after the run ---------------------------


class KubeletHost:
    """What one kubelet server owns on the host: a data dir (kubelet root inside), a pod log dir,
    a cgroup parent of its own; `cleanup()` leaves none of it (after the server stopped)."""

    def __init__(self, work: Path, label: str) -> None:
        self.work = work / label
        self.work.mkdir(parents=True)
        self.parent = f"edgekube-bench-{label}-{secrets.token_hex(4)}"
        self.data_dir = self.work / "data"
        self.kubelet_dir = self.data_dir / "kubelet"
        self.config = self.work / "config.yaml"
        settings = {"pod-log-dir": str(self.work / "pod-logs"), "cgroup-parent": self.parent}
        self.config.write_text(yaml.safe_dump({"kubelet": settings}))

    def server(self, *, env: dict[str, str], launcher: list[str] | None = None) -> servers.EdgekubeServer:
        # network=True: this section runs inside a network namespace of its own (the network rule).
        return servers.EdgekubeServer(self.data_dir, extra=["--config", str(self.config)], kubelet=True,
                                      launcher=launcher, env=env, network=True)

    def cleanup(self) -> None:
        """Nothing of the server left on the host (after it stopped)."""
        test_kubelet.sweep_host(kubelet_dir=self.kubelet_dir, parent=self.parent, below=self.work)


# --- raw runc, the baseline ----------------------------------------------------------------------


class RawRunc:
    """`runc run -d` of bundles, each in a cgroup under a parent of its own, stdio on /dev/null:
    by default the bundle of `runc spec` running `sleep 3600` on the unpacked image (no
    terminal); `kubelet_spec` makes one from the config.json the kubelet wrote instead."""

    def __init__(self, work: Path, rootfs: Path) -> None:
        self.work = work
        self.rootfs = rootfs
        self.root = work / "runc"
        self.root.mkdir(parents=True)
        self.parent = f"edgekube-bench-raw-{secrets.token_hex(4)}"
        template = work / "template"
        template.mkdir()
        subprocess.run(["runc", "spec", "--bundle", str(template)], check=True, capture_output=True)
        spec = json.loads((template / "config.json").read_text())
        spec["process"]["terminal"] = False
        spec["process"]["args"] = ["sleep", "3600"]
        spec["root"] = {"path": str(rootfs), "readonly": True}
        self.spec: JSON = spec
        self.ids: list[str] = []

    def kubelet_spec(self, config: JSON, *, kubelet_root: Path, seccomp: bool = True) -> JSON:
        """The kubelet's config.json on the unpacked image: without the pod's files (hosts,
        resolv.conf, termination log: bind mounts from the kubelet's root) and with a network
        namespace of its own instead of the pod's (runc makes it)."""
        spec = json.loads(json.dumps(config))
        spec["root"] = {**spec["root"], "path": str(self.rootfs)}
        spec["mounts"] = [m for m in spec.get("mounts") or []
                          if not Path(str(m.get("source") or "/")).is_relative_to(kubelet_root)]
        linux = spec["linux"]
        linux["namespaces"] = [{"type": n["type"]} for n in linux.get("namespaces") or []]
        if not seccomp:
            linux.pop("seccomp", None)
        return dict(spec)

    async def run(self, cid: str, spec: JSON | None = None) -> float:
        """Seconds for `runc run -d` (the bundle is written before the clock starts)."""
        b = self.work / "bundles" / cid
        b.mkdir(parents=True)
        base = spec if spec is not None else self.spec
        spec = {**base, "hostname": cid, "linux": {**base["linux"], "cgroupsPath": f"/{self.parent}/{cid}"}}
        (b / "config.json").write_text(json.dumps(spec))
        self.ids.append(cid)
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            "runc", "--root", str(self.root), "--log", str(b / "runc.log"), "--log-format", "json",
            "run", "-d", "--bundle", str(b), cid,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rc = await proc.wait()
        took = time.perf_counter() - t0
        if rc != 0:
            raise RuntimeError(f"runc run -d {cid} failed ({rc}): {(b / 'runc.log').read_text(errors='replace')[-500:]}")
        return took

    async def delete_all(self) -> None:
        async def delete(cid: str) -> None:
            proc = await asyncio.create_subprocess_exec("runc", "--root", str(self.root), "delete", "--force", cid,
                                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await proc.wait()

        await asyncio.gather(*(delete(c) for c in self.ids))
        self.ids.clear()
        shutil.rmtree(self.work / "bundles", ignore_errors=True)

    def cleanup(self) -> None:
        listed = subprocess.run(["runc", "--root", str(self.root), "list", "-q"], capture_output=True, text=True,
                                check=False).stdout.split()
        for cid in listed:
            subprocess.run(["runc", "--root", str(self.root), "delete", "--force", cid], capture_output=True,
                           check=False)
        with contextlib.suppress(Exception):
            cgroups.detect(parent=self.parent).remove("/" + self.parent)


# --- image ---------------------------------------------------------------------------------


def build_image(work: Path) -> tuple[Path, Path]:
    """The busybox image as a docker-archive tarball for DATA/images, and its rootfs unpacked."""
    layout = work / "layout"
    ref = test_images.busybox_layout(layout, tag="1.0")
    tarball = work / "busybox.tar"
    test_images.skopeo_copy(ref, f"docker-archive:{tarball}:{IMAGE}")
    unpacked = work / "unpacked"
    test_images.run("umoci", "unpack", "--image", f"{layout}:1.0", str(unpacked))
    return tarball, unpacked / "rootfs"


def runc_version() -> str:
    out = subprocess.run(["runc", "--version"], capture_output=True, text=True, check=False).stdout.split()
    return out[2] if len(out) > 2 else "unknown"


def _env(pycache: Path | None) -> dict[str, str]:
    """The servers' environment: bytecode cached under `pycache` (None: as this shell has it)."""
    env = dict(os.environ)
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


# --- measurements on one running server ----------------------------------------------------


def read_rss(pid: int) -> Rss:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            fields[key] = int(value.split()[0])
    return Rss(fields["VmRSS"], fields.get("RssAnon", 0), fields.get("RssFile", 0) + fields.get("RssShmem", 0))


def _pod(name: str) -> JSON:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "pods"}},
            "spec": _pod_spec()}


def _pod_spec() -> JSON:
    # A grace period of 1 s (the kubelet makes it 2): `sleep` as PID 1 ignores SIGTERM.
    return {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                            "command": ["sleep", "3600"]}]}


def _deployment() -> JSON:
    labels = {"app": DEPLOYMENT}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE},
            "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": _pod_spec()}}}


class Bench:
    """The pod measurements on one server, through one watch of the namespace."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base
        self.watch = cp.PodWatch(session, base, NAMESPACE)
        self.url = f"{base}/api/v1/namespaces/{NAMESPACE}/pods"
        # perf_counter -> unix time, to meet the server log's timestamps.
        self.wall = time.time() - time.perf_counter()

    async def post(self, name: str) -> float:
        await cp.request(self.session, "POST", self.url, _pod(name), ok=(201,))
        return time.perf_counter()

    def _record(self, name: str, t0: float, posted: float) -> PodStart:
        w = self.watch
        return PodStart(name=name, t0_wall=self.wall + t0, posted_ms=1000 * (posted - t0),
                        seen_ms=1000 * (w.seen[name] - t0), bound_ms=1000 * (w.bound[name] - t0),
                        status_ms=1000 * (w.reported[name] - t0), running_ms=1000 * (w.running[name] - t0))

    async def until_running(self, names: list[str]) -> None:
        running = self.watch.running
        await self.watch.until(f"{len(names)} pods Running ({names[0]}...)", lambda: all(n in running for n in names))

    async def sequential(self, prefix: str, count: int) -> list[PodStart]:
        self.watch.reset()
        out = []
        for i in range(count):
            name = f"{prefix}-{i:03d}"
            t0 = time.perf_counter()
            posted = await self.post(name)
            await self.until_running([name])
            out.append(self._record(name, t0, posted))
        return out

    async def burst(self, prefix: str, count: int) -> list[PodStart]:
        self.watch.reset()
        names = [f"{prefix}-{i:03d}" for i in range(count)]

        async def one(name: str) -> tuple[float, float]:
            t0 = time.perf_counter()
            return t0, await self.post(name)

        times = await asyncio.gather(*(one(n) for n in names))
        await self.until_running(names)
        return [self._record(n, t0, posted) for n, (t0, posted) in zip(names, times, strict=True)]

    async def delete_all(self) -> None:
        """Every pod deleted gracefully, until the kubelet removed them (containers first)."""
        names = sorted(self.watch.live)
        await cp.pool(names, cp.CONCURRENCY, lambda n: cp.request(
            self.session, "DELETE", f"{self.url}/{n}", ok=(200, 202, 404)))
        await self.watch.until("every pod gone", lambda: not self.watch.live)

    async def scale(self, replicas: int) -> ScaleRun:
        url = f"{self.base}/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}/scale"
        w = self.watch
        w.reset()
        t0 = time.perf_counter()
        await cp.request(self.session, "PATCH", url, {"spec": {"replicas": replicas}}, headers=cp.MERGE)
        await w.until(f"{replicas} pods Running", lambda: len(w.running) >= replicas)
        return ScaleRun(replicas=replicas, created_s=w.nth(w.seen, replicas) - t0,
                        bound_s=w.nth(w.bound, replicas) - t0, running_s=w.nth(w.running, replicas) - t0, down_s=0.0)

    async def scale_down(self) -> float:
        url = f"{self.base}/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}/scale"
        t0 = time.perf_counter()
        await cp.request(self.session, "PATCH", url, {"spec": {"replicas": 0}}, headers=cp.MERGE)
        await self.watch.until("every pod gone", lambda: not self.watch.live)
        return time.perf_counter() - t0


def _log_time(stamp: str) -> float:
    """Unix time of the server log's `%(asctime)s` (local time, ms)."""
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def container_lines(log_text: str) -> dict[str, tuple[float, list[float]]]:
    """Pod name -> (unix time of the line, [total, rootfs, config, runc create, runc start] ms)
    from the kubelet's debug lines (the newest line per pod)."""
    out: dict[str, tuple[float, list[float]]] = {}
    for m in _START_LINE.finditer(log_text):
        out[m.group(3)] = (_log_time(m.group(1)), [float(m.group(i)) for i in range(4, 9)])
    return out


def network_lines(log_text: str) -> dict[str, float]:
    """Pod name -> ms of its network set-up, from the pod network's debug lines (the newest)."""
    return {m.group(3): float(m.group(4)) for m in _NETWORK_LINE.finditer(log_text)}


def raw_network(ns: netns_mod.NetNS, work: Path, count: int) -> list[float]:
    """The baseline of the network stage: ms to put each of `count` fresh namespaces on a bridge
    of its own with `ip`, as the pod network does with netlink (a veth pair made into the
    namespace, hairpin, the address, eth0 up, the default route): one `ip -batch` on the node and
    one inside the namespace. The namespaces are made (and removed) outside the clock."""
    if os.stat("/proc/thread-self/ns/net").st_ino != os.stat(ns.path).st_ino:
        raise RuntimeError(f"raw_network runs `ip` on the node: only inside {ns.path}, never on the host")
    work.mkdir(parents=True)
    bridge, gateway = "ekbench0", "10.99.0.1"

    def ip(*args: str, text: str | None = None, check: bool = True) -> None:
        subprocess.run(["ip", *args], check=check, text=True, input=text, capture_output=True)

    ip("link", "add", bridge, "type", "bridge")
    out = []
    try:
        ip("addr", "add", f"{gateway}/24", "dev", bridge)
        ip("link", "set", bridge, "up")
        for i in range(count):
            pod = work / f"ns{i}"
            pod.touch()
            subprocess.run(["unshare", f"--net={pod}", "true"], check=True)
            host = f"ekb{i:04d}"
            t0 = time.perf_counter()
            ip("-batch", "-", text=(
                f"link add {host} mtu 1500 master {bridge} up type veth peer name eth0 netns {pod} mtu 1500\n"
                f"link set {host} type bridge_slave hairpin on\n"))
            subprocess.run(["nsenter", f"--net={pod}", "ip", "-batch", "-"], check=True, text=True, input=(
                f"addr add 10.99.0.{i % 250 + 2}/24 dev eth0\nlink set eth0 up\nroute add default via {gateway}\n"))
            out.append(1000 * (time.perf_counter() - t0))
            ip("link", "del", host)
            subprocess.run(["umount", str(pod)], check=True)
    finally:
        ip("link", "del", bridge, check=False)
        test_kubelet.unmount_below(work)
    return out


def with_phases(starts: list[PodStart], lines: dict[str, tuple[float, list[float]]]) -> list[PodStart]:
    out = []
    for s in starts:
        line = lines.get(s.name)
        if line is None:
            out.append(s)
            continue
        at, (total, rootfs, config, create, start) = line
        began = 1000 * (at - s.t0_wall) - total
        out.append(dataclasses.replace(s, phases=ContainerPhases(
            began_ms=began, total_ms=total, rootfs_ms=rootfs, config_ms=config, runc_create_ms=create,
            runc_start_ms=start)))
    return out


# --- boot ----------------------------------------------------------------------------------


async def _poll(server: servers.Proc, url: str, tls: Path, *, expect: Callable[[int, str], bool]) -> float:
    """Seconds from the child's exec until GET `url` answers as `expect` says, polled every
    POLL_S on one keep-alive connection (the client certificates once they exist)."""
    deadline = time.monotonic() + TIMEOUT
    session: aiohttp.ClientSession | None = None
    try:
        while time.monotonic() < deadline:
            server.check_alive()
            if session is None and all((tls / n).exists() for n in ("ca.crt", "admin.crt", "admin.key")):
                try:
                    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=servers.client_ssl(tls)))
                except (ssl.SSLError, OSError):  # still being written
                    pass
            if session is not None:
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
                        text = await r.text()
                        if expect(r.status, text):
                            return time.time() - server.started
                except (aiohttp.ClientError, ssl.SSLError, OSError, TimeoutError):
                    pass
            await asyncio.sleep(POLL_S)
        raise RuntimeError(f"{server.name}: no answer from {url} after {TIMEOUT:.0f}s:\n{server.log_tail()}")
    finally:
        if session is not None:
            await session.close()


async def _node_ready(server: servers.EdgekubeServer) -> None:
    """The Node's Ready condition, through the API (what /readyz promised)."""
    conn = aiohttp.TCPConnector(ssl=server.ssl_context())
    async with aiohttp.ClientSession(connector=conn) as session:
        nodes = await cp.request(session, "GET", f"{server.base}/api/v1/nodes")
    for node in nodes.get("items") or []:
        for c in (node.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Ready" and c.get("status") == "True":
                return
    raise RuntimeError(f"/readyz answered ok but no Node is Ready: {nodes}")


def _log_times(log_text: str, started: float) -> tuple[float | None, float | None, float | None]:
    """Seconds from exec to the launcher's `edgekube imported`, to "API serving", to "node Ready"."""
    imported = serving = node = None
    m = re.search(r"^([\d.]+) bench-launcher: edgekube imported", log_text, re.M)
    if m:
        imported = float(m.group(1)) - started
    m = re.search("^" + _LOG_TIME + r" INFO edgekube\.runtime: edgekube API serving", log_text, re.M)
    if m:
        serving = _log_time(m.group(1)) - started
    m = re.search("^" + _LOG_TIME + r" INFO edgekube\.kubelet\.kubelet: kubelet: node \S+ is Ready", log_text, re.M)
    if m:
        node = _log_time(m.group(1)) - started
    return imported, serving, node


async def boot_once(host: KubeletHost, *, env: dict[str, str], launcher: list[str] | None = None,
                    python_flags: list[str] | None = None) -> tuple[BootRun, str]:
    """One boot to /readyz ok; the server is stopped again. Returns the run and the log text."""
    if python_flags:
        launcher = [sys.executable, *python_flags, "-m", "edgekube"]
    server = host.server(env=env, launcher=launcher)
    try:
        ready = await _poll(server, f"{server.base}/readyz", server.tls,
                            expect=lambda status, text: status == 200 and text.strip() == "ok")
        await _node_ready(server)
    finally:
        server.stop()
    text = server.log_path.read_text(errors="replace")
    imported, serving, node = _log_times(text, server.started)
    return BootRun(ready_s=ready, imported_s=imported, serving_s=serving, node_s=node), text


async def bare_boot(tls: Path, work: Path, env: dict[str, str]) -> tuple[float, Rss]:
    body = work / "bare-body.json"
    body.write_text('{"kind":"Status","status":"Success"}')
    bare = servers.BareServer(tls, body, work / "bare.log", env=env)
    try:
        took = await _poll(bare, f"{bare.base}/", tls, expect=lambda status, _text: status == 200)
        await asyncio.sleep(1.0)
        rss = read_rss(bare.pid)
    finally:
        bare.stop()
    return took, rss


def import_times(log_text: str) -> tuple[list[tuple[str, float]], list[tuple[str, float, float]], float, int]:
    """From `-X importtime` output: self ms per package (edgekube per subpackage), the modules
    with the most self time, total ms, module count."""
    rows = [(m.group(4), int(m.group(1)) / 1000, int(m.group(2)) / 1000) for m in _IMPORT_LINE.finditer(log_text)]
    by_pkg: dict[str, float] = {}
    for name, self_ms, _ in rows:
        parts = name.split(".")
        key = ".".join(parts[:2]) if parts[0] == "edgekube" and len(parts) > 1 else parts[0]
        by_pkg[key] = by_pkg.get(key, 0.0) + self_ms
    pkgs = sorted(by_pkg.items(), key=lambda kv: -kv[1])
    top = sorted(rows, key=lambda r: -r[1])
    return pkgs, top, sum(r[1] for r in rows), len(rows)


# Layers of what the server imports, bottom first (DESIGN §8's order): the RSS each one adds.
IMPORT_STEPS: list[tuple[str, list[str]]] = [
    ("python (interpreter, site)", []),
    ("asyncio, ssl, logging, json", ["asyncio", "ssl", "logging", "json"]),
    ("aiohttp (+ web)", ["aiohttp", "aiohttp.web"]),
    ("cryptography (x509, hazmat)", ["cryptography.x509", "cryptography.hazmat.primitives.asymmetric.ec",
                                     "cryptography.hazmat.primitives.asymmetric.rsa"]),
    ("lmdb, msgpack, orjson, yaml, jsonpatch", ["lmdb", "msgpack", "orjson", "yaml", "jsonpatch"]),
    ("cgroupspy, cronsim", ["cgroupspy.trees", "cronsim"]),
    ("edgekube.store", ["edgekube.store.store"]),
    ("edgekube.api (server, registry)", ["edgekube.api.server", "edgekube.api.registry.rest"]),
    ("edgekube.client, controllers, scheduler", ["edgekube.client.informer", "edgekube.controllers.manager",
                                                 "edgekube.scheduler.scheduler"]),
    ("edgekube.kubelet", ["edgekube.kubelet.kubelet"]),
    ("edgekube.net (the pod network, pyroute2's rtnetlink part)", ["edgekube.net.podnet"]),
    ("edgekube.runtime, cli", ["edgekube.runtime", "edgekube.cli"]),
]

_IMPORT_PROBE = """
import importlib, json, sys
steps = json.loads(sys.argv[1])
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
out = []
for label, mods in steps:
    for m in mods:
        importlib.import_module(m)
    out.append([label, rss(), len(sys.modules)])
print(json.dumps(out))
"""


def import_rss(env: dict[str, str]) -> list[ImportCost]:
    out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE, json.dumps(IMPORT_STEPS)], capture_output=True,
                         text=True, env=env, cwd=common.REPO, timeout=120, check=True).stdout
    return [ImportCost(label, kib / 1024.0, mods) for label, kib, mods in json.loads(out)]


async def _idle_rss(host: KubeletHost, *, env: dict[str, str], settle: float) -> Rss:
    server = host.server(env=env)
    try:
        await server.wait_ready()
        await asyncio.sleep(settle)
        return read_rss(server.pid)
    finally:
        server.stop()


async def heap_by_owner(host: KubeletHost, tarball: Path, *, env: dict[str, str], settle: float) -> JSON:
    """Where an idle server's memory goes: its RSS without the boot import of the image tarball,
    then (with it, as the measured server) tracemalloc grouped by the code that allocated."""
    without_import = await _idle_rss(host, env=env, settle=settle)
    (host.data_dir / "images").mkdir(parents=True)
    shutil.copy(tarball, host.data_dir / "images" / tarball.name)
    out = host.work / "heap.json"
    server = host.server(env=env, launcher=[sys.executable, str(LAUNCHER), "--tracemalloc", str(out), "--"])
    try:
        await server.wait_ready()
        await asyncio.sleep(settle)
        server.popen.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            server.check_alive()
            if out.exists():  # renamed into place once written
                data: JSON = json.loads(out.read_text())
                data["rss_without_import"] = dataclasses.asdict(without_import)
                return data
            await asyncio.sleep(0.5)
        raise RuntimeError(f"no tracemalloc snapshot from the server after {TIMEOUT:.0f}s:\n{server.log_tail()}")
    finally:
        server.stop()


# --- the run -------------------------------------------------------------------------------


async def _pods_section(host: KubeletHost, raw: RawRunc, ns: netns_mod.NetNS, *, env: dict[str, str], pods: int, replicas: int,
                        settle: float, log: Callable[[str], None]) -> PodsResult:
    server = host.server(env=env, launcher=[sys.executable, str(LAUNCHER), "--debug", CONTAINERS_LOGGER,
                                            "--debug", NETWORK_LOGGER, "--"])
    try:
        ready_s = await server.wait_ready()
        log(f"  edgekube server (kubelet on) ready in {ready_s:.1f}s (pid {server.pid}); settling {settle:.0f}s")
        await asyncio.sleep(settle)
        idle = read_rss(server.pid)
        log(f"  idle RSS {idle.text()}")
        async with cp.client_session(server) as session:
            await cp.ensure_namespace(session, server.base, NAMESPACE)
            b = Bench(session, server.base)
            await b.watch.start()
            try:
                await b.sequential("warm", WARM_UP_PODS)  # first pod's one-off costs (QoS cgroups), unmeasured
                config = _kubelet_config(host)
                await b.delete_all()

                raw_seq = await _raw_sequential(raw, "seq", pods, None)
                raw_kubelet = await _raw_sequential(raw, "kcfg", pods,
                                                    raw.kubelet_spec(config, kubelet_root=host.kubelet_dir))
                raw_nosec = await _raw_sequential(raw, "knosec", pods, raw.kubelet_spec(
                    config, kubelet_root=host.kubelet_dir, seccomp=False))
                log(f"  raw runc run -d x{pods}, one after another, p50 / p99: runc spec "
                    f"{_p50_p99(raw_seq)} ms, the kubelet's config.json {_p50_p99(raw_kubelet)} ms, "
                    f"without its seccomp profile {_p50_p99(raw_nosec)} ms")
                seq = await b.sequential("seq", pods)
                await b.delete_all()
                raw_net = await asyncio.to_thread(raw_network, ns, host.work / "raw-net", pods)
                log(f"  {pods} pods one after another: create -> Running p50 "
                    f"{common.percentile([p.running_ms for p in seq], 50):.0f} ms, "
                    f"p99 {common.percentile([p.running_ms for p in seq], 99):.0f} ms")

                burst = await b.burst("burst", pods)
                await b.delete_all()
                t0 = time.perf_counter()
                await asyncio.gather(*(raw.run(f"burst-{i:03d}") for i in range(pods)))
                raw_burst = time.perf_counter() - t0
                await raw.delete_all()
                log(f"  {pods} pods at once: p50 {common.percentile([p.running_ms for p in burst], 50):.0f} ms, "
                    f"last {max(p.running_ms for p in burst):.0f} ms; raw {pods} runc run -d at once "
                    f"{1000 * raw_burst:.0f} ms")

                await cp.request(session, "POST", f"{server.base}/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
                                 _deployment(), ok=(201,))
                scale = await b.scale(replicas)
                log(f"  Deployment 0 -> {replicas}: created {scale.created_s:.2f} s, bound {scale.bound_s:.2f} s, "
                    f"Running {scale.running_s:.2f} s; settling {settle:.0f}s")
                await asyncio.sleep(settle)
                server.check_alive()
                loaded = read_rss(server.pid)
                log(f"  RSS with {replicas} pods {loaded.text()}")
                scale = dataclasses.replace(scale, down_s=await b.scale_down())
                await asyncio.sleep(settle)
                after = read_rss(server.pid)
                t0 = time.perf_counter()
                await asyncio.gather(*(raw.run(f"scale-{i:03d}") for i in range(replicas)))
                raw_scale = time.perf_counter() - t0
                await raw.delete_all()
                log(f"  back to 0 in {scale.down_s:.1f} s; RSS then {after.text()}; raw {replicas} runc run -d at "
                    f"once {raw_scale:.2f} s")
            finally:
                await b.watch.stop()
        server.check_alive()
    finally:
        server.stop()
    text = server.log_path.read_text(errors="replace")
    lines = container_lines(text)
    missing = [p.name for p in [*seq, *burst] if p.name not in lines]
    if missing:
        log(f"  warning: no container start line for {len(missing)} pods (e.g. {missing[:3]})")
    net = network_lines(text)
    net_seq, net_burst = [net[p.name] for p in seq if p.name in net], [net[p.name] for p in burst if p.name in net]
    log(f"  network stage per pod, p50 / p99: one after another {_p50_p99(net_seq)} ms, at once "
        f"{_p50_p99(net_burst)} ms; the same links by `ip` {_p50_p99(raw_net)} ms")
    return PodsResult(pods=pods, sequential=with_phases(seq, lines), burst=with_phases(burst, lines),
                      raw_sequential_ms=raw_seq, raw_kubelet_ms=raw_kubelet, raw_kubelet_noseccomp_ms=raw_nosec,
                      raw_burst_s=raw_burst, scale=scale, raw_scale_s=raw_scale,
                      idle=idle, loaded=loaded, after=after, settle_s=settle,
                      network_seq_ms=net_seq, network_burst_ms=net_burst, raw_network_ms=raw_net)


def _kubelet_config(host: KubeletHost) -> JSON:
    """The config.json the kubelet wrote for a container of a running pod."""
    for b in sorted((host.kubelet_dir / "containers").iterdir()):
        if (b / "config.json").exists():
            config: JSON = json.loads((b / "config.json").read_text())
            return config
    raise RuntimeError(f"no container bundle under {host.kubelet_dir / 'containers'}")


async def _raw_sequential(raw: RawRunc, prefix: str, count: int, spec: JSON | None) -> list[float]:
    """ms of each `runc run -d`, one after another; the containers are removed afterwards."""
    out = [1000 * await raw.run(f"{prefix}-{i:03d}", spec) for i in range(count)]
    await raw.delete_all()
    return out


def _p50_p99(values: list[float]) -> str:
    return f"{common.percentile(values, 50):.1f} / {common.percentile(values, 99):.1f}"


async def _boot_section(host: KubeletHost, *, env: dict[str, str], runs: int,
                        log: Callable[[str], None]) -> BootResult:
    out = BootResult()
    await boot_once(host, env=env)  # compiles the bytecode cache; not measured
    shutil.rmtree(host.data_dir)
    out.first, _ = await boot_once(host, env=env)
    log(f"  first boot (fresh data dir, TLS generated): /readyz ok {out.first.ready_s:.3f} s after exec")
    for i in range(runs):
        restart, _ = await boot_once(host, env=env)
        out.restart.append(restart)
        log(f"  restart #{i + 1}: /readyz ok {restart.ready_s:.3f} s after exec")
    out.split, _ = await boot_once(host, env=env, launcher=[sys.executable, str(LAUNCHER), "--"])
    s = out.split
    log(f"  restart through the launcher: edgekube imported {_s(s.imported_s)}, API serving {_s(s.serving_s)}, "
        f"node Ready logged {_s(s.node_s)}, /readyz ok {s.ready_s:.3f} s")
    out.uncached, _ = await boot_once(host, env=_env(None))
    log(f"  restart without a bytecode cache for edgekube: {out.uncached.ready_s:.3f} s")
    _, text = await boot_once(host, env=env, python_flags=["-X", "importtime"])
    out.import_by_package, out.import_top, out.import_total_ms, out.import_modules = import_times(text)
    log(f"  -X importtime: {out.import_modules} modules, {out.import_total_ms:.0f} ms in all")
    for _ in range(runs):
        took, out.bare_rss = await bare_boot(host.data_dir / "tls", host.work, env)
        out.bare_s.append(took)
    log(f"  bare aiohttp server: first answer {out.bare_median:.3f} s after exec (median of {runs}); "
        f"RSS {out.bare_rss.text() if out.bare_rss else '?'}")
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass", env=env)
    await proc.wait()
    out.python_s = time.perf_counter() - t0
    return out


async def _binary_section(host: KubeletHost, binary: Path, *, env: dict[str, str], runs: int, settle: float,
                          log: Callable[[str], None]) -> BinaryResult:
    """The shipped binary as the boot and idle sections measure the interpreted server: a first
    boot, `runs` restarts (exec -> /readyz ok), then the idle RSS of all its processes."""
    launcher = [str(binary)]
    first, _ = await boot_once(host, env=env, launcher=launcher)
    out = BinaryResult(path=str(binary), size_mib=await asyncio.to_thread(os.path.getsize, binary) / 2**20, first_s=first.ready_s)
    log(f"  {binary.name} ({out.size_mib:.1f} MiB): first boot /readyz ok {first.ready_s:.3f} s after exec")
    for i in range(runs):
        restart, _ = await boot_once(host, env=env, launcher=launcher)
        out.restart_s.append(restart.ready_s)
        log(f"  {binary.name} restart #{i + 1}: /readyz ok {restart.ready_s:.3f} s after exec")
    server = host.server(env=env, launcher=launcher)
    try:
        await server.wait_ready()
        await asyncio.sleep(settle)
        pids = [server.pid, *servers.children(server.pid)]
        parts = [read_rss(pid) for pid in pids]
    finally:
        server.stop()
    out.processes = len(parts)
    out.idle = Rss(sum(p.rss_kib for p in parts), sum(p.anon_kib for p in parts), sum(p.file_kib for p in parts))
    log(f"  {binary.name} idle RSS, {len(parts)} processes: {out.idle.text()} "
        f"({', '.join(f'{p.mib:.1f}' for p in parts)} MiB)")
    return out


async def _reboot_section(host: KubeletHost, raw: RawRunc, ns: netns_mod.NetNS, *, env: dict[str, str], pods: int,
                          runs: int, log: Callable[[str], None]) -> RebootResult:
    """A Deployment of `pods` Running, then `runs` times: the server and every container killed
    at once, mounts, cgroups, /run, links and nft tables gone (`tests.support.kubelet.power_cut`;
    the disk as it was), the server started again, timed from exec until every pod runs again
    in a new container (the API listed every 10 ms); baseline: as many `runc run -d` at once."""
    out = RebootResult(pods=pods)
    server = host.server(env=env)
    try:
        await server.wait_ready()
        async with cp.client_session(server) as session:
            await cp.ensure_namespace(session, server.base, NAMESPACE)
            await cp.request(session, "POST", f"{server.base}/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
                             _deployment(), ok=(201,))
            b = Bench(session, server.base)
            await b.watch.start()
            try:
                await b.scale(pods)
            finally:
                await b.watch.stop()
        for i in range(runs):
            old = set(test_kubelet.runc_list(containers_mod.runc_root(host.kubelet_dir)))
            server.popen.kill()
            server.stop()
            await asyncio.to_thread(test_kubelet.power_cut, kubelet_dir=host.kubelet_dir, data_dir=host.data_dir,
                                    parent=host.parent, below=host.work, netns=ns)
            t0 = time.perf_counter()
            server = host.server(env=env)
            ready = asyncio.create_task(server.wait_ready())
            out.running_s.append(await _until_back(server, old, pods) - t0)
            out.ready_s.append(await ready)
            t1 = time.perf_counter()
            await asyncio.gather(*(raw.run(f"reboot{i}-{j:03d}") for j in range(pods)))
            out.raw_s.append(time.perf_counter() - t1)
            await raw.delete_all()
            log(f"  power cut #{i + 1} and an offline boot: /readyz ok {out.ready_s[-1]:.2f} s, all {pods} pods "
                f"Running again {out.running_s[-1]:.2f} s after exec; raw {pods} runc run -d at once "
                f"{out.raw_s[-1]:.2f} s")
    finally:
        server.stop()
    return out


async def _until_back(server: servers.EdgekubeServer, old: set[str], pods: int) -> float:
    """perf_counter when every pod of the namespace runs, ready, in a container not in `old`."""
    url = f"{server.base}/api/v1/namespaces/{NAMESPACE}/pods"
    deadline = time.monotonic() + TIMEOUT
    session: aiohttp.ClientSession | None = None
    try:
        while time.monotonic() < deadline:
            server.check_alive()
            if session is None and (server.tls / "admin.key").exists():
                session = cp.client_session(server)
            if session is not None:
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                        items = (await r.json())["items"] if r.status == 200 else []
                except (aiohttp.ClientError, ssl.SSLError, OSError, TimeoutError, ValueError):
                    items = []
                back = [p for p in items if (p.get("status") or {}).get("phase") == "Running" and all(
                    c.get("ready") and str(c.get("containerID", "")).split("://")[-1] not in old
                    for c in (p.get("status") or {}).get("containerStatuses") or [{}])]
                if len(items) == pods and len(back) == pods:
                    return time.perf_counter()
            await asyncio.sleep(POLL_S)
    finally:
        if session is not None:
            await session.close()
    raise RuntimeError(f"the {pods} pods were not Running again {TIMEOUT:.0f} s after the reboot:\n{server.log_tail()}")


def _s(value: float | None) -> str:
    return "?" if value is None else f"{value:.3f} s"


def run(*, pods: int, replicas: int, boot_runs: int, settle: float, reboot_pods: int = REBOOT_PODS,
        reboot_runs: int = 3, binary: Path | None = None, log: Callable[[str], None] = print) -> KubeletResult:
    if os.geteuid() != 0:
        raise RuntimeError("the kubelet benchmark runs containers with runc: run it as root")
    tmp = common.temp_dir("kubelet")
    hosts: list[KubeletHost] = []
    raw: RawRunc | None = None
    netns_mod.sweep_stale()
    ns = netns_mod.NetNS("kubelet-bench")
    try:
        env = _env(tmp / "pycache")
        tarball, rootfs = build_image(tmp / "image")
        host = KubeletHost(tmp, "pods")
        hosts.append(host)
        (host.data_dir / "images").mkdir(parents=True)
        shutil.copy(tarball, host.data_dir / "images" / tarball.name)
        raw = RawRunc(tmp / "raw", rootfs)
        # One unmeasured boot on a data dir of its own fills the bytecode cache, as an installed
        # edgekube has it: the idle RSS must not count the compiler's memory of a first run.
        warm_host = KubeletHost(tmp, "warm")
        hosts.append(warm_host)
        ns.call(asyncio.run, boot_once(warm_host, env=env))
        warm_host.cleanup()
        # Every server, client and baseline below runs in the namespace: `ns.call` runs the event
        # loop in a thread that joined it, and the threads and processes it starts inherit it.
        pods_result = ns.call(asyncio.run, _pods_section(host, raw, ns, env=env, pods=pods, replicas=replicas,
                                                         settle=settle, log=log))
        host.cleanup()
        boot_host = KubeletHost(tmp, "boot")
        hosts.append(boot_host)
        boot = ns.call(asyncio.run, _boot_section(boot_host, env=env, runs=boot_runs, log=log))
        reboot_host = KubeletHost(tmp, "reboot")
        hosts.append(reboot_host)
        (reboot_host.data_dir / "images").mkdir(parents=True)
        shutil.copy(tarball, reboot_host.data_dir / "images" / tarball.name)
        reboot = ns.call(asyncio.run, _reboot_section(reboot_host, raw, ns, env=env, pods=reboot_pods, runs=reboot_runs,
                                                      log=log))
        binary_result = None
        if binary is not None:
            binary_host = KubeletHost(tmp, "binary")
            hosts.append(binary_host)
            (binary_host.data_dir / "images").mkdir(parents=True)  # as the idle server above: the image imported
            shutil.copy(tarball, binary_host.data_dir / "images" / tarball.name)
            binary_result = ns.call(asyncio.run, _binary_section(binary_host, binary, env=env, runs=boot_runs,
                                                                 settle=settle, log=log))
        heap = None
        if pods_result.idle.mib > IDLE_TARGET_MIB:
            heap_host = KubeletHost(tmp, "heap")
            hosts.append(heap_host)
            heap = ns.call(asyncio.run, heap_by_owner(heap_host, tarball, env=env, settle=settle))
            log(f"  idle RSS without the boot import of the image: {Rss(**heap['rss_without_import']).text()}; "
                f"tracemalloc of an idle server: {heap['traced'] / 2**20:.1f} MiB traced, {heap['modules']} modules")
        return KubeletResult(pods=pods_result, boot=boot, import_rss=import_rss(env), heap=heap, reboot=reboot,
                             binary=binary_result)
    finally:
        for h in hosts:
            h.cleanup()
        if raw is not None:
            raw.cleanup()
        test_kubelet.unmount_below(tmp)
        common.remove_dir(tmp)
        ns.close()
