"""The `kube-dns` Service in `kube-system`, as every cluster has it, pointing at this process.

Upstream clusters run CoreDNS pods behind a Service named `kube-dns` (labels `k8s-app: kube-dns`,
`kubernetes.io/cluster-service`, `kubernetes.io/name: CoreDNS`; ports `dns` 53/UDP, `dns-tcp`
53/TCP and `metrics` 9153/TCP; the cluster IP the kubelets write into pods' resolv.conf). Here
the DNS server is the edgekube process itself, so the Service has no selector: edgekube keeps its
endpoints, as the API server keeps the `kubernetes` Service's, in an EndpointSlice named
`kube-dns` (managed by `edgekube`, so the EndpointSlice controller leaves it alone) and an
Endpoints object labelled `skip-mirror` (so the mirroring controller does not copy it). The
service proxy then sends pods' 10.43.0.10:53 to the address the server listens on, and
`kubectl get svc -A` shows kube-dns as on any cluster.

Kept at boot: made when missing, its endpoints corrected when the listening address or ports
changed. A `kube-dns` Service that edgekube did not make (a user's own CoreDNS) is left alone,
with an error in the log. With the dns component disabled, edgekube's own kube-dns objects are
deleted at boot, so a CoreDNS the user deploys instead can take the name and the cluster IP.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from edgekube.api import errors
from edgekube.client import local
from edgekube.store import errors as store_errors

log = logging.getLogger(__name__)
JSON = dict[str, Any]

NAME = "kube-dns"
NAMESPACE = "kube-system"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGER = "edgekube"
SLICE_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
SKIP_MIRROR = "endpointslice.kubernetes.io/skip-mirror"
SERVICE_LABELS = {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS",
                  MANAGED_BY_LABEL: MANAGER}


@dataclasses.dataclass(frozen=True)
class Target:
    """Where the DNS server listens, and the Service's address."""

    cluster_ip: str
    address: str
    port: int = 53
    metrics_port: int = 9153  # 0: no metrics port
    node_name: str = ""


def _ports(t: Target) -> list[tuple[str, int, int, str]]:
    """(name, service port, endpoint port, protocol) as CoreDNS's Service has them."""
    out = [("dns", 53, t.port, "UDP"), ("dns-tcp", 53, t.port, "TCP")]
    if t.metrics_port:
        out.append(("metrics", 9153, t.metrics_port, "TCP"))
    return out


def service(t: Target) -> JSON:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(SERVICE_LABELS),
                     "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}},
        "spec": {"type": "ClusterIP", "clusterIP": t.cluster_ip, "clusterIPs": [t.cluster_ip],
                 "ports": [{"name": n, "port": p, "targetPort": ep, "protocol": proto} for n, p, ep, proto in _ports(t)],
                 "sessionAffinity": "None"},
    }


def _family(address: str) -> str:
    return "IPv6" if ":" in address else "IPv4"


def endpoint_slice_body(t: Target) -> JSON:
    """The fields of the slice edgekube keeps (compared with the stored one to see a change)."""
    endpoint: JSON = {"addresses": [t.address], "conditions": {"ready": True, "serving": True, "terminating": False}}
    if t.node_name:
        endpoint["nodeName"] = t.node_name
    return {"addressType": _family(t.address), "endpoints": [endpoint],
            "ports": [{"name": n, "port": ep, "protocol": proto} for n, _, ep, proto in _ports(t)]}


def endpoints_subsets(t: Target) -> list[JSON]:
    address: JSON = {"ip": t.address}
    if t.node_name:
        address["nodeName"] = t.node_name
    return [{"addresses": [address], "ports": [{"name": n, "port": ep, "protocol": proto} for n, _, ep, proto in _ports(t)]}]


def _ours(obj: JSON) -> bool:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGER


def _get(client: local.LocalClient, api_version: str, kind: str) -> JSON | None:
    try:
        return client.get(api_version, kind, name=NAME, namespace=NAMESPACE)
    except errors.APIError as exc:
        if exc.code == 404:
            return None
        raise


async def ensure(client: local.LocalClient, target: Target) -> bool:
    """Make or correct the kube-dns Service, EndpointSlice and Endpoints. False (and an error
    in the log) when a kube-dns Service that is not edgekube's holds the name."""
    svc = _get(client, "v1", "Service")
    if svc is None:
        await client.create(service(target))
    elif not _ours(svc):
        log.error("the Service %s/%s exists and edgekube did not make it (another cluster DNS?): cluster DNS "
                  "still answers on %s:%d, but 'cluster-dns' (%s) reaches whatever that Service selects; "
                  "delete it, or run with --disable dns", NAMESPACE, NAME, target.address, target.port,
                  target.cluster_ip)
        return False
    elif svc.get("spec", {}).get("ports") != service(target)["spec"]["ports"]:
        # The metrics port came or went; the cluster IP, immutable, is left as it is.
        svc["spec"]["ports"] = service(target)["spec"]["ports"]
        await client.update(svc)
    await _keep(client, "discovery.k8s.io/v1", "EndpointSlice", body=endpoint_slice_body(target),
                labels={"kubernetes.io/service-name": NAME, SLICE_MANAGED_BY: MANAGER, MANAGED_BY_LABEL: MANAGER})
    await _keep(client, "v1", "Endpoints", body={"subsets": endpoints_subsets(target)},
                labels={SKIP_MIRROR: "true", MANAGED_BY_LABEL: MANAGER})
    return True


async def _keep(client: local.LocalClient, api_version: str, kind: str, *, body: JSON, labels: dict[str, str]) -> None:
    """The kube-dns object of that kind with `body`'s fields: made, or its fields corrected."""
    current = _get(client, api_version, kind)
    if current is None:
        await client.create({"apiVersion": api_version, "kind": kind,
                             "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels}, **body})
    elif any(current.get(k) != v for k, v in body.items()):
        current.update(body)
        await client.update(current)


async def remove(client: local.LocalClient) -> None:
    """Delete edgekube's own kube-dns objects (the dns component is off)."""
    for api_version, kind in (("v1", "Service"), ("discovery.k8s.io/v1", "EndpointSlice"), ("v1", "Endpoints")):
        obj = _get(client, api_version, kind)
        if obj is not None and _ours(obj):
            try:
                await client.delete(api_version, kind, name=NAME, namespace=NAMESPACE)
            except errors.APIError as exc:
                if exc.code != 404:
                    raise
            log.info("removed edgekube's %s %s/%s (the dns component is disabled)", kind, NAMESPACE, NAME)


async def disabled(client: local.LocalClient) -> None:
    """The dns component is off: edgekube's own kube-dns objects go, so that another cluster
    DNS can take the name and the cluster IP."""
    try:
        await remove(client)
    except (errors.APIError, store_errors.StoreError) as exc:
        log.error("could not remove edgekube's %s/%s Service: %s", NAMESPACE, NAME, exc)
