"""The scheduler: a priority queue with backoff, filter and score plugins, preemption, binding.

Pods with no node and `schedulerName: default-scheduler` enter the active queue, highest
priority first. One scheduling cycle at a time runs the filters over every node, then the
scores over the nodes that fit, picks the best (ties broken round-robin) and *assumes* the pod
there, so the next cycle counts it, while the binding (`pods/binding`) is written in the
background. A pod that fits nowhere gets PodScheduled=False with upstream's message, a
FailedScheduling event, and, when its priority allows, preempts lower-priority pods on the node
where evicting the fewest makes room (`status.nominatedNodeName`). Unschedulable pods wait,
with a per-pod backoff of 1 s doubling to 10 s, until the cluster changes (a node added or
changed, a pod gone or finished), and at least every 60 s.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from typing import Any

from edgekube._cogs import clock as clock_mod
from edgekube.api import errors
from edgekube.api.registry import rest
from edgekube.client import objects
from edgekube.client.events import Recorder
from edgekube.client.informer import Handlers, InformerFactory, object_key
from edgekube.client.local import LocalClient
from edgekube.scheduler import plugins

log = logging.getLogger(__name__)
JSON = dict[str, Any]
NAME = "default-scheduler"
_INITIAL_BACKOFF = 1.0
_MAX_BACKOFF = 10.0
_FLUSH_UNSCHEDULABLE = 60.0
# Score plugin weights, as upstream's default profile.
_WEIGHTS = {"fit": 1, "balanced": 1, "node_affinity": 2, "taints": 3, "pod_affinity": 2, "spread": 2}


class Scheduler:
    def __init__(self, client: LocalClient, informers: InformerFactory, events: Recorder, *,
                 clock: clock_mod.Clock) -> None:
        self._client = client
        self._events = events
        self._clock = clock
        self._pods = informers.get("v1", "Pod")
        self._nodes = informers.get("v1", "Node")
        self._informers = informers
        self._node_pods: dict[str, dict[str, JSON]] = {}  # node -> pod key -> pod (bound or assumed)
        self._placed: dict[str, str] = {}  # pod key -> node
        self._charged: dict[str, tuple[dict[str, int], tuple[int, int]]] = {}  # pod key -> its requests
        self._node_used: dict[str, dict[str, int]] = {}  # node -> requests of its pods, summed
        self._node_nonzero: dict[str, tuple[int, int]] = {}  # node -> cpu, memory with upstream's defaults
        self._assumed: dict[str, str] = {}  # pod key -> node, until the informer shows the binding
        self._heap: list[tuple[int, int, str]] = []
        self._queued: set[str] = set()
        self._unschedulable: dict[str, float] = {}  # pod key -> when it may be retried
        self._attempts: dict[str, int] = {}
        self._due: set[str] = set()  # unschedulable pods to retry when their backoff ends
        self._nominated: dict[str, tuple[str, JSON]] = {}  # pod key -> (node, pod): room made by preemption
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._rr = 0
        self._binds: set[asyncio.Task[None]] = set()
        self.decisions = 0
        self._pods.add_handlers(Handlers(on_add=self._pod_changed, on_update=lambda _o, n: self._pod_changed(n),
                                         on_delete=self._pod_deleted))
        self._nodes.add_handlers(Handlers(on_add=lambda _n: self._cluster_changed(),
                                          on_update=self._node_updated,
                                          on_delete=lambda _n: self._cluster_changed()))

    # --- the cache of placed pods -------------------------------------------------------------

    def _place(self, key: str, pod: JSON, node: str) -> None:
        if key in self._placed:
            self._unplace(key)
        self._placed[key] = node
        self._node_pods.setdefault(node, {})[key] = pod
        # Running totals per node, so that a cycle does not add up every placed pod again.
        req = objects.pod_requests(pod)
        self._charged[key] = (req, plugins.nonzero_requests(pod, req))
        self._charge(node, key, +1)

    def _unplace(self, key: str) -> bool:
        node = self._placed.pop(key, None)
        if node is None:
            return False
        self._node_pods.get(node, {}).pop(key, None)
        self._charge(node, key, -1)
        self._charged.pop(key, None)
        return True

    def _charge(self, node: str, key: str, sign: int) -> None:
        req, (cpu, mem) = self._charged[key]
        used = self._node_used.setdefault(node, {})
        for name, value in req.items():
            used[name] = used.get(name, 0) + sign * value
        nz = self._node_nonzero.get(node, (0, 0))
        self._node_nonzero[node] = (nz[0] + sign * cpu, nz[1] + sign * mem)

    def _pod_changed(self, pod: JSON) -> None:
        key = object_key(pod)
        spec = pod.get("spec") or {}
        node = spec.get("nodeName")
        if node:
            self._assumed.pop(key, None)
            self._nominated.pop(key, None)
            self._forget_queue(key)
            if objects.pod_terminal(pod):
                if self._unplace(key):
                    self._cluster_changed()
            else:
                self._place(key, pod, node)
            return
        if key in self._assumed:
            return  # bound by us; the informer has not seen it yet
        nominated = (pod.get("status") or {}).get("nominatedNodeName")
        if nominated:
            self._nominated[key] = (nominated, pod)
        if objects.meta(pod).get("deletionTimestamp") or spec.get("schedulerName", NAME) != NAME:
            self._forget_queue(key)
            return
        if key in self._unschedulable:
            # A changed pod (say, new tolerations) is worth trying again, after its backoff.
            return
        self._enqueue(key, pod)

    def _pod_deleted(self, pod: JSON) -> None:
        key = object_key(pod)
        self._assumed.pop(key, None)
        self._nominated.pop(key, None)
        self._forget_queue(key)
        if self._unplace(key):
            self._cluster_changed()

    def _node_updated(self, old: JSON, new: JSON) -> None:
        # Heartbeat-only status writes change nothing the filters read.
        if (old.get("spec") != new.get("spec") or objects.meta(old).get("labels") != objects.meta(new).get("labels")
                or (old.get("status") or {}).get("allocatable") != (new.get("status") or {}).get("allocatable")):
            self._cluster_changed()

    def _cluster_changed(self) -> None:
        """Something that may let an unschedulable pod fit: retry them (after their backoff)."""
        now = time.monotonic()
        for key, when in list(self._unschedulable.items()):
            if when <= now:
                del self._unschedulable[key]
                pod = self._pods.get(key)
                if pod is not None:
                    self._enqueue(key, pod)
            else:
                self._due.add(key)  # retried when its backoff ends

    def _enqueue(self, key: str, pod: JSON) -> None:
        if key in self._queued:
            return
        self._queued.add(key)
        priority = int((pod.get("spec") or {}).get("priority") or 0)
        heapq.heappush(self._heap, (-priority, next(self._seq), key))
        self._wake.set()

    def _forget_queue(self, key: str) -> None:
        self._queued.discard(key)
        self._unschedulable.pop(key, None)
        self._attempts.pop(key, None)
        self._due.discard(key)

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        await asyncio.gather(self._pods.synced.wait(), self._nodes.synced.wait())
        flush = asyncio.ensure_future(self._flush_loop())
        try:
            while True:
                while not self._heap:
                    self._wake.clear()
                    await self._wake.wait()
                _, _, key = heapq.heappop(self._heap)
                if key not in self._queued:
                    continue
                self._queued.discard(key)
                pod = self._pods.get(key)
                if pod is None or (pod.get("spec") or {}).get("nodeName") or key in self._assumed:
                    continue
                try:
                    await self.schedule_one(key, pod)
                except Exception as exc:  # a Status in one line, a bug with its traceback
                    log.warning("scheduling %s failed: %s", key, exc, exc_info=not isinstance(exc, errors.APIError))
                    self._backoff(key)
                    self._due.add(key)
                await asyncio.sleep(0)
        finally:
            flush.cancel()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(_FLUSH_UNSCHEDULABLE / 4)
            now = time.monotonic()
            for key, when in list(self._unschedulable.items()):
                if now - when >= _FLUSH_UNSCHEDULABLE - _MAX_BACKOFF:
                    del self._unschedulable[key]
                    self._due.discard(key)
                    pod = self._pods.get(key)
                    if pod is not None:
                        self._enqueue(key, pod)

    def _backoff(self, key: str) -> None:
        n = self._attempts.get(key, 0)
        self._attempts[key] = n + 1
        delay = min(_MAX_BACKOFF, _INITIAL_BACKOFF * 2**n)
        self._unschedulable[key] = time.monotonic() + delay
        asyncio.get_running_loop().call_later(delay, self._retry_if_waiting, key)

    def _retry_if_waiting(self, key: str) -> None:
        """A backoff ended: retry the pod if the cluster changed meanwhile, or if it waits for
        nothing but its backoff (binding races, API errors, a preemption under way)."""
        if key not in self._due or key not in self._unschedulable:
            return
        if self._unschedulable[key] > time.monotonic() + 0.001:
            return  # a newer backoff is running
        self._due.discard(key)
        del self._unschedulable[key]
        pod = self._pods.get(key)
        if pod is not None:
            self._enqueue(key, pod)

    def snapshot(self) -> plugins.Snapshot:
        return plugins.Snapshot({
            name: plugins.NodeInfo(node, self._node_pods.get(name, {}), used=self._node_used.get(name, {}),
                                   nonzero=self._node_nonzero.get(name, (0, 0)))
            for name, node in ((objects.meta(n).get("name"), n) for n in self._nodes.list()) if name})

    async def schedule_one(self, key: str, pod: JSON) -> None:
        nodes = self.snapshot()
        feasible, reasons = self.filter(pod, nodes)
        self.decisions += 1
        if not feasible:
            message = self.fit_message(pod, nodes, reasons)
            nominated = await self._preempt(pod, nodes, reasons)
            await self._unschedulable_pod(key, pod, message, nominated=nominated)
            return
        node = self.pick(pod, feasible, nodes)
        self._nominated.pop(key, None)
        self._assumed[key] = node
        self._place(key, {**pod, "spec": {**pod["spec"], "nodeName": node}}, node)
        task = asyncio.ensure_future(self._bind(key, pod, node))
        self._binds.add(task)
        task.add_done_callback(self._binds.discard)

    def filter(self, pod: JSON, nodes: dict[str, plugins.NodeInfo], *,
               skip: frozenset[str] = frozenset()) -> tuple[list[str], dict[str, list[str]]]:
        feasible: list[str] = []
        reasons: dict[str, list[str]] = {}
        held = self._held_for_others(pod)
        for name, info in nodes.items():
            if held.get(name):
                # Room that preemption made for a pod at least as important is not free.
                info = plugins.NodeInfo(info.node, {**info.pods, **held[name]})  # totals added up afresh
            why = self.node_reasons(pod, info, nodes, skip=skip)
            if why:
                reasons[name] = why
            else:
                feasible.append(name)
        return feasible, reasons

    def _held_for_others(self, pod: JSON) -> dict[str, dict[str, JSON]]:
        if not self._nominated:
            return {}
        me = object_key(pod)
        priority = int((pod.get("spec") or {}).get("priority") or 0)
        out: dict[str, dict[str, JSON]] = {}
        for key, (node, other) in self._nominated.items():
            if key != me and int((other.get("spec") or {}).get("priority") or 0) >= priority:
                out.setdefault(node, {})[key] = other
        return out

    def node_reasons(self, pod: JSON, info: plugins.NodeInfo, nodes: dict[str, plugins.NodeInfo], *,
                     skip: frozenset[str] = frozenset()) -> list[str]:
        for check in (plugins.node_unschedulable, plugins.node_name, plugins.taint_toleration, plugins.node_affinity):
            why = check(pod, info)
            if why:
                return [why]
        out = plugins.resources_fit(pod, info, skip=skip)
        ports = plugins.host_ports(pod, info, skip=skip)
        if ports:
            out.append(ports)
        if out:
            return out
        aff = plugins.inter_pod_affinity(pod, info, nodes, skip=skip)
        return [aff] if aff else []

    def pick(self, pod: JSON, feasible: list[str], nodes: dict[str, plugins.NodeInfo]) -> str:
        if len(feasible) == 1:
            return feasible[0]
        raw: dict[str, dict[str, float]] = {name: {} for name in feasible}
        for name in feasible:
            info = nodes[name]
            raw[name]["fit"] = plugins.least_allocated(pod, info)
            raw[name]["balanced"] = plugins.balanced_allocation(pod, info)
            raw[name]["node_affinity"] = plugins.preferred_node_affinity(pod, info)
            raw[name]["taints"] = plugins.prefer_no_schedule(pod, info)
            raw[name]["pod_affinity"] = plugins.preferred_pod_affinity(pod, info, nodes)
            raw[name]["spread"] = plugins.spread(pod, info)
        # Normalize the raw plugins to 0..100; fewer is better for taints and spread.
        for plugin, reverse in (("node_affinity", False), ("taints", True), ("pod_affinity", False), ("spread", True)):
            values = [raw[n][plugin] for n in feasible]
            lo, hi = min(values), max(values)
            for n in feasible:
                v = raw[n][plugin]
                scaled = 100.0 if hi == lo else (v - lo) * 100.0 / (hi - lo)
                raw[n][plugin] = 100.0 - scaled if reverse and hi != lo else scaled
        totals = {n: sum(_WEIGHTS[p] * v for p, v in raw[n].items()) for n in feasible}
        best = max(totals.values())
        top = [n for n in feasible if totals[n] >= best - 1e-9]
        self._rr += 1
        return top[self._rr % len(top)]

    def fit_message(self, pod: JSON, nodes: dict[str, plugins.NodeInfo], reasons: dict[str, list[str]]) -> str:
        if not nodes:
            return "no nodes available to schedule pods"  # upstream's ErrNoNodesAvailable
        message = _fit_prefix(len(nodes), reasons)
        if (pod.get("spec") or {}).get("preemptionPolicy") == "Never":
            return message
        helpful = [n for n, why in reasons.items() if all(plugins.curable(w) for w in why)]
        n = len(nodes)
        if not helpful:
            return f"{message} preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling."
        parts = []
        if len(helpful) < n:
            parts.append(f"{n - len(helpful)} Preemption is not helpful for scheduling")
        parts.append(f"{len(helpful)} No preemption victims found for incoming pod")
        return f"{message} preemption: 0/{n} nodes are available: {', '.join(sorted(parts))}."

    # --- preemption -----------------------------------------------------------------------

    async def _preempt(self, pod: JSON, nodes: dict[str, plugins.NodeInfo], reasons: dict[str, list[str]]) -> str:
        """Evict lower-priority pods from the node where that makes room with the fewest and
        least important victims; the node's name ("" when nothing helps)."""
        spec = pod.get("spec") or {}
        if spec.get("preemptionPolicy") == "Never":
            return ""
        priority = int(spec.get("priority") or 0)
        best: tuple[tuple[int, int, int], str, set[str]] | None = None
        for name, why in reasons.items():
            if not all(plugins.curable(w) for w in why):
                continue
            info = nodes[name]
            lower = sorted(((k, p) for k, p in info.pods.items()
                            if int((p.get("spec") or {}).get("priority") or 0) < priority
                            and not objects.meta(p).get("deletionTimestamp")),
                           key=lambda kp: -int((kp[1].get("spec") or {}).get("priority") or 0))
            if not lower:
                continue
            everyone = frozenset(k for k, _ in lower)
            if self.node_reasons(pod, info, nodes, skip=everyone):
                continue
            # Reprieve: keep as many victims as still lets the pod fit, most important first.
            victims = set(everyone)
            for k, _ in lower:
                if not self.node_reasons(pod, info, nodes, skip=frozenset(victims - {k})):
                    victims.discard(k)
            top = max(int((info.pods[k].get("spec") or {}).get("priority") or 0) for k in victims)
            rank = (top, len(victims), -len(info.pods))
            if best is None or rank < best[0]:
                best = (rank, name, victims)
        if best is None:
            return ""
        _, node, victims = best
        me = objects.meta(pod)
        for key in sorted(victims):
            victim = nodes[node].pods[key]
            vm = objects.meta(victim)
            self._events.normal(victim, "Preempted",
                                f"Preempted by pod {me.get('uid')} on node {node}")
            try:
                await self._client.delete("v1", "Pod", name=vm["name"], namespace=vm.get("namespace"),
                                          options=rest.DeleteOptions(precondition_uid=vm.get("uid")))
            except errors.APIError as exc:
                if exc.code not in (404, 409):
                    raise
        return node

    # --- outcomes ---------------------------------------------------------------------------

    async def _unschedulable_pod(self, key: str, pod: JSON, message: str, *, nominated: str = "") -> None:
        self._events.warning(pod, "FailedScheduling", message)
        self._backoff(key)
        if nominated:
            self._due.add(key)
            self._nominated[key] = (nominated, pod)
        now = clock_mod.rfc3339(self._clock.now())

        def mark(obj: JSON) -> JSON:
            status = obj.setdefault("status", {})
            objects.set_condition(status, "PodScheduled", "False", reason="Unschedulable", message=message,
                                  now=now, probe=True)
            if nominated:
                status["nominatedNodeName"] = nominated
            return obj

        current = objects.condition(pod, "PodScheduled")
        if (current and current.get("status") == "False" and current.get("message") == message
                and (pod.get("status") or {}).get("nominatedNodeName", "") == nominated):
            return
        try:
            await self._client.patch("v1", "Pod", name=pod["metadata"]["name"], namespace=pod["metadata"]["namespace"],
                                     mutate=mark, subresource="status")
        except errors.APIError as exc:
            if exc.code != 404:
                raise

    async def _bind(self, key: str, pod: JSON, node: str) -> None:
        meta = pod["metadata"]
        try:
            await self._client.bind(namespace=meta["namespace"], name=meta["name"], node=node, uid=meta.get("uid"))
        except errors.APIError as exc:
            log.info("binding %s to %s failed: %s", key, node, exc.message)
            if self._assumed.pop(key, None) is not None:
                self._unplace(key)
            if exc.code != 404:
                self._backoff(key)
                self._due.add(key)
            return
        except Exception:
            log.exception("binding %s to %s failed", key, node)
            if self._assumed.pop(key, None) is not None:
                self._unplace(key)
            self._backoff(key)
            self._due.add(key)
            return
        self._attempts.pop(key, None)
        self._events.normal(pod, "Scheduled", f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}")


def _fit_prefix(total: int, reasons: dict[str, list[str]]) -> str:
    counts: dict[str, int] = {}
    for why in reasons.values():
        for w in why:
            counts[w] = counts.get(w, 0) + 1
    parts = sorted(f"{n} {w}" for w, n in counts.items())
    return f"0/{total} nodes are available: {', '.join(parts)}." if parts else f"0/{total} nodes are available."
