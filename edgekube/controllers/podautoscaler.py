"""HorizontalPodAutoscaler controller (autoscaling/v2), as upstream's.

Every 15 s (and when the HPA changes) each autoscaler reads its target's `scale` subresource,
the pods its selector picks, their resource requests and their usage from the metrics store
(which the kubelet feeds), and proposes a replica count per metric:

- `Resource` metrics with `Utilization` (percent of the pods' requests) or `AverageValue`
  targets, cpu and memory. Other metric types (Pods, Object, External, ContainerResource) are
  reported as unsupported with ScalingActive=False.
- Upstream's algorithm: ratio = current / target; within the 10% tolerance nothing changes.
  Pods without a reading count, when scaling down, as using 100% of their request and, when
  scaling up, 0%; pods not yet ready (CPU only) count as 0% when scaling up. If those
  assumptions flip the direction or land within tolerance, nothing changes. The largest
  proposal of all metrics wins.
- Behavior: the stabilization window (scale-down 300 s, scale-up 0 s by default: the highest
  recommendation of the window when going down, the lowest when going up) and the rate
  policies (scale-up: 4 pods or 100% per 15 s, whichever is more; scale-down: 100% per 15 s),
  with `selectPolicy` Max/Min/Disabled; min/max replicas clamp last.
- A target scaled to 0 disables autoscaling (ScalingActive=False, ScalingDisabled).
- Status: currentReplicas, desiredReplicas, currentMetrics, lastScaleTime, observedGeneration,
  conditions AbleToScale / ScalingActive / ScalingLimited with upstream's reasons; events
  SuccessfulRescale ("New size: 3; reason: cpu resource utilization (percentage of request)
  above target"), FailedGetScale, FailedGetResourceMetric, FailedComputeMetricsReplicas.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
from collections.abc import Hashable
from typing import Any

from edgekube._cogs import clock as clock_mod
from edgekube.api import errors, labels
from edgekube.api import metrics as metrics_mod
from edgekube.client import objects
from edgekube.client.events import Recorder
from edgekube.client.informer import Handlers, Informer, object_key
from edgekube.client.local import LocalClient
from edgekube.controllers.base import Controller, Requeue

log = logging.getLogger(__name__)
JSON = dict[str, Any]

SYNC_PERIOD = 15.0
TOLERANCE = 0.1
CPU_INITIALIZATION = datetime.timedelta(minutes=5)
INITIAL_READINESS_DELAY = datetime.timedelta(seconds=30)
_DEFAULT_UP = {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
               "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                            {"type": "Percent", "value": 100, "periodSeconds": 15}]}
_DEFAULT_DOWN = {"stabilizationWindowSeconds": 300, "selectPolicy": "Max",
                 "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}


class MetricError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclasses.dataclass
class _History:
    recommendations: list[tuple[datetime.datetime, int]] = dataclasses.field(default_factory=list)
    up_events: list[tuple[datetime.datetime, int]] = dataclasses.field(default_factory=list)
    down_events: list[tuple[datetime.datetime, int]] = dataclasses.field(default_factory=list)


class HorizontalPodAutoscalerController(Controller):
    name = "horizontal-pod-autoscaler"

    def __init__(self, client: LocalClient, autoscalers: Informer, pods: Informer, metrics: metrics_mod.MetricsStore,
                 events: Recorder, *, clock: clock_mod.Clock, sync_period: float = SYNC_PERIOD) -> None:
        super().__init__()
        self._client = client
        self._hpas = autoscalers
        self._pods = pods
        self._metrics = metrics
        self._events = events
        self._clock = clock
        self._period = sync_period
        self._history: dict[str, _History] = {}
        autoscalers.add_handlers(Handlers(on_add=self._enqueue, on_update=self._updated, on_delete=self._deleted))

    def _updated(self, old: JSON, new: JSON) -> None:
        # Its own status writes need no new pass (the 15 s resync follows); a spec change does.
        if objects.meta(old).get("generation") != objects.meta(new).get("generation"):
            self._enqueue(new)

    def _enqueue(self, obj: JSON) -> None:
        self.queue.add(object_key(obj))

    def _deleted(self, obj: JSON) -> None:
        self._history.pop(object_key(obj), None)

    async def reconcile(self, key: Hashable) -> None:
        hpa = self._hpas.get(str(key))
        if hpa is None:
            self._history.pop(str(key), None)
            return
        await self.sync(str(key), hpa)
        raise Requeue(self._period)

    # --- one pass -------------------------------------------------------------------------

    async def sync(self, key: str, hpa: JSON) -> None:
        spec = hpa.get("spec") or {}
        ns = objects.meta(hpa).get("namespace")
        ref = spec.get("scaleTargetRef") or {}
        now = self._clock.now()
        stamp = clock_mod.rfc3339(now)
        status = dict(hpa.get("status") or {})
        conds: JSON = {"conditions": [dict(c) for c in status.get("conditions") or []]}
        target = f"{ref.get('kind')}/{ref.get('name')}"
        try:
            scale = self._client.get_scale(str(ref.get("apiVersion") or ""), str(ref.get("kind") or ""),
                                           name=str(ref.get("name") or ""), namespace=ns)
        except errors.APIError as exc:
            message = f"the HPA controller was unable to get the target's current scale: {exc.message}"
            self._events.warning(hpa, "FailedGetScale", message)
            objects.set_condition(conds, "AbleToScale", "False", reason="FailedGetScale", message=message, now=stamp)
            await self._write_status(hpa, status, conds, None)
            return
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        min_r = int(spec.get("minReplicas") or 1)
        objects.set_condition(conds, "AbleToScale", "True", reason="SucceededGetScale",
                              message="the HPA controller was able to get the target's current scale", now=stamp)
        metric_status: list[JSON] | None = None
        if current == 0 and min_r != 0:
            desired = 0
            objects.set_condition(conds, "ScalingActive", "False", reason="ScalingDisabled",
                                  message="scaling is disabled since the replica count of the target is zero", now=stamp)
        else:
            try:
                proposal, metric_name, metric_status = self.proposal(hpa, scale, current, now)
            except MetricError as exc:
                self._events.warning(hpa, exc.reason, exc.message)
                objects.set_condition(conds, "ScalingActive", "False", reason=exc.reason,
                                      message=f"the HPA was unable to compute the replica count: {exc.message}", now=stamp)
                await self._write_status(hpa, status, conds, [], current=current)
                return
            objects.set_condition(conds, "ScalingActive", "True", reason="ValidMetricFound",
                                  message=f"the HPA was able to successfully calculate a replica count from {metric_name}",
                                  now=stamp)
            desired, limited = self.normalize(key, hpa, current, proposal, now)
            if limited:
                objects.set_condition(conds, "ScalingLimited", "True", reason=limited[0], message=limited[1], now=stamp)
            else:
                objects.set_condition(conds, "ScalingLimited", "False", reason="DesiredWithinRange",
                                      message="the desired count is within the acceptable range", now=stamp)
            if desired != current:
                try:
                    await self._client.set_scale(str(ref.get("apiVersion")), str(ref.get("kind")),
                                                 name=str(ref.get("name")), namespace=ns, replicas=desired)
                except errors.APIError as exc:
                    message = f"the HPA controller was unable to update the target scale: {exc.message}"
                    self._events.warning(hpa, "FailedRescale", f"New size: {desired}; reason: {metric_name}; error: {exc.message}")
                    objects.set_condition(conds, "AbleToScale", "False", reason="FailedUpdateScale", message=message, now=stamp)
                    await self._write_status(hpa, status, conds, metric_status, current=current)
                    return
                direction = "above" if desired > current else "below"
                self._events.normal(hpa, "SuccessfulRescale", f"New size: {desired}; reason: {metric_name} {direction} target")
                hist = self._history.setdefault(key, _History())
                (hist.up_events if desired > current else hist.down_events).append((now, abs(desired - current)))
                objects.set_condition(conds, "AbleToScale", "True", reason="SucceededRescale",
                                      message=f"the HPA controller was able to update the target scale to {desired}",
                                      now=stamp)
                status["lastScaleTime"] = stamp
            else:
                objects.set_condition(conds, "AbleToScale", "True", reason="ReadyForNewScale",
                                      message="recommended size matches current size", now=stamp)
            log.debug("hpa %s: %s current %d desired %d", key, target, current, desired)
        status["desiredReplicas"] = desired
        await self._write_status(hpa, status, conds, metric_status, current=current)

    def proposal(self, hpa: JSON, scale: JSON, current: int, now: datetime.datetime) -> tuple[int, str, list[JSON]]:
        """The largest replica count any metric asks for, its description, and the metrics' status."""
        spec = hpa.get("spec") or {}
        ns = str(objects.meta(hpa).get("namespace"))
        selector_text = (scale.get("status") or {}).get("selector") or ""
        try:
            selector = labels.parse(selector_text)
        except labels.SelectorError:
            raise MetricError("InvalidSelector", f"couldn't convert selector into a corresponding internal selector "
                                                 f"object: {selector_text!r}") from None
        if selector.empty():
            raise MetricError("InvalidSelector", "selector is required")
        pods = [p for p in self._pods.list(ns) if selector.matches(objects.meta(p).get("labels") or {})
                and not objects.meta(p).get("deletionTimestamp") and (p.get("status") or {}).get("phase") != "Failed"]
        best = -1
        best_name = ""
        statuses: list[JSON] = []
        for metric in spec.get("metrics") or []:
            if metric.get("type") != "Resource":
                raise MetricError("InvalidMetricSourceType",
                                  f"the metric source type {metric.get('type')} is not supported here yet")
            res = metric.get("resource") or {}
            replicas, name, st = self._resource_proposal(res, pods, current, now)
            statuses.append(st)
            if replicas > best:
                best, best_name = replicas, name
        if best < 0:
            raise MetricError("FailedComputeMetricsReplicas", "no metrics to compute a replica count from")
        return best, best_name, statuses

    def _resource_proposal(self, res: JSON, pods: list[JSON], current: int,
                           now: datetime.datetime) -> tuple[int, str, JSON]:
        resource = str(res.get("name"))
        if resource not in ("cpu", "memory"):
            raise MetricError("FailedGetResourceMetric", f"unable to get metrics for resource {resource}")
        target = res.get("target") or {}
        usage: dict[str, int] = {}
        requests: dict[str, int] = {}
        ready: set[str] = set()
        ignored: set[str] = set()
        missing: set[str] = set()
        for pod in pods:
            name = objects.meta(pod)["name"]
            reading = self._metrics.pod(str(objects.meta(pod).get("namespace")), name, now=now)
            requests[name] = sum(objects.resource_list((c.get("resources") or {}).get("requests")).get(resource, 0)
                                 for c in (pod.get("spec") or {}).get("containers") or [])
            if (pod.get("status") or {}).get("phase") == "Pending" or reading is None:
                missing.add(name) if reading is None and (pod.get("status") or {}).get("phase") != "Pending" \
                    else ignored.add(name)
                continue
            if resource == "cpu" and _unready_for_cpu(pod, reading, now):
                ignored.add(name)
                continue
            usage[name] = reading.total(resource)
            ready.add(name)
        if not usage:
            raise MetricError("FailedGetResourceMetric",
                              f"unable to get metrics for resource {resource}: no metrics returned from resource metrics API")
        kind = target.get("type")
        if kind == "Utilization":
            want = int(target.get("averageUtilization") or 0)
            if any(requests[n] <= 0 for n in usage):
                missing_for = sorted(n for n in usage if requests[n] <= 0)
                raise MetricError("FailedGetResourceMetric", f"missing request for {resource} in container(s) of "
                                                             f"pod(s) {', '.join(missing_for)}")
            ratio, utilization, average = _utilization(usage, requests, want)
            replicas = _replicas_for(ratio, current, usage, requests, missing, ignored, resource, want, utilization=True)
            name = f"{resource} resource utilization (percentage of request)"
            st = {"type": "Resource", "resource": {"name": resource, "current": {
                "averageUtilization": utilization, "averageValue": _quantity(resource, average)}}}
        elif kind == "AverageValue":
            want_value = objects.resource_list({resource: target.get("averageValue")}).get(resource, 0)
            if want_value <= 0:
                raise MetricError("FailedGetResourceMetric", "invalid averageValue target")
            average = sum(usage.values()) / len(usage)
            ratio = sum(usage.values()) / (want_value * len(usage))
            replicas = _replicas_for(ratio, current, usage, requests, missing, ignored, resource, want_value,
                                     utilization=False)
            name = f"{resource} resource"
            st = {"type": "Resource", "resource": {"name": resource, "current": {
                "averageValue": _quantity(resource, int(average))}}}
        else:
            raise MetricError("FailedGetResourceMetric", f"invalid target type {kind!r} for resource {resource}")
        return replicas, name, st

    # --- behavior -------------------------------------------------------------------------

    def normalize(self, key: str, hpa: JSON, current: int, desired: int,
                  now: datetime.datetime) -> tuple[int, tuple[str, str] | None]:
        spec = hpa.get("spec") or {}
        behavior = spec.get("behavior") or {}
        up = {**_DEFAULT_UP, **(behavior.get("scaleUp") or {})}
        down = {**_DEFAULT_DOWN, **(behavior.get("scaleDown") or {})}
        min_r = int(spec.get("minReplicas") or 1)
        max_r = int(spec.get("maxReplicas") or 1)
        hist = self._history.setdefault(key, _History())
        # Stabilization: the lowest recommendation of the up window, the highest of the down one.
        up_cut = now - datetime.timedelta(seconds=int(up.get("stabilizationWindowSeconds") or 0))
        down_cut = now - datetime.timedelta(seconds=int(down.get("stabilizationWindowSeconds") or 0))
        up_rec = down_rec = desired
        for at, rec in hist.recommendations:
            if at > up_cut:
                up_rec = min(up_rec, rec)
            if at > down_cut:
                down_rec = max(down_rec, rec)
        stabilized = max(current, up_rec)
        stabilized = min(stabilized, down_rec)
        keep = max(int(up.get("stabilizationWindowSeconds") or 0), int(down.get("stabilizationWindowSeconds") or 0))
        hist.recommendations = [(at, r) for at, r in hist.recommendations
                                if at > now - datetime.timedelta(seconds=keep)] + [(now, desired)]
        longest = max([int(p.get("periodSeconds") or 15) for p in [*up["policies"], *down["policies"]]] or [15])
        horizon = now - datetime.timedelta(seconds=longest)
        hist.up_events = [e for e in hist.up_events if e[0] > horizon]
        hist.down_events = [e for e in hist.down_events if e[0] > horizon]
        limited: tuple[str, str] | None = None
        result = stabilized
        if stabilized > current:
            limit = _rate_limit(current, hist.up_events, up, now, grow=True)
            if limit < current:
                limit = current
            cap = min(limit, max_r)
            if stabilized > cap:
                result = cap
                limited = ("ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate") \
                    if cap == limit and limit < max_r else ("TooManyReplicas", "the desired replica count is more than "
                                                                               "the maximum replica count")
        elif stabilized < current:
            limit = _rate_limit(current, hist.down_events, down, now, grow=False)
            if limit > current:
                limit = current
            floor = max(limit, min_r)
            if stabilized < floor:
                result = floor
                limited = ("ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale "
                                             "rate") if floor == limit and limit > min_r else \
                    ("TooFewReplicas", "the desired replica count is less than the minimum replica count")
        if result > max_r:
            result, limited = max_r, ("TooManyReplicas", "the desired replica count is more than the maximum replica count")
        if result < min_r:
            result, limited = min_r, ("TooFewReplicas", "the desired replica count is less than the minimum replica count")
        return result, limited

    # --- status ---------------------------------------------------------------------------

    async def _write_status(self, hpa: JSON, status: JSON, conds: JSON, metric_status: list[JSON] | None, *,
                            current: int | None = None) -> None:
        new = dict(status)
        new["conditions"] = conds["conditions"]
        new["observedGeneration"] = objects.meta(hpa).get("generation", 1)
        if current is not None:
            new["currentReplicas"] = current
        new.setdefault("desiredReplicas", current or 0)
        if metric_status is not None:
            if metric_status:
                new["currentMetrics"] = metric_status
            else:
                new.pop("currentMetrics", None)
        if new == (hpa.get("status") or {}):
            return
        m = objects.meta(hpa)

        def write(obj: JSON) -> JSON:
            obj["status"] = new
            return obj

        try:
            await self._client.patch(hpa["apiVersion"], hpa["kind"], name=m["name"], namespace=m.get("namespace"),
                                     mutate=write, subresource="status")
        except errors.APIError as exc:
            if exc.code != 404:
                raise


