"""What the service proxy reads from Services and EndpointSlices: service ports and endpoints.

Pure functions over API objects (plain dicts from the informers, never mutated), following
upstream's pkg/proxy (ServicePort, EndpointSliceCache, CategorizeEndpoints):

- `service_ports(svc)`: one `ServicePort` per port and IP family of a Service that has a cluster
  IP. Headless Services (`clusterIP: None`) and ExternalName Services have none: nothing of
  theirs goes in the table. The external addresses of a port are its `externalIPs` and its
  `status.loadBalancer.ingress` IPs (those without `ipMode: Proxy`), of the port's family, and
  `loadBalancerSourceRanges` limit who may reach the latter.
- `endpoints(port, slices)`: the port's endpoints from the Service's EndpointSlices (those
  labelled `kubernetes.io/service-name`), matched by port name and protocol; an address listed
  by two slices counts once (its readiest copy). Conditions read as upstream: `ready` unset is
  ready, `serving` unset is `ready`, `terminating` unset is false.
- `categorize(endpoints, port, node=...)`: which endpoints traffic may go to. Ready ones only;
  when none is ready anywhere, the serving-and-terminating ones (so a rolling update that
  leaves only terminating pods still answers). With `internalTrafficPolicy: Local` or
  `externalTrafficPolicy: Local`, the same choice among this node's endpoints.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

JSON = dict[str, Any]
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
DEFAULT_AFFINITY_SECONDS = 10800  # upstream's default sessionAffinityConfig.clientIP.timeoutSeconds
IPV4, IPV6 = "IPv4", "IPv6"


@dataclasses.dataclass(frozen=True)
class ServicePort:
    namespace: str
    name: str
    port_name: str
    protocol: str  # tcp, udp or sctp
    port: int
    family: str  # IPv4 or IPv6
    cluster_ip: str
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    source_ranges: tuple[str, ...] = ()  # loadBalancerSourceRanges of this family: who may reach the LB IPs
    affinity_seconds: int = 0  # ClientIP session affinity timeout; 0: no affinity
    internal_local: bool = False
    external_local: bool = False  # as written; see external_policy_local

    @property
    def service(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def externally_accessible(self) -> bool:
        return bool(self.node_port or self.external_ips or self.load_balancer_ips)

    @property
    def external_policy_local(self) -> bool:
        return self.external_local and self.externally_accessible

    @property
    def uses_cluster_endpoints(self) -> bool:
        # External traffic needs the cluster-wide set even under a Local external policy: traffic
        # from pods and from the node itself short-circuits to it (as upstream).
        return not self.internal_local or self.externally_accessible

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_local or self.external_policy_local


@dataclasses.dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node: str = ""

    def usable_when_none_ready(self) -> bool:
        return self.serving and self.terminating


@dataclasses.dataclass(frozen=True)
class Categorized:
    cluster: tuple[Endpoint, ...]  # for Cluster traffic policies
    local: tuple[Endpoint, ...]  # this node's, for Local traffic policies
    reachable: tuple[Endpoint, ...]  # the union: every endpoint a rule may lead to
    has_any: bool  # some endpoint can serve, on any node


@functools.lru_cache(maxsize=65536)
def family_of(address: str) -> str | None:
    """IPv4 or IPv6, or None for anything that is not an address: every address goes through
    here before it reaches a rule, since one bad value would make nft refuse the whole batch."""
    try:
        return IPV6 if ipaddress.ip_address(address).version == 6 else IPV4
    except ValueError:
        return None


def cidr_family(cidr: str) -> str | None:
    try:
        return IPV6 if ipaddress.ip_network(cidr, strict=False).version == 6 else IPV4
    except ValueError:
        return None


def service_ports(svc: Mapping[str, Any]) -> list[ServicePort]:
    meta = svc.get("metadata") or {}
    spec = svc.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return []
    cluster_ips = [ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if isinstance(ip, str)]
    if not cluster_ips or cluster_ips[0] in ("None", ""):
        return []  # headless: DNS answers with the endpoints; no virtual IP to proxy
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
        affinity = int(cfg.get("timeoutSeconds") or DEFAULT_AFFINITY_SECONDS)
    ingress = [i.get("ip") for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
               if isinstance(i, dict) and i.get("ip") and i.get("ipMode", "VIP") != "Proxy"]
    external = [ip for ip in spec.get("externalIPs") or [] if isinstance(ip, str)]
    ranges = [r for r in spec.get("loadBalancerSourceRanges") or [] if isinstance(r, str)]
    out = []
    for cluster_ip in cluster_ips:
        family = family_of(cluster_ip)
        if family is None:
            continue
        for p in spec.get("ports") or []:
            if not isinstance(p, dict) or not p.get("port"):
                continue
            out.append(ServicePort(
                namespace=str(meta.get("namespace") or ""),
                name=str(meta.get("name") or ""),
                port_name=str(p.get("name") or ""),
                protocol=str(p.get("protocol") or "TCP").lower(),
                port=int(p["port"]),
                family=family,
                cluster_ip=cluster_ip,
                node_port=int(p.get("nodePort") or 0) if spec.get("type") in ("NodePort", "LoadBalancer") else 0,
                external_ips=tuple(ip for ip in external if family_of(ip) == family),
                load_balancer_ips=tuple(ip for ip in ingress if isinstance(ip, str) and family_of(ip) == family),
                source_ranges=tuple(r.strip() for r in ranges if cidr_family(r.strip()) == family),
                affinity_seconds=affinity,
                internal_local=spec.get("internalTrafficPolicy") == "Local",
                external_local=spec.get("externalTrafficPolicy") == "Local",
            ))
    return out


def slice_service(slice_: Mapping[str, Any]) -> str | None:
    """`namespace/name` of the Service an EndpointSlice belongs to (None: no service label)."""
    meta = slice_.get("metadata") or {}
    name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return f"{meta.get('namespace')}/{name}" if name else None


def _condition(conditions: Mapping[str, Any], key: str, default: bool) -> bool:
    value = conditions.get(key)
    return default if value is None else bool(value)


def endpoints(port: ServicePort, slices: Iterable[Mapping[str, Any]]) -> list[Endpoint]:
    found: dict[tuple[str, int], Endpoint] = {}
    for s in slices:
        if s.get("addressType") != port.family:
            continue
        number = next((int(p["port"]) for p in s.get("ports") or []
                       if isinstance(p, dict) and str(p.get("name") or "") == port.port_name
                       and str(p.get("protocol") or "TCP").lower() == port.protocol and p.get("port")), None)
        if number is None:
            continue
        for ep in s.get("endpoints") or []:
            if not isinstance(ep, dict) or not ep.get("addresses"):
                continue
            cond = ep.get("conditions") or {}
            ready = _condition(cond, "ready", True)
            e = Endpoint(ip=str(ep["addresses"][0]), port=number, ready=ready,
                         serving=_condition(cond, "serving", ready), terminating=_condition(cond, "terminating", False),
                         node=str(ep.get("nodeName") or ""))
            if family_of(e.ip) != port.family:
                continue
            key = (e.ip, e.port)
            seen = found.get(key)
            if seen is None or (e.ready, e.serving) > (seen.ready, seen.serving):
                found[key] = e
    return sorted(found.values(), key=lambda e: (e.ip, e.port))


def _usable(endpoints: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    endpoints = list(endpoints)
    ready = tuple(e for e in endpoints if e.ready)
    return ready or tuple(e for e in endpoints if e.usable_when_none_ready())


def categorize(eps: Iterable[Endpoint], port: ServicePort, *, node: str) -> Categorized:
    eps = list(eps)
    has_any = any(e.ready or e.usable_when_none_ready() for e in eps)
    cluster = _usable(eps) if port.uses_cluster_endpoints else ()
    local = _usable(e for e in eps if e.node == node) if port.uses_local_endpoints and node else ()
    reachable = tuple(sorted(set(cluster) | set(local), key=lambda e: (e.ip, e.port)))
    return Categorized(cluster=cluster, local=local, reachable=reachable, has_any=has_any)
