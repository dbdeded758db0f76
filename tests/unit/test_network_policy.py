"""NetworkPolicy semantics (edgekube/net/policy.py) as plans, without a kernel; the kernel's
side is tests/integration/test_network_policy_nft.py."""

from __future__ import annotations

from typing import Any

from edgekube.net import policy


def pod(name: str, ns: str = "default", ip: str = "10.42.0.5", host_network: bool = False, phase: str = "Running",
        **labels: str) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"hostNetwork": host_network,
                     "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080},
                                                            {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]},
            "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]}}


def plan(pods: list[dict[str, Any]], *policies: dict[str, Any]) -> policy.Plan:
    infos = [p for p in (policy.pod_info(x) for x in pods) if p is not None]
    return policy.compile_plan(pods=infos, namespaces={"default": {}, "kube-system": {"k": "v"}},
                               policies=list(policies))


def np(spec: dict[str, Any], ns: str = "default") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": "p"}, "spec": spec}


def test_policy_types_default_as_upstream() -> None:
    assert policy.policy_types(np({"podSelector": {}})) == ("Ingress",)
    assert policy.policy_types(np({"podSelector": {}, "egress": [{}]})) == ("Ingress", "Egress")
    assert policy.policy_types(np({"podSelector": {}, "policyTypes": ["Egress"]})) == ("Egress",)


def test_pods_without_address_host_network_or_finished_are_left_out() -> None:
    assert policy.pod_info(pod("a", host_network=True)) is None
    assert policy.pod_info(pod("a", phase="Succeeded")) is None
    no_ip = pod("a")
    no_ip["status"] = {"phase": "Pending"}
    assert policy.pod_info(no_ip) is None


def test_default_deny_is_a_pod_with_no_rules_and_others_stay_open() -> None:
    p = plan([pod("a", app="x"), pod("b", ip="10.42.0.6")], np({"podSelector": {"matchLabels": {"app": "x"}}}))
    assert [(r.pod.name, r.rules) for r in p.ingress] == [("a", ())]
    assert p.egress == ()
    pieces = policy.pieces(p)
    name = f"policy-in-{policy.chain_id(p.ingress[0].pod)}"
    assert [(c.name, c.rules) for c in pieces["default/a"].chains] == [(name, ("reject",))]
    assert [(e.set, e.key, e.value) for e in pieces["default/a"].elements] == [("policy-in4", "10.42.0.5", f"jump {name}")]
    assert set(pieces) == {policy.SKELETON, "default/a"}


def test_an_empty_rule_allows_everything_and_rules_add_up() -> None:
    p = plan([pod("a")], np({"podSelector": {}, "ingress": [{}]}),
             np({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}))
    rules = p.ingress[0].rules
    assert rules[0] == policy.Rule(policy.Peers(everyone=True))
    assert rules[1] == policy.Rule(policy.Peers(everyone=True), (policy.Ports("TCP", ((80, 80),)),))
    body = policy.chain_rules(p.ingress[0].rules, direction="in")
    assert body == ("return", "meta l4proto tcp th dport 80 return", "reject")


def test_selectors_pick_peers_across_namespaces() -> None:
    pods = [pod("a", app="web"), pod("c1", ip="10.42.0.7", role="c"), pod("c2", "kube-system", "10.42.0.8", role="c")]
    same_ns = plan(pods, np({"podSelector": {"matchLabels": {"app": "web"}},
                             "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "c"}}}]}]}))
    assert same_ns.ingress[0].rules[0].peers.addresses == ("10.42.0.7",)
    both = plan(pods, np({"podSelector": {"matchLabels": {"app": "web"}},
                          "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"k": "v"}},
                                                 "podSelector": {"matchLabels": {"role": "c"}}}]}]}))
    assert both.ingress[0].rules[0].peers.addresses == ("10.42.0.8",)
    any_ns = plan(pods, np({"podSelector": {"matchLabels": {"app": "web"}},
                            "ingress": [{"from": [{"namespaceSelector": {}}]}]}))
    assert any_ns.ingress[0].rules[0].peers.addresses == ("10.42.0.5", "10.42.0.7", "10.42.0.8")


def test_a_selector_that_matches_nobody_allows_nothing() -> None:
    p = plan([pod("a")], np({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"x": "y"}}}]}]}))
    assert p.ingress[0].rules == ()


def test_named_ports_resolve_on_the_right_pod() -> None:
    pods = [pod("a", app="web"), pod("b", ip="10.42.0.6")]
    ingress = plan(pods, np({"podSelector": {"matchLabels": {"app": "web"}},
                             "ingress": [{"ports": [{"port": "http"}, {"port": "dns", "protocol": "UDP"}]}]}))
    assert ingress.ingress[0].rules[0].ports == (policy.Ports("TCP", ((8080, 8080),)), policy.Ports("UDP", ((53, 53),)))
    unknown = plan(pods, np({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": "nope"}]}]}))
    assert unknown.ingress[0].rules == ()
    egress = plan(pods, np({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
                            "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": "http"}]}]}))
    assert [r.peers.addresses for r in egress.egress[0].rules] == [("10.42.0.5",), ("10.42.0.6",)]


def test_ip_blocks_and_dual_stack_render() -> None:
    pods = [pod("a"), pod("six", ip="fd00::5")]
    p = plan(pods, np({"podSelector": {}, "ingress": [{"from": [
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.0.0/16"]}},
        {"ipBlock": {"cidr": "fd00::/8"}}], "ports": [{"protocol": "SCTP"}]}]}))
    body = policy.chain_rules(p.ingress[0].rules, direction="in")
    assert body == ("ip saddr 10.0.0.0/8 ip saddr != { 10.1.0.0/16, 10.2.0.0/16 } meta l4proto sctp return",
                    "ip6 saddr fd00::/8 meta l4proto sctp return", "reject")
    six = policy.pieces(p)["default/six"]
    assert [(e.set, e.key) for e in six.elements] == [("policy-in6", "fd00::5")]
