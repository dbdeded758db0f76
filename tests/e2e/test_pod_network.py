"""The pod network end to end: a server with its kubelet and its pod network, inside a network
namespace of the test's own with no uplink (the network rule), real runc pods, real kubectl 1.36
(run inside the namespace too), the links read with `ip` inside the namespace.

The image is busybox (tests/support/images.py) handed to the server as a docker-archive tarball in
`DATA/images/` (imported at boot, no registry: nothing outside the namespace is reachable from
it). Commands run inside pods through `runc exec` (busybox `nc` as the client; `httpd` serves).

Everything goes at the end, even when a test fails: the server is stopped, the kubelet's
containers, mounts and cgroups are swept (`KubeletServer.cleanup`), and deleting the namespace
takes the bridge and every veth with it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgekube.net import links
from tests.conftest import Server
from tests.e2e.test_kubectl import Kubectl
from tests.support import images as ti
from tests.support.kubelet import KubeletServer, running
from tests.support.netns import NetNS, namespaces
from tests.support.waiting import fresh_namespace, until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the kubelet and the pod network need root"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("runc", "umoci", "skopeo", "ip", "nsenter")),
                       reason="needs runc, umoci, skopeo, ip and nsenter (make installs them)"),
]

IMAGE = "podnet.local/busybox:1.0"
# Serves its own name on :8080 until SIGTERM.
HTTPD = ["sh", "-c", "busybox mkdir -p /www && echo hello-from-$(cat /etc/hostname) > /www/index.html && "
                     "exec busybox httpd -f -p 8080 -h /www"]
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("podnet-image")
    ref = ti.busybox_layout(work / "layout", tag="1.0")
    out = work / "busybox.tar"
    ti.skopeo_copy(ref, f"docker-archive:{out}:{IMAGE}")
    return out


def _start(root: Path, tarball: Path, netns: NetNS | None, config: dict[str, Any] | None = None) -> KubeletServer:
    ks = KubeletServer(root, netns=netns, config=config)
    (ks.data_dir / "images").mkdir(parents=True)
    shutil.copy(tarball, ks.data_dir / "images" / tarball.name)
    return ks


def _host_links() -> list[str]:
    """The host's own links (read only)."""
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())


@pytest.fixture(scope="module")
def nsnode() -> Iterator[NetNS]:
    before = _host_links()
    with namespaces("podnet") as (ns,):
        # As a distribution may leave it (libvirt's advice): the pod network must turn it on.
        ns.run(["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"])
        yield ns
    assert _host_links() == before  # nothing of the pod network ever reached the host's namespace


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, tarball: Path, nsnode: NetNS) -> Iterator[KubeletServer]:
    with running(_start(tmp_path_factory.mktemp("podnet"), tarball, nsnode)) as ks:
        yield ks


@pytest.fixture
def k(node: KubeletServer, request: pytest.FixtureRequest) -> Kubectl:
    return fresh_namespace(node.server, request)


# --- helpers --------------------------------------------------------------------------------------


def _pod(k: Kubectl, name: str) -> dict[str, Any]:
    return dict(k.json("get", "pod", name))


def _running(k: Kubectl, name: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        pod = _pod(k, name)
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])
        return pod if pod["status"].get("phase") == "Running" and ready else None

    return dict(until(check, timeout=timeout, what=f"pod {name} Running and Ready"))


def _run(k: Kubectl, name: str, command: list[str], *, probe: dict[str, Any] | None = None,
         **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": IMAGE, "imagePullPolicy": "IfNotPresent", "command": command,
                 **({"readinessProbe": probe} if probe else {})}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
           "spec": {"terminationGracePeriodSeconds": 2, **spec, "containers": [container]}}
    k.run("apply", "-f", "-", input=json.dumps(pod))
    return _running(k, name)


def _cid(pod: dict[str, Any]) -> str:
    return str(pod["status"]["containerStatuses"][0]["containerID"]).split("://", 1)[1]


