"""Real kubectl, the oldest (1.27) and the newest (1.36) we support, against `edgekube server`.

Each test runs once per kubectl version, in a namespace of its own on one shared server, so the
two clients meet the same server state side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, Server

pytestmark = pytest.mark.e2e

VERSIONS = ("1.27", "1.36")


def _binary(version: str) -> Path:
    path = REPO / "tools" / "bin" / f"kubectl-{version}"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make kube-tools` (make test does)")
    return path


class Kubectl:
    def __init__(self, version: str, server: Server, namespace: str) -> None:
        self.version = version
        self.bin = _binary(version)
        self.server = server
        self.ns = namespace
        self.env = {**os.environ, "KUBECONFIG": str(server.kubeconfig), "HOME": str(server.data_dir.parent)}

    def run(self, *args: str, input: str | None = None, check: bool = True, env: dict[str, str] | None = None,
            namespaced: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin), *(["-n", self.ns] if namespaced else []), *args]
        if self.server.netns is not None:  # the server listens inside a network namespace: so must kubectl
            cmd = self.server.netns.argv(cmd)
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=60,
                              env={**self.env, **(env or {})})
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def out(self, *args: str, **kw: Any) -> str:
        return self.run(*args, **kw).stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.out(*args, "-o", "json"))


@pytest.fixture(params=VERSIONS, ids=[f"kubectl-{v}" for v in VERSIONS])
def kubectl(request: pytest.FixtureRequest, server: Server) -> Iterator[Kubectl]:
    version = request.param
    ns = f"{request.node.originalname.removeprefix('test_').replace('_', '-')[:40]}-{version.replace('.', '')}"
    k = Kubectl(version, server, ns)
    k.run("create", "namespace", ns, namespaced=False)
    yield k


MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels: {app: web, tier: front}
data:
  mode: edge
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: busybox:1.36
        env: [{name: A, value: "1"}]
        ports: [{containerPort: 8080, name: http}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
stringData: {password: s3cret}
"""


