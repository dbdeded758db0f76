"""Admission plugins LimitRanger and ResourceQuota, run by the registry on every create and update;
and on deletes, `refuse_delete` (NamespaceLifecycle's and the system PriorityClasses' rule).

The registry calls `mutate` after defaulting (upstream's mutating admission: LimitRanger fills in
container requests and limits), and `validate` after validation, just before the write (upstream's
validating admission: LimitRanger's min/max/ratio checks, then ResourceQuota). Refusals are 403
Forbidden with upstream's messages, `<resource> "<name>" is forbidden: <why>`.

LimitRanger: pods on create and claims on create and update, against every LimitRange in the
namespace (items defaulted as upstream's SetDefaults_LimitRangeItem: a Container max is the default
limit, a default limit or a min is the default request, so ranges stored before those defaults
existed act the same).

ResourceQuota (upstream's quota admission, `CheckRequest`): the object's usage (see `quota`) is
checked against each quota of the namespace that tracks it, as status.used + usage <= status.hard,
and the charge is written into those quotas' status.used *before* the object is stored: one
compare-and-swap write per quota on the revision read. Two creates racing for the last unit both
read the same revision; one write wins, the other conflicts, re-reads the quota (now charged) and
is refused. After three conflicts in a row the request fails with 409, as upstream's does.
A charge is not given back when the object's own write fails after it (upstream neither): the
ResourceQuota controller recounts the namespace when objects change and every few minutes, so an
overcharge lasts until then. A create whose name is taken is not charged at all (it will fail).
Dry runs are checked, not charged.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from edgekube._cogs import clock as clock_mod
from edgekube.api import errors, quantity
from edgekube.api.registry import quota, resources, validation
from edgekube.store import errors as store_errors
from edgekube.store import store as store_mod

JSON = dict[str, Any]
LIMIT_RANGER_ANNOTATION = "kubernetes.io/limit-ranger"
# Upstream's MaxMilliValue: beyond it, values are compared whole rather than in thousandths.
_MAX_MILLI = (2**63 - 1) // 1000
# Conflicting quota writes are retried this many times before the request fails.
_QUOTA_RETRIES = 3


class Admission:
    def __init__(self, store: store_mod.Store, *, catalog: resources.Catalog, clock: clock_mod.Clock) -> None:
        self._store = store
        self._catalog = catalog
        self._clock = clock

    def _objects(self, plural: str, namespace: str) -> list[tuple[str, int, JSON]]:
        """(key, revision, object) of the namespace's core/v1 `plural`, by name."""
        info = self._catalog.lookup("", "v1", plural)
        assert info is not None, plural
        return [(i.key, i.revision, obj) for i, obj in
                self._store.objects(self._store.scan(info.key_prefix(namespace)).items, reader="admission")]

    # --- mutating ---------------------------------------------------------------------------

    def mutate(self, info: resources.ResourceInfo, obj: JSON) -> None:
        """LimitRanger's defaults for a pod being created: each LimitRange's Container
        defaultRequest/default fill in what a container leaves out, noted in an annotation."""
        namespace = (obj.get("metadata") or {}).get("namespace")
        if info.gk != "Pod" or not namespace:
            return
        for _, _, lr in self._objects("limitranges", namespace):
            requests, limits = _container_defaults(lr)
            if requests or limits:
                _merge_pod_defaults(obj, requests, limits)

    # --- validating -------------------------------------------------------------------------

    async def validate(
        self, info: resources.ResourceInfo, obj: JSON, *, old: JSON | None, subresource: str | None, dry_run: bool
    ) -> None:
        """LimitRanger's checks, then ResourceQuota's check and charge (unless `dry_run`)."""
        if info.gk == "PriorityClass.scheduling.k8s.io" and subresource is None:
            self._one_default_priority(info, obj, creating=old is None)
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace")
        if not info.namespaced or not namespace or subresource is not None:
            return
        if old is None or not (old.get("metadata") or {}).get("deletionTimestamp"):
            self._limit_ranger(info, obj, old=old, namespace=namespace)  # it leaves objects being deleted alone
        await self._quota(info, obj, old=old, namespace=namespace, dry_run=dry_run)

    def _one_default_priority(self, info: resources.ResourceInfo, pc: JSON, *, creating: bool) -> None:
        """The Priority plugin's rule: at most one PriorityClass is the global default. Of several
        (a race), the one with the lowest value counts, as in upstream's getDefaultPriorityClass."""
        if not pc.get("globalDefault"):
            return
        stored = [i.object() for i in self._store.scan(info.key_prefix()).items]
        current = min((o for o in stored if o.get("globalDefault")), key=lambda o: int(o.get("value") or 0), default=None)
        if current is None:
            return
        other = current["metadata"]["name"]
        if creating or other != pc["metadata"]["name"]:
            raise _forbidden(info, pc, f"PriorityClass {other} is already marked as default. Only one default can exist")

    def _limit_ranger(self, info: resources.ResourceInfo, obj: JSON, *, old: JSON | None, namespace: str) -> None:
        # Pods: on create only (their containers cannot change). Claims: create and update.
        if not ((info.gk == "Pod" and old is None) or info.gk == "PersistentVolumeClaim"):
            return
        for _, _, lr in self._objects("limitranges", namespace):
            found = _pod_violations(lr, obj) if info.gk == "Pod" else _claim_violations(lr, obj)
            if found:
                raise _forbidden(info, obj, _aggregate(found))

    async def _quota(
        self, info: resources.ResourceInfo, obj: JSON, *, old: JSON | None, namespace: str, dry_run: bool
    ) -> None:
        if (info.group, info.plural) in quota.IGNORED:
            return
        evaluator = quota.evaluator_for(info.group, info.plural)
        if not evaluator.handles(obj, old=old):
            return
        found = self._objects("resourcequotas", namespace)
        if not found:
            return
        name = (obj.get("metadata") or {}).get("name", "")
        if old is None and self._store.get(info.key(name, namespace)) is not None:
            return  # the create fails with AlreadyExists: nothing to charge
        pending: set[str] = set()
        for attempt in range(_QUOTA_RETRIES + 1):
            if attempt:
                # Only the quotas whose write conflicted, as they are now (the others are charged).
                found = [f for f in self._objects("resourcequotas", namespace) if f[2]["metadata"]["name"] in pending]
                if not found:
                    return
            try:
                charges = check([f[2] for f in found], evaluator, obj, old=old, now=self._clock.now())
            except Refused as exc:
                raise _forbidden(info, obj, str(exc)) from None
            if dry_run:
                return
            failed: set[str] = set()
            for (key, revision, rq), used in zip(found, charges, strict=True):
                if used is None:
                    continue
                rq.setdefault("status", {})["used"] = quota.render(used)
                try:
                    await self._store.update(key, rq, expect_revision=revision)
                except (store_errors.ConflictError, store_errors.NotFoundError):
                    failed.add(rq["metadata"]["name"])
                except store_errors.StoreError as exc:
                    raise errors.internal(f"resource quota evaluation failed: {exc}") from None
            if not failed:
                return
            pending = failed
        raise errors.conflict("resourcequotas", sorted(pending)[0])


