"""Deployment controller: rollouts through ReplicaSets, as upstream's.

- The *new* ReplicaSet is the one whose pod template equals the Deployment's (ignoring the
  `pod-template-hash` label); it is made when missing, named `<deployment>-<hash>`. Every other
  owned ReplicaSet is *old*. ReplicaSets carry `deployment.kubernetes.io/revision` (the new one
  always the highest: a rollback to an old template re-uses that ReplicaSet with a new revision
  and records the old numbers in `revision-history`), `desired-replicas` and `max-replicas`,
  and the Deployment's own annotations (so `kubernetes.io/change-cause` reaches `rollout history`).
- RollingUpdate: the new set grows while the total stays within replicas + maxSurge; old sets
  shrink while available pods stay at least replicas - maxUnavailable (unhealthy old pods first).
  Recreate: old sets go to zero, and only once none of their pods is left does the new set grow.
- A change of `spec.replicas` in the middle of a rollout is spread over the active sets in
  proportion to their size (upstream's proportional scaling).
- Paused: scaling still happens, the rollout does not. Old sets scaled to zero beyond
  revisionHistoryLimit are deleted, oldest revision first.
- Status: replicas, updatedReplicas, readyReplicas, availableReplicas, unavailableReplicas,
  observedGeneration, and the Available and Progressing conditions with upstream's reasons;
  progressDeadlineSeconds turns Progressing False (ProgressDeadlineExceeded), which `kubectl
  rollout status` reports as a failure.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import logging
import math
from collections.abc import Hashable
from typing import Any

from edgekube._cogs import clock as clock_mod
from edgekube.api import errors
from edgekube.client import objects
from edgekube.client.events import Recorder
from edgekube.client.informer import Handlers, Informer, object_key
from edgekube.client.local import LocalClient
from edgekube.controllers import ownership, revisions
from edgekube.controllers.base import Controller, Requeue

log = logging.getLogger(__name__)
JSON = dict[str, Any]

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
_NOT_COPIED = ("kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY, DESIRED, MAX_REPLICAS)
_SAFE = "bcdfghjklmnpqrstvwxz2456789"


class DeploymentController(Controller):
    name = "deployment-controller"
    workers = 2

    def __init__(self, client: LocalClient, deployments: Informer, sets: Informer, pods: Informer, events: Recorder,
                 *, clock: clock_mod.Clock) -> None:
        super().__init__()
        self._client = client
        self._deployments = deployments
        self._sets = sets
        self._pods = pods
        self._events = events
        self._clock = clock
        # Templates compared by digest, once per object revision, off the loop when large.
        self._templates = revisions.Digests(client.offload, _template_sans_hash)
        deployments.add_handlers(Handlers(on_add=self._enqueue, on_update=lambda _o, n: self._enqueue(n),
                                          on_delete=self._enqueue))
        sets.add_handlers(Handlers(on_add=self._set_changed, on_update=lambda _o, n: self._set_changed(n),
                                   on_delete=self._set_changed))
        pods.add_handlers(Handlers(on_delete=self._pod_deleted))

    def _enqueue(self, obj: JSON) -> None:
        self.queue.add(object_key(obj))

    def _set_changed(self, rs: JSON) -> None:
        ref = objects.controller_of(rs)
        ns = objects.meta(rs).get("namespace")
        if ref is not None:
            if ref.get("kind") == "Deployment":
                self.queue.add(f"{ns}/{ref.get('name')}")
            return
        for d in self._deployments.list(ns):  # an orphan: whoever may adopt it
            if objects.matches(objects.selector_of(d), rs):
                self._enqueue(d)

    def _pod_deleted(self, pod: JSON) -> None:
        # Recreate waits for old pods to be gone.
        ref = objects.controller_of(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = self._sets.get(f"{objects.meta(pod).get('namespace')}/{ref.get('name')}")
        if rs is not None:
            self._set_changed(rs)

    # --- reconcile --------------------------------------------------------------------------

    async def reconcile(self, key: Hashable) -> None:
        d = self._deployments.get(str(key))
        if d is None:
            return
        sets = await self._claim(d)
        if objects.meta(d).get("deletionTimestamp"):
            await self._sync_status(d, sets, None)
            return
        spec = d.get("spec") or {}
        new = await self._find_new(d, sets)
        old = [rs for rs in sets if new is None or objects.meta(rs)["uid"] != objects.meta(new)["uid"]]
        if spec.get("paused") or self._scaling_event(d, sets):
            new = await self._sync_revision(d, new, old, create=False)
            await self._scale(d, new, old)
            if spec.get("paused"):
                await self._cleanup(d, old)
            await self._sync_status(d, [*([new] if new else []), *old], new)
            return
        new = await self._sync_revision(d, new, old, create=True)
        assert new is not None
        await self._sync_deployment_revision(d, new)
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            await self._recreate(d, new, old)
        else:
            await self._rolling(d, new, old)
        if _complete(d, self._status_of(d, [new, *old], new)):
            await self._cleanup(d, old)
        await self._sync_status(d, [new, *old], new)

    async def _claim(self, d: JSON) -> list[JSON]:
        selector = objects.selector_of(d)
        return await ownership.claim(self._client, d, self._sets.list(objects.meta(d).get("namespace")),
                                     match=lambda rs: objects.matches(selector, rs))

    async def _find_new(self, d: JSON, sets: list[JSON]) -> JSON | None:
        want = await self._templates.of(d)
        matches = [rs for rs in sets if await self._templates.of(rs) == want]
        if not matches:
            return None
        # Several equal templates: the oldest wins, as upstream.
        return min(matches, key=lambda rs: (objects.meta(rs).get("creationTimestamp") or "", objects.meta(rs)["name"]))

    async def _sync_revision(self, d: JSON, new: JSON | None, old: list[JSON], *, create: bool) -> JSON | None:
        """Bring the new set's annotations up to date (or make it); returns the current object."""
        max_old = max((_revision(rs) for rs in old), default=0)
        spec = d.get("spec") or {}
        replicas = int(spec.get("replicas", 1) or 0)
        surge = _max_surge(d)
        if new is None:
            if not create:
                return None
            return await self._create_new(d, old, revision=max_old + 1)
        ann = objects.meta(new).get("annotations") or {}
        want = _copied_annotations(d)
        current_rev = _revision(new)
        target_rev = current_rev if current_rev > max_old else max_old + 1
        changes: dict[str, str] = {}
        for k, v in want.items():
            if ann.get(k) != v:
                changes[k] = v
        if current_rev != target_rev:
            changes[REVISION] = str(target_rev)
            if current_rev:
                history = [h for h in (ann.get(REVISION_HISTORY) or "").split(",") if h]
                changes[REVISION_HISTORY] = ",".join([*history, str(current_rev)])
        if ann.get(DESIRED) != str(replicas):
            changes[DESIRED] = str(replicas)
        if ann.get(MAX_REPLICAS) != str(replicas + surge):
            changes[MAX_REPLICAS] = str(replicas + surge)
        min_ready = int(spec.get("minReadySeconds") or 0)
        set_mrs = int((new.get("spec") or {}).get("minReadySeconds") or 0) != min_ready
        if not changes and not set_mrs:
            return new

        def update(obj: JSON) -> JSON:
            obj["metadata"].setdefault("annotations", {}).update(changes)
            obj.setdefault("spec", {})["minReadySeconds"] = min_ready
            return obj

        return await self._patch_set(new, update)

    async def _sync_deployment_revision(self, d: JSON, new: JSON) -> None:
        """The Deployment carries its new set's revision too (kubectl's rollout undo patches
        `/metadata/annotations` and relies on it being there)."""
        rev = str(_revision(new))
        if (objects.meta(d).get("annotations") or {}).get(REVISION) == rev:
            return
        m = objects.meta(d)

        def mark(obj: JSON) -> JSON:
            obj["metadata"].setdefault("annotations", {})[REVISION] = rev
            return obj

        try:
            await self._client.patch("apps/v1", "Deployment", name=m["name"], namespace=m.get("namespace"), mutate=mark)
        except errors.APIError as exc:
            if exc.code != 404:
                raise

    async def _create_new(self, d: JSON, old: list[JSON], *, revision: int) -> JSON:
        meta = objects.meta(d)
        spec = d.get("spec") or {}
        collisions = int((d.get("status") or {}).get("collisionCount") or 0)
        source = spec.get("template") or {}
        if self._client.offload.heavy_value(source):
            template, h = await self._client.offload.always(_copy_and_hash, source, collisions)
        else:
            template, h = _copy_and_hash(source, collisions)
        tmeta = template.setdefault("metadata", {})
        tmeta.setdefault("labels", {})[HASH_LABEL] = h
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = h
        replicas = int(spec.get("replicas", 1) or 0)
        surge = _max_surge(d)
        # A brand-new deployment (no old pods) starts at full size; a rollout starts within the surge.
        current = sum(_spec_replicas(rs) for rs in old)
        start = replicas if not old else max(0, min(replicas, replicas + surge - current))
        if (spec.get("strategy") or {}).get("type") == "Recreate" and old and any(_spec_replicas(rs) for rs in old):
            start = 0
        annotations = {**_copied_annotations(d), REVISION: str(revision), DESIRED: str(replicas),
                       MAX_REPLICAS: str(replicas + surge)}
        rs: JSON = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{meta['name']}-{h}", "namespace": meta.get("namespace"),
                         "labels": dict(tmeta["labels"]), "annotations": annotations,
                         "ownerReferences": [objects.owner_ref(d)]},
            "spec": {"replicas": start, "minReadySeconds": int(spec.get("minReadySeconds") or 0),
                     "selector": selector, "template": template},
        }
        if self._client.offload.heavy_value(template):
            self._client.offload.let_go(rs)  # its template freed on the worker once written
        try:
            created = await self._client.create(rs)
        except errors.APIError as exc:
            if exc.code != 409:
                raise
            existing = self._sets.get(f"{meta.get('namespace')}/{rs['metadata']['name']}")
            if existing is not None and objects.controller_of(existing) and \
                    (objects.controller_of(existing) or {}).get("uid") == meta.get("uid") and \
                    await self._templates.of(existing) == await self._templates.of_value(_without_hash(template)):
                return existing
            # A hash collision with a set that is not ours: bump collisionCount and try again.
            await self._patch_deployment_status(d, lambda st: st.__setitem__("collisionCount", collisions + 1))
            raise Requeue(0.05) from None
        self._events.normal(d, "ScalingReplicaSet", f"Scaled up replica set {created['metadata']['name']} from 0 to {start}")
        now = self._now()

        def progressing(st: JSON) -> None:
            objects.set_condition(st, "Progressing", "True", reason="NewReplicaSetCreated",
                                  message=f'Created new replica set "{created["metadata"]["name"]}"', now=now,
                                  update_time=True)

        await self._patch_deployment_status(d, progressing)
        return created

    # --- strategies ---------------------------------------------------------------------------

    async def _rolling(self, d: JSON, new: JSON, old: list[JSON]) -> None:
        replicas = int((d.get("spec") or {}).get("replicas", 1) or 0)
        surge, unavailable = _max_surge(d), _max_unavailable(d)
        everything = [new, *old]
        # Grow the new set within the surge.
        new_count = _spec_replicas(new)
        if new_count > replicas:
            await self._scale_set(d, new, replicas)
        elif new_count < replicas:
            total = sum(_spec_replicas(rs) for rs in everything)
            room = replicas + surge - total
            if room > 0:
                await self._scale_set(d, new, new_count + min(room, replicas - new_count))
        # Shrink the old sets while enough stays available.
        active_old = [rs for rs in old if _spec_replicas(rs) > 0]
        if not active_old:
            return
        new = self._sets.get(object_key(new)) or new
        total = sum(_spec_replicas(rs) for rs in [new, *old])
        min_available = replicas - unavailable
        new_unavailable = _spec_replicas(new) - int((new.get("status") or {}).get("availableReplicas") or 0)
        budget = total - min_available - new_unavailable
        if budget <= 0:
            return
        # Unhealthy old pods go first: they count against availability anyway.
        for rs in sorted(active_old, key=_age_key):
            if budget <= 0:
                break
            unhealthy = _spec_replicas(rs) - int((rs.get("status") or {}).get("availableReplicas") or 0)
            if unhealthy <= 0:
                continue
            cut = min(budget, unhealthy)
            await self._scale_set(d, rs, _spec_replicas(rs) - cut)
            budget -= cut
        # A set's status may lag its size just cut: it never counts more available pods than
        # it is allowed to keep.
        available = sum(min(_spec_replicas(rs), int((rs.get("status") or {}).get("availableReplicas") or 0))
                        for rs in [new, *(self._sets.get(object_key(o)) or o for o in old)])
        if available <= min_available:
            return
        remaining = min(available - min_available, budget)
        for rs in sorted(old, key=_age_key):
            current = self._sets.get(object_key(rs)) or rs
            if remaining <= 0:
                break
            count = _spec_replicas(current)
            if count == 0:
                continue
            cut = min(count, remaining)
            await self._scale_set(d, current, count - cut)
            remaining -= cut

    async def _recreate(self, d: JSON, new: JSON, old: list[JSON]) -> None:
        for rs in old:
            if _spec_replicas(rs) > 0:
                await self._scale_set(d, rs, 0)
        ns = objects.meta(d).get("namespace")
        old_uids = {objects.meta(rs)["uid"] for rs in old}
        still = [p for p in self._pods.list(ns)
                 if (objects.controller_of(p) or {}).get("uid") in old_uids and not objects.pod_terminal(p)]
        if still or any(int((rs.get("status") or {}).get("replicas") or 0) for rs in old):
            return
        replicas = int((d.get("spec") or {}).get("replicas", 1) or 0)
        if _spec_replicas(new) != replicas:
            await self._scale_set(d, new, replicas)

    def _scaling_event(self, d: JSON, sets: list[JSON]) -> bool:
        replicas = str(int((d.get("spec") or {}).get("replicas", 1) or 0))
        active = [rs for rs in sets if _spec_replicas(rs) > 0]
        return any((objects.meta(rs).get("annotations") or {}).get(DESIRED) not in (None, replicas) for rs in active)

    async def _scale(self, d: JSON, new: JSON | None, old: list[JSON]) -> None:
        """Scaling without a rollout: one active set takes the size, several share it."""
        replicas = int((d.get("spec") or {}).get("replicas", 1) or 0)
        sets = [rs for rs in ([new] if new else []) + old if rs is not None]
        active = [rs for rs in sets if _spec_replicas(rs) > 0]
        if not active:
            if new is not None and _spec_replicas(new) != replicas and not old:
                await self._scale_set(d, new, replicas)
            elif new is not None and not any(_spec_replicas(rs) for rs in old):
                await self._scale_set(d, new, replicas)
            return
        if len(active) == 1:
            await self._scale_set(d, active[0], replicas)
            return
        surge = _max_surge(d)
        allowed = replicas + surge
        current = sum(_spec_replicas(rs) for rs in active)
        delta = allowed - current
        if delta == 0:
            for rs in active:  # annotations follow
                await self._scale_set(d, rs, _spec_replicas(rs))
            return
        # Proportional: bigger sets take more; the remainder goes to the newest (growing) or
        # comes from the oldest (shrinking).
        order = sorted(active, key=_age_key, reverse=delta > 0)
        shares: dict[str, int] = {}
        given = 0
        for rs in order:
            part = math.floor(_spec_replicas(rs) * delta / current) if delta > 0 else \
                -math.floor(_spec_replicas(rs) * -delta / current)
            shares[objects.meta(rs)["uid"]] = part
            given += part
        left = delta - given
        for rs in order:
            if left == 0:
                break
            uid = objects.meta(rs)["uid"]
            step = 1 if left > 0 else -1
            if _spec_replicas(rs) + shares[uid] + step >= 0:
                shares[uid] += step
                left -= step
        for rs in active:
            await self._scale_set(d, rs, max(0, _spec_replicas(rs) + shares[objects.meta(rs)["uid"]]))

    async def _scale_set(self, d: JSON, rs: JSON, count: int) -> None:
        replicas = int((d.get("spec") or {}).get("replicas", 1) or 0)
        surge = _max_surge(d)
        before = _spec_replicas(rs)
        ann = objects.meta(rs).get("annotations") or {}
        if before == count and ann.get(DESIRED) == str(replicas) and ann.get(MAX_REPLICAS) == str(replicas + surge):
            return

        def set_size(obj: JSON) -> JSON:
            obj.setdefault("spec", {})["replicas"] = count
            a = obj["metadata"].setdefault("annotations", {})
            a[DESIRED] = str(replicas)
            a[MAX_REPLICAS] = str(replicas + surge)
            return obj

        await self._patch_set(rs, set_size)
        if before != count:
            verb = "up" if count > before else "down"
            self._events.normal(d, "ScalingReplicaSet",
                                f"Scaled {verb} replica set {objects.meta(rs)['name']} from {before} to {count}")

    async def _cleanup(self, d: JSON, old: list[JSON]) -> None:
        limit = (d.get("spec") or {}).get("revisionHistoryLimit")
        if limit is None:
            return
        idle = [rs for rs in old if _spec_replicas(rs) == 0 and not int((rs.get("status") or {}).get("replicas") or 0)
                and not objects.meta(rs).get("deletionTimestamp")]
        excess = len(idle) - int(limit)
        if excess <= 0:
            return
        for rs in sorted(idle, key=_revision)[:excess]:
            m = objects.meta(rs)
            try:
                await self._client.delete("apps/v1", "ReplicaSet", name=m["name"], namespace=m.get("namespace"))
            except errors.APIError as exc:
                if exc.code != 404:
                    raise

    # --- status ---------------------------------------------------------------------------

    def _status_of(self, d: JSON, sets: list[JSON], new: JSON | None) -> JSON:
        sets = [self._sets.get(object_key(rs)) or rs for rs in sets]
        new = (self._sets.get(object_key(new)) or new) if new is not None else None

        def total(field: str) -> int:
            return sum(int((rs.get("status") or {}).get(field) or 0) for rs in sets)

        desired = sum(_spec_replicas(rs) for rs in sets)
        available = total("availableReplicas")
        return {
            "observedGeneration": objects.meta(d).get("generation", 1),
            "replicas": total("replicas"),
            "updatedReplicas": int((new.get("status") or {}).get("replicas") or 0) if new else 0,
            "readyReplicas": total("readyReplicas"),
            "availableReplicas": available,
            "unavailableReplicas": max(0, desired - available),
        }

    async def _sync_status(self, d: JSON, sets: list[JSON], new: JSON | None) -> None:
        counts = self._status_of(d, sets, new)
        spec = d.get("spec") or {}
        replicas = int(spec.get("replicas", 1) or 0)
        now = self._now()
        status = copy.deepcopy(d.get("status") or {})
        before = copy.deepcopy(status)
        for k, v in counts.items():
            if v or k in ("observedGeneration", "replicas"):
                status[k] = v
            else:
                status.pop(k, None)
        min_available = replicas - _max_unavailable(d)
        if counts["availableReplicas"] >= min_available:
            objects.set_condition(status, "Available", "True", reason="MinimumReplicasAvailable",
                                  message="Deployment has minimum availability.", now=now, update_time=True)
        else:
            objects.set_condition(status, "Available", "False", reason="MinimumReplicasUnavailable",
                                  message="Deployment does not have minimum availability.", now=now, update_time=True)
        requeue = self._progress(d, status, counts, new, now)
        if status != before:
            await self._patch_deployment_status(d, lambda st: (st.clear(), st.update(status)))
        if requeue is not None:
            raise Requeue(requeue)

    def _progress(self, d: JSON, status: JSON, counts: JSON, new: JSON | None, now: str) -> float | None:
        """The Progressing condition; seconds until the deadline should be checked again, if any."""
        spec = d.get("spec") or {}
        name = objects.meta(new)["name"] if new else ""
        if spec.get("paused"):
            objects.set_condition(status, "Progressing", "Unknown", reason="DeploymentPaused",
                                  message="Deployment is paused", now=now, update_time=True)
            return None
        current = objects.condition({"status": status}, "Progressing")
        if current is not None and current.get("reason") == "DeploymentPaused":
            objects.set_condition(status, "Progressing", "Unknown", reason="DeploymentResumed",
                                  message="Deployment is resumed", now=now, update_time=True)
            current = objects.condition({"status": status}, "Progressing")
        deadline = spec.get("progressDeadlineSeconds")
        if new is None:
            return None
        if _complete(d, counts):
            objects.set_condition(status, "Progressing", "True", reason="NewReplicaSetAvailable",
                                  message=f'ReplicaSet "{name}" has successfully progressed.', now=now, update_time=True)
            return None
        if current is not None and current.get("reason") == "ProgressDeadlineExceeded" and \
                current.get("message", "").startswith(f'ReplicaSet "{name}"'):
            return None
        prev = d.get("status") or {}
        moved = any(int(prev.get(k) or 0) != counts[k]
                    for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"))
        ours = current is not None and str(current.get("message", "")).startswith(f'ReplicaSet "{name}"')
        fresh = current is not None and current.get("reason") in ("NewReplicaSetCreated", "FoundNewReplicaSet") \
            and f'"{name}"' in str(current.get("message", ""))
        if current is None or current.get("status") != "True" or moved or not (ours or fresh):
            # Progress (or a rollout that just began): the deadline starts again from now.
            objects.set_condition(status, "Progressing", "True", reason="ReplicaSetUpdated",
                                  message=f'ReplicaSet "{name}" is progressing.', now=now, update_time=True)
            current = objects.condition({"status": status}, "Progressing")
            if current is not None:
                current["lastUpdateTime"] = now
        if deadline is None or current is None:
            return None
        since = clock_mod.parse_rfc3339(str(current.get("lastUpdateTime") or now))
        left = (since + datetime.timedelta(seconds=int(deadline)) - self._clock.now()).total_seconds()
        if left <= 0:
            objects.set_condition(status, "Progressing", "False", reason="ProgressDeadlineExceeded",
                                  message=f'ReplicaSet "{name}" has timed out progressing.', now=now, update_time=True)
            self._events.warning(d, "ProgressDeadlineExceeded", f'ReplicaSet "{name}" has timed out progressing.')
            return None
        return left + 0.5

    # --- writes -----------------------------------------------------------------------------

    async def _patch_set(self, rs: JSON, mutate: Any) -> JSON:
        m = objects.meta(rs)
        return await self._client.patch("apps/v1", "ReplicaSet", name=m["name"], namespace=m.get("namespace"),
                                        mutate=mutate)

    async def _patch_deployment_status(self, d: JSON, change: Any) -> None:
        m = objects.meta(d)

        def write(obj: JSON) -> JSON:
            change(obj.setdefault("status", {}))
            return obj

        try:
            await self._client.patch("apps/v1", "Deployment", name=m["name"], namespace=m.get("namespace"),
                                     mutate=write, subresource="status")
        except errors.APIError as exc:
            if exc.code != 404:
                raise

    def _now(self) -> str:
        return clock_mod.rfc3339(self._clock.now())


# --- helpers ---------------------------------------------------------------------------------


def template_hash(template: JSON, collisions: int = 0) -> str:
    """A short, stable, DNS-safe hash of a pod template (upstream's idea, not its bytes)."""
    text = json.dumps(_strip_hash(template), sort_keys=True, separators=(",", ":"))
    if collisions:
        text += f"#{collisions}"
    n = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
    out = []
    for _ in range(10):
        n, r = divmod(n, len(_SAFE))
        out.append(_SAFE[r])
    return "".join(out)


def _copy_and_hash(template: JSON, collisions: int) -> tuple[JSON, str]:
    """A copy of `template` to give a new ReplicaSet, and its hash (pure: may run off the loop)."""
    return copy.deepcopy(template), template_hash(template, collisions)


def _template_sans_hash(owner: JSON) -> JSON:
    return _without_hash((owner.get("spec") or {}).get("template") or {})


def _without_hash(template: JSON) -> JSON:
    """`template` without its pod-template-hash label (a shallow copy where it had one), as
    `_strip_hash` but before the normal form (which `revisions.digest` makes)."""
    labels = (template.get("metadata") or {}).get("labels") or {}
    if HASH_LABEL not in labels:
        return template
    meta = dict(template["metadata"])
    meta["labels"] = {k: v for k, v in labels.items() if k != HASH_LABEL}
    if not meta["labels"]:
        del meta["labels"]
    return {**template, "metadata": meta}


def _strip_hash(template: JSON) -> JSON:
    """The template without its pod-template-hash label, in normal form (upstream's
    EqualIgnoreHash: Go structs, where a null is the same as no field)."""
    t: JSON = revisions.normal(template)
    labels = ((t.get("metadata") or {}).get("labels") or {})
    if HASH_LABEL not in labels:
        return t
    del t["metadata"]["labels"][HASH_LABEL]
    if not t["metadata"]["labels"]:
        del t["metadata"]["labels"]
    return t


def _copied_annotations(d: JSON) -> dict[str, str]:
    return {k: v for k, v in (objects.meta(d).get("annotations") or {}).items() if k not in _NOT_COPIED}


def _revision(rs: JSON) -> int:
    try:
        return int((objects.meta(rs).get("annotations") or {}).get(REVISION) or 0)
    except ValueError:
        return 0


def _spec_replicas(rs: JSON) -> int:
    return int((rs.get("spec") or {}).get("replicas", 1) or 0)


def _age_key(rs: JSON) -> tuple[str, str]:
    return (objects.meta(rs).get("creationTimestamp") or "", objects.meta(rs).get("name") or "")


def _int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        try:
            pct = int(value[:-1])
        except ValueError:
            return 0
        exact = pct * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _rolling_params(d: JSON) -> tuple[int, int]:
    spec = d.get("spec") or {}
    strategy = spec.get("strategy") or {}
    replicas = int(spec.get("replicas", 1) or 0)
    if strategy.get("type") == "Recreate":
        return 0, replicas
    ru = strategy.get("rollingUpdate") or {}
    surge = _int_or_percent(ru.get("maxSurge", "25%"), replicas, round_up=True)
    unavailable = _int_or_percent(ru.get("maxUnavailable", "25%"), replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


def _max_surge(d: JSON) -> int:
    return _rolling_params(d)[0]


def _max_unavailable(d: JSON) -> int:
    return _rolling_params(d)[1]


def _complete(d: JSON, counts: JSON) -> bool:
    replicas = int((d.get("spec") or {}).get("replicas", 1) or 0)
    return bool(counts["updatedReplicas"] == replicas and counts["replicas"] == replicas
                and counts["availableReplicas"] == replicas
                and counts["observedGeneration"] >= int(objects.meta(d).get("generation", 1)))
