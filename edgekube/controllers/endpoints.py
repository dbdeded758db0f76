"""Endpoints controller: every Service with a selector gets an Endpoints of the pods it selects.

As upstream's endpoint-controller (pkg/controller/endpoint). For a Service with a selector, the
pods of its namespace that match it, have an IP and are not terminal become addresses: Ready pods
under `addresses`, the others under `notReadyAddresses` (all under `addresses` when the Service
publishes not-ready addresses). Pods being deleted are left out, unless the Service publishes
not-ready addresses. Each Service port is resolved per pod from its `targetPort` (a number, or
the name of a container port with the same protocol); a pod without that named port is left out
of that port's subset. The subsets are then repacked as upstream's RepackSubsets: one subset per
distinct set of addresses, with every port those addresses serve. Past 1000 addresses the
Endpoints is truncated (ready addresses first) and annotated `endpoints.kubernetes.io/over-capacity`.

Services without a selector are left alone: their Endpoints are the user's (the `kubernetes`
Service's are the runtime's), and Endpoints whose Service is gone are deleted, as upstream does
(on the Service's deletion, and once at start for leftovers). The Endpoints is written only when
its subsets, labels or capacity annotation differ from the desired ones, so a steady cluster
makes no writes; `endpoints.kubernetes.io/last-change-trigger-time` is refreshed with each write.

The pure pieces that the EndpointSlice controllers share live here too: which pods belong in
endpoints, the port a pod serves for a Service port, which Services a pod change concerns, the
trigger-time tracker and the tracker of our own writes that tells a stale cache from a fresh one.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
import ipaddress
import json
import logging
import math
import time
from collections.abc import Hashable, Iterable
from typing import Any

from edgekube._cogs import clock as clock_mod
from edgekube.api import errors
from edgekube.client import objects
from edgekube.client.events import Recorder
from edgekube.client.informer import Handlers, Informer
from edgekube.client.local import LocalClient
from edgekube.controllers.base import Controller, Requeue

log = logging.getLogger(__name__)
JSON = dict[str, Any]

TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"
OVER_CAPACITY = "endpoints.kubernetes.io/over-capacity"
HEADLESS = "service.kubernetes.io/headless"
LEADER_ELECTION = "control-plane.alpha.kubernetes.io/leader"
MAX_CAPACITY = 1000
# The runtime keeps these Endpoints (the API server's own address); nobody else writes them.
RUNTIME_OWNED = "default/kubernetes"
STALE_RETRY = 0.05  # seconds to wait for the informer to catch up with our own write


# --- services and pods --------------------------------------------------------------------


def has_selector(svc: JSON) -> bool:
    """Whether the Service selects pods. An empty selector is stored as none, as upstream's
    round trip through protobuf makes it nil: such a Service's endpoints are the user's."""
    sel = (svc.get("spec") or {}).get("selector")
    return isinstance(sel, dict) and bool(sel)


def selects(svc: JSON, labels: dict[str, str] | None) -> bool:
    sel = (svc.get("spec") or {}).get("selector")
    if not isinstance(sel, dict) or not sel:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in sel.items())


def is_external_name(svc: JSON) -> bool:
    return (svc.get("spec") or {}).get("type") == "ExternalName"


def service_ip_set(svc: JSON) -> bool:
    """Upstream's IsServiceIPSet: a cluster IP that is neither empty nor None (headless)."""
    ip = (svc.get("spec") or {}).get("clusterIP")
    return bool(ip) and ip != "None"


def services_for_pod(services: Informer, namespace: str, labels: dict[str, str] | None) -> set[str]:
    """Keys of the Services of `namespace` whose selector matches `labels`."""
    return {key_of(svc) for svc in services.list(namespace) if selects(svc, labels)}


def key_of(obj: JSON) -> str:
    m = objects.meta(obj)
    return f"{m.get('namespace')}/{m.get('name')}"


def pod_ips(pod: JSON) -> list[str]:
    status = pod.get("status") or {}
    ips = [p["ip"] for p in status.get("podIPs") or [] if isinstance(p, dict) and p.get("ip")]
    if not ips and status.get("podIP"):
        ips = [str(status["podIP"])]
    return ips


