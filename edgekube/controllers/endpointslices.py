"""EndpointSlice controllers: slices for Services with a selector, and mirrors of user Endpoints.

The EndpointSlice controller (upstream's pkg/controller/endpointslice and k8s.io/endpointslice)
keeps, for each Service with a selector and for each of its address types, slices labelled
`kubernetes.io/service-name` and managed by `endpointslice-controller.k8s.io`, owned by the
Service, named from `<service>-`. Every selected pod with an IP that is not terminal is an
endpoint, with conditions `serving` (the pod is Ready), `terminating` (it is being deleted) and
`ready` (serving and not terminating, or always when the Service publishes not-ready addresses),
its node, its node's zone, and its hostname when its subdomain names the Service. Pods are
grouped by the ports they resolve for the Service (a pod without a named port gets a slice with
fewer ports), at most 100 endpoints to a slice. A Service that selects nothing keeps one empty
placeholder slice. A sync changes the least it can, as upstream's reconciler: endpoints that
still exist stay in their slice, changed ones are rewritten in place, new ones fill the slices
being rewritten anyway, then the fullest unchanged slice they fit in, and only then new slices;
a slice that would be deleted while another is created is reused instead. A slice is written
only when its endpoints, labels or ports change, so a steady cluster makes no writes.

The mirroring controller (upstream's endpointslicemirroring) copies the Endpoints of Services
without a selector (user-managed endpoints) into slices managed by
`endpointslicemirroring-controller.k8s.io` and owned by the Endpoints: one slice per subset and
address type, at most 1000 addresses per subset, with the Endpoints' labels and annotations.
Endpoints labelled `endpointslice.kubernetes.io/skip-mirror: "true"` (the `kubernetes`
Service's) and leader-election records are not mirrored.

One deliberate difference: upstream leaves the slices of a Service that loses its selector (or
turns ExternalName) in place; here they are deleted, since nothing would keep them true.
Slices of a deleted Service or Endpoints go with their owner (the garbage collector).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import ipaddress
import logging
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from edgekube.api import errors
from edgekube.client import objects
from edgekube.client.events import Recorder
from edgekube.client.informer import Handlers, Informer
from edgekube.client.local import LocalClient
from edgekube.controllers import endpoints as ep_mod
from edgekube.controllers.base import Controller, Requeue

log = logging.getLogger(__name__)
JSON = dict[str, Any]

API_VERSION = "discovery.k8s.io/v1"
SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
SKIP_MIRROR = "endpointslice.kubernetes.io/skip-mirror"
CONTROLLER = "endpointslice-controller.k8s.io"
MIRRORING_CONTROLLER = "endpointslicemirroring-controller.k8s.io"
ZONE = "topology.kubernetes.io/zone"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
MAX_ENDPOINTS_PER_SLICE = 100
MAX_ENDPOINTS_PER_SUBSET = 1000
_RESERVED_LABELS = (SERVICE_NAME, MANAGED_BY, ep_mod.HEADLESS)


# --- endpoints and ports -------------------------------------------------------------------------


_PortTuple = tuple[str, str, int, str]
PortsKey = tuple[_PortTuple, ...]
EndpointKey = tuple[tuple[str, ...], str, str, str]


def _port_tuple(p: JSON) -> _PortTuple:
    port = p.get("port")
    return (str(p.get("name") or ""), str(p.get("protocol") or "TCP"), port if isinstance(port, int) else -1,
            str(p.get("appProtocol") or ""))


def ports_key(ports: Iterable[JSON] | None) -> PortsKey:
    """The identity of a set of slice ports, whatever their order (upstream's PortMapKey)."""
    return tuple(sorted(_port_tuple(p) for p in ports or [] if isinstance(p, dict)))


def endpoint_key(ep: JSON) -> EndpointKey:
    """The identity of an endpoint across syncs (upstream's endpoint hash): its addresses,
    hostname and target; a change of anything else is an update of the same endpoint."""
    ref = ep.get("targetRef") or {}
    return (tuple(sorted(str(a) for a in ep.get("addresses") or [])), str(ep.get("hostname") or ""),
            str(ref.get("namespace") or ""), str(ref.get("name") or ""))


def same_endpoint(a: JSON, b: JSON) -> bool:
    """Equal but for the target's resourceVersion (a pod's unrelated updates don't count)."""
    return bool(ep_mod.strip_ref_version(a) == ep_mod.strip_ref_version(b))


def address_type(ip: str) -> str | None:
    try:
        return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"
    except ValueError:
        return None


def address_types(svc: JSON) -> list[str]:
    """The Service's address types (upstream's getAddressTypesForService): its IP families; for
    an old Service without families, its cluster IP's; for a headless one, both."""
    spec = svc.get("spec") or {}
    out = [f for f in ("IPv4", "IPv6") if f in (spec.get("ipFamilies") or [])]
    if out:
        return out
    if ep_mod.service_ip_set(svc):
        return ["IPv6" if ep_mod.is_ipv6(str(spec.get("clusterIP"))) else "IPv4"]
    return ["IPv4", "IPv6"]


def endpoint_ports(svc: JSON, pod: JSON) -> list[JSON]:
    """The slice ports the pod serves for the Service (upstream's getEndpointPorts): each Service
    port whose target the pod has, named as the Service port; a headless Service may have none."""
    spec = svc.get("spec") or {}
    out: list[JSON] = []
    for sp in spec.get("ports") or []:
        if not isinstance(sp, dict):
            continue
        number = ep_mod.find_port(pod, sp)
        if number is None:
            continue
        port: JSON = {"name": sp.get("name") or "", "protocol": sp.get("protocol") or "TCP", "port": number}
        if sp.get("appProtocol"):
            port["appProtocol"] = sp["appProtocol"]
        out.append(port)
    out.sort(key=_port_tuple)
    return out


def pod_to_endpoint(pod: JSON, node: JSON | None, svc: JSON, addr_type: str) -> JSON:
    """The pod as a slice endpoint (upstream's podToEndpoint)."""
    serving = objects.pod_ready(pod)
    terminating = bool(objects.meta(pod).get("deletionTimestamp"))
    # For compatibility, a terminating endpoint is never ready, unless not-ready addresses
    # are published anyway.
    ready = bool((svc.get("spec") or {}).get("publishNotReadyAddresses")) or (serving and not terminating)
    m = objects.meta(pod)
    ep: JSON = {
        "addresses": [ip for ip in ep_mod.pod_ips(pod) if address_type(ip) == addr_type],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
    }
    if ep_mod.should_set_hostname(pod, svc):
        ep["hostname"] = (pod.get("spec") or {})["hostname"]
    ep["targetRef"] = {"kind": "Pod", "namespace": m.get("namespace"), "name": m.get("name"), "uid": m.get("uid")}
    node_name = (pod.get("spec") or {}).get("nodeName")
    if node_name:
        ep["nodeName"] = node_name
    zone = (objects.meta(node).get("labels") or {}).get(ZONE) if node is not None else None
    if zone:
        ep["zone"] = zone
    return ep


def slice_labels(svc: JSON) -> dict[str, str]:
    """The Service's labels, but for the reserved ones, which the controller sets itself."""
    labels = {k: v for k, v in (objects.meta(svc).get("labels") or {}).items() if k not in _RESERVED_LABELS}
    if not ep_mod.service_ip_set(svc):
        labels[ep_mod.HEADLESS] = ""
    labels[SERVICE_NAME] = str(objects.meta(svc).get("name"))
    labels[MANAGED_BY] = CONTROLLER
    return labels


def service_owner(svc: JSON) -> JSON:
    m = objects.meta(svc)
    return {"apiVersion": "v1", "kind": "Service", "name": m.get("name"), "uid": m.get("uid"),
            "controller": True, "blockOwnerDeletion": True}


def owned_by(slice_: JSON, svc: JSON) -> bool:
    uid = objects.meta(svc).get("uid")
    return any(isinstance(r, dict) and r.get("uid") == uid and r.get("kind") == "Service" and r.get("apiVersion") == "v1"
               for r in objects.meta(slice_).get("ownerReferences") or [])


def new_slice(svc: JSON, ports: list[JSON], addr_type: str) -> JSON:
    m = objects.meta(svc)
    return {
        "apiVersion": API_VERSION, "kind": "EndpointSlice",
        "metadata": {"generateName": f"{m.get('name')}-", "namespace": m.get("namespace"),
                     "labels": slice_labels(svc), "ownerReferences": [service_owner(svc)]},
        "addressType": addr_type,
        "endpoints": [],
        "ports": copy.deepcopy(ports),
    }


def slice_name(slice_: JSON) -> str:
    return str(objects.meta(slice_).get("name") or "")


# --- planning a sync (pure) ----------------------------------------------------------------------


@dataclasses.dataclass
class Plan:
    """What a sync writes: slices to create (no name yet), to update (whole desired objects), to
    delete; and why some pods were left out (reported after the writes, then retried)."""

    create: list[JSON] = dataclasses.field(default_factory=list)
    update: list[JSON] = dataclasses.field(default_factory=list)
    delete: list[JSON] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)

    def empty(self) -> bool:
        return not (self.create or self.update or self.delete)


