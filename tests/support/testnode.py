"""A test node: a small stand-in for a kubelet, for control-plane tests (issue 4).

It talks to a running `edgekube server` over its HTTPS API with the admin credential, as a real
kubelet would: it registers a Node, renews its Lease in kube-node-lease, watches the pods bound
to it and reports them Running and Ready. A pod's annotations ask for other behaviour:

    testnode.edgekube.io/start-seconds: "S"   stay Pending (ContainerCreating) for S seconds first
    testnode.edgekube.io/ready: "false"        Running but never Ready
    testnode.edgekube.io/exit-code: "N"        the containers exit with N after run-seconds (default 0.2):
                                               Succeeded/Failed for restartPolicy Never, and for
                                               OnFailure a failure restarts (restartCount grows)
    testnode.edgekube.io/run-seconds: "S"

An image whose name contains `invalid` never pulls (ErrImagePull, not Ready). A pod being deleted
is removed at once (grace period 0 after its containers "stop").

Run: python -m tests.support.testnode --data-dir DIR --server URL --name NODE [--label k=v]
[--taint k=v:Effect] [--cpu 4] [--memory 8Gi] [--pods 110] [--lease-seconds 2]
Stop it with SIGTERM (or SIGKILL, to play a node that vanished: its Lease stops).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp

JSON = dict[str, Any]
PREFIX = "testnode.edgekube.io/"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class TestNode:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.name: str = args.name
        tls = Path(args.data_dir) / "tls"
        ctx = ssl.create_default_context(cafile=str(tls / "ca.crt"))
        ctx.load_cert_chain(str(tls / "admin.crt"), str(tls / "admin.key"))
        self._ssl = ctx
        self.base: str = args.server.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._latest: dict[str, JSON] = {}
        self._subnet = zlib.crc32(self.name.encode()) % 200 + 20
        self._next_ip = 2

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None
        return self._session

    async def request(self, method: str, path: str, body: Any = None, *,
                      content_type: str = "application/json", ok: tuple[int, ...] = (200, 201)) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body)
        async with self.session.request(method, self.base + path, data=data, ssl=self._ssl,
                                        headers={"Content-Type": content_type}) as resp:
            text = await resp.text()
            payload = json.loads(text) if text else None
            if resp.status not in ok:
                raise RuntimeError(f"{method} {path}: {resp.status} {text[:300]}")
            return resp.status, payload

    # --- node and lease ----------------------------------------------------------------------

    def node_object(self) -> JSON:
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"}
        for item in self.args.label:
            key, _, value = item.partition("=")
            labels[key] = value
        taints = []
        for item in self.args.taint:
            kv, _, effect = item.rpartition(":")
            key, _, value = kv.partition("=")
            taints.append({"key": key, **({"value": value} if value else {}), "effect": effect})
        resources = {"cpu": self.args.cpu, "memory": self.args.memory, "pods": str(self.args.pods),
                     "ephemeral-storage": "20Gi"}
        now = _now()
        return {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "spec": {"taints": taints} if taints else {},
            "status": {
                "capacity": resources, "allocatable": resources,
                "conditions": [
                    {"type": t, "status": "False", "reason": r, "message": m, "lastHeartbeatTime": now,
                     "lastTransitionTime": now}
                    for t, r, m in (("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                                    ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                                    ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"))
                ] + [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                      "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}],
                "addresses": [{"type": "InternalIP", "address": f"10.99.{self._subnet}.1"},
                              {"type": "Hostname", "address": self.name}],
                "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.33.0-testnode",
                             "kubeProxyVersion": "", "containerRuntimeVersion": "testnode://1", "osImage": "test node",
                             "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
            },
        }

    async def register(self) -> None:
        node = self.node_object()
        await self.request("POST", "/api/v1/nodes", node, ok=(201, 409))
        # Ready again (a restarted node): the status is the kubelet's to write.
        await self.request("PATCH", f"/api/v1/nodes/{self.name}/status", {"status": node["status"]},
                           content_type="application/merge-patch+json")

    async def lease_loop(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        while True:
            lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {"name": self.name, "namespace": "kube-node-lease"},
                     "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": _micro_now()}}
            try:
                status, _ = await self.request("PATCH", path, {"spec": lease["spec"]},
                                               content_type="application/merge-patch+json", ok=(200, 404))
                if status == 404:
                    await self.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                                       lease, ok=(201, 409))
            except (OSError, RuntimeError, aiohttp.ClientError) as exc:  # the server restarting
                print(f"lease: {exc!r}", flush=True)
            await asyncio.sleep(self.args.lease_seconds)

    # --- pods -------------------------------------------------------------------------------

    async def pod_loop(self) -> None:
        selector = f"spec.nodeName={self.name}"
        while True:
            try:
                _, listed = await self.request("GET", f"/api/v1/pods?fieldSelector={selector}")
            except (OSError, RuntimeError, aiohttp.ClientError) as exc:  # the server restarting
                print(f"list: {exc!r}", flush=True)
                await asyncio.sleep(0.5)
                continue
            for pod in listed["items"]:
                self.observe(pod)
            rv = listed["metadata"]["resourceVersion"]
            url = f"{self.base}/api/v1/pods?watch=1&fieldSelector={selector}&resourceVersion={rv}&allowWatchBookmarks=false"
            try:
                async with self.session.get(url, ssl=self._ssl, timeout=aiohttp.ClientTimeout(total=None)) as resp:
                    async for line in resp.content:
                        if not line.strip():
                            continue
                        ev = json.loads(line)
                        if ev["type"] == "ERROR":
                            break
                        if ev["type"] == "DELETED":
                            uid = ev["object"]["metadata"]["uid"]
                            self._latest.pop(uid, None)
                            task = self._workers.pop(uid, None)
                            if task is not None:
                                task.cancel()
                            continue
                        self.observe(ev["object"])
            except (TimeoutError, OSError, aiohttp.ClientError):
                await asyncio.sleep(0.2)

    def observe(self, pod: JSON) -> None:
        uid = pod["metadata"]["uid"]
        self._latest[uid] = pod
        task = self._workers.get(uid)
        if task is None or task.done():
            self._workers[uid] = asyncio.create_task(self._guarded(uid))

    async def _guarded(self, uid: str) -> None:
        try:
            await self.run_pod(uid)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a test node that fails says so in its log, and goes on
            print(f"pod {uid}: {exc!r}", flush=True)

    async def run_pod(self, uid: str) -> None:
        pod = self._latest[uid]
        meta = pod["metadata"]
        ann = meta.get("annotations") or {}
        ns, name = meta["namespace"], meta["name"]
        path = f"/api/v1/namespaces/{ns}/pods/{name}"
        if meta.get("deletionTimestamp"):
            await self.request("DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                                                "preconditions": {"uid": uid}}, ok=(200, 404, 409))
            return
        status = pod.get("status") or {}
        phase = status.get("phase")
        ready_now = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        wants_ready = ann.get(PREFIX + "ready", "true") != "false" and PREFIX + "exit-code" not in ann
        if phase in ("Succeeded", "Failed") or (phase == "Running" and status.get("podIP") and
                                                (ready_now == wants_ready or PREFIX + "exit-code" in ann)):
            return  # reported already (a pod another controller marked not ready is reported again)
        ip = f"10.42.{self._subnet}.{self._next_ip}"
        self._next_ip = self._next_ip % 250 + 1 if self._next_ip < 250 else 2
        started = _now()
        if any("invalid" in (c.get("image") or "") for c in pod["spec"].get("containers") or []):
            await self.set_status(pod, path, "Pending", ip, ready=False, started=started, waiting="ErrImagePull")
            return
        delay = float(ann.get(PREFIX + "start-seconds", "0"))
        if delay:
            await self.set_status(pod, path, "Pending", ip, ready=False, started=started, waiting="ContainerCreating")
            await asyncio.sleep(delay)
        ready = ann.get(PREFIX + "ready", "true") != "false"
        await self.set_status(pod, path, "Running", ip, ready=ready, started=started)
        if PREFIX + "exit-code" not in ann:
            return
        code = int(ann[PREFIX + "exit-code"])
        run = float(ann.get(PREFIX + "run-seconds", "0.2"))
        restarts = 0
        policy = pod["spec"].get("restartPolicy", "Always")
        while True:
            await asyncio.sleep(run)
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                await self.set_status(pod, path, "Succeeded" if code == 0 else "Failed", ip, ready=False,
                                      started=started, exit_code=code, restarts=restarts)
                return
            restarts += 1
            await self.set_status(pod, path, "Running", ip, ready=False, started=started, exit_code=code,
                                  restarts=restarts, waiting="CrashLoopBackOff")

    async def set_status(self, pod: JSON, path: str, phase: str, ip: str, *, ready: bool, started: str,
                         waiting: str | None = None, exit_code: int | None = None, restarts: int = 0) -> None:
        now = _now()
        running = phase == "Running" and waiting is None
        statuses = []
        for c in pod["spec"].get("containers") or []:
            state: JSON
            if phase in ("Succeeded", "Failed"):
                state = {"terminated": {"exitCode": exit_code or 0, "reason": "Completed" if not exit_code else "Error",
                                        "startedAt": started, "finishedAt": now}}
            elif waiting:
                state = {"waiting": {"reason": waiting}}
            else:
                state = {"running": {"startedAt": started}}
            cs: JSON = {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": ready and running,
                        "started": running, "restartCount": restarts, "state": state,
                        "containerID": f"testnode://{pod['metadata']['uid']}-{c['name']}"}
            if restarts and exit_code is not None:
                cs["lastState"] = {"terminated": {"exitCode": exit_code, "reason": "Error", "startedAt": started,
                                                  "finishedAt": now}}
            statuses.append(cs)
        is_ready = "True" if ready and running else "False"
        conds = [{"type": t, "status": s, "lastProbeTime": None, "lastTransitionTime": now}
                 for t, s in (("PodReadyToStartContainers", "True"), ("Initialized", "True"), ("Ready", is_ready),
                              ("ContainersReady", is_ready), ("PodScheduled", "True"))]
        status = {"phase": phase, "conditions": conds, "hostIP": f"10.99.{self._subnet}.1",
                  "hostIPs": [{"ip": f"10.99.{self._subnet}.1"}], "podIP": ip, "podIPs": [{"ip": ip}],
                  "startTime": started, "containerStatuses": statuses}
        await self.request("PATCH", path + "/status", {"status": status},
                           content_type="application/merge-patch+json", ok=(200, 404))

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            self._session = session
            await self.register()
            print(f"test node {self.name} registered", flush=True)
            await asyncio.gather(self.lease_loop(), self.pod_loop())


class NodeProcess:
    """A test node in a subprocess, for tests and benchmarks: `start()`, `stop()`, `kill()`."""

    def __init__(self, data_dir: Path, server_url: str, name: str, *extra: str, log: Path | None = None) -> None:
        self.cmd = [sys.executable, "-m", "tests.support.testnode", "--data-dir", str(data_dir), "--server", server_url,
                    "--name", name, *extra]
        self.name = name
        self.log_path = log or data_dir.parent / f"testnode-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 20.0) -> NodeProcess:
        repo = Path(__file__).resolve().parent.parent.parent
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, cwd=repo,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"test node exited: {self.log_path.read_text()[-3000:]}")
            if b"registered" in self.log_path.read_bytes():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"test node {self.name} did not register: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="testnode")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--server", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--label", action="append", default=[])
    p.add_argument("--taint", action="append", default=[])
    p.add_argument("--cpu", default="4")
    p.add_argument("--memory", default="8Gi")
    p.add_argument("--pods", type=int, default=110)
    p.add_argument("--lease-seconds", type=float, default=2.0)
    args = p.parse_args(argv)
    node = TestNode(args)

    async def amain() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(node.run())
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(amain())
    return 0


if __name__ == "__main__":
    sys.exit(main())
