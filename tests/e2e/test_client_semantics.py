"""What the clients' own test suites expect of a server (upstream kubectl's test/cmd scripts, the
Python client's end-to-end tests), replayed with real kubectl 1.27, 1.33 and 1.36 and the real
Python client against `edgekube server`.

Each class of behaviour is checked across the kinds and verbs it touches: defaulting on every
write (so writing back what was read, or what was first sent, is no change), templates compared as
Go structs (a `null` is no field), resourceVersion "0" as unset, the move from client-side to
server-side apply, zero statuses and the DELETE response of each kind, and Status bodies as
upstream writes them.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.conftest import Server
from tests.e2e.test_kubectl import Kubectl
from tests.support.waiting import until

pytestmark = pytest.mark.e2e

VERSIONS = ("1.27", "1.33", "1.36")


@pytest.fixture(params=VERSIONS, ids=[f"kubectl-{v}" for v in VERSIONS])
def kubectl(request: pytest.FixtureRequest, server: Server) -> Iterator[Kubectl]:
    version = request.param
    case = re.sub(r"[^a-z0-9]+", "-", request.node.callspec.id.lower().removeprefix("kubectl-"))
    ns = f"{request.node.originalname.removeprefix('test_').replace('_', '-')[:40]}-{case}"[:63].strip("-")
    k = Kubectl(version, server, ns)
    k.run("create", "namespace", ns, namespaced=False)
    try:
        yield k
    finally:
        k.run("delete", "namespace", ns, "--wait=false", namespaced=False, check=False)


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[client.ApiClient]:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(server.kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as c:
        yield c


@pytest.fixture
def ns(api: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    core = client.CoreV1Api(api)
    name = "s-" + request.node.name.replace("_", "-").lower()[:50].strip("-")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)


def _raw(server: Server, method: str, path: str, body: Any = None,
         content_type: str = "application/json") -> tuple[int, bytes]:
    """A request with the admin certificate; the body exactly as the server wrote it."""
    ctx = server.admin_context()
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, data=data, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# --- defaulting on every write --------------------------------------------------------------------

PRIORITY_CLASS = """\
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {{name: {name}}}
value: 1000
preemptionPolicy: Never
"""

POD = """\
apiVersion: v1
kind: Pod
metadata: {{name: plain}}
spec:
  priorityClassName: {pc}
  automountServiceAccountToken: false
  containers: [{{name: c, image: busybox:1.36}}]
  volumes: [{{name: scratch}}]
"""


def test_replace_and_edit_of_an_unchanged_pod(kubectl: Kubectl, tmp_path: Path) -> None:
    """test/cmd/core.sh: `kubectl replace` of a pod as first sent or as read back is no change;
    what defaulting and admission added at create (volume source, tolerations, priority) is
    added again, or kept, on update."""
    pc = f"never-{kubectl.ns}"
    kubectl.run("create", "-f", "-", input=PRIORITY_CLASS.format(name=pc), namespaced=False)
    try:
        manifest = POD.format(pc=pc)
        kubectl.run("create", "-f", "-", input=manifest)
        pod = kubectl.json("get", "pod", "plain")
        # No token volume: upstream's test/cmd runs without ServiceAccount admission, and on a
        # cluster with it (edgekube, as upstream) a replace that drops the volume it added at
        # create is refused like any other change of a pod's volumes.
        assert pod["spec"]["volumes"] == [{"name": "scratch", "emptyDir": {}}]
        assert (pod["spec"]["priority"], pod["spec"]["preemptionPolicy"]) == (1000, "Never")
        kubectl.run("replace", "-f", "-", input=manifest)
        kubectl.run("replace", "-f", "-", input=kubectl.out("get", "pod", "plain", "-o", "yaml"))
        kubectl.run("replace", "-f", "-", input=kubectl.out("get", "pod", "plain", "-o", "json"))
        editor = tmp_path / "editor.sh"
        editor.write_text("#!/bin/sh\nsed -i 's/busybox:1.36/busybox:1.37/' \"$1\"\n")
        editor.chmod(0o755)
        kubectl.run("edit", "pod/plain", env={"EDITOR": str(editor), "KUBE_EDITOR": str(editor)})
        pod = kubectl.json("get", "pod", "plain")
        assert pod["spec"]["containers"][0]["image"] == "busybox:1.37"
        assert (pod["spec"]["priority"], pod["spec"]["preemptionPolicy"]) == (1000, "Never")
        assert {t["key"] for t in pod["spec"]["tolerations"]} == {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
    finally:
        kubectl.run("delete", "pod", "plain", "--grace-period=0", "--force", check=False)
        kubectl.run("delete", "priorityclass", pc, namespaced=False, check=False)


def test_sourceless_volumes_are_empty_dirs_in_every_pod_template(kubectl: Kubectl) -> None:
    kubectl.run("create", "deployment", "vols", "--image=busybox:1.36")
    kubectl.run("patch", "deployment", "vols", "--type=json", "-p",
                json.dumps([{"op": "add", "path": "/spec/template/spec/volumes", "value": [{"name": "tmp"}]}]))
    volumes = kubectl.json("get", "deployment", "vols")["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "tmp", "emptyDir": {}}]


# --- templates as Go structs ----------------------------------------------------------------------

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: undo}
spec:
  replicas: 1
  selector: {matchLabels: {app: undo}}
  template:
    metadata: {labels: {app: undo}}
    spec: {containers: [{name: c, image: busybox:1.36}]}
"""