def plan_service(svc: JSON, pods: Iterable[JSON], existing: Iterable[JSON], node: Callable[[str], JSON | None],
                 *, max_per_slice: int = MAX_ENDPOINTS_PER_SLICE) -> Plan:
    """The writes that bring a Service's slices (`existing`: those this controller manages for
    it, none being deleted) to the pods it selects, as upstream's Reconcile."""
    plan = Plan()
    wanted = address_types(svc)
    pods = ep_mod.sorted_pods(pods)
    by_type: dict[str, list[JSON]] = {}
    for s in sorted(existing, key=slice_name):
        if s.get("addressType") in wanted:
            by_type.setdefault(str(s.get("addressType")), []).append(s)
        else:
            plan.delete.append(s)
    for addr_type in wanted:
        part = _plan_address_type(svc, pods, by_type.get(addr_type, []), node, addr_type, max_per_slice)
        plan.create += part.create
        plan.update += part.update
        plan.delete += part.delete
        plan.errors += part.errors
    return plan


def _plan_address_type(svc: JSON, pods: list[JSON], existing: list[JSON], node: Callable[[str], JSON | None],
                       addr_type: str, max_per_slice: int) -> Plan:
    plan = Plan()
    m = objects.meta(svc)
    publish = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
    existing_by_ports: dict[PortsKey, list[JSON]] = {}
    for s in existing:
        if owned_by(s, svc):
            existing_by_ports.setdefault(ports_key(s.get("ports")), []).append(s)
        else:
            plan.delete.append(s)  # left by an earlier Service of the same name
    desired: dict[PortsKey, dict[EndpointKey, JSON]] = {}
    desired_ports: dict[PortsKey, list[JSON]] = {}
    for pod in pods:
        if not ep_mod.should_be_in_endpoints(pod, include_terminating=True):
            continue
        ports = endpoint_ports(svc, pod)
        pk = ports_key(ports)
        endpoints = desired.setdefault(pk, {})
        desired_ports.setdefault(pk, ports)
        node_name = str((pod.get("spec") or {}).get("nodeName") or "")
        the_node = node(node_name) if node_name else None
        if the_node is None and not publish:
            # Left out until its node shows up (a pod bound to a node that is gone), unless the
            # Service asks for every address.
            plan.errors.append(f"skipping Pod {objects.meta(pod).get('name')} for Service "
                               f"{m.get('namespace')}/{m.get('name')}: Node {node_name} Not Found")
            continue
        ep = pod_to_endpoint(pod, the_node, svc, addr_type)
        if ep["addresses"]:
            endpoints[endpoint_key(ep)] = ep
    for pk, endpoints in desired.items():
        part = plan_port_mapping(svc, existing_by_ports.get(pk, []), endpoints, desired_ports[pk], addr_type,
                                 max_per_slice)
        plan.create += part.create
        plan.update += part.update
        plan.delete += part.delete
    for pk, slices in existing_by_ports.items():
        if pk not in desired:
            plan.delete += slices
    if len(existing) == len(plan.delete) and not plan.create:
        # Nothing selected: one empty placeholder slice stays (and is kept when it is one already).
        placeholder = new_slice(svc, [], addr_type)
        if len(plan.delete) == 1 and _same_placeholder(plan.delete[0], placeholder):
            plan.delete = []
        else:
            plan.create.append(placeholder)
    _recycle(plan, svc)
    return plan


