"""The control plane's end-to-end scenarios again, on the real kubelet instead of the test node:
Deployments (scale, rolling update between two real image tags, undo, self-healing, cascading
delete), Jobs (completions with real exit codes, backoff limit), a DaemonSet rolling update, a
StatefulSet's ordered pods with their own hostnames, cordon + drain through the eviction API, and
EndpointSlices following real readiness probes.
Each step is checked on the host too: the runc containers behind the pods, their images and
processes, and nothing left once the objects are gone.

The images are busybox-static built with umoci, two tags that differ by a file, whose default
command sleeps until SIGTERM, so `kubectl create deployment --image=...` runs as it would with a
real server image.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_kubectl import Kubectl
from tests.e2e.test_kubelet import _kubelet_server
from tests.support import images as ti
from tests.support.kubelet import KubeletServer
from tests.support.waiting import fresh_namespace, until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the kubelet runs runc containers: needs root"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("runc", "umoci", "skopeo", "docker-registry")),
                       reason="needs runc, umoci, skopeo and docker-registry (make installs them)"),
]

SLEEP_UNTIL_TERM = "trap 'exit 0' TERM; while true; do sleep 0.2; done"


@pytest.fixture(scope="module")
def tags(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`<registry>/server:1` and `:2`, both sleeping until SIGTERM by default; /VERSION tells them apart."""
    work = tmp_path_factory.mktemp("cp-images")
    registry = ti.Registry(work / "registry").start()
    try:
        refs = []
        for version in ("1", "2"):
            layout = ti.busybox_layout(work / "layout", tag=version, extra={"/VERSION": version.encode()},
                                       config=("--config.cmd=-c", f"--config.cmd={SLEEP_UNTIL_TERM}"))
            ti.skopeo_copy(layout, f"docker://{registry.host}/server:{version}")
            refs.append(f"{registry.host}/server:{version}")
        yield refs[0], refs[1]
    finally:
        registry.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, tags: tuple[str, str]) -> Iterator[KubeletServer]:
    yield from _kubelet_server(tmp_path_factory.mktemp("cp-kubelet"))


@pytest.fixture
def k(node: KubeletServer, request: pytest.FixtureRequest) -> Kubectl:
    return fresh_namespace(node.server, request)


def _live(k: Kubectl, selector: str) -> list[dict[str, Any]]:
    return [p for p in k.json("get", "pods", "-l", selector)["items"] if not p["metadata"].get("deletionTimestamp")]


def _cid(pod: dict[str, Any]) -> str:
    return str(pod["status"]["containerStatuses"][0]["containerID"]).split("://", 1)[1]


def _containers_of(node: KubeletServer, ns: str) -> dict[str, dict[str, Any]]:
    return {cid: c for cid, c in node.runc_list().items()
            if c.get("annotations", {}).get("io.kubernetes.pod.namespace") == ns}


def _version_in(node: KubeletServer, cid: str) -> str:
    """The /VERSION file as the container's own process sees it."""
    pid = node.runc_list()[cid]["pid"]
    return Path(f"/proc/{pid}/root/VERSION").read_text()


def _running_on_host(k: Kubectl, node: KubeletServer, selector: str, n: int) -> list[dict[str, Any]]:
    """Wait for exactly n live pods, all Running with a running runc container; no other
    container of the namespace is left running."""
    def check() -> list[dict[str, Any]] | None:
        pods = _live(k, selector)
        if len(pods) != n or not all(p["status"].get("phase") == "Running" and p["status"].get("containerStatuses")
                                     for p in pods):
            return None
        running = {cid for cid, c in _containers_of(node, k.ns).items() if c["status"] == "running"}
        return pods if {_cid(p) for p in pods} == running else None

    return list(until(check, timeout=90, what=f"{n} pods of {selector} running as containers"))


