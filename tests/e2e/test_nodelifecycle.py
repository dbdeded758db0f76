"""Node lifecycle through kubectl: a node whose Lease stops goes Unknown and is tainted, its pods
are marked not ready and evicted as their tolerations say, and it is untainted when it comes back.

The server runs with a 3 s node-monitor grace period and without its own kubelet; two test nodes
in two zones play kubelets that renew their Leases every 0.5 s (so a loaded machine does not make
the healthy one look silent). Killing one stops its Lease, as a node that vanished.
"""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.conftest import Server
from tests.e2e.test_kubectl import Kubectl
from tests.support.testnode import NodeProcess
from tests.support.waiting import fresh_namespace
from tests.support.waiting import until as _until

pytestmark = pytest.mark.e2e

UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"


@pytest.fixture(scope="module")
def lifecycle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("nodelifecycle")
    cfg = root / "config.yaml"
    cfg.write_text(yaml.safe_dump({"disable": ["kubelet"], "controllers": {"node-monitor-grace-period-seconds": 3}}))
    srv = Server(root / "data", extra=["--config", str(cfg)])
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


def _node(server: Server, name: str) -> NodeProcess:
    return NodeProcess(server.data_dir, server.url, name, "--lease-seconds", "0.5",
                       "--label", f"topology.kubernetes.io/zone={name}")


@pytest.fixture(scope="module")
def nodes(lifecycle_server: Server) -> Iterator[dict[str, NodeProcess]]:
    started = {name: _node(lifecycle_server, name).start() for name in ("steady", "fading")}
    try:
        yield started
    finally:
        for proc in started.values():
            proc.stop()


@pytest.fixture
def k(lifecycle_server: Server, nodes: dict[str, NodeProcess], request: pytest.FixtureRequest) -> Kubectl:
    return fresh_namespace(lifecycle_server, request)


def _get_node(k: Kubectl, name: str) -> Any:
    return json.loads(k.out("get", "node", name, "-o", "json", namespaced=False))


def _taints(k: Kubectl, name: str) -> set[tuple[str, str]]:
    return {(t["key"], t["effect"]) for t in _get_node(k, name)["spec"].get("taints") or []}


def _condition(obj: Any, kind: str) -> Any:
    return next((c for c in obj["status"].get("conditions") or [] if c["type"] == kind), None)


def _patch_conditions(k: Kubectl, node: str, **statuses: str) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conds = [{"type": t, "status": s, "reason": "Test", "message": "set by the test", "lastHeartbeatTime": now}
             for t, s in statuses.items()]
    k.run("patch", "node", node, "--subresource=status", "--type=strategic",
          "-p", json.dumps({"status": {"conditions": conds}}), namespaced=False)


def _pod(k: Kubectl, name: str, node: str, *tolerations: dict[str, Any]) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox:1.36"}],
                    "tolerations": list(tolerations)}}
    k.run("create", "-f", "-", input=json.dumps(pod))


def _events(k: Kubectl, reason: str, *, namespaced: bool = True) -> list[Any]:
    args = ("get", "events", "-o", "json") + (("--all-namespaces",) if not namespaced else ())
    items = json.loads(k.out(*args, namespaced=namespaced))["items"]
    return [e for e in items if e["reason"] == reason]


def _pod_ready(k: Kubectl, name: str, status: str) -> bool:
    cond = _condition(k.json("get", "pod", name), "Ready")
    return cond is not None and cond["status"] == status


def _time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_conditions_and_cordon_taint_the_node(k: Kubectl) -> None:
    k.run("cordon", "steady", namespaced=False)
    _until(lambda: (("node.kubernetes.io/unschedulable", "NoSchedule") in _taints(k, "steady")), what="unschedulable taint")
    k.run("uncordon", "steady", namespaced=False)
    _until(lambda: not _taints(k, "steady"), what="unschedulable taint removed")

    _patch_conditions(k, "steady", MemoryPressure="True", PIDPressure="True")
    _until(lambda: _taints(k, "steady") == {("node.kubernetes.io/memory-pressure", "NoSchedule"),
                                            ("node.kubernetes.io/pid-pressure", "NoSchedule")}, what="pressure taints")
    _patch_conditions(k, "steady", MemoryPressure="False", PIDPressure="False")
    _until(lambda: not _taints(k, "steady"), what="pressure taints removed")

    # The kubelet says NotReady: not-ready, NoExecute (with timeAdded) and NoSchedule.
    _patch_conditions(k, "steady", Ready="False")
    _until(lambda: _taints(k, "steady") == {(NOT_READY, "NoExecute"), (NOT_READY, "NoSchedule")}, what="not-ready taints")
    assert all(t.get("timeAdded") for t in _get_node(k, "steady")["spec"]["taints"])
    _patch_conditions(k, "steady", Ready="True")
    _until(lambda: not _taints(k, "steady"), what="not-ready taints removed")