def test_apply_multi_document_manifest(kubectl: Kubectl) -> None:
    out = kubectl.out("apply", "-f", "-", input=MANIFEST)
    assert "configmap/settings created" in out
    assert "deployment.apps/web created" in out
    assert "service/web created" in out
    assert "secret/creds created" in out
    # Applying the same manifest again changes nothing.
    again = kubectl.out("apply", "-f", "-", input=MANIFEST)
    assert "deployment.apps/web unchanged" in again and "configmap/settings unchanged" in again
    # A changed manifest is a three-way merge: the new env var arrives, the old one is dropped.
    changed = MANIFEST.replace('env: [{name: A, value: "1"}]', 'env: [{name: B, value: "2"}]')
    assert "deployment.apps/web configured" in kubectl.out("apply", "-f", "-", input=changed)
    deploy = kubectl.json("get", "deployment", "web")
    assert deploy["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "B", "value": "2"}]
    assert deploy["metadata"]["generation"] == 2
    assert deploy["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": "25%"}
    svc = kubectl.json("get", "service", "web")
    assert svc["spec"]["clusterIP"].startswith("10.43.")
    secret = kubectl.json("get", "secret", "creds")
    assert secret["data"] == {"password": "czNjcmV0"} and "stringData" not in secret


def _poll(read: Any, want: Any, timeout: float = 20.0) -> Any:
    """What `read()` returns once it equals `want` (or at the timeout): controllers act asynchronously."""
    deadline = time.monotonic() + timeout
    got = read()
    while got != want and time.monotonic() < deadline:
        time.sleep(0.1)
        got = read()
    return got


def _history(kubectl: Kubectl) -> list[list[str]]:
    out = kubectl.out("rollout", "history", "deployment/hist")
    return [line.split(None, 1) for line in out.splitlines()[2:] if line.strip()]


def test_get_in_every_output_format(kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", "-", input=MANIFEST)
    table = kubectl.out("get", "deployments")
    assert table.split("\n")[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    # The deployment controller makes the ReplicaSet (2 up to date); no node runs the pods here.
    row = _poll(lambda: kubectl.out("get", "deployments").split("\n")[1].split()[:4], ["web", "0/2", "2", "0"])
    assert row == ["web", "0/2", "2", "0"]
    wide = kubectl.out("get", "deployments", "-o", "wide")
    assert wide.split("\n")[0].split()[-3:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    assert "busybox:1.36" in wide and "app=web" in wide
    pods = kubectl.out("get", "pods", "-l", "app=nothing")
    assert "No resources found" in pods + kubectl.run("get", "pods", "-l", "app=nothing").stderr
    assert kubectl.out("get", "pods", "-l", "app=web").count("Pending") == 2
    assert yaml.safe_load(kubectl.out("get", "cm", "settings", "-o", "yaml"))["data"] == {"mode": "edge"}
    assert kubectl.json("get", "cm", "settings")["metadata"]["name"] == "settings"
    assert kubectl.out("get", "cm,deploy", "-o", "name").split() == [
        "configmap/kube-root-ca.crt", "configmap/settings", "deployment.apps/web"]
    assert kubectl.out("get", "deploy", "web", "-o", "jsonpath={.spec.replicas}") == "2"
    cols = kubectl.out("get", "deploy", "-o", "custom-columns=N:.metadata.name,R:.spec.replicas").split()
    assert cols == ["N", "R", "web", "2"]
    tmpl = kubectl.out("get", "cm", "settings", "-o", "go-template={{.data.mode}}")
    assert tmpl == "edge"
    svc = kubectl.out("get", "svc", "web")
    assert svc.split("\n")[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert "80/TCP" in svc
    assert kubectl.out("get", "secret", "creds").split("\n")[0].split() == ["NAME", "TYPE", "DATA", "AGE"]
    ns = kubectl.out("get", "namespace", kubectl.ns, namespaced=False)
    assert ns.split("\n")[1].split()[:2] == [kubectl.ns, "Active"]
    shown = kubectl.out("get", "cm", "settings", "--show-labels")
    assert "app=web,tier=front" in shown


def test_label_and_field_selectors(kubectl: Kubectl) -> None:
    for name, labels in (("a", "env=prod,tier=front"), ("b", "env=dev,tier=back"), ("c", "env=prod")):
        kubectl.run("create", "configmap", name, "--from-literal=k=v")
        kubectl.run("label", "configmap", name, *labels.split(","))

    def names(*args: str) -> list[str]:
        return sorted(i["metadata"]["name"] for i in kubectl.json("get", "cm", *args)["items"]
                      if i["metadata"]["name"] != "kube-root-ca.crt")

    assert names("-l", "env=prod") == ["a", "c"]
    assert names("-l", "env!=prod") == ["b"]
    assert names("-l", "env in (dev,test)") == ["b"]
    assert names("-l", "env notin (dev)") == ["a", "c"]
    assert names("-l", "tier") == ["a", "b"]
    assert names("-l", "!tier") == ["c"]
    assert names("-l", "env=prod,tier=front") == ["a"]
    assert names("--field-selector", "metadata.name=b") == ["b"]
    assert names("--field-selector", "metadata.name!=b", "-l", "env") == ["a", "c"]
    bad = kubectl.run("get", "cm", "--field-selector", "spec.nodeName=x", check=False)
    assert bad.returncode != 0 and "field label not supported" in bad.stderr
    bad = kubectl.run("get", "cm", "-l", "env in (", check=False)
    assert bad.returncode != 0


def test_get_watch_sees_an_update(kubectl: Kubectl) -> None:
    kubectl.run("create", "configmap", "watched", "--from-literal=k=v1")
    cmd = [str(kubectl.bin), "-n", kubectl.ns, "get", "configmap", "watched", "-w", "-o",
           "jsonpath={.data.k}{\"\\n\"}", "--request-timeout=30s"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=kubectl.env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "v1"  # the initial list
        kubectl.run("patch", "configmap", "watched", "--type=merge", "-p", '{"data":{"k":"v2"}}')
        assert proc.stdout.readline().strip() == "v2"  # the watch event
    finally:
        proc.kill()
        proc.wait()


def test_describe(kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", "-", input=MANIFEST)
    out = kubectl.out("describe", "deployment", "web")
    assert "Name:" in out and "web" in out
    assert "Replicas:               2 desired" in out
    assert "RollingUpdateStrategy:  25% max unavailable, 25% max surge" in out
    assert "busybox:1.36" in out
    svc = kubectl.out("describe", "service", "web")
    assert "Selector:" in svc and "app=web" in svc and "TargetPort:" in svc
    ns = kubectl.out("describe", "namespace", kubectl.ns, namespaced=False)
    assert "Status:" in ns and "Active" in ns


def test_label_annotate_and_patch_three_ways(kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", "-", input=MANIFEST)
    kubectl.run("label", "configmap", "settings", "stage=1")
    kubectl.run("label", "configmap", "settings", "stage=2", "--overwrite")
    kubectl.run("label", "configmap", "settings", "tier-")
    kubectl.run("annotate", "configmap", "settings", "owner=ops")
    meta = kubectl.json("get", "cm", "settings")["metadata"]
    assert meta["labels"] == {"app": "web", "stage": "2"}
    assert meta["annotations"]["owner"] == "ops"
    clash = kubectl.run("label", "configmap", "settings", "stage=3", check=False)
    assert clash.returncode != 0 and "already has a value" in clash.stderr

    kubectl.run("patch", "configmap", "settings", "--type=merge", "-p", '{"data":{"extra":"x","mode":null}}')
    assert kubectl.json("get", "cm", "settings")["data"] == {"extra": "x"}
    kubectl.run("patch", "configmap", "settings", "--type=json", "-p",
                '[{"op":"add","path":"/data/j","value":"y"},{"op":"remove","path":"/data/extra"}]')
    assert kubectl.json("get", "cm", "settings")["data"] == {"j": "y"}
    bad = kubectl.run("patch", "configmap", "settings", "--type=json", "-p",
                      '[{"op":"test","path":"/data/j","value":"nope"}]', check=False)
    assert bad.returncode != 0
    # Strategic merge: containers merge by name, env by name, `$patch: delete` removes one.
    kubectl.run("patch", "deployment", "web", "-p", json.dumps({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "busybox:1.37", "env": [{"name": "C", "value": "3"}]},
        {"name": "side", "image": "busybox:1.36"}]}}}}))
    containers = kubectl.json("get", "deployment", "web")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["web", "side"]
    assert containers[0]["image"] == "busybox:1.37"
    assert {e["name"] for e in containers[0]["env"]} == {"A", "C"}
    kubectl.run("patch", "deployment", "web", "-p",
                '{"spec":{"template":{"spec":{"containers":[{"name":"side","$patch":"delete"}]}}}}')
    containers = kubectl.json("get", "deployment", "web")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["web"]


def test_edit_with_a_scripted_editor(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl.run("create", "configmap", "edited", "--from-literal=color=blue")
    editor = tmp_path / "editor.py"
    editor.write_text(textwrap.dedent("""\
        import sys
        path = sys.argv[-1]
        text = open(path).read()
        assert "color: blue" in text, text
        open(path, "w").write(text.replace("color: blue", "color: green"))
    """))
    env = {"KUBE_EDITOR": f"python3 {editor}"}
    out = kubectl.out("edit", "configmap", "edited", env=env)
    assert "configmap/edited edited" in out
    assert kubectl.json("get", "cm", "edited")["data"] == {"color": "green"}
    # An edit that breaks validation is refused with the server's reason and changes nothing.
    bad = tmp_path / "bad_editor.py"
    bad.write_text(textwrap.dedent("""\
        import sys
        path = sys.argv[-1]
        text = open(path).read()
        open(path, "w").write(text.replace("name: edited", "name: Not_Valid"))
    """))
    refused = kubectl.run("edit", "configmap", "edited", env={"KUBE_EDITOR": f"python3 {bad}"}, check=False)
    assert refused.returncode != 0
    assert kubectl.json("get", "cm", "edited")["data"] == {"color": "green"}


def test_scale(kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", "-", input=MANIFEST)
    assert "deployment.apps/web scaled" in kubectl.out("scale", "deployment", "web", "--replicas=5")
    assert kubectl.json("get", "deployment", "web")["spec"]["replicas"] == 5
    stale = kubectl.run("scale", "deployment", "web", "--replicas=1", "--current-replicas=3", check=False)
    assert stale.returncode != 0
    assert kubectl.json("get", "deployment", "web")["spec"]["replicas"] == 5
    bad = kubectl.run("scale", "deployment", "web", "--replicas=-1", check=False)
    assert bad.returncode != 0


def test_replace_with_a_stale_resource_version(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl.run("create", "configmap", "rep", "--from-literal=k=1")
    saved = tmp_path / "rep.yaml"
    saved.write_text(kubectl.out("get", "configmap", "rep", "-o", "yaml"))
    kubectl.run("patch", "configmap", "rep", "--type=merge", "-p", '{"data":{"k":"2"}}')
    stale = kubectl.run("replace", "-f", str(saved), check=False)
    assert stale.returncode != 0
    assert "Conflict" in stale.stderr and "the object has been modified" in stale.stderr
    assert kubectl.json("get", "cm", "rep")["data"] == {"k": "2"}
    # Without a resourceVersion, replace is unconditional.
    doc = yaml.safe_load(saved.read_text())
    del doc["metadata"]["resourceVersion"]
    saved.write_text(yaml.safe_dump(doc))
    assert "configmap/rep replaced" in kubectl.out("replace", "-f", str(saved))
    assert kubectl.json("get", "cm", "rep")["data"] == {"k": "1"}


def test_delete_with_finalizers(kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", "-", input=textwrap.dedent("""\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: guarded, finalizers: [example.com/keep]}
        data: {k: v}
    """))
    out = kubectl.out("delete", "configmap", "guarded", "--wait=false")
    assert 'configmap "guarded" deleted' in out
    held = kubectl.json("get", "cm", "guarded")
    assert held["metadata"]["deletionTimestamp"]
    assert held["metadata"]["finalizers"] == ["example.com/keep"]
    # A finalizer cannot be added to an object being deleted.
    added = kubectl.run("patch", "cm", "guarded", "--type=merge", "-p",
                        '{"metadata":{"finalizers":["example.com/keep","example.com/more"]}}', check=False)
    assert added.returncode != 0 and "Forbidden" in added.stderr
    kubectl.run("patch", "cm", "guarded", "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    gone = kubectl.run("get", "cm", "guarded", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_chunked_list(kubectl: Kubectl) -> None:
    docs = "\n---\n".join(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: chunk-{i:02d}}}\ndata: {{i: '{i}'}}" for i in range(25)
    )
    kubectl.run("apply", "-f", "-", input=docs)
    run = kubectl.run("get", "configmaps", "--chunk-size=7", "-o", "name", "-v=6")
    listed = [line for line in run.stdout.split() if line.startswith("configmap/chunk-")]
    assert listed == [f"configmap/chunk-{i:02d}" for i in range(25)]
    requests = [line for line in run.stderr.splitlines() if "/configmaps?" in line and "limit=7" in line]
    assert len(requests) == 4, requests  # 7 + 7 + 7 + 4: the continue token was followed
    assert sum("continue=" in r for r in requests) == 3


def test_errors_are_clear(kubectl: Kubectl) -> None:
    missing = kubectl.run("get", "configmap", "nope", check=False)
    assert missing.returncode != 0 and 'configmaps "nope" not found' in missing.stderr
    exists = kubectl.run("create", "configmap", "dup", check=False)
    assert exists.returncode == 0
    again = kubectl.run("create", "configmap", "dup", check=False)
    assert again.returncode != 0 and 'configmaps "dup" already exists' in again.stderr
    invalid = kubectl.run("apply", "-f", "-", check=False, input=textwrap.dedent("""\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: broken}
        spec:
          selector: {matchLabels: {app: x}}
          template:
            metadata: {labels: {app: other}}
            spec: {containers: [{name: c, image: busybox}]}
    """))
    assert invalid.returncode != 0
    assert "is invalid" in invalid.stderr and "spec.template.metadata.labels" in invalid.stderr
    unknown = kubectl.run("apply", "-f", "-", check=False, input=textwrap.dedent("""\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: typo}
        datta: {k: v}
    """))
    assert unknown.returncode != 0 and 'unknown field "datta"' in unknown.stderr


def test_api_resources_and_versions(kubectl: Kubectl) -> None:
    out = kubectl.out("api-resources", namespaced=False)
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "deploy" in rows["deployments"] and "apps/v1" in rows["deployments"]
    assert "po" in rows["pods"] and "svc" in rows["services"]
    wide = kubectl.out("api-resources", "-o", "wide", namespaced=False)
    assert "create,delete,deletecollection,get,list,patch,update,watch" in wide.replace(" ", "").replace("[", "").replace("]", "")
    assert "apps/v1" in kubectl.out("api-versions", namespaced=False).split()
    version = kubectl.out("version", "-o", "json", namespaced=False)
    assert json.loads(version)["serverVersion"]["gitVersion"].startswith("v1.")


def test_namespace_delete_keeps_it_terminating(kubectl: Kubectl) -> None:
    kubectl.run("create", "configmap", "inside")
    kubectl.run("delete", "namespace", kubectl.ns, "--wait=false", namespaced=False)
    deadline = time.monotonic() + 5
    phase = ""
    while time.monotonic() < deadline:
        phase = kubectl.json("get", "namespace", kubectl.ns)["status"]["phase"]
        if phase == "Terminating":
            break
        time.sleep(0.1)
    assert phase == "Terminating"
    refused = kubectl.run("create", "configmap", "late", check=False)
    assert refused.returncode != 0 and "is being terminated" in refused.stderr


def test_system_namespaces_may_not_be_deleted(kubectl: Kubectl) -> None:
    """As upstream's NamespaceLifecycle (kube-node-lease too: the node's leases live there):
    refused with 403 whatever the options, and creates into them keep working."""
    for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
        for extra in ((), ("--dry-run=server",), ("--grace-period=0", "--force")):
            refused = kubectl.run("delete", "namespace", ns, "--wait=false", *extra, namespaced=False, check=False)
            assert refused.returncode != 0, (ns, extra, refused.stdout)
            assert f'Error from server (Forbidden): namespaces "{ns}" is forbidden: this namespace may not be deleted' \
                in refused.stderr, refused.stderr
        got = kubectl.json("get", "namespace", ns)
        assert got["status"]["phase"] == "Active" and "deletionTimestamp" not in got["metadata"]
        name = f"after-{kubectl.version.replace('.', '')}"
        kubectl.run("create", "configmap", name, "-n", ns, namespaced=False)
        kubectl.run("delete", "configmap", name, "-n", ns, namespaced=False)


def test_create_generators(kubectl: Kubectl) -> None:
    """`kubectl create <kind>` builds typed objects; kubectl 1.36 sends them as protobuf."""
    kubectl.run("create", "configmap", "gen-cm", "--from-literal=a=1", "--from-literal=empty=")
    assert kubectl.json("get", "cm", "gen-cm")["data"] == {"a": "1", "empty": ""}
    kubectl.run("create", "secret", "generic", "gen-secret", "--from-literal=p=x")
    assert kubectl.json("get", "secret", "gen-secret")["data"] == {"p": "eA=="}
    kubectl.run("create", "deployment", "gen-deploy", "--image=busybox:1.36", "--replicas=0", "--port=80")
    spec = kubectl.json("get", "deployment", "gen-deploy")["spec"]
    assert spec["replicas"] == 0  # an explicit zero survives the wire
    assert spec["template"]["spec"]["containers"][0]["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    kubectl.run("create", "job", "gen-job", "--image=busybox", "--", "echo", "hi")
    job = kubectl.json("get", "job", "gen-job")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["echo", "hi"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    kubectl.run("create", "cronjob", "gen-cron", "--image=busybox", "--schedule=*/5 * * * *")
    assert kubectl.json("get", "cronjob", "gen-cron")["spec"]["schedule"] == "*/5 * * * *"
    kubectl.run("create", "service", "nodeport", "gen-np", "--tcp=80:8080")
    port = kubectl.json("get", "service", "gen-np")["spec"]["ports"][0]
    assert port["targetPort"] == 8080 and 30000 <= port["nodePort"] <= 32767
    kubectl.run("create", "serviceaccount", "gen-sa")
    kubectl.run("create", "role", "gen-role", "--verb=get", "--resource=pods")
    kubectl.run("create", "rolebinding", "gen-rb", "--role=gen-role", "--user=bob")
    binding = kubectl.json("get", "rolebinding", "gen-rb")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gen-role"}
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}]
    kubectl.run("create", "quota", "gen-quota", "--hard=pods=3,requests.cpu=500m")
    assert kubectl.json("get", "resourcequota", "gen-quota")["spec"]["hard"] == {"pods": "3", "requests.cpu": "500m"}
    bad = kubectl.run("create", "deployment", "Bad_Name", "--image=busybox", check=False)
    assert bad.returncode != 0 and "metadata.name" in bad.stderr


@pytest.mark.parametrize("version", ["1.28", "1.29", "1.30", "1.31", "1.32", "1.33"])
def test_every_kubectl_in_between_applies_and_gets(version: str, server: Server) -> None:
    """The releases between the oldest and newest: the everyday path works without flags."""
    k = Kubectl(version, server, f"between-{version.replace('.', '')}")
    k.run("create", "namespace", k.ns, namespaced=False)
    out = k.out("apply", "-f", "-", input=MANIFEST)
    assert "deployment.apps/web created" in out
    assert "deployment.apps/web unchanged" in k.out("apply", "-f", "-", input=MANIFEST)
    assert k.out("get", "deploy", "web", "-o", "jsonpath={.spec.replicas}") == "2"
    assert k.out("get", "cm", "settings").split("\n")[0].split() == ["NAME", "DATA", "AGE"]
    k.run("create", "configmap", "made-by-create", "--from-literal=a=b")
    assert k.json("get", "cm", "made-by-create")["data"] == {"a": "b"}


KINDS = """\
apiVersion: v1
kind: Pod
metadata: {name: solo}
spec:
  containers: [{name: c, image: busybox:1.36}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox:1.36, command: ["true"]}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "*/10 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: c, image: busybox:1.36}]
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: holder}
spec: {holderIdentity: me, leaseDurationSeconds: 15}
---
apiVersion: v1
kind: Event
metadata: {name: solo.1}
involvedObject: {kind: Pod, name: solo}
reason: Testing
message: hello from the test
type: Normal
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
"""


def test_table_columns_for_more_kinds(kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", "-", input=KINDS)

    def header(*args: str) -> list[str]:
        return kubectl.out("get", *args).split("\n")[0].split()

    assert header("pods") == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    row = kubectl.out("get", "pods", "solo").split("\n")[1].split()  # the Job "once" runs a pod too
    assert row[:4] == ["solo", "0/1", "Pending", "0"]
    assert header("pods", "-o", "wide")[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert header("jobs")[0] == "NAME" and "COMPLETIONS" in header("jobs")
    assert header("cronjobs")[:2] == ["NAME", "SCHEDULE"]
    assert "*/10" in kubectl.out("get", "cronjobs")
    assert header("leases") == ["NAME", "HOLDER", "AGE"]
    assert "me" in kubectl.out("get", "leases")
    assert header("events")[:4] == ["LAST", "SEEN", "TYPE", "REASON"]
    assert "hello from the test" in kubectl.out("get", "events")
    assert header("pvc")[:3] == ["NAME", "STATUS", "VOLUME"]
    assert kubectl.out("get", "pvc").split("\n")[1].split()[:2] == ["data", "Pending"]


SSA_DEPLOY = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: ssa}
spec:
  replicas: 2
  minReadySeconds: 3
  selector: {matchLabels: {app: ssa}}
  template:
    metadata: {labels: {app: ssa}}
    spec:
      containers:
      - name: app
        image: busybox:1.36
        ports: [{containerPort: 8080}]
"""


def test_server_side_apply(kubectl: Kubectl) -> None:
    assert "deployment.apps/ssa serverside-applied" in kubectl.out("apply", "--server-side", "-f", "-", input=SSA_DEPLOY)
    obj = kubectl.json("get", "deployment", "ssa", "--show-managed-fields")
    # kubectl owns what it applied; the controller manager's own writes (the revision annotation,
    # status) show up as its Update entries, as on a real cluster.
    entries = [e for e in obj["metadata"]["managedFields"] if e["manager"] != "edgekube-controller-manager"]
    assert [(e["manager"], e["operation"]) for e in entries] == [("kubectl", "Apply")]
    assert "f:replicas" in entries[0]["fieldsV1"]["f:spec"]
    # Re-applying the same config changes nothing (no new generation, kubectl's entry untouched;
    # the resourceVersion may move with the controller's status writes).
    kubectl.run("apply", "--server-side", "-f", "-", input=SSA_DEPLOY)
    again = kubectl.json("get", "deployment", "ssa", "--show-managed-fields")
    assert again["metadata"]["generation"] == obj["metadata"]["generation"]
    assert [e for e in again["metadata"]["managedFields"] if e["manager"] == "kubectl"] == entries
    # Another manager changing a field kubectl owns: 409 naming the field and the manager.
    other = SSA_DEPLOY.replace("replicas: 2", "replicas: 4")
    clash = kubectl.run("apply", "--server-side", "--field-manager=ops", "-f", "-", input=other, check=False)
    assert clash.returncode != 0
    assert 'conflict with "kubectl" using apps/v1: .spec.replicas' in clash.stderr
    assert kubectl.json("get", "deployment", "ssa")["spec"]["replicas"] == 2
    kubectl.run("apply", "--server-side", "--field-manager=ops", "--force-conflicts", "-f", "-", input=other)
    assert kubectl.json("get", "deployment", "ssa")["spec"]["replicas"] == 4
    # kubectl no longer owns replicas; dropping minReadySeconds (owned by both) keeps it while
    # ops still applies it, and removes it once ops stops too.
    dropped = SSA_DEPLOY.replace("  minReadySeconds: 3\n", "").replace("replicas: 2", "replicas: 4")
    kubectl.run("apply", "--server-side", "-f", "-", input=dropped)
    assert kubectl.json("get", "deployment", "ssa")["spec"]["minReadySeconds"] == 3
    kubectl.run("apply", "--server-side", "--field-manager=ops", "-f", "-", input=dropped)
    assert "minReadySeconds" not in kubectl.json("get", "deployment", "ssa")["spec"]
    # A list element added by one manager is merged with the other's by key.
    side = dropped.replace("        ports: [{containerPort: 8080}]\n",
                           "        ports: [{containerPort: 8080}]\n      - name: side\n        image: busybox:1.36\n")
    kubectl.run("apply", "--server-side", "--field-manager=sidecar", "-f", "-", input=side)
    names = [c["name"] for c in kubectl.json("get", "deployment", "ssa")["spec"]["template"]["spec"]["containers"]]
    assert names == ["app", "side"]


def test_server_side_apply_dry_run_and_diff(kubectl: Kubectl) -> None:
    out = kubectl.out("apply", "--server-side", "--dry-run=server", "-f", "-", input=SSA_DEPLOY)
    assert "serverside-applied (server dry run)" in out
    assert kubectl.run("get", "deployment", "ssa", check=False).returncode != 0
    kubectl.run("apply", "--server-side", "-f", "-", input=SSA_DEPLOY)
    diff = kubectl.run("diff", "--server-side", "-f", "-", input=SSA_DEPLOY.replace("busybox:1.36", "busybox:1.37"),
                       check=False)
    assert diff.returncode == 1, diff.stderr
    assert "-      - image: busybox:1.36" in diff.stdout and "+      - image: busybox:1.37" in diff.stdout


def test_explain(kubectl: Kubectl) -> None:
    out = kubectl.out("explain", "deployment.spec.strategy", namespaced=False)
    assert "rollingUpdate" in out and "Type of deployment" in out
    recursive = kubectl.out("explain", "pod.spec.containers", "--recursive", namespaced=False)
    assert "livenessProbe" in recursive and "containerPort" in recursive
    cm = kubectl.out("explain", "configmap.data", namespaced=False)
    assert "Data contains the configuration data" in cm


CRD = (REPO / "tests" / "data" / "crontab-crd.yaml").read_text()


def _crd_for(kubectl: Kubectl) -> tuple[str, str]:
    """The CronTab CRD in a group of this test's own (CRDs are cluster-wide)."""
    group = f"{kubectl.ns}.example.com"
    return CRD.replace("stable.example.com", group), group


def test_custom_resource_definitions(kubectl: Kubectl) -> None:
    crd, group = _crd_for(kubectl)
    kubectl.run("apply", "-f", "-", input=crd)
    status = kubectl.json("get", "crd", f"crontabs.{group}")["status"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"NamesAccepted": "True", "Established": "True"}
    assert status["acceptedNames"]["kind"] == "CronTab" and status["storedVersions"] == ["v1"]
    resources = kubectl.out("api-resources", "--api-group", group, namespaced=False)
    assert "crontabs" in resources and "ct" in resources
    cr = f"apiVersion: {group}/v1\nkind: CronTab\nmetadata: {{name: nightly}}\nspec: {{cronSpec: '0 3 * * *', image: backup}}\n"
    assert "created" in kubectl.out("apply", "-f", "-", input=cr)
    table = kubectl.out("get", f"crontabs.{group}").splitlines()
    assert table[0].split() == ["NAME", "SPEC", "REPLICAS", "AGE"]
    assert table[1].split()[:4] == ["nightly", "0", "3", "*"]  # cronSpec has spaces
    obj = kubectl.json("get", f"crontabs.{group}", "nightly")
    assert obj["spec"]["replicas"] == 1  # default from the schema
    assert obj["metadata"]["generation"] == 1
    # The other served version reads the same object.
    assert kubectl.json("get", f"crontabs.v1beta1.{group}", "nightly")["apiVersion"] == f"{group}/v1beta1"
    # Schema validation names the fields; unknown fields are refused (kubectl asks Strict).
    bad = cr.replace("nightly", "bad").replace("image: backup", "image: backup, replicas: 11")
    refused = kubectl.run("apply", "-f", "-", input=bad, check=False)
    assert refused.returncode != 0 and "spec.replicas" in refused.stderr and "less than or equal to 10" in refused.stderr
    unknown = kubectl.run("apply", "-f", "-", input=cr.replace("image: backup", "image: backup, colour: red"), check=False)
    assert unknown.returncode != 0 and 'unknown field "spec.colour"' in unknown.stderr
    # Scale and status subresources.
    kubectl.run("scale", f"crontabs.{group}", "nightly", "--replicas=4")
    assert kubectl.json("get", f"crontabs.{group}", "nightly")["spec"]["replicas"] == 4
    kubectl.run("patch", f"crontabs.{group}", "nightly", "--subresource=status", "--type=merge", "-p",
                '{"status":{"replicas":4,"selector":"app=nightly"}}')
    after = kubectl.json("get", f"crontabs.{group}", "nightly")
    assert after["status"] == {"replicas": 4, "selector": "app=nightly"} and after["metadata"]["generation"] == 2
    scale = json.loads(kubectl.out("get", "--raw", f"/apis/{group}/v1/namespaces/{kubectl.ns}/crontabs/nightly/scale"))
    assert scale["spec"] == {"replicas": 4} and scale["status"] == {"replicas": 4, "selector": "app=nightly"}
    # explain reads the CRD's schema.
    assert "cronSpec" in kubectl.out("explain", f"crontabs.{group}.spec", namespaced=False)
    # Deleting the CRD deletes its objects.
    kubectl.run("delete", "crd", f"crontabs.{group}", namespaced=False)
    gone = kubectl.run("get", f"crontabs.{group}", check=False)
    assert gone.returncode != 0
    kubectl.run("apply", "-f", "-", input=crd)
    again = kubectl.run("get", f"crontabs.{group}", "-o", "name")
    assert again.stdout.strip() == ""


def test_everyday_verbs(kubectl: Kubectl, tmp_path: Path) -> None:
    (tmp_path / "app.conf").write_text("port=8080\n")
    kubectl.run("create", "configmap", "from-file", f"--from-file={tmp_path / 'app.conf'}")
    assert kubectl.json("get", "cm", "from-file")["data"] == {"app.conf": "port=8080\n"}
    kubectl.run("create", "secret", "docker-registry", "pull", "--docker-server=registry.local",
                "--docker-username=u", "--docker-password=p")
    assert kubectl.json("get", "secret", "pull")["type"] == "kubernetes.io/dockerconfigjson"
    cert, key = _self_signed(tmp_path)
    kubectl.run("create", "secret", "tls", "web-tls", f"--cert={cert}", f"--key={key}")
    tls = kubectl.json("get", "secret", "web-tls")
    assert tls["type"] == "kubernetes.io/tls" and set(tls["data"]) == {"tls.crt", "tls.key"}
    for i, reason in enumerate(("Second", "First")):
        kubectl.run("create", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": f"ev{i}"}, "reason": reason, "type": "Normal",
            "message": reason, "involvedObject": {"kind": "ConfigMap", "name": "from-file"},
            "lastTimestamp": f"2026-01-01T00:00:0{1 - i}Z"}))
    rows = kubectl.out("get", "events", "--sort-by=.lastTimestamp").splitlines()[1:]
    assert [r.split()[2] for r in rows] == ["First", "Second"]
    kubectl.run("create", "service", "clusterip", "svc", "--tcp=80:8080")
    kubectl.run("create", "cronjob", "tick", "--image=busybox:1.36", "--schedule=*/5 * * * *")
    kubectl.run("create", "job", "tick-now", "--from=cronjob/tick")
    job = kubectl.json("get", "job", "tick-now")
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    kubectl.run("create", "deployment", "app", "--image=busybox:1.36")
    kubectl.run("set", "image", "deployment/app", "busybox=busybox:1.37")
    kubectl.run("set", "env", "deployment/app", "MODE=edge")
    kubectl.run("set", "resources", "deployment/app", "--limits=cpu=200m,memory=64Mi")
    c = kubectl.json("get", "deployment", "app")["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "busybox:1.37" and c["env"] == [{"name": "MODE", "value": "edge"}]
    assert c["resources"]["limits"] == {"cpu": "200m", "memory": "64Mi"}
    # autoscale: 1.36 creates autoscaling/v2, 1.27 autoscaling/v1; both land as one HPA.
    kubectl.run("autoscale", "deployment", "app", "--min=1", "--max=3", "--cpu-percent=50")
    hpa = kubectl.json("get", "hpa", "app")
    assert hpa["spec"]["maxReplicas"] == 3 and hpa["spec"]["scaleTargetRef"]["name"] == "app"
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 50
    assert kubectl.out("get", "hpa").split("\n")[0].split()[:3] == ["NAME", "REFERENCE", "TARGETS"]
    assert kubectl.out("auth", "can-i", "create", "pods").strip() == "yes"
    assert kubectl.out("auth", "can-i", "delete", "nodes", namespaced=False).strip() == "yes"
    # Listing with labels as columns, sorting, label-selected and --all deletes.
    for name, tier in (("b-one", "front"), ("a-two", "back")):
        kubectl.run("create", "configmap", name)
        kubectl.run("label", "configmap", name, f"tier={tier}")
    listed = kubectl.out("get", "cm", "-l", "tier", "-L", "tier", "--sort-by=.metadata.name").splitlines()
    assert listed[0].split() == ["NAME", "DATA", "AGE", "TIER"]
    assert [row.split()[0] for row in listed[1:]] == ["a-two", "b-one"]
    assert [row.split()[-1] for row in listed[1:]] == ["back", "front"]
    kubectl.run("delete", "cm", "-l", "tier=back")
    assert kubectl.run("get", "cm", "a-two", check=False).returncode != 0
    kubectl.run("wait", "--for=jsonpath={.metadata.labels.tier}=front", "cm/b-one", "--timeout=10s")
    kubectl.run("delete", "cm", "--all")
    left = [i["metadata"]["name"] for i in kubectl.json("get", "cm")["items"]]
    assert "b-one" not in left and set(left) <= {"kube-root-ca.crt"}  # the controller makes it again
    kubectl.run("wait", "--for=delete", "cm/b-one", "--timeout=10s")


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_get_watch_only(kubectl: Kubectl) -> None:
    kubectl.run("create", "configmap", "quiet", "--from-literal=k=v1")
    cmd = [str(kubectl.bin), "-n", kubectl.ns, "get", "configmaps", "--watch-only", "-o", "name", "--request-timeout=30s"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=kubectl.env)
    try:
        assert proc.stdout is not None
        time.sleep(1)
        kubectl.run("create", "configmap", "loud")
        assert proc.stdout.readline().strip() == "configmap/loud"  # "quiet" is never listed
    finally:
        proc.kill()
        proc.wait()


def test_apply_kustomize(kubectl: Kubectl, tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "namePrefix: k-\ncommonLabels: {stack: edge}\nresources: [cm.yaml]\n"
        "configMapGenerator:\n- name: gen\n  literals: [a=1]\n")
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: base}\ndata: {x: y}\n")
    out = kubectl.out("apply", "-k", str(tmp_path))
    assert "configmap/k-base created" in out
    generated = [i for i in kubectl.json("get", "cm", "-l", "stack=edge")["items"] if i["metadata"]["name"].startswith("k-gen-")]
    assert len(generated) == 1 and generated[0]["data"] == {"a": "1"}


