"""Kinds real clients expect a cluster to serve (issue 13): ReplicationController with its
controller, APIService with the local entries, PriorityClass with the system classes. Real
kubectl (1.27, 1.33, 1.36) and the Python client against a real server; pods run on a test node.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.conftest import Server
from tests.e2e.test_kubectl import Kubectl
from tests.support.testnode import NodeProcess
from tests.support.waiting import until

pytestmark = pytest.mark.e2e

KUBECTLS = ("1.27", "1.33", "1.36")


@pytest.fixture(params=KUBECTLS, ids=[f"kubectl-{v}" for v in KUBECTLS])
def k(request: pytest.FixtureRequest, server: Server, test_node: NodeProcess) -> Iterator[Kubectl]:
    version = request.param
    ns = f"{request.node.originalname.removeprefix('test_').replace('_', '-')[:40]}-{version.replace('.', '')}"
    kubectl = Kubectl(version, server, ns)
    kubectl.run("create", "namespace", ns, namespaced=False)
    try:
        yield kubectl
    finally:
        kubectl.run("delete", "namespace", ns, "--wait=false", namespaced=False, check=False)


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[client.ApiClient]:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(server.kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as c:
        yield c


def _raw(server: Server, path: str) -> Any:
    ctx = server.admin_context()
    with urllib.request.urlopen(server.url + path, context=ctx, timeout=10) as r:
        return json.loads(r.read())


def _table(out: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header and rows (by first column) of kubectl's table output."""
    lines = out.splitlines()
    return lines[0].split(), {line.split()[0]: line.split() for line in lines[1:]}


# --- ReplicationController ------------------------------------------------------------------

RC = """
apiVersion: v1
kind: ReplicationController
metadata: {name: web}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: web, tier: front}}
    spec:
      containers: [{name: web, image: busybox:1.36, command: [sleep, "3600"]}]
"""


