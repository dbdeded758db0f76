"""The service proxy's rules: pure functions from Services, EndpointSlices and Pods to table pieces.

The layout follows upstream's nftables kube-proxy (pkg/proxy/nftables), in one `inet` table
(both IP families; IPv6 objects carry a `-v6` or `6` in their names):

    base chains (hook, priority)           jumps to
    filter-prerouting (filter, prerouting, -110)  firewall-check (new connections)
    nat-prerouting   (nat, prerouting, -100)  services
    nat-output       (nat, output, -100)      services
    nat-postrouting  (nat, postrouting, 100)  masquerading, pod-egress
    filter-input     (filter, input, -110)    service-endpoints-check (new connections);
                                              drop of remote packets to 127/8 that were not DNATed
    filter-forward   (filter, forward, -110)  service-endpoints-check, cluster-ips-check
    filter-output    (filter, output, -110)   service-endpoints-check, firewall-check
    filter-output-post-dnat (filter, output, -90)  cluster-ips-check

- `services` dispatches on verdict maps: `service-ips` (cluster, external and load-balancer IP .
  protocol . port), `hostip-ports` and `hostports` (a pod's hostPort, on one or on every local
  address), `service-nodeports` (protocol . port on every local address, 127.0.0.1 included:
  edgekube sets route_localnet, as upstream's iptables mode does for localhost NodePorts).
- Per service port: `service-<hash>-<ns>/<name>/<proto>/<port>` holds the Cluster-policy
  endpoints, `local-...` the Local-policy ones, `external-...` what external traffic (NodePort,
  LoadBalancer, externalIPs) goes through first. Load is spread by `numgen random mod` rules (the
  i-th of n endpoints taken with probability 1/(n-i); see `_spread`);
  ClientIP affinity keeps one set per endpoint (`affinity-...`, `update @set { ip saddr }` with
  the Service's timeout), checked before the spread.
- Per endpoint: `endpoint-...__<ip>/<port>`: marks hairpin traffic (a pod reaching itself
  through its Service) for masquerade, records affinity, DNATs.
- No endpoints: `no-endpoint-services` / `no-endpoint-nodeports` send new connections to
  `reject-chain` (ICMP port unreachable: the client fails at once), or drop them when only the
  Local policy has nothing here. `cluster-ips-check` rejects ports a cluster IP does not serve
  and drops addresses of the service range that no Service holds.
- Masquerade: `mark-for-masquerade` sets mark 0x4000; `masquerading` masquerades marked packets
  (cluster IPs reached from outside the pod CIDR, external traffic under the Cluster policy,
  hairpin, host ports reached from the node itself). `pod-egress` masquerades pod traffic that
  leaves the cluster CIDR.
- `loadBalancerSourceRanges`: `filter-prerouting` (before DNAT) looks the load-balancer IP and
  port up in `firewall-ips`, whose `firewall-...` chain drops sources outside the ranges.
- Host ports (k3s and the CNI portmap plugin do the same): per pod port a
  `hostport-<hash>-<ns>/<pod>/<proto>/<hostPort>` chain that DNATs to the pod.

Chain and set names carry a hash of what they stand for, then that text, so they are unique and
readable (`nft list table inet edgekube` shows which Service a chain belongs to).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from edgekube.net import nft, services
from edgekube.net.services import ServicePort

JSON = dict[str, Any]
MASQ_MARK = "0x4000"
NAME_MAX = 200  # nft allows 256; the rest is room for prefixes
_PREFIXES = ("service", "local", "external", "endpoint", "affinity", "hostport", "firewall")


@dataclasses.dataclass(frozen=True)
class Settings:
    cluster_cidrs: tuple[str, ...] = ("10.42.0.0/16",)  # pod traffic: saddr in these
    service_cidrs: tuple[str, ...] = ("10.43.0.0/16",)


@dataclasses.dataclass(frozen=True)
class _Family:
    name: str
    ip: str  # nft's address expression
    addr: str  # nft's address type
    suffix: str  # in map names
    tag: str  # in per-service chain prefixes
    loopback: str

    def cidrs(self, cidrs: tuple[str, ...]) -> tuple[str, ...]:
        return _of_family(self.name, cidrs)

    def map(self, base: str) -> str:
        return base + self.suffix


@functools.lru_cache(maxsize=64)
def _of_family(family: str, cidrs: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(c for c in cidrs if services.cidr_family(c) == family)


V4 = _Family(services.IPV4, "ip", "ipv4_addr", "", "", "127.0.0.0/8")
V6 = _Family(services.IPV6, "ip6", "ipv6_addr", "-v6", "6", "::1")
FAMILIES = {f.name: f for f in (V4, V6)}

STATIC_CHAINS = frozenset({
    "filter-prerouting", "firewall-check", "filter-input", "filter-forward", "filter-output", "filter-output-post-dnat", "nat-prerouting", "nat-output",
    "nat-postrouting", "services", "service-endpoints-check", "cluster-ips-check", "reject-chain",
    "mark-for-masquerade", "masquerading", "pod-egress"})
_MAP_BASES = ("service-ips", "service-nodeports", "no-endpoint-services", "no-endpoint-nodeports", "cluster-ips",
              "hostports", "hostip-ports", "firewall-ips")
STATIC_SETS = frozenset(f.map(b) for f in FAMILIES.values() for b in _MAP_BASES)


def owns(name: str) -> bool:
    """Whether a chain or set name is the proxy's (the rest of the table belongs to others)."""
    if name in STATIC_CHAINS or name in STATIC_SETS:
        return True
    head = name.split("-", 1)[0]
    return head.rstrip("6") in _PREFIXES and "/" in name


