"""NetworkPolicy chains (edgekube/net/policy.py) enforced by the real kernel: a "node" namespace
with a bridge and pods in namespaces of their own joined by veth pairs, the rules written with
the real `nft`, and real TCP/UDP connections between them. Nothing here touches the host's
namespace (tests/support/netns.py); everything goes with the namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from edgekube.net import nft, policy
from tests.support.netns import NetNS, namespaces

GATEWAY = "10.42.0.1"
TABLE = "edgekube"


class Cluster:
    """A node namespace with bridge `ekt0` (10.42.0.1/24) and pods joined to it."""

    def __init__(self, node: NetNS) -> None:
        self.node = node
        self.pods: dict[str, tuple[NetNS, str, dict[str, Any]]] = {}
        self.servers: list[socket.socket] = []
        node.run(["ip", "link", "add", "ekt0", "type", "bridge"])
        node.run(["ip", "addr", "add", f"{GATEWAY}/24", "dev", "ekt0"])
        node.run(["ip", "link", "set", "ekt0", "up"])
        node.run(["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"])
        self.loop = asyncio.new_event_loop()
        table = nft.Table(nft.Nft(node.argv(["nft"])), name=TABLE)
        self.fragment = nft.Fragment(table, owns=policy.owns, name="network policy")

    def add_pod(self, ns: NetNS, *, name: str, namespace: str, ip: str, labels: dict[str, str],
                ports: list[dict[str, Any]] | None = None) -> None:
        host_end = f"vek{len(self.pods)}"
        self.node.run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", str(ns.path)])
        self.node.run(["ip", "link", "set", host_end, "master", "ekt0", "up"])
        ns.run(["ip", "addr", "add", f"{ip}/24", "dev", "eth0"])
        ns.run(["ip", "link", "set", "eth0", "up"])
        ns.run(["ip", "route", "add", "default", "via", GATEWAY])
        pod = {"metadata": {"namespace": namespace, "name": name, "labels": labels},
               "spec": {"containers": [{"name": "c", "ports": ports or []}]},
               "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}
        self.pods[name] = (ns, ip, pod)

    def serve(self, ns: NetNS, host: str, port: int, *, udp: bool = False) -> None:
        """An echo server on host:port inside `ns` (its socket stays in that namespace)."""
        kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM

        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, kind)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            if not udp:
                s.listen()
            return s

        sock = ns.call(make)
        self.servers.append(sock)

        def loop() -> None:
            with contextlib.suppress(OSError):
                while True:
                    if udp:
                        data, peer = sock.recvfrom(512)
                        sock.sendto(data, peer)
                    else:
                        conn, _ = sock.accept()
                        with conn:
                            conn.sendall(conn.recv(64))

        threading.Thread(target=loop, daemon=True, name=f"echo-{host}:{port}").start()

    def reaches(self, client: str, host: str, port: int, *, udp: bool = False) -> bool:
        ns = self.pods[client][0] if client in self.pods else self.node

        def attempt() -> bool:
            kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
            with socket.socket(socket.AF_INET, kind) as s:
                s.settimeout(1.5)
                try:
                    s.connect((host, port))
                    s.send(b"ping")
                    return s.recv(64) == b"ping"
                except OSError:
                    return False

        return ns.call(attempt)

    def apply(self, policies: list[dict[str, Any]], namespaces_: dict[str, dict[str, str]]) -> None:
        """The plan written through the agent's own table writer (an nft.Fragment), in the node."""
        pods = [p for p in (policy.pod_info(pod) for _, _, pod in self.pods.values()) if p is not None]
        wanted = policy.pieces(policy.compile_plan(pods=pods, namespaces=namespaces_, policies=policies))
        for key in self.fragment.keys():
            if key not in wanted:
                self.fragment.put(key, None)
        for key, piece in wanted.items():
            self.fragment.put(key, piece)
        self.loop.run_until_complete(self.fragment.sync())

    def settle(self) -> None:
        """Let the fragment delete the chains it flushed (after nft.STALE_DELAY)."""
        due = self.fragment.stale_due()
        if due is not None:
            time.sleep(due + 0.05)
            self.loop.run_until_complete(self.fragment.sync())

    def _objects(self) -> list[dict[str, Any]]:
        import json
        return list(json.loads(self.node.run(["nft", "-j", "list", "table", "inet", TABLE]).stdout)["nftables"])

    def close(self) -> None:
        for s in self.servers:
            s.close()
        self.loop.close()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with namespaces("node", "a", "b", "c") as (node, a, b, c):
        cl = Cluster(node)
        cl.add_pod(a, name="client", namespace="default", ip="10.42.0.11", labels={"role": "client"})
        cl.add_pod(b, name="web", namespace="default", ip="10.42.0.12", labels={"app": "web"},
                   ports=[{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
        cl.add_pod(c, name="other", namespace="team", ip="10.42.0.13", labels={"role": "client"})
        for ns, ip, _ in cl.pods.values():
            for port in (8080, 9090, 9095):
                cl.serve(ns, ip, port)
        try:
            yield cl
        finally:
            cl.close()


NAMESPACES = {"default": {"kubernetes.io/metadata.name": "default"},
              "team": {"kubernetes.io/metadata.name": "team", "trusted": "yes"}}


def netpol(name: str, spec: dict[str, Any], ns: str = "default") -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"namespace": ns, "name": name}, "spec": spec}


def test_open_until_a_policy_isolates_then_default_deny_ingress(cluster: Cluster) -> None:
    assert cluster.reaches("client", "10.42.0.12", 8080) and cluster.reaches("other", "10.42.0.12", 8080)
    cluster.apply([netpol("deny", {"podSelector": {"matchLabels": {"app": "web"}}})], NAMESPACES)
    assert not cluster.reaches("client", "10.42.0.12", 8080)
    assert not cluster.reaches("other", "10.42.0.12", 9090)
    # Only the selected pod is isolated, and only for ingress: web still reaches out (replies pass).
    assert cluster.reaches("web", "10.42.0.11", 8080) and cluster.reaches("client", "10.42.0.13", 8080)
    # The node itself (the kubelet's probes) always reaches its pods.
    assert cluster.reaches("node", "10.42.0.12", 8080)
    # The policy goes: open again, and its chains are gone.
    cluster.apply([], NAMESPACES)
    assert cluster.reaches("client", "10.42.0.12", 8080)
    cluster.settle()
    assert [c["chain"]["name"] for c in cluster._objects() if "chain" in c] == ["policy-forward", "policy-input"]


def test_pod_and_namespace_selectors_ports_and_named_ports(cluster: Cluster) -> None:
    allow = netpol("allow", {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": "http"}]},
            {"from": [{"namespaceSelector": {"matchLabels": {"trusted": "yes"}}}],
             "ports": [{"port": 9090, "endPort": 9099, "protocol": "TCP"}]},
        ]})
    cluster.apply([allow], NAMESPACES)
    assert cluster.reaches("client", "10.42.0.12", 8080)  # same namespace, role=client, named port http
    assert not cluster.reaches("client", "10.42.0.12", 9090)  # not on that port
    assert not cluster.reaches("other", "10.42.0.12", 8080)  # role=client but in another namespace
    assert cluster.reaches("other", "10.42.0.12", 9095)  # a trusted namespace, within the range


