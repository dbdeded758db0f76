"""Node lifecycle: node health, condition taints and taint-based eviction, as upstream's
node lifecycle controller and taint eviction controller (v1.33).

Health. A node is heard from when its Lease in `kube-node-lease` is renewed (`spec.renewTime`
moves) or its Ready condition's `lastHeartbeatTime` moves. Both are compared with what this
process saw last, and the time is this process's clock at that moment, never the kubelet's (so
clock skew between hosts does not matter). A node not heard from for
`controllers.node-monitor-grace-period-seconds` (60 s for a node that never posted a Ready
condition) gets Ready, MemoryPressure, DiskPressure and PIDPressure set to Unknown, reason
NodeStatusUnknown, "Kubelet stopped posting node status." (NodeStatusNeverUpdated, "Kubelet never
posted node status." for conditions it never posted); the status is written only when a condition
changes, with a resourceVersion precondition, so a heartbeat that lands meanwhile wins. Pods on
the node then get Ready=False (upstream's MarkPodsNotReady, with a NodeNotReady warning on each),
as do pods bound later to a node that is not Ready. There is no polling: each node's
reconcile is requeued for the moment its grace period would run out.

Taints. Conditions map to NoSchedule taints (TaintNodesByCondition): Ready False/Unknown to
`node.kubernetes.io/not-ready`/`unreachable`, Memory/Disk/PIDPressure and NetworkUnavailable True
to their keys, and `spec.unschedulable` to `node.kubernetes.io/unschedulable`. Ready False/Unknown
also puts `not-ready`/`unreachable` with effect NoExecute (with `timeAdded`), the two swapped at
once when Ready moves between False and Unknown, and all removed when the node is Ready again.
All taint changes of one reconcile are one write, decided again on the node as read for the write.
As upstream, new NoExecute taints are rate limited per zone (0.1 nodes/s; none while at least
55% of a zone's nodes, and more than 2, are not Ready, unless the zone has more than 50 nodes, then
0.01/s), and when every zone is fully disrupted (no Ready node at all) the control plane assumes
it is the one cut off: NoExecute taints are removed and none are added until a node is Ready
again, when every node gets a fresh grace period. Nodes labelled
`node.kubernetes.io/exclude-disruption` do not count towards zone health. Beta os/arch labels
follow the stable ones, as upstream.

Eviction (taint-eviction-controller). A pod on a node with NoExecute taints is deleted at once
when one of the taints is not tolerated, else when the shortest `tolerationSeconds` of the
tolerations used (the first matching one per taint, as upstream) has passed since the taint's
`timeAdded`; a pod that tolerates them all forever stays. Before the delete the pod gets the
DisruptionTarget condition and a TaintManagerEviction event; a scheduled eviction that no longer
applies is cancelled with one. Deviation: upstream counts from when its in-memory timer started,
so a restart of the controller manager restarts the count (and its node controller even removes
and re-adds the NoExecute taints of every node when it starts); here the count follows
`timeAdded`, which survives a restart, and taints are left in place. `timeAdded` has whole-second
precision, so a taint this process saw appear within that second counts from when it was seen:
never early.

Single node. `local_node` is the node of this process's own kubelet. Its kubelet runs in this
process, so it cannot be unreachable from here; a stale Lease means this process itself was
stopped or starved (a suspended device, a clock jump), not that the node went away. So the local
node is never marked Unknown for silence, never gets the `unreachable` taints, and the eviction
controller ignores an `unreachable` taint on it (one could only be left over). What its kubelet
reports itself (Ready False, pressure conditions) taints it as any node.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
import logging
import math
from collections.abc import Callable, Hashable
from typing import Any

from edgekube._cogs import clock as clock_mod
from edgekube.api import errors
from edgekube.api.registry import rest
from edgekube.client import objects
from edgekube.client.events import Recorder
from edgekube.client.informer import Handlers, Informer, object_key
from edgekube.client.local import LocalClient
from edgekube.controllers.base import Controller, Requeue

log = logging.getLogger(__name__)
JSON = dict[str, Any]

LEASE_NAMESPACE = "kube-node-lease"
NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
NO_EXECUTE = "NoExecute"
NO_SCHEDULE = "NoSchedule"

# Which condition status puts which NoSchedule taint on a node (upstream's
# nodeConditionToTaintKeyStatusMap).
CONDITION_TAINTS: dict[str, dict[str, str]] = {
    "Ready": {"False": NOT_READY, "Unknown": UNREACHABLE},
    "MemoryPressure": {"True": "node.kubernetes.io/memory-pressure"},
    "DiskPressure": {"True": "node.kubernetes.io/disk-pressure"},
    "NetworkUnavailable": {"True": "node.kubernetes.io/network-unavailable"},
    "PIDPressure": {"True": "node.kubernetes.io/pid-pressure"},
}
_NO_SCHEDULE_KEYS = frozenset({UNSCHEDULABLE, *(k for m in CONDITION_TAINTS.values() for k in m.values())})
# Set to Unknown when the kubelet goes silent (NetworkUnavailable belongs to the network, not it).
SILENT_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
STOPPED_REASON = "NodeStatusUnknown"
STOPPED_MESSAGE = "Kubelet stopped posting node status."
NEVER_REASON = "NodeStatusNeverUpdated"
NEVER_MESSAGE = "Kubelet never posted node status."

# kube-controller-manager's defaults.
NODE_STARTUP_GRACE_SECONDS = 60.0
EVICTION_QPS = 0.1
SECONDARY_EVICTION_QPS = 0.01
LARGE_CLUSTER_THRESHOLD = 50
UNHEALTHY_ZONE_THRESHOLD = 0.55
EXCLUDE_DISRUPTION = "node.kubernetes.io/exclude-disruption"
NORMAL, PARTIAL_DISRUPTION, FULL_DISRUPTION = "Normal", "PartialDisruption", "FullDisruption"

# Beta labels kept equal to the stable ones (upstream's labelReconcileInfo).
_LABEL_MIRRORS = (("kubernetes.io/os", "beta.kubernetes.io/os"), ("kubernetes.io/arch", "beta.kubernetes.io/arch"))

DISRUPTION_TARGET = "DisruptionTarget"
EVICTION_REASON = "DeletionByTaintManager"
EVICTION_MESSAGE = "Taint manager: deleting due to NoExecute taint"
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_SLACK = 0.05  # seconds past a deadline to wake, so that the clock has surely passed it


# --- pure helpers -----------------------------------------------------------------------------


def zone_key(node: JSON) -> str:
    """Upstream's topology zone key: region and zone, or "" when the node has neither."""
    lbl = objects.meta(node).get("labels") or {}
    zone = lbl.get("topology.kubernetes.io/zone", lbl.get("failure-domain.beta.kubernetes.io/zone", ""))
    region = lbl.get("topology.kubernetes.io/region", lbl.get("failure-domain.beta.kubernetes.io/region", ""))
    if not region and not zone:
        return ""
    return f"{region}:\x00:{zone}"