def _same_placeholder(s: JSON, placeholder: JSON) -> bool:
    sm, pm = objects.meta(s), objects.meta(placeholder)
    return (sm.get("namespace") == pm.get("namespace") and (sm.get("labels") or {}) == pm["labels"]
            and [_owner_tuple(r) for r in sm.get("ownerReferences") or []] == [_owner_tuple(r) for r in pm["ownerReferences"]]
            and s.get("addressType") == placeholder.get("addressType")
            and not s.get("endpoints") and not s.get("ports"))


def _owner_tuple(r: Any) -> tuple[Any, ...]:
    r = r if isinstance(r, dict) else {}
    return (r.get("apiVersion"), r.get("kind"), r.get("name"), r.get("uid"), bool(r.get("controller")),
            bool(r.get("blockOwnerDeletion")))


def plan_port_mapping(svc: JSON, existing: list[JSON], desired: dict[EndpointKey, JSON], ports: list[JSON],
                      addr_type: str, max_per_slice: int = MAX_ENDPOINTS_PER_SLICE) -> Plan:
    """The slices of one set of ports, as upstream's reconcileByPortMapping:
    1. keep each existing endpoint that is still desired in its slice (updated if it changed);
       a slice left empty is deleted, a changed one (or one with stale labels) is rewritten;
    2. fill the slices being rewritten anyway with new endpoints, fullest first;
    3. put what is left in the fullest unchanged slice it fits in whole, else in new slices."""
    plan = Plan()
    pending = dict(desired)  # insertion-ordered: endpoints are placed in pod-name order
    labels = slice_labels(svc)
    updated: dict[str, JSON] = {}
    unchanged: dict[str, JSON] = {}
    for s in existing:
        kept: list[JSON] = []
        changed = False
        for ep in s.get("endpoints") or []:
            want = pending.pop(endpoint_key(ep), None)
            if want is None:
                changed = True
                continue
            kept.append(want)
            changed = changed or not same_endpoint(want, ep)
        if changed and not kept:
            plan.delete.append(s)
        elif changed or (objects.meta(s).get("labels") or {}) != labels:
            new = copy.deepcopy(s)
            new["endpoints"] = kept
            new["metadata"]["labels"] = dict(labels)
            updated[slice_name(s)] = new
        else:
            unchanged[slice_name(s)] = s
    queue = list(pending.values())
    for s in sorted(updated.values(), key=lambda x: -len(x["endpoints"])):
        room = max_per_slice - len(s["endpoints"])
        if room > 0 and queue:
            s["endpoints"] += queue[:room]
            queue = queue[room:]
    while queue:
        target: JSON | None = None
        if len(queue) < max_per_slice and unchanged:
            target = _slice_to_fill(list(unchanged.values()), len(queue), max_per_slice)
        if target is None:
            target = new_slice(svc, ports, addr_type)
        else:
            del unchanged[slice_name(target)]
            target = copy.deepcopy(target)
            target["endpoints"] = list(target.get("endpoints") or [])
        room = max_per_slice - len(target["endpoints"])
        target["endpoints"] += queue[:room]
        queue = queue[room:]
        if slice_name(target):
            updated[slice_name(target)] = target
        else:
            plan.create.append(target)
    plan.update = list(updated.values())
    return plan


