"""The service proxy's pure parts: what it reads from Services and EndpointSlices, the rules it
generates, the nft script a transaction becomes, and the LoadBalancer status it promises."""

from __future__ import annotations

import copy
from typing import Any

from edgekube.controllers import servicelb
from edgekube.net import nft, proxyrules, services

SETTINGS = proxyrules.Settings(cluster_cidrs=("10.42.0.0/16",), service_cidrs=("10.43.0.0/16",))
NODE = "n1"


def svc(name: str = "web", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"type": "ClusterIP", "clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    base.update(spec)
    return {"metadata": {"name": name, "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": base, "status": {}}


def eps(*endpoints: dict[str, Any], name: str = "web", family: str = "IPv4", port: int = 8080,
        port_name: str = "http") -> dict[str, Any]:
    return {"metadata": {"name": f"{name}-x", "namespace": "default", "labels": {services.SERVICE_NAME_LABEL: name}},
            "addressType": family, "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
            "endpoints": list(endpoints)}


def ep(ip: str, *, ready: bool | None = True, serving: bool | None = None, terminating: bool | None = None,
       node: str = NODE) -> dict[str, Any]:
    cond = {k: v for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating)) if v is not None}
    return {"addresses": [ip], "conditions": cond, "nodeName": node}


def elements(piece: nft.Piece | None, set_name: str) -> dict[str, str]:
    assert piece is not None
    return {e.key: e.value for e in piece.elements if e.set == set_name}


def chain(piece: nft.Piece | None, prefix: str) -> nft.Chain:
    assert piece is not None
    found = [c for c in piece.chains if c.name.startswith(prefix + "-")]
    assert len(found) == 1, [c.name for c in piece.chains]
    return found[0]


# --- reading Services and EndpointSlices ---------------------------------------------------------


def test_headless_and_external_name_services_have_no_ports() -> None:
    assert services.service_ports(svc(clusterIP="None", clusterIPs=["None"])) == []
    assert services.service_ports(svc(type="ExternalName", externalName="example.org")) == []
    assert proxyrules.service_piece(svc(clusterIP="None", clusterIPs=["None"]), [eps(ep("10.42.0.2"))], node=NODE,
                                    settings=SETTINGS) is None


def test_service_ports_per_family_with_external_addresses() -> None:
    s = svc(type="LoadBalancer", clusterIPs=["10.43.0.20", "fd00:43::20"], externalIPs=["192.0.2.9", "2001:db8::9"],
            sessionAffinity="ClientIP", externalTrafficPolicy="Local")
    s["spec"]["ports"][0]["nodePort"] = 30080
    s["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}, {"ip": "192.0.2.2", "ipMode": "Proxy"},
                                                {"hostname": "lb.example"}]}}
    v4, v6 = services.service_ports(s)
    assert (v4.family, v4.cluster_ip, v4.node_port, v4.external_ips, v4.load_balancer_ips) == (
        "IPv4", "10.43.0.20", 30080, ("192.0.2.9",), ("192.0.2.1",))
    assert (v6.family, v6.external_ips, v6.load_balancer_ips) == ("IPv6", ("2001:db8::9",), ())
    assert v4.affinity_seconds == services.DEFAULT_AFFINITY_SECONDS
    assert v4.external_policy_local and v4.uses_cluster_endpoints and v4.uses_local_endpoints
    # A ClusterIP Service is not externally reachable, so its external policy does not apply.
    plain = services.service_ports(svc(externalTrafficPolicy="Local"))[0]
    assert not plain.external_policy_local and not plain.uses_local_endpoints


def test_endpoints_match_the_port_by_name_and_keep_the_readiest_copy() -> None:
    port = services.service_ports(svc())[0]
    a = eps(ep("10.42.0.2", ready=False), ep("10.42.0.3"))
    b = eps(ep("10.42.0.2"))
    other_port = eps(ep("10.42.0.9"), port_name="metrics")
    v6 = eps(ep("fd00::1"), family="IPv6")
    got = services.endpoints(port, [a, b, other_port, v6])
    assert [(e.ip, e.port, e.ready) for e in got] == [("10.42.0.2", 8080, True), ("10.42.0.3", 8080, True)]
    # Conditions left out read as upstream: ready unset is ready, serving follows ready.
    bare = services.endpoints(port, [eps({"addresses": ["10.42.0.4"]})])[0]
    assert (bare.ready, bare.serving, bare.terminating) == (True, True, False)