class Refused(Exception):
    """A quota refuses the object; the message is upstream's."""


def check(
    quotas: list[JSON], evaluator: quota.Evaluator, obj: JSON, *, old: JSON | None, now: datetime.datetime
) -> list[quota.ResourceList | None]:
    """For each quota, its new status.used with `obj` charged, or None when it does not change
    (upstream's CheckRequest). Raises Refused."""
    interesting: list[int] = []
    for i, rq in enumerate(quotas):
        if not quota.matches(rq, evaluator, obj):
            continue
        name = rq["metadata"]["name"]
        status = rq.get("status") or {}
        restricted = evaluator.matching_resources((status.get("hard") or {}).keys())
        why = evaluator.constraints(restricted, obj)
        if why:
            raise Refused(f"failed quota: {name}: {why}")
        used = status.get("used") or {}
        if any(r not in used for r in restricted):
            raise Refused(f"status unknown for quota: {name}, resources: {','.join(sorted(restricted))}")
        interesting.append(i)
    out: list[quota.ResourceList | None] = [None] * len(quotas)
    if not interesting:
        return out
    usage = evaluator.usage(obj, now=now)
    below = quota.negative(usage)
    if below:
        raise Refused(f"quota usage is negative for resource(s): {','.join(below)}")
    deltas = {i: usage for i in interesting}
    if old is not None:
        delta = quota.subtract_non_negative(usage, evaluator.usage(old, now=now))
        for i in interesting:
            if quota.matches(quotas[i], evaluator, old):
                deltas[i] = delta  # already charged for the old object: only the growth counts
    for i in interesting:
        delta = quota.remove_zeros(deltas[i])
        if not delta:
            continue
        rq = quotas[i]
        status = rq.get("status") or {}
        hard = quota.parse_list(status.get("hard"))
        used = quota.parse_list(status.get("used"))
        requested = quota.mask(delta, hard)
        new_used = quota.add(used, requested)
        over = quota.exceeded(quota.mask(new_used, requested), hard)
        if over:
            raise Refused(
                f"exceeded quota: {rq['metadata']['name']}, requested: {quota.pretty(quota.mask(requested, over))}, "
                f"used: {quota.pretty(quota.mask(used, over))}, limited: {quota.pretty(quota.mask(hard, over))}"
            )
        if not quota.equals(new_used, used):
            out[i] = new_used
    return out