def _slice_to_fill(slices: list[JSON], count: int, max_per_slice: int) -> JSON | None:
    """The slice with the least room left that still takes `count` endpoints whole."""
    best: JSON | None = None
    best_room = max_per_slice
    for s in sorted(slices, key=slice_name):
        room = max_per_slice - (count + len(s.get("endpoints") or []))
        if 0 <= room < best_room:
            best, best_room = s, room
            if room == 0:
                break
    return best


def _recycle(plan: Plan, owner: JSON | None) -> None:
    """Creates become updates of slices that would be deleted (same address type, same owner):
    a slice is rewritten in place rather than deleted and made again."""
    i = 0
    while i < len(plan.delete) and plan.create:
        gone, new = plan.delete[i], plan.create[-1]
        if gone.get("addressType") == new.get("addressType") and (owner is None or owned_by(gone, owner)):
            plan.create.pop()
            plan.delete.pop(i)
            new["metadata"].pop("generateName", None)
            new["metadata"]["name"] = slice_name(gone)
            plan.update.append(new)
        else:
            i += 1


# --- mirroring (pure) ---------------------------------------------------------------------------


def should_mirror(endpoints: JSON) -> bool:
    m = objects.meta(endpoints)
    return ((m.get("labels") or {}).get(SKIP_MIRROR) != "true"
            and ep_mod.LEADER_ELECTION not in (m.get("annotations") or {}))


def mirror_port(p: JSON) -> JSON:
    port: JSON = {"name": p.get("name") or "", "protocol": p.get("protocol") or "TCP", "port": p.get("port")}
    if p.get("appProtocol"):
        port["appProtocol"] = p["appProtocol"]
    return port