def test_ip_block_with_except(cluster: Cluster) -> None:
    cluster.apply([netpol("blocks", {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.42.0.0/24", "except": ["10.42.0.13/32"]}}]}]})], NAMESPACES)
    assert cluster.reaches("client", "10.42.0.12", 9090)
    assert not cluster.reaches("other", "10.42.0.12", 9090)


def test_default_deny_egress_keeps_dns_on_the_node(cluster: Cluster) -> None:
    cluster.serve(cluster.node, GATEWAY, 53, udp=True)  # the in-process cluster DNS answers here
    cluster.serve(cluster.node, GATEWAY, 10250)
    cluster.apply([netpol("egress", {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]})], NAMESPACES)
    assert cluster.reaches("client", GATEWAY, 53, udp=True)
    assert not cluster.reaches("client", GATEWAY, 10250)
    assert not cluster.reaches("client", "10.42.0.12", 8080)
    # Another namespace's pods are not isolated by a policy of "default".
    assert cluster.reaches("other", "10.42.0.12", 8080)


def test_egress_to_selected_pods_by_their_named_port(cluster: Cluster) -> None:
    cluster.apply([netpol("egress", {
        "podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "http"}]}]})],
        NAMESPACES)
    assert cluster.reaches("client", "10.42.0.12", 8080)
    assert not cluster.reaches("client", "10.42.0.12", 9090)
    assert not cluster.reaches("client", "10.42.0.13", 8080)