def is_ipv6(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).version == 6
    except ValueError:
        return False


def should_be_in_endpoints(pod: JSON, *, include_terminating: bool) -> bool:
    """Upstream's ShouldPodBeInEndpoints: not terminal, has an IP, and not being deleted unless
    terminating pods are wanted."""
    if objects.pod_terminal(pod) or not pod_ips(pod):
        return False
    return include_terminating or not objects.meta(pod).get("deletionTimestamp")


def should_set_hostname(pod: JSON, svc: JSON) -> bool:
    """The pod's hostname is published when its subdomain names this Service (same namespace)."""
    spec = pod.get("spec") or {}
    return (bool(spec.get("hostname")) and spec.get("subdomain") == objects.meta(svc).get("name")
            and objects.meta(svc).get("namespace") == objects.meta(pod).get("namespace"))


def find_port(pod: JSON, svc_port: JSON) -> int | None:
    """The port a pod serves for a Service port (upstream's FindPort): a numeric targetPort as is,
    a named one from the containers' (and sidecars') ports of the same protocol; None if the pod
    has no such port."""
    target = svc_port.get("targetPort") or svc_port.get("port")  # the API defaults it to the port
    if isinstance(target, bool):
        return None
    if isinstance(target, int):
        return target
    if not isinstance(target, str) or not target:
        return None
    protocol = svc_port.get("protocol") or "TCP"
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or [])
    containers += [c for c in spec.get("initContainers") or [] if isinstance(c, dict) and c.get("restartPolicy") == "Always"]
    for c in containers:
        for p in (c.get("ports") or []) if isinstance(c, dict) else []:
            if isinstance(p, dict) and p.get("name") == target and (p.get("protocol") or "TCP") == protocol:
                port = p.get("containerPort")
                return port if isinstance(port, int) else None
    return None


def pod_changed(old: JSON, new: JSON) -> tuple[bool, bool]:
    """(the pod changed in a way its endpoints show, its service membership may have changed),
    as upstream's podEndpointsChanged, plus the phase (a pod turning terminal leaves)."""
    om, nm = objects.meta(old), objects.meta(new)
    os_, ns_ = old.get("spec") or {}, new.get("spec") or {}
    membership = ((om.get("labels") or {}) != (nm.get("labels") or {})
                  or os_.get("hostname") != ns_.get("hostname") or os_.get("subdomain") != ns_.get("subdomain"))
    changed = (om.get("deletionTimestamp") != nm.get("deletionTimestamp")
               or objects.pod_ready(old) != objects.pod_ready(new)
               or pod_ips(old) != pod_ips(new)
               or (old.get("status") or {}).get("phase") != (new.get("status") or {}).get("phase")
               or os_.get("nodeName") != ns_.get("nodeName"))
    return changed, membership


def services_to_update(services: Informer, old: JSON, new: JSON) -> set[str]:
    """The Services a pod update concerns (upstream's GetServicesToUpdateOnPodChange)."""
    if objects.meta(old).get("resourceVersion") == objects.meta(new).get("resourceVersion"):
        return set()
    changed, membership = pod_changed(old, new)
    if not changed and not membership:
        return set()
    ns = str(objects.meta(new).get("namespace"))
    now = services_for_pod(services, ns, objects.meta(new).get("labels"))
    if not membership:
        return now
    before = services_for_pod(services, ns, objects.meta(old).get("labels"))
    # Only the labels changed: the Services the pod joined or left; else all of them.
    return now | before if changed else now ^ before


def sorted_pods(pods: Iterable[JSON]) -> list[JSON]:
    return sorted(pods, key=lambda p: str(objects.meta(p).get("name")))


# --- when the endpoints last changed -----------------------------------------------------------


@dataclasses.dataclass
class _TriggerState:
    pods: dict[str, datetime.datetime]
    service: datetime.datetime | None