def _sets(kubectl: Kubectl) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl.json("get", "replicasets", "-l", "app=undo")["items"]
    return items


def _revision(rs: dict[str, Any]) -> str:
    return str(rs["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision"))


def test_rollout_undo_goes_back_to_the_old_replicaset(kubectl: Kubectl) -> None:
    """test/cmd/apps.sh: `kubectl rollout undo` sends the old ReplicaSet's template back, as Go
    encodes it (`creationTimestamp: null`): the deployment takes that ReplicaSet again, as
    revision 3, and makes no new one."""
    kubectl.run("apply", "-f", "-", input=DEPLOYMENT)
    first = until(lambda: _sets(kubectl), what="the first ReplicaSet")[0]["metadata"]["name"]
    kubectl.run("set", "image", "deployment/undo", "c=busybox:1.37")
    until(lambda: len(_sets(kubectl)) == 2, what="a second ReplicaSet")
    kubectl.run("rollout", "undo", "deployment/undo")
    until(lambda: "3" in {_revision(rs) for rs in _sets(kubectl)}, what="a ReplicaSet at revision 3")
    sets = {rs["metadata"]["name"]: _revision(rs) for rs in _sets(kubectl)}
    assert len(sets) == 2 and sets[first] == "3", sets
    history = [line.split()[0] for line in kubectl.out("rollout", "history", "deployment/undo").splitlines()[2:] if line.strip()]
    assert history == ["2", "3"]


DAEMONSET = """\
apiVersion: apps/v1
kind: {kind}
metadata: {{name: tmpl}}
spec:
  selector: {{matchLabels: {{app: tmpl}}}}
  {extra}
  template:
    metadata: {{labels: {{app: tmpl}}{null}}}
    spec: {{containers: [{{name: c, image: busybox:1.36}}]}}
"""


@pytest.mark.parametrize("kind", ["DaemonSet", "StatefulSet"])
def test_a_null_in_a_template_is_no_new_revision(kubectl: Kubectl, kind: str) -> None:
    extra = "serviceName: tmpl" if kind == "StatefulSet" else ""
    kubectl.run("apply", "-f", "-", input=DAEMONSET.format(kind=kind, extra=extra, null=""))
    until(lambda: kubectl.json("get", "controllerrevisions")["items"], what="the first revision")
    before = kubectl.json("get", kind.lower(), "tmpl")["metadata"]["generation"]
    kubectl.run("replace", "-f", "-", input=DAEMONSET.format(kind=kind, extra=extra, null=", creationTimestamp: null"))
    obj = kubectl.json("get", kind.lower(), "tmpl")
    assert obj["metadata"]["generation"] == before  # no spec change
    kubectl.run("patch", kind.lower(), "tmpl", "-p", '{"spec": {"template": {"metadata": {"annotations": {"a": "b"}}}}}')
    until(lambda: len(kubectl.json("get", "controllerrevisions")["items"]) == 2, what="a revision for the real change")
    revisions = kubectl.json("get", "controllerrevisions")["items"]
    assert sorted(r["revision"] for r in revisions) == [1, 2]