def address_to_endpoint(address: JSON, ready: bool) -> JSON:
    ep: JSON = {"addresses": [address.get("ip")], "conditions": {"ready": ready}}
    if address.get("hostname"):
        ep["hostname"] = address["hostname"]
    if isinstance(address.get("targetRef"), dict):
        ep["targetRef"] = copy.deepcopy(address["targetRef"])
    if address.get("nodeName"):
        ep["nodeName"] = address["nodeName"]
    return ep


def _mirror_annotations(endpoints: JSON) -> dict[str, str]:
    return {k: v for k, v in (objects.meta(endpoints).get("annotations") or {}).items()
            if k not in (ep_mod.TRIGGER_TIME, LAST_APPLIED)}


def mirror_slice(endpoints: JSON, ports: list[JSON], addr_type: str, name: str) -> JSON:
    m = objects.meta(endpoints)
    labels = dict(m.get("labels") or {})
    labels[SERVICE_NAME] = str(m.get("name"))
    labels[MANAGED_BY] = MIRRORING_CONTROLLER
    meta: JSON = {"namespace": m.get("namespace"), "labels": labels}
    annotations = _mirror_annotations(endpoints)
    if annotations:
        meta["annotations"] = annotations
    meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Endpoints", "name": m.get("name"), "uid": m.get("uid"),
                                "controller": True, "blockOwnerDeletion": True}]
    if name:
        meta["name"] = name
    else:
        meta["generateName"] = f"{m.get('name')}-"
    return {"apiVersion": API_VERSION, "kind": "EndpointSlice", "metadata": meta, "addressType": addr_type,
            "endpoints": [], "ports": copy.deepcopy(ports)}


@dataclasses.dataclass
class MirrorPlan(Plan):
    invalid: int = 0  # addresses that are not IPs
    skipped: int = 0  # addresses not mirrored (invalid, or past the limit per subset)


def plan_mirror(endpoints: JSON, existing: Iterable[JSON], *, max_per_subset: int = MAX_ENDPOINTS_PER_SUBSET) -> MirrorPlan:
    """The writes that mirror user Endpoints into slices (upstream's mirroring reconcile): the
    subsets, repacked, each become one slice per address type."""
    plan = MirrorPlan()
    desired: dict[tuple[PortsKey, str], dict[EndpointKey, JSON]] = {}
    desired_ports: dict[tuple[PortsKey, str], list[JSON]] = {}
    for subset in ep_mod.repack_subsets(s for s in endpoints.get("subsets") or [] if isinstance(s, dict)):
        ports = sorted((mirror_port(p) for p in subset.get("ports") or []), key=_port_tuple)
        pk = ports_key(ports)
        for t in ("IPv4", "IPv6"):
            desired.setdefault((pk, t), {})
            desired_ports[(pk, t)] = ports
        total = len(subset.get("addresses") or []) + len(subset.get("notReadyAddresses") or [])
        added = 0
        for field, ready in (("addresses", True), ("notReadyAddresses", False)):
            for a in subset.get(field) or []:
                if added >= max_per_subset:
                    break
                kind = address_type(str(a.get("ip") or ""))
                if kind is None:
                    plan.invalid += 1
                    continue
                ep = address_to_endpoint(a, ready)
                desired[(pk, kind)][endpoint_key(ep)] = ep
                added += 1
        plan.skipped += total - added
    existing_by_key: dict[tuple[PortsKey, str], list[JSON]] = {}
    for s in sorted(existing, key=slice_name):
        existing_by_key.setdefault((ports_key(s.get("ports")), str(s.get("addressType"))), []).append(s)
    want_labels = {k: v for k, v in (objects.meta(endpoints).get("labels") or {}).items()
                   if k not in (SERVICE_NAME, MANAGED_BY)}
    want_annotations = _mirror_annotations(endpoints)
    for key, want in desired.items():
        slices = existing_by_key.get(key, [])
        if not want:
            plan.delete += slices
            continue
        name = ""
        if slices:
            plan.delete += slices[1:]
            first = slices[0]
            name = slice_name(first)
            have = {endpoint_key(e): e for e in first.get("endpoints") or []}
            labels = {k: v for k, v in (objects.meta(first).get("labels") or {}).items() if k not in (SERVICE_NAME, MANAGED_BY)}
            if (have.keys() == want.keys() and all(same_endpoint(have[k], want[k]) for k in want)
                    and len(have) == len(first.get("endpoints") or [])
                    and labels == want_labels and (objects.meta(first).get("annotations") or {}) == want_annotations):
                continue
        new = mirror_slice(endpoints, desired_ports[key], key[1], name)
        new["endpoints"] = list(want.values())[:max_per_subset]
        (plan.update if name else plan.create).append(new)
    for key, slices in existing_by_key.items():
        if key not in desired:
            plan.delete += slices
    _recycle(plan, None)
    return plan


