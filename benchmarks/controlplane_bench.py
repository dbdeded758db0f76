"""Section 5: the control plane (issue 4), each figure against a baseline measured in the same run.

- Scale: a Deployment (replicas 0) on an `edgekube server` with one test node
  (tests/support/testnode.py, which reports a bound pod Running with one status PATCH) is scaled
  to 100 with one PATCH of its `scale` subresource; a watch on the namespace's pods (HTTP, admin
  certificate) timestamps each pod's first sight, first sight with `spec.nodeName`, and first
  sight with `status.phase: Running`. Time to 100 created (ReplicaSet controller), 100 bound
  (scheduler) and 100 Running (test node) from the PATCH; the node's own share is each pod's
  bound -> Running gap as the same watch saw it. Scaled back to 0 (pods gone) between runs.
  Baseline: the same 100 pods POSTed by the benchmark with `spec.nodeName` already set, in the
  ReplicaSet controller's slow-start batches (1, 2, 4, ... in parallel), timed the same way.
- Scheduler: a fresh server, 20 Node objects (and their Leases) created through the API, then
  500 pods with varied requests, a share of them with nodeSelector, required and preferred node
  affinity, tolerations, and pod anti-affinity, POSTed by 32 concurrent workers; pods bound per
  second from the first POST to the last binding seen on the watch. Baseline: the same pods
  POSTed with `spec.nodeName` set (no scheduling, no binding write), first POST to last seen.
- Cycle: in-process, `Scheduler.filter` + `Scheduler.pick` for one pod over a fresh
  `plugins.Snapshot` of the same 20 nodes holding 100 (then 500) placed pods: the algorithm's
  share of a decision, without the API writes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks import common, servers
from edgekube._cogs import clock as clock_mod
from edgekube.api.registry import resources, rest
from edgekube.client import events as events_mod
from edgekube.client import informer, local
from edgekube.scheduler import plugins
from edgekube.scheduler import scheduler as scheduler_mod
from edgekube.store import store as store_mod
from tests.support import testnode

JSON = dict[str, Any]
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
MERGE = {"Content-Type": "application/merge-patch+json", "Accept": "application/json"}
# The server runs the control plane only: no kubelet of its own (it would be a second node).
SERVER_ARGS = ["--disable", "kubelet", "--disable", "network", "--disable", "dns"]
SCALE_NS = "cp-scale"
RAW_NS = "cp-raw"
SCHED_NS = "cp-sched"
SCHED_RAW_NS = "cp-sched-raw"
DEPLOYMENT = "bench"
NODE = "bench-node"
NODES = 20
ZONES = 4
CONCURRENCY = 32  # POSTs in flight for the scheduler section
TIMEOUT = 120.0  # seconds for any one wait; a run that needs more is an error


@dataclasses.dataclass
class ScaleRun:
    created_s: float  # from the scale PATCH to the 100th pod seen
    bound_s: float  # ... to the 100th pod seen with spec.nodeName
    running_s: float  # ... to the 100th pod seen Running
    node_ms: list[float]  # per pod: bound seen -> Running seen (the test node's share)
    down_s: float  # scale to 0 -> every pod gone (for information)


@dataclasses.dataclass
class RawRun:
    created_s: float  # first POST -> last POST answered
    running_s: float  # first POST -> last pod seen Running


@dataclasses.dataclass
class SchedRun:
    pods: int
    posted_s: float  # first POST -> last POST answered
    bound_s: float  # first POST -> last pod seen bound

    @property
    def rate(self) -> float:
        return self.pods / self.bound_s


@dataclasses.dataclass
class SchedRaw:
    pods: int
    seen_s: float  # first POST -> last pod seen on the watch

    @property
    def rate(self) -> float:
        return self.pods / self.seen_s


@dataclasses.dataclass
class Cycle:
    placed: int
    cycles: int
    p50_us: float
    p99_us: float
    mean_us: float

    @property
    def rate(self) -> float:
        return 1e6 / self.mean_us


@dataclasses.dataclass
class ControlPlaneResult:
    replicas: int
    scale: list[ScaleRun]
    raw: list[RawRun]
    nodes: int
    sched_pods: int
    sched: list[SchedRun]
    sched_raw: list[SchedRaw]
    cycles: list[Cycle]
    decisions: int  # scheduling cycles the in-process benchmark timed in all
    server_ready_s: float

    @staticmethod
    def _median(values: Iterable[float]) -> float:
        return float(statistics.median(list(values)))

    def scale_median(self, field: str) -> float:
        return self._median(getattr(r, field) for r in self.scale)

    def scale_worst(self, field: str) -> float:
        return max(float(getattr(r, field)) for r in self.scale)

    def raw_median(self, field: str) -> float:
        return self._median(getattr(r, field) for r in self.raw)

    @property
    def node_p50_ms(self) -> float:
        return common.percentile([ms for r in self.scale for ms in r.node_ms], 50)

    @property
    def node_max_ms(self) -> float:
        return max(ms for r in self.scale for ms in r.node_ms)

    @property
    def sched_rate(self) -> float:
        return self._median(r.rate for r in self.sched)

    @property
    def sched_raw_rate(self) -> float:
        return self._median(r.rate for r in self.sched_raw)


# --- a pod watch --------------------------------------------------------------------------


class PodWatch:
    """List-then-watch a namespace's pods; timestamps (perf_counter) of each pod's first sight,
    first sight bound, first sight with `status.containerStatuses` (the node's first status),
    first sight Running, since the last `reset()`."""

    def __init__(self, session: aiohttp.ClientSession, base: str, namespace: str) -> None:
        self._session = session
        self._base = base
        self._ns = namespace
        self.live: set[str] = set()
        self.seen: dict[str, float] = {}
        self.bound: dict[str, float] = {}
        self.reported: dict[str, float] = {}
        self.running: dict[str, float] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    def reset(self) -> None:
        self.seen.clear()
        self.bound.clear()
        self.reported.clear()
        self.running.clear()

    async def start(self) -> None:
        path = f"{self._base}/api/v1/namespaces/{self._ns}/pods"
        async with self._session.get(path, headers=HEADERS) as r:
            body = await r.read()
            if r.status != 200:
                raise RuntimeError(f"LIST pods in {self._ns}: {r.status} {body[:300]!r}")
        listed = orjson.loads(body)
        for pod in listed["items"]:
            self._observe("ADDED", pod, time.perf_counter())
        rv = listed["metadata"]["resourceVersion"]
        self._task = asyncio.create_task(self._watch(f"{path}?watch=1&resourceVersion={rv}"),
                                         name=f"watch pods in {self._ns}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self, url: str) -> None:
        try:
            async with self._session.get(url, headers=HEADERS,
                                         timeout=aiohttp.ClientTimeout(total=None)) as r:
                if r.status != 200:
                    raise RuntimeError(f"watch pods in {self._ns}: {r.status} {await r.text()}")
                async for line in r.content:
                    now = time.perf_counter()
                    if not line.strip():
                        continue
                    ev = orjson.loads(line)
                    if ev["type"] == "ERROR":
                        raise RuntimeError(f"watch pods in {self._ns}: {ev['object']}")
                    self._observe(ev["type"], ev["object"], now)
            raise RuntimeError(f"watch pods in {self._ns} ended")
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # reported by the next wait
            self._error = exc
            self._changed.set()

    def _observe(self, kind: str, pod: JSON, now: float) -> None:
        name = pod["metadata"]["name"]
        if kind == "DELETED":
            self.live.discard(name)
        elif kind in ("ADDED", "MODIFIED"):
            self.live.add(name)
            if not pod["metadata"].get("deletionTimestamp"):
                self.seen.setdefault(name, now)
                if (pod.get("spec") or {}).get("nodeName"):
                    self.bound.setdefault(name, now)
                if (pod.get("status") or {}).get("containerStatuses"):
                    self.reported.setdefault(name, now)
                if (pod.get("status") or {}).get("phase") == "Running":
                    self.running.setdefault(name, now)
        self._changed.set()

    async def until(self, what: str, done: Callable[[], bool]) -> float:
        """Wait (up to TIMEOUT) until `done()`; the perf_counter time when it became true."""
        deadline = time.perf_counter() + TIMEOUT
        while True:
            if self._error is not None:
                raise RuntimeError(f"watch failed while waiting for {what}") from self._error
            if done():
                return time.perf_counter()
            self._changed.clear()
            left = deadline - time.perf_counter()
            if left <= 0:
                raise RuntimeError(
                    f"timed out after {TIMEOUT:.0f}s waiting for {what} in {self._ns}: {len(self.live)} live, "
                    f"{len(self.seen)} seen, {len(self.bound)} bound, {len(self.running)} Running")
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    @staticmethod
    def nth(times: dict[str, float], n: int) -> float:
        """When the n-th pod reached that state."""
        return sorted(times.values())[n - 1]


# --- HTTP helpers -------------------------------------------------------------------------


async def request(session: aiohttp.ClientSession, method: str, url: str, body: JSON | None = None, *,
                   headers: dict[str, str] = HEADERS, ok: tuple[int, ...] = (200, 201)) -> JSON:
    data = None if body is None else orjson.dumps(body)
    async with session.request(method, url, data=data, headers=headers) as r:
        payload = await r.read()
        if r.status not in ok:
            raise RuntimeError(f"{method} {url}: {r.status} {payload[:300]!r}")
    return dict(orjson.loads(payload)) if payload else {}


async def pool(items: list[Any], concurrency: int, fn: Callable[[Any], Awaitable[object]]) -> None:
    it = iter(items)

    async def worker() -> None:
        for item in it:
            await fn(item)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def ensure_namespace(session: aiohttp.ClientSession, base: str, name: str) -> None:
    await request(session, "POST", f"{base}/api/v1/namespaces",
                   {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, ok=(201, 409))


async def _delete_all(session: aiohttp.ClientSession, base: str, watch: PodWatch, ns: str) -> None:
    """Delete every pod of the namespace at once (grace period 0) and wait until all are gone."""
    names = sorted(watch.live)
    opts = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}
    await pool(names, CONCURRENCY, lambda n: request(
        session, "DELETE", f"{base}/api/v1/namespaces/{ns}/pods/{n}", opts, ok=(200, 202, 404)))
    await watch.until("every pod gone", lambda: not watch.live)


def client_session(server: servers.EdgekubeServer) -> aiohttp.ClientSession:
    conn = aiohttp.TCPConnector(limit=256, ssl=server.ssl_context())
    return aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=TIMEOUT),
                                 read_bufsize=1 << 20)


# --- scale a Deployment 0 -> N -------------------------------------------------------------


def _template_spec() -> JSON:
    return {
        "nodeSelector": {"kubernetes.io/hostname": NODE},
        "terminationGracePeriodSeconds": 30,
        "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"],
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
    }


def _deployment() -> JSON:
    labels = {"app": DEPLOYMENT}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": SCALE_NS},
        "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": _template_spec()}},
    }


async def _scale_to(session: aiohttp.ClientSession, base: str, replicas: int) -> None:
    url = f"{base}/apis/apps/v1/namespaces/{SCALE_NS}/deployments/{DEPLOYMENT}/scale"
    await request(session, "PATCH", url, {"spec": {"replicas": replicas}}, headers=MERGE)


async def _scale_run(session: aiohttp.ClientSession, base: str, watch: PodWatch, replicas: int) -> ScaleRun:
    watch.reset()
    t0 = time.perf_counter()
    await _scale_to(session, base, replicas)
    await watch.until(f"{replicas} pods Running", lambda: len(watch.running) >= replicas)
    run = ScaleRun(
        created_s=watch.nth(watch.seen, replicas) - t0,
        bound_s=watch.nth(watch.bound, replicas) - t0,
        running_s=watch.nth(watch.running, replicas) - t0,
        node_ms=[1000.0 * (watch.running[n] - watch.bound[n]) for n in watch.running if n in watch.bound],
        down_s=0.0,
    )
    t1 = time.perf_counter()
    await _scale_to(session, base, 0)
    await watch.until("every pod gone", lambda: not watch.live)
    run.down_s = time.perf_counter() - t1
    return run


def _slow_start(count: int) -> list[int]:
    """The ReplicaSet controller's batches: 1, 2, 4, ... until `count`."""
    out: list[int] = []
    batch = 1
    while sum(out) < count:
        out.append(min(batch, count - sum(out)))
        batch *= 2
    return out


async def _raw_run(session: aiohttp.ClientSession, base: str, watch: PodWatch, replicas: int, round_: int) -> RawRun:
    """The same pods, already bound, POSTed in the ReplicaSet controller's batches."""
    watch.reset()
    url = f"{base}/api/v1/namespaces/{RAW_NS}/pods"

    def pod(i: int) -> JSON:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"raw-{round_}-{i}", "namespace": RAW_NS, "labels": {"app": "raw"}},
                "spec": {**_template_spec(), "nodeName": NODE}}

    t0 = time.perf_counter()
    i = 0
    for n in _slow_start(replicas):
        await asyncio.gather(*(request(session, "POST", url, pod(i + k), ok=(201,)) for k in range(n)))
        i += n
    created = time.perf_counter() - t0
    await watch.until(f"{replicas} bound pods Running", lambda: len(watch.running) >= replicas)
    run = RawRun(created_s=created, running_s=watch.nth(watch.running, replicas) - t0)
    await _delete_all(session, base, watch, RAW_NS)
    return run


