"""The scheduler's filter and score plugins, and its messages, on hand-made snapshots."""

from __future__ import annotations

from typing import Any

from edgekube.scheduler import plugins
from edgekube.scheduler.scheduler import _fit_prefix

JSON = dict[str, Any]


def node(name: str, *, cpu: str = "4", memory: str = "8Gi", pods: str = "110", labels: dict[str, str] | None = None,
         taints: list[JSON] | None = None, unschedulable: bool = False) -> plugins.NodeInfo:
    res = {"cpu": cpu, "memory": memory, "pods": pods}
    spec: JSON = {"taints": taints or []}
    if unschedulable:
        spec["unschedulable"] = True
    return plugins.NodeInfo({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
                             "spec": spec, "status": {"allocatable": res}})


def pod(name: str = "p", *, cpu: str | None = None, labels: dict[str, str] | None = None, **spec: Any) -> JSON:
    container: JSON = {"name": "c", "image": "busybox"}
    if cpu:
        container["resources"] = {"requests": {"cpu": cpu}}
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "labels": labels or {}},
            "spec": {"containers": [container], **spec}}


def test_resources_fit_counts_requests_and_pod_slots() -> None:
    n = node("a", cpu="2", pods="2")
    n.pods["default/x"] = pod("x", cpu="1500m")
    assert plugins.resources_fit(pod(cpu="500m"), n) == []
    assert plugins.resources_fit(pod(cpu="600m"), n) == ["Insufficient cpu"]
    n.pods["default/y"] = pod("y")
    assert plugins.resources_fit(pod(), n) == ["Too many pods"]
    # Removing pods (preemption's view) frees their room.
    assert plugins.resources_fit(pod(cpu="600m"), n, skip=["default/x", "default/y"]) == []


def test_init_containers_count_by_their_largest_request() -> None:
    p = pod(cpu="100m")
    p["spec"]["initContainers"] = [{"name": "i", "resources": {"requests": {"cpu": "3"}}}]
    assert plugins.objects.pod_requests(p)["cpu"] == 3000


def test_node_affinity_operators_and_node_selector() -> None:
    n = node("a", labels={"zone": "b", "gen": "5"})
    assert plugins.node_affinity(pod(nodeSelector={"zone": "b"}), n) is None
    assert plugins.node_affinity(pod(nodeSelector={"zone": "c"}), n) == plugins.NODE_AFFINITY

    def required(*exprs: JSON) -> JSON:
        return pod(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": list(exprs)}]}}})

    assert plugins.node_affinity(required({"key": "zone", "operator": "In", "values": ["a", "b"]}), n) is None
    assert plugins.node_affinity(required({"key": "zone", "operator": "NotIn", "values": ["b"]}), n) is not None
    assert plugins.node_affinity(required({"key": "gen", "operator": "Gt", "values": ["4"]}), n) is None
    assert plugins.node_affinity(required({"key": "gen", "operator": "Lt", "values": ["4"]}), n) is not None
    assert plugins.node_affinity(required({"key": "gpu", "operator": "DoesNotExist"}), n) is None
    assert plugins.node_affinity(required({"key": "gpu", "operator": "Exists"}), n) is not None
    by_name = pod(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]}]}}})
    assert plugins.node_affinity(by_name, n) is None


def test_taints_and_tolerations() -> None:
    n = node("a", taints=[{"key": "dedicated", "value": "edge", "effect": "NoSchedule"}])
    assert plugins.taint_toleration(pod(), n) == "node(s) had untolerated taint {dedicated: edge}"
    ok = pod(tolerations=[{"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"}])
    assert plugins.taint_toleration(ok, n) is None
    everything = pod(tolerations=[{"operator": "Exists"}])
    assert plugins.taint_toleration(everything, n) is None
    soft = node("b", taints=[{"key": "k", "effect": "PreferNoSchedule"}])
    assert plugins.taint_toleration(pod(), soft) is None and plugins.prefer_no_schedule(pod(), soft) == 1.0
    cordoned = node("c", unschedulable=True)
    assert plugins.node_unschedulable(pod(), cordoned) == plugins.UNSCHEDULABLE