def zone_state(ready: list[str]) -> str:
    """A zone's state from its nodes' Ready statuses (upstream's ComputeZoneState)."""
    up = sum(1 for s in ready if s == "True")
    down = len(ready) - up
    if up == 0 and down > 0:
        return FULL_DISRUPTION
    if down > 2 and down / len(ready) >= UNHEALTHY_ZONE_THRESHOLD:
        return PARTIAL_DISRUPTION
    return NORMAL


def no_schedule_keys(node: JSON) -> set[str]:
    """The NoSchedule taint keys the node's conditions and `spec.unschedulable` call for."""
    keys = set()
    for c in (node.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict):
            key = CONDITION_TAINTS.get(str(c.get("type")), {}).get(str(c.get("status")))
            if key:
                keys.add(key)
    if (node.get("spec") or {}).get("unschedulable"):
        keys.add(UNSCHEDULABLE)
    return keys


def no_execute_taints(node: JSON) -> list[JSON]:
    return [t for t in (node.get("spec") or {}).get("taints") or [] if isinstance(t, dict) and t.get("effect") == NO_EXECUTE]


def eviction_time(pod: JSON, taints: list[JSON], *, started: Callable[[JSON], datetime.datetime]) -> datetime.datetime | None:
    """When `pod` must go because of the NoExecute `taints`: None when it tolerates them all
    forever, the epoch when one is not tolerated at all, else the earliest time a toleration it
    uses (the first that matches each taint) runs out, counted from `started(taint)`."""
    when: datetime.datetime | None = None
    for taint in taints:
        toleration = objects.matching_toleration(pod, taint)
        if toleration is None:
            return _EPOCH
        seconds = toleration.get("tolerationSeconds")
        if seconds is None:
            continue
        try:
            at = started(taint) + datetime.timedelta(seconds=max(0, int(seconds)))
        except (TypeError, ValueError):
            at = _EPOCH
        except OverflowError:
            continue  # an int64 past any date (2^62 s): tolerated for ever, not a failed reconcile
        when = at if when is None else min(when, at)
    return when


