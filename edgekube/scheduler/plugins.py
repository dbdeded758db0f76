"""Filter and score plugins, as upstream's default profile (pure functions over a snapshot).

A filter answers None when the node fits, else the reason upstream gives (the FailedScheduling
message counts nodes per reason). A score answers 0..100; the scheduler weighs and sums them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from edgekube.api import labels
from edgekube.client import objects

JSON = dict[str, Any]

# Upstream's reasons, word for word.
NODE_NAME = "node(s) didn't match the requested node name"
NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
UNSCHEDULABLE = "node(s) were unschedulable"
PORTS = "node(s) didn't have free ports for the requested pod ports"
TOO_MANY_PODS = "Too many pods"
AFFINITY = "node(s) didn't match pod affinity rules"
ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
# Reasons that removing pods from the node can cure (preemption helps).
_CURABLE_PREFIXES = ("Insufficient ", TOO_MANY_PODS, PORTS, ANTI_AFFINITY, EXISTING_ANTI_AFFINITY)

# Upstream's non-zero defaults for pods that request nothing (scoring only).
DEFAULT_MILLI_CPU = 100
DEFAULT_MEMORY = 200 * 1024 * 1024
HOSTNAME = "kubernetes.io/hostname"


@dataclasses.dataclass
class NodeInfo:
    node: JSON
    pods: dict[str, JSON] = dataclasses.field(default_factory=dict)
    # Running totals the scheduler keeps as pods come and go (None: add the pods up here).
    used: dict[str, int] | None = None
    nonzero: tuple[int, int] | None = None

    @property
    def name(self) -> str:
        return str(objects.meta(self.node).get("name"))

    @property
    def labels(self) -> Mapping[str, str]:
        return objects.meta(self.node).get("labels") or {}

    def allocatable(self) -> dict[str, int]:
        status = self.node.get("status") or {}
        return objects.resource_list(status.get("allocatable") or status.get("capacity"))

    def requested(self, *, skip: Iterable[str] = ()) -> dict[str, int]:
        skipped = set(skip)
        if self.used is not None:
            total = dict(self.used)
            for key in skipped:
                if key in self.pods:
                    for name, value in objects.pod_requests(self.pods[key]).items():
                        total[name] = total.get(name, 0) - value
            return total
        total = {}
        for key, pod in self.pods.items():
            if key in skipped:
                continue
            for name, value in objects.pod_requests(pod).items():
                total[name] = total.get(name, 0) + value
        return total

    def nonzero_requested(self) -> tuple[int, int]:
        """cpu and memory requested, counting upstream's defaults for pods that request none."""
        if self.nonzero is not None:
            return self.nonzero
        cpu = mem = 0
        for other in self.pods.values():
            c, m = nonzero_requests(other)
            cpu += c
            mem += m
        return cpu, mem


def curable(reason: str) -> bool:
    return reason.startswith(_CURABLE_PREFIXES)


# --- filters -------------------------------------------------------------------------------


def node_name(pod: JSON, info: NodeInfo) -> str | None:
    want = (pod.get("spec") or {}).get("nodeName")
    return NODE_NAME if want and want != info.name else None


def node_unschedulable(pod: JSON, info: NodeInfo) -> str | None:
    if not (info.node.get("spec") or {}).get("unschedulable"):
        return None
    taint = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
    return None if objects.tolerated(pod, taint) else UNSCHEDULABLE


def node_affinity(pod: JSON, info: NodeInfo) -> str | None:
    return None if objects.required_node_affinity_matches(pod.get("spec") or {}, info.node) else NODE_AFFINITY


def node_selector_term(term: JSON, info: NodeInfo) -> bool:
    return objects.node_selector_term_matches(term, info.node)