def _rc_pods(k: Kubectl) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = k.json("get", "pods", "-l", "app=web")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def test_replication_controller_runs_scales_and_deletes_its_pods(k: Kubectl) -> None:
    k.run("apply", "-f", "-", input=RC)
    rc = k.json("get", "rc", "web")
    # Upstream's defaults: the selector and the labels come from the template.
    assert rc["spec"]["selector"] == {"app": "web", "tier": "front"}
    assert rc["metadata"]["labels"] == {"app": "web", "tier": "front"}
    assert rc["metadata"]["generation"] == 1
    pods = until(lambda: [p for p in _rc_pods(k) if _ready(p)] if len(_rc_pods(k)) == 2 else None, what="2 ready pods")
    for pod in pods:
        ref = pod["metadata"]["ownerReferences"][0]
        assert (ref["apiVersion"], ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "v1", "ReplicationController", "web", rc["metadata"]["uid"], True)
    until(lambda: k.json("get", "rc", "web").get("status", {}).get("readyReplicas") == 2, what="status.readyReplicas 2")
    status = k.json("get", "rc", "web")["status"]
    assert status["replicas"] == 2 and status["fullyLabeledReplicas"] == 2 and status["availableReplicas"] == 2
    assert status["observedGeneration"] == 1

    # Table columns as upstream's printer, wide adds containers, images and the map selector.
    header, rows = _table(k.out("get", "rc", "-o", "wide"))
    assert header == ["NAME", "DESIRED", "CURRENT", "READY", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert rows["web"][1:4] == ["2", "2", "2"] and rows["web"][5:] == ["web", "busybox:1.36", "app=web,tier=front"]
    assert "replicationcontroller/web" in k.out("get", "all")

    k.run("scale", "rc", "web", "--replicas=3")
    until(lambda: len(_rc_pods(k)) == 3, what="3 pods")
    scale = _raw(k.server, f"/api/v1/namespaces/{k.ns}/replicationcontrollers/web/scale")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3
    assert scale["status"]["selector"] == "app=web,tier=front"
    k.run("scale", "rc", "web", "--replicas=1")
    until(lambda: len(_rc_pods(k)) == 1, what="1 pod")
    assert k.json("get", "rc", "web")["metadata"]["generation"] == 3

    # An orphan with matching labels is adopted (and then counts), as the ReplicaSet controller does.
    k.run("run", "stray", "--image=busybox:1.36", "--labels=app=web,tier=front", "--", "sleep", "3600")
    until(lambda: len(_rc_pods(k)) == 1 and all(p["metadata"].get("ownerReferences") for p in _rc_pods(k)),
          what="the stray pod adopted and one pod deleted")

    k.run("delete", "rc", "web")
    until(lambda: not _rc_pods(k), what="the pods garbage-collected")


def test_replication_controller_validation_is_upstreams(k: Kubectl) -> None:
    mismatch = RC.replace("replicas: 2", "replicas: 1\n  selector: {app: other}")
    proc = k.run("apply", "-f", "-", input=mismatch, check=False)
    assert proc.returncode != 0
    assert "spec.template.metadata.labels: Invalid value" in proc.stderr
    assert "`selector` does not match template `labels`" in proc.stderr
    never = RC.replace("containers:", "restartPolicy: Never\n      containers:")
    proc = k.run("apply", "-f", "-", input=never, check=False)
    assert 'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"' in proc.stderr
    deadline = RC.replace("containers:", "activeDeadlineSeconds: 10\n      containers:")
    proc = k.run("apply", "-f", "-", input=deadline, check=False)
    assert ("spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in ReplicationController "
            "is not Supported") in proc.stderr
    no_template = "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: bare}\nspec: {selector: {a: b}}\n"
    proc = k.run("apply", "-f", "-", input=no_template, check=False)
    assert "spec.template: Required value" in proc.stderr
    assert not k.out("get", "rc", "-o", "name")  # nothing was stored


PRUNE_SET = """
apiVersion: v1
kind: ConfigMap
metadata: {name: kept, labels: {set: prune}}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: doomed-rc, labels: {set: prune}}
spec:
  replicas: 0
  selector: {app: doomed}
  template:
    metadata: {labels: {app: doomed}}
    spec:
      containers: [{name: c, image: busybox:1.36}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: doomed-cm, labels: {set: prune}}
"""
PRUNE_KEPT = PRUNE_SET.split("---")[0]


def test_apply_prune_with_and_without_an_allowlist(k: Kubectl) -> None:
    k.run("apply", "-f", "-", input=PRUNE_SET)
    # Without an allowlist kubectl maps its default list (ReplicationController, Ingress, ...)
    # first: one kind it cannot map fails the whole command.
    out = k.out("apply", "--prune", "-l", "set=prune", "-f", "-", input=PRUNE_KEPT)
    assert "replicationcontroller/doomed-rc pruned" in out and "configmap/doomed-cm pruned" in out
    assert k.out("get", "rc,cm", "-l", "set=prune", "-o", "name").split() == ["configmap/kept"]

    k.run("apply", "-f", "-", input=PRUNE_SET)
    out = k.out("apply", "--prune", "-l", "set=prune", "--prune-allowlist=core/v1/ConfigMap", "-f", "-", input=PRUNE_KEPT)
    assert "configmap/doomed-cm pruned" in out and "doomed-rc" not in out
    assert sorted(k.out("get", "rc,cm", "-l", "set=prune", "-o", "name").split()) == [
        "configmap/kept", "replicationcontroller/doomed-rc"]


def test_replication_controllers_through_the_python_client(api: client.ApiClient, server: Server,
                                                           test_node: NodeProcess) -> None:
    core = client.CoreV1Api(api)
    ns = "rc-python-client"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    try:
        events: list[tuple[str, str]] = []
        start = core.list_namespaced_replication_controller(ns).metadata.resource_version
        w = watch.Watch()

        def collect() -> None:
            for ev in w.stream(core.list_namespaced_replication_controller, ns, resource_version=start,
                               timeout_seconds=30):
                events.append((ev["type"], ev["object"].metadata.name))
                if ev["type"] == "DELETED":
                    w.stop()

        watcher = threading.Thread(target=collect, daemon=True)
        watcher.start()
        body = client.V1ReplicationController(
            metadata=client.V1ObjectMeta(name="py"),
            spec=client.V1ReplicationControllerSpec(
                replicas=1, selector={"app": "py"},
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels={"app": "py"}),
                    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox:1.36")]))))
        made = core.create_namespaced_replication_controller(ns, body)
        assert made.spec.replicas == 1 and made.spec.selector == {"app": "py"}
        assert [rc.metadata.name for rc in core.list_namespaced_replication_controller(ns).items] == ["py"]
        core.patch_namespaced_replication_controller_scale("py", ns, {"spec": {"replicas": 2}})
        scale = core.read_namespaced_replication_controller_scale("py", ns)
        assert scale.spec.replicas == 2 and scale.status.selector == "app=py"
        until(lambda: core.read_namespaced_replication_controller_status("py", ns).status.ready_replicas == 2,
              what="2 ready replicas")
        core.delete_namespaced_replication_controller("py", ns)
        watcher.join(timeout=30)
        assert events[0] == ("ADDED", "py") and events[-1] == ("DELETED", "py")
        with pytest.raises(ApiException) as missing:
            core.read_namespaced_replication_controller("py", ns)
        assert missing.value.status == 404
    finally:
        core.delete_namespace(ns)


# --- APIService -------------------------------------------------------------------------------


def _apiservices(k: Kubectl) -> dict[str, dict[str, Any]]:
    return {a["metadata"]["name"]: a for a in k.json("get", "apiservices")["items"]}


def _local_names(k: Kubectl) -> set[str]:
    """`v1.`, `v1.apps`, ... for every group-version `kubectl api-versions` lists."""
    out = set()
    for gv in k.out("api-versions", namespaced=False).split():
        group, _, version = gv.rpartition("/")
        out.add(f"{version}.{group}")
    return out


def test_apiservices_list_every_served_group_version(k: Kubectl) -> None:
    header, rows = _table(k.out("get", "apiservices", namespaced=False))
    assert header == ["NAME", "SERVICE", "AVAILABLE", "AGE"]
    assert set(rows) == _local_names(k)
    assert {"v1.", "v1.apps", "v1.apiregistration.k8s.io", "v2.autoscaling"} <= set(rows)
    assert all(r[1:3] == ["Local", "True"] for r in rows.values())
    core = _apiservices(k)["v1."]
    assert core["spec"] == {"version": "v1", "groupPriorityMinimum": 18000, "versionPriority": 1}
    assert core["metadata"]["labels"] == {"kube-aggregator.kubernetes.io/automanaged": "onstart"}
    cond = core["status"]["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"], cond["message"]) == (
        "Available", "True", "Local", "Local APIServices are always available")
    assert _apiservices(k)["v1.apps"]["spec"] == {"group": "apps", "version": "v1", "groupPriorityMinimum": 17800,
                                                  "versionPriority": 15}
    # A deleted local entry comes back; `kubectl api-resources` is served all along.
    k.run("delete", "apiservice", "v1.apps", namespaced=False)
    until(lambda: "v1.apps" in _apiservices(k), what="v1.apps back")
    assert "deployments" in k.out("api-resources", "--api-group=apps", namespaced=False)
    # A status nobody observed is put back, as upstream's availability controller does.
    broken = {"status": {"conditions": [{"type": "Available", "status": "False", "reason": "Broken", "message": "x"}]}}
    k.run("patch", "apiservice", "v1.batch", "--subresource=status", "--type=merge", "-p", json.dumps(broken),
          namespaced=False)
    until(lambda: _apiservices(k)["v1.batch"]["status"]["conditions"][0]["reason"] == "Local", what="status back")


CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.%(group)s}
spec:
  group: %(group)s
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - {name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}
  - {name: v2alpha1, served: false, storage: false, schema: {openAPIV3Schema: {type: object}}}