# The namespaces the cluster's own objects live in: made at every boot, never deleted.
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def refuse_delete(info: resources.ResourceInfo, name: str) -> errors.APIError | None:
    """Why `name` may never be deleted, or None: upstream's NamespaceLifecycle (which spares
    kube-node-lease; here the node's leases live in it, so it is kept as well: creates into a
    missing system namespace fail until the next boot) and its system PriorityClasses."""
    if info.gk == "Namespace" and name in SYSTEM_NAMESPACES:
        return errors.forbidden_object(info.plural, name, "this namespace may not be deleted")
    if info.gk == "PriorityClass.scheduling.k8s.io" and name in validation.SYSTEM_PRIORITY_CLASSES:
        return errors.forbidden_object(info.plural, name, "this is a system priority class and cannot be deleted",
                                       group=info.group)
    return None


def _forbidden(info: resources.ResourceInfo, obj: JSON, why: str) -> errors.APIError:
    name = (obj.get("metadata") or {}).get("name") or (obj.get("metadata") or {}).get("generateName") or ""
    return errors.forbidden_object(info.plural, name, why, group=info.group)


def _aggregate(messages: list[str]) -> str:
    """Several errors as upstream's aggregate prints them: duplicates once, in brackets."""
    unique = list(dict.fromkeys(messages))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


# --- LimitRanger ----------------------------------------------------------------------------


def limit_range_items(lr: JSON) -> list[JSON]:
    """spec.limits with upstream's item defaults (Container: max -> default -> defaultRequest,
    min -> defaultRequest), on a copy."""
    out: list[JSON] = []
    for item in (lr.get("spec") or {}).get("limits") or []:
        if not isinstance(item, dict):
            continue
        item = copy.deepcopy(item)
        if item.get("type") == "Container":
            default = dict(item.get("default") or {})
            request = dict(item.get("defaultRequest") or {})
            for k, v in (item.get("max") or {}).items():
                default.setdefault(k, v)
            for k, v in default.items():
                request.setdefault(k, v)
            for k, v in (item.get("min") or {}).items():
                request.setdefault(k, v)
            item["default"], item["defaultRequest"] = default, request
        out.append(item)
    return out


def _container_defaults(lr: JSON) -> tuple[JSON, JSON]:
    requests: JSON = {}
    limits: JSON = {}
    for item in limit_range_items(lr):
        if item.get("type") == "Container":
            requests.update(item["defaultRequest"])
            limits.update(item["default"])
    return requests, limits


def _merge_pod_defaults(pod: JSON, requests: Mapping[str, Any], limits: Mapping[str, Any]) -> None:
    notes: list[str] = []
    spec = pod.get("spec") or {}
    for key, what in (("containers", "container"), ("initContainers", "init container")):
        for c in spec.get(key) or []:
            if not isinstance(c, dict):
                continue
            res = c.get("resources")
            if not isinstance(res, dict):
                res = c["resources"] = {}
            set_requests = _fill(res, "requests", requests)
            set_limits = _fill(res, "limits", limits)
            if set_requests:
                notes.append(f"{', '.join(set_requests)} request for {what} {c.get('name', '')}")
            if set_limits:
                notes.append(f"{', '.join(set_limits)} limit for {what} {c.get('name', '')}")
    if notes:
        meta = pod.setdefault("metadata", {})
        annotations = meta.get("annotations")
        if not isinstance(annotations, dict):
            annotations = meta["annotations"] = {}
        annotations[LIMIT_RANGER_ANNOTATION] = "LimitRanger plugin set: " + "; ".join(notes)


def _fill(res: JSON, part: str, defaults: Mapping[str, Any]) -> list[str]:
    """Set the defaults `res[part]` lacks; the names set, sorted."""
    have = res.get(part)
    if not isinstance(have, dict):
        have = {}
    missing = sorted(k for k in defaults if k not in have)
    if missing:
        for k in missing:
            have[k] = defaults[k]
        res[part] = have
    return missing


def _q(values: Mapping[str, Any] | None, name: str) -> quantity.Quantity | None:
    if not values or name not in values:
        return None
    try:
        return quantity.Quantity.of(values[name])
    except quantity.QuantityError:
        return None


