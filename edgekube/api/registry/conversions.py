"""Versions of a built-in kind that are views over another stored version.

HorizontalPodAutoscalers are stored as autoscaling/v2; autoscaling/v1 (what kubectl 1.27's
`autoscale` creates) reads and writes the same objects through these conversions, as upstream
converts between the two: the v1 CPU target is the v2 CPU utilization metric.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

JSON = dict[str, Any]
Convert = Callable[[JSON], JSON]


def _hpa_v1_to_v2(obj: JSON) -> JSON:
    out = copy.deepcopy(obj)
    out["apiVersion"] = "autoscaling/v2"
    if out.get("spec") is None:
        out["spec"] = {}  # null is Go's zero value
    spec = out["spec"]
    if not isinstance(spec, dict):
        return out  # a client's wrong type: the decoding checks name it
    target = spec.pop("targetCPUUtilizationPercentage", None)
    if target is not None:
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}]
    status = out.get("status")
    if isinstance(status, dict):
        current = status.pop("currentCPUUtilizationPercentage", None)
        if current is not None:
            status["currentMetrics"] = [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": current}}}]
    return out


def _cpu(metrics: Any, side: str, key: str) -> Any:
    for m in metrics or []:
        res = m.get("resource") if isinstance(m, dict) else None
        if isinstance(res, dict) and res.get("name") == "cpu":
            return (res.get(side) or {}).get(key)
    return None


def _hpa_v2_to_v1(obj: JSON) -> JSON:
    out = copy.deepcopy(obj)
    out["apiVersion"] = "autoscaling/v1"
    spec = out.setdefault("spec", {})
    target = _cpu(spec.pop("metrics", None), "target", "averageUtilization")
    spec.pop("behavior", None)
    if target is not None:
        spec["targetCPUUtilizationPercentage"] = target
    status = out.get("status")
    if isinstance(status, dict):
        current = _cpu(status.pop("currentMetrics", None), "current", "averageUtilization")
        status.pop("conditions", None)
        status.setdefault("currentReplicas", 0)  # no omitempty in autoscaling/v1
        if current is not None:
            status["currentCPUUtilizationPercentage"] = current
    return out


# (gk, served version) -> (storage apiVersion, to storage, from storage)
VIEWS: dict[tuple[str, str], tuple[str, Convert, Convert]] = {
    ("HorizontalPodAutoscaler.autoscaling", "v1"): ("autoscaling/v2", _hpa_v1_to_v2, _hpa_v2_to_v1),
}


def to_storage(gk: str, version: str, obj: JSON) -> JSON:
    view = VIEWS.get((gk, version))
    if view is None or obj.get("apiVersion") == view[0]:
        return obj
    return view[1](obj)


def from_storage(gk: str, version: str, obj: JSON) -> JSON:
    view = VIEWS.get((gk, version))
    if view is None or obj.get("apiVersion") != view[0]:
        return obj
    return view[2](obj)


def storage_version(gk: str, version: str) -> str:
    view = VIEWS.get((gk, version))
    return view[0].rsplit("/", 1)[-1] if view is not None else version