class TriggerTimeTracker:
    """The `last-change-trigger-time` of a Service's endpoints (upstream's TriggerTimeTracker):
    the Service's creation for a Service seen the first time, else the earliest of the changes
    since the last sync (a pod's Ready transition, the Service's creation); None when nothing
    that it tracks changed."""

    def __init__(self) -> None:
        self._states: dict[str, _TriggerState] = {}

    def compute(self, key: str, svc: JSON, pods: Iterable[JSON]) -> datetime.datetime | None:
        state = self._states.get(key)
        earliest: datetime.datetime | None = None
        pod_times: dict[str, datetime.datetime] = {}
        for pod in pods:
            t = _time((objects.condition(pod, "Ready") or {}).get("lastTransitionTime"))
            if t is None:
                continue
            name = str(objects.meta(pod).get("name"))
            pod_times[name] = t
            seen = state.pods.get(name) if state else None
            if seen is None or t > seen:
                earliest = t if earliest is None else min(earliest, t)
        created = _time(objects.meta(svc).get("creationTimestamp"))
        if created is not None and (state is None or state.service is None or created > state.service):
            earliest = created if earliest is None else min(earliest, created)
        self._states[key] = _TriggerState(pod_times, created)
        if state is None:
            return created
        return earliest

    def forget(self, key: str) -> None:
        self._states.pop(key, None)


def _time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return clock_mod.parse_rfc3339(value)
    except ValueError:
        return None


def format_trigger(t: datetime.datetime | None) -> str | None:
    return clock_mod.rfc3339(t) if t is not None else None


# --- our own writes, to tell a stale cache ---------------------------------------------------------


def revision(obj: JSON) -> int:
    try:
        return int(objects.meta(obj).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


class WriteTracker:
    """Our own writes, per group (a Service's key) and object name: the revision the informer
    must reach, or that the object must be gone, before its cache may be trusted again
    (upstream's stale-endpoints and EndpointSlice trackers). An object deleted behind our back,
    or a relist, clears the expectation (`observed_delete`); an expectation the cache has not met
    after EXPIRY seconds is dropped, so a missed event cannot stall a key forever."""

    GONE = -1
    EXPIRY = 30.0

    def __init__(self) -> None:
        self._expect: dict[str, dict[str, tuple[int, float]]] = {}

    def wrote(self, group: str, obj: JSON) -> None:
        name = str(objects.meta(obj).get("name"))
        self._expect.setdefault(group, {})[name] = (revision(obj), time.monotonic())

    def deleted(self, group: str, name: str) -> None:
        self._expect.setdefault(group, {})[name] = (self.GONE, time.monotonic())

    def observed_delete(self, group: str, name: str) -> bool:
        """Forget `name`; whether its deletion was ours."""
        names = self._expect.get(group)
        if names is None or name not in names:
            return False
        want, _ = names.pop(name)
        if not names:
            del self._expect[group]
        return want == self.GONE

    def forget(self, group: str) -> None:
        self._expect.pop(group, None)

    def expects(self, group: str, obj: JSON) -> bool:
        """Whether `obj` (from an informer event) is our own latest write."""
        want = self._expect.get(group, {}).get(str(objects.meta(obj).get("name")))
        return want is not None and want[0] != self.GONE and revision(obj) == want[0]

    def stale(self, group: str, cached: dict[str, JSON]) -> bool:
        """Whether the cached objects of `group` (by name) lag behind our writes."""
        names = self._expect.get(group)
        if not names:
            return False
        stale = False
        now = time.monotonic()
        for name, (want, since) in list(names.items()):
            obj = cached.get(name)
            if want == self.GONE:
                met = obj is None or bool(objects.meta(obj).get("deletionTimestamp"))
            else:
                met = obj is not None and revision(obj) >= want
            if met or now - since > self.EXPIRY:
                del names[name]
            else:
                stale = True
        if not names:
            del self._expect[group]
        return stale


def namespace_terminating(exc: errors.APIError) -> bool:
    causes = (exc.details or {}).get("causes") or []
    return exc.code == 403 and any(isinstance(c, dict) and c.get("reason") == "NamespaceTerminating" for c in causes)


# --- the desired subsets ----------------------------------------------------------------------


def endpoint_address(svc: JSON, pod: JSON) -> JSON | None:
    """The pod's address for the Service: its IP of the Service's first family (upstream's
    podToEndpointAddressForService), with node, target and, if the pod names the Service as
    its subdomain, hostname. None if the pod has no IP of that family."""
    spec = svc.get("spec") or {}
    families = spec.get("ipFamilies") or []
    ips = pod_ips(pod)
    if families:
        v6 = families[0] == "IPv6"
    elif service_ip_set(svc):
        v6 = is_ipv6(str(spec.get("clusterIP")))
    else:
        v6 = bool(ips) and is_ipv6(ips[0])
    ip = next((i for i in ips if is_ipv6(i) == v6), None)
    if ip is None:
        return None
    m = objects.meta(pod)
    addr: JSON = {"ip": ip}
    if should_set_hostname(pod, svc):
        addr["hostname"] = (pod.get("spec") or {})["hostname"]
    addr["nodeName"] = (pod.get("spec") or {}).get("nodeName") or ""
    addr["targetRef"] = {"kind": "Pod", "namespace": m.get("namespace"), "name": m.get("name"), "uid": m.get("uid")}
    return addr


def endpoint_port(svc_port: JSON, number: int) -> JSON:
    port: JSON = {}
    if svc_port.get("name"):
        port["name"] = svc_port["name"]
    port["port"] = number
    port["protocol"] = svc_port.get("protocol") or "TCP"
    if svc_port.get("appProtocol"):
        port["appProtocol"] = svc_port["appProtocol"]
    return port


def desired_subsets(svc: JSON, pods: Iterable[JSON]) -> list[JSON]:
    """The Service's subsets from the pods it selects (already filtered by selector)."""
    spec = svc.get("spec") or {}
    publish = bool(spec.get("publishNotReadyAddresses"))
    svc_ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]
    subsets: list[JSON] = []
    for pod in sorted_pods(pods):
        if not should_be_in_endpoints(pod, include_terminating=publish):
            continue
        addr = endpoint_address(svc, pod)
        if addr is None:
            continue
        field = "addresses" if publish or objects.pod_ready(pod) else "notReadyAddresses"
        if not svc_ports:
            if spec.get("clusterIP") == "None":  # a headless Service may have no ports
                subsets.append({field: [addr]})
            continue
        for sp in svc_ports:
            number = find_port(pod, sp)
            if number is None:
                continue
            subsets.append({field: [addr], "ports": [endpoint_port(sp, number)]})
    return repack_subsets(subsets)