def _exec(ks: KubeletServer, pod: dict[str, Any], *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """`argv` inside the pod's container. runc runs in the node's namespace, as the kubelet does
    (a hostNetwork container has no network namespace of its own: `runc exec` stays in runc's)."""
    argv = ["runc", "--root", str(ks.runc_root), "exec", _cid(pod), *argv]
    if ks.server.netns is not None:
        argv = ks.server.netns.argv(argv)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def _http_get(ks: KubeletServer, client: dict[str, Any], ip: str) -> str:
    """What the httpd at `ip`:8080 answers the client pod (busybox nc)."""
    done = _exec(ks, client, "sh", "-c", f"echo -e 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 5 {ip} 8080")
    return done.stdout + done.stderr


def _node(k: Kubectl) -> dict[str, Any]:
    return dict(json.loads(k.out("get", "nodes", "-o", "json", namespaced=False))["items"][0])


def _links(ns: NetNS) -> dict[str, dict[str, Any]]:
    """The namespace's links, as `ip -d -j link` shows them."""
    return {str(link["ifname"]): link for link in json.loads(ns.run(["ip", "-d", "-j", "link", "show"]).stdout)}


def _ipam_state(ks: KubeletServer) -> dict[str, Any]:
    """The pods' allocations in the address state (written with the first one)."""
    path = ks.data_dir / "network" / "ipam.json"
    return dict(json.loads(path.read_text())["pods"]) if path.exists() else {}


def _pod_netns(ks: KubeletServer, pod: dict[str, Any]) -> Path:
    return ks.kubelet_dir / "netns" / str(pod["metadata"]["uid"])


# --- the tests ------------------------------------------------------------------------------------


def test_two_pods_get_distinct_addresses_and_talk_over_tcp(node: KubeletServer, nsnode: NetNS, k: Kubectl) -> None:
    n = _node(k)
    assert n["spec"]["podCIDR"] == "10.42.0.0/24" and n["spec"]["podCIDRs"] == ["10.42.0.0/24"]
    internal = next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
    assert internal == "10.42.0.1"  # no uplink in the namespace: the bridge's address

    # Ready only once the kubelet's HTTP probe reached it at its pod IP.
    server = _run(k, "server", HTTPD, probe={"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1})
    client = _run(k, "client", SLEEPER)
    ips = [p["status"]["podIP"] for p in (server, client)]
    assert ips[0] != ips[1]
    for p, ip in zip((server, client), ips, strict=True):
        assert ip.startswith("10.42.0.") and ip not in ("10.42.0.0", "10.42.0.1", "10.42.0.255")
        assert p["status"]["podIPs"] == [{"ip": ip}]
        assert p["status"]["hostIP"] == internal and p["status"]["hostIPs"] == [{"ip": internal}]
        # /etc/hosts names the pod with its address.
        assert f"{ip}\t{p['metadata']['name']}" in _exec(node, p, "cat", "/etc/hosts").stdout

    assert "hello-from-server" in _http_get(node, client, ips[0])
    # The node reaches the pod straight away.
    with nsnode.call(socket.create_connection, (ips[0], 8080), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert b"hello-from-server" in conn.makefile("rb").read()

    # Inside: eth0 with the address and the MTU (1500: no uplink to take it from), a default route
    # via the bridge.
    pod_ns = _pod_netns(node, server)
    addr = json.loads(subprocess.run(["nsenter", f"--net={pod_ns}", "ip", "-j", "addr", "show", "eth0"],
                                     capture_output=True, text=True, check=True).stdout)[0]
    assert addr["mtu"] == 1500 and addr["operstate"] == "UP"
    assert {(a["local"], a["prefixlen"]) for a in addr["addr_info"] if a["family"] == "inet"} == {(ips[0], 24)}
    route = subprocess.run(["nsenter", f"--net={pod_ns}", "ip", "route", "show", "default"],
                           capture_output=True, text=True, check=True).stdout
    assert route.startswith("default via 10.42.0.1 dev eth0")
    # Outside: the bridge with the gateway, the pod's host end on it in hairpin mode, forwarding on.
    have = _links(nsnode)
    assert have["ek0"]["linkinfo"]["info_kind"] == "bridge"
    host_end = have[links.host_ifname(server["metadata"]["uid"])]
    assert host_end["master"] == "ek0" and host_end["linkinfo"]["info_slave_data"]["hairpin"] is True
    assert "10.42.0.1/24" in nsnode.run(["ip", "-o", "addr", "show", "ek0"]).stdout
    assert nsnode.run(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"
    assert nsnode.run(["cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"]).stdout.strip() == "1"


def test_a_pod_reaches_the_bridge_gateway(node: KubeletServer, nsnode: NetNS, k: Kubectl) -> None:
    pod = _run(k, "caller", SLEEPER)
    listener = nsnode.call(socket.create_server, ("10.42.0.1", 0))
    got: list[bytes] = []

    def accept() -> None:
        listener.settimeout(15)
        conn, _ = listener.accept()
        with conn:
            got.append(conn.recv(100))

    t = threading.Thread(target=accept)
    t.start()
    try:
        port = listener.getsockname()[1]
        done = _exec(node, pod, "sh", "-c", f"echo hello-gateway | busybox nc -w 5 10.42.0.1 {port}")
        t.join(20)
    finally:
        listener.close()
    assert got and got[0].startswith(b"hello-gateway"), (got, done.stderr)


def test_deleting_a_pod_removes_its_link_and_frees_its_address(node: KubeletServer, nsnode: NetNS, k: Kubectl) -> None:
    pod = _run(k, "brief", SLEEPER)
    uid, ip = pod["metadata"]["uid"], pod["status"]["podIP"]
    host_end = links.host_ifname(uid)
    assert host_end in _links(nsnode) and _ipam_state(node)[uid]["ips"] == [ip]
    k.run("delete", "pod", "brief", "--wait=true", "--timeout=60s")
    assert host_end not in _links(nsnode)
    assert uid not in _ipam_state(node)
    assert not _pod_netns(node, pod).exists()


def test_host_network_pods_get_the_node_address_and_no_link(node: KubeletServer, nsnode: NetNS, k: Kubectl) -> None:
    before = {n for n in _links(nsnode) if links.HOST_NAME.match(n)}
    pod = _run(k, "hostnet", SLEEPER, hostNetwork=True)
    internal = next(a["address"] for a in _node(k)["status"]["addresses"] if a["type"] == "InternalIP")
    assert pod["status"]["podIP"] == internal == pod["status"]["hostIP"]
    assert pod["status"]["podIPs"] == [{"ip": internal}]
    assert {n for n in _links(nsnode) if links.HOST_NAME.match(n)} == before
    assert pod["metadata"]["uid"] not in _ipam_state(node)
    # It runs in the node's namespace.
    pid = node.runc_list()[_cid(pod)]["pid"]
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(nsnode.path).st_ino
    assert "ek0" in _exec(node, pod, "busybox", "ip", "link").stdout


# --- restarts -------------------------------------------------------------------------------------


@pytest.fixture
def restartable(tmp_path: Path, tarball: Path, netns: NetNS) -> Iterator[KubeletServer]:
    with running(_start(tmp_path / "restart", tarball, netns)) as ks:
        yield ks


def test_kill_9_keeps_addresses_and_links_and_a_pod_deleted_meanwhile_is_released(
        restartable: KubeletServer, netns: NetNS, request: pytest.FixtureRequest) -> None:
    ks = restartable
    k = fresh_namespace(ks.server, request)
    server, client, doomed = _run(k, "server", HTTPD), _run(k, "client", SLEEPER), _run(k, "doomed", SLEEPER)
    before = {p["metadata"]["name"]: (p["status"]["podIP"], _links(netns)[links.host_ifname(p["metadata"]["uid"])]["ifindex"])
              for p in (server, client, doomed)}
    assert "hello-from-server" in _http_get(ks, client, server["status"]["podIP"])

    # kill -9: the pods and their links do not notice.
    ks.server.kill()
    assert "hello-from-server" in _http_get(ks, client, server["status"]["podIP"])
    ks.server.start()
    for name in before:
        _running(k, name)
    after = {name: (_pod(k, name)["status"]["podIP"],
                    _links(netns)[links.host_ifname(_pod(k, name)["metadata"]["uid"])]["ifindex"]) for name in before}
    assert after == before  # same addresses, same links (not made again)
    assert "hello-from-server" in _http_get(ks, client, server["status"]["podIP"])

    # Deleted while the kubelet is down (the API server runs alone meanwhile): at the next boot its
    # address and its link are released; the others keep theirs.
    ks.server.kill()
    api_only = Server(ks.data_dir, port=ks.server.port, extra=["--config", str(ks.config)], netns=netns)
    api_only.start()
    try:
        k.run("delete", "pod", "doomed", "--grace-period=0", "--force")
    finally:
        api_only.close()
    doomed_uid = doomed["metadata"]["uid"]
    assert links.host_ifname(doomed_uid) in _links(netns)  # still there while edgekube is down
    ks.server.start()
    until(lambda: links.host_ifname(doomed_uid) not in _links(netns), timeout=30, what="the deleted pod's link gone")
    assert doomed_uid not in _ipam_state(ks)
    until(lambda: not _pod_netns(ks, doomed).exists(), timeout=30, what="the deleted pod's namespace swept")
    assert "released the addresses of pods deleted meanwhile" in ks.server.log()
    for name in ("server", "client"):
        assert _running(k, name)["status"]["podIP"] == before[name][0]
    assert "hello-from-server" in _http_get(ks, client, server["status"]["podIP"])
    # A clean stop and start keeps them too, even with the address state damaged meanwhile: the
    # pods' links tell who holds what before a new pod gets an address.
    assert ks.server.stop() == 0
    (ks.data_dir / "network" / "ipam.json").write_text("{garbage")
    ks.server.start()
    for name in ("server", "client"):
        assert _running(k, name)["status"]["podIP"] == before[name][0]
    held = _ipam_state(ks)
    assert {server["metadata"]["uid"], client["metadata"]["uid"]} <= held.keys()
    fresh = _run(k, "fresh", SLEEPER)
    assert fresh["status"]["podIP"] not in (before["server"][0], before["client"][0])
    assert "hello-from-server" in _http_get(ks, fresh, server["status"]["podIP"])


# --- other configurations ---------------------------------------------------------------------


def test_without_the_network_component_pods_stay_on_loopback(tmp_path: Path, tarball: Path, netns: NetNS,
                                                             request: pytest.FixtureRequest) -> None:
    with running(_start(tmp_path / "nonet", tarball, netns, config={"disable": ["network"]})) as ks:
        k = fresh_namespace(ks.server, request)
        pod = _run(k, "lonely", SLEEPER)
        assert pod["status"]["podIP"] == "127.0.0.1" and pod["status"]["podIPs"] == [{"ip": "127.0.0.1"}]
        assert "podCIDR" not in (_node(k).get("spec") or {})
        assert sorted(_links(netns)) == ["lo"]  # no bridge, no veth
        assert "eth0" not in _exec(ks, pod, "busybox", "ip", "link").stdout


def test_an_exhausted_pod_cidr_is_a_clear_event_and_a_set_mtu_is_used(tmp_path: Path, tarball: Path, netns: NetNS,
                                                                       request: pytest.FixtureRequest) -> None:
    config = {"cluster-cidr": "10.42.0.0/30", "pod-network": {"mtu": 1400, "bridge": "ektest0"}}  # room for 1 pod
    with running(_start(tmp_path / "small", tarball, netns, config=config)) as ks:
        k = fresh_namespace(ks.server, request)
        first = _run(k, "first", SLEEPER)
        assert first["status"]["podIP"] == "10.42.0.2"
        assert _links(netns)["ektest0"]["mtu"] == 1400
        assert _exec(ks, first, "cat", "/sys/class/net/eth0/mtu").stdout.strip() == "1400"
        k.run("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "second"},
            "spec": {"containers": [{"name": "main", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                                     "command": SLEEPER}]}}))

        def failed() -> list[str]:
            return [e["message"] for e in k.json("get", "events")["items"]
                    if e["involvedObject"].get("name") == "second" and e["reason"] == "FailedCreatePodSandBox"]

        messages = until(failed, timeout=30, what="a FailedCreatePodSandBox event")
        assert "no free address in the pod CIDR 10.42.0.0/30" in messages[0] and f"{k.ns}/second" in messages[0]
        assert _pod(k, "second")["status"].get("phase") == "Pending"
        # Once the first pod goes, the second gets the address.
        k.run("delete", "pod", "first", "--wait=true", "--timeout=60s")
        assert _running(k, "second")["status"]["podIP"] == "10.42.0.2"
