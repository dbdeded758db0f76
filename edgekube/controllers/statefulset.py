"""StatefulSet controller: pods with stable names and storage, made and replaced in order, as upstream's.

- Identity: pod `<set>-<ordinal>` (from `spec.ordinals.start`, default 0), labelled
  `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index`, with hostname = its name
  and subdomain = `spec.serviceName`. Each volumeClaimTemplate gives the pod a claim
  `<template>-<set>-<ordinal>` (labelled with the selector's matchLabels), made before the pod and
  mounted by a volume of the template's name.
- OrderedReady (the default): pods are made one at a time in ordinal order, each once every lower
  one is Running and Ready (and available, with minReadySeconds); scaling down removes the
  highest ordinal first, one at a time, while the others are healthy. Parallel makes and removes
  them all at once. A Failed or Succeeded pod is deleted, and made again.
- Revisions: ControllerRevisions `<set>-<hash>` hold each template (see `revisions`). The
  update revision is the one for the template now (an old one is renumbered to the top on a
  rollback); the current revision is the one every pod was at when the last update completed.
  Pods carry their revision's name in `controller-revision-hash`.
- RollingUpdate replaces pods from the highest ordinal down to `partition`, one at a time, each
  waiting for the one before to be Running and Ready; pods below the partition, and pods made
  again there, stay at the current revision. OnDelete changes nothing until a pod is deleted.
- persistentVolumeClaimRetentionPolicy (default Retain/Retain): with whenDeleted=Delete the
  claims are owned by the set, with whenScaled=Delete by the pod once it is scaled away, so the
  garbage collector removes them.
- Status: replicas, readyReplicas, currentReplicas, updatedReplicas, availableReplicas,
  currentRevision, updateRevision, observedGeneration, collisionCount. Events as upstream:
  SuccessfulCreate "create Pod web-0 in StatefulSet web successful", "create Claim ... success",
  SuccessfulDelete, SuccessfulUpdate, and their Failed counterparts.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from edgekube._cogs import clock as clock_mod
from edgekube.api import errors
from edgekube.api.registry import rest
from edgekube.client import objects
from edgekube.client.events import Recorder
from edgekube.client.informer import Handlers, Informer
from edgekube.client.local import LocalClient
from edgekube.controllers import ownership, revisions
from edgekube.controllers.base import Controller, Requeue

log = logging.getLogger(__name__)
JSON = dict[str, Any]

API_VERSION = "apps/v1"
KIND = "StatefulSet"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
_ORDINAL = re.compile(r"(.*)-([0-9]+)$")
_MAX_BATCH = 500
RETAIN = "Retain"
DELETE = "Delete"


# --- pure helpers ---------------------------------------------------------------------------


def parent_and_ordinal(name: str) -> tuple[str, int]:
    m = _ORDINAL.match(name)
    if m is None:
        return "", -1
    ordinal = int(m.group(2))
    return (m.group(1), ordinal) if ordinal < 2**31 else (m.group(1), -1)


def ordinal_of(pod: JSON) -> int:
    return parent_and_ordinal(str(objects.meta(pod).get("name") or ""))[1]


def start_ordinal(sts: JSON) -> int:
    ordinals = (sts.get("spec") or {}).get("ordinals") or {}
    return int(ordinals.get("start") or 0)


def replicas_of(sts: JSON) -> int:
    value = (sts.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def in_range(sts: JSON, pod: JSON) -> bool:
    ordinal = ordinal_of(pod)
    return start_ordinal(sts) <= ordinal < start_ordinal(sts) + replicas_of(sts)


def pod_name(sts: JSON, ordinal: int) -> str:
    return f"{objects.meta(sts)['name']}-{ordinal}"


def claim_name(template: JSON, sts: JSON, ordinal: int) -> str:
    return f"{objects.meta(template).get('name')}-{objects.meta(sts)['name']}-{ordinal}"


def is_member(sts: JSON, pod: JSON) -> bool:
    return parent_and_ordinal(str(objects.meta(pod).get("name") or ""))[0] == objects.meta(sts).get("name")


def identity_matches(sts: JSON, pod: JSON) -> bool:
    pm = objects.meta(pod)
    parent, ordinal = parent_and_ordinal(str(pm.get("name") or ""))
    return (ordinal >= 0 and parent == objects.meta(sts).get("name") and pm.get("name") == pod_name(sts, ordinal)
            and pm.get("namespace") == objects.meta(sts).get("namespace")
            and (pm.get("labels") or {}).get(POD_NAME_LABEL) == pm.get("name"))


def _templates(sts: JSON) -> list[JSON]:
    return [t for t in (sts.get("spec") or {}).get("volumeClaimTemplates") or [] if isinstance(t, dict)]


def storage_matches(sts: JSON, pod: JSON) -> bool:
    ordinal = ordinal_of(pod)
    if ordinal < 0:
        return False
    volumes = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or [] if isinstance(v, dict)}
    for template in _templates(sts):
        volume = volumes.get(objects.meta(template).get("name"))
        pvc = (volume or {}).get("persistentVolumeClaim")
        if not isinstance(pvc, dict) or pvc.get("claimName") != claim_name(template, sts, ordinal):
            return False
    return True


def claims_for(sts: JSON, ordinal: int) -> list[tuple[str, JSON]]:
    """(template name, claim to create) for each volumeClaimTemplate, for the pod of `ordinal`."""
    match_labels = ((sts.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    out = []
    for template in _templates(sts):
        tmeta = objects.meta(template)
        meta: JSON = {k: copy.deepcopy(v) for k, v in tmeta.items()
                      if k in ("labels", "annotations", "finalizers", "ownerReferences")}
        meta["name"] = claim_name(template, sts, ordinal)
        meta["namespace"] = objects.meta(sts).get("namespace")
        meta["labels"] = {**(meta.get("labels") or {}), **match_labels}
        claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
                 "spec": copy.deepcopy(template.get("spec") or {})}
        out.append((str(tmeta.get("name")), claim))
    return out


def update_storage(sts: JSON, pod: JSON) -> None:
    """Point the pod's volumes (a mutable copy) at its claims; other volumes stay."""
    ordinal = ordinal_of(pod)
    spec = pod.setdefault("spec", {})
    claims = claims_for(sts, ordinal)
    names = {name for name, _ in claims}
    volumes: list[JSON] = [{"name": name, "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}
                           for name, claim in claims]
    volumes.extend(v for v in spec.get("volumes") or [] if isinstance(v, dict) and v.get("name") not in names)
    spec["volumes"] = volumes


def update_identity(sts: JSON, pod: JSON) -> None:
    ordinal = ordinal_of(pod)
    meta = pod.setdefault("metadata", {})
    meta["name"] = pod_name(sts, ordinal)
    meta["namespace"] = objects.meta(sts).get("namespace")
    labels = meta.setdefault("labels", {})
    labels[POD_NAME_LABEL] = meta["name"]
    labels[POD_INDEX_LABEL] = str(ordinal)


def new_pod(sts: JSON, ordinal: int, revision: str) -> JSON:
    """The pod of `ordinal` for `sts`'s template (GetPodFromTemplate, then its identity and storage)."""
    template = (sts.get("spec") or {}).get("template") or {}
    tmeta = template.get("metadata") or {}
    name = objects.meta(sts)["name"]
    meta: JSON = {"name": f"{name}-{ordinal}", "generateName": f"{name}-",
                  "labels": dict(tmeta.get("labels") or {}), "ownerReferences": [objects.owner_ref(sts)]}
    if tmeta.get("annotations"):
        meta["annotations"] = dict(tmeta["annotations"])
    if tmeta.get("finalizers"):
        meta["finalizers"] = list(tmeta["finalizers"])
    pod: JSON = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": copy.deepcopy(template.get("spec") or {})}
    update_identity(sts, pod)
    pod["spec"]["hostname"] = meta["name"]
    service = (sts.get("spec") or {}).get("serviceName")
    if service:
        pod["spec"]["subdomain"] = service
    update_storage(sts, pod)
    meta["labels"][revisions.HASH_LABEL] = revision
    return pod


def versioned_pod(current_set: JSON, update_set: JSON, current: str, update: str, ordinal: int) -> JSON:
    """A new pod at the current revision when it lies below the partition, else at the update one."""
    strategy = (current_set.get("spec") or {}).get("updateStrategy") or {}
    ru = strategy.get("rollingUpdate")
    start = start_ordinal(current_set)
    if (strategy.get("type") == "RollingUpdate" and ru is None
            and ordinal < start + int((current_set.get("status") or {}).get("currentReplicas") or 0)) or (
            isinstance(ru, dict) and ordinal < start + int(ru.get("partition") or 0)):
        return new_pod(current_set, ordinal, current)
    return new_pod(update_set, ordinal, update)


def phase(pod: JSON) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def created(pod: JSON) -> bool:
    """Pods the API server holds have a phase; the ones this sync means to make have none."""
    return phase(pod) != ""


def terminating(pod: JSON) -> bool:
    return bool(objects.meta(pod).get("deletionTimestamp"))


def running_and_ready(pod: JSON) -> bool:
    return phase(pod) == "Running" and objects.pod_ready(pod)


def healthy(pod: JSON) -> bool:
    return running_and_ready(pod) and not terminating(pod)


def pod_revision(pod: JSON) -> str:
    return str((objects.meta(pod).get("labels") or {}).get(revisions.HASH_LABEL) or "")


def retention(sts: JSON) -> tuple[str, str]:
    policy = (sts.get("spec") or {}).get("persistentVolumeClaimRetentionPolicy") or {}
    return str(policy.get("whenDeleted") or RETAIN), str(policy.get("whenScaled") or RETAIN)


def _refers_to(ref: JSON, obj: JSON, api_version: str, kind: str) -> bool:
    return ref.get("apiVersion") == api_version and ref.get("kind") == kind and ref.get("name") == objects.meta(obj).get("name")


def _set_ref(ref: JSON, sts: JSON) -> bool:
    return _refers_to(ref, sts, API_VERSION, KIND)


def _pod_ref(ref: JSON, pod: JSON) -> bool:
    return _refers_to(ref, pod, "v1", "Pod")


def _stale_ref(claim: JSON, obj: JSON, is_ref: Callable[[JSON], bool]) -> bool:
    for ref in objects.meta(claim).get("ownerReferences") or []:
        if is_ref(ref):
            return bool(ref.get("uid") != objects.meta(obj).get("uid"))
    return False


def _has_ref(claim: JSON, obj: JSON) -> bool:
    uid = objects.meta(obj).get("uid")
    return bool(uid) and any(r.get("uid") == uid for r in objects.meta(claim).get("ownerReferences") or [])


def unexpected_controller(claim: JSON, sts: JSON, pod: JSON) -> bool:
    """Another controller manages the claim (it only matters when a policy deletes claims)."""
    if retention(sts) == (RETAIN, RETAIN):
        return False
    for ref in objects.meta(claim).get("ownerReferences") or []:
        if _set_ref(ref, sts):
            if ref.get("uid") != objects.meta(sts).get("uid"):
                return True
            continue
        if _pod_ref(ref, pod):
            if ref.get("uid") != objects.meta(pod).get("uid"):
                return True
            continue
        if ref.get("controller"):
            return True
    return False


def claim_owners_up_to_date(claim: JSON, sts: JSON, pod: JSON) -> bool:
    """Whether the claim's owner references follow the retention policy (isClaimOwnerUpToDate)."""
    if _stale_ref(claim, sts, lambda r: _set_ref(r, sts)) or _stale_ref(claim, pod, lambda r: _pod_ref(r, pod)):
        return True  # left by an earlier set or pod: not ours to touch
    if unexpected_controller(claim, sts, pod):
        return not (_has_ref(claim, sts) or _has_ref(claim, pod))
    sts_uid, pod_uid = objects.meta(sts).get("uid"), objects.meta(pod).get("uid")
    for ref in objects.meta(claim).get("ownerReferences") or []:
        if ref.get("uid") in (sts_uid, pod_uid) and not ref.get("controller"):
            return False
    when_deleted, when_scaled = retention(sts)
    scaled_down = not in_range(sts, pod)
    want_set = when_deleted == DELETE and not (when_scaled == DELETE and scaled_down)
    want_pod = when_scaled == DELETE and scaled_down
    return _has_ref(claim, sts) == want_set and _has_ref(claim, pod) == want_pod


def set_claim_owners(claim: JSON, sts: JSON, pod: JSON) -> None:
    """Owner references per the retention policy, on a mutable copy (updateClaimOwnerRefForSetAndPod)."""
    meta = claim.setdefault("metadata", {})
    unexpected = unexpected_controller(claim, sts, pod)
    refs = [r for r in meta.get("ownerReferences") or [] if not (_set_ref(r, sts) or _pod_ref(r, pod))]
    if not unexpected:
        when_deleted, when_scaled = retention(sts)
        scaled_down = not in_range(sts, pod)
        if when_scaled == DELETE and scaled_down:
            refs.append(objects.owner_ref(pod))
        elif when_deleted == DELETE:
            refs.append(objects.owner_ref(sts))
    if refs:
        meta["ownerReferences"] = refs
    else:
        meta.pop("ownerReferences", None)


@dataclasses.dataclass
class Status:
    observed_generation: int
    current_revision: str
    update_revision: str
    collision_count: int
    replicas: int = 0
    ready: int = 0
    available: int = 0
    current: int = 0
    updated: int = 0


# --- the controller -------------------------------------------------------------------------


class StatefulSetController(Controller):
    name = "statefulset-controller"
    workers = 2

    def __init__(self, client: LocalClient, sets: Informer, pods: Informer, history: Informer, events: Recorder, *,
                 clock: clock_mod.Clock) -> None:
        super().__init__()
        self._client = client
        self._sets = sets
        self._pods = pods
        self._history = history
        self._events = events
        self._clock = clock
        sets.add_handlers(Handlers(on_add=self._enqueue, on_update=lambda _o, n: self._enqueue(n),
                                   on_delete=self._enqueue))
        pods.add_handlers(Handlers(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted))

    async def run(self) -> None:
        for inf in (self._sets, self._pods, self._history):
            await inf.synced.wait()
        await super().run()

    # --- event handlers (enqueue only) --------------------------------------------------------

    def _enqueue(self, sts: JSON) -> None:
        m = objects.meta(sts)
        self.queue.add(f"{m.get('namespace')}/{m.get('name')}")

    def _owner(self, pod: JSON) -> str | None:
        ref = objects.controller_of(pod)
        if ref is None or ref.get("kind") != KIND:
            return None
        key = f"{objects.meta(pod).get('namespace')}/{ref.get('name')}"
        sts = self._sets.get(key)
        if sts is None or objects.meta(sts).get("uid") != ref.get("uid"):
            return None
        return key

    def _enqueue_matching(self, pod: JSON) -> None:
        for sts in self._sets.list(objects.meta(pod).get("namespace")):
            if objects.matches(objects.selector_of(sts), pod):
                self._enqueue(sts)

    def _pod_added(self, pod: JSON) -> None:
        key = self._owner(pod)
        if key is not None:
            self.queue.add(key)
        elif objects.controller_of(pod) is None and not terminating(pod):
            self._enqueue_matching(pod)

    def _pod_updated(self, old: JSON, new: JSON) -> None:
        if objects.meta(new).get("resourceVersion") == objects.meta(old).get("resourceVersion"):
            return
        ownership.route_pod_update(self.queue, self._sets, self._owner(old), self._owner(new), old, new,
                                   adopters=self._enqueue_matching)

    def _pod_deleted(self, pod: JSON) -> None:
        ref = objects.controller_of(pod)
        if ref is not None and ref.get("kind") == KIND:
            self.queue.add(f"{objects.meta(pod).get('namespace')}/{ref.get('name')}")

    # --- reconcile ------------------------------------------------------------------------------

    async def reconcile(self, key: Hashable) -> None:
        sts = self._sets.get(str(key))
        if sts is None:
            return
        selector = objects.selector_of(sts)
        if selector is None:
            log.warning("stateful set %s: invalid selector %r", key, (sts.get("spec") or {}).get("selector"))
            return
        ns = objects.meta(sts).get("namespace")
        history = revisions.sort(await ownership.claim(self._client, sts, self._history.list(ns),
                                                       match=lambda r: objects.matches(selector, r)))
        pods = await ownership.claim(self._client, sts, self._pods.list(ns),
                                     match=lambda p: objects.matches(selector, p) and is_member(sts, p))
        current, update, collisions = await self._revisions(sts, history)
        status = Status(observed_generation=int(objects.meta(sts).get("generation") or 1),
                        current_revision=str(objects.meta(current).get("name")),
                        update_revision=str(objects.meta(update).get("name")), collision_count=collisions)
        try:
            await self._update(sts, current, update, pods, status)
        finally:
            # What was observed and done is written even when the sync stopped on an error.
            await self._write_status(sts, status)
            await self._truncate_history(sts, pods, history, current, update)
        mrs = int((sts.get("spec") or {}).get("minReadySeconds") or 0)
        if mrs > 0 and status.available != replicas_of(sts):
            raise Requeue(float(mrs))

    # --- revisions --------------------------------------------------------------------------------

    async def _revisions(self, sts: JSON, history: list[JSON]) -> tuple[JSON, JSON, int]:
        """(current revision, update revision, collisionCount): the update revision is made, or an
        equal old one renumbered to the top."""
        collisions = int((sts.get("status") or {}).get("collisionCount") or 0)
        data = revisions.template_patch(sts)
        top = revisions.number(history[-1]) + 1 if history else 1
        probe: JSON = {"data": data}
        equal = [r for r in history if revisions.equal(r, probe)]
        if equal and revisions.equal(history[-1], equal[-1]):
            update = history[-1]
        elif equal:
            m = objects.meta(equal[-1])

            def renumber(obj: JSON) -> JSON:
                obj["revision"] = top
                return obj

            update = await self._client.patch("apps/v1", "ControllerRevision", name=m["name"],
                                              namespace=m.get("namespace"), mutate=renumber)
        else:
            update, collisions = await self._create_revision(sts, data, top, collisions)
        wanted = (sts.get("status") or {}).get("currentRevision")
        current = next((r for r in history if objects.meta(r).get("name") == wanted), update)
        return current, update, collisions

    async def _create_revision(self, sts: JSON, data: JSON, number: int, collisions: int) -> tuple[JSON, int]:
        labels = {**revisions.template_labels(sts), revisions.HASH_LABEL: revisions.hash_revision(data, collisions)}
        ns = objects.meta(sts).get("namespace")
        while True:
            name = revisions.revision_name(objects.meta(sts)["name"], revisions.hash_revision(data, collisions))
            rev = revisions.new(sts, name=name, data=data, revision=number, labels=labels)
            try:
                return await self._client.create(rev), collisions
            except errors.APIError as exc:
                if exc.reason != "AlreadyExists":
                    raise
            existing = self._client.get("apps/v1", "ControllerRevision", name=name, namespace=ns)
            if revisions.equal(existing, rev):
                return existing, collisions
            collisions += 1

    async def _truncate_history(self, sts: JSON, pods: list[JSON], history: list[JSON], current: JSON,
                                update: JSON) -> None:
        live = {objects.meta(current).get("name"), objects.meta(update).get("name")}
        live.update(pod_revision(p) for p in pods)
        old = [r for r in history if objects.meta(r).get("name") not in live]
        limit = (sts.get("spec") or {}).get("revisionHistoryLimit")
        keep = 10 if limit is None else int(limit)
        if keep < 0 or len(old) <= keep:
            return
        for rev in old[:len(old) - keep]:
            m = objects.meta(rev)
            try:
                await self._client.delete("apps/v1", "ControllerRevision", name=m["name"], namespace=m.get("namespace"))
            except errors.APIError as exc:
                if exc.code != 404:
                    raise

    # --- the update -------------------------------------------------------------------------------

    def _count(self, status: Status, sts: JSON, *lists: list[JSON]) -> None:
        mrs = int((sts.get("spec") or {}).get("minReadySeconds") or 0)
        now = self._clock.now()
        status.replicas = status.ready = status.available = status.current = status.updated = 0
        for pods in lists:
            for pod in pods:
                if created(pod):
                    status.replicas += 1
                if running_and_ready(pod):
                    status.ready += 1
                    if objects.pod_available(pod, mrs, now):
                        status.available += 1
                if created(pod) and not terminating(pod):
                    rev = pod_revision(pod)
                    if rev == status.current_revision:
                        status.current += 1
                    if rev == status.update_revision:
                        status.updated += 1

    async def _update(self, sts: JSON, current: JSON, update: JSON, pods: list[JSON], status: Status) -> None:
        """Make, delete and replace pods toward the target state (upstream's updateStatefulSet),
        counting into `status` what was observed and done, also when it raises."""
        current_set = revisions.apply(sts, current)
        update_set = revisions.apply(sts, update)
        current_name = status.current_revision
        update_name = status.update_revision
        self._count(status, sts, pods)
        start = start_ordinal(sts)
        count = replicas_of(sts)
        slots: list[JSON | None] = [None] * count
        condemned: list[JSON] = []
        for pod in pods:
            ordinal = ordinal_of(pod)
            if start <= ordinal < start + count:
                slots[ordinal - start] = pod
            elif ordinal >= 0:
                condemned.append(pod)
        replicas: list[JSON] = [
            pod if pod is not None else versioned_pod(current_set, update_set, current_name, update_name, start + i)
            for i, pod in enumerate(slots)]
        condemned.sort(key=ordinal_of, reverse=True)
        first_unhealthy: JSON | None = next((p for p in replicas if not healthy(p)), None)
        if first_unhealthy is None:
            first_unhealthy = next((p for p in reversed(condemned) if not healthy(p)), None)
        if terminating(sts):
            return
        monotonic = (sts.get("spec") or {}).get("podManagementPolicy") != "Parallel"
        mrs = int((sts.get("spec") or {}).get("minReadySeconds") or 0)

        def recount() -> None:
            self._count(status, sts, replicas, condemned)

        async def process_replica(i: int) -> bool:
            pod = replicas[i]
            if created(pod) and phase(pod) in ("Failed", "Succeeded"):
                if not terminating(pod):
                    await self._delete_pod(sts, pod)
                return True
            if not created(pod):
                if self._claim_is_stale(sts, pod):
                    return True
                replicas[i] = await self._create_pod(sts, pod)
                if monotonic:
                    return True
                return False
            if phase(pod) == "Pending":
                await self._create_claims(sts, pod)
            if monotonic and (terminating(pod) or not running_and_ready(pod)
                              or not objects.pod_available(pod, mrs, self._clock.now())):
                return True
            if identity_matches(sts, pod) and storage_matches(sts, pod) and self._claims_match(update_set, pod):
                return False
            await self._update_pod(update_set, pod)
            return False

        try:
            if await self._run_for_all(len(replicas), process_replica, monotonic):
                recount()
                return

            async def fix_claims(i: int) -> bool:
                if not self._claims_match(update_set, condemned[i]):
                    await self._set_claims_owners(update_set, condemned[i])
                return False

            if await self._run_for_all(len(condemned), fix_claims, monotonic):
                recount()
                return

            async def process_condemned(i: int) -> bool:
                pod = condemned[i]
                if terminating(pod):
                    return monotonic  # in order: wait for it to go
                if monotonic and pod is not first_unhealthy and (
                        not running_and_ready(pod) or not objects.pod_available(pod, mrs, self._clock.now())):
                    return True
                await self._delete_pod(sts, pod)
                return True

            if await self._run_for_all(len(condemned), process_condemned, monotonic):
                recount()
                return
        except Exception:
            recount()
            raise
        recount()
        strategy = (sts.get("spec") or {}).get("updateStrategy") or {}
        if strategy.get("type") == "OnDelete":
            return
        partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
        # Replace the highest ordinal not at the update revision; one at a time, each once the
        # ones above it are healthy.
        for target in range(len(replicas) - 1, partition - 1, -1):
            pod = replicas[target]
            if pod_revision(pod) != update_name and not terminating(pod):
                log.debug("stateful set %s/%s: pod %s is terminating for update", objects.meta(sts).get("namespace"),
                         objects.meta(sts)["name"], objects.meta(pod).get("name"))
                await self._delete_pod(sts, pod)
                status.current -= 1
                return
            if not healthy(pod):
                return

    @staticmethod
    async def _run_for_all(count: int, fn: Callable[[int], Awaitable[bool]], monotonic: bool) -> bool:
        """Monotonic: in order, stopping at the first that says so. Parallel: all, in slow-start
        batches; an error stops the batches. True when the sync should stop here."""
        if monotonic:
            for i in range(count):
                if await fn(i):
                    return True
            return False
        pos, batch = 0, 1
        while pos < count:
            n = min(batch, count - pos)
            results = await asyncio.gather(*(fn(i) for i in range(pos, pos + n)), return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                raise failures[0]
            pos += n
            batch = min(batch * 2, _MAX_BATCH)
        return False

    # --- pods and claims --------------------------------------------------------------------------

    def _record(self, sts: JSON, verb: str, pod: JSON, error: errors.APIError | Exception | None) -> None:
        name, set_name = objects.meta(pod).get("name"), objects.meta(sts).get("name")
        if error is None:
            self._events.normal(sts, f"Successful{verb.title()}", f"{verb} Pod {name} in StatefulSet {set_name} successful")
        else:
            msg = error.message if isinstance(error, errors.APIError) else str(error)
            self._events.warning(sts, f"Failed{verb.title()}", f"{verb} Pod {name} in StatefulSet {set_name} failed error: {msg}")

    def _get_claim(self, namespace: str | None, name: str) -> JSON | None:
        # A read of the store, not a cache: a claim made a moment ago must not be made twice.
        try:
            return self._client.get("v1", "PersistentVolumeClaim", name=name, namespace=namespace)
        except errors.APIError as exc:
            if exc.code == 404:
                return None
            raise

    async def _create_claims(self, sts: JSON, pod: JSON) -> None:
        problems: list[str] = []
        pod_name_ = objects.meta(pod).get("name")
        for _template, claim in claims_for(sts, ordinal_of(pod)):
            cm = claim["metadata"]
            existing = self._get_claim(cm.get("namespace"), cm["name"])
            if existing is not None:
                if objects.meta(existing).get("deletionTimestamp"):
                    problems.append(f"pvc {cm['name']} is being deleted")
                continue
            try:
                await self._client.create(claim)
            except errors.APIError as exc:
                if exc.reason == "AlreadyExists":
                    continue
                problems.append(f"failed to create PVC {cm['name']}: {exc.message}")
                self._events.warning(sts, "FailedCreate", f"create Claim {cm['name']} for Pod {pod_name_} in StatefulSet "
                                     f"{objects.meta(sts)['name']} failed error: {exc.message}")
                continue
            self._events.normal(sts, "SuccessfulCreate", f"create Claim {cm['name']} Pod {pod_name_} in StatefulSet "
                                f"{objects.meta(sts)['name']} success")
        if problems:
            raise RuntimeError("; ".join(problems))

    def _claim_is_stale(self, sts: JSON, pod: JSON) -> bool:
        """A claim still owned by an earlier pod of this ordinal (whenScaled=Delete) must go first."""
        if retention(sts)[1] == RETAIN:
            return False
        for _template, claim in claims_for(sts, ordinal_of(pod)):
            existing = self._get_claim(claim["metadata"].get("namespace"), claim["metadata"]["name"])
            if existing is not None and _stale_ref(existing, pod, lambda r: _pod_ref(r, pod)):
                return True
        return False

    def _claims_match(self, sts: JSON, pod: JSON) -> bool:
        for _template, claim in claims_for(sts, ordinal_of(pod)):
            existing = self._get_claim(claim["metadata"].get("namespace"), claim["metadata"]["name"])
            if existing is not None and not claim_owners_up_to_date(existing, sts, pod):
                return False
        return True

    async def _set_claims_owners(self, sts: JSON, pod: JSON) -> None:
        for _template, claim in claims_for(sts, ordinal_of(pod)):
            cm = claim["metadata"]
            existing = self._get_claim(cm.get("namespace"), cm["name"])
            if existing is None:
                continue
            if unexpected_controller(existing, sts, pod):
                self._events.warning(sts, "FailedUpdate", f"update Claim {cm['name']} for Pod {objects.meta(pod).get('name')} "
                                     f"in StatefulSet {objects.meta(sts)['name']} failed error: PersistentVolumeClaim "
                                     f"{cm['name']} has a conflicting OwnerReference that acts as a manging controller, "
                                     "the retention policy is ignored for this claim")
            if claim_owners_up_to_date(existing, sts, pod):
                continue

            def owners(obj: JSON) -> JSON:
                set_claim_owners(obj, sts, pod)
                return obj

            await self._client.patch("v1", "PersistentVolumeClaim", name=cm["name"], namespace=cm.get("namespace"),
                                     mutate=owners)

    async def _create_pod(self, sts: JSON, pod: JSON) -> JSON:
        """Its claims, then the pod; returns the pod as made."""
        try:
            await self._create_claims(sts, pod)
        except Exception as exc:
            self._record(sts, "create", pod, exc)
            raise
        try:
            made = await self._client.create(pod)
        except errors.APIError as exc:
            if exc.reason == "AlreadyExists":
                # The cache has not shown it yet: the next sync will.
                raise Requeue(0.5) from exc
            self._record(sts, "create", pod, exc)
            raise
        try:
            await self._set_claims_owners(sts, made)
        except Exception as exc:
            self._record(sts, "update", made, exc)
            raise
        self._record(sts, "create", made, None)
        return made

    async def _delete_pod(self, sts: JSON, pod: JSON) -> None:
        pm = objects.meta(pod)
        try:
            await self._client.delete("v1", "Pod", name=pm["name"], namespace=pm.get("namespace"),
                                      options=rest.DeleteOptions(precondition_uid=pm.get("uid")))
        except errors.APIError as exc:
            if exc.code in (404, 409):
                return  # gone already, or another pod by now
            self._record(sts, "delete", pod, exc)
            raise
        self._record(sts, "delete", pod, None)

    async def _update_pod(self, sts: JSON, pod: JSON) -> None:
        """Mend a pod's identity labels, claims and storage (upstream's UpdateStatefulPod)."""
        try:
            if not storage_matches(sts, pod):
                await self._create_claims(sts, pod)
            if not self._claims_match(sts, pod):
                await self._set_claims_owners(sts, pod)
            if identity_matches(sts, pod) and storage_matches(sts, pod):
                return
            pm = objects.meta(pod)

            def mend(obj: JSON) -> JSON:
                if not identity_matches(sts, obj):
                    update_identity(sts, obj)
                if not storage_matches(sts, obj):
                    update_storage(sts, obj)
                return obj

            await self._client.patch("v1", "Pod", name=pm["name"], namespace=pm.get("namespace"), mutate=mend)
        except Exception as exc:
            self._record(sts, "update", pod, exc)
            raise
        self._record(sts, "update", pod, None)

    # --- status -----------------------------------------------------------------------------------

    async def _write_status(self, sts: JSON, status: Status) -> None:
        count = replicas_of(sts)
        strategy = (sts.get("spec") or {}).get("updateStrategy") or {}
        if strategy.get("type") == "RollingUpdate" and status.updated == count and status.ready == count \
                and status.replicas == count:
            # The rolling update is complete: the update revision is now the current one.
            status.current = status.updated
            status.current_revision = status.update_revision
        want: JSON = {
            "observedGeneration": status.observed_generation, "replicas": status.replicas,
            "readyReplicas": status.ready, "currentReplicas": status.current, "updatedReplicas": status.updated,
            "currentRevision": status.current_revision, "updateRevision": status.update_revision,
            "collisionCount": status.collision_count, "availableReplicas": status.available,
        }
        have = sts.get("status") or {}
        if int(have.get("observedGeneration") or 0) >= status.observed_generation and all(
                (have.get(k) or 0) == (v or 0) for k, v in want.items() if k != "observedGeneration"):
            return
        m = objects.meta(sts)

        def write(obj: JSON) -> JSON:
            st = obj.setdefault("status", {})
            for k, v in want.items():
                # omitempty upstream: zero counts and empty revisions are left out
                if v or k in ("replicas", "availableReplicas", "collisionCount"):
                    st[k] = v
                else:
                    st.pop(k, None)
            return obj

        try:
            await self._client.patch(API_VERSION, KIND, name=m["name"], namespace=m.get("namespace"), mutate=write,
                                     subresource="status")
        except errors.APIError as exc:
            if exc.code != 404:
                raise
