"""Deployments, ReplicaSets and the scheduler end to end: real kubectl, a real server, a test node."""

from __future__ import annotations

import json
import subprocess
import time
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


def _pods(k: Kubectl, selector: str = "app=web") -> list[dict[str, Any]]:
    return [p for p in k.json("get", "pods", "-l", selector)["items"] if not p["metadata"].get("deletionTimestamp")]


def _rollout(k: Kubectl, what: str = "deployment/web", timeout: str = "60s") -> str:
    return k.out("rollout", "status", what, f"--timeout={timeout}")


def _images(k: Kubectl, selector: str = "app=web") -> set[str]:
    return {p["spec"]["containers"][0]["image"] for p in _pods(k, selector)}


def test_scale_up_and_down_with_kubectl(k: Kubectl) -> None:
    k.run("create", "deployment", "web", "--image=busybox:1.36", "--replicas=3")
    assert "successfully rolled out" in _rollout(k)
    assert len(_pods(k)) == 3
    assert all(p["status"]["phase"] == "Running" and p["spec"]["nodeName"] for p in _pods(k))
    k.run("scale", "deployment", "web", "--replicas=10")
    _rollout(k)
    _until(lambda: len(_pods(k)) == 10, what="10 pods")
    k.run("scale", "deployment", "web", "--replicas=2")
    _until(lambda: len(_pods(k)) == 2, what="2 pods")
    d = k.json("get", "deployment", "web")
    _until(lambda: k.json("get", "deployment", "web")["status"].get("availableReplicas") == 2)
    assert d["spec"]["replicas"] == 2
    rs = k.json("get", "replicasets")["items"]
    assert len(rs) == 1 and rs[0]["spec"]["replicas"] == 2
    assert rs[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    events = k.out("get", "events", "--field-selector", "reason=ScalingReplicaSet")
    assert "Scaled up replica set" in events and "Scaled down replica set" in events


def test_rolling_update_with_max_unavailable_zero_then_undo(k: Kubectl) -> None:
    manifest = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            # Pods take a moment to start, so the rollout is seen in progress.
            "template": {"metadata": {"labels": {"app": "web"},
                                      "annotations": {"testnode.edgekube.io/start-seconds": "0.3"}},
                         "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}},
        },
    }
    k.run("apply", "-f", "-", input=json.dumps(manifest))
    _rollout(k)
    # Watch the rollout: with maxUnavailable 0 the number of ready pods never drops below 4.
    watcher = subprocess.Popen([str(k.bin), "-n", k.ns, "get", "pods", "-l", "app=web", "-w", "-o", "json",
                                "--output-watch-events"], stdout=subprocess.PIPE, text=True, env=k.env)
    time.sleep(1.5)  # its initial list (the 4 ready pods) comes before the change
    k.run("set", "image", "deployment/web", "app=busybox:1.37")
    try:
        status = _rollout(k)
    finally:
        watcher.terminate()
        seen, _ = watcher.communicate(timeout=10)
    assert 'deployment "web" successfully rolled out' in status
    assert "Waiting for deployment" in status  # it was watched while it progressed
    ready: dict[str, bool] = {}
    lowest = 99
    started = False
    timeline = []
    for doc in _json_stream(seen):
        pod = doc["object"]
        name = pod["metadata"]["name"]
        if doc["type"] == "DELETED" or pod["metadata"].get("deletionTimestamp"):
            ready.pop(name, None)
        else:
            ready[name] = any(c["type"] == "Ready" and c["status"] == "True"
                              for c in pod.get("status", {}).get("conditions", []))
        if len(ready) >= 4:
            started = True
        if started:
            lowest = min(lowest, sum(ready.values()))
        timeline.append(f"{pod['metadata']['resourceVersion']} {doc['type']} {name} ready={ready.get(name)} "
                        f"-> {sum(ready.values())}")
    assert lowest >= 4, f"ready pods dropped to {lowest} during a maxUnavailable=0 rollout:\n" + "\n".join(timeline)
    assert _images(k) == {"busybox:1.37"}
    _until(lambda: len(_pods(k)) == 4)
    history = k.out("rollout", "history", "deployment/web")
    assert "1 " in history and "2 " in history
    k.run("rollout", "undo", "deployment/web")
    _rollout(k)
    _until(lambda: _images(k) == {"busybox:1.36"} and len(_pods(k)) == 4, what="back on the first template")
    # The first ReplicaSet came back as revision 3, and is the one running.
    sets = {rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]: rs
            for rs in k.json("get", "replicasets")["items"]}
    assert sorted(sets) == ["2", "3"]
    assert sets["3"]["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:1.36"
    assert sets["3"]["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
    assert sets["2"]["spec"]["replicas"] == 0


def _json_stream(text: str) -> list[dict[str, Any]]:
    out = []
    decoder = json.JSONDecoder()
    i = 0
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        doc, i = decoder.raw_decode(text, i)
        out.append(doc)
    return out


def test_recreate_pause_resume_restart_and_progress_deadline(k: Kubectl) -> None:
    k.run("create", "deployment", "web", "--image=busybox:1.36", "--replicas=2")
    k.run("patch", "deployment", "web", "--type=merge", "-p", '{"spec":{"strategy":{"type":"Recreate","rollingUpdate":null}}}')
    _rollout(k)
    k.run("set", "image", "deployment/web", "busybox=busybox:1.37")
    _rollout(k)
    assert _images(k) == {"busybox:1.37"}
    k.run("rollout", "pause", "deployment/web")
    k.run("set", "image", "deployment/web", "busybox=busybox:1.38")
    time.sleep(1)
    assert _images(k) == {"busybox:1.37"}  # paused: no rollout
    cond = {c["type"]: c for c in k.json("get", "deployment", "web")["status"]["conditions"]}
    assert cond["Progressing"]["reason"] == "DeploymentPaused"
    k.run("rollout", "resume", "deployment/web")
    _rollout(k)
    assert _images(k) == {"busybox:1.38"}
    before = {p["metadata"]["name"] for p in _pods(k)}
    k.run("rollout", "restart", "deployment/web")
    _rollout(k)
    _until(lambda: len(_pods(k)) == 2 and not before & {p["metadata"]["name"] for p in _pods(k)}, what="restarted pods")
    # An image that never pulls: the rollout times out with upstream's reason.
    k.run("patch", "deployment", "web", "--type=merge", "-p",
          '{"spec":{"progressDeadlineSeconds":2,"strategy":{"type":"RollingUpdate"}}}')
    k.run("set", "image", "deployment/web", "busybox=invalid.example/none:1")
    proc = k.run("rollout", "status", "deployment/web", "--timeout=60s", check=False)
    assert proc.returncode != 0
    assert 'deployment "web" exceeded its progress deadline' in proc.stderr
    cond = {c["type"]: c for c in k.json("get", "deployment", "web")["status"]["conditions"]}
    assert cond["Progressing"]["status"] == "False" and cond["Progressing"]["reason"] == "ProgressDeadlineExceeded"
    assert cond["Available"]["status"] == "True"  # the old pods still serve


def test_revision_history_limit_cleans_old_sets(k: Kubectl) -> None:
    k.run("create", "deployment", "web", "--image=busybox:1.30", "--replicas=1")
    k.run("patch", "deployment", "web", "--type=merge", "-p", '{"spec":{"revisionHistoryLimit":1}}')
    for tag in ("1.31", "1.32", "1.33"):
        k.run("set", "image", "deployment/web", f"busybox=busybox:{tag}")
        _rollout(k)
    _until(lambda: len(k.json("get", "replicasets")["items"]) == 2, what="old sets cleaned to the limit")
    revs = sorted(int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"])
                  for rs in k.json("get", "replicasets")["items"])
    assert revs == [3, 4]


def test_self_healing_and_cascading_deletes(k: Kubectl) -> None:
    k.run("create", "deployment", "web", "--image=busybox:1.36", "--replicas=3")
    _rollout(k)
    victim = _pods(k)[0]["metadata"]["name"]
    k.run("delete", "pod", victim, "--wait=false")
    _until(lambda: len(_pods(k)) == 3 and victim not in {p["metadata"]["name"] for p in _pods(k)}, what="a replacement")
    events = k.out("get", "events", "--field-selector", "reason=SuccessfulCreate")
    assert "Created pod:" in events
    # A matching orphan pod is adopted, and the set deletes the surplus.
    rs = k.json("get", "replicasets")["items"][0]
    labels = rs["spec"]["selector"]["matchLabels"]
    orphan = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stray", "labels": labels},
              "spec": {"containers": [{"name": "busybox", "image": "busybox:1.36"}]}}
    k.run("create", "-f", "-", input=json.dumps(orphan))
    _until(lambda: len(_pods(k)) == 3 and all(p["metadata"].get("ownerReferences") for p in _pods(k)),
           what="the orphan adopted and the surplus deleted")
    # --cascade=orphan leaves the ReplicaSet and pods, without owner references to the deployment.
    k.run("delete", "deployment", "web", "--cascade=orphan")
    time.sleep(1)
    sets = k.json("get", "replicasets")["items"]
    assert len(sets) == 1 and not sets[0]["metadata"].get("ownerReferences")
    assert len(_pods(k)) == 3
    # Deleting the ReplicaSet in the background takes its pods with it.
    k.run("delete", "replicaset", sets[0]["metadata"]["name"])
    _until(lambda: not _pods(k), what="pods deleted with their ReplicaSet")
    # And a deployment deleted normally cascades to its sets and pods.
    k.run("create", "deployment", "web", "--image=busybox:1.36", "--replicas=2")
    _rollout(k)
    k.run("delete", "deployment", "web")
    _until(lambda: not k.json("get", "replicasets")["items"] and not _pods(k), what="cascade")


def test_scheduler_reports_why_a_pod_does_not_fit(k: Kubectl) -> None:
    big = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"},
           "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100"}}}]}}
    k.run("create", "-f", "-", input=json.dumps(big))
    cond = _until(lambda: next((c for c in k.json("get", "pod", "big")["status"].get("conditions", [])
                                if c["type"] == "PodScheduled"), None), what="PodScheduled")
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
    assert cond["message"].startswith("0/1 nodes are available: 1 Insufficient cpu.")
    events = k.out("get", "events", "--field-selector", "involvedObject.name=big")
    assert "FailedScheduling" in events and "Insufficient cpu" in events
    k.run("run", "picky", "--image=busybox", "--overrides", '{"spec":{"nodeSelector":{"disk":"ssd"}}}')
    msg = _until(lambda: next((c.get("message") for c in k.json("get", "pod", "picky")["status"].get("conditions", [])
                               if c["type"] == "PodScheduled"), None))
    assert msg.startswith("0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.")
    # The cluster changes (the node gets the label): the waiting pod is scheduled.
    node = k.json("get", "nodes")["items"][0]["metadata"]["name"]
    k.run("label", "node", node, "disk=ssd", namespaced=False)
    try:
        _until(lambda: k.json("get", "pod", "picky")["status"].get("phase") == "Running", what="picky running")
        assert "Successfully assigned" in k.out("get", "events", "--field-selector", "involvedObject.name=picky")
    finally:
        k.run("label", "node", node, "disk-", namespaced=False)