def test_an_unreachable_node_is_tainted_and_its_pods_evicted(k: Kubectl, lifecycle_server: Server,
                                                             nodes: dict[str, NodeProcess]) -> None:
    unreachable = {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}
    _pod(k, "brief", "fading", {**unreachable, "tolerationSeconds": 2})
    _pod(k, "steadfast", "fading", unreachable)
    _pod(k, "defaults", "fading")  # admission gives it 300 s for not-ready and unreachable
    for name in ("brief", "steadfast", "defaults"):
        _until(functools.partial(_pod_ready, k, name, "True"), what=f"pod {name} ready")

    nodes["fading"].kill()  # its Lease stops

    def unknown() -> Any:
        node = _get_node(k, "fading")
        return node if _condition(node, "Ready")["status"] == "Unknown" else None

    node = _until(unknown, what="node Unknown")
    for kind in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure"):
        cond = _condition(node, kind)
        assert (cond["status"], cond["reason"], cond["message"]) == (
            "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")
    _until(lambda: _taints(k, "fading") == {(UNREACHABLE, "NoExecute"), (UNREACHABLE, "NoSchedule")},
           what="unreachable taints")
    taint = next(t for t in _get_node(k, "fading")["spec"]["taints"] if t["effect"] == "NoExecute")
    added = _time(taint["timeAdded"])
    assert _condition(_get_node(k, "steady"), "Ready")["status"] == "True" and not _taints(k, "steady")
    kubectl_nodes = k.out("get", "nodes", namespaced=False)
    assert any(line.split()[:2] == ["fading", "NotReady"] for line in kubectl_nodes.splitlines())

    # Its pods are marked not ready, with a NodeNotReady warning each.
    for name in ("brief", "steadfast", "defaults"):
        _until(functools.partial(_pod_ready, k, name, "False"), what=f"pod {name} not ready")

    def warned() -> list[Any] | None:
        found = _events(k, "NodeNotReady")
        return found if {e["involvedObject"]["name"] for e in found} >= {"brief", "steadfast", "defaults"} else None

    warnings = _until(warned, what="NodeNotReady events")
    assert all(e["type"] == "Warning" and e["message"] == "Node is not ready" for e in warnings)

    # The pod tolerating 2 s goes (Terminating: nobody is there to finish it), never before 2 s.
    brief = _until(lambda: (p := k.json("get", "pod", "brief"))["metadata"].get("deletionTimestamp") and p,
                   what="brief evicted")
    grace = brief["spec"].get("terminationGracePeriodSeconds", 30)
    assert _time(brief["metadata"]["deletionTimestamp"]) >= added + datetime.timedelta(seconds=2 + grace)
    assert _condition(brief, "DisruptionTarget")["reason"] == "DeletionByTaintManager"
    for name in ("steadfast", "defaults"):
        assert not k.json("get", "pod", name)["metadata"].get("deletionTimestamp")
    evictions = _until(lambda: _events(k, "TaintManagerEviction"), what="TaintManagerEviction event")
    assert [e["message"] for e in evictions] == [f"Marking for deletion Pod {k.ns}/brief"]
    assert evictions[0]["source"]["component"] == "taint-eviction-controller"

    def node_events() -> dict[str, Any] | None:
        found = {e["reason"]: e for reason in ("RegisteredNode", "NodeNotReady") for e in _events(k, reason, namespaced=False)
                 if e["involvedObject"]["kind"] == "Node" and e["involvedObject"]["name"] == "fading"}
        return found if len(found) == 2 else None

    events = _until(node_events, what="node events")
    assert events["RegisteredNode"]["message"] == "Node fading event: Registered Node fading in Controller"
    assert events["NodeNotReady"]["message"] == "Node fading status is now: NodeNotReady"
    assert events["NodeNotReady"]["source"]["component"] == "node-controller"

    # Back: Ready again, the taints go, and the Terminating pod is finished by the node.
    nodes["fading"] = _node(lifecycle_server, "fading").start()
    _until(lambda: _condition(_get_node(k, "fading"), "Ready")["status"] == "True", what="node Ready again")
    _until(lambda: not _taints(k, "fading"), what="taints removed")
    _until(lambda: k.run("get", "pod", "brief", check=False).returncode != 0, what="brief gone")
    for name in ("steadfast", "defaults"):
        assert not k.json("get", "pod", name)["metadata"].get("deletionTimestamp")