def test_categorize_ready_then_terminating_fallback_then_local() -> None:
    port = services.service_ports(svc())[0]

    def cat(*items: dict[str, Any], p: services.ServicePort = port) -> services.Categorized:
        return services.categorize(services.endpoints(p, [eps(*items)]), p, node=NODE)

    c = cat(ep("10.42.0.2"), ep("10.42.0.3", ready=False, serving=True, terminating=True))
    assert [e.ip for e in c.cluster] == ["10.42.0.2"] and c.has_any
    c = cat(ep("10.42.0.2", ready=False, serving=True, terminating=True), ep("10.42.0.3", ready=False))
    assert [e.ip for e in c.cluster] == ["10.42.0.2"] and c.has_any
    c = cat(ep("10.42.0.3", ready=False))
    assert c.cluster == () and not c.has_any
    local = services.service_ports(svc(internalTrafficPolicy="Local"))[0]
    c = cat(ep("10.42.0.2", node="n2"), ep("10.42.0.3"), p=local)
    assert c.cluster == () and [e.ip for e in c.local] == ["10.42.0.3"] and [e.ip for e in c.reachable] == ["10.42.0.3"]


# --- rules ----------------------------------------------------------------------------------------


def test_cluster_ip_spreads_and_marks_hairpin_and_outside_traffic() -> None:
    piece = proxyrules.service_piece(svc(), [eps(ep("10.42.0.2"), ep("10.42.0.3"))], node=NODE, settings=SETTINGS)
    service = chain(piece, "service")
    assert elements(piece, "service-ips") == {"10.43.0.20 . tcp . 80": f"goto {service.name}"}
    assert elements(piece, "cluster-ips") == {"10.43.0.20": ""}
    assert service.rules[0] == "ip daddr 10.43.0.20 tcp dport 80 ip saddr != 10.42.0.0/16 jump mark-for-masquerade"
    ends = sorted(c.name for c in piece.chains if c.name.startswith("endpoint-"))  # type: ignore[union-attr]
    assert set(service.rules[1:]) == {f"numgen random mod 2 == 0 goto {ends[0]}", f"goto {ends[1]}"} or \
        set(service.rules[1:]) == {f"numgen random mod 2 == 0 goto {ends[1]}", f"goto {ends[0]}"}
    endpoint = next(c for c in piece.chains if "__10.42.0.3/8080" in c.name)  # type: ignore[union-attr]
    assert endpoint.rules == ("ip saddr 10.42.0.3 jump mark-for-masquerade", "meta l4proto tcp dnat ip to 10.42.0.3:8080")
    assert not any(c.name.startswith(("external-", "local-")) for c in piece.chains)  # type: ignore[union-attr]


def test_spread_takes_each_of_n_endpoints_with_probability_one_in_n() -> None:
    rules = proxyrules._spread(["e0", "e1", "e2", "e3"])
    assert rules == ["numgen random mod 4 == 0 goto e0", "numgen random mod 3 == 0 goto e1",
                     "numgen random mod 2 == 0 goto e2", "goto e3"]
    left, chances = 1.0, []
    for rule in rules:
        p = 1 / int(rule.split("mod ")[1].split()[0]) if "mod" in rule else 1.0
        chances.append(left * p)
        left *= 1 - p
    assert all(abs(c - 0.25) < 1e-9 for c in chances)
    assert proxyrules._spread(["only"]) == ["goto only"]


def test_no_endpoints_rejects_and_local_policy_without_local_endpoints_drops() -> None:
    s = svc(type="NodePort", externalTrafficPolicy="Local")
    s["spec"]["ports"][0]["nodePort"] = 30080
    piece = proxyrules.service_piece(s, [eps(ep("10.42.0.2", ready=False))], node=NODE, settings=SETTINGS)
    assert elements(piece, "no-endpoint-services") == {"10.43.0.20 . tcp . 80": "goto reject-chain"}
    assert elements(piece, "no-endpoint-nodeports") == {"tcp . 30080": "goto reject-chain"}
    assert elements(piece, "service-ips") == {} and elements(piece, "service-nodeports") == {}
    assert [c.name for c in piece.chains] == []  # type: ignore[union-attr]
    # Endpoints elsewhere only: the cluster IP works, external traffic from outside is dropped,
    # pods and the node short-circuit to every endpoint.
    piece = proxyrules.service_piece(s, [eps(ep("10.42.0.2", node="n2"))], node=NODE, settings=SETTINGS)
    external = chain(piece, "external")
    assert elements(piece, "service-nodeports") == {"tcp . 30080": f"goto {external.name}"}
    assert elements(piece, "no-endpoint-nodeports") == {"tcp . 30080": "drop"}
    service = chain(piece, "service")
    assert external.rules == (f"ip saddr 10.42.0.0/16 goto {service.name}", "fib saddr type local jump mark-for-masquerade",
                              f"fib saddr type local goto {service.name}")
    # With a local endpoint the external chain ends in the local one, and keeps the source.
    piece = proxyrules.service_piece(s, [eps(ep("10.42.0.2", node="n2"), ep("10.42.0.3"))], node=NODE, settings=SETTINGS)
    assert chain(piece, "external").rules[-1] == f"goto {chain(piece, 'local').name}"
    assert "mark-for-masquerade" not in chain(piece, "local").rules[-1]
    assert elements(piece, "no-endpoint-nodeports") == {}


