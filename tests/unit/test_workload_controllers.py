"""The DaemonSet and StatefulSet controllers' decisions that need no server: node eligibility,
daemon tolerations, revision hashes and data, pod identity, claim ownership per retention policy."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from edgekube.controllers import daemonset, revisions, statefulset

JSON = dict[str, Any]


def _ds(spec: JSON | None = None, *, labels: JSON | None = None) -> JSON:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "ns", "uid": "ds-uid"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "template": {"metadata": {"labels": labels or {"app": "agent"}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}], **(spec or {})}}}}


def _node(name: str = "n1", *, labels: JSON | None = None, taints: list[JSON] | None = None) -> JSON:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"taints": taints or []}}


# --- revisions ------------------------------------------------------------------------------


def test_hashes_use_upstreams_alphabet_and_change_with_the_collision_count() -> None:
    template = _ds()["spec"]["template"]
    h = revisions.compute_hash(template, None)
    assert h and set(h) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert h == revisions.compute_hash(copy.deepcopy(template), None)
    assert len({h, revisions.compute_hash(template, 0), revisions.compute_hash(template, 1)}) == 3
    data = revisions.template_patch(_ds())
    assert revisions.hash_revision(data, 0) != revisions.hash_revision(data, 1)
    assert revisions.revision_name("x" * 300, "abc") == "x" * 223 + "-abc"
    # The FNV variants, checked against their published test vectors.
    assert revisions.fnv32(b"a") == 0x050C5D7E and revisions.fnv32a(b"a") == 0xE40C292C


def test_revision_data_replaces_the_template_and_applies_back() -> None:
    ds = _ds()
    data = revisions.template_patch(ds)
    assert data["spec"]["template"]["$patch"] == "replace"
    assert "$patch" not in ds["spec"]["template"]  # the owner is not touched
    rev = revisions.new(ds, name="agent-abc", data=data, revision=1, labels={"app": "agent"})
    assert revisions.matches(ds, rev)
    changed = copy.deepcopy(ds)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:2"
    assert not revisions.matches(changed, rev)
    restored = revisions.apply(changed, rev)
    assert restored["spec"]["template"] == ds["spec"]["template"]
    assert changed["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:2"
    assert rev["metadata"]["ownerReferences"][0]["uid"] == "ds-uid"


# --- DaemonSet --------------------------------------------------------------------------------


def test_daemon_tolerations_are_added_and_replace_equal_ones() -> None:
    spec: JSON = {"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                                   "tolerationSeconds": 300},
                                  {"key": "example.com/x", "operator": "Exists"}]}
    daemonset.add_daemon_tolerations(spec)
    keys = [(t.get("key"), t.get("effect")) for t in spec["tolerations"]]
    assert keys.count(("node.kubernetes.io/not-ready", "NoExecute")) == 1
    assert all("tolerationSeconds" not in t for t in spec["tolerations"])
    assert ("node.kubernetes.io/unschedulable", "NoSchedule") in keys
    assert ("node.kubernetes.io/network-unavailable", "NoSchedule") not in keys
    host: JSON = {"hostNetwork": True}
    daemonset.add_daemon_tolerations(host)
    assert {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists", "effect": "NoSchedule"} in host["tolerations"]


@pytest.mark.parametrize(("spec", "node", "want"), [
    ({}, _node(), (True, True)),
    ({"nodeSelector": {"role": "edge"}}, _node(labels={"role": "edge"}), (True, True)),
    ({"nodeSelector": {"role": "edge"}}, _node(), (False, False)),
    ({"nodeName": "n2"}, _node(), (False, False)),
    # A NoSchedule taint keeps a running pod; a NoExecute one does not.
    ({}, _node(taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]), (False, True)),
    ({}, _node(taints=[{"key": "dedicated", "value": "db", "effect": "NoExecute"}]), (False, False)),
    ({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db"}]},
     _node(taints=[{"key": "dedicated", "value": "db", "effect": "NoExecute"}]), (True, True)),
    # Daemon pods tolerate the node conditions' taints, and PreferNoSchedule never excludes.
    ({}, _node(taints=[{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
                       {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
                       {"key": "soft", "effect": "PreferNoSchedule"}]), (True, True)),
    ({}, _node(taints=[{"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}]), (False, True)),
    ({"hostNetwork": True}, _node(taints=[{"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}]),
     (True, True)),
    ({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["2"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n9"]}]}]}}}},
     _node(labels={"cores": "4"}), (True, True)),
    ({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["2"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n9"]}]}]}}}},
     _node(labels={"cores": "1"}), (False, False)),
    ({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{}]}}}},
     _node(), (False, False)),
])
def test_which_nodes_run_a_daemon_pod(spec: JSON, node: JSON, want: tuple[bool, bool]) -> None:
    assert daemonset.should_run(node, _ds(spec)) == want


def test_daemon_pods_target_their_node_by_name() -> None:
    spec: JSON = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Exists"}]}]}}}}
    daemonset.with_node_affinity(spec, "n3")
    assert spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n3"]}]}]
    assert daemonset.target_node({"spec": spec}) == "n3"
    assert daemonset.target_node({"spec": {**spec, "nodeName": "n4"}}) == "n4"
    assert daemonset.target_node({"spec": {}}) is None


def test_updated_pods_and_rolling_numbers() -> None:
    pod = {"metadata": {"labels": {"controller-revision-hash": "abc", "pod-template-generation": "2"}}}
    assert daemonset.is_updated(pod, "abc", None)
    assert daemonset.is_updated(pod, "zzz", 2)
    assert not daemonset.is_updated(pod, "zzz", 3)
    assert daemonset.scaled("25%", 5, round_up=True) == 2
    assert daemonset.scaled("25%", 5, round_up=False) == 1
    assert daemonset.scaled(3, 5, round_up=True) == 3


# --- StatefulSet ------------------------------------------------------------------------------


def _sts(*, partition: int | None = 0, policy: JSON | None = None, replicas: int = 3) -> JSON:
    spec: JSON = {
        "replicas": replicas, "serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}],
                                                                      "volumes": [{"name": "cfg", "emptyDir": {}}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "www", "labels": {"tier": "db"}},
                                  "spec": {"accessModes": ["ReadWriteOnce"]}}],
        "updateStrategy": {"type": "RollingUpdate", **({"rollingUpdate": {"partition": partition}}
                                                       if partition is not None else {})},
    }
    if policy is not None:
        spec["persistentVolumeClaimRetentionPolicy"] = policy
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web", "namespace": "ns", "uid": "s-uid"},
            "spec": spec, "status": {}}


def test_ordinals_and_pod_identity() -> None:
    assert statefulset.parent_and_ordinal("web-12") == ("web", 12)
    assert statefulset.parent_and_ordinal("my-web-0") == ("my-web", 0)
    assert statefulset.parent_and_ordinal("web") == ("", -1)
    sts = _sts()
    pod = statefulset.new_pod(sts, 1, "web-rev")
    meta = pod["metadata"]
    assert (meta["name"], meta["namespace"], meta["generateName"]) == ("web-1", "ns", "web-")
    assert meta["labels"] == {"app": "web", "statefulset.kubernetes.io/pod-name": "web-1",
                              "apps.kubernetes.io/pod-index": "1", "controller-revision-hash": "web-rev"}
    assert (pod["spec"]["hostname"], pod["spec"]["subdomain"]) == ("web-1", "web")
    assert pod["spec"]["volumes"] == [{"name": "www", "persistentVolumeClaim": {"claimName": "www-web-1"}},
                                      {"name": "cfg", "emptyDir": {}}]
    assert statefulset.identity_matches(sts, pod) and statefulset.storage_matches(sts, pod)
    (name, claim), = statefulset.claims_for(sts, 1)
    assert name == "www" and claim["metadata"]["name"] == "www-web-1"
    assert claim["metadata"]["labels"] == {"tier": "db", "app": "web"}
    assert "volumeClaimTemplates" in sts["spec"] and sts["spec"]["template"]["spec"]["volumes"] == [
        {"name": "cfg", "emptyDir": {}}]  # the set is not touched


def test_new_pods_below_the_partition_stay_at_the_current_revision() -> None:
    current, update = _sts(partition=2), _sts(partition=2)
    update["spec"]["template"]["spec"]["containers"][0]["image"] = "new"
    pods = [statefulset.versioned_pod(current, update, "web-old", "web-new", i) for i in range(3)]
    assert [p["metadata"]["labels"]["controller-revision-hash"] for p in pods] == ["web-old", "web-old", "web-new"]
    assert [p["spec"]["containers"][0]["image"] for p in pods] == ["i", "i", "new"]
    on_delete = _sts(partition=None)
    on_delete["spec"]["updateStrategy"] = {"type": "OnDelete"}
    assert statefulset.versioned_pod(on_delete, update, "web-old", "web-new", 0)["metadata"]["labels"][
        "controller-revision-hash"] == "web-new"


@pytest.mark.parametrize(("policy", "replicas", "owners"), [
    ({"whenDeleted": "Retain", "whenScaled": "Retain"}, 3, []),
    ({"whenDeleted": "Delete", "whenScaled": "Retain"}, 3, ["s-uid"]),
    ({"whenDeleted": "Retain", "whenScaled": "Delete"}, 3, []),
    ({"whenDeleted": "Retain", "whenScaled": "Delete"}, 1, ["p-uid"]),  # web-2 scaled away
    ({"whenDeleted": "Delete", "whenScaled": "Delete"}, 3, ["s-uid"]),
    ({"whenDeleted": "Delete", "whenScaled": "Delete"}, 1, ["p-uid"]),
])
def test_claim_owners_follow_the_retention_policy(policy: JSON, replicas: int, owners: list[str]) -> None:
    sts = _sts(policy=policy, replicas=replicas)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-2", "namespace": "ns", "uid": "p-uid"}}
    claim: JSON = {"metadata": {"name": "www-web-2", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "o-uid"}]}}
    assert statefulset.claim_owners_up_to_date(claim, sts, pod) == (owners == [])
    statefulset.set_claim_owners(claim, sts, pod)
    refs = claim["metadata"]["ownerReferences"]
    assert [r["uid"] for r in refs] == ["o-uid", *owners]
    assert all(r.get("controller") for r in refs[1:])
    assert statefulset.claim_owners_up_to_date(claim, sts, pod)


def test_claims_of_an_earlier_pod_or_another_controller_are_left_alone() -> None:
    sts = _sts(policy={"whenDeleted": "Delete", "whenScaled": "Delete"})
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-2", "namespace": "ns", "uid": "p-uid"}}
    stale = {"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "web-2", "uid": "old"}]}}
    assert statefulset.claim_owners_up_to_date(stale, sts, pod)
    foreign = {"metadata": {"ownerReferences": [{"apiVersion": "x/v1", "kind": "Db", "name": "d", "uid": "d",
                                                 "controller": True}]}}
    assert statefulset.unexpected_controller(foreign, sts, pod)
    assert statefulset.claim_owners_up_to_date(foreign, sts, pod)
    statefulset.set_claim_owners(foreign, sts, pod)
    assert [r["uid"] for r in foreign["metadata"]["ownerReferences"]] == ["d"]
