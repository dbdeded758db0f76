"""Services end to end, as a user meets them (issue 14): one edgekube with its kubelet, pod
network, service proxy and cluster DNS, inside a network namespace of the test's own; an
"outside" host in a second namespace joined by a veth pair on 198.18.0.0/24 (no uplink
anywhere: no packet leaves the machine). Real runc pods from a busybox tarball, real kubectl
1.36 inside the namespace; clients are busybox `nc` inside pods (through `runc exec`, as
kubectl exec is not served yet) and Python sockets in the outside namespace.

A Deployment of two busybox httpd pods behind a NodePort Service: a client pod reaches it by
ClusterIP, by `name` and by `name.ns.svc.cluster.local`, and both pods answer; the NodePort
answers the outside host; a pod that fails its readiness probe leaves the endpoints and traffic
avoids it; NetworkPolicy default deny, then an allow rule; kill -9 of edgekube keeps an
established connection through a Service and Service traffic flowing, and after the restart the
pods keep their addresses.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_kubectl import Kubectl
from tests.e2e.test_pod_network import HTTPD, IMAGE, SLEEPER, _exec, _start
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
WEB_NODE_PORT, ECHO_NODE_PORT = 30080, 30090
NS = "shop"
# httpd that is Ready while /tmp/ready exists (an exec readiness probe), and says who it is.
WEB = ["sh", "-c", "touch /tmp/ready && " + HTTPD[2]]
ECHO = ["sh", "-c", "while true; do busybox nc -l -p 9000 -e /bin/cat; done"]

MANIFESTS = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: {IMAGE}
        imagePullPolicy: IfNotPresent
        command: {json.dumps(WEB)}
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{exec: {{command: [cat, /tmp/ready]}}, periodSeconds: 1, failureThreshold: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NS}}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http, nodePort: {WEB_NODE_PORT}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: echo, namespace: {NS}, labels: {{app: echo}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: echo, image: {IMAGE}, imagePullPolicy: IfNotPresent, command: {json.dumps(ECHO)}}}
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: {NS}}}
spec:
  type: NodePort
  selector: {{app: echo}}
  ports: [{{port: 9000, nodePort: {ECHO_NODE_PORT}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {NS}, labels: {{role: client}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: client, image: {IMAGE}, imagePullPolicy: IfNotPresent, command: {json.dumps(SLEEPER)}}}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tarball: Path) -> Iterator[tuple[KubeletServer, NetNS, NetNS]]:
    with namespaces("svc-node", "svc-outside") as (node, outside):
        link(node, outside, a_addr=f"{NODE_IP}/24", b_addr=f"{OUTSIDE_IP}/24")
        with running(_start(tmp_path_factory.mktemp("services"), tarball, node)) as ks:
            yield ks, node, outside


@pytest.fixture(scope="module")
def k(cluster: tuple[KubeletServer, NetNS, NetNS]) -> Kubectl:
    ks, _, _ = cluster
    kubectl = Kubectl("1.36", ks.server, NS)
    kubectl.run("create", "namespace", NS, namespaced=False)
    kubectl.run("apply", "-f", "-", input=MANIFESTS)
    assert "successfully rolled out" in kubectl.out("rollout", "status", "deployment/web", "--timeout=120s")
    for name in ("echo", "client"):
        until(lambda name=name: _ready(kubectl.json("get", "pod", name)), timeout=90, what=f"pod {name} ready")
    return kubectl


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def _pods(k: Kubectl, selector: str) -> list[dict[str, Any]]:
    return list(k.json("get", "pods", "-l", selector)["items"])


def _get(ks: KubeletServer, k: Kubectl, host: str, port: int = 80) -> str:
    """What `host:port` answers the client pod (an HTTP GET with busybox nc)."""
    client = k.json("get", "pod", "client")
    done = _exec(ks, client, "sh", "-c", f"echo -e 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {host} {port}")
    return done.stdout + done.stderr


def _answers(ks: KubeletServer, k: Kubectl, host: str, tries: int = 12) -> set[str]:
    """The pods (by their hostname in the page) that answered `tries` GETs of `host`."""
    seen = set()
    for _ in range(tries):
        for line in _get(ks, k, host).splitlines():
            if line.startswith("hello-from-"):
                seen.add(line.removeprefix("hello-from-"))
    return seen


def _outside_get(outside: NetNS, port: int) -> str:
    def get() -> str:
        with socket.create_connection((NODE_IP, port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            return data.decode(errors="replace")

    try:
        return outside.call(get)
    except OSError as exc:
        return f"error: {exc}"


def test_a_service_by_cluster_ip_name_and_fqdn_spreads_over_its_pods(cluster: Any, k: Kubectl) -> None:
    ks, _, _ = cluster
    names = {p["metadata"]["name"] for p in _pods(k, "app=web")}
    assert len(names) == 2
    cluster_ip = k.json("get", "svc", "web")["spec"]["clusterIP"]
    for host in (cluster_ip, "web", f"web.{NS}.svc.cluster.local"):
        assert until(lambda host=host: _answers(ks, k, host) == names, timeout=60,
                     what=f"both pods answering {host}")
    # The pods' addresses are on the pod network, the Service's endpoints name them.
    ips = {p["status"]["podIP"] for p in _pods(k, "app=web")}
    assert all(ip.startswith("10.42.") for ip in ips)
    slices = k.json("get", "endpointslices", "-l", "kubernetes.io/service-name=web")["items"]
    assert {a for s in slices for e in s["endpoints"] for a in e["addresses"]} == ips


def test_a_node_port_answers_the_outside_host(cluster: Any, k: Kubectl) -> None:
    _, _, outside = cluster
    def answer() -> str | None:
        text = _outside_get(outside, WEB_NODE_PORT)
        return text if "hello-from-" in text else None

    assert "hello-from-web-" in until(answer, timeout=30, what="the NodePort answering from outside")


def test_a_pod_failing_readiness_leaves_the_endpoints_and_traffic_avoids_it(cluster: Any, k: Kubectl) -> None:
    ks, _, _ = cluster
    pods = sorted(_pods(k, "app=web"), key=lambda p: p["metadata"]["name"])
    sick, healthy = pods[0], pods[1]
    _exec(ks, sick, "sh", "-c", "rm -f /tmp/ready")
    try:
        until(lambda: not _ready(k.json("get", "pod", sick["metadata"]["name"])), timeout=30, what="sick not ready")

        def endpoints_ready() -> set[str]:
            slices = k.json("get", "endpointslices", "-l", "kubernetes.io/service-name=web")["items"]
            return {a for s in slices for e in s["endpoints"] if (e.get("conditions") or {}).get("ready")
                    for a in e["addresses"]}

        until(lambda: endpoints_ready() == {healthy["status"]["podIP"]}, timeout=30, what="only the healthy endpoint")
        assert until(lambda: _answers(ks, k, "web", tries=8) == {healthy["metadata"]["name"]}, timeout=30,
                     what="traffic only to the healthy pod")
    finally:
        _exec(ks, sick, "sh", "-c", "touch /tmp/ready")
        until(lambda: _ready(k.json("get", "pod", sick["metadata"]["name"])), timeout=30, what="sick ready again")


def test_network_policy_default_deny_then_an_allow_rule(cluster: Any, k: Kubectl) -> None:
    ks, _, _ = cluster
    k.run("apply", "-f", "-", input=f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: deny, namespace: {NS}}}
spec: {{podSelector: {{matchLabels: {{app: web}}}}}}
""")
    try:
        until(lambda: "hello-from-" not in _get(ks, k, "web"), timeout=30, what="the client refused")
        k.run("apply", "-f", "-", input=f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: allow-clients, namespace: {NS}}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  ingress: [{{from: [{{podSelector: {{matchLabels: {{role: client}}}}}}], ports: [{{port: http}}]}}]