_PortKey = tuple[str, int, str, str]
_NO_PORTS: _PortKey = ("", -1, "", "")  # addresses of subsets without ports (headless)


def _port_key(p: JSON) -> _PortKey:
    port = p.get("port")
    return (str(p.get("name") or ""), port if isinstance(port, int) else 0, str(p.get("protocol") or "TCP"),
            str(p.get("appProtocol") or ""))


def _address_key(a: JSON) -> tuple[str, str]:
    return (str(a.get("ip") or ""), str((a.get("targetRef") or {}).get("uid") or ""))


def repack_subsets(subsets: Iterable[JSON]) -> list[JSON]:
    """Upstream's RepackSubsets: one subset per distinct set of (address, ready), holding every
    port those addresses serve; an address ready for a port in any subset is ready for it.
    Addresses sort by IP then target uid, ports by name, number and protocol, subsets by content."""
    addresses: dict[tuple[str, str], JSON] = {}
    by_port: dict[_PortKey, dict[tuple[str, str], bool]] = {}
    ports: dict[_PortKey, JSON] = {}
    for subset in subsets:
        keys = []
        for p in subset.get("ports") or []:
            keys.append(_port_key(p))
            ports.setdefault(keys[-1], p)
        for pk in keys or [_NO_PORTS]:
            served = by_port.setdefault(pk, {})
            for field, ready in (("addresses", True), ("notReadyAddresses", False)):
                for a in subset.get(field) or []:
                    ak = _address_key(a)
                    addresses.setdefault(ak, a)
                    served[ak] = served.get(ak, False) or ready
    groups: dict[frozenset[tuple[tuple[str, str], bool]], list[_PortKey]] = {}
    for pk, served in by_port.items():
        groups.setdefault(frozenset(served.items()), []).append(pk)
    out: list[JSON] = []
    for members, pks in groups.items():
        packed: JSON = {}
        up = sorted(ak for ak, r in members if r)
        down = sorted(ak for ak, r in members if not r)
        if up:
            packed["addresses"] = [copy.deepcopy(addresses[ak]) for ak in up]
        if down:
            packed["notReadyAddresses"] = [copy.deepcopy(addresses[ak]) for ak in down]
        real = sorted(pk for pk in pks if pk != _NO_PORTS)
        if real:
            packed["ports"] = [copy.deepcopy(ports[pk]) for pk in real]
        if up or down:
            out.append(packed)
    out.sort(key=lambda s: json.dumps(s, sort_keys=True))
    return out


