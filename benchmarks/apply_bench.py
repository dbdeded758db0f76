"""Section 4: applying a 20-object manifest, against the plain create path, in the same run.

- Server-side apply: each object PATCHed as `application/apply-patch+yaml` (creating it on the
  first round, then re-applied with one field changed), latency per object; baseline: the same
  objects POSTed (plain create) under fresh names.
- kubectl: `kubectl apply -f` (client-side) and `kubectl apply --server-side -f` of the same
  manifest into a fresh namespace, wall time per object; baseline: `kubectl create -f`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from benchmarks import common, servers

REPO = Path(__file__).resolve().parent.parent
KUBECTL = REPO / "tools" / "bin" / "kubectl-1.36"
JSON = dict[str, Any]


@dataclasses.dataclass
class ApplyResult:
    objects: int
    rounds: int
    ssa_p50_ms: float
    ssa_p99_ms: float
    create_p50_ms: float
    create_p99_ms: float
    kubectl_apply_ms: float  # per object, client-side apply
    kubectl_ssa_ms: float  # per object, --server-side
    kubectl_create_ms: float  # per object, kubectl create -f
    kubectl_runs: int


def manifest(suffix: str, replicas: int = 1) -> list[JSON]:
    """20 objects: 5 each of Deployment, Service, ConfigMap, Secret."""
    out: list[JSON] = []
    for i in range(5):
        name = f"app{i}-{suffix}"
        out.append({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                         {"name": "app", "image": "busybox:1.36", "ports": [{"containerPort": 8080}],
                          "env": [{"name": "MODE", "value": "edge"}]}]}}},
        })
        out.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                    "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}})
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                    "data": {"settings": "x" * 200, "replicas": str(replicas)}})
        out.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                    "stringData": {"token": f"secret-{i}"}})
    return out


_PLURAL = {"Deployment": ("apis/apps/v1", "deployments"), "Service": ("api/v1", "services"),
           "ConfigMap": ("api/v1", "configmaps"), "Secret": ("api/v1", "secrets")}


def _url(base: str, ns: str, obj: JSON, *, name: bool) -> str:
    prefix, plural = _PLURAL[obj["kind"]]
    url = f"{base}/{prefix}/namespaces/{ns}/{plural}"
    return f"{url}/{obj['metadata']['name']}" if name else url


async def _timed(session: aiohttp.ClientSession, method: str, url: str, body: bytes, ctype: str) -> float:
    t0 = time.perf_counter()
    async with session.request(method, url, data=body, headers={"Content-Type": ctype}) as r:
        await r.read()
        if r.status not in (200, 201):
            raise RuntimeError(f"{method} {url}: {r.status} {await r.text()}")
    return time.perf_counter() - t0


async def _api(server: servers.EdgekubeServer, rounds: int) -> tuple[list[float], list[float]]:
    conn = aiohttp.TCPConnector(limit=1, ssl=server.ssl_context())
    ssa: list[float] = []
    create: list[float] = []
    async with aiohttp.ClientSession(connector=conn) as session:
        for r in range(rounds):
            for obj in manifest("ssa", replicas=1 + r % 3):
                url = _url(server.base, "default", obj, name=True) + "?fieldManager=bench&force=true"
                ssa.append(await _timed(session, "PATCH", url, json.dumps(obj).encode(), "application/apply-patch+yaml"))
            for obj in manifest(f"c{r}"):
                create.append(await _timed(session, "POST", _url(server.base, "default", obj, name=False),
                                           json.dumps(obj).encode(), "application/json"))
    return ssa, create


def _kubectl(env: dict[str, str], *args: str, stdin: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([str(KUBECTL), *args], input=stdin, capture_output=True, text=True, env=env, timeout=120)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
    return took


def _kubectl_runs(server: servers.EdgekubeServer, runs: int) -> tuple[float, float, float]:
    env = {**os.environ, "KUBECONFIG": str(server.data_dir / "kubeconfig.yaml"), "HOME": str(server.data_dir)}
    text = yaml.safe_dump_all(manifest("k"))
    apply_s = ssa_s = create_s = 0.0
    for i in range(runs):
        for mode in ("apply", "ssa", "create"):
            ns = f"k-{mode}-{i}"
            _kubectl(env, "create", "namespace", ns, stdin="")
            if mode == "apply":
                apply_s += _kubectl(env, "apply", "-n", ns, "-f", "-", stdin=text)
            elif mode == "ssa":
                ssa_s += _kubectl(env, "apply", "--server-side", "-n", ns, "-f", "-", stdin=text)
            else:
                create_s += _kubectl(env, "create", "-n", ns, "-f", "-", stdin=text)
    per = 1000.0 / (runs * 20)
    return apply_s * per, ssa_s * per, create_s * per


def run(rounds: int, kubectl_runs: int, log: Callable[[str], None] = print) -> ApplyResult:
    if not KUBECTL.exists():
        raise RuntimeError(f"{KUBECTL} is missing: run `make kube-tools`")
    data = common.temp_dir("apply")
    server = servers.EdgekubeServer(data / "data")
    try:
        asyncio.run(server.wait_ready())
        ssa, create = asyncio.run(_api(server, rounds))
        log(f"  SSA p50 {1000 * common.percentile(ssa, 50):.2f} ms/object, create p50 {1000 * common.percentile(create, 50):.2f} ms")
        k_apply, k_ssa, k_create = _kubectl_runs(server, kubectl_runs)
        log(f"  kubectl per object: apply {k_apply:.1f} ms, --server-side {k_ssa:.1f} ms, create {k_create:.1f} ms")
    finally:
        server.stop()
        common.remove_dir(data)
    return ApplyResult(
        objects=20, rounds=rounds,
        ssa_p50_ms=1000 * common.percentile(ssa, 50), ssa_p99_ms=1000 * common.percentile(ssa, 99),
        create_p50_ms=1000 * common.percentile(create, 50), create_p99_ms=1000 * common.percentile(create, 99),
        kubectl_apply_ms=k_apply, kubectl_ssa_ms=k_ssa, kubectl_create_ms=k_create, kubectl_runs=kubectl_runs,
    )