def test_internal_local_policy_without_local_endpoints_drops_cluster_ip_traffic() -> None:
    piece = proxyrules.service_piece(svc(internalTrafficPolicy="Local"), [eps(ep("10.42.0.2", node="n2"))], node=NODE,
                                     settings=SETTINGS)
    assert elements(piece, "no-endpoint-services") == {"10.43.0.20 . tcp . 80": "drop"}
    assert elements(piece, "service-ips") == {}


def test_cluster_policy_external_traffic_is_masqueraded() -> None:
    s = svc(type="LoadBalancer", externalIPs=["192.0.2.9"])
    s["spec"]["ports"][0]["nodePort"] = 30080
    s["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1", "ipMode": "VIP"}]}}
    piece = proxyrules.service_piece(s, [eps(ep("10.42.0.2"))], node=NODE, settings=SETTINGS)
    external = chain(piece, "external")
    assert external.rules == ("jump mark-for-masquerade", f"goto {chain(piece, 'service').name}")
    assert elements(piece, "service-ips") == {
        "10.43.0.20 . tcp . 80": f"goto {chain(piece, 'service').name}",
        "192.0.2.9 . tcp . 80": f"goto {external.name}", "192.0.2.1 . tcp . 80": f"goto {external.name}"}


def test_load_balancer_source_ranges_guard_the_load_balancer_ips() -> None:
    s = svc(type="LoadBalancer", externalIPs=["192.0.2.9"], loadBalancerSourceRanges=["198.51.100.0/24", "fd00::/8"])
    s["spec"]["ports"][0]["nodePort"] = 30080
    s["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
    piece = proxyrules.service_piece(s, [eps(ep("10.42.0.2"))], node=NODE, settings=SETTINGS)
    firewall = chain(piece, "firewall")
    assert elements(piece, "firewall-ips") == {"192.0.2.1 . tcp . 80": f"goto {firewall.name}"}
    assert firewall.rules == ("fib saddr type local return", "ip saddr != { 198.51.100.0/24 } drop")
    no_ranges = proxyrules.service_piece(svc(type="LoadBalancer"), [eps(ep("10.42.0.2"))], node=NODE, settings=SETTINGS)
    assert elements(no_ranges, "firewall-ips") == {}


def test_affinity_sets_carry_the_timeout_in_their_name() -> None:
    s = svc(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    piece = proxyrules.service_piece(s, [eps(ep("10.42.0.2"), ep("10.42.0.3"))], node=NODE, settings=SETTINGS)
    assert piece is not None
    assert [(x.timeout, x.dynamic, x.flags) for x in piece.sets] == [(60, True, ("dynamic", "timeout"))] * 2
    service = chain(piece, "service")
    assert [r.split(" goto ")[0] for r in service.rules[1:3]] == [f"ip saddr @{x.name}" for x in piece.sets]
    longer = copy.deepcopy(s)
    longer["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] = 120
    other = proxyrules.service_piece(longer, [eps(ep("10.42.0.2"), ep("10.42.0.3"))], node=NODE, settings=SETTINGS)
    assert other is not None and {x.name for x in other.sets}.isdisjoint({x.name for x in piece.sets})


def test_ipv6_service() -> None:
    s = svc(clusterIP="fd00:43::20", clusterIPs=["fd00:43::20"])
    piece = proxyrules.service_piece(s, [eps(ep("fd00:42::5"), family="IPv6")], node=NODE, settings=SETTINGS)
    assert list(elements(piece, "service-ips-v6")) == ["fd00:43::20 . tcp . 80"]
    endpoint = chain(piece, "endpoint6")
    assert endpoint.rules[-1] == "meta l4proto tcp dnat ip6 to [fd00:42::5]:8080"
    assert ":" not in endpoint.name


def test_host_ports() -> None:
    pod = {"metadata": {"name": "p", "namespace": "default"},
           "spec": {"nodeName": NODE, "containers": [{"ports": [
               {"containerPort": 80, "hostPort": 8080}, {"containerPort": 53, "hostPort": 53, "protocol": "UDP",
                                                         "hostIP": "192.0.2.1"}, {"containerPort": 9090}]}]},
           "status": {"phase": "Running", "podIP": "10.42.0.9", "podIPs": [{"ip": "10.42.0.9"}]}}
    piece = proxyrules.hostport_piece(pod, node=NODE)
    assert set(elements(piece, "hostports")) == {"tcp . 8080"}
    assert set(elements(piece, "hostip-ports")) == {"192.0.2.1 . udp . 53"}
    tcp = next(c for c in piece.chains if c.name.endswith("/tcp/8080"))  # type: ignore[union-attr]
    assert tcp.rules[-1] == "meta l4proto tcp dnat ip to 10.42.0.9:80"
    assert proxyrules.hostport_piece(pod, node="n2") is None
    done = copy.deepcopy(pod)
    done["status"]["phase"] = "Succeeded"
    assert proxyrules.hostport_piece(done, node=NODE) is None
    no_ip = copy.deepcopy(pod)
    no_ip["status"] = {"phase": "Pending"}
    assert proxyrules.hostport_piece(no_ip, node=NODE) is None


def test_static_piece_and_ownership() -> None:
    piece = proxyrules.static_piece(SETTINGS)
    hooks = {c.name: c.hook for c in piece.chains if c.hook is not None}
    assert hooks["nat-prerouting"] == nft.Hook("nat", "prerouting", -100)
    assert hooks["filter-output-post-dnat"].priority > -100 > hooks["filter-output"].priority  # type: ignore[union-attr]
    egress = next(c for c in piece.chains if c.name == "pod-egress")
    assert egress.rules == ("ip saddr 10.42.0.0/16 ip daddr != 10.42.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",)
    for c in piece.chains:
        assert proxyrules.owns(c.name)
    for s in piece.sets:
        assert proxyrules.owns(s.name)
    assert proxyrules.owns(proxyrules.object_name("endpoint6", "a/b/tcp/__fd00..1/80"))
    for other in ("policy-ingress", "policy-abc-default/deny", "edgekube-foo", "service", "endpoints"):
        assert not proxyrules.owns(other)
    assert len(proxyrules.object_name("service", "x" * 400)) == proxyrules.NAME_MAX


# --- transactions ---------------------------------------------------------------------------------


def test_transaction_orders_operations_whatever_order_they_were_added_in() -> None:
    tx = nft.Transaction()
    tx.add_element(nft.Element("m", "tcp . 80", "goto c"))
    tx.add_element(nft.Element("ips", "10.43.0.1"))
    tx.delete_set("old", kind="set")
    tx.add_rules(nft.Chain("c", rules=("accept",)))
    tx.delete_element("m", "tcp . 81")
    tx.flush_chain("c")
    tx.add_chain(nft.Chain("b", hook=nft.Hook("nat", "output", -100), comment="base"))
    tx.add_chain(nft.Chain("c"))
    tx.add_set(nft.NamedSet("ips", "ipv4_addr"))
    tx.add_table()
    assert tx.text().splitlines() == [
        "delete element inet edgekube m { tcp . 81 }",
        "flush chain inet edgekube c",
        "table inet edgekube {",
        f"comment {nft._quote(nft._COMMENT)}",
        "set ips {", "type ipv4_addr ;", "elements = { 10.43.0.1 }", "}",
        "chain c {", "accept", "}",
        "chain b {", 'comment "base"', "type nat hook output priority -100 ;", "}",
        "}",
        "add element inet edgekube m { tcp . 80 : goto c }",
        "delete set inet edgekube old",
    ]
    assert not nft.Transaction()


# --- LoadBalancer status --------------------------------------------------------------------------


def test_load_balancer_addresses_and_port_holders() -> None:
    nodes = [
        {"status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.5"}, {"type": "Hostname", "address": "a"}],
                    "conditions": [{"type": "Ready", "status": "True"}]}},
        {"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.7"}, {"type": "ExternalIP", "address": "203.0.113.7"}],
                    "conditions": [{"type": "Ready", "status": "True"}]}},
        {"status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.9"}],
                    "conditions": [{"type": "Ready", "status": "Unknown"}]}},
    ]
    assert servicelb.node_addresses(nodes) == ["192.168.1.5", "203.0.113.7"]
    first = svc("first", type="LoadBalancer")
    second = svc("second", type="LoadBalancer")
    second["metadata"]["creationTimestamp"] = "2024-02-01T00:00:00Z"
    udp = svc("udp", type="LoadBalancer", ports=[{"port": 80, "protocol": "UDP"}])
    classed = svc("classed", type="LoadBalancer", loadBalancerClass="example.com/lb")
    assert servicelb.holders([second, first, udp, classed]) == {"default/first": True, "default/second": False,
                                                                "default/udp": True}
