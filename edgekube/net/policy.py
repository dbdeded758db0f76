"""NetworkPolicy (networking.k8s.io/v1) compiled to nftables chains, as k3s enforces it with
kube-router's policy controller: one part of edgekube's nftables table.

**Semantics** are upstream's (the API reference of NetworkPolicy):
- A pod is isolated for ingress when some policy of its namespace selects it with `Ingress` in
  its policy types, and for egress likewise with `Egress`. Policy types default to `Ingress`,
  plus `Egress` when the policy has egress rules. A pod no policy isolates is open.
- Traffic to (from) an isolated pod passes when any rule of any policy selecting it allows it:
  rules are or-ed, and within a rule the peers are or-ed and the ports are or-ed. A rule with no
  peers allows every peer; with no ports, every port. A policy with no rules isolates only (the
  "default deny"). Replies to allowed traffic pass (conntrack: established and related).
- Peers: `podSelector` alone picks pods of the policy's namespace; `namespaceSelector` alone every
  pod of the matching namespaces; both together the matching pods of the matching namespaces;
  `ipBlock` a CIDR minus its `except` CIDRs. Ports: a number or a name (a container port of the
  destination pod: for ingress the isolated pod, for egress each peer pod; a name no container
  declares matches nothing), a protocol (TCP by default; UDP, SCTP), and `endPort` for a range.
- hostNetwork pods are neither isolated nor peers (they have the node's address). The node itself
  always reaches its pods (the kubelet's probes), as every CNI allows.

**Where the rules hook.** Pod-to-pod traffic on the node's bridge passes the inet `forward` hook
(the pod network turns on bridge-nf-call-iptables in the node's namespace), after the service
proxy's DNAT (so a Service's traffic is judged by the pod it reaches) and before its SNAT (so the
source is the client's own address). Traffic from a pod to the node itself (the in-process
cluster DNS answers on the node's pod gateway) passes the `input` hook instead, where only the
egress side applies. The node's own traffic to pods (`output`) is never filtered.

**Chains.** Two base chains, `policy-forward` and `policy-input`, accept established traffic,
then dispatch by address through four verdict maps (`policy-in4`, `policy-in6`, `policy-out4`,
`policy-out6`) to one chain per isolated pod and direction: `policy-out-<id>` (egress of the
source pod) and `policy-in-<id>` (ingress of the destination pod). A pod chain `return`s for
allowed traffic (so that the egress check of the source is followed by the ingress check of the
destination) and ends with a reject, as kube-router does, so that a refused client fails at once
instead of waiting out its timeout.

**Who may be asked.** `compile_plan` is pure: it takes the pods, namespaces and policies as the
informers hold them and gives a `Plan`; `pieces` turns a plan into pieces of the table, one per
isolated pod plus the skeleton, which `net/policysync.py` hands to its own `nft.Fragment` of the
table the service proxy shares: only what changed is written, in atomic batches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from edgekube.api import labels
from edgekube.net import nft

JSON = dict[str, Any]
INGRESS = "Ingress"
EGRESS = "Egress"
PROTOCOLS = ("TCP", "UDP", "SCTP")
CHAIN_PREFIX = "policy-"


@dataclasses.dataclass(frozen=True)
class Pod:
    """What the policies need of one pod: where it is, its labels, its addresses, its ports."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    ips: tuple[str, ...]
    ports: Mapping[str, tuple[tuple[str, int], ...]]  # container port name -> ((protocol, number), ...)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True)
class Ports:
    """One protocol's destination ports: `ranges` of (first, last); empty = every port."""

    protocol: str
    ranges: tuple[tuple[int, int], ...] = ()


@dataclasses.dataclass(frozen=True)
class Peers:
    """Addresses a rule allows: pod addresses, and CIDRs with their exceptions. `everyone`: any."""

    everyone: bool = False
    addresses: tuple[str, ...] = ()
    blocks: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (cidr, except cidrs)


@dataclasses.dataclass(frozen=True)
class Rule:
    """Traffic from/to `peers` on `ports` (an empty tuple: every port and protocol)."""

    peers: Peers
    ports: tuple[Ports, ...] = ()


