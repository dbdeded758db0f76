"""Section 8: how long one heavy request can hold the event loop, against a bare aiohttp server.

    .venv/bin/python benchmarks/loop_bench.py [--repeats 3] [--case NAME]...

While each heavy request runs, a prober in another process sends small GETs one after another on
one keep-alive connection (an 860-byte ConfigMap through the whole API path: TLS, authentication,
the registry) and times each. A request that holds the server's event loop for S ms delays the
probe waiting behind it by about S ms, so the worst probe latency seen while the heavy request
was in flight is the longest stall it caused, plus the cost of one probe. The prober runs in a
process of its own so that the benchmark's own work (encoding big bodies, reading big answers)
does not delay it; they still share the machine's CPUs, with the server's worker thread too.

Heavy requests (each one alone, `repeats` times; the figure is the median over the repeats of
the worst probe latency of each):
- create-cr / update-cr / get-cr: a custom object with 45,000 keys (JSON, 1 MB) POSTed, PUT
  with one value changed, read back;
- create-cr-yaml: the same object as YAML; create-crd: a 1 MB CustomResourceDefinition;
- apply-cm: server-side apply (YAML) of a ConfigMap with 20,000 keys over one with 20,000 others;
- smp-env: a strategic merge patch changing every item of a 10,000-entry env list (of a paused
  Deployment, so that its controller makes no ReplicaSet of it: the figure is the request's);
- json-patch: 10,000 JSON-patch operations on a ConfigMap;
- list-pods / table-pods: a LIST of 5,000 pods as JSON and as a Table;
- label-selector: a LIST of those pods with a 1,500-term label selector;
- field-selector: the same with a field selector every pod matches;
- watch-fanout: a 45,000-key ConfigMap written while 20 watches of its namespace are open, until
  every watch has its event.

Baseline, in the same run: the bare aiohttp server (`bare_server.py`) probed the same way, idle
and, right after each heavy request, while a worker thread of its own computes in Python for as
long as that request took and it then stores the 1 MB POST body in LMDB: what the event loop of
any Python server beside one computing thread sees on this machine at that moment (the
interpreter lock's handoffs, the CPUs shared with the prober and the client), with none of
edgekube's own work on its loop. The ratio to it is the target: edgekube's loop adds no stall of
its own beyond what its worker's mere presence costs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import aiohttp  # noqa: E402
import orjson  # noqa: E402
import yaml  # noqa: E402

from benchmarks import common, servers  # noqa: E402

# The words: no request may hold the event loop for more than a few ms of CPU.
TARGET_CPU_MS = 5.0
PROBE_PATH = "/api/v1/namespaces/default/configmaps/loop-probe"
NS = "loop-bench"
PODS_NS = "loop-pods"
PODS = 5000
WATCHERS = 20
JSON_H = {"Content-Type": "application/json", "Accept": "application/json"}
CRD_GROUP = "loop.edgekube.io"
BIG_KEYS = 45_000  # with their managedFields, just under the 1.5 MiB an object may take
SETTLE_S = 0.3  # probes before and after each heavy request


@dataclasses.dataclass
class Case:
    name: str
    what: str
    worst_ms: list[float]  # per repeat: the worst probe latency while the request was in flight
    took_ms: list[float]  # per repeat: the heavy request itself, send to answer
    probes: list[int]  # per repeat: probes answered meanwhile
    # per repeat, right after: the bare server's worst while its worker thread computes for as
    # long as the heavy request took, then it stores a 1 MB POST
    bare_ms: list[float]
    windows: list[tuple[float, float]] = dataclasses.field(default_factory=list)  # per repeat: monotonic start, end
    # per repeat: the most CPU one handle of the server's event loop used while the request was
    # in flight (a task's step, a callback: the loop serves nothing else meanwhile)
    cpu_ms: list[float] = dataclasses.field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.worst_ms)

    @property
    def cpu_median_ms(self) -> float:
        return statistics.median(self.cpu_ms)

    @property
    def ratio(self) -> float:
        return self.median_ms / self.bare_median_ms

    @property
    def bare_median_ms(self) -> float:
        return statistics.median(self.bare_ms)


@dataclasses.dataclass
class LoopResult:
    cases: list[Case]
    bare_idle_ms: float  # bare server: worst probe latency while idle
    bare_post_ms: float  # ... while it stores a 1 MB POST body (median over all the cases' repeats)
    idle_ms: float  # edgekube: worst probe latency while idle
    probe_p50_ms: float  # edgekube: median probe latency while idle
    repeats: int

    def worst(self) -> Case:
        """The class with the longest stall seen from outside, against the bare loop's."""
        return max(self.cases, key=lambda c: c.ratio)

    def worst_cpu(self) -> Case:
        return max(self.cases, key=lambda c: c.cpu_median_ms)


