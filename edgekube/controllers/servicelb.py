"""LoadBalancer Services the k3s way: no cloud, the nodes' own addresses are the load balancer.

k3s's servicelb runs a pod with host ports on every node for each LoadBalancer Service and writes
the addresses of the nodes whose pod runs into `status.loadBalancer.ingress`. edgekube needs no
pod for it: the service proxy already serves a Service's load-balancer IPs (net/proxyrules.py
sends them through the Service's external chain), so this controller only writes the status:

- the ingress of a `type: LoadBalancer` Service is every Ready node's ExternalIP addresses, or its
  InternalIP addresses when it has none (as k3s), each `ipMode: VIP`;
- a Service that names a `loadBalancerClass` belongs to another implementation and is left alone;
- as with k3s (whose second host-port pod for a port cannot be scheduled), a port and protocol
  can serve one Service per node: the oldest LoadBalancer Service holding it keeps it, and a
  later one that wants it gets no ingress (it stays pending, `EXTERNAL-IP <pending>` in kubectl)
  until the port is free again;
- a Service that stops being a LoadBalancer loses the ingress it was given.

Handlers enqueue Service keys; any change to a node or to a LoadBalancer Service enqueues every
LoadBalancer Service (there are few), since addresses and port holders are shared. The runtime
starts this controller with the service proxy (the `network` component): with the network off
nothing would serve the addresses, so none is promised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from edgekube.api import errors
from edgekube.client import informer, objects
from edgekube.client.local import LocalClient
from edgekube.controllers.base import Controller

log = logging.getLogger(__name__)
JSON = dict[str, Any]


def node_addresses(nodes: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every Ready node's ExternalIPs, or its InternalIPs when it has none, sorted."""
    out: set[str] = set()
    for node in nodes:
        ready = objects.condition(dict(node), "Ready")
        if ready is not None and ready.get("status") != "True":
            continue
        addresses = (node.get("status") or {}).get("addresses") or []
        by_type: dict[str, list[str]] = {}
        for a in addresses:
            if isinstance(a, Mapping) and a.get("address"):
                by_type.setdefault(str(a.get("type")), []).append(str(a["address"]))
        out.update(by_type.get("ExternalIP") or by_type.get("InternalIP") or [])
    return sorted(out)


def _is_ours(svc: Mapping[str, Any]) -> bool:
    spec = svc.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and not spec.get("loadBalancerClass")


def holders(svcs: Sequence[Mapping[str, Any]]) -> dict[str, bool]:
    """service key -> whether it gets its ports (the oldest claim on a port and protocol wins)."""
    taken: set[tuple[str, int]] = set()
    out = {}
    order = sorted((s for s in svcs if _is_ours(s)),
                   key=lambda s: ((s.get("metadata") or {}).get("creationTimestamp") or "", informer.object_key(dict(s))))
    for s in order:
        ports = {(str(p.get("protocol") or "TCP"), int(p.get("port") or 0))
                 for p in (s.get("spec") or {}).get("ports") or [] if isinstance(p, Mapping)}
        free = not (ports & taken)
        if free:
            taken |= ports
        out[informer.object_key(dict(s))] = free
    return out


class ServiceLBController(Controller):
    name = "service-lb-controller"

    def __init__(self, client: LocalClient, services: informer.Informer, nodes: informer.Informer) -> None:
        super().__init__()
        self._client = client
        self._services = services
        self._nodes = nodes
        self._services.add_handlers(informer.Handlers(
            on_add=self._service_changed, on_update=lambda old, new: self._service_changed(new, old),
            on_delete=self._service_changed))
        every = informer.Handlers(on_add=lambda n: self._all(), on_update=lambda o, n: self._all(),
                                  on_delete=lambda n: self._all())
        self._nodes.add_handlers(every)

    def _all(self) -> None:
        for s in self._services.list():
            if _is_ours(s):
                self.queue.add(informer.object_key(s))

    def _service_changed(self, svc: JSON, old: JSON | None = None) -> None:
        key = informer.object_key(svc)
        if _is_ours(svc) or (old is not None and _is_ours(old)):
            self._all()  # a port taken or given back may change another Service's answer
        if (svc.get("status") or {}).get("loadBalancer", {}).get("ingress"):
            self.queue.add(key)

    def desired(self, key: str) -> list[JSON] | None:
        """The ingress the Service should show (None: not ours to say)."""
        svc = self._services.get(key)
        if svc is None:
            return None
        if not _is_ours(svc):
            spec = svc.get("spec") or {}
            return [] if spec.get("type") != "LoadBalancer" else None
        if not holders(self._services.list()).get(key, False):
            return []
        return [{"ip": ip, "ipMode": "VIP"} for ip in node_addresses(self._nodes.list())]

    async def reconcile(self, key: Hashable) -> None:
        key = str(key)
        want = self.desired(key)
        svc = self._services.get(key)
        if want is None or svc is None:
            return
        current = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if current == want:
            return
        namespace, name = key.split("/", 1)

        def mutate(obj: JSON) -> JSON:
            obj.setdefault("status", {})["loadBalancer"] = {"ingress": want} if want else {}
            return obj

        try:
            await self._client.patch("v1", "Service", name=name, namespace=namespace, mutate=mutate,
                                     subresource="status")
        except errors.APIError as exc:
            if exc.code == 404:
                return
            raise
        if want:
            log.info("service-lb: %s answers on %s", key, ", ".join(i["ip"] for i in want))

    async def run(self) -> None:
        await asyncio.gather(self._services.synced.wait(), self._nodes.synced.wait())
        self._all()
        await super().run()