@dataclasses.dataclass(frozen=True)
class PodRules:
    pod: Pod
    rules: tuple[Rule, ...]  # empty: nothing is allowed


@dataclasses.dataclass(frozen=True)
class Plan:
    ingress: tuple[PodRules, ...] = ()
    egress: tuple[PodRules, ...] = ()


def pod_info(pod: Mapping[str, Any]) -> Pod | None:
    """The `Pod` of an API pod, or None when policies do not apply to it (no address yet,
    hostNetwork, finished)."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    if spec.get("hostNetwork") or status.get("phase") in ("Succeeded", "Failed"):
        return None
    ips = tuple(str(p.get("ip")) for p in status.get("podIPs") or [] if isinstance(p, Mapping) and p.get("ip"))
    if not ips and status.get("podIP"):
        ips = (str(status["podIP"]),)
    if not ips:
        return None
    ports: dict[str, list[tuple[str, int]]] = {}
    for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        for p in (c or {}).get("ports") or []:
            if isinstance(p, Mapping) and p.get("name") and isinstance(p.get("containerPort"), int):
                ports.setdefault(str(p["name"]), []).append((str(p.get("protocol") or "TCP"), int(p["containerPort"])))
    return Pod(namespace=str(meta.get("namespace") or ""), name=str(meta.get("name") or ""),
               labels=dict(meta.get("labels") or {}), ips=ips, ports={k: tuple(v) for k, v in ports.items()})


def policy_types(policy: Mapping[str, Any]) -> tuple[str, ...]:
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes")
    if types:
        return tuple(str(t) for t in types)
    return (INGRESS, EGRESS) if spec.get("egress") else (INGRESS,)


def _selector(raw: Any) -> labels.Selector:
    """A LabelSelector as a Selector; an invalid one (the API validates them) matches nothing."""
    try:
        return labels.from_label_selector(raw if isinstance(raw, Mapping) else {})
    except labels.SelectorError:
        return labels.Selector(nothing=True)


def compile_plan(*, pods: Iterable[Pod], namespaces: Mapping[str, Mapping[str, str]],
                 policies: Iterable[Mapping[str, Any]], local: Iterable[Pod] | None = None) -> Plan:
    """The chains to write. `pods`: every pod of the cluster (peers); `local`: the pods of this
    node (the ones isolated here; default: all); `namespaces`: each namespace's labels."""
    pods = list(pods)
    local_pods = pods if local is None else list(local)
    by_namespace: dict[str, list[Pod]] = {}
    for p in pods:
        by_namespace.setdefault(p.namespace, []).append(p)
    ingress: dict[str, list[Rule]] = {}
    egress: dict[str, list[Rule]] = {}
    isolated_pods: dict[str, Pod] = {}
    for policy in sorted(policies, key=lambda p: ((p.get("metadata") or {}).get("namespace", ""),
                                                  (p.get("metadata") or {}).get("name", ""))):
        ns = str((policy.get("metadata") or {}).get("namespace") or "")
        spec = policy.get("spec") or {}
        selected = [p for p in local_pods if p.namespace == ns and _selector(spec.get("podSelector")).matches(p.labels)]
        if not selected:
            continue
        types = policy_types(policy)
        for direction, into, field, peer_field in ((INGRESS, ingress, "ingress", "from"),
                                                   (EGRESS, egress, "egress", "to")):
            if direction not in types:
                continue
            for target in selected:
                isolated_pods[target.key] = target
                rules = into.setdefault(target.key, [])
                for raw in spec.get(field) or []:
                    rules.extend(_rules(raw or {}, peer_field=peer_field, direction=direction, policy_ns=ns,
                                        target=target, by_namespace=by_namespace, namespaces=namespaces))
    return Plan(
        ingress=tuple(PodRules(isolated_pods[k], tuple(v)) for k, v in sorted(ingress.items())),
        egress=tuple(PodRules(isolated_pods[k], tuple(v)) for k, v in sorted(egress.items())),
    )