"""


def test_apiservices_follow_crds(k: Kubectl) -> None:
    group = f"k{k.version.replace('.', '')}.apiservices.example.com"
    k.run("apply", "-f", "-", input=CRD % {"group": group}, namespaced=False)
    try:
        name = f"v1.{group}"
        entry = until(lambda: _apiservices(k).get(name), what=f"{name} registered")
        assert entry["spec"] == {"group": group, "version": "v1", "groupPriorityMinimum": 1000, "versionPriority": 100}
        assert entry["metadata"]["labels"] == {"kube-aggregator.kubernetes.io/automanaged": "true"}
        assert f"v2alpha1.{group}" not in _apiservices(k)  # not served
        assert _table(k.out("get", "apiservice", name, namespaced=False))[1][name][1:3] == ["Local", "True"]
        until(lambda: f"{group}/v1" in k.out("api-versions", namespaced=False).split(), what="discovery")
    finally:
        k.run("delete", "crd", f"gadgets.{group}", namespaced=False)
    until(lambda: f"v1.{group}" not in _apiservices(k), what="the CRD's APIService removed")


AGGREGATED = """
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.%(group)s}
spec:
  group: %(group)s
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  insecureSkipTLSVerify: true
  service: {namespace: kube-system, name: metrics-server}
"""


def test_an_aggregated_apiservice_is_stored_not_proxied(k: Kubectl) -> None:
    group = f"k{k.version.replace('.', '')}.metrics.example.com"
    name = f"v1beta1.{group}"
    k.run("apply", "-f", "-", input=AGGREGATED % {"group": group}, namespaced=False)
    try:
        got = _apiservices(k)[name]
        assert got["spec"]["service"] == {"namespace": "kube-system", "name": "metrics-server", "port": 443}
        cond = got["status"]["conditions"][0]
        assert (cond["type"], cond["status"], cond["reason"]) == ("Available", "False", "AggregationNotSupported")
        assert "kube-system/metrics-server" in cond["message"]
        assert _table(k.out("get", "apiservice", name, namespaced=False))[1][name][1:4] == [
            "kube-system/metrics-server", "False", "(AggregationNotSupported)"]
        assert f"{group}/v1beta1" not in k.out("api-versions", namespaced=False).split()
        # Nobody else's entry: the registration controller leaves it alone.
        k.run("label", "apiservice", name, "x=y", namespaced=False)
        assert _apiservices(k)[name]["spec"]["groupPriorityMinimum"] == 100
    finally:
        k.run("delete", "apiservice", name, namespaced=False)
    bad = (AGGREGATED % {"group": group}).replace(f"name: v1beta1.{group}", "name: wrong")
    proc = k.run("apply", "-f", "-", input=bad, namespaced=False, check=False)
    assert f'metadata.name: Invalid value: "wrong": must be `spec.version+"."+spec.group`: "{name}"' in proc.stderr
    local_tls = (AGGREGATED % {"group": group}).replace("  service: {namespace: kube-system, name: metrics-server}\n", "")
    proc = k.run("apply", "-f", "-", input=local_tls, namespaced=False, check=False)
    assert "spec.insecureSkipTLSVerify: Invalid value: true: local APIServices may not have insecureSkipTLSVerify" in proc.stderr


def test_apiservice_schemas_for_explain(k: Kubectl) -> None:
    assert "groupPriorityMinimum" in k.out("explain", "apiservice.spec", namespaced=False)
    assert "Selector is a label query over pods" in k.out("explain", "rc.spec.selector", namespaced=False)


def test_apiservices_through_the_python_client(api: client.ApiClient) -> None:
    reg = client.ApiregistrationV1Api(api)
    names = {a.metadata.name for a in reg.list_api_service().items}
    assert {"v1.", "v1.apps", "v1.apiregistration.k8s.io"} <= names
    core = reg.read_api_service("v1.")
    assert core.spec.service is None and core.spec.group_priority_minimum == 18000
    assert core.status.conditions[0].reason == "Local"


def test_discovery_and_openapi_serve_the_new_kinds(server: Server) -> None:
    v1 = {r["name"]: r for r in _raw(server, "/api/v1")["resources"]}
    rc = v1["replicationcontrollers"]
    assert rc["kind"] == "ReplicationController" and rc["shortNames"] == ["rc"] and rc["categories"] == ["all"]
    assert v1["replicationcontrollers/scale"]["kind"] == "Scale" and "replicationcontrollers/status" in v1
    reg = {r["name"]: r for r in _raw(server, "/apis/apiregistration.k8s.io/v1")["resources"]}
    assert reg["apiservices"]["namespaced"] is False and "apiservices/status" in reg
    paths = _raw(server, "/openapi/v3")["paths"]
    assert "apis/apiregistration.k8s.io/v1" in paths
    doc = _raw(server, "/openapi/v3/apis/apiregistration.k8s.io/v1")
    assert "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIService" in doc["components"]["schemas"]
    core = _raw(server, "/openapi/v3/api/v1")
    assert "/api/v1/namespaces/{namespace}/replicationcontrollers/{name}/scale" in core["paths"]
    v2 = _raw(server, "/openapi/v2")
    assert "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIService" in v2["definitions"]


# --- PriorityClass ----------------------------------------------------------------------------


def test_system_priority_classes_are_protected(k: Kubectl, tmp_path: Path) -> None:
    header, rows = _table(k.out("get", "pc", namespaced=False))
    assert header == ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"]
    assert rows["system-node-critical"][1:3] == ["2000001000", "false"]
    assert rows["system-cluster-critical"][1:3] == ["2000000000", "false"]
    proc = k.run("delete", "pc", "system-node-critical", namespaced=False, check=False)
    assert proc.returncode != 0
    assert ('priorityclasses.scheduling.k8s.io "system-node-critical" is forbidden: this is a system priority class '
            "and cannot be deleted") in proc.stderr
    proc = k.run("patch", "pc", "system-cluster-critical", "--type=merge", "-p", '{"value": 5}',
                 namespaced=False, check=False)
    assert "value: Forbidden: may not be changed in an update." in proc.stderr
    proc = k.run("patch", "pc", "system-cluster-critical", "--type=merge", "-p", '{"globalDefault": true}',
                 namespaced=False, check=False)
    assert ("metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. "
            "error: globalDefault of system-cluster-critical PriorityClass must be false") in proc.stderr
    proc = k.run("create", "priorityclass", f"system-mine-{k.version.replace('.', '')}", "--value=10",
                 namespaced=False, check=False)
    assert "is not a known system priority class" in proc.stderr
    # A description may change, as upstream allows.
    k.run("annotate", "pc", "system-node-critical", f"seen-by-{k.version.replace('.', '')}=yes", namespaced=False)
    assert k.json("get", "pc", "system-node-critical")["value"] == 2000001000


def test_one_global_default_and_system_classes_in_any_namespace(k: Kubectl) -> None:
    first, second = f"first-default-{k.version.replace('.', '')}", f"second-default-{k.version.replace('.', '')}"
    k.run("create", "priorityclass", first, "--value=100", "--global-default", namespaced=False)
    try:
        proc = k.run("create", "priorityclass", second, "--value=50", "--global-default", namespaced=False, check=False)
        assert (f'priorityclasses.scheduling.k8s.io "{second}" is forbidden: PriorityClass {first} is already marked '
                "as default. Only one default can exist") in proc.stderr
        k.run("create", "priorityclass", second, "--value=50", namespaced=False)
        proc = k.run("patch", "pc", second, "--type=merge", "-p", '{"globalDefault": true}', namespaced=False, check=False)
        assert f"PriorityClass {first} is already marked as default" in proc.stderr
        k.run("patch", "pc", first, "--type=merge", "-p", '{"description": "still the default"}', namespaced=False)
    finally:
        k.run("delete", "pc", first, second, namespaced=False, check=False)
    # Since 1.17 upstream lets any namespace use the system classes (a ResourceQuota may limit them).
    k.run("run", "critical", "--image=busybox:1.36", "--overrides",
          json.dumps({"spec": {"priorityClassName": "system-node-critical"}}))
    spec = k.json("get", "pod", "critical")["spec"]
    assert spec["priority"] == 2000001000 and spec["preemptionPolicy"] == "PreemptLowerPriority"


def test_deletecollection_keeps_the_system_priority_classes(api: client.ApiClient) -> None:
    sched = client.SchedulingV1Api(api)
    sched.create_priority_class(client.V1PriorityClass(metadata=client.V1ObjectMeta(name="swept", labels={"sweep": "1"}),
                                                       value=7))
    sched.delete_collection_priority_class()
    names = {pc.metadata.name for pc in sched.list_priority_class().items}
    assert names == {"system-node-critical", "system-cluster-critical"}


# --- Ingress (kubectl's default prune list needs it mapped) ---------------------------------


def test_ingresses_are_stored_and_shown(k: Kubectl) -> None:
    k.run("create", "ingress", "web", "--class=nginx", "--rule=foo.example/bar*=svc1:8080,tls=cert",
          "--rule=bar.example/=svc2:http")  # kubectl 1.36 sends this one as protobuf
    header, rows = _table(k.out("get", "ingress"))
    assert header == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert rows["web"][1:3] == ["nginx", "foo.example,bar.example"] and "80, 443" in k.out("get", "ing", "web")
    paths = [r["http"]["paths"][0] for r in k.json("get", "ingress", "web")["spec"]["rules"]]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/bar", "Prefix"), ("/", "Exact")]
    no_type = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bad}
spec:
  rules:
  - http: {paths: [{path: /, backend: {service: {name: s, port: {number: 80}}}}]}
"""
    proc = k.run("apply", "-f", "-", input=no_type, check=False)
    assert "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified" in proc.stderr