async def _scale_section(server: servers.EdgekubeServer, replicas: int, repeats: int,
                         log: Callable[[str], None]) -> tuple[list[ScaleRun], list[RawRun]]:
    base = server.base
    async with client_session(server) as session:
        for ns in (SCALE_NS, RAW_NS):
            await ensure_namespace(session, base, ns)
        await request(session, "POST", f"{base}/apis/apps/v1/namespaces/{SCALE_NS}/deployments", _deployment(),
                       ok=(201,))
        pods = PodWatch(session, base, SCALE_NS)
        raw = PodWatch(session, base, RAW_NS)
        await pods.start()
        await raw.start()
        try:
            # Warm-up, not measured: the first pod through every path (ReplicaSet creation,
            # admission, scheduler, the test node's watch), at a small scale.
            await _scale_run(session, base, pods, 2)
            await _raw_run(session, base, raw, 2, -1)
            scale_runs: list[ScaleRun] = []
            raw_runs: list[RawRun] = []
            for r in range(repeats):
                s = await _scale_run(session, base, pods, replicas)
                server.check_alive()
                log(f"  scale 0->{replicas} #{r + 1}: created {s.created_s:.3f} s, bound {s.bound_s:.3f} s, "
                    f"Running {s.running_s:.3f} s (node p50 {common.percentile(s.node_ms, 50):.1f} ms); "
                    f"back to 0 in {s.down_s:.2f} s")
                b = await _raw_run(session, base, raw, replicas, r)
                server.check_alive()
                log(f"  raw {replicas} bound pods #{r + 1}: created {b.created_s:.3f} s, Running {b.running_s:.3f} s")
                scale_runs.append(s)
                raw_runs.append(b)
        finally:
            await pods.stop()
            await raw.stop()
    return scale_runs, raw_runs