def _rules(raw: Mapping[str, Any], *, peer_field: str, direction: str, policy_ns: str, target: Pod,
           by_namespace: Mapping[str, Sequence[Pod]], namespaces: Mapping[str, Mapping[str, str]]) -> list[Rule]:
    """One ingress/egress rule of a policy as `Rule`s for one isolated pod (more than one when
    named egress ports resolve differently on different peer pods)."""
    raw_peers = raw.get(peer_field) or []
    raw_ports = raw.get("ports") or []
    peer_pods: list[Pod] = []
    blocks: list[tuple[str, tuple[str, ...]]] = []
    for peer in raw_peers:
        peer = peer or {}
        if peer.get("ipBlock"):
            block = peer["ipBlock"]
            blocks.append((str(block.get("cidr")), tuple(str(c) for c in block.get("except") or [])))
            continue
        if "namespaceSelector" in peer:
            ns_sel = _selector(peer.get("namespaceSelector"))
            candidate_ns = [n for n, lbl in namespaces.items() if ns_sel.matches(lbl)]
        else:
            candidate_ns = [policy_ns]
        pod_sel = _selector(peer["podSelector"]) if "podSelector" in peer else labels.Selector()
        for n in candidate_ns:
            peer_pods.extend(p for p in by_namespace.get(n, ()) if pod_sel.matches(p.labels))
    everyone = not raw_peers
    named = any(isinstance((p or {}).get("port"), str) for p in raw_ports)
    if direction == EGRESS and named and not everyone:
        # A named port is the peer pod's: one rule per peer pod, with that pod's numbers.
        out = [Rule(Peers(addresses=pod.ips), _ports(raw_ports, owner=pod)) for pod in peer_pods]
        if blocks:  # a name means nothing for an address block: only its numbered ports apply
            out.append(Rule(Peers(blocks=tuple(blocks)), _ports(raw_ports, owner=None)))
        return [r for r in out if r.ports or not raw_ports]
    owner = target if direction == INGRESS else None
    ports = _ports(raw_ports, owner=owner)
    if raw_ports and not ports:
        return []  # every port named, none resolved: the rule allows nothing
    addresses = tuple(sorted({ip for pod in peer_pods for ip in pod.ips}))
    if not everyone and not addresses and not blocks:
        return []
    return [Rule(Peers(everyone=everyone, addresses=addresses, blocks=tuple(blocks)), ports)]


def _ports(raw_ports: Sequence[Any], *, owner: Pod | None) -> tuple[Ports, ...]:
    """The rule's ports grouped by protocol; named ports resolved on `owner` (unresolved: none)."""
    by_proto: dict[str, set[tuple[int, int]]] = {}
    everything: set[str] = set()
    for raw in raw_ports:
        raw = raw or {}
        proto = str(raw.get("protocol") or "TCP")
        port = raw.get("port")
        if port is None:
            everything.add(proto)
        elif isinstance(port, str):
            for p_proto, number in (owner.ports.get(port, ()) if owner is not None else ()):
                if p_proto == proto:
                    by_proto.setdefault(proto, set()).add((number, number))
        else:
            end = raw.get("endPort")
            last = int(end) if isinstance(end, int) and end >= int(port) else int(port)
            by_proto.setdefault(proto, set()).add((int(port), last))
    out = [Ports(proto) for proto in sorted(everything)]
    out += [Ports(proto, tuple(sorted(r))) for proto, r in sorted(by_proto.items()) if proto not in everything]
    return tuple(out)


# --- nftables ------------------------------------------------------------------------------------

SKELETON = ""  # the piece every plan has: base chains and verdict maps
MAPS = {("in", "ip"): "policy-in4", ("in", "ip6"): "policy-in6", ("out", "ip"): "policy-out4", ("out", "ip6"): "policy-out6"}
_ADDR_TYPES = {"ip": "ipv4_addr", "ip6": "ipv6_addr"}
FILTER_PRIORITY = 0  # `filter`: after the service proxy's DNAT (dstnat, -100), before its SNAT


def owns(name: str) -> bool:
    """The names of the table that NetworkPolicy writes (the other owners never use them)."""
    return name.startswith(CHAIN_PREFIX)