def test_host_ports_conflict() -> None:
    n = node("a")
    taken = pod("x")
    taken["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 8080}]
    n.pods["default/x"] = taken
    wants = pod("y")
    wants["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 8080, "protocol": "TCP"}]
    assert plugins.host_ports(wants, n) == plugins.PORTS
    wants["spec"]["containers"][0]["ports"][0]["protocol"] = "UDP"
    assert plugins.host_ports(wants, n) is None


def test_inter_pod_affinity_and_anti_affinity() -> None:
    a, b = node("a", labels={"zone": "z1"}), node("b", labels={"zone": "z2"})
    nodes = plugins.Snapshot({"a": a, "b": b})
    a.pods["default/db"] = pod("db", labels={"app": "db"})
    near_db = pod(labels={"app": "web"}, affinity={"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}})
    assert plugins.inter_pod_affinity(near_db, a, nodes) is None
    assert plugins.inter_pod_affinity(near_db, b, nodes) == plugins.AFFINITY
    apart = pod(labels={"app": "db"}, affinity={"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}})
    assert plugins.inter_pod_affinity(apart, a, plugins.Snapshot(nodes)) == plugins.ANTI_AFFINITY
    assert plugins.inter_pod_affinity(apart, b, plugins.Snapshot(nodes)) is None
    # A placed pod's anti-affinity keeps others of its kind away.
    b.pods["default/lonely"] = pod("lonely", labels={"app": "x"}, affinity={"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "zone"}]}})
    assert plugins.inter_pod_affinity(pod(labels={"app": "x"}), b, plugins.Snapshot(nodes)) == \
        plugins.EXISTING_ANTI_AFFINITY
    # The first pod of a group that selects itself may go anywhere.
    first = pod(labels={"app": "new"}, affinity={"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "new"}}, "topologyKey": "zone"}]}})
    assert plugins.inter_pod_affinity(first, a, plugins.Snapshot(nodes)) is None


def test_scores_prefer_emptier_nodes_and_spread() -> None:
    busy, idle = node("busy"), node("idle")
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-1", "controller": True}
    for i in range(3):
        p = pod(f"x{i}", cpu="1")
        p["metadata"]["ownerReferences"] = [owner]
        busy.pods[f"default/x{i}"] = p
    new = pod(cpu="100m")
    new["metadata"]["ownerReferences"] = [owner]
    assert plugins.least_allocated(new, idle) > plugins.least_allocated(new, busy)
    assert plugins.spread(new, busy) == 3.0 and plugins.spread(new, idle) == 0.0


def test_fit_message_is_upstreams() -> None:
    reasons = {"a": ["Insufficient cpu"], "b": ["Insufficient cpu", "Insufficient memory"],
               "c": ["node(s) didn't match Pod's node affinity/selector"]}
    # Sorted as strings, count first, as upstream's sortReasonsHistogram.
    assert _fit_prefix(3, reasons) == ("0/3 nodes are available: 1 Insufficient memory, "
                                       "1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient cpu.")


def test_sidecars_count_as_upstream() -> None:
    def req(cpu: str, *, sidecar: bool = False) -> JSON:
        c: JSON = {"name": "x", "resources": {"requests": {"cpu": cpu}}}
        if sidecar:
            c["restartPolicy"] = "Always"
        return c

    # A sidecar started after a big init container runs beside the containers only.
    late = {"spec": {"containers": [req("100m")], "initContainers": [req("500m"), req("100m", sidecar=True)]}}
    assert plugins.objects.pod_requests(late)["cpu"] == 500
    # A sidecar started before it runs beside the init container too.
    early = {"spec": {"containers": [req("100m")], "initContainers": [req("100m", sidecar=True), req("500m")]}}
    assert plugins.objects.pod_requests(early)["cpu"] == 600


def test_no_nodes_at_all_is_upstreams_message() -> None:
    from edgekube.scheduler.scheduler import Scheduler

    assert Scheduler.fit_message(object.__new__(Scheduler), pod(), plugins.Snapshot(), {}) == \
        "no nodes available to schedule pods"