# --- writing a plan ---------------------------------------------------------------------------


def _annotate_trigger(s: JSON, trigger: str | None) -> None:
    meta = s.setdefault("metadata", {})
    annotations = dict(meta.get("annotations") or {})
    if trigger is None:
        annotations.pop(ep_mod.TRIGGER_TIME, None)
    else:
        annotations[ep_mod.TRIGGER_TIME] = trigger
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)


class _SliceWriter:
    """Creates, updates and deletes slices, recording each write for the stale-cache check."""

    def __init__(self, client: LocalClient, writes: ep_mod.WriteTracker) -> None:
        self._client = client
        self._writes = writes

    async def apply(self, group: str, namespace: str, plan: Plan, *, may_create: bool, stamp: bool = False,
                    trigger: str | None = None) -> None:
        """Write `plan` for `group` (a Service's key). With `stamp`, created and updated slices
        carry `trigger` as their last-change-trigger-time (None removes it). Raises RuntimeError
        naming the write that failed."""
        owner = group.partition("/")[2]
        if may_create:
            for s in plan.create:
                if stamp:
                    _annotate_trigger(s, trigger)
                try:
                    created = await self._client.create(s)
                except errors.APIError as exc:
                    if ep_mod.namespace_terminating(exc):
                        return  # creates keep failing in a namespace being deleted
                    raise RuntimeError(f"failed to create EndpointSlice for Service {namespace}/{owner}: {exc.message}") from exc
                self._writes.wrote(group, created)
        for s in plan.update:
            if stamp:
                _annotate_trigger(s, trigger)
            name = slice_name(s)
            try:
                updated = await self._client.patch(API_VERSION, "EndpointSlice", name=name, namespace=namespace,
                                                   mutate=_replace_with(s))
            except errors.APIError as exc:
                raise RuntimeError(f"failed to update {name} EndpointSlice for Service {namespace}/{owner}: "
                                   f"{exc.message}") from exc
            self._writes.wrote(group, updated)
        for s in plan.delete:
            await self.delete(group, namespace, slice_name(s))

    async def delete(self, group: str, namespace: str, name: str) -> None:
        try:
            await self._client.delete(API_VERSION, "EndpointSlice", name=name, namespace=namespace)
        except errors.APIError as exc:
            if exc.code != 404:
                raise RuntimeError(f"failed to delete {name} EndpointSlice for Service {group}: {exc.message}") from exc
        self._writes.deleted(group, name)


def _replace_with(desired: JSON) -> Callable[[JSON], JSON]:
    """A patch that makes the stored slice the desired one (its metadata.name, uid and the
    server's fields stay)."""

    def mutate(obj: JSON) -> JSON:
        meta = obj.setdefault("metadata", {})
        want = desired.get("metadata") or {}
        for field in ("labels", "annotations", "ownerReferences"):
            if want.get(field):
                meta[field] = copy.deepcopy(want[field])
            else:
                meta.pop(field, None)
        obj["endpoints"] = copy.deepcopy(desired.get("endpoints") or [])
        obj["ports"] = copy.deepcopy(desired.get("ports") or [])
        return obj

    return mutate


def _service_key_of(slice_: JSON) -> str | None:
    svc = (objects.meta(slice_).get("labels") or {}).get(SERVICE_NAME)
    return f"{objects.meta(slice_).get('namespace')}/{svc}" if svc else None


def _managed_by(slice_: JSON) -> str | None:
    value = (objects.meta(slice_).get("labels") or {}).get(MANAGED_BY)
    return str(value) if value is not None else None


# --- the EndpointSlice controller -------------------------------------------------------------


