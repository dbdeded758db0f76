"""Small readers of API objects that several controllers and the scheduler share.

They read plain JSON objects (the informers' shared cache) and never mutate them.
"""

from __future__ import annotations

import datetime
from typing import Any

from edgekube._cogs import clock as clock_mod
from edgekube.api import labels, quantity

JSON = dict[str, Any]


def meta(obj: JSON) -> JSON:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def controller_of(obj: JSON) -> JSON | None:
    """The ownerReference with `controller: true`, if any."""
    for ref in meta(obj).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None


def owner_ref(owner: JSON, *, block: bool = True) -> JSON:
    m = meta(owner)
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": m["name"], "uid": m["uid"],
            "controller": True, "blockOwnerDeletion": block}


def condition(obj: JSON, kind: str) -> JSON | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == kind:
            return c
    return None


def set_condition(status: JSON, kind: str, value: str, *, reason: str = "", message: str = "",
                  now: str, probe: bool = False, update_time: bool = False) -> bool:
    """Set a condition in `status` (a mutable copy); lastTransitionTime moves only when the status
    does. Returns whether anything changed."""
    conds = status.setdefault("conditions", [])
    for c in conds:
        if c.get("type") == kind:
            changed = c.get("status") != value or c.get("reason", "") != reason or c.get("message", "") != message
            if c.get("status") != value:
                c["lastTransitionTime"] = now
            c["status"] = value
            if reason:
                c["reason"] = reason
            if message:
                c["message"] = message
            if update_time and changed:
                c["lastUpdateTime"] = now
            return bool(changed)
    new: JSON = {"type": kind, "status": value}
    if probe:
        new["lastProbeTime"] = None
    if update_time:
        new["lastUpdateTime"] = now
    new["lastTransitionTime"] = now
    if reason:
        new["reason"] = reason
    if message:
        new["message"] = message
    conds.append(new)
    return True


def pod_ready(pod: JSON) -> bool:
    c = condition(pod, "Ready")
    return c is not None and c.get("status") == "True"


def pod_available(pod: JSON, min_ready_seconds: int, now: datetime.datetime) -> bool:
    c = condition(pod, "Ready")
    if c is None or c.get("status") != "True":
        return False
    if min_ready_seconds <= 0:
        return True
    since = c.get("lastTransitionTime")
    if not since:
        return False
    return clock_mod.parse_rfc3339(since) + datetime.timedelta(seconds=min_ready_seconds) <= now


def pod_terminal(pod: JSON) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def pod_active(pod: JSON) -> bool:
    """Not finished and not being deleted (upstream's IsPodActive)."""
    return not pod_terminal(pod) and not meta(pod).get("deletionTimestamp")


def toleration_matches(t: JSON, taint: JSON) -> bool:
    """Whether toleration `t` tolerates `taint` (upstream's Toleration.ToleratesTaint)."""
    if t.get("effect") and t.get("effect") != taint.get("effect"):
        return False
    op = t.get("operator") or "Equal"
    if not t.get("key"):
        return op == "Exists"
    if t.get("key") != taint.get("key"):
        return False
    if op == "Exists":
        return True
    return (t.get("value") or "") == (taint.get("value") or "")


def matching_toleration(pod: JSON, taint: JSON) -> JSON | None:
    """The pod's first toleration of `taint` (the one upstream's taint manager goes by), if any."""
    for t in (pod.get("spec") or {}).get("tolerations") or []:
        if isinstance(t, dict) and toleration_matches(t, taint):
            return t
    return None


def tolerated(pod: JSON, taint: JSON) -> bool:
    return matching_toleration(pod, taint) is not None


def node_selector_term_matches(term: JSON, node: JSON) -> bool:
    """A nodeSelectorTerm: its matchExpressions on the node's labels and matchFields on
    metadata.name, all true; an empty term matches no node (upstream's NodeSelectorTerm)."""
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False
    have = meta(node).get("labels") or {}
    for e in exprs:
        key = e.get("key", "")
        if not _node_requirement(e, have.get(key), key in have):
            return False
    name = meta(node).get("name")
    return all(f.get("key") == "metadata.name" and _node_requirement(f, name, True) for f in fields)


