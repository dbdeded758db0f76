"""A pod talks to the API with its projected service account token (issue 15), end to end.

One edgekube with its kubelet, pod network, service proxy and DNS inside a network namespace of
the test's own (the network rule), linked to a second namespace on 198.18.0.0/24 so the node has
an address as on a real board (no uplink anywhere: no packet leaves the machine). The API
listens on 0.0.0.0; the `kubernetes` Service's endpoint is the node's InternalIP.

The in-cluster client is the real Python `kubernetes` package running as a real pod: a busybox
image from the local tarball (runc, its own network namespace, the projected
`kube-api-access-*` volume and the KUBERNETES_SERVICE_* variables the kubelet gives every pod),
with the host's Python and the test venv mounted read-only through hostPath volumes rather than
built into an image (a Python image would be tens of MiB for the same interpreter). It calls
`config.load_incluster_config()` unchanged, so it reaches 10.43.0.1:443 through the service
proxy, checks the API's certificate with the projected `ca.crt` and authenticates with the
projected `token`, and lists the pods of its namespace.

Then: the projected files are what upstream writes (a JWT bound to the pod, the CA, the
namespace) behind the atomic `..data` symlink; once the pod is deleted its token is refused and
TokenReview says it was invalidated.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_kubectl import Kubectl
from tests.e2e.test_pod_network import IMAGE, SLEEPER, _exec, _start
from tests.e2e.test_pod_network import tarball as tarball  # the image fixture, shared
from tests.support.kubelet import KubeletServer, running
from tests.support.netns import NetNS, link, namespaces
from tests.support.waiting import until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the kubelet and the network need root"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("runc", "umoci", "skopeo", "ip", "nsenter", "nft")),
                       reason="needs runc, umoci, skopeo, ip, nsenter and nft (make installs them)"),
]

NODE_IP, OUTSIDE_IP = "198.18.0.1", "198.18.0.2"
NS = "incluster"
MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
PYTHON_HOME = Path(sys.base_prefix)  # the interpreter the venv was made from
VENV = Path(sys.prefix)

CLIENT = """
import json
from kubernetes import client, config
config.load_incluster_config()
pods = client.CoreV1Api().list_namespaced_pod(open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read())
print('LISTED ' + json.dumps(sorted(p.metadata.name for p in pods.items)), flush=True)
"""


def _python_pod(name: str) -> dict[str, Any]:
    """A busybox pod running the venv's Python with the host's interpreter and libraries mounted."""
    host = [("python-home", str(PYTHON_HOME)), ("venv", str(VENV)), ("usr-lib", "/usr/lib"),
            ("lib64", "/usr/lib64"), ("lib", "/usr/lib")]
    mounts = [{"name": "python-home", "mountPath": str(PYTHON_HOME), "readOnly": True},
              {"name": "venv", "mountPath": str(VENV), "readOnly": True},
              {"name": "usr-lib", "mountPath": "/usr/lib", "readOnly": True},
              {"name": "lib64", "mountPath": "/lib64", "readOnly": True},
              {"name": "lib", "mountPath": "/lib", "readOnly": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
        "serviceAccountName": "reader", "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "volumes": [{"name": n, "hostPath": {"path": p, "type": "Directory"}} for n, p in host],
        "containers": [{"name": "client", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                        "command": [str(VENV / "bin" / "python"), "-c", CLIENT],
                        "env": [{"name": "HOME", "value": "/tmp"}], "volumeMounts": mounts}]}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tarball: Path) -> Iterator[tuple[KubeletServer, NetNS]]:
    with namespaces("sa-node", "sa-outside") as (node, outside):
        link(node, outside, a_addr=f"{NODE_IP}/24", b_addr=f"{OUTSIDE_IP}/24")
        ks = _start(tmp_path_factory.mktemp("incluster"), tarball, node)
        ks.server.extra += ["--bind-address", "0.0.0.0"]  # pods reach the API on the node's address
        with running(ks) as started:
            yield started, node


@pytest.fixture(scope="module")
def k(cluster: tuple[KubeletServer, NetNS]) -> Kubectl:
    ks, _ = cluster
    kubectl = Kubectl("1.36", ks.server, NS)
    kubectl.run("create", "namespace", NS, namespaced=False)
    until(lambda: kubectl.run("get", "serviceaccount", "default", check=False).returncode == 0, timeout=30,
          what="the default ServiceAccount")
    kubectl.run("create", "serviceaccount", "reader")
    return kubectl


def _call(ks: KubeletServer, path: str, *, token: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """A request with a bearer token, from inside the node's namespace."""
    def go() -> tuple[int, Any]:
        ctx = ssl.create_default_context(cafile=str(ks.server.ca))
        req = urllib.request.Request(f"{ks.server.url}{path}", method="POST" if body is not None else "GET",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                                     data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=20) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    assert ks.server.netns is not None
    return ks.server.netns.call(go)


