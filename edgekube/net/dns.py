"""Cluster DNS, the `dns` component: what CoreDNS does on a k3s node, done by the edgekube
process itself (no pod, no image, no API connection of its own).

    informers on Services, EndpointSlices and Namespaces (in process, client/informer.py)
        --> dnszone.ClusterZone: the cluster's records, in indexes
    dnsserver.DnsServer, UDP and TCP on the listening address
        --> the zone's answers, or dnsforward.Forwarder (dnscache.Cache, then the host's
            nameservers from the resolv.conf _cogs/resolvconf picked)
    dnsservice: the `kube-dns` Service (the cluster DNS IP, 10.43.0.10) and its endpoints,
        pointing at the listening address, for the service proxy to route pods' queries there

The listening address is `dns.listen-address`, by default the node's pod gateway: the first
address of the pod CIDR (10.42.0.1), which the pod network gives its bridge, so pods reach it
directly and through the Service. The server answers before its informers have synced (SERVFAIL
where it would deny a name: CoreDNS's behaviour while it syncs).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from edgekube import config as config_mod
from edgekube.api import errors
from edgekube.client import informer, local
from edgekube.net import dnscache, dnsforward, dnsserver, dnsservice, dnszone
from edgekube.store import errors as store_errors

log = logging.getLogger(__name__)


def listen_address(settings: config_mod.DnsSettings, *, cluster_cidr: str) -> str:
    """`dns.listen-address`, else the pod gateway: the first address of the node's pod CIDR."""
    if settings.listen_address:
        return settings.listen_address
    return str(ipaddress.ip_network(cluster_cidr, strict=False).network_address + 1)


class ClusterDns:
    def __init__(self, client: local.LocalClient, settings: config_mod.DnsSettings, *, address: str, cluster_ip: str,
                 domain: str, node_name: str, resolv_conf: Path) -> None:
        self._client = client
        self.settings = settings
        self.address = address
        self.cluster_ip = cluster_ip
        self.node_name = node_name
        self.zone = dnszone.ClusterZone(domain=domain, local_ips=[address])
        factory = informer.InformerFactory(client)
        z = self.zone
        feeds: list[tuple[str, str, Callable[[dict[str, Any]], None], Callable[[dict[str, Any]], None]]] = [
            ("v1", "Namespace", z.set_namespace, z.delete_namespace),
            ("v1", "Service", z.set_service, z.delete_service),
            ("discovery.k8s.io/v1", "EndpointSlice", z.set_slice, z.delete_slice),
        ]
        self._informers: list[informer.Informer] = []
        for api_version, kind, put, drop in feeds:
            inf = factory.get(api_version, kind)
            inf.add_handlers(informer.Handlers(on_add=put, on_update=_newest(put), on_delete=drop))
            self._informers.append(inf)
        forwarder = dnsforward.Forwarder(dnsforward.Upstreams(resolv_conf),
                                         cache=dnscache.Cache(max_bytes=settings.cache_size_mb << 20))
        self.server = dnsserver.DnsServer(self.zone, forwarder, address=address, port=settings.port,
                                          metrics_port=settings.metrics_port, max_concurrent=settings.max_concurrent,
                                          synced=self._synced)

    def _synced(self) -> bool:
        return all(inf.synced.is_set() for inf in self._informers)

    async def start(self) -> None:
        """Listen (an OSError says why it cannot), then keep the kube-dns Service pointing here."""
        await self.server.start()
        target = dnsservice.Target(cluster_ip=self.cluster_ip, address=self.address, port=self.server.port,
                                   metrics_port=self.settings.metrics_port, node_name=self.node_name)
        try:
            await dnsservice.ensure(self._client, target)
        except (errors.APIError, store_errors.StoreError) as exc:
            # Serving pods that use the address directly beats not serving (a damaged record, a full disk).
            log.error("could not write the %s/%s Service and its endpoints: %s", dnsservice.NAMESPACE,
                      dnsservice.NAME, exc)

    def runners(self) -> list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]]:
        """The informers feeding the zone, each a task for the caller to supervise."""
        return [(f"dns/informer/{inf.kind}", inf.run) for inf in self._informers]

    async def close(self) -> None:
        await self.server.close()


def _newest(put: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    """An update handler that puts the new object (the zone compares it with what it holds)."""
    return lambda _old, new: put(new)