# --- resourceVersion "0" --------------------------------------------------------------------------


def _node(kubectl: Kubectl, name: str) -> Any:
    return json.loads(kubectl.out("get", "node", name, "-o", "json", namespaced=False))


def test_resource_version_zero_is_unset(kubectl: Kubectl) -> None:
    """test/cmd/core.sh replaces a Node with resourceVersion "0": an unconditional update."""
    node = f"node-{kubectl.ns}"
    body = {"kind": "Node", "apiVersion": "v1", "metadata": {"name": node}}
    kubectl.run("create", "-f", "-", input=json.dumps(body), namespaced=False)
    try:
        body["metadata"].update({"annotations": {"a": "b"}, "resourceVersion": "0"})
        kubectl.run("replace", "--dry-run=server", "-f", "-", input=json.dumps(body), namespaced=False)
        assert "annotations" not in _node(kubectl, node)["metadata"]
        kubectl.run("replace", "-f", "-", input=json.dumps(body), namespaced=False)
        assert _node(kubectl, node)["metadata"]["annotations"] == {"a": "b"}
    finally:
        kubectl.run("delete", "node", node, namespaced=False, check=False)
    cm = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "zero", "resourceVersion": "0"}, "data": {"a": "1"}}
    kubectl.run("create", "-f", "-", input=json.dumps(cm))  # "0" on create is no resourceVersion either
    cm["data"] = {"a": "2"}
    kubectl.run("replace", "-f", "-", input=json.dumps(cm))
    kubectl.run("patch", "configmap", "zero", "--type=merge", "-p", '{"metadata": {"resourceVersion": "0"}, "data": {"a": "3"}}')
    assert kubectl.json("get", "configmap", "zero")["data"] == {"a": "3"}


