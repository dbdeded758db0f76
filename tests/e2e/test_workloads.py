"""DaemonSets and StatefulSets through real kubectl, with test nodes playing kubelets."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Server
from tests.e2e.test_kubectl import Kubectl
from tests.support.testnode import NodeProcess
from tests.support.waiting import fresh_namespace
from tests.support.waiting import until as _until

pytestmark = pytest.mark.e2e


@pytest.fixture
def k(server: Server, test_node: NodeProcess, request: pytest.FixtureRequest) -> Kubectl:
    return fresh_namespace(server, request)


def _pods(k: Kubectl, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = k.json("get", "pods", "-l", selector)["items"]
    return items


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def _ready_since(pod: dict[str, Any]) -> str:
    return str(next(c["lastTransitionTime"] for c in pod["status"]["conditions"] if c["type"] == "Ready"))


def _events(k: Kubectl, name: str) -> list[dict[str, Any]]:
    """Events about `name`, oldest first (by the store's revision, which orders every write)."""
    items: list[dict[str, Any]] = k.json("get", "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return sorted(items, key=lambda e: int(e["metadata"]["resourceVersion"]))


def _revisions(k: Kubectl, selector: str) -> dict[str, int]:
    return {r["metadata"]["name"]: r["revision"] for r in k.json("get", "controllerrevisions", "-l", selector)["items"]}


DAEMONSET = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions: [{key: example.com/no-daemons, operator: DoesNotExist}]
      containers:
      - {name: agent, image: "busybox:1.36"}
"""


def test_daemonset_one_pod_per_node_rolling_update_and_undo(k: Kubectl, server: Server, test_node: NodeProcess) -> None:
    second = NodeProcess(server.data_dir, server.url, f"extra-{server.port}").start()
    try:
        nodes = {test_node.name, second.name}
        k.run("apply", "-f", "-", input=DAEMONSET)

        def one_ready_pod_per_node(image: str) -> bool:
            pods = [p for p in _pods(k, "app=agent") if "deletionTimestamp" not in p["metadata"]]
            placed = sorted(p["spec"].get("nodeName", "") for p in pods)
            return placed == sorted(nodes) and all(_ready(p) and p["spec"]["containers"][0]["image"] == image
                                                   for p in pods)

        _until(lambda: one_ready_pod_per_node("busybox:1.36"), what="a ready pod on each node")
        _until(lambda: k.json("get", "ds", "agent").get("status", {}).get("numberAvailable") == 2, what="status")
        ds = k.json("get", "ds", "agent")
        st = ds["status"]
        assert (st["desiredNumberScheduled"], st["currentNumberScheduled"], st["numberReady"], st["numberAvailable"],
                st["updatedNumberScheduled"], st["numberMisscheduled"]) == (2, 2, 2, 2, 2, 0)
        assert "numberUnavailable" not in st and st["observedGeneration"] == ds["metadata"]["generation"]

        # Each pod: for its node by a required matchFields affinity, with the daemon tolerations,
        # labelled with its revision's hash, owned by the DaemonSet.
        first_revisions = _revisions(k, "app=agent")
        assert len(first_revisions) == 1
        (rev_name, rev_number), = first_revisions.items()
        hash1 = rev_name.removeprefix("agent-")
        assert rev_number == 1 and rev_name != hash1
        for pod in _pods(k, "app=agent"):
            terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [pod["spec"]["nodeName"]]}]}]
            tolerations = {(t["key"], t["effect"]) for t in pod["spec"]["tolerations"] if t.get("operator") == "Exists"
                           and "tolerationSeconds" not in t}
            assert tolerations >= {("node.kubernetes.io/not-ready", "NoExecute"), ("node.kubernetes.io/unreachable", "NoExecute"),
                                   ("node.kubernetes.io/disk-pressure", "NoSchedule"),
                                   ("node.kubernetes.io/memory-pressure", "NoSchedule"),
                                   ("node.kubernetes.io/pid-pressure", "NoSchedule"),
                                   ("node.kubernetes.io/unschedulable", "NoSchedule")}
            assert pod["metadata"]["labels"]["controller-revision-hash"] == hash1
            assert pod["metadata"]["generateName"] == "agent-"
            ref = pod["metadata"]["ownerReferences"][0]
            assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("DaemonSet", "agent", ds["metadata"]["uid"], True)

        # A rolling update, watched by kubectl until it is done.
        k.run("set", "image", "daemonset/agent", "agent=busybox:1.37")
        out = k.out("rollout", "status", "daemonset/agent", "--timeout=90s")
        assert 'daemon set "agent" successfully rolled out' in out
        assert one_ready_pod_per_node("busybox:1.37")
        second_revisions = _revisions(k, "app=agent")
        assert sorted(second_revisions.values()) == [1, 2] and second_revisions[rev_name] == 1
        hash2 = next(n for n, r in second_revisions.items() if r == 2).removeprefix("agent-")
        assert {p["metadata"]["labels"]["controller-revision-hash"] for p in _pods(k, "app=agent")} == {hash2}
        history = k.out("rollout", "history", "daemonset/agent")
        assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]
        assert "busybox:1.36" in k.out("rollout", "history", "daemonset/agent", "--revision=1")

        # Undo: the first template again, its revision renumbered to the top.
        k.run("rollout", "undo", "daemonset/agent")
        out = k.out("rollout", "status", "daemonset/agent", "--timeout=90s")
        assert 'daemon set "agent" successfully rolled out' in out
        assert one_ready_pod_per_node("busybox:1.36")
        assert _revisions(k, "app=agent") == {rev_name: 3, f"agent-{hash2}": 2}
        assert {p["metadata"]["labels"]["controller-revision-hash"] for p in _pods(k, "app=agent")} == {hash1}

        messages = [(e["reason"], e["message"]) for e in _events(k, "agent")]
        assert any(r == "SuccessfulCreate" and m.startswith("Created pod: agent-") for r, m in messages)
        assert any(r == "SuccessfulDelete" and m.startswith("Deleted pod: agent-") for r, m in messages)

        # maxSurge: each new pod starts beside the old one, which goes once the new one is available.
        k.run("patch", "daemonset", "agent", "--type=merge", "-p",
              '{"spec":{"updateStrategy":{"rollingUpdate":{"maxSurge":1,"maxUnavailable":0}}}}')
        mark = max(int(e["metadata"]["resourceVersion"]) for e in _events(k, "agent"))
        k.run("set", "image", "daemonset/agent", "agent=busybox:1.38")
        out = k.out("rollout", "status", "daemonset/agent", "--timeout=90s")
        assert 'daemon set "agent" successfully rolled out' in out
        assert one_ready_pod_per_node("busybox:1.38")
        newer = [e["reason"] for e in _events(k, "agent") if int(e["metadata"]["resourceVersion"]) > mark]
        assert newer[0] == "SuccessfulCreate" and sorted(newer) == ["SuccessfulCreate"] * 2 + ["SuccessfulDelete"] * 2

        # A node that stops matching the node affinity loses its daemon pod.
        k.run("label", "node", second.name, "example.com/no-daemons=true", namespaced=False)
        _until(lambda: [p["spec"]["nodeName"] for p in _pods(k, "app=agent")] == [test_node.name],
               what="the daemon pod gone from the excluded node")
        _until(lambda: k.json("get", "ds", "agent")["status"]["desiredNumberScheduled"] == 1, what="desired 1")
        st = k.json("get", "ds", "agent")["status"]
        assert (st["currentNumberScheduled"], st["numberMisscheduled"], st["numberReady"]) == (1, 0, 1)

        # A pod relabelled out of the selector is released (no longer owned) and replaced.
        (pod,) = _pods(k, "app=agent")
        name = pod["metadata"]["name"]
        k.run("label", "pod", name, "app=debug", "--overwrite")
        _until(lambda: "ownerReferences" not in k.json("get", "pod", name)["metadata"], what="the pod released")
        _until(lambda: len(_pods(k, "app=agent")) == 1 and _ready(_pods(k, "app=agent")[0]), what="a replacement")
        assert _pods(k, "app=agent")[0]["metadata"]["name"] != name
    finally:
        second.stop()
        k.run("delete", "node", second.name, "--ignore-not-found", namespaced=False, check=False)


STATEFULSET = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {testnode.edgekube.io/start-seconds: "2"}
    spec:
      containers:
      - {name: web, image: "busybox:1.36"}
  volumeClaimTemplates:
  - metadata: {name: www, labels: {tier: storage}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"""


def _web(k: Kubectl) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in _pods(k, "app=web") if "deletionTimestamp" not in p["metadata"]}


def test_statefulset_ordered_pods_claims_partitioned_update_and_scale_down(k: Kubectl) -> None:
    k.run("apply", "-f", "-", input=STATEFULSET)
    out = k.out("rollout", "status", "statefulset/web", "--timeout=90s")
    assert "roll out complete: 3 new pods have been updated" in out
    pods = _web(k)
    assert sorted(pods) == ["web-0", "web-1", "web-2"]
    # OrderedReady: each pod was made only once the one before it was Ready (each takes 2 s).
    for i in (0, 1):
        assert pods[f"web-{i + 1}"]["metadata"]["creationTimestamp"] >= _ready_since(pods[f"web-{i}"])
    sts = k.json("get", "statefulset", "web")
    st = sts["status"]
    revision1 = st["updateRevision"]
    assert revision1.startswith("web-") and st["currentRevision"] == revision1
    assert (st["replicas"], st["readyReplicas"], st["currentReplicas"], st["updatedReplicas"],
            st["availableReplicas"], st["collisionCount"], st["observedGeneration"]) == (3, 3, 3, 3, 3, 0, sts["metadata"]["generation"])
    for i, (name, pod) in enumerate(sorted(pods.items())):
        labels = pod["metadata"]["labels"]
        assert labels["statefulset.kubernetes.io/pod-name"] == name
        assert labels["apps.kubernetes.io/pod-index"] == str(i)
        assert labels["controller-revision-hash"] == revision1
        assert (pod["spec"]["hostname"], pod["spec"]["subdomain"]) == (name, "web")
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "www")
        assert volume["persistentVolumeClaim"]["claimName"] == f"www-{name}"
    claims = {c["metadata"]["name"]: c for c in k.json("get", "pvc")["items"]}
    assert sorted(claims) == ["www-web-0", "www-web-1", "www-web-2"]
    for claim in claims.values():
        assert claim["metadata"]["labels"] == {"app": "web", "tier": "storage"}
        assert "ownerReferences" not in claim["metadata"]  # Retain: nobody owns them
        assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    messages = [e["message"] for e in _events(k, "web") if e["reason"] == "SuccessfulCreate"]
    assert [m for m in messages if m.startswith("create Pod")] == [
        f"create Pod web-{i} in StatefulSet web successful" for i in range(3)]
    assert "create Claim www-web-0 Pod web-0 in StatefulSet web success" in messages
    assert _revisions(k, "app=web") == {revision1: 1}

    # A partitioned rolling update: web-2 then web-1 move to the new template, web-0 stays.
    k.run("patch", "statefulset", "web", "-p", '{"spec":{"updateStrategy":{"rollingUpdate":{"partition":1}}}}')
    k.run("set", "image", "statefulset/web", "web=busybox:1.37")
    out = k.out("rollout", "status", "statefulset/web", "--timeout=90s")
    assert "partitioned roll out complete: 2 new pods have been updated" in out
    pods = _web(k)
    revision2 = k.json("get", "statefulset", "web")["status"]["updateRevision"]
    assert revision2 != revision1
    images = {n: (p["spec"]["containers"][0]["image"], p["metadata"]["labels"]["controller-revision-hash"])
              for n, p in pods.items()}
    assert images == {"web-0": ("busybox:1.36", revision1), "web-1": ("busybox:1.37", revision2),
                      "web-2": ("busybox:1.37", revision2)}
    assert pods["web-1"]["metadata"]["creationTimestamp"] >= _ready_since(pods["web-2"])
    st = k.json("get", "statefulset", "web")["status"]
    assert (st["currentRevision"], st["currentReplicas"], st["updatedReplicas"]) == (revision1, 1, 2)
    deletes = [e["message"] for e in _events(k, "web") if e["reason"] == "SuccessfulDelete"]
    assert deletes == ["delete Pod web-2 in StatefulSet web successful", "delete Pod web-1 in StatefulSet web successful"]

    # Partition 0: web-0 too; the update revision becomes the current one.
    k.run("patch", "statefulset", "web", "-p", '{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}')
    k.out("rollout", "status", "statefulset/web", "--timeout=90s")
    _until(lambda: k.json("get", "statefulset", "web")["status"].get("currentRevision") == revision2,
           what="the update revision current")
    assert {p["spec"]["containers"][0]["image"] for p in _web(k).values()} == {"busybox:1.37"}

    # History and undo: the first template again, its revision renumbered to the top.
    history = k.out("rollout", "history", "statefulset/web")
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]
    k.run("rollout", "undo", "statefulset/web")
    k.out("rollout", "status", "statefulset/web", "--timeout=120s")
    _until(lambda: k.json("get", "statefulset", "web")["status"].get("currentRevision") == revision1,
           what="the first revision current again")
    assert {p["spec"]["containers"][0]["image"] for p in _web(k).values()} == {"busybox:1.36"}
    assert _revisions(k, "app=web") == {revision1: 3, revision2: 2}

    # Scale down: the highest ordinal goes first; the claims stay (Retain).
    k.run("scale", "statefulset", "web", "--replicas=1")
    _until(lambda: sorted(_web(k)) == ["web-0"] and k.json("get", "statefulset", "web")["status"]["replicas"] == 1,
           what="scaled down to web-0")
    deletes = [e["message"] for e in _events(k, "web") if e["reason"] == "SuccessfulDelete"]
    # Each deletion message was seen before (the updates); the recorder counts repeats on the
    # same event, which then moves to the newest revision: the last two are the scale-down's.
    assert deletes[-2:] == ["delete Pod web-2 in StatefulSet web successful", "delete Pod web-1 in StatefulSet web successful"]
    assert sorted(c["metadata"]["name"] for c in k.json("get", "pvc")["items"]) == ["www-web-0", "www-web-1", "www-web-2"]
    # Scaling up again mounts the same claim.
    k.run("scale", "statefulset", "web", "--replicas=2")
    _until(lambda: sorted(_web(k)) == ["web-0", "web-1"] and _ready(_web(k)["web-1"]), what="web-1 back")
    volume = next(v for v in _web(k)["web-1"]["spec"]["volumes"] if v["name"] == "www")
    assert volume["persistentVolumeClaim"]["claimName"] == "www-web-1"