def _compared(*values: quantity.Quantity | None) -> list[int]:
    """The values at a common precision, as upstream compares them: thousandths when all fit,
    whole units otherwise (a missing value is 0)."""
    present = [v or quantity.Quantity.of(0) for v in values]
    if all(v.whole() <= _MAX_MILLI for v in present):
        return [v.milli() for v in present]
    return [v.whole() for v in present]


def _min(kind: str, name: str, enforced: quantity.Quantity, req: Mapping[str, Any], lim: Mapping[str, Any]) -> str:
    r, lq = _q(req, name), _q(lim, name)
    rv, lv, ev = _compared(r, lq, enforced)
    if r is None:
        return f"minimum {name} usage per {kind} is {enforced}.  No request is specified"
    if rv < ev:
        return f"minimum {name} usage per {kind} is {enforced}, but request is {r}"
    if lq is not None and lv < ev:
        return f"minimum {name} usage per {kind} is {enforced}, but limit is {lq}"
    return ""


def _max(kind: str, name: str, enforced: quantity.Quantity, req: Mapping[str, Any], lim: Mapping[str, Any]) -> str:
    r, lq = _q(req, name), _q(lim, name)
    rv, lv, ev = _compared(r, lq, enforced)
    if lq is None:
        return f"maximum {name} usage per {kind} is {enforced}.  No limit is specified"
    if lv > ev:
        return f"maximum {name} usage per {kind} is {enforced}, but limit is {lq}"
    if r is not None and rv > ev:
        return f"maximum {name} usage per {kind} is {enforced}, but request is {r}"
    return ""


def _max_request(kind: str, name: str, enforced: quantity.Quantity, req: Mapping[str, Any]) -> str:
    r = _q(req, name)
    rv, _, ev = _compared(r, None, enforced)
    if r is None:
        return f"maximum {name} usage per {kind} is {enforced}.  No request is specified"
    if rv > ev:
        return f"maximum {name} usage per {kind} is {enforced}, but request is {r}"
    return ""


def _ratio(kind: str, name: str, enforced: quantity.Quantity, req: Mapping[str, Any], lim: Mapping[str, Any]) -> str:
    r, lq = _q(req, name), _q(lim, name)
    rv, lv, _ = _compared(r, lq, enforced)
    if r is None or rv == 0:
        return f"{name} max limit to request ratio per {kind} is {enforced}, but no request is specified or request is 0"
    if lq is None or lv == 0:
        return f"{name} max limit to request ratio per {kind} is {enforced}, but no limit is specified or limit is 0"
    observed = lv / rv
    shown = observed
    allowed = float(enforced.whole())
    if enforced.whole() <= _MAX_MILLI:
        observed *= 1000
        allowed = float(enforced.milli())
    if observed > allowed:
        return f"{name} max limit to request ratio per {kind} is {enforced}, but provided ratio is {shown:f}"
    return ""


def _check(kind: str, item: JSON, req: Mapping[str, Any], lim: Mapping[str, Any]) -> Iterable[str]:
    for part, rule in (("min", _min), ("max", _max), ("maxLimitRequestRatio", _ratio)):
        for name, value in (item.get(part) or {}).items():
            try:
                enforced = quantity.Quantity.of(value)
            except quantity.QuantityError:
                continue
            yield rule(kind, name, enforced, req, lim)


def _rendered(values: quota.ResourceList) -> JSON:
    return {k: str(v) for k, v in values.items()}


def _pod_violations(lr: JSON, pod: JSON) -> list[str]:
    found: list[str] = []
    spec = pod.get("spec") or {}
    for item in limit_range_items(lr):
        kind = item.get("type")
        if kind == "Container":
            for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
                res = (c.get("resources") if isinstance(c, dict) else None) or {}
                found += _check("Container", item, res.get("requests") or {}, res.get("limits") or {})
        elif kind == "Pod":
            requests = _rendered(quota.pod_resources(pod, "requests", overhead=False))
            limits = _rendered(quota.pod_resources(pod, "limits", overhead=False))
            found += _check("Pod", item, requests, limits)
    return [f for f in found if f]


def _claim_violations(lr: JSON, pvc: JSON) -> list[str]:
    """Claims: storage requests against min and max (limits are not user input for claims)."""
    found: list[str] = []
    requests = ((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}
    for item in limit_range_items(lr):
        if item.get("type") != "PersistentVolumeClaim":
            continue
        for name, value in (item.get("min") or {}).items():
            try:
                found.append(_min("PersistentVolumeClaim", name, quantity.Quantity.of(value), requests, {}))
            except quantity.QuantityError:
                continue
        for name, value in (item.get("max") or {}).items():
            try:
                found.append(_max_request("PersistentVolumeClaim", name, quantity.Quantity.of(value), requests))
            except quantity.QuantityError:
                continue
    return [f for f in found if f]