def test_deployment_scale_roll_undo_heal_and_delete(k: Kubectl, node: KubeletServer, tags: tuple[str, str]) -> None:
    v1, v2 = tags
    k.run("create", "deployment", "web", f"--image={v1}", "--replicas=3")
    assert "successfully rolled out" in k.out("rollout", "status", "deployment/web", "--timeout=90s")
    pods = _running_on_host(k, node, "app=web", 3)
    assert {_version_in(node, _cid(p)) for p in pods} == {"1"}
    k.run("scale", "deployment", "web", "--replicas=5")
    _running_on_host(k, node, "app=web", 5)
    k.run("scale", "deployment", "web", "--replicas=2")
    _running_on_host(k, node, "app=web", 2)

    # A rolling update to the second tag, then back.
    k.run("set", "image", "deployment/web", f"server={v2}")
    assert "successfully rolled out" in k.out("rollout", "status", "deployment/web", "--timeout=90s")
    pods = _running_on_host(k, node, "app=web", 2)
    assert {_version_in(node, _cid(p)) for p in pods} == {"2"}
    k.run("rollout", "undo", "deployment/web")
    assert "successfully rolled out" in k.out("rollout", "status", "deployment/web", "--timeout=90s")
    pods = _running_on_host(k, node, "app=web", 2)
    assert {_version_in(node, _cid(p)) for p in pods} == {"1"}
    assert len(k.json("get", "replicasets")["items"]) == 2

    # Self-healing: a killed process is restarted by the kubelet in the same pod; a deleted pod is
    # replaced by the ReplicaSet.
    victim = pods[0]
    os.kill(node.runc_list()[_cid(victim)]["pid"], signal.SIGKILL)
    until(lambda: k.json("get", "pod", victim["metadata"]["name"])["status"]["containerStatuses"][0]["restartCount"] == 1,
          what="the killed container restarted")
    deleted = pods[1]["metadata"]["name"]
    k.run("delete", "pod", deleted, "--wait=true")
    names = {p["metadata"]["name"] for p in _running_on_host(k, node, "app=web", 2)}
    assert deleted not in names and victim["metadata"]["name"] in names

    # Deleting the Deployment takes its ReplicaSets, pods and containers with it.
    k.run("delete", "deployment", "web", "--cascade=foreground", "--wait=true", "--timeout=90s")
    until(lambda: not _containers_of(node, k.ns) and not k.json("get", "pods")["items"]
          and not k.json("get", "replicasets")["items"], what="pods, sets and containers gone")


JOBS = """\
apiVersion: batch/v1
kind: Job
metadata: {name: work}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: w, image: IMAGE, command: ["sh", "-c", "echo done by $(hostname)"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: broken}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: w, image: IMAGE, command: ["sh", "-c", "exit 3"]}]
"""


def test_jobs_finish_on_real_exit_codes(k: Kubectl, node: KubeletServer, tags: tuple[str, str]) -> None:
    k.run("apply", "-f", "-", input=JOBS.replace("IMAGE", tags[0]))
    k.run("wait", "--for=condition=Complete", "job/work", "--timeout=90s")
    job = k.json("get", "job", "work")
    assert job["status"]["succeeded"] == 3 and not job["status"].get("failed")
    done = [p for p in k.json("get", "pods", "-l", "job-name=work")["items"]]
    assert len(done) == 3 and all(p["status"]["phase"] == "Succeeded" for p in done)
    assert all(k.out("logs", p["metadata"]["name"]).strip() == f"done by {p['metadata']['name']}" for p in done)

    k.run("wait", "--for=condition=Failed", "job/broken", "--timeout=90s")
    broken = k.json("get", "job", "broken")
    failed = {c["type"]: c for c in broken["status"]["conditions"]}["Failed"]
    assert failed["reason"] == "BackoffLimitExceeded" and broken["status"]["failed"] == 2
    codes = [p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"]
             for p in k.json("get", "pods", "-l", "job-name=broken")["items"]]
    assert codes == [3, 3]
    # Finished pods keep no running container.
    assert not any(c["status"] == "running" for c in _containers_of(node, k.ns).values())


def test_daemonset_rolls_its_pod_on_the_node(k: Kubectl, node: KubeletServer, tags: tuple[str, str]) -> None:
    v1, v2 = tags
    k.run("apply", "-f", "-", input=f"""\
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers: [{{name: agent, image: {v1}}}]
""")
    assert "successfully rolled out" in k.out("rollout", "status", "daemonset/agent", "--timeout=90s")
    first = _running_on_host(k, node, "app=agent", 1)[0]
    assert first["spec"]["nodeName"] == k.json("get", "nodes")["items"][0]["metadata"]["name"]
    k.run("set", "image", "daemonset/agent", f"agent={v2}")
    assert "successfully rolled out" in k.out("rollout", "status", "daemonset/agent", "--timeout=90s")
    second = _running_on_host(k, node, "app=agent", 1)[0]
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    assert _version_in(node, _cid(second)) == "2"