PARALLEL = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: burst}
spec:
  serviceName: burst
  replicas: 3
  podManagementPolicy: Parallel
  persistentVolumeClaimRetentionPolicy: {whenScaled: Delete, whenDeleted: Retain}
  selector: {matchLabels: {app: burst}}
  template:
    metadata:
      labels: {app: burst}
      annotations: {testnode.edgekube.io/start-seconds: "3"}
    spec:
      containers: [{name: c, image: "busybox:1.36"}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"""


def test_statefulset_parallel_and_claims_deleted_on_scale_down(k: Kubectl) -> None:
    k.run("apply", "-f", "-", input=PARALLEL)
    # Parallel: all three are made without waiting for each other to be Ready.
    _until(lambda: len(_pods(k, "app=burst")) == 3, timeout=20, what="three pods")
    # OrderedReady would have at most one pod not Ready at a time; each of these takes 3 s.
    assert sum(not _ready(p) for p in _pods(k, "app=burst")) >= 2
    k.out("rollout", "status", "statefulset/burst", "--timeout=90s")
    # whenScaled=Delete: a scaled-away pod owns its claim, so the claim goes with it.
    k.run("scale", "statefulset", "burst", "--replicas=1")
    _until(lambda: sorted(c["metadata"]["name"] for c in k.json("get", "pvc")["items"]) == ["data-burst-0"],
           what="the scaled-away claims deleted")
    claim = k.json("get", "pvc", "data-burst-0")
    assert "ownerReferences" not in claim["metadata"]