# --- NetworkPolicy ------------------------------------------------------------------------------

NETPOL = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}, {ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]
    ports: [{port: 8080}, {port: 9000, endPort: 9100}]
  egress:
  - ports: [{port: 53, protocol: UDP}]
"""


def test_network_policies_are_served_defaulted_and_shown_as_upstream(k: Kubectl) -> None:
    k.run("apply", "-f", "-", input=NETPOL)
    spec = k.json("get", "networkpolicy", "web")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]  # defaulted from the rules, as upstream
    assert spec["ingress"][0]["ports"] == [{"port": 8080, "protocol": "TCP"},
                                           {"port": 9000, "endPort": 9100, "protocol": "TCP"}]
    header, rows = _table(k.out("get", "netpol"))
    assert header == ["NAME", "POD-SELECTOR", "AGE"] and rows["web"][1] == "app=web"
    k.run("apply", "-f", "-", input="apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                                    "metadata: {name: deny}\nspec: {podSelector: {}}\n")
    assert k.json("get", "netpol", "deny")["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    assert _table(k.out("get", "netpol"))[1]["deny"][1] == "<none>"
    described = k.out("describe", "netpol", "web")
    assert "PodSelector:     app=web" in described and "To Port: 8080/TCP" in described
    k.run("delete", "netpol", "web", "deny")
    assert not k.out("get", "netpol", "-o", "name")


@pytest.mark.parametrize("bad, message", [
    ("{podSelector: {}, policyTypes: [Ingress, Egress, Ingress]}", "may not specify more than two policyTypes"),
    ("{podSelector: {}, policyTypes: [Sideways]}", 'spec.policyTypes[0]: Unsupported value: "Sideways"'),
    ("{podSelector: {}, ingress: [{from: [{}]}]}", "spec.ingress[0].from[0]: Required value: must specify a peer"),
    ("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]}",
     "spec.ingress[0].from[0]: Forbidden: may not specify both ipBlock and another peer"),
    ("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]}",
     "spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: \"11.0.0.0/16\": must be a strict subset of `cidr`"),
    ("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: nonsense}}]}]}", "not a valid CIDR"),
    ("{podSelector: {}, egress: [{ports: [{port: 80, endPort: 79}]}]}", "must be greater than or equal to `port`"),
    ("{podSelector: {}, egress: [{ports: [{port: http, endPort: 90}]}]}", "may not be specified when `port` is non-numeric"),
    ("{podSelector: {}, egress: [{ports: [{port: 70000}]}]}", "must be between 1 and 65535, inclusive"),
    ("{podSelector: {}, egress: [{ports: [{port: 80, protocol: ICMP}]}]}", 'Unsupported value: "ICMP"'),
    ("{podSelector: {matchExpressions: [{key: a, operator: In}]}}", "values set can't be empty"),
])
def test_network_policy_validation_is_upstreams(server: Server, bad: str, message: str) -> None:
    kubectl = Kubectl("1.33", server, "default")
    proc = kubectl.run("apply", "-f", "-", check=False, input="apiVersion: networking.k8s.io/v1\n"
                       f"kind: NetworkPolicy\nmetadata: {{name: bad}}\nspec: {bad}\n")
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