# --- the prober: a process of its own -------------------------------------------------------


def _probe_main(base: str, tls: str, path: str) -> None:
    """Send GETs back to back until stdin closes; print `start end` (monotonic s) per answer."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=os.path.join(tls, "ca.crt"))
    ctx.load_cert_chain(os.path.join(tls, "admin.crt"), os.path.join(tls, "admin.key"))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(4096) else None)
        out: list[tuple[float, float]] = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1, ssl=ctx)) as session:
            print("ready", flush=True)
            while not stop.is_set():
                t0 = time.monotonic()
                async with session.get(base + path) as r:
                    await r.read()
                    if r.status != 200:
                        print(f"error {r.status}", flush=True)
                out.append((t0, time.monotonic()))
        sys.stdout.write("".join(f"{a:.6f} {b:.6f}\n" for a, b in out))
        sys.stdout.flush()

    asyncio.run(main())


class Prober:
    def __init__(self, base: str, tls: Path) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--probe", base, str(tls), PROBE_PATH],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=common.REPO,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode().strip()
        if line != "ready":
            raise RuntimeError(f"prober did not start: {line!r}")

    def finish(self) -> list[tuple[float, float]]:
        out, _ = self._proc.communicate(b"", timeout=60)
        probes = []
        for line in out.decode().splitlines():
            if line.startswith("error"):
                raise RuntimeError(f"probe failed: {line}")
            a, b = line.split()
            probes.append((float(a), float(b)))
        return probes


def _worst_during(probes: list[tuple[float, float]], start: float, end: float) -> tuple[float, int]:
    """Worst latency (ms) of the probes in flight at any time in [start, end], and their count."""
    during = [b - a for a, b in probes if b >= start and a <= end]
    return (1000.0 * max(during, default=0.0), len(during))


# --- objects ---------------------------------------------------------------------------------


def _crd(plural: str, kind: str, *, properties: dict[str, Any] | None = None) -> dict[str, Any]:
    spec_schema: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if properties is not None:
        spec_schema = {"type": "object", "properties": properties}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{CRD_GROUP}"},
        "spec": {
            "group": CRD_GROUP, "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": f"{kind}List"},
            "versions": [{"name": "v1", "served": True, "storage": True,
                          "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec_schema}}}}],
        },
    }


def _big_cr(name: str, keys: int = BIG_KEYS, value: str = "v") -> dict[str, Any]:
    return {"apiVersion": f"{CRD_GROUP}/v1", "kind": "Blob", "metadata": {"name": name, "namespace": NS},
            "spec": {f"key-{i:06d}": f"{value}-{i}" for i in range(keys)}}


def _big_crd() -> dict[str, Any]:
    """A CRD of about 1 MB: a schema of 4,000 described properties, as large generated CRDs are."""
    props = {f"field{i:04d}": {"type": "string", "description": f"Field number {i}. " + "Lorem ipsum dolor sit "
                                  "amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore. " * 2,
                               "maxLength": 253}
             for i in range(4000)}
    return _crd("bigschemas", "BigSchema", properties=props)


def _configmap(name: str, keys: int, *, prefix: str = "k", value: str = "v") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS},
            "data": {f"{prefix}{i:06d}": f"{value}{i}" for i in range(keys)}}


def _deployment(name: str, env: int, value: str = "a") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
        "spec": {
            # Paused: the Deployment controller makes no ReplicaSet of it (a copy of the 10,000
            # entries), so the figure is the request's own.
            "replicas": 0, "paused": True, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{
                "name": "c", "image": "busybox",
                "env": [{"name": f"VAR_{i:05d}", "value": f"{value}{i}"} for i in range(env)],
            }]}},
        },
    }


def _pod(i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"pod-{i:05d}", "namespace": PODS_NS,
                         "labels": {"app": "loop", "shard": str(i % 10), "tier": "edge"}},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
                                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}


def _label_selector(terms: int = 1500) -> str:
    # `!key` terms (the key must not be there): every pod meets all of them. Keys of three
    # characters keep the request line under aiohttp's 8 KiB.
    return ",".join(f"!{i:03x}" for i in range(terms))


# --- the run ---------------------------------------------------------------------------------


class Client:
    def __init__(self, base: str, ctx: ssl.SSLContext) -> None:
        self.base = base
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64, ssl=ctx),
                                             timeout=aiohttp.ClientTimeout(total=600))

    async def call(self, method: str, path: str, body: bytes | None = None, *, headers: dict[str, str] | None = None,
                   expect: tuple[int, ...] = (200, 201)) -> bytes:
        async with self.session.request(method, self.base + path, data=body, headers=headers or JSON_H) as r:
            data = await r.read()
            if r.status not in expect:
                raise RuntimeError(f"{method} {path} -> {r.status}: {data[:300]!r}")
            return data

    async def close(self) -> None:
        await self.session.close()


async def _setup(c: Client, log: Callable[[str], None]) -> None:
    await c.call("POST", "/api/v1/namespaces/default/configmaps",
                 orjson.dumps({"metadata": {"name": "loop-probe"}, "data": {"a": "x" * 600}}), expect=(201, 409))
    for ns in (NS, PODS_NS):
        await c.call("POST", "/api/v1/namespaces", orjson.dumps({"metadata": {"name": ns}}), expect=(201, 409))
    await c.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                 orjson.dumps(_crd("blobs", "Blob")), expect=(201, 409))
    for _ in range(100):  # until the CRD is served
        try:
            await c.call("GET", f"/apis/{CRD_GROUP}/v1/namespaces/{NS}/blobs")
            break
        except RuntimeError:
            await asyncio.sleep(0.1)
    t0 = time.monotonic()
    names = iter(range(PODS))

    async def filler() -> None:
        for i in names:
            await c.call("POST", f"/api/v1/namespaces/{PODS_NS}/pods", orjson.dumps(_pod(i)), expect=(201, 409))

    await asyncio.gather(*(filler() for _ in range(32)))
    log(f"  set up: {PODS} pods in {time.monotonic() - t0:.1f} s")


HeavyFn = Callable[[Client, int], Awaitable[None]]


def _cases() -> list[tuple[str, str, HeavyFn, HeavyFn | None]]:
    """(name, what, heavy request, preparation before it (not measured))."""
    blob_path = f"/apis/{CRD_GROUP}/v1/namespaces/{NS}/blobs"
    current: dict[str, Any] = {}

    async def create_cr(c: Client, i: int) -> None:
        await c.call("POST", blob_path, orjson.dumps(_big_cr(f"blob-{i}")), expect=(201,))

    async def prep_update(c: Client, i: int) -> None:
        obj = orjson.loads(await c.call("GET", f"{blob_path}/blob-{i}"))
        obj["spec"]["key-000001"] = f"changed-{i}"
        obj.pop("status", None)
        current["update"] = orjson.dumps(obj)

    async def update_cr(c: Client, i: int) -> None:
        await c.call("PUT", f"{blob_path}/blob-{i}", current["update"])

    async def get_cr(c: Client, i: int) -> None:
        await c.call("GET", f"{blob_path}/blob-{i}")

    async def create_cr_yaml(c: Client, i: int) -> None:
        body = current.setdefault("yaml", yaml.safe_dump(_big_cr("x"), sort_keys=False).encode())
        await c.call("POST", blob_path, body.replace(b"name: x", f"name: yblob-{i}".encode(), 1),
                     headers={"Content-Type": "application/yaml", "Accept": "application/json"}, expect=(201,))

    async def prep_crd(c: Client, i: int) -> None:
        await c.call("DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/bigschemas.{CRD_GROUP}",
                     expect=(200, 404))
        for _ in range(200):
            try:
                await c.call("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/bigschemas.{CRD_GROUP}",
                             expect=(404,))
                break
            except RuntimeError:
                await asyncio.sleep(0.05)
        current["crd"] = orjson.dumps(_big_crd())

    async def create_crd(c: Client, i: int) -> None:
        await c.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", current["crd"], expect=(201,))

    apply_h = {"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"}

    async def prep_apply(c: Client, i: int) -> None:
        await c.call("PATCH", f"/api/v1/namespaces/{NS}/configmaps/applied-{i}?fieldManager=a&force=true",
                     yaml.safe_dump(_configmap(f"applied-{i}", 20_000, prefix="a")).encode(), headers=apply_h)
        current["apply"] = yaml.safe_dump(_configmap(f"applied-{i}", 20_000, prefix="b")).encode()

    async def apply_cm(c: Client, i: int) -> None:
        await c.call("PATCH", f"/api/v1/namespaces/{NS}/configmaps/applied-{i}?fieldManager=b&force=true",
                     current["apply"], headers=apply_h)

    async def prep_smp(c: Client, i: int) -> None:
        await c.call("POST", f"/apis/apps/v1/namespaces/{NS}/deployments", orjson.dumps(_deployment(f"env-{i}", 10_000)))
        patch = {"spec": {"template": {"spec": {"containers": [
            {"name": "c", "env": [{"name": f"VAR_{k:05d}", "value": f"b{k}"} for k in range(10_000)]}]}}}}
        current["smp"] = orjson.dumps(patch)

    async def smp_env(c: Client, i: int) -> None:
        await c.call("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/env-{i}", current["smp"],
                     headers={"Content-Type": "application/strategic-merge-patch+json", "Accept": "application/json"})

    async def prep_jsonpatch(c: Client, i: int) -> None:
        await c.call("POST", f"/api/v1/namespaces/{NS}/configmaps", orjson.dumps(_configmap(f"patched-{i}", 10_000)))
        ops = [{"op": "replace", "path": f"/data/k{k:06d}", "value": f"new{k}"} for k in range(10_000)]
        current["jsonpatch"] = orjson.dumps(ops)

    async def json_patch(c: Client, i: int) -> None:
        await c.call("PATCH", f"/api/v1/namespaces/{NS}/configmaps/patched-{i}", current["jsonpatch"],
                     headers={"Content-Type": "application/json-patch+json", "Accept": "application/json"})

    pods_path = f"/api/v1/namespaces/{PODS_NS}/pods"

    async def list_pods(c: Client, i: int) -> None:
        await c.call("GET", pods_path)

    async def table_pods(c: Client, i: int) -> None:
        await c.call("GET", pods_path, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})

    selector = _label_selector()

    async def label_selector(c: Client, i: int) -> None:
        await c.call("GET", pods_path + "?labelSelector=" + selector)

    async def field_selector(c: Client, i: int) -> None:
        await c.call("GET", pods_path + "?fieldSelector=status.phase%3DPending,spec.nodeName%3D")

    async def watch_fanout(c: Client, i: int) -> None:
        streams = current["watches"]
        await c.call("POST", f"/api/v1/namespaces/{NS}/configmaps", current["fanout"].replace(
            b'"name":"fanout"', f'"name":"fanout-{i}"'.encode(), 1), expect=(201,))
        await asyncio.gather(*(_until_event(s, f"fanout-{i}") for s in streams))

    async def prep_fanout(c: Client, i: int) -> None:
        for s in current.pop("watches", []):
            s.close()
        current["fanout"] = orjson.dumps(_configmap("fanout", BIG_KEYS))
        rv = orjson.loads(await c.call("GET", f"/api/v1/namespaces/{NS}/configmaps?limit=1"))["metadata"]["resourceVersion"]
        current["watches"] = [await c.session.get(f"{c.base}/api/v1/namespaces/{NS}/configmaps?watch=1&resourceVersion={rv}")
                              for _ in range(WATCHERS)]

    return [
        ("create-cr", "POST a custom object of 45,000 keys (JSON, 1 MB)", create_cr, None),
        ("update-cr", "PUT it back with one value changed", update_cr, prep_update),
        ("get-cr", "GET it", get_cr, None),
        ("create-cr-yaml", "POST the same object as YAML", create_cr_yaml, None),
        ("create-crd", "POST a 1 MB CustomResourceDefinition", create_crd, prep_crd),
        ("apply-cm", "server-side apply of a 20,000-key ConfigMap over another manager's 20,000", apply_cm, prep_apply),
        ("smp-env", "strategic merge patch of all 10,000 items of a container's env", smp_env, prep_smp),
        ("json-patch", "10,000 JSON-patch operations", json_patch, prep_jsonpatch),
        ("list-pods", f"LIST {PODS:,} pods", list_pods, None),
        ("table-pods", f"LIST {PODS:,} pods as a Table", table_pods, None),
        ("label-selector", f"LIST {PODS:,} pods with a 1,500-term label selector", label_selector, None),
        ("field-selector", f"LIST {PODS:,} pods with a field selector", field_selector, None),
        ("watch-fanout", f"a 45,000-key ConfigMap created under {WATCHERS} watches", watch_fanout, prep_fanout),
    ]


async def _until_event(resp: aiohttp.ClientResponse, name: str) -> None:
    """Read a watch stream until an event naming `name` has arrived whole."""
    needle = f'"name":"{name}"'.encode()
    head = b""  # the start of the current line (where the name is)
    while True:
        chunk = await resp.content.readany()
        if not chunk:
            raise RuntimeError(f"watch ended before {name}")
        while chunk:
            nl = chunk.find(b"\n")
            part, chunk = (chunk, b"") if nl < 0 else (chunk[:nl], chunk[nl + 1:])
            if len(head) < 4096:
                head += part[:4096]
            if nl >= 0:
                if needle in head:
                    return
                head = b""


async def _measure(probe_base: str, tls: Path, action: Callable[[], Awaitable[None]],
                   windows: list[tuple[float, float]] | None = None) -> tuple[float, float, int]:
    """(worst probe latency during `action` in ms, its duration in ms, probes during it); its
    window (monotonic start and end) appended to `windows`."""
    prober = await asyncio.to_thread(Prober, probe_base, tls)
    try:
        await asyncio.sleep(SETTLE_S)
        start = time.monotonic()
        await action()
        end = time.monotonic()
        if windows is not None:
            windows.append((start, end))
        await asyncio.sleep(SETTLE_S)
    finally:
        probes = await asyncio.to_thread(prober.finish)
    worst, count = _worst_during(probes, start, end)
    return worst, 1000.0 * (end - start), count


async def _idle(base: str, tls: Path, seconds: float) -> tuple[float, float]:
    """Worst and median probe latency (ms) over `seconds` of an idle server."""
    prober = await asyncio.to_thread(Prober, base, tls)
    await asyncio.sleep(seconds)
    probes = await asyncio.to_thread(prober.finish)
    lat = [1000.0 * (b - a) for a, b in probes[5:]]
    return max(lat), statistics.median(lat)


def _handles(trace: Path) -> list[tuple[float, float]]:
    """(start, CPU ms) of each loop handle the trace recorded."""
    out = []
    for line in trace.read_text().splitlines():
        rec = json.loads(line) if line.strip() else {}
        if rec.get("kind") == "handle":
            out.append((rec["t0"], rec["cpu_ms"]))
    return out


async def _run(data_dir: Path, repeats: int, only: set[str], log: Callable[[str], None],
               trace: Path | None = None) -> LoopResult:
    # The server runs under loop_trace.py: light (handles' CPU only) unless a full trace is asked.
    light = trace is None
    if trace is None:
        trace = data_dir.parent / f"{data_dir.name}-handles.jsonl"
    launcher = [sys.executable, str(Path(__file__).with_name("loop_trace.py")), str(trace)]
    server = servers.EdgekubeServer(data_dir, extra=["--disable", "scheduler"], launcher=launcher,
                                    env={**os.environ, "LOOP_TRACE_LIGHT": "1"} if light else None)
    bare: servers.BareServer | None = None
    cases: list[Case] = []
    try:
        ready_s = await server.wait_ready()
        log(f"  edgekube server ready in {ready_s:.1f}s on {server.base} (pid {server.pid})")
        # The baseline, probed the same way right after each heavy request (so that both see the
        # machine as it was): the bare server storing a 1 MB POST body.
        body_file = data_dir.parent / f"{data_dir.name}-probe-body.json"
        body_file.write_bytes(b'{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"loop-probe"},"data":{"a":"'
                              + b"x" * 600 + b'"}}')
        bare = servers.BareServer(server.tls, body_file, data_dir.parent / f"{data_dir.name}-bare.log",
                                  db=data_dir.parent / f"{data_dir.name}-bare-db")
        await bare.wait_ready()
        c = Client(server.base, server.ssl_context())
        bc = Client(bare.base, server.ssl_context())
        big = orjson.dumps(_big_cr("bare"))
        try:
            await _setup(c, log)
            idle_ms, p50_ms = await _idle(server.base, server.tls, 2.0)
            bare_idle, _ = await _idle(bare.base, server.tls, 2.0)
            log(f"  idle: probe p50 {p50_ms:.2f} ms, worst {idle_ms:.2f} ms (bare aiohttp: worst {bare_idle:.2f} ms)")
            for name, what, heavy, prep in _cases():
                if only and name not in only:
                    continue
                case = Case(name, what, [], [], [], [])
                for i in range(repeats):
                    if prep is not None:
                        await prep(c, i)
                    worst, took, count = await _measure(server.base, server.tls, lambda h=heavy, i=i: h(c, i),  # type: ignore[misc]
                                                         case.windows)
                    server.check_alive()
                    case.worst_ms.append(worst)
                    case.took_ms.append(took)
                    case.probes.append(count)
                    # The same span of a worker thread's Python beside the bare loop, with the
                    # same 1 MB body sent: what the loop of any Python server sees meanwhile.
                    bare_worst, _, _ = await _measure(bare.base, server.tls,
                                                      lambda t=took: bc.call("POST", f"/big?work_ms={t:.0f}", big))  # type: ignore[misc]
                    case.bare_ms.append(bare_worst)
                log(f"  {name:15} worst probe {', '.join(f'{w:7.1f}' for w in case.worst_ms)} ms  "
                    f"(request {', '.join(f'{t:.0f}' for t in case.took_ms)} ms; probes {case.probes}; "
                    f"bare aiohttp {', '.join(f'{w:.1f}' for w in case.bare_ms)} ms)")
                cases.append(case)
        finally:
            await c.close()
            await bc.close()
    finally:
        if bare is not None:
            bare.stop()
        server.stop()
    handles = _handles(trace)
    for case in cases:
        # A handle that began in the window (its CPU is spent from its start on).
        case.cpu_ms = [max((cpu for t0, cpu in handles if start <= t0 <= end), default=0.0) for start, end in case.windows]
    return LoopResult(cases, bare_idle, statistics.median(w for case in cases for w in case.bare_ms), idle_ms,
                      p50_ms, repeats)


def run(repeats: int, log: Callable[[str], None] = print, only: set[str] | None = None,
        trace: Path | None = None) -> LoopResult:
    data_dir = common.temp_dir("loop")
    try:
        return asyncio.run(_run(data_dir / "data", repeats, only or set(), log, trace))
    finally:
        common.remove_dir(data_dir)


def trace_report(res: LoopResult, trace: Path) -> str:
    """Per class: the longest handles of the loop (wall and CPU ms, what, the most sampled stack)
    and the longest interpreter-lock holds, among the trace's records inside its windows."""
    recs = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]
    out = []
    for case in res.cases:
        def inside(r: dict[str, Any], case: Case = case) -> bool:
            return any(a - 0.05 <= r["t0"] <= b for a, b in case.windows)

        handles = sorted((r for r in recs if r["kind"] == "handle" and inside(r)), key=lambda r: -r["wall_ms"])
        gils = sorted((r for r in recs if r["kind"] == "gil" and inside(r)), key=lambda r: -r["late_ms"])
        gcs = sorted((r for r in recs if r["kind"] == "gc" and inside(r)), key=lambda r: -r["wall_ms"])
        worst_cpu = max((r["cpu_ms"] for r in handles), default=0.0)
        out.append(f"== {case.name}: probe {case.median_ms:.1f} ms; longest handle "
                   f"{handles[0]['wall_ms'] if handles else 0:.1f} ms wall, most CPU in one handle {worst_cpu:.1f} ms; "
                   f"longest lock hold {gils[0]['late_ms'] if gils else 0:.1f} ms")
        for r in handles[:4]:
            top = sorted(r["stacks"].items(), key=lambda kv: -kv[1])[:2]
            out.append(f"   handle {r['wall_ms']:.1f} wall {r['cpu_ms']:.1f} cpu  {r['what']}")
            for st, n in top:
                out.append(f"      {n}x {st[:600]}")
        for r in gcs[:3]:
            out.append(f"   gc gen {r['generation']} {r['wall_ms']:.1f} ms on {r['thread']}: "
                       f"{r['stack'][:300]}")
        for r in gils[:3]:
            out.append(f"   lock {r['late_ms']:.1f} ms")
            for name, st in r["threads"].items():
                if "loop-trace" not in name:
                    out.append(f"      {name}: {st[:400]}")
    return "\n".join(out)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        _probe_main(*sys.argv[2:5])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--case", action="append", default=[], help="run only this case (repeatable)")
    p.add_argument("--trace", type=Path, help="run the server under loop_trace.py, writing its records here, "
                   "and print, per class, the longest loop handles and lock holds seen in its windows")
    args = p.parse_args()
    if args.trace is not None:
        args.trace.unlink(missing_ok=True)
    res = run(args.repeats, only=set(args.case), trace=args.trace)
    if args.trace is not None:
        print(trace_report(res, args.trace))
    print(json.dumps({c.name: {"median_ms": round(c.median_ms, 1), "worst_ms": [round(w, 1) for w in c.worst_ms],
                               "loop_cpu_ms": [round(w, 1) for w in c.cpu_ms]}
                      for c in res.cases}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