def chain_id(pod: Pod) -> str:
    """A short stable name for a pod's chains (nft names are limited and must be plain)."""
    return hashlib.sha256(pod.key.encode()).hexdigest()[:16]


def _family(address: str) -> str:
    return "ip6" if ipaddress.ip_network(address, strict=False).version == 6 else "ip"


def _by_family(items: Iterable[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        out.setdefault(_family(item), []).append(item)
    return out


def _set(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _port_matches(ports: tuple[Ports, ...]) -> list[str]:
    if not ports:
        return [""]
    out = []
    for p in ports:
        proto = f"meta l4proto {p.protocol.lower()}"
        if not p.ranges:
            out.append(proto)
        else:
            spans = [str(a) if a == b else f"{a}-{b}" for a, b in p.ranges]
            out.append(f"{proto} th dport {_set(spans)}")
    return out


def _rule_lines(rule: Rule, *, side: str) -> list[str]:
    """nft matches (without the verdict) for one rule; `side` is saddr (ingress) or daddr."""
    peer_matches: list[str] = []
    if rule.peers.everyone:
        peer_matches.append("")
    for fam, addrs in sorted(_by_family(rule.peers.addresses).items()):
        peer_matches.append(f"{fam} {side} {_set(sorted(addrs))}")
    for cidr, excepts in rule.peers.blocks:
        fam = _family(cidr)
        match = f"{fam} {side} {cidr}"
        if excepts:
            match += f" {fam} {side} != {_set(sorted(excepts))}"
        peer_matches.append(match)
    lines = []
    for peer in peer_matches:
        for port in _port_matches(rule.ports):
            lines.append(" ".join(x for x in (peer, port) if x))
    return lines


def chain_rules(rules: tuple[Rule, ...], *, direction: str) -> tuple[str, ...]:
    """A pod chain's rules: `return` for what is allowed, then the reject."""
    side = "saddr" if direction == "in" else "daddr"
    body = [f"{line} return".strip() for rule in rules for line in _rule_lines(rule, side=side)]
    return (*body, "reject")


def skeleton() -> nft.Piece:
    """The base chains and the verdict maps that send an isolated pod's traffic to its chains."""
    maps = tuple(nft.NamedSet(name, key=_ADDR_TYPES[fam], value="verdict",
                              comment=f"isolated pods' {'ingress' if d == 'in' else 'egress'} chains")
                 for (d, fam), name in MAPS.items())
    dispatch_out = [f"{fam} saddr vmap @{MAPS[('out', fam)]}" for fam in ("ip", "ip6")]
    dispatch_in = [f"{fam} daddr vmap @{MAPS[('in', fam)]}" for fam in ("ip", "ip6")]
    established = "ct state established,related accept"
    return nft.Piece(
        chains=(nft.Chain(f"{CHAIN_PREFIX}forward", (established, *dispatch_out, *dispatch_in),
                          hook=nft.Hook("filter", "forward", FILTER_PRIORITY)),
                nft.Chain(f"{CHAIN_PREFIX}input", (established, *dispatch_out),
                          hook=nft.Hook("filter", "input", FILTER_PRIORITY))),
        sets=maps)


def pieces(plan: Plan) -> dict[str, nft.Piece]:
    """The plan as pieces of the table, by pod (`namespace/name`) plus the skeleton: a pod's
    piece changes only when its own rules or addresses do, so a change is a small batch."""
    chains: dict[str, list[nft.Chain]] = {}
    elements: dict[str, list[nft.Element]] = {}
    for direction, rules in (("in", plan.ingress), ("out", plan.egress)):
        for pr in rules:
            name = f"{CHAIN_PREFIX}{direction}-{chain_id(pr.pod)}"
            chains.setdefault(pr.pod.key, []).append(nft.Chain(name, chain_rules(pr.rules, direction=direction)))
            elements.setdefault(pr.pod.key, []).extend(
                nft.Element(MAPS[(direction, _family(ip))], ip, f"jump {name}") for ip in pr.pod.ips)
    out = {SKELETON: skeleton()}
    for key in chains:
        out[key] = nft.Piece(chains=tuple(chains[key]), elements=tuple(elements[key]), rank=key)
    return out