def object_name(prefix: str, text: str, *, salt: str = "") -> str:
    """`prefix-HASH-text`, truncated to NAME_MAX (the hash keeps truncated names unique)."""
    # Base32 turns each 5 bytes into 8 characters: the first 5 bytes give the 8 we keep.
    digest = hashlib.sha256((text + salt).encode()).digest()[:5]
    name = f"{prefix}-{base64.b32encode(digest).decode()}-{text}"
    return name if len(name) <= NAME_MAX else name[:NAME_MAX - 3] + "..."


# --- the fixed part ---------------------------------------------------------------------------


def static_piece(settings: Settings) -> nft.Piece:
    ct_new = "ct state new"
    chains = [
        # Before DNAT: loadBalancerSourceRanges are about the address the client asked for.
        nft.Chain("filter-prerouting", hook=nft.Hook("filter", "prerouting", -110), rules=(
            f"{ct_new} jump firewall-check",)),
        nft.Chain("filter-input", hook=nft.Hook("filter", "input", -110), rules=(
            f"{ct_new} jump service-endpoints-check",
            # route_localnet (for 127.0.0.1 NodePorts) would otherwise let other hosts reach
            # services bound to loopback (CVE-2020-8558): such packets are dropped unless DNATed.
            "ip daddr 127.0.0.0/8 ip saddr != 127.0.0.0/8 ct state new,invalid,untracked ct status ! dnat drop",
        )),
        nft.Chain("filter-forward", hook=nft.Hook("filter", "forward", -110), rules=(
            f"{ct_new} jump service-endpoints-check", f"{ct_new} jump cluster-ips-check")),
        nft.Chain("filter-output", hook=nft.Hook("filter", "output", -110), rules=(
            f"{ct_new} jump service-endpoints-check", f"{ct_new} jump firewall-check")),
        nft.Chain("filter-output-post-dnat", hook=nft.Hook("filter", "output", -90), rules=(
            f"{ct_new} jump cluster-ips-check",)),
        nft.Chain("nat-prerouting", hook=nft.Hook("nat", "prerouting", -100), rules=("jump services",)),
        nft.Chain("nat-output", hook=nft.Hook("nat", "output", -100), rules=("jump services",)),
        nft.Chain("nat-postrouting", hook=nft.Hook("nat", "postrouting", 100), rules=(
            "jump masquerading", "jump pod-egress")),
        nft.Chain("reject-chain", rules=("reject",), comment="services with no endpoints"),
        nft.Chain("mark-for-masquerade", rules=(f"meta mark set meta mark | {MASQ_MARK}",)),
        nft.Chain("masquerading", rules=(
            f"meta mark & {MASQ_MARK} == 0 return",
            f"meta mark set meta mark ^ {MASQ_MARK}",
            "masquerade fully-random")),
    ]
    dispatch: list[str] = []
    checks: list[str] = []
    cluster_ips: list[str] = []
    firewall: list[str] = []
    egress: list[str] = []
    sets: list[nft.NamedSet] = []
    for f in FAMILIES.values():
        triple = f"{f.addr} . inet_proto . inet_service"
        local = f"fib daddr type local meta nfproto {f.name.lower()}"
        if f is V6:
            local += f" ip6 daddr != {f.loopback}"  # IPv6 has no route_localnet: no ::1 NodePorts
        sets += [
            nft.NamedSet(f.map("service-ips"), triple, "verdict", comment="cluster, external and load-balancer IPs"),
            nft.NamedSet(f.map("hostip-ports"), triple, "verdict", comment="host ports on one address"),
            nft.NamedSet(f.map("hostports"), "inet_proto . inet_service", "verdict", comment="host ports"),
            nft.NamedSet(f.map("service-nodeports"), "inet_proto . inet_service", "verdict", comment="NodePorts"),
            nft.NamedSet(f.map("no-endpoint-services"), triple, "verdict"),
            nft.NamedSet(f.map("no-endpoint-nodeports"), "inet_proto . inet_service", "verdict"),
            nft.NamedSet(f.map("cluster-ips"), f.addr, comment="every Service's cluster IP"),
            nft.NamedSet(f.map("firewall-ips"), triple, "verdict", comment="load-balancer IPs with source ranges"),
        ]
        key = f"{f.ip} daddr . meta l4proto . th dport"
        dispatch += [
            f"{key} vmap @{f.map('service-ips')}",
            f"{key} vmap @{f.map('hostip-ports')}",
            f"{local} meta l4proto . th dport vmap @{f.map('hostports')}",
            f"{local} meta l4proto . th dport vmap @{f.map('service-nodeports')}",
        ]
        checks += [
            f"{key} vmap @{f.map('no-endpoint-services')}",
            f"{local} meta l4proto . th dport vmap @{f.map('no-endpoint-nodeports')}",
        ]
        firewall.append(f"{key} vmap @{f.map('firewall-ips')}")
        cluster_ips.append(f"{f.ip} daddr @{f.map('cluster-ips')} reject")
        cluster_ips += [f"{f.ip} daddr {cidr} drop" for cidr in f.cidrs(settings.service_cidrs)]
        egress += [f"{f.ip} saddr {cidr} {f.ip} daddr != {cidr} {f.ip} daddr != "
                   f"{'224.0.0.0/4' if f is V4 else 'ff00::/8'} masquerade fully-random"
                   for cidr in f.cidrs(settings.cluster_cidrs)]
    chains += [
        nft.Chain("services", rules=tuple(dispatch)),
        nft.Chain("service-endpoints-check", rules=tuple(checks)),
        nft.Chain("cluster-ips-check", rules=tuple(cluster_ips)),
        nft.Chain("firewall-check", rules=tuple(firewall)),
        nft.Chain("pod-egress", rules=tuple(egress), comment="pods reaching beyond the cluster CIDR"),
    ]
    return nft.Piece(chains=tuple(chains), sets=tuple(sets))


