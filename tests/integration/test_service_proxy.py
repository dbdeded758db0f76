"""The service proxy end to end: a real edgekube (network on, kubelet off) in a namespace of its
own, real nftables, real connections.

Topology (tests/support/nspods.py), all in namespaces deleted afterwards:

    outside ns 198.18.0.2 --veth-- node ns 198.18.0.1 (edgekube, nft table)  bridge tbr0 10.42.0.1/24
                                                                              |-- pod a 10.42.0.2
                                                                              |-- pod b 10.42.0.3
                                                                              |-- pod client 10.42.0.10

The node's default route points at the outside namespace (as an uplink would; it forwards
nothing). Pods a and b run a server that names itself and the source address it saw. Services
are selector-less, with EndpointSlices written here, so each test says exactly which endpoints
exist and in which state; `node-name` is `ektest`, so endpoints with that nodeName are local.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server
from tests.support import netns as netns_mod
from tests.support.nspods import PodNet, ask, ask_udp, wait_for

NODE = "ektest"
NODE_IP = "198.18.0.1"
OUTSIDE_IP = "198.18.0.2"
GATEWAY = "10.42.0.1"
A, B = "10.42.0.2", "10.42.0.3"


class Api:
    """JSON requests to the server, made from inside its namespace."""

    def __init__(self, srv: Server) -> None:
        self.srv = srv
        self.ctx: ssl.SSLContext | None = None

    def __call__(self, method: str, path: str, body: Any = None, *,
                 content_type: str = "application/json") -> Any:
        assert self.srv.netns is not None
        if self.ctx is None:
            self.ctx = self.srv.admin_context()

        def go() -> Any:
            req = urllib.request.Request(self.srv.url + path, method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Content-Type": content_type})
            with urllib.request.urlopen(req, context=self.ctx, timeout=10) as r:
                return json.loads(r.read())

        return self.srv.netns.call(go)


class Cluster:
    def __init__(self, srv: Server, api: Api, node: netns_mod.NetNS, outside: netns_mod.NetNS, pods: PodNet) -> None:
        self.srv, self.api, self.node, self.outside, self.pods = srv, api, node, outside, pods

    def client(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self.pods.pods["client"].call(fn, *args, **kwargs)

    def service(self, name: str, *, ports: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
        body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
                "spec": {"ports": ports or [{"name": "http", "port": 80, "targetPort": 8080}], **spec}}
        return self.api("POST", "/api/v1/namespaces/default/services", body)  # type: ignore[no-any-return]

    def endpoints(self, service: str, eps: list[dict[str, Any]], *, name: str | None = None,
                  ports: list[dict[str, Any]] | None = None) -> None:
        """Create or replace the EndpointSlice `name` (default `<service>-1`) of `service`."""
        name = name or f"{service}-1"
        body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": name, "namespace": "default",
                             "labels": {"kubernetes.io/service-name": service}},
                "addressType": "IPv4", "endpoints": eps,
                "ports": ports or [{"name": "http", "port": 8080, "protocol": "TCP"}]}
        path = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
        try:
            current = self.api("GET", f"{path}/{name}")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
            self.api("POST", path, body)
            return
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        self.api("PUT", f"{path}/{name}", body)

    def table(self) -> list[dict[str, Any]]:
        out = self.node.run(["nft", "-j", "-a", "list", "table", "inet", "edgekube"]).stdout
        return [i for i in json.loads(out)["nftables"] if "metainfo" not in i]

    def elements(self, set_name: str) -> list[Any]:
        for item in self.table():
            body = item.get("map") or item.get("set")
            if body and body["name"] == set_name:
                return list(body.get("elem") or [])
        raise AssertionError(f"no set {set_name}")


def ep(ip: str, *, ready: bool = True, serving: bool | None = None, terminating: bool = False,
       node: str = NODE) -> dict[str, Any]:
    return {"addresses": [ip], "nodeName": node,
            "conditions": {"ready": ready, "serving": ready if serving is None else serving, "terminating": terminating}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("proxy")
    with netns_mod.namespaces("node", "outside") as (node, outside):
        netns_mod.link(node, outside, a_addr=f"{NODE_IP}/24", b_addr=f"{OUTSIDE_IP}/24")
        node.run(["ip", "route", "add", "default", "via", OUTSIDE_IP])
        pods = PodNet(node)
        try:
            pods.pod("a", 2)
            pods.pod("b", 3)
            pods.pod("client", 10)
            for name in ("a", "b"):
                pods.serve(name, 8080)
                pods.serve(name, 5353, proto="udp")
            config = work / "config.yaml"
            config.write_text(f"node-name: {NODE}\ncontrollers:\n  node-monitor-grace-period-seconds: 3600\n")
            srv = Server(work / "data", netns=node, extra=["--config", str(config)])
            srv.start()
            try:
                yield Cluster(srv, Api(srv), node, outside, pods)
            finally:
                srv.close()
        finally:
            pods.close()


def names(cluster: Cluster, address: str, port: int, n: int) -> list[str]:
    return [cluster.client(ask, address, port)[0] for _ in range(n)]


def test_cluster_ip_spreads_over_ready_endpoints_tcp_and_udp(cluster: Cluster) -> None:
    svc = cluster.service("spread", ports=[{"name": "http", "port": 80, "targetPort": 8080},
                                           {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}])
    ip = svc["spec"]["clusterIP"]
    cluster.endpoints("spread", [ep(A), ep(B)], ports=[{"name": "http", "port": 8080, "protocol": "TCP"},
                                                        {"name": "dns", "port": 5353, "protocol": "UDP"}])
    wait_for(lambda: cluster.client(ask, ip, 80))
    seen = names(cluster, ip, 80, 40)
    assert set(seen) == {"a", "b"}, seen
    # A pod's own address reaches the endpoint unchanged (no masquerade inside the pod network).
    assert cluster.client(ask, ip, 80)[1] == "10.42.0.10"
    assert {cluster.client(ask_udp, ip, 53)[0] for _ in range(30)} == {"a", "b"}
    # The node itself reaches the cluster IP too (masqueraded to the bridge address).
    assert cluster.node.call(ask, ip, 80)[1] == GATEWAY
    # And the table says so.
    keys = [e["elem"]["val"]["concat"] if isinstance(e, dict) and "elem" in e else e for e in cluster.elements("service-ips")]
    assert any(ip in json.dumps(k) and "tcp" in json.dumps(k) for k in keys), keys


def test_a_udp_flow_follows_its_service_when_the_endpoint_leaves(cluster: Cluster) -> None:
    ip = cluster.service("udp", ports=[{"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}])["spec"]["clusterIP"]
    ports = [{"name": "dns", "port": 5353, "protocol": "UDP"}]
    cluster.endpoints("udp", [ep(A)], ports=ports)

    def flow() -> Any:
        # One client socket, one source port: one conntrack entry, as a resolver's.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))
        s.settimeout(2)
        return s

    sock = cluster.client(flow)

    def ask_on(s: socket.socket) -> str:
        s.sendto(b"?", (ip, 53))
        return s.recv(100).decode().split()[0]

    try:
        assert wait_for(lambda: ask_on(sock)) == "a"
        cluster.endpoints("udp", [ep(B)], ports=ports)
        # Without the cleanup the flow would stay on a (still up) until its entry idled out.
        assert wait_for(lambda: ask_on(sock) == "b", timeout=5)
    finally:
        sock.close()


def test_session_affinity_sticks_to_one_endpoint(cluster: Cluster) -> None:
    svc = cluster.service("sticky", sessionAffinity="ClientIP",
                          sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}})
    ip = svc["spec"]["clusterIP"]
    cluster.endpoints("sticky", [ep(A), ep(B)])
    first = wait_for(lambda: cluster.client(ask, ip, 80))[0]  # type: ignore[index]
    assert set(names(cluster, ip, 80, 20)) == {first}
    sets = [i["set"] for i in cluster.table() if "set" in i and "sticky" in i["set"]["name"]]
    assert len(sets) == 2 and all(s["timeout"] == 600 and "timeout" in s["flags"] for s in sets), sets


def test_not_ready_avoided_and_terminating_used_only_when_nothing_is_ready(cluster: Cluster) -> None:
    ip = cluster.service("ready")["spec"]["clusterIP"]
    cluster.endpoints("ready", [ep(A), ep(B, ready=False)])
    wait_for(lambda: cluster.client(ask, ip, 80))
    assert set(names(cluster, ip, 80, 20)) == {"a"}
    # A terminating endpoint that still serves is not used while a ready one exists ...
    cluster.endpoints("ready", [ep(A, ready=False, serving=True, terminating=True), ep(B)])
    wait_for(lambda: set(names(cluster, ip, 80, 10)) == {"b"})
    assert set(names(cluster, ip, 80, 20)) == {"b"}
    # ... and is the fallback when none is ready (a rolling update's last moments).
    cluster.endpoints("ready", [ep(A, ready=False, serving=True, terminating=True),
                                ep(B, ready=False, serving=False, terminating=True)])
    wait_for(lambda: set(names(cluster, ip, 80, 10)) == {"a"})
    assert set(names(cluster, ip, 80, 20)) == {"a"}


def test_no_endpoints_is_refused_at_once(cluster: Cluster) -> None:
    ip = cluster.service("empty")["spec"]["clusterIP"]
    cluster.endpoints("empty", [ep(A, ready=False, serving=False)])

    def refused() -> bool:
        try:
            cluster.client(ask, ip, 80, timeout=5)
        except ConnectionRefusedError:
            return True
        return False

    wait_for(refused)  # a dropped packet would time out instead: the reject answers
    assert cluster.node.call(lambda: _refused(ip, 80))
    # An unknown port of a cluster IP is refused too; an address of the range nobody holds is dropped.
    assert cluster.client(lambda: _refused(ip, 81))
    assert not any(e for e in cluster.elements("service-ips") if ip in json.dumps(e))
    # Endpoints arriving turn the reject into the service.
    cluster.endpoints("empty", [ep(B)])
    wait_for(lambda: cluster.client(ask, ip, 80)[0] == "b")


def _refused(ip: str, port: int) -> bool:
    try:
        socket.create_connection((ip, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_headless_service_has_no_rules(cluster: Cluster) -> None:
    cluster.service("headless", clusterIP="None")
    cluster.endpoints("headless", [ep(A)])
    cluster.service("witness")  # written after the headless one: once it is in, so would that be
    cluster.endpoints("witness", [ep(A)])
    wait_for(lambda: any("default/witness/" in json.dumps(i) for i in cluster.table()))
    assert not any("headless" in json.dumps(i) for i in cluster.table())


def test_node_port_from_outside_and_on_localhost(cluster: Cluster) -> None:
    svc = cluster.service("np", type="NodePort")
    port = svc["spec"]["ports"][0]["nodePort"]
    cluster.endpoints("np", [ep(A), ep(B, node="elsewhere")])
    got = wait_for(lambda: cluster.outside.call(ask, NODE_IP, port))
    # Cluster policy: the endpoint may be on another node, so the source is masqueraded.
    assert got[1] == GATEWAY  # type: ignore[index]
    assert {cluster.outside.call(ask, NODE_IP, port)[0] for _ in range(30)} == {"a", "b"}
    assert cluster.node.call(ask, "127.0.0.1", port)[0] in ("a", "b")


def test_external_traffic_policy_local_keeps_the_source_and_stays_on_the_node(cluster: Cluster) -> None:
    svc = cluster.service("local", type="NodePort", externalTrafficPolicy="Local")
    port = svc["spec"]["ports"][0]["nodePort"]
    cluster.endpoints("local", [ep(A), ep(B, node="elsewhere")])
    wait_for(lambda: cluster.outside.call(ask, NODE_IP, port))
    answers = {cluster.outside.call(ask, NODE_IP, port) for _ in range(20)}
    assert answers == {("a", OUTSIDE_IP)}
    # Pods are not external clients: through the NodePort they use every endpoint.
    assert {cluster.client(ask, NODE_IP, port)[0] for _ in range(30)} == {"a", "b"}
    # No endpoint on this node: external traffic is dropped (not rejected: another node may serve it).
    cluster.endpoints("local", [ep(B, node="elsewhere")])
    wait_for(lambda: any("drop" in json.dumps(e) for e in cluster.elements("no-endpoint-nodeports")))
    with pytest.raises(TimeoutError):
        cluster.outside.call(ask, NODE_IP, port, timeout=1)


def test_internal_traffic_policy_local(cluster: Cluster) -> None:
    ip = cluster.service("itp", internalTrafficPolicy="Local")["spec"]["clusterIP"]
    cluster.endpoints("itp", [ep(A, node="elsewhere"), ep(B)])
    wait_for(lambda: cluster.client(ask, ip, 80))
    assert set(names(cluster, ip, 80, 20)) == {"b"}


def test_external_ips(cluster: Cluster) -> None:
    # An external IP is routed to the node by the network (here: the outside host's route).
    cluster.outside.run(["ip", "route", "replace", "198.18.0.50/32", "via", NODE_IP])
    cluster.service("extip", externalIPs=["198.18.0.50"])
    cluster.endpoints("extip", [ep(A)])
    assert wait_for(lambda: cluster.outside.call(ask, "198.18.0.50", 80)) == ("a", GATEWAY)


def test_hairpin_a_pod_reaches_itself_through_its_service(cluster: Cluster) -> None:
    ip = cluster.service("hairpin")["spec"]["clusterIP"]
    cluster.endpoints("hairpin", [ep(A)])
    wait_for(lambda: cluster.client(ask, ip, 80))
    # Without masquerade the answer would go straight back inside the pod and never match.
    assert cluster.pods.pods["a"].call(ask, ip, 80) == ("a", GATEWAY)


def test_pod_egress_is_masqueraded(cluster: Cluster) -> None:
    proc = cluster.outside.popen(["python3", "-c", _OUTSIDE_SERVER], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        assert cluster.client(ask, OUTSIDE_IP, 9999) == ("outside", NODE_IP)
    finally:
        proc.kill()
        proc.wait()


_OUTSIDE_SERVER = """
import socket
s = socket.create_server(("0.0.0.0", 9999))
print("ready", flush=True)
while True:
    c, peer = s.accept()
    c.sendall(f"outside {peer[0]}\\n".encode())
    c.close()