def test_auth_whoami_with_kubectl_1_36(server: Server) -> None:
    # `auth whoami` reached authentication.k8s.io/v1 in kubectl 1.28 (1.27 asks v1alpha1).
    k = Kubectl("1.36", server, "default")
    out = k.out("auth", "whoami", "-o", "json", namespaced=False)
    user = json.loads(out)["status"]["userInfo"]
    assert user["username"] == "kubernetes-admin" and "system:masters" in user["groups"]


def test_rollout_history_reads_replicasets(kubectl: Kubectl) -> None:
    kubectl.run("create", "deployment", "hist", "--image=busybox:1.35")
    kubectl.run("annotate", "deployment", "hist", "kubernetes.io/change-cause=image busybox:1.35")
    _poll(lambda: _history(kubectl), [["1", "image busybox:1.35"]])
    kubectl.run("set", "image", "deployment/hist", "busybox=busybox:1.36")
    kubectl.run("annotate", "deployment", "hist", "--overwrite", "kubernetes.io/change-cause=image busybox:1.36")
    rows = _poll(lambda: _history(kubectl), [["1", "image busybox:1.35"], ["2", "image busybox:1.36"]])
    assert rows == [["1", "image busybox:1.35"], ["2", "image busybox:1.36"]]
    detail = kubectl.out("rollout", "history", "deployment/hist", "--revision=1")
    assert "busybox:1.35" in detail
