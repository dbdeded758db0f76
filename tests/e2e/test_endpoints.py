"""Endpoints and EndpointSlices through kubectl: Services find the pods they select.

Pods are made directly (no Deployment) and run on the module's test node, which reports them
Running and Ready with an IP, or never Ready with `testnode.edgekube.io/ready: "false"`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Server
from tests.e2e.test_kubectl import Kubectl
from tests.support.waiting import fresh_namespace
from tests.support.waiting import until as _until

pytestmark = pytest.mark.e2e

NOT_READY = {"testnode.edgekube.io/ready": "false"}


@pytest.fixture
def k(server: Server, test_node: Any, request: pytest.FixtureRequest) -> Kubectl:
    return fresh_namespace(server, request, prefix="ep-")


def _apply(k: Kubectl, *objs: dict[str, Any]) -> None:
    k.run("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}))


def _pod(name: str, labels: dict[str, str], *, ports: list[dict[str, Any]] | None = None,
         annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": "busybox:1.36"}
    if ports:
        container["ports"] = ports
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels, "annotations": annotations or {}},
            "spec": {"containers": [container], **spec}}


def _service(name: str, selector: dict[str, str] | None, ports: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ports": ports, **spec}
    if selector is not None:
        body["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": {"team": "edge"}}, "spec": body}


def _pod_ip(k: Kubectl, name: str) -> str:
    return str(_until(lambda: k.json("get", "pod", name).get("status", {}).get("podIP"), what=f"pod {name} has an IP"))


def _endpoints(k: Kubectl, name: str) -> dict[str, Any] | None:
    proc = k.run("get", "endpoints", name, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def _slices(k: Kubectl, service: str) -> list[dict[str, Any]]:
    return list(k.json("get", "endpointslices", "-l", f"kubernetes.io/service-name={service}")["items"])


def _ips(subsets: list[dict[str, Any]], field: str) -> set[str]:
    return {a["ip"] for s in subsets for a in s.get(field) or []}


def _by_ip(slices: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {ep["addresses"][0]: ep for s in slices for ep in s.get("endpoints") or []}


def test_ready_and_not_ready_pods_with_a_named_target_port(k: Kubectl, test_node: Any) -> None:
    http = [{"name": "http", "containerPort": 8080}]
    _apply(k, _pod("web-1", {"app": "web"}, ports=http),
           _pod("web-2", {"app": "web"}, ports=http, annotations=NOT_READY),
           _pod("web-3", {"app": "web"}),  # no port named http
           _pod("other", {"app": "other"}, ports=http),
           _service("web", {"app": "web"}, [{"name": "http", "port": 80, "targetPort": "http", "appProtocol": "http"}]))
    ip1, ip2, ip3 = (_pod_ip(k, n) for n in ("web-1", "web-2", "web-3"))

    def converged() -> dict[str, Any] | None:
        ep = _endpoints(k, "web")
        subsets = (ep or {}).get("subsets") or []
        ok = _ips(subsets, "addresses") == {ip1} and _ips(subsets, "notReadyAddresses") == {ip2}
        return ep if ok else None

    ep = _until(converged, what="Endpoints with web-1 ready and web-2 not ready")
    [subset] = ep["subsets"]
    assert subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}]
    addr = subset["addresses"][0]
    web1 = k.json("get", "pod", "web-1")
    assert addr["nodeName"] == test_node.name
    assert addr["targetRef"] == {"kind": "Pod", "namespace": k.ns, "name": "web-1", "uid": web1["metadata"]["uid"]}
    assert ep["metadata"]["labels"] == {"team": "edge"}
    assert "endpoints.kubernetes.io/last-change-trigger-time" in ep["metadata"]["annotations"]
    assert f"{ip1}:8080" in k.out("get", "endpoints", "web")

    # The slices: the pods with the port in one slice, web-3 (no such port) in one without ports.
    def slices_converged() -> list[dict[str, Any]] | None:
        slices = _slices(k, "web")
        return slices if set(_by_ip(slices)) == {ip1, ip2, ip3} else None

    slices = _until(slices_converged, what="EndpointSlices with web-1, web-2 and web-3")
    svc = k.json("get", "service", "web")
    assert len(slices) == 2
    for s in slices:
        meta = s["metadata"]
        assert s["addressType"] == "IPv4"
        assert meta["generateName"] == "web-" and meta["name"].startswith("web-")
        assert meta["labels"] == {"team": "edge", "kubernetes.io/service-name": "web",
                                  "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
        assert meta["ownerReferences"] == [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                            "uid": svc["metadata"]["uid"], "controller": True,
                                            "blockOwnerDeletion": True}]
    by_ports = {json.dumps(s.get("ports") or [], sort_keys=True): s for s in slices}
    named = by_ports[json.dumps([{"name": "http", "protocol": "TCP", "port": 8080, "appProtocol": "http"}], sort_keys=True)]
    assert {ep["addresses"][0] for ep in named["endpoints"]} == {ip1, ip2}
    assert {ep["addresses"][0] for ep in by_ports["[]"]["endpoints"]} == {ip3}
    eps = _by_ip(slices)
    assert eps[ip1]["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert eps[ip2]["conditions"] == {"ready": False, "serving": False, "terminating": False}
    assert eps[ip1]["nodeName"] == test_node.name
    assert eps[ip1]["targetRef"] == {"kind": "Pod", "namespace": k.ns, "name": "web-1", "uid": web1["metadata"]["uid"]}

    # A pod turning ready moves to the ready addresses, in place in the same slice.
    name_before = named["metadata"]["name"]
    k.run("delete", "pod", "web-2", "--wait=true", "--timeout=30s")
    _apply(k, _pod("web-2", {"app": "web"}, ports=http))
    ip2 = _pod_ip(k, "web-2")
    _until(lambda: _ips((_endpoints(k, "web") or {}).get("subsets") or [], "addresses") == {ip1, ip2},
           what="both pods ready in Endpoints")
    named_after = _until(lambda: [s for s in _slices(k, "web") if s.get("ports")
                                  and {e["addresses"][0] for e in s["endpoints"]} == {ip1, ip2}],
                         what="the new web-2 in the slice")
    assert named_after[0]["metadata"]["name"] == name_before


def test_headless_service_with_hostnames_and_not_ready_addresses_published(k: Kubectl) -> None:
    _apply(k, _pod("db-0", {"app": "db"}, hostname="db-0", subdomain="db"),
           _pod("db-1", {"app": "db"}, annotations=NOT_READY, hostname="db-1", subdomain="db"),
           _service("db", {"app": "db"}, [], clusterIP="None"),
           _service("db-all", {"app": "db"}, [{"port": 5432}], clusterIP="None", publishNotReadyAddresses=True))
    ip0, ip1 = _pod_ip(k, "db-0"), _pod_ip(k, "db-1")

    ep = _until(lambda: (e := _endpoints(k, "db")) and _ips(e.get("subsets") or [], "notReadyAddresses") == {ip1} and e,
                what="headless Endpoints")
    [subset] = ep["subsets"]
    assert "ports" not in subset
    assert [(a["ip"], a["hostname"]) for a in subset["addresses"]] == [(ip0, "db-0")]
    assert ep["metadata"]["labels"] == {"team": "edge", "service.kubernetes.io/headless": ""}
    slices = _until(lambda: (s := _slices(k, "db")) and len(_by_ip(s)) == 2 and s, what="headless slices")
    assert slices[0]["metadata"]["labels"]["service.kubernetes.io/headless"] == ""
    assert _by_ip(slices)[ip0]["hostname"] == "db-0"

    # Published not-ready addresses are ready addresses; the hostname is only for the subdomain's
    # Service.
    ep = _until(lambda: (e := _endpoints(k, "db-all")) and _ips(e.get("subsets") or [], "addresses") == {ip0, ip1} and e,
                what="every pod published")
    [subset] = ep["subsets"]
    assert "notReadyAddresses" not in subset and all("hostname" not in a for a in subset["addresses"])
    assert subset["ports"] == [{"port": 5432, "protocol": "TCP"}]
    eps = _until(lambda: (s := _by_ip(_slices(k, "db-all"))) and len(s) == 2 and s, what="db-all slices")
    assert eps[ip1]["conditions"] == {"ready": True, "serving": False, "terminating": False}


def test_deleted_and_terminating_pods(k: Kubectl) -> None:
    _apply(k, _pod("a", {"app": "api"}), _pod("b", {"app": "api"}),
           _service("api", {"app": "api"}, [{"port": 80, "targetPort": 9000}]))
    ip_a, ip_b = _pod_ip(k, "a"), _pod_ip(k, "b")
    _until(lambda: _ips((_endpoints(k, "api") or {}).get("subsets") or [], "addresses") == {ip_a, ip_b},
           what="both pods in Endpoints")
    assert (_endpoints(k, "api") or {})["subsets"][0]["ports"] == [{"port": 9000, "protocol": "TCP"}]

    # A deleted pod leaves.
    k.run("delete", "pod", "a", "--wait=true", "--timeout=30s")
    _until(lambda: _ips((_endpoints(k, "api") or {}).get("subsets") or [], "addresses") == {ip_b},
           what="a gone from Endpoints")
    _until(lambda: set(_by_ip(_slices(k, "api"))) == {ip_b}, what="a gone from the slices")

    # A terminating pod (held by a finalizer) leaves the Endpoints, and stays in the slice as
    # serving but not ready.
    k.run("patch", "pod", "b", "--type=merge", "-p", '{"metadata":{"finalizers":["example.com/hold"]}}')
    k.run("delete", "pod", "b", "--wait=false")
    _until(lambda: not ((_endpoints(k, "api") or {}).get("subsets")), what="b gone from Endpoints")
    ep = _until(lambda: (e := _by_ip(_slices(k, "api")).get(ip_b)) and e["conditions"]["terminating"] and e,
                what="b terminating in the slice")
    assert ep["conditions"] == {"ready": False, "serving": True, "terminating": True}
    k.run("patch", "pod", "b", "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    # Nothing left: one empty placeholder slice.
    slices = _until(lambda: (s := _slices(k, "api")) and not _by_ip(s) and s, what="an empty placeholder slice")
    assert len(slices) == 1 and not slices[0].get("ports")


def test_describe_service_shows_its_endpoints(k: Kubectl) -> None:
    _apply(k, _pod("shop", {"app": "shop"}), _service("shop", {"app": "shop"}, [{"port": 80, "targetPort": 8080}]))
    ip = _pod_ip(k, "shop")
    out = _until(lambda: (o := k.out("describe", "service", "shop")) and f"{ip}:8080" in o and o,
                 what="describe shows the endpoint")
    line = next(x for x in out.splitlines() if x.startswith("Endpoints:"))
    assert f"{ip}:8080" in line


def test_zone_of_the_node_and_deleting_the_service(k: Kubectl, test_node: Any) -> None:
    _apply(k, _pod("z", {"app": "z"}), _service("z", {"app": "z"}, [{"port": 80}]))
    ip = _pod_ip(k, "z")
    _until(lambda: ip in _by_ip(_slices(k, "z")), what="the pod in a slice")
    k.run("label", "node", test_node.name, "topology.kubernetes.io/zone=zone-a", "--overwrite", namespaced=False)
    try:
        _until(lambda: _by_ip(_slices(k, "z"))[ip].get("zone") == "zone-a", what="the node's zone on the endpoint")
    finally:
        k.run("label", "node", test_node.name, "topology.kubernetes.io/zone-", namespaced=False)
    _until(lambda: "zone" not in _by_ip(_slices(k, "z"))[ip], what="the zone gone")
    k.run("delete", "service", "z")
    _until(lambda: _endpoints(k, "z") is None and not _slices(k, "z"), what="Endpoints and slices gone")


def test_services_without_selector_keep_user_endpoints_and_are_mirrored(k: Kubectl, server: Server) -> None:
    kube = Kubectl("1.36", server, "default")
    before = _endpoints(kube, "kubernetes")
    _apply(k, _service("ext", None, [{"name": "db", "port": 5432}]))
    user = {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "ext", "labels": {"owner": "me"}, "annotations": {"note": "kept"}},
            "subsets": [{"addresses": [{"ip": "192.0.2.10"}, {"ip": "192.0.2.11"}],
                         "notReadyAddresses": [{"ip": "192.0.2.12"}],
                         "ports": [{"name": "db", "port": 5432, "protocol": "TCP"}]}]}
    k.run("create", "-f", "-", input=json.dumps(user))
    created = _endpoints(k, "ext")
    assert created is not None

    slices = _until(lambda: (s := _slices(k, "ext")) and len(_by_ip(s)) == 3 and s, what="mirrored slice")
    [mirror] = slices
    meta = mirror["metadata"]
    assert meta["labels"] == {"owner": "me", "kubernetes.io/service-name": "ext",
                              "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io"}
    assert meta["annotations"] == {"note": "kept"}
    assert meta["ownerReferences"][0]["kind"] == "Endpoints"
    assert meta["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert mirror["ports"] == [{"name": "db", "protocol": "TCP", "port": 5432}]
    eps = _by_ip(slices)
    assert eps["192.0.2.10"]["conditions"] == {"ready": True}
    assert eps["192.0.2.12"]["conditions"] == {"ready": False}
    # The user's Endpoints are theirs: untouched by the endpoints controller.
    after = _endpoints(k, "ext")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert after["subsets"] == created["subsets"]

    # A change to the Endpoints is mirrored in place.
    k.run("patch", "endpoints", "ext", "--type=json", "-p",
          json.dumps([{"op": "remove", "path": "/subsets/0/addresses/1"}]))
    _until(lambda: set(_by_ip(_slices(k, "ext"))) == {"192.0.2.10", "192.0.2.12"}, what="mirror follows")
    assert [s["metadata"]["name"] for s in _slices(k, "ext")] == [meta["name"]]

    # The API server's own Endpoints are neither changed nor mirrored.
    now = _endpoints(kube, "kubernetes")
    assert before is not None and now is not None
    assert now["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert not [s for s in _slices(kube, "kubernetes")
                if s["metadata"].get("labels", {}).get("endpointslice.kubernetes.io/managed-by")]

    # The Service gone, its Endpoints go too (as upstream), and the mirror with them.
    k.run("delete", "service", "ext")
    _until(lambda: _endpoints(k, "ext") is None and not _slices(k, "ext"), what="Endpoints and mirror gone")
