"""NetworkPolicy enforced end to end through the API: an edgekube server inside a namespace of
its own, pods (namespaces on a bridge in the server's namespace, registered through the API
with their addresses), policies written with real kubectl, and real connections judged by the
rules the server's policy agent writes into its nftables table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server
from tests.e2e.test_kubectl import Kubectl
from tests.integration.test_network_policy_nft import Cluster
from tests.support.netns import namespaces
from tests.support.waiting import until

NODE = "policy-node"


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Cluster, Kubectl, Server]]:
    with namespaces("node", "a", "b", "c") as (node, a, b, c):
        cfg = tmp_path / "config.yaml"
        cfg.write_text(f"node-name: {NODE}\n")
        srv = Server(tmp_path / "data", netns=node, extra=["--config", str(cfg), "--disable", "scheduler"])
        cluster = Cluster(node)
        try:
            srv.start()
            k = Kubectl("1.33", srv, "default")
            k.run("create", "namespace", "team", namespaced=False)
            k.run("label", "namespace", "team", "trusted=yes", namespaced=False)
            for ns, name, namespace, ip, labels in ((a, "client", "default", "10.42.0.11", "role=client"),
                                                     (b, "web", "default", "10.42.0.12", "app=web"),
                                                     (c, "other", "team", "10.42.0.13", "role=client")):
                cluster.add_pod(ns, name=name, namespace=namespace, ip=ip, labels={})
                key, _, value = labels.partition("=")
                pod = {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "namespace": namespace, "labels": {key: value}},
                       "spec": {"nodeName": NODE, "containers": [
                           {"name": "c", "image": "busybox", "ports": [{"name": "http", "containerPort": 8080}]}]}}
                k.run("apply", "-f", "-", input=json.dumps(pod), namespaced=False)
                status = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}
                k.run("-n", namespace, "patch", "pod", name, "--subresource=status", "--type=merge",
                      "-p", json.dumps(status), namespaced=False)
                for port in (8080, 9090):
                    cluster.serve(ns, ip, port)
            yield cluster, k, srv
        finally:
            cluster.close()
            srv.close()


def test_policies_written_through_the_api_are_enforced_and_follow_changes(
        setup: tuple[Cluster, Kubectl, Server]) -> None:
    cluster, k, _ = setup
    assert cluster.reaches("client", "10.42.0.12", 8080)
    k.run("apply", "-f", "-", input="""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}], ports: [{port: http}]}]
""")
    until(lambda: not cluster.reaches("other", "10.42.0.12", 8080), what="the other namespace's client refused")
    assert cluster.reaches("client", "10.42.0.12", 8080)  # same namespace, role=client, port http
    assert not cluster.reaches("client", "10.42.0.12", 9090)
    # A namespace's labels change: the policy follows.
    k.run("apply", "-f", "-", input="""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: trusted}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {trusted: "yes"}}}]}]
""")
    until(lambda: cluster.reaches("other", "10.42.0.12", 9090), what="the trusted namespace allowed")
    k.run("label", "namespace", "team", "trusted-", namespaced=False)
    until(lambda: not cluster.reaches("other", "10.42.0.12", 9090), what="no longer trusted")
    # A pod's labels change: it leaves the peers.
    k.run("label", "pod", "client", "role=visitor", "--overwrite")
    until(lambda: not cluster.reaches("client", "10.42.0.12", 8080), what="the relabelled client refused")
    # The policies go: open again, and (after the flushed chains' delay) the table keeps only
    # the policies' base chains.
    k.run("delete", "netpol", "--all")
    until(lambda: cluster.reaches("client", "10.42.0.12", 9090), what="open again")
    until(lambda: chains(cluster, "policy-") == 2, what="the pods' chains deleted")


def test_rules_stay_while_edgekube_is_down_and_the_next_process_cleans_chains_it_did_not_write(
        setup: tuple[Cluster, Kubectl, Server]) -> None:
    cluster, k, srv = setup
    k.run("apply", "-f", "-", input="apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                                    "metadata: {name: deny}\nspec: {podSelector: {}}\n")
    until(lambda: not cluster.reaches("client", "10.42.0.12", 8080), what="default deny in force")
    assert chains(cluster) == 2  # client and web, the pods of "default"
    srv.kill()
    assert not cluster.reaches("client", "10.42.0.12", 8080), "the rules outlive the process"
    srv.start()
    k.run("delete", "pod", "web", "--grace-period=0", "--force")
    until(lambda: chains(cluster) == 1, what="the deleted pod's chain removed")
    assert not cluster.reaches("other", "10.42.0.11", 8080)


def chains(cluster: Cluster, prefix: str = "policy-in-") -> int:
    table = json.loads(cluster.node.run(["nft", "-j", "list", "table", "inet", "edgekube"]).stdout)["nftables"]
    return len([i for i in table if "chain" in i and i["chain"]["name"].startswith(prefix)])