def test_scheduler_spreads_and_respects_taints_and_anti_affinity(k: Kubectl, server: Server) -> None:
    second = NodeProcess(server.data_dir, server.url, f"second-{server.port}", "--label", "zone=b",
                         "--taint", "dedicated=edge:NoSchedule").start()
    try:
        # Untolerated taint: everything lands on the first node.
        k.run("create", "deployment", "web", "--image=busybox", "--replicas=4")
        _rollout(k)
        assert {p["spec"]["nodeName"] for p in _pods(k)} == {f"node-{server.port}"}
        # Tolerating it, with required anti-affinity on the hostname: one pod per node, the third waits.
        spread = {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "spread"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "spread"}},
                     "template": {"metadata": {"labels": {"app": "spread"}}, "spec": {
                         "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"}],
                         "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                             {"labelSelector": {"matchLabels": {"app": "spread"}}, "topologyKey": "kubernetes.io/hostname"}]}},
                         "containers": [{"name": "c", "image": "busybox"}]}}},
        }
        k.run("apply", "-f", "-", input=json.dumps(spread))
        _until(lambda: len([p for p in _pods(k, "app=spread") if p["spec"].get("nodeName")]) == 2, what="two placed")
        placed = [p for p in _pods(k, "app=spread") if p["spec"].get("nodeName")]
        assert len({p["spec"]["nodeName"] for p in placed}) == 2
        waiting = _until(lambda: [p for p in _pods(k, "app=spread") if not p["spec"].get("nodeName")
                                  and any(c["type"] == "PodScheduled" and c["status"] == "False"
                                          for c in p["status"].get("conditions", []))], what="one waiting")
        msg = next(c["message"] for c in waiting[0]["status"]["conditions"] if c["type"] == "PodScheduled")
        assert msg.startswith("0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules.")
    finally:
        second.stop()
        k.run("delete", "node", f"second-{server.port}", "--wait=false", namespaced=False, check=False)