class EndpointSliceController(Controller):
    name = "endpointslice-controller"
    workers = 2

    def __init__(self, client: LocalClient, services: Informer, pods: Informer, slices: Informer, nodes: Informer,
                 recorder: Recorder, *, max_per_slice: int = MAX_ENDPOINTS_PER_SLICE) -> None:
        super().__init__()
        self._services = services
        self._pods = pods
        self._slices = slices
        self._nodes = nodes
        self._recorder = recorder
        self._max = max_per_slice
        self._triggers = ep_mod.TriggerTimeTracker()
        self._writes = ep_mod.WriteTracker()
        self._writer = _SliceWriter(client, self._writes)
        services.add_handlers(Handlers(on_add=self._enqueue, on_update=lambda _old, new: self._enqueue(new),
                                       on_delete=self._enqueue))
        pods.add_handlers(Handlers(on_add=self._pod_event, on_update=self._pod_updated, on_delete=self._pod_event))
        nodes.add_handlers(Handlers(on_add=self._node_event, on_delete=self._node_event,
                                    on_update=self._node_updated))
        slices.add_handlers(Handlers(on_add=self._slice_event, on_update=self._slice_updated,
                                     on_delete=self._slice_deleted))

    def _enqueue(self, obj: JSON) -> None:
        self.queue.add(ep_mod.key_of(obj))

    def _pod_event(self, pod: JSON) -> None:
        m = objects.meta(pod)
        for key in ep_mod.services_for_pod(self._services, str(m.get("namespace")), m.get("labels")):
            self.queue.add(key)

    def _pod_updated(self, old: JSON, new: JSON) -> None:
        for key in ep_mod.services_to_update(self._services, old, new):
            self.queue.add(key)

    def _node_event(self, node: JSON) -> None:
        # A node appearing lets its pods in; one going, or its zone changing, changes them.
        name = objects.meta(node).get("name")
        for pod in self._pods.list():
            if (pod.get("spec") or {}).get("nodeName") == name:
                self._pod_event(pod)

    def _node_updated(self, old: JSON, new: JSON) -> None:
        if (objects.meta(old).get("labels") or {}).get(ZONE) != (objects.meta(new).get("labels") or {}).get(ZONE):
            self._node_event(new)

    def _slice_event(self, s: JSON) -> None:
        key = _service_key_of(s)
        if key is not None and _managed_by(s) == CONTROLLER and not self._writes.expects(key, s):
            self.queue.add(key)

    def _slice_updated(self, old: JSON, new: JSON) -> None:
        before, after = _service_key_of(old), _service_key_of(new)
        if before != after or _managed_by(old) != _managed_by(new):
            for key in (before, after):
                if key is not None:
                    self.queue.add(key)
            return
        self._slice_event(new)

    def _slice_deleted(self, s: JSON) -> None:
        key = _service_key_of(s)
        if key is None:
            return
        ours = self._writes.observed_delete(key, slice_name(s))
        if _managed_by(s) == CONTROLLER and not ours:
            self.queue.add(key)

    async def run(self) -> None:
        await asyncio.gather(self._services.synced.wait(), self._pods.synced.wait(), self._slices.synced.wait(),
                             self._nodes.synced.wait())
        await super().run()

    def _managed_slices(self, namespace: str, name: str) -> list[JSON]:
        return [s for s in self._slices.list(namespace)
                if (objects.meta(s).get("labels") or {}).get(SERVICE_NAME) == name and _managed_by(s) == CONTROLLER]

    async def reconcile(self, key: Hashable) -> None:
        key = str(key)
        namespace, _, name = key.partition("/")
        svc = self._services.get(key)
        if svc is None:
            # Its slices go with it (they are owned by it: the garbage collector deletes them).
            self._triggers.forget(key)
            self._writes.forget(key)
            return
        slices = [s for s in self._managed_slices(namespace, name) if not objects.meta(s).get("deletionTimestamp")]
        if self._writes.stale(key, {slice_name(s): s for s in slices}):
            raise Requeue(ep_mod.STALE_RETRY)
        if ep_mod.is_external_name(svc) or not ep_mod.has_selector(svc):
            for s in slices:
                await self._writer.delete(key, namespace, slice_name(s))
            return
        pods = [p for p in self._pods.list(namespace) if ep_mod.selects(svc, objects.meta(p).get("labels"))]
        trigger = ep_mod.format_trigger(self._triggers.compute(key, svc, pods))
        plan = plan_service(svc, pods, slices, self._nodes.get, max_per_slice=self._max)
        try:
            if not plan.empty():
                await self._writer.apply(key, namespace, plan, may_create=not objects.meta(svc).get("deletionTimestamp"),
                                         stamp=True, trigger=trigger)
            if plan.errors:
                raise RuntimeError("; ".join(plan.errors))
        except (RuntimeError, errors.APIError) as exc:
            self._recorder.warning(svc, "FailedToUpdateEndpointSlices",
                                   f"Error updating Endpoint Slices for Service {namespace}/{name}: {exc}")
            raise