# --- the arithmetic ------------------------------------------------------------------------------


def _unready_for_cpu(pod: JSON, reading: metrics_mod.PodUsage, now: datetime.datetime) -> bool:
    """Upstream's groupPods: within 5 minutes of start, a pod counts only once ready and with a
    reading taken after it became ready; later, a pod that never became ready is ignored."""
    started = (pod.get("status") or {}).get("startTime")
    cond = objects.condition(pod, "Ready")
    if not started or cond is None:
        return True
    start = clock_mod.parse_rfc3339(started)
    since = clock_mod.parse_rfc3339(str(cond.get("lastTransitionTime") or started))
    if start + CPU_INITIALIZATION > now:
        return cond.get("status") != "True" or reading.timestamp < since + datetime.timedelta(
            seconds=reading.window_seconds)
    return cond.get("status") == "False" and start + INITIAL_READINESS_DELAY > since


def _utilization(usage: dict[str, int], requests: dict[str, int], want: int) -> tuple[float, int, float]:
    total_usage = sum(usage.values())
    total_request = sum(requests[n] for n in usage)
    utilization = int(total_usage * 100 / total_request)
    return total_usage * 100 / total_request / want, utilization, total_usage / len(usage)


def _replicas_for(ratio: float, current: int, usage: dict[str, int], requests: dict[str, int], missing: set[str],
                  ignored: set[str], resource: str, want: int, *, utilization: bool) -> int:
    ready = len(usage)
    if not missing and not ignored:
        if abs(1.0 - ratio) <= TOLERANCE:
            return current
        return math.ceil(ratio * ready)
    if ratio < 1.0 and missing:  # scaling down: missing pods use all of their request (or the target)
        for n in missing:
            usage = {**usage, n: requests.get(n, 0) if utilization else want}
    elif ratio > 1.0:  # scaling up: missing and unready pods use nothing
        for n in missing | ignored:
            usage = {**usage, n: 0}
    reqs = {n: requests.get(n, 0) for n in usage}
    if utilization:
        if sum(reqs.values()) <= 0:
            return current
        new_ratio = sum(usage.values()) * 100 / sum(reqs.values()) / want
    else:
        new_ratio = sum(usage.values()) / (want * len(usage))
    if abs(1.0 - new_ratio) <= TOLERANCE or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current
    proposed = math.ceil(new_ratio * len(usage))
    if (new_ratio < 1.0 and proposed > current) or (new_ratio > 1.0 and proposed < current):
        return current
    return proposed


def _rate_limit(current: int, events: list[tuple[datetime.datetime, int]], rules: JSON, now: datetime.datetime,
                *, grow: bool) -> int:
    select = rules.get("selectPolicy") or "Max"
    if select == "Disabled":
        return current
    proposals = []
    for policy in rules.get("policies") or []:
        period = datetime.timedelta(seconds=int(policy.get("periodSeconds") or 15))
        changed = sum(n for at, n in events if at > now - period)
        start = current - changed if grow else current + changed
        value = int(policy.get("value") or 0)
        if policy.get("type") == "Pods":
            proposals.append(start + value if grow else start - value)
        elif grow:
            proposals.append(math.ceil(start * (1 + value / 100)))
        else:
            proposals.append(int(start * (1 - value / 100)))
    if not proposals:
        return current
    if grow:
        return max(proposals) if select == "Max" else min(proposals)
    return min(proposals) if select == "Max" else max(proposals)


def _quantity(resource: str, value: float) -> str:
    if resource == "cpu":
        return f"{round(value)}m"
    return str(round(value))