""")
        until(lambda: "hello-from-" in _get(ks, k, "web"), timeout=30, what="the client allowed again")
        # A default-deny egress that allows DNS: names still resolve (the cluster DNS answers on
        # the node, behind kube-dns's ClusterIP), connections do not go out.
        k.run("apply", "-f", "-", input=f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: client-egress, namespace: {NS}}}
spec:
  podSelector: {{matchLabels: {{role: client}}}}
  policyTypes: [Egress]
  egress: [{{ports: [{{port: 53, protocol: UDP}}, {{port: 53, protocol: TCP}}]}}]
""")
        until(lambda: "hello-from-" not in _get(ks, k, "web"), timeout=30, what="the client's egress refused")
        client = k.json("get", "pod", "client")
        looked_up = _exec(ks, client, "sh", "-c", f"busybox nslookup web.{NS}.svc.cluster.local")
        assert k.json("get", "svc", "web")["spec"]["clusterIP"] in looked_up.stdout, looked_up
    finally:
        k.run("delete", "netpol", "--all")


def test_kill_9_keeps_connections_and_service_traffic_and_pods_keep_their_addresses(
        cluster: Any, k: Kubectl) -> None:
    ks, _, outside = cluster
    before = {p["metadata"]["name"]: p["status"]["podIP"] for p in _pods(k, "app in (web, echo)")}

    def connect() -> socket.socket:
        return socket.create_connection((NODE_IP, ECHO_NODE_PORT), timeout=5)

    conn = until(lambda: _try(lambda: outside.call(connect)), timeout=30, what="a connection to the echo Service")
    try:
        conn.sendall(b"before\n")
        assert conn.recv(64) == b"before\n"
        ks.server.kill()
        conn.sendall(b"while down\n")
        assert conn.recv(64) == b"while down\n", "the established connection goes on without edgekube"
        assert "hello-from-web-" in _outside_get(outside, WEB_NODE_PORT), "new Service traffic flows while down"
        ks.server.start()
        conn.sendall(b"after\n")
        assert conn.recv(64) == b"after\n"
    finally:
        conn.close()
    after = {p["metadata"]["name"]: p["status"]["podIP"] for p in _pods(k, "app in (web, echo)")}
    assert after == before, "the same pods, with the same addresses"
    assert until(lambda: "hello-from-" in _get(ks, k, "web"), timeout=30, what="Service traffic after the restart")


def _try(fn: Any) -> Any:
    try:
        return fn()
    except OSError:
        return None