def _time(text: object) -> datetime.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return clock_mod.parse_rfc3339(text)
    except ValueError:
        return None


def _ready_status(node: JSON) -> str | None:
    c = objects.condition(node, "Ready")
    return str(c.get("status")) if c is not None else None


def _name(obj: JSON) -> str:
    return str(objects.meta(obj).get("name"))


# --- node health, taints and pods' readiness ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Health:
    # When this process last heard from the node, on its monotonic clock: a wall clock set
    # forward (NTP at last reaching a board without an RTC) must not make every node look silent,
    # nor one set back keep a dead node alive.
    probe: float
    heartbeat: str | None  # the Ready condition's lastHeartbeatTime last seen (None: no Ready condition)
    renew: datetime.datetime | None  # the Lease's renewTime last seen


class NodeLifecycleController(Controller):
    """Keys: a node name, or ("pod", "namespace/name") for a pod just bound to a node."""

    name = "node-lifecycle-controller"

    def __init__(self, client: LocalClient, nodes: Informer, leases: Informer, pods: Informer, events: Recorder, *,
                 clock: clock_mod.Clock, grace_seconds: float, local_node: str = "",
                 startup_grace_seconds: float = NODE_STARTUP_GRACE_SECONDS) -> None:
        super().__init__()
        self._client = client
        self._nodes = nodes
        self._leases = leases
        self._pods = pods
        self._events = events
        self._clock = clock
        self._grace = float(grace_seconds)
        self._startup_grace = float(startup_grace_seconds)
        self._local = local_node
        self._health: dict[str, Health] = {}
        self._known: dict[str, JSON] = {}  # nodes seen, for RegisteredNode / RemovingNode
        self._retry: set[str] = set()  # nodes whose pods still need marking not ready
        self._zones: dict[str, str] = {}
        self._zone_sizes: dict[str, int] = {}
        self._all_disrupted = False
        self._next_taint: dict[str, float] = {}  # zone -> monotonic time a NoExecute taint may next be added
        nodes.add_handlers(Handlers(on_add=self._node_event, on_update=lambda _old, new: self._node_event(new),
                                    on_delete=self._node_event))
        leases.add_handlers(Handlers(on_add=self._lease_event, on_update=lambda _old, new: self._lease_event(new)))
        pods.add_handlers(Handlers(on_add=lambda pod: self._pod_event(None, pod), on_update=self._pod_event))

    def _node_event(self, node: JSON) -> None:
        self.queue.add(_name(node))

    def _lease_event(self, lease: JSON) -> None:
        if objects.meta(lease).get("namespace") == LEASE_NAMESPACE:
            self.queue.add(_name(lease))

    def _pod_event(self, old: JSON | None, new: JSON) -> None:
        node = (new.get("spec") or {}).get("nodeName")
        if node and (old is None or (old.get("spec") or {}).get("nodeName") != node):
            self.queue.add(("pod", object_key(new)))

    async def run(self) -> None:
        await asyncio.gather(self._nodes.synced.wait(), self._leases.synced.wait(), self._pods.synced.wait())
        await super().run()

    async def reconcile(self, key: Hashable) -> None:
        if isinstance(key, tuple):
            await self._pod_bound(str(key[1]))
            return
        name = str(key)
        node = self._nodes.get(name)
        if node is None:
            self._forget(name)
            return
        if name not in self._known:
            self._events.normal(node, "RegisteredNode", f"Node {name} event: Registered Node {name} in Controller")
        self._known[name] = node
        now = self._clock.now()
        mono = self._clock.monotonic()
        health, grace = self._observe(node, now, mono)
        observed = _ready_status(node)
        local = name == self._local
        stale = not local and mono > health.probe + grace
        if stale:
            node = await self._mark_unknown(node, now, grace=grace)
        current = _ready_status(node)
        if current is not None and current != "True" and observed == "True":
            # The status just went Unknown here: once per transition, as upstream. The node's
            # pods are marked below, and again on a retry until that succeeds.
            self._events.normal(node, "NodeNotReady", f"Node {name} status is now: NodeNotReady")
            self._retry.add(name)
        self._update_zones(mono)
        waits: list[float] = []
        wait = await self._taint(node, current, now)
        if wait is not None:
            waits.append(wait)
        if name in self._retry:
            if current == "True":
                self._retry.discard(name)
            else:
                await self._mark_pods_not_ready(name, [p for p in self._pods.list()
                                                      if (p.get("spec") or {}).get("nodeName") == name], now)
                self._retry.discard(name)
        if not local and not stale:
            waits.append(health.probe + grace - mono + _SLACK)
        if waits:
            raise Requeue(max(_SLACK, min(waits)))

    def _forget(self, name: str) -> None:
        node = self._known.pop(name, None)
        if node is not None:
            self._events.normal(node, "RemovingNode", f"Node {name} event: Removing Node {name} from Controller")
        self._health.pop(name, None)
        self._retry.discard(name)

    # --- health ---------------------------------------------------------------------------

    def _grace_for(self, node: JSON) -> float:
        return self._grace if objects.condition(node, "Ready") is not None else self._startup_grace

    def _observe(self, node: JSON, now: datetime.datetime, mono: float) -> tuple[Health, float]:
        """Update what was last heard from the node: its heartbeat and its Lease."""
        name = _name(node)
        ready = objects.condition(node, "Ready")
        heartbeat = str(ready.get("lastHeartbeatTime") or "") if ready is not None else None
        h = self._health.get(name)
        if h is None:
            # First sight: a node that never posted status counts from its creation, any other
            # from now (after a restart every node gets a full grace period, as upstream).
            # (Its age by the wall clock, the one thing that dates it; never negative.)
            created = _time(objects.meta(node).get("creationTimestamp")) if ready is None else None
            age = max(0.0, (now - created).total_seconds()) if created is not None else 0.0
            h = Health(probe=mono - age, heartbeat=heartbeat, renew=None)
        elif heartbeat != h.heartbeat:  # posted status (or a Ready condition came or went)
            h = Health(probe=mono, heartbeat=heartbeat, renew=h.renew)
        renew = self._renew_time(name)
        # A renewal is any change of renewTime, earlier included: the node's clock may be set back.
        if renew is not None and renew != h.renew:
            h = dataclasses.replace(h, probe=mono, renew=renew)
        self._health[name] = h
        return h, self._grace_for(node)

    def _effective_ready(self, node: JSON, mono: float) -> str:
        """The node's Ready status, counting a silent node as Unknown before it is written."""
        status = _ready_status(node) or "Unknown"
        name = _name(node)
        if status != "True" or name == self._local:
            return status
        h = self._health.get(name)
        if h is None or mono <= h.probe + self._grace_for(node):
            return status
        # Silent by what its last reconcile saw; a heartbeat or renewal not reconciled yet counts.
        ready = objects.condition(node, "Ready")
        heartbeat = str(ready.get("lastHeartbeatTime") or "") if ready is not None else None
        renew = self._renew_time(name)
        if heartbeat != h.heartbeat or (renew is not None and renew != h.renew):
            return status
        return "Unknown"

    def _renew_time(self, name: str) -> datetime.datetime | None:
        lease = self._leases.get(f"{LEASE_NAMESPACE}/{name}")
        return _time(((lease or {}).get("spec") or {}).get("renewTime"))

    async def _mark_unknown(self, node: JSON, now: datetime.datetime, *, grace: float) -> JSON:
        """Ready and the pressure conditions to Unknown; written only if one changes."""
        stamp = clock_mod.rfc3339(now)
        new = copy.deepcopy(node)
        conds = new.setdefault("status", {}).setdefault("conditions", [])
        changed = False
        for kind in SILENT_CONDITIONS:
            c = next((c for c in conds if isinstance(c, dict) and c.get("type") == kind), None)
            if c is None:
                conds.append({"type": kind, "status": "Unknown", "lastHeartbeatTime": objects.meta(node).get("creationTimestamp"),
                              "lastTransitionTime": stamp, "reason": NEVER_REASON, "message": NEVER_MESSAGE})
                changed = True
            elif c.get("status") != "Unknown":
                c.update(status="Unknown", reason=STOPPED_REASON, message=STOPPED_MESSAGE, lastTransitionTime=stamp)
                changed = True
        if not changed:
            return node
        new["apiVersion"], new["kind"] = "v1", "Node"
        log.info("node %s: not heard from for %ss; conditions set to Unknown", _name(node), grace)
        # With the cached resourceVersion: a heartbeat written meanwhile makes this a conflict,
        # and the retry sees the node alive.
        return await self._client.update(new, subresource="status")

    # --- zones ------------------------------------------------------------------------------

    def _update_zones(self, mono: float) -> None:
        ready: dict[str, list[str]] = {}
        for node in self._nodes.list():
            if EXCLUDE_DISRUPTION in (objects.meta(node).get("labels") or {}):
                continue
            ready.setdefault(zone_key(node), []).append(self._effective_ready(node, mono))
        states = {zone: zone_state(statuses) for zone, statuses in ready.items()}
        all_disrupted = bool(states) and all(s == FULL_DISRUPTION for s in states.values())
        if states == self._zones and all_disrupted == self._all_disrupted:
            self._zone_sizes = {zone: len(s) for zone, s in ready.items()}
            return
        if all_disrupted and not self._all_disrupted:
            log.warning("no node is Ready: assuming the control plane is cut off; NoExecute taints are lifted")
        if self._all_disrupted and not all_disrupted:
            log.info("a node is Ready again: leaving full disruption mode; every node gets a fresh grace period")
            for name, h in self._health.items():
                self._health[name] = dataclasses.replace(h, probe=mono)
        for zone, state in states.items():
            if self._zones.get(zone) != state:
                self._next_taint.pop(zone, None)  # a new rate for the zone starts with a full bucket
        self._zones = states
        self._zone_sizes = {zone: len(s) for zone, s in ready.items()}
        self._all_disrupted = all_disrupted
        for node in self._nodes.list():
            self.queue.add(_name(node))

    def _take_token(self, zone: str) -> float:
        """0 when a NoExecute taint may be added in `zone` now (and counts it), else how long to
        wait (infinite while evictions are stopped there)."""
        qps = EVICTION_QPS
        if self._zones.get(zone) == PARTIAL_DISRUPTION:
            qps = SECONDARY_EVICTION_QPS if self._zone_sizes.get(zone, 0) > LARGE_CLUSTER_THRESHOLD else 0.0
        if qps <= 0:
            return math.inf
        now = self._clock.monotonic()
        ready_at = self._next_taint.get(zone, now)
        if ready_at > now:
            return ready_at - now
        self._next_taint[zone] = now + 1.0 / qps
        return 0.0

    # --- taints -----------------------------------------------------------------------------

    async def _taint(self, node: JSON, ready: str | None, now: datetime.datetime) -> float | None:
        """Bring the node's lifecycle taints in line; returns how long to wait for the rate limiter."""
        name = _name(node)
        local = name == self._local
        taints = [t for t in (node.get("spec") or {}).get("taints") or [] if isinstance(t, dict)]
        existing = {str(t.get("key")) for t in taints if t.get("effect") == NO_EXECUTE and t.get("key") in (NOT_READY, UNREACHABLE)}
        add: set[str] = set()
        remove: set[str] = set()
        wait: float | None = None
        want = NOT_READY if ready == "False" else UNREACHABLE if ready == "Unknown" and not local else None
        if local and UNREACHABLE in existing:
            remove.add(UNREACHABLE)
        if ready == "True" or self._all_disrupted:
            remove |= existing
        elif want is not None and want not in existing:
            opposite = UNREACHABLE if want == NOT_READY else NOT_READY
            if opposite in existing:  # Ready moved between False and Unknown: swap at once
                add.add(want)
                remove.add(opposite)
            else:
                delay = self._take_token(zone_key(node))
                if delay == 0:
                    add.add(want)
                elif math.isfinite(delay):
                    wait = delay
        no_schedule_ok = self._no_schedule(node) == {str(t.get("key")) for t in taints
                                                     if t.get("effect") == NO_SCHEDULE and t.get("key") in _NO_SCHEDULE_KEYS}
        if not add and not remove and no_schedule_ok and not _label_fixes(node):
            return wait
        stamp = clock_mod.rfc3339(now)

        def mutate(fresh: JSON) -> JSON:
            spec = fresh.setdefault("spec", {})
            current = [t for t in spec.get("taints") or [] if isinstance(t, dict)]
            if _ready_status(fresh) == ready:  # else the node changed meanwhile: its update decides again
                current = [t for t in current if not (t.get("effect") == NO_EXECUTE and t.get("key") in remove)]
                for key in sorted(add):
                    if not any(t.get("key") == key and t.get("effect") == NO_EXECUTE for t in current):
                        current.append({"key": key, "effect": NO_EXECUTE, "timeAdded": stamp})
            wanted = self._no_schedule(fresh)
            current = [t for t in current if not (t.get("effect") == NO_SCHEDULE and t.get("key") in _NO_SCHEDULE_KEYS
                                                  and t.get("key") not in wanted)]
            for key in sorted(wanted):
                if not any(t.get("key") == key and t.get("effect") == NO_SCHEDULE for t in current):
                    current.append({"key": key, "effect": NO_SCHEDULE, "timeAdded": stamp})
            if current:
                spec["taints"] = current
            else:
                spec.pop("taints", None)
            fixes = _label_fixes(fresh)
            if fixes:
                fresh["metadata"]["labels"] = {**(fresh["metadata"].get("labels") or {}), **fixes}
            return fresh

        try:
            await self._client.patch("v1", "Node", name=name, mutate=mutate)
        except errors.APIError as exc:
            if exc.code != 404:
                raise
        if add or remove:
            log.info("node %s: NoExecute taints %s added, %s removed", name, sorted(add), sorted(remove))
        return wait

    def _no_schedule(self, node: JSON) -> set[str]:
        keys = no_schedule_keys(node)
        if _name(node) == self._local:
            keys.discard(UNREACHABLE)
        return keys

    # --- pods -------------------------------------------------------------------------------

    async def _pod_bound(self, key: str) -> None:
        """A pod bound to a node that is not Ready is not ready either (upstream's processPod)."""
        pod = self._pods.get(key)
        if pod is None:
            return
        node_name = str((pod.get("spec") or {}).get("nodeName") or "")
        node = self._nodes.get(node_name) if node_name else None
        if node is None or node_name not in self._health:
            return  # not looked at yet: its first reconcile handles its pods
        status = _ready_status(node)
        if status is not None and status != "True":
            await self._mark_pods_not_ready(node_name, [pod], self._clock.now())

    async def _mark_pods_not_ready(self, node_name: str, pods: list[JSON], now: datetime.datetime) -> None:
        stamp = clock_mod.rfc3339(now)
        failed: list[str] = []
        for pod in pods:
            if (pod.get("spec") or {}).get("nodeName") != node_name:
                continue
            ready = objects.condition(pod, "Ready")
            if ready is None or ready.get("status") == "False":
                continue
            m = objects.meta(pod)

            def mutate(fresh: JSON, uid: object = m.get("uid")) -> JSON:
                if objects.meta(fresh).get("uid") == uid and objects.condition(fresh, "Ready") is not None:
                    objects.set_condition(fresh.setdefault("status", {}), "Ready", "False", now=stamp)
                return fresh

            try:
                await self._client.patch("v1", "Pod", name=m["name"], namespace=m.get("namespace"), mutate=mutate,
                                         subresource="status")
            except errors.APIError as exc:
                if exc.code == 404:
                    continue
                log.warning("node %s: pod %s not marked not ready: %s", node_name, object_key(pod), exc)
                failed.append(object_key(pod))
                continue
            self._events.warning(pod, "NodeNotReady", "Node is not ready")
        if failed:
            raise RuntimeError(f"node {node_name}: could not mark pods {', '.join(failed)} not ready")