def test_resource_version_zero_with_the_python_client(api: client.ApiClient, ns: str, server: Server) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(ns, {"metadata": {"name": "zero"}, "data": {"a": "1"}})
    out = core.replace_namespaced_config_map("zero", ns, {"metadata": {"name": "zero", "resourceVersion": "0"}, "data": {"a": "2"}})
    assert out.data == {"a": "2"}
    # A delete precondition is compared as given, as upstream: "0" is no object's version.
    with pytest.raises(ApiException) as exc:
        core.delete_namespaced_config_map("zero", ns, body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version="0")))
    assert exc.value.status == 409
    # Custom objects and CRDs refuse unconditional updates, as their upstream strategies do.
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "zeros.semantics.example.com"},
           "spec": {"group": "semantics.example.com", "scope": "Namespaced",
                    "names": {"plural": "zeros", "singular": "zero", "kind": "Zero"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(crd)
    try:
        custom = client.CustomObjectsApi(api)
        until(lambda: _raw(server, "GET", f"/apis/semantics.example.com/v1/namespaces/{ns}/zeros")[0] == 200,
              what="the CRD served")
        custom.create_namespaced_custom_object("semantics.example.com", "v1", ns, "zeros",
                                               {"apiVersion": "semantics.example.com/v1", "kind": "Zero", "metadata": {"name": "z"}})
        with pytest.raises(ApiException) as exc:
            custom.replace_namespaced_custom_object("semantics.example.com", "v1", ns, "zeros", "z", {
                "apiVersion": "semantics.example.com/v1", "kind": "Zero", "metadata": {"name": "z", "resourceVersion": "0"}, "x": 1})
        assert exc.value.status == 422
        assert json.loads(exc.value.body)["message"] == (
            'zeros.semantics.example.com "z" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update')
    finally:
        ext.delete_custom_resource_definition(crd["metadata"]["name"])


# --- from client-side to server-side apply ------------------------------------------------------

APPLIED_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: test-pod
  labels: {{name: {label}}}
spec:
  containers: [{{name: kubernetes-pause, image: registry.k8s.io/pause:3.9}}]
"""


def _last_applied(kubectl: Kubectl, what: str) -> Any:
    return json.loads(kubectl.out("apply", "view-last-applied", what, "-o", "json"))


def test_upgrade_from_client_side_to_server_side_apply(kubectl: Kubectl) -> None:
    """test/cmd/apply.sh, run_kubectl_server_side_apply_tests: upgrade and downgrade."""
    kubectl.run("apply", "-f", "-", input=APPLIED_POD.format(label="test-pod-label"))
    changed = APPLIED_POD.format(label="test-pod-applied")
    # Only `kubectl` itself takes over what its client-side apply set.
    refused = kubectl.run("apply", "--server-side", "--field-manager=not-kubectl", "-f", "-", input=changed, check=False)
    assert refused.returncode != 0 and 'conflict with "kubectl-client-side-apply"' in refused.stderr
    diff = kubectl.run("diff", "--server-side", "-f", "-", input=changed, check=False)
    assert diff.returncode == 1 and "+    name: test-pod-applied" in diff.stdout, diff.stderr
    kubectl.run("apply", "--server-side", "-f", "-", input=changed)
    assert _last_applied(kubectl, "pod/test-pod")["metadata"]["labels"] == {"name": "test-pod-applied"}
    # Downgrade: the annotation followed, so client-side apply works from it.
    kubectl.run("apply", "--server-side", "-f", "-", input=APPLIED_POD.format(label="test-pod-label"))
    assert _last_applied(kubectl, "pod/test-pod")["metadata"]["labels"] == {"name": "test-pod-label"}
    kubectl.run("apply", "-f", "-", input=changed)
    assert kubectl.json("get", "pod", "test-pod")["metadata"]["labels"] == {"name": "test-pod-applied"}
    kubectl.run("delete", "pod", "test-pod", "--grace-period=0", "--force")


LEGACY = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: test
data:
  key: value
{legacy}"""


def test_server_side_apply_takes_over_client_side_fields(kubectl: Kubectl) -> None:
    """test/cmd/apply.sh: after the switch, a field the manifest drops is removed, because
    kubectl's own entry now owns what its client-side applies set."""
    with_legacy = LEGACY.format(legacy="  legacy: unused\n")
    kubectl.run("apply", "-f", "-", input=with_legacy)
    kubectl.run("apply", "--server-side", "-f", "-", input=with_legacy)
    assert kubectl.json("get", "configmap", "test")["data"] == {"key": "value", "legacy": "unused"}
    kubectl.run("apply", "--server-side", "-f", "-", input=LEGACY.format(legacy=""))
    cm = kubectl.json("get", "configmap", "test", "--show-managed-fields")
    assert cm["data"] == {"key": "value"}
    managers = {(e["manager"], e["operation"]) for e in cm["metadata"]["managedFields"]}
    assert ("kubectl", "Apply") in managers and ("kubectl-client-side-apply", "Update") not in managers


# --- response shapes ------------------------------------------------------------------------------


def test_created_objects_carry_their_zero_status(api: client.ApiClient, ns: str, server: Server) -> None:
    """The Python client's e2e suite checks a new Service's status; its models refuse a
    ReplicaSet or DaemonSet status without the fields Go always writes."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    svc = core.create_namespaced_service(ns, {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}})
    assert svc.status is not None and svc.status.load_balancer is not None
    pod_template = {"metadata": {"labels": {"app": "z"}}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}
    spec = {"selector": {"matchLabels": {"app": "z"}}, "template": pod_template}
    rs = apps.create_namespaced_replica_set(ns, {"metadata": {"name": "z"}, "spec": {**spec, "replicas": 0}})
    assert rs.status.replicas == 0
    ds = apps.create_namespaced_daemon_set(ns, {"metadata": {"name": "z"}, "spec": spec})
    assert (ds.status.current_number_scheduled, ds.status.desired_number_scheduled) == (0, 0)
    sts = apps.create_namespaced_stateful_set(ns, {"metadata": {"name": "z"}, "spec": {**spec, "serviceName": "z", "replicas": 0}})
    assert sts.status.replicas == 0
    assert json.loads(_raw(server, "GET", f"/api/v1/namespaces/{ns}/services/web")[1])["status"] == {"loadBalancer": {}}


def test_delete_answers_as_each_kind_upstream_does(api: client.ApiClient, ns: str) -> None:
    """ReturnDeletedObject kinds answer a DELETE with the object (the generated clients decode
    it as that kind); the others with a Status naming what was deleted."""
    core = client.CoreV1Api(api)
    core.create_namespaced_service(ns, {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}})
    deleted = core.delete_namespaced_service("web", ns)
    assert isinstance(deleted, client.V1Service) and deleted.metadata.name == "web"
    core.create_namespaced_service_account(ns, {"metadata": {"name": "robot"}})
    assert isinstance(core.delete_namespaced_service_account("robot", ns), client.V1ServiceAccount)
    core.create_namespaced_resource_quota(ns, {"metadata": {"name": "q"}, "spec": {"hard": {"pods": "5"}}})
    assert isinstance(core.delete_namespaced_resource_quota("q", ns), client.V1ResourceQuota)
    claim = {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}}}
    core.create_namespaced_persistent_volume_claim(ns, claim)
    out = core.delete_namespaced_persistent_volume_claim("data", ns)
    assert isinstance(out, client.V1PersistentVolumeClaim) and out.metadata.name == "data"
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}})
    status = core.delete_namespaced_config_map("cm", ns)
    assert status["kind"] == "Status" and status["status"] == "Success"
    assert status["details"]["name"] == "cm" and status["details"]["kind"] == "configmaps"


def test_delete_of_a_service_with_kubectl(kubectl: Kubectl) -> None:
    kubectl.run("create", "service", "clusterip", "web", "--tcp=80:80")
    assert kubectl.json("get", "service", "web")["status"] == {"loadBalancer": {}}
    assert kubectl.out("delete", "service", "web").startswith('service "web" deleted')


# --- Status bodies ------------------------------------------------------------------------------


def test_status_bodies_are_upstreams_bytes(server: Server, ns: str) -> None:
    code, body = _raw(server, "GET", f"/api/v1/namespaces/{ns}/configmaps/nope")
    assert code == 404
    assert body == (b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
                    b'"message":"configmaps \\"nope\\" not found","reason":"NotFound",'
                    b'"details":{"name":"nope","kind":"configmaps"},"code":404}\n')
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dup"}}
    assert _raw(server, "POST", f"/api/v1/namespaces/{ns}/configmaps", cm)[0] == 201
    code, body = _raw(server, "POST", f"/api/v1/namespaces/{ns}/configmaps", cm)
    assert code == 409
    assert body == (b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
                    b'"message":"configmaps \\"dup\\" already exists","reason":"AlreadyExists",'
                    b'"details":{"name":"dup","kind":"configmaps"},"code":409}\n')
    code, body = _raw(server, "GET", f"/apis/apps/v1/namespaces/{ns}/deployments/nope")
    assert json.loads(body)["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}
    assert list(json.loads(body)) == ["kind", "apiVersion", "metadata", "status", "message", "reason", "details", "code"]
    # Several causes are one message in brackets, as upstream's aggregate error.
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "Bad_Name"}, "spec": {"ports": [{"port": 0}]}}
    code, body = _raw(server, "POST", f"/api/v1/namespaces/{ns}/services", bad)
    status = json.loads(body)
    assert code == 422 and status["message"].startswith('Service "Bad_Name" is invalid: [') and status["message"].endswith("]")
    assert len(status["details"]["causes"]) >= 2
    code, body = _raw(server, "GET", f"/api/v1/namespaces/{ns}/configmaps/dup")
    assert code == 200 and body.endswith(b"}\n")


def test_kubectl_prints_upstreams_errors(kubectl: Kubectl) -> None:
    missing = kubectl.run("get", "configmap", "nope", check=False)
    assert missing.stderr.strip() == 'Error from server (NotFound): configmaps "nope" not found'
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dup}\n"
    kubectl.run("create", "-f", "-", input=manifest)
    exists = kubectl.run("create", "-f", "-", input=manifest, check=False)
    assert exists.stderr.strip() == 'Error from server (AlreadyExists): error when creating "STDIN": configmaps "dup" already exists'
    bad = kubectl.run("create", "-f", "-", input="apiVersion: v1\nkind: Service\nmetadata: {name: Bad_Name}\nspec: {ports: [{port: 0}]}\n",
                      check=False)
    assert bad.stderr.startswith('The Service "Bad_Name" is invalid: \n* metadata.name: Invalid value: "Bad_Name"'), bad.stderr
    # test/cmd/core.sh: a patch whose result does not decode is a 422 on the field `patch`.
    kubectl.run("run", "plain", "--image=busybox:1.36")
    labels = kubectl.run("patch", "pod", "plain", "-p", '{"metadata":{"labels":"invalid"}}', check=False)
    assert labels.stderr.strip() == ('The request is invalid: patch: Invalid value: "map[metadata:map[labels:invalid]]": '
                                     "cannot restore map from string")
    unknown = kubectl.run("patch", "pod", "plain", "-p", '{"spec":{"bogus":1}}', check=False)
    assert unknown.stderr.strip() == ('The request is invalid: patch: Invalid value: "map[spec:map[bogus:1]]": '
                                      'strict decoding error: unknown field "spec.bogus"')
    assert "patched (no change)" in kubectl.out("patch", "pod", "plain", "-p", '{"metadata":{"name":"plain"}}')
    kubectl.run("delete", "pod", "plain", "--grace-period=0", "--force")


KINDS = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: every}
spec:
  selector: {matchLabels: {app: every}}
  template:
    metadata: {labels: {app: every}}
    spec:
      containers: [{name: c, image: busybox:1.36, ports: [{containerPort: 80}]}]
      volumes: [{name: v}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: every}
spec:
  selector: {matchLabels: {app: every-ds}}
  template:
    metadata: {labels: {app: every-ds}}
    spec: {containers: [{name: c, image: busybox:1.36}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: every}
spec:
  serviceName: every
  selector: {matchLabels: {app: every-sts}}
  template:
    metadata: {labels: {app: every-sts}}
    spec: {containers: [{name: c, image: busybox:1.36}]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: every}
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        spec: {restartPolicy: Never, containers: [{name: c, image: busybox:1.36}]}
---
apiVersion: v1
kind: Service
metadata: {name: every}
spec:
  type: NodePort
  selector: {app: every}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Secret
metadata: {name: every}
stringData: {a: b}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: every}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: every}
  maxReplicas: 3
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: every}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{kind: User, name: someone}]
"""


def test_replace_with_the_manifest_first_sent_is_no_change(kubectl: Kubectl) -> None:
    """Defaults are applied to every write as to a create: replacing an object with the
    manifest it was created from, or patching a defaulted field away, changes nothing."""
    kubectl.run("create", "-f", "-", input=KINDS)
    what = ["deployment/every", "daemonset/every", "statefulset/every", "cronjob/every", "service/every",
            "secret/every", "hpa/every", "rolebinding/every"]
    before = {w: kubectl.json("get", w) for w in what}
    kubectl.run("replace", "-f", "-", input=KINDS)
    kubectl.run("patch", "deployment", "every", "--type=json", "-p",
                '[{"op": "remove", "path": "/spec/template/spec/dnsPolicy"}, {"op": "remove", "path": "/spec/strategy"}]')
    for w in what:
        after = kubectl.json("get", w)
        assert after["metadata"].get("generation") == before[w]["metadata"].get("generation"), w
        for part in ("spec", "data", "roleRef", "subjects"):
            assert after.get(part) == before[w].get(part), (w, part)


def test_yaml_manifests_of_every_kind_round_trip(kubectl: Kubectl) -> None:
    """`kubectl get -o yaml | kubectl replace -f -` is no change for every kind created here."""
    kubectl.run("create", "deployment", "rt", "--image=busybox:1.36")
    kubectl.run("create", "service", "clusterip", "rt", "--tcp=80:80")
    kubectl.run("create", "job", "rt", "--image=busybox:1.36")
    kubectl.run("create", "cronjob", "rt", "--image=busybox:1.36", "--schedule=* * * * *")
    kubectl.run("create", "configmap", "rt", "--from-literal=a=b")
    kubectl.run("create", "secret", "generic", "rt", "--from-literal=a=b")
    for what in ("deployment/rt", "service/rt", "job/rt", "cronjob/rt", "configmap/rt", "secret/rt"):
        live = yaml.safe_load(kubectl.out("get", what, "-o", "yaml"))
        kubectl.run("replace", "-f", "-", input=yaml.safe_dump(live))
        after = kubectl.json("get", what)
        assert after["metadata"].get("generation") == live["metadata"].get("generation"), what


def test_the_python_clients_service_apis(api: client.ApiClient, ns: str) -> None:
    """kubernetes-client/python e2e_test/test_client.py, test_service_apis, in a namespace of its own."""
    core = client.CoreV1Api(api)
    manifest: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"labels": {"name": "frontend"}, "name": "frontend"},
        "spec": {"ports": [{"name": "port", "port": 80, "protocol": "TCP", "targetPort": 80}], "selector": {"name": "frontend"}},
    }
    resp = core.create_namespaced_service(body=manifest, namespace=ns)
    assert resp.metadata.name == "frontend" and resp.status
    resp = core.read_namespaced_service(name="frontend", namespace=ns)
    assert resp.metadata.name == "frontend" and resp.status
    manifest["spec"]["ports"] = [{"name": "new", "port": 8080, "protocol": "TCP", "targetPort": 8080}]
    resp = core.patch_namespaced_service(body=manifest, name="frontend", namespace=ns)
    assert len(resp.spec.ports) == 2 and resp.status
    resp = core.delete_namespaced_service(name="frontend", body={}, namespace=ns)
    assert resp.metadata.name == "frontend"