# --- the scheduler with 20 nodes -----------------------------------------------------------


def sched_nodes() -> list[JSON]:
    """20 nodes in 4 zones; every 5th is tainted dedicated=edge:NoSchedule and labelled tier=edge."""
    out = []
    for j in range(NODES):
        name = f"sched-{j:02d}"
        labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "zone": f"z{j % ZONES}"}
        spec: JSON = {}
        if j % 5 == 0:
            labels["tier"] = "edge"
            spec["taints"] = [{"key": "dedicated", "value": "edge", "effect": "NoSchedule"}]
        resources_ = {"cpu": "16", "memory": "32Gi", "pods": "110", "ephemeral-storage": "50Gi"}
        out.append({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}, "spec": spec,
            "status": {"capacity": resources_, "allocatable": resources_,
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                       "message": "kubelet is posting ready status"}],
                       "addresses": [{"type": "InternalIP", "address": f"10.98.0.{j + 1}"}]},
        })
    return out


def sched_pod(i: int, namespace: str, *, node: str | None = None) -> JSON:
    """Pod i of the scheduler section: varied requests; 1 in 10 each with a nodeSelector,
    required node affinity, a toleration (+ preferred affinity for the tainted nodes), preferred
    pod anti-affinity; 1 in 20 with required pod anti-affinity by hostname (groups of 5)."""
    cpu = ("50m", "100m", "250m", "500m")[i % 4]
    mem = ("64Mi", "128Mi", "256Mi", "512Mi")[(i // 4) % 4]
    labels = {"app": f"bench-{i % 5}"}
    spec: JSON = {"containers": [{"name": "app", "image": "busybox:1.36",
                                  "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}
    kind = i % 10
    if kind == 0:
        spec["nodeSelector"] = {"zone": f"z{(i // 10) % ZONES}"}
    elif kind == 3:
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z0", "z1"]}]}]}}}
    elif kind == 5:
        spec["tolerations"] = [{"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"}]
        spec["affinity"] = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "preference": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["edge"]}]}}]}}
    elif kind == 7:
        spec["affinity"] = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                               "labelSelector": {"matchLabels": labels}}}]}}
    elif i % 20 == 9:
        group = {"spread": f"g{i // 100}"}
        labels.update(group)
        spec["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": group}}]}}
    if node is not None:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"p-{i:04d}", "namespace": namespace, "labels": labels, "uid": f"bench-{i}"},
            "spec": spec}


