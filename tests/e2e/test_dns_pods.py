"""Pods and the cluster DNS, with real runc containers: the kubelet writes each pod's resolv.conf
from its dnsPolicy (upstream's rules) and the host resolver file edgekube located, and a busybox
container resolves cluster names through the edgekube process.

The server runs inside a network namespace of its own (the network rule); its image comes from a
docker-archive tarball in DATA/images (no registry to reach from inside). Until the pod network
gives pods their own routes, the container that asks is a hostNetwork pod (the namespace's
network), asking the server's address, the pod gateway 10.42.0.1 put on the namespace's loopback.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.support import images as ti
from tests.support import netns as netns_mod
from tests.support.kubelet import KubeletServer
from tests.support.waiting import until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the kubelet runs runc containers: needs root"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("runc", "umoci", "skopeo")),
                       reason="needs runc, umoci and skopeo (make installs them)"),
]

IMAGE = "docker.io/library/busybox:1.0"
KUBECTL = REPO / "tools" / "bin" / "kubectl-1.36"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeletServer, netns_mod.NetNS]]:
    root = tmp_path_factory.mktemp("dns-pods")
    layout = ti.busybox_layout(root / "layout", tag="1.0")
    tarball = root / "busybox.tar"
    ti.skopeo_copy(layout, f"docker-archive:{tarball}:{IMAGE}")
    resolv = root / "host-resolv.conf"
    resolv.write_text("nameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0\n")
    with netns_mod.namespaces("dnspods") as (ns,):
        ks = KubeletServer(root / "kubelet", netns=ns, config={"dns": {"resolv-conf": str(resolv)}})
        (ks.data_dir / "images").mkdir(parents=True)
        shutil.copy(tarball, ks.data_dir / "images" / tarball.name)
        try:
            ks.start()
            ns.run(["ip", "addr", "add", "10.42.0.1/32", "dev", "lo"])
            yield ks, ns
        finally:
            ks.cleanup()
        left = ks.leftovers()
        assert not left, f"left behind on the host: {left}"


def kubectl(node: tuple[KubeletServer, netns_mod.NetNS], *args: str, input: str | None = None) -> str:
    ks, ns = node
    return ns.run([str(KUBECTL), "--kubeconfig", str(ks.server.kubeconfig), *args], input=input).stdout


def run_pod(node: tuple[KubeletServer, netns_mod.NetNS], name: str, script: str, **spec: Any) -> str:
    """The log of a pod that runs `script` once, to completion."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                                    "command": ["sh", "-c", script]}], **spec}}
    kubectl(node, "apply", "-f", "-", input=yaml.safe_dump(pod))
    until(lambda: json.loads(kubectl(node, "get", "pod", name, "-o", "json")).get("status", {}).get("phase")
          in ("Succeeded", "Failed"), timeout=60, what=f"pod {name} finished")
    return kubectl(node, "logs", name)


def test_resolv_conf_follows_the_dns_policy(node: tuple[KubeletServer, netns_mod.NetNS]) -> None:
    cluster = run_pod(node, "cluster-first", "cat /etc/resolv.conf")
    assert cluster == ("search default.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
                       "nameserver 10.43.0.10\noptions ndots:5\n")
    host = run_pod(node, "host-net", "cat /etc/resolv.conf", hostNetwork=True)
    # the host's file as edgekube found it (a local stub there is the host's business under Default)
    assert host == "search corp.example\nnameserver 127.0.0.53\nnameserver 192.0.2.53\noptions edns0\n"
    custom = run_pod(node, "custom", "cat /etc/resolv.conf", dnsPolicy="None",
                     dnsConfig={"nameservers": ["192.0.2.1"], "searches": ["a.example"],
                                "options": [{"name": "ndots", "value": "2"}]})
    assert custom == "search a.example\nnameserver 192.0.2.1\noptions ndots:2\n"


def test_a_container_resolves_cluster_names_through_edgekube(node: tuple[KubeletServer, netns_mod.NetNS]) -> None:
    log = run_pod(node, "asker", "cat /etc/resolv.conf; nslookup kubernetes.default.svc.cluster.local 10.42.0.1; "
                                 "nslookup kube-dns.kube-system.svc.cluster.local 10.42.0.1",
                  hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")
    assert "nameserver 10.43.0.10" in log
    assert "10.43.0.1\n" in log + "\n" and "10.43.0.10" in log.split("kube-dns.kube-system")[-1], log
    phase = json.loads(kubectl(node, "get", "pod", "asker", "-o", "json"))["status"]["phase"]
    assert phase == "Succeeded", log