def truncate(subsets: list[JSON]) -> bool:
    """Cut `subsets` (in place) to MAX_CAPACITY addresses, as upstream's truncateEndpoints:
    ready addresses first, each subset keeping its share (rounded up, within what is left).
    Returns whether anything was cut."""
    ready = sum(len(s.get("addresses") or []) for s in subsets)
    not_ready = sum(len(s.get("notReadyAddresses") or []) for s in subsets)
    if ready + not_ready <= MAX_CAPACITY:
        return False
    cut_ready = ready > MAX_CAPACITY
    budget, total = (MAX_CAPACITY, ready) if cut_ready else (MAX_CAPACITY - ready, not_ready)
    left = budget
    for s in subsets:
        field = "addresses" if cut_ready else "notReadyAddresses"
        items = s.get(field) or []
        share = min(math.ceil(len(items) / total * budget), left) if total else 0
        kept = items[:share]
        if kept:
            s[field] = kept
        else:
            s.pop(field, None)
        if cut_ready:
            s.pop("notReadyAddresses", None)
        left -= len(kept)
    return True


def without_ref_versions(subsets: Any) -> list[JSON]:
    """Subsets compared as upstream does: the targetRefs' resourceVersion does not count."""
    out: list[JSON] = []
    for s in subsets or []:
        if not isinstance(s, dict):
            continue
        s2 = dict(s)
        for field in ("addresses", "notReadyAddresses"):
            if field in s2:
                s2[field] = [strip_ref_version(a) for a in s2[field] or []]
                if not s2[field]:
                    del s2[field]
        if not s2.get("ports"):
            s2.pop("ports", None)
        out.append(s2)
    return out


def strip_ref_version(a: Any) -> Any:
    if not isinstance(a, dict) or not isinstance(a.get("targetRef"), dict):
        return a
    ref = {k: v for k, v in a["targetRef"].items() if k != "resourceVersion"}
    return {**a, "targetRef": ref}


def endpoints_labels(svc: JSON) -> dict[str, str]:
    labels = dict(objects.meta(svc).get("labels") or {})
    if service_ip_set(svc):
        labels.pop(HEADLESS, None)
    else:
        labels[HEADLESS] = ""
    return labels


# --- the controller ----------------------------------------------------------------------------