def taint_toleration(pod: JSON, info: NodeInfo) -> str | None:
    for taint in (info.node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not objects.tolerated(pod, taint):
            return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"
    return None


def resources_fit(pod: JSON, info: NodeInfo, *, skip: Iterable[str] = ()) -> list[str]:
    """Every reason the pod's requests do not fit (upstream lists each resource)."""
    skipped = set(skip)
    alloc = info.allocatable()
    reasons = []
    if len(info.pods) - len(skipped & info.pods.keys()) + 1 > alloc.get("pods", 110):
        reasons.append(TOO_MANY_PODS)
    want = objects.pod_requests(pod)
    if not want:
        return reasons
    used = info.requested(skip=skipped)
    for name, value in sorted(want.items()):
        if value <= 0:
            continue
        if used.get(name, 0) + value > alloc.get(name, 0):
            reasons.append(f"Insufficient {name}")
    return reasons


def host_ports(pod: JSON, info: NodeInfo, *, skip: Iterable[str] = ()) -> str | None:
    wanted = _ports(pod)
    if not wanted:
        return None
    skipped = set(skip)
    for key, other in info.pods.items():
        if key in skipped:
            continue
        for proto, ip, port in _ports(other):
            for wproto, wip, wport in wanted:
                if proto == wproto and port == wport and (ip == wip or "0.0.0.0" in (ip, wip)):
                    return PORTS
    return None


def _ports(pod: JSON) -> list[tuple[str, str, int]]:
    out = []
    spec = pod.get("spec") or {}
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                out.append((p.get("protocol") or "TCP", p.get("hostIP") or "0.0.0.0", int(p["hostPort"])))
    return out


# --- inter-pod affinity ---------------------------------------------------------------------


def _term_matches(term: JSON, owner: JSON, candidate: JSON) -> bool:
    """Whether `candidate` is selected by `owner`'s affinity term (labelSelector + namespaces)."""
    namespaces = term.get("namespaces") or []
    ns = objects.meta(candidate).get("namespace")
    if term.get("namespaceSelector") is not None:
        # {} selects every namespace; other selectors need namespace labels, which a term here
        # is not given: treat as every namespace the term names, plus the owner's own.
        if term["namespaceSelector"] and ns not in namespaces and ns != objects.meta(owner).get("namespace"):
            return False
    elif ns not in (namespaces or [objects.meta(owner).get("namespace")]):
        return False
    try:
        sel = labels.from_label_selector(term.get("labelSelector"))
    except labels.SelectorError:
        return False
    return sel.matches(objects.meta(candidate).get("labels") or {})


def _affinity_terms(pod: JSON, kind: str, mode: str) -> list[JSON]:
    aff = ((pod.get("spec") or {}).get("affinity") or {}).get(kind) or {}
    return [t for t in aff.get(mode) or [] if isinstance(t, dict)]


def _domain(info: NodeInfo, key: str) -> str | None:
    return info.labels.get(key) if key != HOSTNAME or key in info.labels else info.name


def inter_pod_affinity(pod: JSON, info: NodeInfo, nodes: Mapping[str, NodeInfo], *,
                       skip: Iterable[str] = ()) -> str | None:
    skipped = set(skip)
    me = objects.meta(pod)
    for term in _affinity_terms(pod, "podAffinity", "requiredDuringSchedulingIgnoredDuringExecution"):
        tk = term.get("topologyKey", "")
        here = _domain(info, tk)
        found_anywhere = False
        found_here = False
        for other_info in nodes.values():
            for key, other in other_info.pods.items():
                if key in skipped or not _term_matches(term, pod, other):
                    continue
                found_anywhere = True
                if here is not None and _domain(other_info, tk) == here:
                    found_here = True
        # The first pod of a group that selects itself may go anywhere (upstream's special case).
        if not found_here and (found_anywhere or not _term_matches(term, pod, pod) or here is None):
            return AFFINITY
    for term in _affinity_terms(pod, "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution"):
        tk = term.get("topologyKey", "")
        here = _domain(info, tk)
        if here is None:
            continue
        for other_info in nodes.values():
            if _domain(other_info, tk) != here:
                continue
            for key, other in other_info.pods.items():
                if key not in skipped and objects.meta(other).get("uid") != me.get("uid") and _term_matches(term, pod, other):
                    return ANTI_AFFINITY
    # Existing pods' anti-affinity against this pod (checked last, as upstream).
    for other_info, key, other, term in anti_affinity_pods(nodes):
        if key in skipped:
            continue
        tk = term.get("topologyKey", "")
        if (_domain(other_info, tk) is not None and _domain(other_info, tk) == _domain(info, tk)
                and _term_matches(term, other, pod)):
            return EXISTING_ANTI_AFFINITY
    return None


class Snapshot(dict[str, NodeInfo]):
    """Nodes by name for one scheduling cycle, with the placed pods that carry required
    anti-affinity terms found once (every filter call needs them)."""

    anti: list[tuple[NodeInfo, str, JSON, JSON]] | None = None


def anti_affinity_pods(nodes: Mapping[str, NodeInfo]) -> list[tuple[NodeInfo, str, JSON, JSON]]:
    if isinstance(nodes, Snapshot) and nodes.anti is not None:
        return nodes.anti
    out = [(info, key, pod, term) for info in nodes.values() for key, pod in info.pods.items()
           for term in _affinity_terms(pod, "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution")]
    if isinstance(nodes, Snapshot):
        nodes.anti = out
    return out


# --- scores (0..100) ------------------------------------------------------------------------


def nonzero_requests(pod: JSON, req: dict[str, int] | None = None) -> tuple[int, int]:
    req = objects.pod_requests(pod) if req is None else req
    return req.get("cpu") or DEFAULT_MILLI_CPU, req.get("memory") or DEFAULT_MEMORY


def _with(pod: JSON, info: NodeInfo) -> tuple[int, int]:
    cpu, mem = nonzero_requests(pod)
    placed_cpu, placed_mem = info.nonzero_requested()
    return cpu + placed_cpu, mem + placed_mem


def least_allocated(pod: JSON, info: NodeInfo) -> float:
    alloc = info.allocatable()
    cpu, mem = _with(pod, info)
    scores = []
    for used, cap in ((cpu, alloc.get("cpu", 0)), (mem, alloc.get("memory", 0))):
        scores.append(0.0 if cap <= 0 or used > cap else (cap - used) * 100.0 / cap)
    return sum(scores) / len(scores)


def balanced_allocation(pod: JSON, info: NodeInfo) -> float:
    alloc = info.allocatable()
    cpu, mem = _with(pod, info)
    fractions = [min(1.0, used / cap) if cap > 0 else 1.0 for used, cap in ((cpu, alloc.get("cpu", 0)),
                                                                           (mem, alloc.get("memory", 0)))]
    mean = sum(fractions) / 2
    std = (sum((f - mean) ** 2 for f in fractions) / 2) ** 0.5
    return float((1 - std) * 100)


def preferred_node_affinity(pod: JSON, info: NodeInfo) -> float:
    """Raw weight sum; normalized across nodes by the scheduler."""
    prefs = ((((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {})
             .get("preferredDuringSchedulingIgnoredDuringExecution") or [])
    return float(sum(int(p.get("weight", 0)) for p in prefs
                     if isinstance(p, dict) and node_selector_term(p.get("preference") or {}, info)))


def prefer_no_schedule(pod: JSON, info: NodeInfo) -> float:
    """Raw count of PreferNoSchedule taints not tolerated (fewer is better; reversed by the scheduler)."""
    return float(sum(1 for t in (info.node.get("spec") or {}).get("taints") or []
                     if t.get("effect") == "PreferNoSchedule" and not objects.tolerated(pod, t)))


def preferred_pod_affinity(pod: JSON, info: NodeInfo, nodes: Mapping[str, NodeInfo]) -> float:
    total = 0.0
    for kind, sign in (("podAffinity", 1), ("podAntiAffinity", -1)):
        for pref in _affinity_terms(pod, kind, "preferredDuringSchedulingIgnoredDuringExecution"):
            term = pref.get("podAffinityTerm") or {}
            tk = term.get("topologyKey", "")
            here = _domain(info, tk)
            if here is None:
                continue
            for other_info in nodes.values():
                if _domain(other_info, tk) != here:
                    continue
                for other in other_info.pods.values():
                    if _term_matches(term, pod, other):
                        total += sign * int(pref.get("weight", 0))
    return total


def spread(pod: JSON, info: NodeInfo) -> float:
    """Raw count of pods of the same controller on the node (fewer is better; the default
    topology spread by hostname)."""
    ref = objects.controller_of(pod)
    if ref is None:
        return 0.0
    uid = ref.get("uid")
    return float(sum(1 for other in info.pods.values()
                     if (objects.controller_of(other) or {}).get("uid") == uid))