def required_node_affinity_matches(spec: JSON, node: JSON) -> bool:
    """The pod spec's nodeSelector and required node affinity (upstream's GetRequiredNodeAffinity)."""
    have = meta(node).get("labels") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if have.get(key) != value:
            return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if required is None:
        return True
    return any(node_selector_term_matches(t, node) for t in required.get("nodeSelectorTerms") or []
               if isinstance(t, dict))


def _node_requirement(expr: JSON, value: str | None, present: bool) -> bool:
    op = expr.get("operator")
    values = expr.get("values") or []
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        try:
            have, want = int(value or ""), int(values[0])
        except (ValueError, IndexError):
            return False
        return have > want if op == "Gt" else have < want
    return False


def selector_of(obj: JSON) -> labels.Selector | None:
    """The object's spec.selector as a Selector; None when missing or invalid (matches nothing)."""
    sel = (obj.get("spec") or {}).get("selector")
    if not isinstance(sel, dict):
        return None
    try:
        return labels.from_label_selector(sel)
    except labels.SelectorError:
        return None


def matches(selector: labels.Selector | None, obj: JSON) -> bool:
    if selector is None:
        return False
    return selector.matches(meta(obj).get("labels") or {})


_REQUESTS_CACHE: dict[tuple[str, str], dict[str, int]] = {}
_REQUESTS_CACHE_SIZE = 4096


def pod_requests(pod: JSON) -> dict[str, int]:
    """Effective requests, as the scheduler counts them: the larger of the sum over containers
    and the largest init container, plus pod overhead. cpu in millicores, others in units.

    A stored pod's spec never changes its requests under the same uid and resourceVersion, so
    the parsed figures are kept (the scheduler asks for them many times a cycle). Callers must
    not mutate the returned dict."""
    m = meta(pod)
    key = (str(m.get("uid") or ""), str(m.get("resourceVersion") or ""))
    if key[0] and key[1]:
        hit = _REQUESTS_CACHE.get(key)
        if hit is None:
            if len(_REQUESTS_CACHE) >= _REQUESTS_CACHE_SIZE:
                _REQUESTS_CACHE.clear()
            hit = _REQUESTS_CACHE[key] = _pod_requests(pod)
        return hit
    return _pod_requests(pod)


def _pod_requests(pod: JSON) -> dict[str, int]:
    spec = pod.get("spec") or {}
    containers: dict[str, int] = {}
    for c in spec.get("containers") or []:
        _add(containers, _requests(c))
    # Init containers run one at a time, each beside the sidecars (restartPolicy Always) started
    # before it; the sidecars then keep running beside the containers (upstream's PodRequests).
    sidecars: dict[str, int] = {}
    init: dict[str, int] = {}
    for c in spec.get("initContainers") or []:
        req = _requests(c)
        if c.get("restartPolicy") == "Always":
            _add(sidecars, req)
            step = dict(sidecars)
        else:
            step = dict(req)
            _add(step, sidecars)
        for name, value in step.items():
            init[name] = max(init.get(name, 0), value)
    total = dict(containers)
    _add(total, sidecars)
    for name, value in init.items():
        total[name] = max(total.get(name, 0), value)
    for name, value in (spec.get("overhead") or {}).items():
        total[name] = total.get(name, 0) + _amount(name, value)
    return total


def _add(into: dict[str, int], more: dict[str, int]) -> None:
    for name, value in more.items():
        into[name] = into.get(name, 0) + value


def _requests(container: JSON) -> dict[str, int]:
    res = container.get("resources") or {}
    req = dict(res.get("limits") or {})  # limits stand in for missing requests
    req.update(res.get("requests") or {})
    return {name: _amount(name, value) for name, value in req.items()}


def _amount(name: str, value: object) -> int:
    try:
        return quantity.milli(value) if name == "cpu" else quantity.whole(value)
    except quantity.QuantityError:
        return 0


def resource_list(values: JSON | None) -> dict[str, int]:
    return {name: _amount(name, v) for name, v in (values or {}).items()}