class EndpointsController(Controller):
    name = "endpoint-controller"
    workers = 2

    def __init__(self, client: LocalClient, services: Informer, pods: Informer, endpoints: Informer,
                 recorder: Recorder) -> None:
        super().__init__()
        self._client = client
        self._services = services
        self._pods = pods
        self._endpoints = endpoints
        self._recorder = recorder
        self._triggers = TriggerTimeTracker()
        self._writes = WriteTracker()
        services.add_handlers(Handlers(on_add=self._enqueue, on_update=lambda _old, new: self._enqueue(new),
                                       on_delete=self._enqueue))
        pods.add_handlers(Handlers(on_add=self._pod_event, on_update=self._pod_updated, on_delete=self._pod_event))
        endpoints.add_handlers(Handlers(on_update=self._endpoints_updated, on_delete=self._endpoints_deleted))

    def _enqueue(self, obj: JSON) -> None:
        self.queue.add(key_of(obj))

    def _pod_event(self, pod: JSON) -> None:
        m = objects.meta(pod)
        for key in services_for_pod(self._services, str(m.get("namespace")), m.get("labels")):
            self.queue.add(key)

    def _pod_updated(self, old: JSON, new: JSON) -> None:
        for key in services_to_update(self._services, old, new):
            self.queue.add(key)

    def _endpoints_updated(self, _old: JSON, new: JSON) -> None:
        # Someone else changed Endpoints we manage: put them right (our own writes are known).
        key = key_of(new)
        svc = self._services.get(key)
        if svc is not None and has_selector(svc) and not self._writes.expects(key, new):
            self.queue.add(key)

    def _endpoints_deleted(self, ep: JSON) -> None:
        key = key_of(ep)
        self._writes.observed_delete(key, str(objects.meta(ep).get("name")))
        self.queue.add(key)

    async def run(self) -> None:
        await asyncio.gather(self._services.synced.wait(), self._pods.synced.wait(), self._endpoints.synced.wait())
        # Endpoints left behind by Services deleted while we were down (upstream's
        # checkLeftoverEndpoints); leader-election records have no Service by design.
        for ep in self._endpoints.list():
            if LEADER_ELECTION not in (objects.meta(ep).get("annotations") or {}):
                self.queue.add(key_of(ep))
        await super().run()

    async def reconcile(self, key: Hashable) -> None:
        key = str(key)
        if key == RUNTIME_OWNED:
            return
        namespace, _, name = key.partition("/")
        svc = self._services.get(key)
        current = self._endpoints.get(key)
        if svc is None:
            self._triggers.forget(key)
            if current is not None:
                await self._delete(namespace, name)
            return
        if is_external_name(svc) or not has_selector(svc):
            return
        if self._writes.stale(key, {name: current} if current is not None else {}):
            raise Requeue(STALE_RETRY)
        pods = [p for p in self._pods.list(namespace) if selects(svc, objects.meta(p).get("labels"))]
        # Computed on every sync, so that a no-op sync still records what it has seen.
        trigger = self._triggers.compute(key, svc, pods)
        subsets = desired_subsets(svc, pods)
        over = truncate(subsets)
        labels = endpoints_labels(svc)
        if current is not None:
            has_over = OVER_CAPACITY in (objects.meta(current).get("annotations") or {})
            if (without_ref_versions(current.get("subsets")) == subsets
                    and (objects.meta(current).get("labels") or {}) == labels and has_over == over):
                return
        await self._write(svc, current, subsets=subsets, labels=labels, trigger=format_trigger(trigger), over=over)

    async def _write(self, svc: JSON, current: JSON | None, *, subsets: list[JSON], labels: dict[str, str],
                     trigger: str | None, over: bool) -> None:
        m = objects.meta(svc)
        namespace, name = str(m.get("namespace")), str(m.get("name"))
        key = f"{namespace}/{name}"

        def fill(obj: JSON) -> JSON:
            meta = obj.setdefault("metadata", {})
            annotations = dict(meta.get("annotations") or {})
            for k, value in ((TRIGGER_TIME, trigger), (OVER_CAPACITY, "truncated" if over else None)):
                if value is None:
                    annotations.pop(k, None)
                else:
                    annotations[k] = value
            for field, values in (("labels", dict(labels)), ("annotations", annotations)):
                if values:
                    meta[field] = values
                else:
                    meta.pop(field, None)
            if subsets:
                obj["subsets"] = copy.deepcopy(subsets)
            else:
                obj.pop("subsets", None)
            return obj

        wanted = fill({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": namespace}})
        try:
            if current is None:
                written = await self._client.create(wanted)
            else:
                written = await self._client.patch("v1", "Endpoints", name=name, namespace=namespace, mutate=fill)
        except errors.APIError as exc:
            if current is None and namespace_terminating(exc):
                return  # creates keep failing in a namespace being deleted; nothing to do
            if current is None:
                self._recorder.warning(wanted, "FailedToCreateEndpoint",
                                       f"Failed to create endpoint for service {namespace}/{name}: {exc.message}")
            else:
                self._recorder.warning(current, "FailedToUpdateEndpoint",
                                       f"Failed to update endpoint {namespace}/{name}: {exc.message}")
            raise
        self._writes.wrote(key, written)

    async def _delete(self, namespace: str, name: str) -> None:
        try:
            await self._client.delete("v1", "Endpoints", name=name, namespace=namespace)
        except errors.APIError as exc:
            if exc.code != 404:
                raise
        self._writes.deleted(f"{namespace}/{name}", name)