def test_bodies_that_are_not_their_kind_say_so_in_upstreams_words(kubectl: Kubectl, server: Server,
                                                                   tmp_path: Path) -> None:
    """kubectl's test-cmd (create.sh): a Pod posted to /api/v1/namespaces is 'the object provided
    is unrecognized (must be of type Namespace)'; and a body that is no JSON object says so as
    upstream's transformDecodeError does (Go's JSON words, the body's first 30 bytes)."""
    pod = tmp_path / "pod.yaml"
    pod.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: i}]}\n")
    out = kubectl.run("create", "--raw", "/api/v1/namespaces", "-f", str(pod), check=False)
    assert out.returncode != 0 and "the object provided is unrecognized (must be of type Namespace)" in out.stderr, out.stderr
    path = f"/api/v1/namespaces/{kubectl.ns}/configmaps"
    for body, why in ((b'{"kind": "ConfigMap",', "json parse error: unexpected end of JSON input ({\"kind\": \"ConfigMap\",)"),
                      (b"not json", "json parse error: invalid character 'n' looking for beginning of value (6e6f74206a736f6e)"),
                      (b"[1, 2]", "json: cannot unmarshal array into Go value of type struct")):
        code, raw = _raw(server, "POST", path, body)
        status = json.loads(raw)
        assert code == 400 and status["reason"] == "BadRequest", (body, status)
        assert status["message"].startswith("the object provided is unrecognized (must be of type ConfigMap): "
                                            "couldn't get version/kind; "), status["message"]
        assert why in status["message"], (why, status["message"])
