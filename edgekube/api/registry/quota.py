"""What objects charge against a ResourceQuota, as upstream's quota evaluators measure it.

Shared by the ResourceQuota admission (which charges a new object before it is stored) and the
ResourceQuota controller (which recounts a namespace), so both agree to the unit.

- Pods (upstream's pod evaluator): `count/pods` always; while the pod is not terminal (and not
  stuck past its deletion grace period) also `pods`, `cpu`/`requests.cpu`, `limits.cpu`, the same for
  memory and ephemeral-storage, hugepages and extended resources, from the pod's effective requests
  and limits (containers summed, init containers as a maximum, sidecars included, pod overhead).
  Pods honour quota scopes: Terminating, NotTerminating, BestEffort, NotBestEffort, PriorityClass
  (with a scopeSelector's In/NotIn/Exists/DoesNotExist) and CrossNamespacePodAffinity.
- Services: `services`, `count/services`, `services.nodeports` (the ports of a NodePort or
  LoadBalancer service), `services.loadbalancers`.
- PersistentVolumeClaims: `persistentvolumeclaims`, `count/persistentvolumeclaims`,
  `requests.storage` (whole bytes), and `<class>.storageclass.storage.k8s.io/<either>`.
- Everything else: `count/<resource>[.<group>]`, plus the legacy names `configmaps`, `secrets`,
  `resourcequotas` and `replicationcontrollers`; counted on create only.

Resource lists are `{name: quantity.Quantity}`; the arithmetic (`add`, `mask`, ...) follows
upstream's quota helpers, quantity formats included, so messages and status print the same.
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from edgekube.api import quantity

JSON = dict[str, Any]
ResourceList = dict[str, quantity.Quantity]

ONE = quantity.Quantity.of("1")
ZERO = quantity.Quantity.of("0")

# If a quota limits any of these, every container must state it (upstream keeps this for
# backward compatibility and adds nothing to it).
_VALIDATION_SET = frozenset({"cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"})
_POD_RESOURCES = frozenset({
    "count/pods", "cpu", "memory", "ephemeral-storage", "requests.cpu", "requests.memory",
    "requests.ephemeral-storage", "limits.cpu", "limits.memory", "limits.ephemeral-storage", "pods",
})
_POD_PREFIXES = ("hugepages-", "requests.hugepages-")
_SERVICE_RESOURCES = frozenset({"count/services", "services", "services.nodeports", "services.loadbalancers"})
_PVC_RESOURCES = ("persistentvolumeclaims", "requests.storage")
_STORAGE_CLASS_SUFFIX = ".storageclass.storage.k8s.io/"
_LEGACY_ALIASES = {
    ("", "configmaps"): "configmaps",
    ("", "resourcequotas"): "resourcequotas",
    ("", "replicationcontrollers"): "replicationcontrollers",
    ("", "secrets"): "secrets",
}
# Upstream's quota admission ignores these (they are written far too often to be worth it).
IGNORED = frozenset({("", "events")})


# --- resource lists --------------------------------------------------------------------------


def parse_list(values: Any) -> ResourceList:
    """A stored resource map; values that are not quantities are left out (validation refuses
    them on write, so only a hand-edited store has any)."""
    out: ResourceList = {}
    if not isinstance(values, Mapping):
        return out
    for name, value in values.items():
        try:
            out[str(name)] = quantity.Quantity.of(value)
        except quantity.QuantityError:
            continue
    return out


def render(values: ResourceList) -> dict[str, str]:
    return {name: str(q) for name, q in sorted(values.items())}


def add(a: ResourceList, b: ResourceList) -> ResourceList:
    out = {k: (v + b[k]) if k in b else v for k, v in a.items()}
    for k, v in b.items():
        out.setdefault(k, v)
    return out


def subtract_non_negative(a: ResourceList, b: ResourceList) -> ResourceList:
    out: ResourceList = {}
    for k, v in a.items():
        diff = v - b[k] if k in b else v
        out[k] = diff if diff.value > 0 else ZERO
    for k in b:
        out.setdefault(k, ZERO)
    return out


def mask(values: ResourceList, names: Iterable[str]) -> ResourceList:
    keep = set(names)
    return {k: v for k, v in values.items() if k in keep}


def remove_zeros(values: ResourceList) -> ResourceList:
    return {k: v for k, v in values.items() if v.value != 0}


def negative(values: ResourceList) -> list[str]:
    return sorted(k for k, v in values.items() if v.value < 0)


def equals(a: ResourceList, b: ResourceList) -> bool:
    return a.keys() == b.keys() and all(a[k].value == b[k].value for k in a)


def exceeded(used: ResourceList, hard: ResourceList) -> list[str]:
    """The resources of `hard` that `used` goes over (upstream's LessThanOrEqual, negated)."""
    return sorted(k for k, limit in hard.items() if k in used and used[k].value > limit.value)


def pretty(values: ResourceList) -> str:
    return ",".join(f"{k}={values[k]}" for k in sorted(values))


def _add_into(total: ResourceList, values: ResourceList) -> None:
    for k, v in values.items():
        total[k] = total[k] + v if k in total else v


def _max_into(total: ResourceList, values: ResourceList) -> None:
    for k, v in values.items():
        if k not in total or v.value > total[k].value:
            total[k] = v


# --- pods ------------------------------------------------------------------------------------


def container_resources(container: Any, part: str) -> ResourceList:
    """A container's `requests` or `limits`."""
    if not isinstance(container, Mapping):
        return {}
    res = container.get("resources")
    return parse_list(res.get(part)) if isinstance(res, Mapping) else {}


def pod_resources(pod: JSON, part: str, *, overhead: bool) -> ResourceList:
    """The pod's effective `requests` or `limits` (upstream's PodRequests/PodLimits): containers
    and sidecars (restartPolicy Always init containers) add up, an init container counts with
    the sidecars started before it, and the pod takes the larger of the two. The pod overhead
    adds to requests, and to the limits the pod already has."""
    spec = pod.get("spec") or {}
    total: ResourceList = {}
    for c in spec.get("containers") or []:
        _add_into(total, container_resources(c, part))
    sidecars: ResourceList = {}
    init: ResourceList = {}
    for c in spec.get("initContainers") or []:
        values = container_resources(c, part)
        if isinstance(c, Mapping) and c.get("restartPolicy") == "Always":
            _add_into(total, values)
            _add_into(sidecars, values)
            values = dict(sidecars)
        else:
            values = add(values, sidecars)
        _max_into(init, values)
    _max_into(total, init)
    if overhead:
        extra = parse_list(spec.get("overhead"))
        if part == "limits":
            extra = mask(extra, total)
        _add_into(total, extra)
    return total


def _native(name: str) -> bool:
    return "/" not in name or "kubernetes.io/" in name


def compute_usage(requests: ResourceList, limits: ResourceList) -> ResourceList:
    """What a set of requests and limits charges (upstream's podComputeUsageHelper)."""
    out: ResourceList = {"pods": ONE}
    for name in ("cpu", "memory", "ephemeral-storage"):
        if name in requests:
            out[name] = requests[name]
            out[f"requests.{name}"] = requests[name]
        if name in limits:
            out[f"limits.{name}"] = limits[name]
    for name, value in requests.items():
        if name.startswith("hugepages-"):
            out[name] = value
            out[f"requests.{name}"] = value
        elif not _native(name) and not name.startswith("requests."):
            out[f"requests.{name}"] = value  # extended resources: requests only (no overcommit)
    return out


def pod_charged(pod: JSON, now: datetime.datetime) -> bool:
    """Terminal pods, and pods stuck terminating past their grace period, charge only their count."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    meta = pod.get("metadata") or {}
    stamp, grace = meta.get("deletionTimestamp"), meta.get("deletionGracePeriodSeconds")
    if stamp and isinstance(grace, int):
        try:
            deleted = datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
        except ValueError:
            return True
        if now > deleted + datetime.timedelta(seconds=grace):
            return False
    return True


def is_terminating(pod: JSON) -> bool:
    deadline = (pod.get("spec") or {}).get("activeDeadlineSeconds")
    return isinstance(deadline, int) and not isinstance(deadline, bool) and deadline >= 0


def qos_class(pod: JSON) -> str:
    """The pod's QoS class: its status when set (the registry sets it on create), else upstream's
    rules over cpu and memory."""
    given = (pod.get("status") or {}).get("qosClass")
    if given:
        return str(given)
    spec = pod.get("spec") or {}
    requests: ResourceList = {}
    limits: ResourceList = {}
    guaranteed = True
    for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
        req = {k: v for k, v in container_resources(c, "requests").items() if k in ("cpu", "memory") and v.value}
        lim = {k: v for k, v in container_resources(c, "limits").items() if k in ("cpu", "memory") and v.value}
        _add_into(requests, req)
        _add_into(limits, lim)
        if set(lim) != {"cpu", "memory"}:
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and len(requests) == len(limits) and all(
            k in limits and limits[k].value == v.value for k, v in requests.items()):
        return "Guaranteed"
    return "Burstable"


def _cross_namespace_affinity(pod: JSON) -> bool:
    affinity = (pod.get("spec") or {}).get("affinity") or {}
    for kind in ("podAffinity", "podAntiAffinity"):
        terms = affinity.get(kind) or {}
        found = list(terms.get("requiredDuringSchedulingIgnoredDuringExecution") or [])
        found += [w.get("podAffinityTerm") or {} for w in terms.get("preferredDuringSchedulingIgnoredDuringExecution") or []
                  if isinstance(w, Mapping)]
        if any(isinstance(t, Mapping) and (t.get("namespaces") or t.get("namespaceSelector") is not None) for t in found):
            return True
    return False


def _priority_class_matches(pod: JSON, selector: Mapping[str, Any]) -> bool:
    name = (pod.get("spec") or {}).get("priorityClassName") or ""
    op = selector.get("operator")
    values = selector.get("values") or []
    if op == "Exists":
        return bool(name)
    if op == "DoesNotExist":
        return not name
    if op == "In":
        return bool(name) and name in values
    if op == "NotIn":
        return not name or name not in values
    return False


def pod_matches_scope(selector: Mapping[str, Any], pod: JSON) -> bool:
    scope = selector.get("scopeName")
    if scope == "Terminating":
        return is_terminating(pod)
    if scope == "NotTerminating":
        return not is_terminating(pod)
    if scope == "BestEffort":
        return qos_class(pod) == "BestEffort"
    if scope == "NotBestEffort":
        return qos_class(pod) != "BestEffort"
    if scope == "PriorityClass":
        return _priority_class_matches(pod, selector)
    if scope == "CrossNamespacePodAffinity":
        return _cross_namespace_affinity(pod)
    return False


# --- evaluators ------------------------------------------------------------------------------


class Evaluator(Protocol):
    group: str
    plural: str

    def matching_resources(self, names: Iterable[str]) -> list[str]: ...

    def handles(self, obj: JSON, *, old: JSON | None) -> bool: ...

    def matches_scope(self, selector: Mapping[str, Any], obj: JSON) -> bool: ...

    def constraints(self, required: Iterable[str], obj: JSON) -> str: ...

    def usage(self, obj: JSON, *, now: datetime.datetime) -> ResourceList: ...


class PodEvaluator:
    group, plural = "", "pods"

    def matching_resources(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if n in _POD_RESOURCES or n.startswith(_POD_PREFIXES)
                or (n.startswith("requests.") and not _native(n))]

    def handles(self, obj: JSON, *, old: JSON | None) -> bool:
        # Pods are charged on create; an update only matters when it moves the pod between the
        # Terminating and NotTerminating scopes (activeDeadlineSeconds set).
        return old is None or is_terminating(old) != is_terminating(obj)

    def matches_scope(self, selector: Mapping[str, Any], obj: JSON) -> bool:
        return pod_matches_scope(selector, obj)

    def constraints(self, required: Iterable[str], obj: JSON) -> str:
        wanted = set(required) & _VALIDATION_SET
        missing: dict[str, set[str]] = {}
        spec = obj.get("spec") or {}
        for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
            have = compute_usage(container_resources(c, "requests"), container_resources(c, "limits"))
            for name in wanted - set(have):
                missing.setdefault(name, set()).add(str(c.get("name", "")) if isinstance(c, Mapping) else "")
        if not missing:
            return ""
        parts = [f"{name} for: {','.join(sorted(missing[name]))}" for name in sorted(missing)]
        return "must specify " + "; ".join(parts)

    def usage(self, obj: JSON, *, now: datetime.datetime) -> ResourceList:
        out: ResourceList = {"count/pods": ONE}
        if not pod_charged(obj, now):
            return out
        usage = compute_usage(pod_resources(obj, "requests", overhead=True), pod_resources(obj, "limits", overhead=True))
        return add(out, usage)


class ServiceEvaluator:
    group, plural = "", "services"

    def matching_resources(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if n in _SERVICE_RESOURCES]

    def handles(self, obj: JSON, *, old: JSON | None) -> bool:
        return True  # create, and updates (the type may change)

    def matches_scope(self, selector: Mapping[str, Any], obj: JSON) -> bool:
        return False

    def constraints(self, required: Iterable[str], obj: JSON) -> str:
        return ""

    def usage(self, obj: JSON, *, now: datetime.datetime) -> ResourceList:
        spec = obj.get("spec") or {}
        ports = quantity.Quantity.of(len(spec.get("ports") or []))
        kind = spec.get("type")
        return {
            "count/services": ONE,
            "services": ONE,
            "services.nodeports": ports if kind in ("NodePort", "LoadBalancer") else ZERO,
            "services.loadbalancers": ONE if kind == "LoadBalancer" else ZERO,
        }


def _storage_class(pvc: JSON) -> str:
    annotations = (pvc.get("metadata") or {}).get("annotations") or {}
    beta = annotations.get("volume.beta.kubernetes.io/storage-class")
    if beta:
        return str(beta)
    return str((pvc.get("spec") or {}).get("storageClassName") or "")


class PersistentVolumeClaimEvaluator:
    group, plural = "", "persistentvolumeclaims"

    def matching_resources(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if n == "count/persistentvolumeclaims" or n in _PVC_RESOURCES
                or any(n.endswith(_STORAGE_CLASS_SUFFIX + r) for r in _PVC_RESOURCES)]

    def handles(self, obj: JSON, *, old: JSON | None) -> bool:
        return True  # create, and updates (a claim may be expanded)

    def matches_scope(self, selector: Mapping[str, Any], obj: JSON) -> bool:
        return False

    def constraints(self, required: Iterable[str], obj: JSON) -> str:
        return ""

    def usage(self, obj: JSON, *, now: datetime.datetime) -> ResourceList:
        out: ResourceList = {"persistentvolumeclaims": ONE, "count/persistentvolumeclaims": ONE}
        klass = _storage_class(obj)
        if klass:
            out[f"{klass}{_STORAGE_CLASS_SUFFIX}persistentvolumeclaims"] = ONE
        requested = parse_list(((obj.get("spec") or {}).get("resources") or {}).get("requests")).get("storage")
        if requested is None:
            return out
        # Whole bytes; a larger allocation (an expansion that failed and was cut back) counts.
        storage = _round_up(requested)
        allocated = parse_list((obj.get("status") or {}).get("allocatedResources")).get("storage")
        if allocated is not None and allocated.value > storage.value:
            storage = _round_up(allocated)
        out["requests.storage"] = storage
        if klass:
            out[f"{klass}{_STORAGE_CLASS_SUFFIX}requests.storage"] = storage
        return out


def _round_up(q: quantity.Quantity) -> quantity.Quantity:
    whole = q.whole()
    return q if whole == q.value else quantity.Quantity(decimal.Decimal(whole), q.format)


class ObjectCountEvaluator:
    """`count/<resource>[.<group>]` (and a legacy alias): one per object, charged on create."""

    def __init__(self, group: str, plural: str) -> None:
        self.group, self.plural = group, plural
        self.names = [count_name(group, plural)]
        alias = _LEGACY_ALIASES.get((group, plural))
        if alias:
            self.names.append(alias)

    def matching_resources(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if n in self.names]

    def handles(self, obj: JSON, *, old: JSON | None) -> bool:
        return old is None

    def matches_scope(self, selector: Mapping[str, Any], obj: JSON) -> bool:
        return False

    def constraints(self, required: Iterable[str], obj: JSON) -> str:
        return ""

    def usage(self, obj: JSON, *, now: datetime.datetime) -> ResourceList:
        return {n: ONE for n in self.names}


def count_name(group: str, plural: str) -> str:
    return f"count/{plural}.{group}" if group else f"count/{plural}"


def evaluator_for(group: str, plural: str) -> Evaluator:
    if not group and plural == "pods":
        return PodEvaluator()
    if not group and plural == "services":
        return ServiceEvaluator()
    if not group and plural == "persistentvolumeclaims":
        return PersistentVolumeClaimEvaluator()
    return ObjectCountEvaluator(group, plural)


# --- quotas ----------------------------------------------------------------------------------


def scope_selectors(rq: JSON) -> list[JSON]:
    """spec.scopes (as Exists selectors) and spec.scopeSelector's expressions."""
    spec = rq.get("spec") or {}
    out: list[JSON] = [{"scopeName": s, "operator": "Exists"} for s in spec.get("scopes") or []]
    selector = spec.get("scopeSelector") or {}
    out += [dict(e) for e in selector.get("matchExpressions") or [] if isinstance(e, Mapping)]
    return out


def matches(rq: JSON, evaluator: Evaluator, obj: JSON) -> bool:
    """The quota tracks something the evaluator charges, and `obj` is in all its scopes. As
    upstream, status.hard decides: a quota the controller has not synced yet charges nothing."""
    hard = (rq.get("status") or {}).get("hard") or {}
    if not evaluator.matching_resources(hard):
        return False
    return all(evaluator.matches_scope(s, obj) for s in scope_selectors(rq))


def calculate_usage(
    rq: JSON,
    evaluators: Iterable[Evaluator],
    *,
    list_objects: Callable[[str, str], Iterable[JSON]],
    now: datetime.datetime,
) -> ResourceList:
    """What the namespace's objects use of the quota's spec.hard resources (upstream's
    CalculateUsage): each resource an evaluator tracks starts at zero, then every object in the
    quota's scopes adds its usage. Resources no evaluator tracks are left out."""
    hard = list(((rq.get("spec") or {}).get("hard") or {}).keys())
    selectors = scope_selectors(rq)
    out: ResourceList = {}
    for evaluator in evaluators:
        tracked = evaluator.matching_resources(hard)
        if not tracked:
            continue
        used: ResourceList = {name: ZERO for name in tracked}
        for obj in list_objects(evaluator.group, evaluator.plural):
            if all(evaluator.matches_scope(s, obj) for s in selectors):
                used = add(used, evaluator.usage(obj, now=now))
        out.update(mask(used, tracked))
    return out