# --- Services ---------------------------------------------------------------------------------


def rank(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('creationTimestamp') or '~'}|{meta.get('namespace')}/{meta.get('name')}"


def _target(f: _Family, ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if f is V6 else f"{ip}:{port}"


class _Builder:
    def __init__(self) -> None:
        self.chains: dict[str, nft.Chain] = {}
        self.sets: dict[str, nft.NamedSet] = {}
        self.elements: list[nft.Element] = []

    def chain(self, name: str, rules: Iterable[str]) -> None:
        self.chains[name] = nft.Chain(name, rules=tuple(rules))

    def element(self, set_name: str, key: str, value: str = "") -> None:
        self.elements.append(nft.Element(set_name, key, value))

    def piece(self, rank: str) -> nft.Piece | None:
        if not (self.chains or self.sets or self.elements):
            return None
        return nft.Piece(chains=tuple(self.chains.values()), sets=tuple(self.sets.values()),
                         elements=tuple(self.elements), rank=rank)


Frontends = dict[tuple[str, int], frozenset[tuple[str, int]]]


def service_piece(svc: Mapping[str, Any], slices: Iterable[Mapping[str, Any]], *, node: str,
                  settings: Settings) -> nft.Piece | None:
    """Everything a Service puts in the table (None for headless and ExternalName Services)."""
    return service_rules(svc, slices, node=node, settings=settings)[0]


def service_rules(svc: Mapping[str, Any], slices: Iterable[Mapping[str, Any]], *, node: str,
                  settings: Settings) -> tuple[nft.Piece | None, Frontends]:
    """A Service's piece of the table, and the addresses it answers UDP on (cluster, external and
    load-balancer IP and port; (`*`, port) for a NodePort), each with the endpoints its traffic
    may reach: what the conntrack cleanup checks UDP flows against (net/conntrack.py)."""
    slices = list(slices)
    b = _Builder()
    udp: Frontends = {}
    for port in services.service_ports(svc):
        cat = services.categorize(services.endpoints(port, slices), port, node=node)
        _service_port(b, port, cat, settings=settings)
        if port.protocol == "udp":
            valid = frozenset((e.ip, e.port) for e in cat.reachable)
            for ip in (port.cluster_ip, *port.external_ips, *port.load_balancer_ips):
                udp[(ip, port.port)] = valid
            if port.node_port:
                udp[("*", port.node_port)] = valid
    return b.piece(rank(svc)), udp


def _service_port(b: _Builder, sp: ServicePort, cat: services.Categorized, *, settings: Settings) -> None:
    f = FAMILIES[sp.family]
    base = f"{sp.namespace}/{sp.name}/{sp.protocol}/{sp.port_name}"
    cluster_chain = object_name(f"service{f.tag}", base)
    local_chain = object_name(f"local{f.tag}", base)
    external_chain = object_name(f"external{f.tag}", base)

    def endpoint_text(e: services.Endpoint) -> str:
        return f"{base}__{e.ip.replace(':', '.')}/{e.port}"

    endpoint_names = {e: object_name(f"endpoint{f.tag}", endpoint_text(e)) for e in cat.reachable}

    def endpoint_chain(e: services.Endpoint) -> str:
        return endpoint_names[e]

    def affinity_set(e: services.Endpoint) -> str:
        # The timeout is part of the name: a set's timeout cannot change, a new set replaces it.
        return object_name(f"affinity{f.tag}", endpoint_text(e), salt=f"#{sp.affinity_seconds}")

    uses_cluster = bool(cat.cluster) and sp.uses_cluster_endpoints
    uses_local = bool(cat.local) and sp.uses_local_endpoints
    internal_chain = local_chain if sp.internal_local else cluster_chain
    has_internal = cat.has_any and (not sp.internal_local or bool(cat.local))
    external_policy_chain = local_chain if sp.external_policy_local else cluster_chain
    has_external = cat.has_any and (not sp.external_policy_local or bool(cat.local))
    uses_external_chain = cat.has_any and sp.externally_accessible
    if not cat.has_any:
        internal_verdict = external_verdict = "goto reject-chain"
    else:
        internal_verdict = external_verdict = "drop"  # Local policy, no endpoint on this node

    key = f"{sp.protocol} . {sp.port}"
    b.element(f.map("cluster-ips"), sp.cluster_ip)
    if has_internal:
        b.element(f.map("service-ips"), f"{sp.cluster_ip} . {key}", f"goto {internal_chain}")
    else:
        b.element(f.map("no-endpoint-services"), f"{sp.cluster_ip} . {key}", internal_verdict)
    for ip in (*sp.external_ips, *sp.load_balancer_ips):
        if uses_external_chain:
            b.element(f.map("service-ips"), f"{ip} . {key}", f"goto {external_chain}")
        if not has_external:
            b.element(f.map("no-endpoint-services"), f"{ip} . {key}", external_verdict)
    if sp.source_ranges and sp.load_balancer_ips:
        # As upstream: the ranges guard the load-balancer IPs (not NodePorts or external IPs).
        # The node itself always passes (upstream lets it when a range holds its address).
        firewall_chain = object_name(f"firewall{f.tag}", base)
        b.chain(firewall_chain, ["fib saddr type local return",
                                 f"{f.ip} saddr != {{ {', '.join(sp.source_ranges)} }} drop"])
        for ip in sp.load_balancer_ips:
            b.element(f.map("firewall-ips"), f"{ip} . {key}", f"goto {firewall_chain}")
    if sp.node_port:
        if uses_external_chain:
            b.element(f.map("service-nodeports"), f"{sp.protocol} . {sp.node_port}", f"goto {external_chain}")
        if not has_external:
            b.element(f.map("no-endpoint-nodeports"), f"{sp.protocol} . {sp.node_port}", external_verdict)

    rules: dict[str, list[str]] = {}
    if uses_cluster:
        rules[cluster_chain] = []
    if uses_local:
        rules[local_chain] = []
    if has_internal:
        # Cluster IP traffic from outside the pod network (the node, a host routing the service
        # range here) is masqueraded, so the endpoint's answer comes back this way.
        for cidr in f.cidrs(settings.cluster_cidrs):
            rules[internal_chain].append(f"{f.ip} daddr {sp.cluster_ip} {sp.protocol} dport {sp.port} "
                                         f"{f.ip} saddr != {cidr} jump mark-for-masquerade")
    if uses_external_chain:
        ext: list[str] = []
        if not sp.external_policy_local:
            ext.append("jump mark-for-masquerade")  # it may leave for another node: answers must return here
        else:
            # Pods and the node itself reach external addresses as if through an outside load
            # balancer: under neither policy, so they use every endpoint (as upstream).
            ext += [f"{f.ip} saddr {cidr} goto {cluster_chain}" for cidr in f.cidrs(settings.cluster_cidrs)]
            ext += ["fib saddr type local jump mark-for-masquerade", f"fib saddr type local goto {cluster_chain}"]
        if has_external:
            ext.append(f"goto {external_policy_chain}")
        b.chain(external_chain, ext)
    for chain, eps in ((cluster_chain, cat.cluster if uses_cluster else ()),
                       (local_chain, cat.local if uses_local else ())):
        if not eps:
            continue
        if sp.affinity_seconds:
            rules[chain] += [f"{f.ip} saddr @{affinity_set(e)} goto {endpoint_chain(e)}" for e in eps]
        rules[chain] += _spread([endpoint_chain(e) for e in eps])
    for chain, body in rules.items():
        b.chain(chain, body)
    for e in cat.reachable:
        body = [f"{f.ip} saddr {e.ip} jump mark-for-masquerade"]  # hairpin: the answer must come back through here
        if sp.affinity_seconds:
            name = affinity_set(e)
            b.sets[name] = nft.NamedSet(name, f.addr, flags=("dynamic", "timeout"), timeout=sp.affinity_seconds,
                                        dynamic=True)
            body.append(f"update @{name} {{ {f.ip} saddr }}")
        body.append(f"meta l4proto {sp.protocol} dnat {f.ip} to {_target(f, e.ip, e.port)}")
        b.chain(endpoint_chain(e), body)


def _spread(targets: list[str]) -> list[str]:
    """Rules that send a new connection to one of `targets`, each as likely: the i-th of n is
    taken with probability 1/(n-i) (as upstream's iptables mode does it). Not upstream nftables'
    `numgen random mod n vmap { 0 : goto a, ... }`: each such inline map is an anonymous set, and
    the kernel binds the sets of one batch in a walk over the whole batch, so a full sync of
    1,000 Services spent most of its time there (quadratic); these rules cost nothing to load
    and a few numgen per connection (only a connection's first packet goes through NAT)."""
    n = len(targets)
    return [f"numgen random mod {n - i} == 0 goto {t}" for i, t in enumerate(targets[:-1])] + [f"goto {targets[-1]}"]


# --- host ports -------------------------------------------------------------------------------


def pod_host_ports(pod: Mapping[str, Any]) -> list[JSON]:
    """The container ports of a pod that ask for a host port."""
    spec = pod.get("spec") or {}
    out = []
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for p in (c.get("ports") or []) if isinstance(c, Mapping) else []:
            if isinstance(p, Mapping) and p.get("hostPort"):
                out.append(dict(p))
    return out


def hostport_piece(pod: Mapping[str, Any], *, node: str) -> nft.Piece | None:
    """The DNAT of a running pod's host ports on this node (None: it has none here)."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    meta = pod.get("metadata") or {}
    if spec.get("nodeName") != node or spec.get("hostNetwork") or status.get("phase") in ("Succeeded", "Failed"):
        return None
    pod_ips = [i.get("ip") for i in status.get("podIPs") or [] if isinstance(i, Mapping) and i.get("ip")]
    if not pod_ips and status.get("podIP"):
        pod_ips = [status["podIP"]]
    b = _Builder()
    for p in pod_host_ports(pod):
        protocol = str(p.get("protocol") or "TCP").lower()
        host_ip = str(p.get("hostIP") or "")
        if host_ip in ("0.0.0.0", "::"):
            host_ip = ""
        for pod_ip in pod_ips:
            fam = services.family_of(str(pod_ip))
            if fam is None or (host_ip and services.family_of(host_ip) != fam):
                continue
            f = FAMILIES[fam]
            chain = object_name(f"hostport{f.tag}", f"{meta.get('namespace')}/{meta.get('name')}/{protocol}/{p['hostPort']}")
            b.chain(chain, [
                f"{f.ip} saddr {pod_ip} jump mark-for-masquerade",  # hairpin
                "fib saddr type local jump mark-for-masquerade",  # from the node (127.0.0.1 included)
                f"meta l4proto {protocol} dnat {f.ip} to {_target(f, str(pod_ip), int(p.get('containerPort') or 0))}",
            ])
            if host_ip:
                b.element(f.map("hostip-ports"), f"{host_ip} . {protocol} . {p['hostPort']}", f"goto {chain}")
            else:
                b.element(f.map("hostports"), f"{protocol} . {p['hostPort']}", f"goto {chain}")
    return b.piece(rank(pod))


# --- what the kernel must support ---------------------------------------------------------------

PROBE = (
    ("the inet family with NAT chains (nft_nat, nft_chain_nat)",
     "add chain @T p-nat { type nat hook prerouting priority -100 ; }"),
    ("filter chains", "add chain @T p-filter { type filter hook forward priority -110 ; }"),
    ("verdict maps with concatenated keys", "add map @T p-map { type ipv4_addr . inet_proto . inet_service : verdict ; }"),
    ("dynamic sets with timeouts (session affinity)",
     "add set @T p-aff { type ipv4_addr ; flags dynamic,timeout ; timeout 10s ; }"),
    ("regular chains", "add chain @T p-chain"),
    ("conntrack matches (nft_ct)", "add rule @T p-filter ct state new ct status ! dnat accept"),
    ("fib lookups (nft_fib)", "add rule @T p-nat fib daddr type local meta l4proto . th dport vmap { tcp . 1 : goto p-chain }"),
    ("map lookups", "add rule @T p-nat ip daddr . meta l4proto . th dport vmap @p-map"),
    ("random numbers (nft_numgen)", "add rule @T p-chain numgen random mod 2 == 0 accept"),
    ("set updates from the packet path (nft_dynset)", "add rule @T p-chain update @p-aff { ip saddr }"),
    ("DNAT (nft_nat)", "add rule @T p-chain meta l4proto tcp dnat ip to 10.0.0.1:80"),
    ("reject (nft_reject)", "add rule @T p-filter reject"),
    ("postrouting NAT chains", "add chain @T p-post { type nat hook postrouting priority 100 ; }"),
    ("masquerade (nft_masq)", "add rule @T p-post masquerade fully-random"),
    ("packet marks", "add rule @T p-chain meta mark set meta mark | 0x4000"),
)