def test_the_kubernetes_service_points_at_the_node_address(cluster: tuple[KubeletServer, NetNS], k: Kubectl) -> None:
    node = json.loads(k.out("get", "nodes", "-o", "json", namespaced=False))["items"][0]
    internal = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    assert internal == NODE_IP
    eps = json.loads(k.out("-n", "default", "get", "endpoints", "kubernetes", "-o", "json", namespaced=False))
    assert [a["ip"] for a in eps["subsets"][0]["addresses"]] == [NODE_IP]
    svc = json.loads(k.out("-n", "default", "get", "svc", "kubernetes", "-o", "json", namespaced=False))
    assert svc["spec"]["clusterIP"] == "10.43.0.1"


def test_an_in_cluster_python_client_lists_pods_with_its_projected_token(
        cluster: tuple[KubeletServer, NetNS], k: Kubectl) -> None:
    k.run("apply", "-f", "-", input=json.dumps(_python_pod("lister")))

    def finished() -> dict[str, Any] | None:
        pod = k.json("get", "pod", "lister")
        return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None

    pod = until(finished, timeout=120, what="the in-cluster client pod finishing")
    logs = k.out("logs", "lister")
    assert pod["status"]["phase"] == "Succeeded", logs
    listed = json.loads(next(line for line in logs.splitlines() if line.startswith("LISTED ")).removeprefix("LISTED "))
    assert "lister" in listed


def test_projected_files_and_a_deleted_pods_token(cluster: tuple[KubeletServer, NetNS], k: Kubectl) -> None:
    ks, _ = cluster
    k.run("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holder"},
        "spec": {"serviceAccountName": "reader", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                                 "command": SLEEPER}]}}))

    def running_pod() -> dict[str, Any] | None:
        pod = k.json("get", "pod", "holder")
        return pod if pod["status"].get("phase") == "Running" else None

    pod = until(running_pod, timeout=90, what="pod holder Running")
    uid = pod["metadata"]["uid"]
    token = _exec(ks, pod, "cat", f"{MOUNT}/token").stdout
    assert _exec(ks, pod, "cat", f"{MOUNT}/namespace").stdout == NS
    assert _exec(ks, pod, "cat", f"{MOUNT}/ca.crt").stdout == ks.server.ca.read_text()
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["kubernetes.io"]["pod"] == {"name": "holder", "uid": uid}
    assert claims["kubernetes.io"]["serviceaccount"]["name"] == "reader"
    assert claims["kubernetes.io"]["node"]["name"] == pod["spec"]["nodeName"]
    assert claims["kubernetes.io"]["warnafter"] - claims["iat"] == 3607  # extended, as upstream's kubelet tokens
    # Written as upstream's AtomicWriter: top-level names are links through the `..data` link.
    [vol] = [v["name"] for v in pod["spec"]["volumes"] if v["name"].startswith("kube-api-access-")]
    vdir = ks.kubelet_dir / "pods" / uid / "volumes" / "kubernetes.io~projected" / vol
    assert os.readlink(vdir / "token") == "..data/token"
    assert os.readlink(vdir / "..data").startswith("..")
    assert _exec(ks, pod, "sh", "-c", f"echo x > {MOUNT}/token").returncode != 0  # mounted read-only
    code, who = _call(ks, "/apis/authentication.k8s.io/v1/selfsubjectreviews", token=token,
                      body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    assert code == 201, who
    info = who["status"]["userInfo"]
    assert info["username"] == f"system:serviceaccount:{NS}:reader"
    assert info["extra"]["authentication.kubernetes.io/pod-uid"] == [uid]
    k.run("delete", "pod", "holder", "--wait=true", "--timeout=60s")
    code, _ = _call(ks, f"/api/v1/namespaces/{NS}/pods", token=token)
    assert code == 401
    code, review = _call(ks, "/apis/authentication.k8s.io/v1/tokenreviews", token=_admin_token(k),
                         body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                               "spec": {"token": token}})
    assert code == 201, review
    assert review["status"]["error"] == "[invalid bearer token, service account token has been invalidated]"


def _admin_token(k: Kubectl) -> str:
    """A token for a reviewer (any authenticated user may review until RBAC lands)."""
    k.run("create", "serviceaccount", "reviewer", check=False)
    return k.out("create", "token", "reviewer").strip()