def test_statefulset_pods_start_in_order_with_their_own_names(k: Kubectl, node: KubeletServer,
                                                              tags: tuple[str, str]) -> None:
    k.run("apply", "-f", "-", input=f"""\
apiVersion: v1
kind: Service
metadata: {{name: db}}
spec: {{clusterIP: None, selector: {{app: db}}, ports: [{{port: 80}}]}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: db
  replicas: 2
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: db
        image: {tags[0]}
        command: ["sh", "-c", "hostname; cat /etc/hostname; {SLEEP_UNTIL_TERM}"]
""")
    assert "roll out complete" in k.out("rollout", "status", "statefulset/db", "--timeout=90s")
    pods = {p["metadata"]["name"]: p for p in _running_on_host(k, node, "app=db", 2)}
    assert set(pods) == {"db-0", "db-1"}
    started = {n: p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"] for n, p in pods.items()}
    assert started["db-0"] <= started["db-1"]
    for name in pods:
        assert k.out("logs", name).split() == [name, name]
    k.run("scale", "statefulset", "db", "--replicas=1")
    _running_on_host(k, node, "app=db", 1)
    assert [p["metadata"]["name"] for p in _live(k, "app=db")] == ["db-0"]


def test_cordon_and_drain_evict_through_the_api(k: Kubectl, node: KubeletServer, tags: tuple[str, str]) -> None:
    name = k.json("get", "nodes")["items"][0]["metadata"]["name"]
    k.run("create", "deployment", "drained", f"--image={tags[0]}", "--replicas=2")
    _running_on_host(k, node, "app=drained", 2)
    try:
        k.run("drain", name, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=90s", namespaced=False)
        # Evicted: the ReplicaSet's replacements cannot be placed on the cordoned node.
        def pending() -> bool:
            pods = _live(k, "app=drained")
            return len(pods) == 2 and all(p["status"].get("phase") == "Pending" and not p["spec"].get("nodeName")
                                          for p in pods)
        until(pending, what="replacements Pending on the cordoned node")
        until(lambda: not _containers_of(node, k.ns), what="the evicted pods' containers removed")
        events = k.out("get", "events", "--field-selector", "reason=FailedScheduling")
        assert "node(s) were unschedulable" in events
    finally:
        k.run("uncordon", name, namespaced=False)
    _running_on_host(k, node, "app=drained", 2)


def test_endpoints_follow_real_readiness(k: Kubectl, node: KubeletServer, tags: tuple[str, str]) -> None:
    """A readiness probe on a file the test toggles inside the containers: the Service's
    EndpointSlice and the Deployment's availability follow it."""
    k.run("apply", "-f", "-", input=f"""\
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec: {{selector: {{app: web}}, ports: [{{port: 80}}]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: {tags[0]}
        readinessProbe:
          exec: {{command: ["cat", "/tmp/ready"]}}
          periodSeconds: 1
          failureThreshold: 1
""")
    pods = _running_on_host(k, node, "app=web", 2)

    def slice_addresses() -> tuple[int, int]:
        eps = [e for s in k.json("get", "endpointslices", "-l", "kubernetes.io/service-name=web")["items"]
               for e in s.get("endpoints") or []]
        return (sum(1 for e in eps if e["conditions"].get("ready")), sum(1 for e in eps if not e["conditions"].get("ready")))

    until(lambda: slice_addresses() == (0, 2), what="two not-ready endpoints")
    assert k.json("get", "deployment", "web")["status"].get("availableReplicas", 0) == 0
    first = pods[0]["metadata"]["name"]
    ready_file = Path(f"/proc/{node.runc_list()[_cid(pods[0])]['pid']}/root/tmp/ready")
    ready_file.write_text("ok")
    until(lambda: slice_addresses() == (1, 1), what="one ready endpoint")
    assert k.json("get", "pod", first)["status"]["containerStatuses"][0]["ready"] is True
    until(lambda: k.json("get", "deployment", "web")["status"].get("availableReplicas") == 1,
          what="one available replica")
    ready_file.unlink()
    until(lambda: slice_addresses() == (0, 2), what="the endpoint not ready again")
    ready = {c["type"]: c["status"] for c in k.json("get", "pod", first)["status"]["conditions"]}
    assert ready["Ready"] == "False" and ready["ContainersReady"] == "False"