"""


def test_host_port_of_a_pod_on_this_node(cluster: Cluster) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hp", "namespace": "default"},
           "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "busybox",
                                                      "ports": [{"containerPort": 8080, "hostPort": 8088}]}]}}
    created = cluster.api("POST", "/api/v1/namespaces/default/pods", pod)
    created["status"] = {"phase": "Running", "podIP": A, "podIPs": [{"ip": A}]}
    cluster.api("PUT", "/api/v1/namespaces/default/pods/hp/status", created)
    assert wait_for(lambda: cluster.outside.call(ask, NODE_IP, 8088)) == ("a", OUTSIDE_IP)
    assert cluster.node.call(ask, "127.0.0.1", 8088)[0] == "a"
    cluster.api("DELETE", "/api/v1/namespaces/default/pods/hp?gracePeriodSeconds=0")
    wait_for(lambda: not cluster.elements("hostports"))


def test_load_balancer_gets_the_node_address_and_answers_there(cluster: Cluster) -> None:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}
    created = cluster.api("POST", "/api/v1/nodes", node)
    created["status"] = {"addresses": [{"type": "InternalIP", "address": NODE_IP}, {"type": "Hostname", "address": NODE}],
                         "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}
    cluster.api("PUT", f"/api/v1/nodes/{NODE}/status", created)
    cluster.service("lb", type="LoadBalancer", ports=[{"name": "http", "port": 8443, "targetPort": 8080}])
    cluster.endpoints("lb", [ep(B)])

    def ingress() -> Any:
        return cluster.api("GET", "/api/v1/namespaces/default/services/lb")["status"].get("loadBalancer", {}).get("ingress")

    assert wait_for(ingress) == [{"ip": NODE_IP, "ipMode": "VIP"}]
    assert wait_for(lambda: cluster.outside.call(ask, NODE_IP, 8443)) == ("b", GATEWAY)
    # A second LoadBalancer on the same port waits, as k3s's servicelb would.
    cluster.service("lb2", type="LoadBalancer", ports=[{"name": "http", "port": 8443, "targetPort": 8080}])
    time.sleep(0.5)
    assert not cluster.api("GET", "/api/v1/namespaces/default/services/lb2")["status"].get("loadBalancer", {}).get("ingress")
    cluster.api("DELETE", "/api/v1/namespaces/default/services/lb")
    wait_for(lambda: cluster.api("GET", "/api/v1/namespaces/default/services/lb2")["status"]
             .get("loadBalancer", {}).get("ingress"))


def test_load_balancer_source_ranges(cluster: Cluster) -> None:
    # (After the LoadBalancer test: the node is there with its address.)
    cluster.service("lbfw", type="LoadBalancer", loadBalancerSourceRanges=["192.0.2.0/24"],
                    ports=[{"name": "http", "port": 8444, "targetPort": 8080}])
    cluster.endpoints("lbfw", [ep(A)])
    wait_for(lambda: any("default/lbfw/" in json.dumps(e) for e in cluster.elements("firewall-ips")))
    with pytest.raises(TimeoutError):  # dropped: the outside host is not in the ranges
        cluster.outside.call(ask, NODE_IP, 8444, timeout=1)
    assert cluster.node.call(ask, NODE_IP, 8444)[0] == "a"  # the node itself passes
    current = cluster.api("GET", "/api/v1/namespaces/default/services/lbfw")
    current["spec"]["loadBalancerSourceRanges"] = ["192.0.2.0/24", "198.18.0.0/24"]
    cluster.api("PUT", "/api/v1/namespaces/default/services/lbfw", current)
    assert wait_for(lambda: cluster.outside.call(ask, NODE_IP, 8444, timeout=1))[0] == "a"  # type: ignore[index]


def _rule_handles(cluster: Cluster, marker: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for item in cluster.table():
        if "rule" in item and marker in item["rule"]["chain"]:
            out.setdefault(item["rule"]["chain"], []).append(item["rule"]["handle"])
    return out


def test_a_change_to_one_service_rewrites_only_its_part(cluster: Cluster) -> None:
    x = cluster.service("only-x")["spec"]["clusterIP"]
    y = cluster.service("only-y")["spec"]["clusterIP"]
    cluster.endpoints("only-x", [ep(A), ep(B)])
    cluster.endpoints("only-y", [ep(A), ep(B)])
    wait_for(lambda: cluster.client(ask, x, 80) and cluster.client(ask, y, 80))
    wait_for(lambda: len(_rule_handles(cluster, "default/only-y/")) == 3)
    x_before = _rule_handles(cluster, "default/only-x/")
    static_before = _rule_handles(cluster, "services")
    cluster.endpoints("only-y", [ep(B)])
    wait_for(lambda: len(_rule_handles(cluster, "default/only-y/")) == 2)
    assert _rule_handles(cluster, "default/only-x/") == x_before  # untouched: same rules, same handles
    assert _rule_handles(cluster, "services") == static_before
    assert set(names(cluster, y, 80, 10)) == {"b"}


def _echo(sock: socket.socket, text: bytes) -> bytes:
    sock.sendall(text)
    return sock.recv(100)


def _rules(cluster: Cluster) -> set[str]:
    return {json.dumps({k: v for k, v in i["rule"].items() if k != "handle"}, sort_keys=True)
            for i in cluster.table() if "rule" in i}


def test_restart_keeps_established_connections_and_rules(cluster: Cluster) -> None:
    ip = cluster.service("keep")["spec"]["clusterIP"]
    cluster.endpoints("keep", [ep(A)])
    wait_for(lambda: cluster.client(ask, ip, 80))
    conn = cluster.client(socket.create_connection, (ip, 80), timeout=5)
    try:
        assert conn.makefile("rb").readline().split()[0] == b"a"
        assert _echo(conn, b"before") == b"before"
        before = _rules(cluster)
        for stop in ("stop", "kill"):
            getattr(cluster.srv, stop)()
            # edgekube is gone: its rules stay, the connection flows, new connections work.
            assert _echo(conn, f"while-{stop}".encode()) == f"while-{stop}".encode()
            assert cluster.client(ask, ip, 80)[0] == "a"
            assert _rules(cluster) == before
            # What a Service deleted meanwhile left: the boot finds it and removes it.
            cluster.node.run(["nft", "add", "chain", "inet", "edgekube", f"service-LEFTOVER-default/gone-{stop}/tcp/"])
            cluster.srv.start()  # the full sync at boot rewrites the table in one batch
            assert _echo(conn, f"after-{stop}".encode()) == f"after-{stop}".encode()
            assert cluster.client(ask, ip, 80)[0] == "a"
            wait_for(lambda: not any("LEFTOVER" in json.dumps(i) for i in cluster.table()))
        assert _rules(cluster) == before  # the same rules (new handles: the boot rewrote them all)
    finally:
        conn.close()


def test_boot_stops_with_a_clear_error_without_nft(tmp_path: Path, netns: netns_mod.NetNS) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nsenter").symlink_to(subprocess.run(["which", "nsenter"], capture_output=True, text=True).stdout.strip())
    srv = Server(tmp_path / "data", netns=netns, env={"PATH": str(bin_dir)})
    with pytest.raises(RuntimeError, match="exited with 1") as info:
        srv.start(timeout=30)
    assert "needs the `nft` program" in str(info.value) and "--disable network" in str(info.value)
    # And `--disable network` runs without it.
    srv = Server(tmp_path / "data2", netns=netns, env={"PATH": str(bin_dir)}, extra=["--disable", "network"])
    srv.start()
    srv.close()