def _api_pod(pod: JSON) -> JSON:
    meta = {k: v for k, v in pod["metadata"].items() if k != "uid"}
    return {**pod, "metadata": meta}


async def _lease_and_node(session: aiohttp.ClientSession, base: str, node: JSON) -> None:
    name = node["metadata"]["name"]
    await request(session, "POST", f"{base}/api/v1/nodes", {k: v for k, v in node.items() if k != "status"},
                   ok=(201,))
    await request(session, "PATCH", f"{base}/api/v1/nodes/{name}/status", {"status": node["status"]},
                   headers=MERGE)
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": name, "namespace": "kube-node-lease"},
             "spec": {"holderIdentity": name, "leaseDurationSeconds": 600,
                      "renewTime": clock_mod.rfc3339(clock_mod.WallClock().now())}}
    await request(session, "POST", f"{base}/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                   lease, ok=(201, 409))


async def _sched_warm_up(session: aiohttp.ClientSession, url: str, watch: PodWatch,
                         nodes: list[JSON] | None, count: int = 10) -> None:
    watch.reset()
    ns = url.split("/namespaces/")[1].split("/")[0]
    for i in range(count):
        node = nodes[i % len(nodes)]["metadata"]["name"] if nodes else None
        await request(session, "POST", url, _api_pod(sched_pod(i, ns, node=node)), ok=(201,))
    await watch.until("warm-up pods bound", lambda: len(watch.bound) >= count)


async def _sched_section(server: servers.EdgekubeServer, pods: int, repeats: int,
                         log: Callable[[str], None]) -> tuple[list[SchedRun], list[SchedRaw]]:
    base = server.base
    nodes = sched_nodes()
    async with client_session(server) as session:
        for ns in (SCHED_NS, SCHED_RAW_NS):
            await ensure_namespace(session, base, ns)
        for n in nodes:
            await _lease_and_node(session, base, n)
        watch = PodWatch(session, base, SCHED_NS)
        raw_watch = PodWatch(session, base, SCHED_RAW_NS)
        await watch.start()
        await raw_watch.start()
        url = f"{base}/api/v1/namespaces/{SCHED_NS}/pods"
        raw_url = f"{base}/api/v1/namespaces/{SCHED_RAW_NS}/pods"
        try:
            # Warm-up (not measured): a few pods through both paths.
            await _sched_warm_up(session, url, watch, None)
            await _delete_all(session, base, watch, SCHED_NS)
            await _sched_warm_up(session, raw_url, raw_watch, nodes)
            await _delete_all(session, base, raw_watch, SCHED_RAW_NS)
            runs: list[SchedRun] = []
            raws: list[SchedRaw] = []
            for r in range(repeats):
                watch.reset()
                t0 = time.perf_counter()
                await pool([_api_pod(sched_pod(i, SCHED_NS)) for i in range(pods)], CONCURRENCY,
                            lambda p: request(session, "POST", url, p, ok=(201,)))
                posted = time.perf_counter() - t0
                await watch.until(f"{pods} pods bound", lambda: len(watch.bound) >= pods)
                run = SchedRun(pods=pods, posted_s=posted, bound_s=watch.nth(watch.bound, pods) - t0)
                server.check_alive()
                log(f"  schedule {pods} pods on {NODES} nodes #{r + 1}: {run.rate:.0f} pods bound/s "
                    f"(POSTs done at {run.posted_s:.2f} s, last bound at {run.bound_s:.2f} s)")
                await _delete_all(session, base, watch, SCHED_NS)

                raw_watch.reset()
                bound_pods = [_api_pod(sched_pod(i, SCHED_RAW_NS, node=nodes[i % NODES]["metadata"]["name"]))
                              for i in range(pods)]
                t0 = time.perf_counter()
                await pool(bound_pods, CONCURRENCY, lambda p: request(session, "POST", raw_url, p, ok=(201,)))
                await raw_watch.until(f"{pods} pods seen", lambda: len(raw_watch.seen) >= pods)
                raw = SchedRaw(pods=pods, seen_s=raw_watch.nth(raw_watch.seen, pods) - t0)
                log(f"  raw: {pods} pods with nodeName set #{r + 1}: {raw.rate:.0f} pods/s")
                await _delete_all(session, base, raw_watch, SCHED_RAW_NS)
                runs.append(run)
                raws.append(raw)
        finally:
            await watch.stop()
            await raw_watch.stop()
    return runs, raws


# --- one scheduling cycle, in process -------------------------------------------------------


async def _cycles(tmp: Path, pods: int) -> tuple[list[Cycle], int]:
    """filter + pick for one pod over a fresh Snapshot of the 20 nodes, with 100 and then
    `pods` pods placed (placed by the same algorithm, as the scheduler's assume step does)."""
    catalog = resources.Catalog()
    store = store_mod.Store(
        store_mod.StoreConfig(path=tmp, map_size_mb=32, max_size_mb=64, compaction_interval_seconds=0),
        memory_prefixes=[i.key_prefix() for i in catalog.all() if i.memory_tier],
    )
    await store.start()
    try:
        clock = clock_mod.WallClock()
        registry = rest.Registry(store, catalog=catalog, clock=clock, network=rest.ServiceNetwork())
        client = local.LocalClient(registry, manager="bench")
        factory = informer.InformerFactory(client)
        recorder = events_mod.EventRecorder(client, clock=clock)
        sched = scheduler_mod.Scheduler(client, factory, recorder.for_component(scheduler_mod.NAME), clock=clock)
        nodes = {n["metadata"]["name"]: n for n in sched_nodes()}
        placed: dict[str, dict[str, JSON]] = {name: {} for name in nodes}

        def snapshot() -> plugins.Snapshot:
            return plugins.Snapshot({name: plugins.NodeInfo(node, placed[name]) for name, node in nodes.items()})

        def place(pod: JSON) -> None:
            snap = snapshot()
            feasible, reasons = sched.filter(pod, snap)
            if not feasible:
                raise RuntimeError(f"{pod['metadata']['name']} fits nowhere: {reasons}")
            node = sched.pick(pod, feasible, snap)
            key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
            placed[node][key] = {**pod, "spec": {**pod["spec"], "nodeName": node}}

        def measure(first: int, count: int) -> Cycle:
            lat: list[float] = []
            for i in range(first, first + count):
                pod = sched_pod(i, SCHED_NS)
                t0 = time.perf_counter()
                snap = snapshot()
                feasible, _ = sched.filter(pod, snap)
                if feasible:
                    sched.pick(pod, feasible, snap)
                lat.append(time.perf_counter() - t0)
            n_placed = sum(len(p) for p in placed.values())
            return Cycle(placed=n_placed, cycles=count, p50_us=1e6 * common.percentile(lat, 50),
                         p99_us=1e6 * common.percentile(lat, 99), mean_us=1e6 * statistics.fmean(lat))

        out = []
        for i in range(100):
            place(sched_pod(i, SCHED_NS))
        out.append(measure(100, pods))
        if pods > 100:
            for i in range(100, pods):
                place(sched_pod(i, SCHED_NS))
            out.append(measure(pods, pods))
        return out, pods * len(out)
    finally:
        await store.close()


# --- entry point ----------------------------------------------------------------------------


def run(*, replicas: int, repeats: int, sched_pods: int, sched_repeats: int,
        log: Callable[[str], None] = print) -> ControlPlaneResult:
    tmp = common.temp_dir("controlplane")
    node: testnode.NodeProcess | None = None
    try:
        server = servers.EdgekubeServer(tmp / "data", extra=SERVER_ARGS)
        try:
            ready_s = asyncio.run(server.wait_ready())
            log(f"  edgekube server ready in {ready_s:.1f}s (pid {server.pid}); starting test node {NODE}")
            node = testnode.NodeProcess(server.data_dir, server.base, NODE, "--pods", "110",
                                        log=tmp / "testnode.log").start()
            scale, raw = asyncio.run(_scale_section(server, replicas, repeats, log))
        finally:
            if node is not None:
                node.stop()
            server.stop()

        server = servers.EdgekubeServer(tmp / "data2", extra=SERVER_ARGS)
        try:
            asyncio.run(server.wait_ready())
            log(f"  fresh edgekube server for the scheduler; {NODES} nodes, {sched_pods} pods")
            sched, sched_raw = asyncio.run(_sched_section(server, sched_pods, sched_repeats, log))
        finally:
            server.stop()

        (tmp / "cycle").mkdir()
        cycles, decisions = asyncio.run(_cycles(tmp / "cycle", sched_pods))
        for c in cycles:
            log(f"  filter+pick with {c.placed} pods placed: {c.mean_us:.0f} us mean "
                f"(p50 {c.p50_us:.0f}, p99 {c.p99_us:.0f}) = {c.rate:,.0f} decisions/s")
    finally:
        common.remove_dir(tmp)
    return ControlPlaneResult(
        replicas=replicas, scale=scale, raw=raw, nodes=NODES, sched_pods=sched_pods, sched=sched,
        sched_raw=sched_raw, cycles=cycles, decisions=decisions, server_ready_s=ready_s,
    )