def _label_fixes(node: JSON) -> dict[str, str]:
    lbl = objects.meta(node).get("labels") or {}
    return {beta: lbl[stable] for stable, beta in _LABEL_MIRRORS if stable in lbl and lbl.get(beta) != lbl[stable]}


# --- taint-based eviction -------------------------------------------------------------------------


class TaintEvictionController(Controller):
    """Keys: pod keys. Deletes pods that do not tolerate their node's NoExecute taints (long enough)."""

    name = "taint-eviction-controller"

    def __init__(self, client: LocalClient, nodes: Informer, pods: Informer, events: Recorder, *,
                 clock: clock_mod.Clock, local_node: str = "") -> None:
        super().__init__()
        self._client = client
        self._nodes = nodes
        self._pods = pods
        self._events = events
        self._clock = clock
        self._local = local_node
        self._scheduled: dict[str, datetime.datetime] = {}  # pod key -> when it is to be deleted
        # node -> (key, value, timeAdded) -> when this process first saw that NoExecute taint
        self._seen: dict[str, dict[tuple[str, str, str], datetime.datetime]] = {}
        nodes.add_handlers(Handlers(on_add=self._node_event, on_update=self._node_updated, on_delete=self._node_deleted))
        pods.add_handlers(Handlers(on_add=lambda pod: self.queue.add(object_key(pod)), on_update=self._pod_updated,
                                   on_delete=lambda pod: self.queue.add(object_key(pod))))

    def _node_updated(self, old: JSON, new: JSON) -> None:
        if no_execute_taints(old) != no_execute_taints(new):
            self._node_event(new)

    def _node_deleted(self, node: JSON) -> None:
        self._seen.pop(_name(node), None)
        self._node_event(node)

    def _node_event(self, node: JSON) -> None:
        name = _name(node)
        for pod in self._pods.list():
            if (pod.get("spec") or {}).get("nodeName") == name:
                self.queue.add(object_key(pod))

    def _pod_updated(self, old: JSON, new: JSON) -> None:
        o, n = old.get("spec") or {}, new.get("spec") or {}
        if o.get("nodeName") != n.get("nodeName") or o.get("tolerations") != n.get("tolerations"):
            self.queue.add(object_key(new))

    async def run(self) -> None:
        await asyncio.gather(self._nodes.synced.wait(), self._pods.synced.wait())
        await super().run()

    def taints(self, node: JSON) -> list[JSON]:
        """The NoExecute taints that count: an `unreachable` one on the local node never does."""
        taints = no_execute_taints(node)
        if _name(node) == self._local:
            taints = [t for t in taints if t.get("key") != UNREACHABLE]
        return taints

    async def reconcile(self, key: Hashable) -> None:
        pod_key = str(key)
        pod = self._pods.get(pod_key)
        if pod is None:
            self._cancel(pod_key, None)
            return
        node_name = (pod.get("spec") or {}).get("nodeName")
        node = self._nodes.get(str(node_name)) if node_name else None
        if objects.meta(pod).get("deletionTimestamp"):
            self._scheduled.pop(pod_key, None)  # going already
            return
        taints = self.taints(node) if node is not None else []
        if node is not None:
            self._remember(_name(node), taints)
        if node is None or not taints:
            self._cancel(pod_key, pod)
            return
        now = self._clock.now()
        at = eviction_time(pod, taints, started=lambda taint: self._started(_name(node), taint, now))
        if at is None:
            self._cancel(pod_key, pod)
            return
        earlier = self._scheduled.get(pod_key)
        if earlier is not None and earlier < at:
            at = earlier  # as upstream, an eviction already scheduled keeps its time
        if at > now:
            self._scheduled[pod_key] = at
            raise Requeue((at - now).total_seconds() + _SLACK)
        await self._evict(pod, now)
        self._scheduled.pop(pod_key, None)

    def _cancel(self, pod_key: str, pod: JSON | None) -> None:
        if self._scheduled.pop(pod_key, None) is not None:
            ns, _, name = pod_key.partition("/")
            ref = pod or {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": ns, "name": name}}
            self._events.normal(ref, "TaintManagerEviction", f"Cancelling deletion of Pod {pod_key}")

    def _remember(self, node: str, taints: list[JSON]) -> None:
        seen = self._seen.get(node, {})
        now = self._clock.now()
        ids = [_taint_id(t) for t in taints]
        self._seen[node] = {i: seen.get(i, now) for i in ids}

    def _started(self, node: str, taint: JSON, now: datetime.datetime) -> datetime.datetime:
        """When the taint's toleration time starts: its timeAdded, or when this process saw it
        appear if that was within timeAdded's (whole) second, or now if it has no timeAdded."""
        seen = self._seen.get(node, {}).get(_taint_id(taint), now)
        added = _time(taint.get("timeAdded"))
        if added is None:
            return seen
        if added <= seen < added + datetime.timedelta(seconds=1):
            return seen
        return added

    async def _evict(self, pod: JSON, now: datetime.datetime) -> None:
        m = objects.meta(pod)
        ns, name = str(m.get("namespace")), str(m.get("name"))
        log.info("evicting pod %s/%s from node %s (NoExecute taint)", ns, name, (pod.get("spec") or {}).get("nodeName"))
        self._events.normal(pod, "TaintManagerEviction", f"Marking for deletion Pod {ns}/{name}")
        stamp = clock_mod.rfc3339(now)

        def mutate(fresh: JSON) -> JSON:
            if objects.meta(fresh).get("uid") == m.get("uid"):  # not another pod of that name by now
                objects.set_condition(fresh.setdefault("status", {}), DISRUPTION_TARGET, "True", reason=EVICTION_REASON,
                                      message=EVICTION_MESSAGE, now=stamp, probe=True)
            return fresh

        try:
            await self._client.patch("v1", "Pod", name=name, namespace=ns, mutate=mutate, subresource="status")
            await self._client.delete("v1", "Pod", name=name, namespace=ns,
                                      options=rest.DeleteOptions(precondition_uid=m.get("uid")))
        except errors.APIError as exc:
            if exc.code not in (404, 409):  # gone, or another pod of that name by now
                raise


def _taint_id(taint: JSON) -> tuple[str, str, str]:
    return (str(taint.get("key")), str(taint.get("value") or ""), str(taint.get("timeAdded") or ""))