# --- the mirroring controller ---------------------------------------------------------------------


class EndpointSliceMirroringController(Controller):
    name = "endpointslice-mirroring-controller"

    def __init__(self, client: LocalClient, services: Informer, endpoints: Informer, slices: Informer,
                 recorder: Recorder, *, max_per_subset: int = MAX_ENDPOINTS_PER_SUBSET) -> None:
        super().__init__()
        self._services = services
        self._endpoints = endpoints
        self._slices = slices
        self._recorder = recorder
        self._max = max_per_subset
        self._writes = ep_mod.WriteTracker()
        self._writer = _SliceWriter(client, self._writes)
        services.add_handlers(Handlers(on_add=self._service_event, on_delete=self._service_event,
                                       on_update=self._service_updated))
        endpoints.add_handlers(Handlers(on_add=self._endpoints_event, on_delete=self._endpoints_event,
                                        on_update=self._endpoints_updated))
        slices.add_handlers(Handlers(on_add=self._slice_event, on_update=self._slice_updated,
                                     on_delete=self._slice_deleted))

    def _service_event(self, svc: JSON) -> None:
        if not ep_mod.has_selector(svc):
            self.queue.add(ep_mod.key_of(svc))

    def _service_updated(self, old: JSON, new: JSON) -> None:
        if ep_mod.has_selector(old) != ep_mod.has_selector(new):
            self.queue.add(ep_mod.key_of(new))

    def _endpoints_event(self, endpoints: JSON) -> None:
        if should_mirror(endpoints):
            self.queue.add(ep_mod.key_of(endpoints))

    def _endpoints_updated(self, old: JSON, new: JSON) -> None:
        if should_mirror(old) or should_mirror(new):
            self.queue.add(ep_mod.key_of(new))

    def _slice_event(self, s: JSON) -> None:
        key = _service_key_of(s)
        if key is not None and _managed_by(s) == MIRRORING_CONTROLLER and not self._writes.expects(key, s):
            self.queue.add(key)

    def _slice_updated(self, old: JSON, new: JSON) -> None:
        before, after = _service_key_of(old), _service_key_of(new)
        if before != after or _managed_by(old) != _managed_by(new):
            for key in (before, after):
                if key is not None:
                    self.queue.add(key)
            return
        self._slice_event(new)

    def _slice_deleted(self, s: JSON) -> None:
        key = _service_key_of(s)
        if key is None:
            return
        ours = self._writes.observed_delete(key, slice_name(s))
        if _managed_by(s) == MIRRORING_CONTROLLER and not ours:
            self.queue.add(key)

    async def run(self) -> None:
        await asyncio.gather(self._services.synced.wait(), self._endpoints.synced.wait(), self._slices.synced.wait())
        await super().run()

    async def reconcile(self, key: Hashable) -> None:
        key = str(key)
        namespace, _, name = key.partition("/")
        slices = [s for s in self._slices.list(namespace)
                  if (objects.meta(s).get("labels") or {}).get(SERVICE_NAME) == name
                  and _managed_by(s) == MIRRORING_CONTROLLER and not objects.meta(s).get("deletionTimestamp")]
        if self._writes.stale(key, {slice_name(s): s for s in slices}):
            raise Requeue(ep_mod.STALE_RETRY)
        endpoints = self._endpoints.get(key)
        svc = self._services.get(key)
        if endpoints is None or not should_mirror(endpoints) or svc is None or ep_mod.has_selector(svc):
            for s in slices:
                await self._writer.delete(key, namespace, slice_name(s))
            return
        plan = plan_mirror(endpoints, slices, max_per_subset=self._max)
        if plan.invalid:
            self._recorder.warning(endpoints, "InvalidIPAddress",
                                   f"Skipped {plan.invalid} invalid IP addresses when mirroring to EndpointSlices")
        if plan.skipped > plan.invalid:
            self._recorder.warning(endpoints, "TooManyAddressesToMirror",
                                   f"A max of {self._max} addresses can be mirrored to EndpointSlices per Endpoints "
                                   f"subset. {plan.skipped} addresses were skipped")
        if not plan.empty():
            await self._writer.apply(key, namespace, plan,
                                     may_create=not objects.meta(endpoints).get("deletionTimestamp"))