def test_priority_classes_and_preemption(k: Kubectl, server: Server) -> None:
    assert "2000001000" in k.out("get", "priorityclass", "system-node-critical", namespaced=False)
    refused = k.run("run", "nope", "--image=busybox", "--overrides", '{"spec":{"priorityClassName":"missing"}}',
                    check=False)
    assert refused.returncode != 0 and "no PriorityClass with name missing was found" in refused.stderr
    high = {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": f"high-{k.ns}"},
            "value": 1000, "description": "test"}
    k.run("create", "-f", "-", input=json.dumps(high), namespaced=False)
    try:
        # Fill the node's 4 CPUs with low-priority pods.
        k.run("create", "deployment", "low", "--image=busybox", "--replicas=4")
        k.run("set", "resources", "deployment/low", "--requests=cpu=1")
        _rollout(k, "deployment/low")
        _until(lambda: len([p for p in _pods(k, "app=low") if p["status"].get("phase") == "Running"]) == 4)
        urgent = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "urgent"},
                  "spec": {"priorityClassName": f"high-{k.ns}",
                           "containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "2"}}}]}}
        k.run("create", "-f", "-", input=json.dumps(urgent))
        pod = k.json("get", "pod", "urgent")
        assert pod["spec"]["priority"] == 1000 and pod["spec"]["preemptionPolicy"] == "PreemptLowerPriority"
        _until(lambda: k.json("get", "pod", "urgent")["status"].get("phase") == "Running", what="urgent running")
        # Two low pods made room; their replacements wait, as the node is full.
        events = k.out("get", "events", "--field-selector", "reason=Preempted")
        assert events.count("Preempted by pod") >= 2
        waiting = _until(lambda: [p for p in _pods(k, "app=low") if not p["spec"].get("nodeName")], what="low waits")
        assert len(waiting) == 2
        running_low = [p for p in _pods(k, "app=low") if p["spec"].get("nodeName")]
        assert len(running_low) == 2
    finally:
        k.run("delete", "priorityclass", f"high-{k.ns}", namespaced=False, check=False)
        k.run("delete", "deployment", "low", check=False)


def test_scaling_in_the_middle_of_a_rollout_is_proportional(k: Kubectl) -> None:
    k.run("create", "deployment", "web", "--image=busybox:1.36", "--replicas=10")
    _rollout(k)
    # A rollout that cannot finish (the image never pulls): with maxSurge 3 and maxUnavailable 2
    # (25% of 10) it stops at 8 old + 5 new pods.
    k.run("set", "image", "deployment/web", "busybox=invalid.example/none:1")

    def sizes() -> dict[str, int]:
        return {rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs["spec"]["replicas"]
                for rs in k.json("get", "replicasets")["items"]}

    _until(lambda: sizes() == {"busybox:1.36": 8, "invalid.example/none:1": 5}, what="the stuck rollout")
    # Scaling to 20 (surge 5: 25 pods allowed) spreads the 12 new replicas over both sets by size.
    k.run("scale", "deployment", "web", "--replicas=20")
    got = _until(lambda: (s := sizes()) and sum(s.values()) == 25 and s, what="proportional scaling")
    assert got == {"busybox:1.36": 15, "invalid.example/none:1": 10}
    rs = {r["spec"]["template"]["spec"]["containers"][0]["image"]: r for r in k.json("get", "replicasets")["items"]}
    for r in rs.values():
        assert r["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "20"
        assert r["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == "25"
