"""ReplicaSet controller: keep `spec.replicas` pods that match the selector, as upstream's.

- Pods are claimed as client-go's ControllerRefManager does: owned pods that stop matching the
  selector are released (their controller reference removed), matching orphans are adopted.
- Expectations: after creating or deleting pods the controller waits until the pod informer has
  seen every one of them (or 5 minutes have passed) before it counts again, so a burst of events
  never creates or deletes extra pods.
- Pods are created in slow-start batches (1, 2, 4, ... up to 500 at once); a creation failure
  stops the batch and sets the ReplicaFailure condition.
- When there are too many pods, upstream's ranking picks which go first: unscheduled before
  scheduled, Pending before Unknown before Running, not ready before ready, pods on crowded
  nodes first, the most recently ready, the most restarted, the newest.
- Status: replicas, fullyLabeledReplicas, readyReplicas, availableReplicas (minReadySeconds),
  observedGeneration, ReplicaFailure.

ReplicationControllers (core/v1) are run by this same logic, as upstream's replication manager
wraps its ReplicaSet controller: `ReplicationManager` differs only in the kind it owns and in its
selector, a plain map of labels rather than a LabelSelector.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import logging
import time
from collections.abc import Hashable
from typing import Any

from edgekube._cogs import clock as clock_mod
from edgekube.api import errors, labels
from edgekube.api.registry import rest
from edgekube.client import objects
from edgekube.client.events import Recorder
from edgekube.client.informer import Handlers, Informer, object_key
from edgekube.client.local import LocalClient
from edgekube.controllers import ownership
from edgekube.controllers.base import Controller, Requeue

log = logging.getLogger(__name__)
JSON = dict[str, Any]
_BURST = 500
_EXPECTATION_TTL = 300.0


class Expectations:
    """Pods a controller has asked to create or delete and not yet seen come or go."""

    def __init__(self) -> None:
        self._adds: dict[str, int] = {}
        self._dels: dict[str, set[str]] = {}
        self._since: dict[str, float] = {}

    def satisfied(self, key: str) -> bool:
        if self._adds.get(key, 0) <= 0 and not self._dels.get(key):
            return True
        if time.monotonic() - self._since.get(key, 0.0) > _EXPECTATION_TTL:
            self.forget(key)
            return True
        return False

    def expect(self, key: str, *, adds: int = 0, deletes: set[str] | None = None) -> None:
        self._adds[key] = adds
        self._dels[key] = set(deletes or ())
        self._since[key] = time.monotonic()

    def created(self, key: str) -> None:
        if key in self._adds:
            self._adds[key] -= 1

    def deleted(self, key: str, uid: str) -> None:
        self._dels.get(key, set()).discard(uid)

    def forget(self, key: str) -> None:
        self._adds.pop(key, None)
        self._dels.pop(key, None)
        self._since.pop(key, None)


class ReplicaSetController(Controller):
    name = "replicaset-controller"
    workers = 2
    api_version = "apps/v1"
    kind = "ReplicaSet"

    def __init__(self, client: LocalClient, sets: Informer, pods: Informer, events: Recorder, *,
                 clock: clock_mod.Clock) -> None:
        super().__init__()
        self._client = client
        self._sets = sets
        self._pods = pods
        self._events = events
        self._clock = clock
        self.expectations = Expectations()
        sets.add_handlers(Handlers(on_add=self._enqueue, on_update=self._set_updated, on_delete=self._set_deleted))
        pods.add_handlers(Handlers(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted))

    # --- event handlers -------------------------------------------------------------------

    def _enqueue(self, obj: JSON) -> None:
        self.queue.add(object_key(obj))

    def _set_updated(self, old: JSON, new: JSON) -> None:
        self._enqueue(new)

    def _set_deleted(self, obj: JSON) -> None:
        self.expectations.forget(object_key(obj))
        self._enqueue(obj)

    def _owner_key(self, pod: JSON) -> str | None:
        ref = objects.controller_of(pod)
        if ref is None or ref.get("kind") != self.kind or _group(str(ref.get("apiVersion", ""))) != _group(self.api_version):
            return None
        key = f"{objects.meta(pod).get('namespace')}/{ref.get('name')}"
        owner = self._sets.get(key)
        if owner is None or objects.meta(owner).get("uid") != ref.get("uid"):
            return None
        return key

    def _orphan_owners(self, pod: JSON) -> None:
        """An orphan pod may be adopted by any set whose selector matches it."""
        if objects.meta(pod).get("deletionTimestamp"):
            return
        for owner in self._sets.list(objects.meta(pod).get("namespace")):
            if objects.matches(self.selector(owner), pod):
                self._enqueue(owner)

    def _pod_added(self, pod: JSON) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.created(key)
            self.queue.add(key)
        elif objects.controller_of(pod) is None:
            self._orphan_owners(pod)

    def _pod_updated(self, old: JSON, new: JSON) -> None:
        if objects.meta(old).get("resourceVersion") == objects.meta(new).get("resourceVersion"):
            return
        old_key, new_key = self._owner_key(old), self._owner_key(new)
        if old_key is not None and old_key != new_key:
            self.queue.add(old_key)
        if new_key is not None:
            self.queue.add(new_key)
            # A pod that became ready is available only minReadySeconds later.
            owner = self._sets.get(new_key)
            mrs = int(((owner or {}).get("spec") or {}).get("minReadySeconds") or 0)
            if mrs > 0 and not objects.pod_ready(old) and objects.pod_ready(new):
                self.queue.add_after(new_key, mrs + 0.5)
        elif objects.controller_of(new) is None:
            self._orphan_owners(new)
        if objects.meta(old).get("labels") != objects.meta(new).get("labels") and new_key is not None:
            self._orphan_owners(new)

    def _pod_deleted(self, pod: JSON) -> None:
        key = self._owner_key(pod)
        if key is None:
            ref = objects.controller_of(pod)
            if ref is not None and ref.get("kind") == self.kind:
                key = f"{objects.meta(pod).get('namespace')}/{ref.get('name')}"
        if key is not None:
            self.expectations.deleted(key, str(objects.meta(pod).get("uid")))
            self.queue.add(key)

    def selector(self, owner: JSON) -> labels.Selector | None:
        """The owner's pod selector (None: matches nothing)."""
        return objects.selector_of(owner)

    # --- reconcile --------------------------------------------------------------------------

    async def reconcile(self, key: Hashable) -> None:
        key = str(key)
        rs = self._sets.get(key)
        if rs is None:
            self.expectations.forget(key)
            return
        pods = await self.claim(rs)
        active = [p for p in pods if objects.pod_active(p)]
        if self.expectations.satisfied(key) and not objects.meta(rs).get("deletionTimestamp"):
            await self.manage(key, rs, active)
        await self.update_status(rs, active)

    async def claim(self, rs: JSON) -> list[JSON]:
        """The pods this set owns, after adopting matching orphans and releasing the rest."""
        selector = self.selector(rs)
        return await ownership.claim(self._client, rs, self._pods.list(objects.meta(rs).get("namespace")),
                                     match=lambda pod: objects.matches(selector, pod))

    async def manage(self, key: str, rs: JSON, active: list[JSON]) -> None:
        want = int((rs.get("spec") or {}).get("replicas", 1) or 0)
        diff = len(active) - want
        if diff < 0:
            await self._create(key, rs, min(-diff, _BURST))
        elif diff > 0:
            doomed = pods_to_delete(active, min(diff, _BURST), related=self._pods.list(objects.meta(rs).get("namespace")))
            self.expectations.expect(key, deletes={str(objects.meta(p).get("uid")) for p in doomed})
            await asyncio.gather(*(self._delete(key, rs, p) for p in doomed))

    async def _create(self, key: str, rs: JSON, count: int) -> None:
        self.expectations.expect(key, adds=count)
        template = pod_from_template(rs)
        done = 0
        batch = 1
        failure: errors.APIError | None = None
        while done < count and failure is None:
            n = min(batch, count - done)
            results = await asyncio.gather(*(self._client.create(copy.deepcopy(template)) for _ in range(n)),
                                           return_exceptions=True)
            for res in results:
                if isinstance(res, BaseException):
                    self.expectations.created(key)  # never coming
                    if isinstance(res, errors.APIError):
                        failure = res
                    else:
                        raise res
                else:
                    self._events.normal(rs, "SuccessfulCreate", f"Created pod: {res['metadata']['name']}")
            done += n
            batch *= 2
        # Pods never attempted are not expected either.
        for _ in range(count - done):
            self.expectations.created(key)
        if failure is not None:
            self._events.warning(rs, "FailedCreate", f"Error creating: {failure.message}")
            await self._replica_failure(rs, failure.message)
            raise failure

    async def _delete(self, key: str, rs: JSON, pod: JSON) -> None:
        pm = objects.meta(pod)
        try:
            await self._client.delete("v1", "Pod", name=pm["name"], namespace=pm.get("namespace"),
                                      options=rest.DeleteOptions(precondition_uid=pm.get("uid")))
        except errors.APIError as exc:
            self.expectations.deleted(key, str(pm.get("uid")))
            if exc.code not in (404, 409):
                self._events.warning(rs, "FailedDelete", f"Error deleting: {exc.message}")
                raise
            return
        self._events.normal(rs, "SuccessfulDelete", f"Deleted pod: {pm['name']}")

    async def _replica_failure(self, rs: JSON, message: str) -> None:
        now = clock_mod.rfc3339(self._clock.now())

        def mark(obj: JSON) -> JSON:
            objects.set_condition(obj.setdefault("status", {}), "ReplicaFailure", "True", reason="FailedCreate",
                                  message=message, now=now)
            return obj

        m = objects.meta(rs)
        try:
            await self._client.patch(rs["apiVersion"], rs["kind"], name=m["name"], namespace=m.get("namespace"),
                                     mutate=mark, subresource="status")
        except errors.APIError as exc:
            if exc.code != 404:
                raise

    async def update_status(self, rs: JSON, active: list[JSON]) -> None:
        spec = rs.get("spec") or {}
        mrs = int(spec.get("minReadySeconds") or 0)
        now = self._clock.now()
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        ready = [p for p in active if objects.pod_ready(p)]
        available = [p for p in ready if objects.pod_available(p, mrs, now)]
        fully = [p for p in active
                 if all((objects.meta(p).get("labels") or {}).get(k) == v for k, v in template_labels.items())]
        status = dict(rs.get("status") or {})
        want = {
            "replicas": len(active),
            "fullyLabeledReplicas": len(fully),
            "readyReplicas": len(ready),
            "availableReplicas": len(available),
            "observedGeneration": objects.meta(rs).get("generation", 1),
        }
        conds = [c for c in status.get("conditions") or [] if c.get("type") != "ReplicaFailure"
                 or len(active) < int(spec.get("replicas", 1) or 0)]
        changed = any(_zero_none(status.get(k)) != v for k, v in want.items()) or conds != (status.get("conditions") or [])
        if changed:
            m = objects.meta(rs)

            def write(obj: JSON) -> JSON:
                st = obj.setdefault("status", {})
                for k, v in want.items():
                    if v or k in ("replicas", "observedGeneration"):
                        st[k] = v
                    else:
                        st.pop(k, None)
                if conds:
                    st["conditions"] = conds
                else:
                    st.pop("conditions", None)
                return obj

            try:
                await self._client.patch(rs["apiVersion"], rs["kind"], name=m["name"], namespace=m.get("namespace"),
                                         mutate=write, subresource="status")
            except errors.APIError as exc:
                if exc.code != 404:
                    raise
        if mrs > 0 and len(ready) > len(available):
            raise Requeue(_next_available(ready, mrs, now))


class ReplicationManager(ReplicaSetController):
    """ReplicationControllers: the ReplicaSet logic over a map selector."""

    name = "replicationcontroller-controller"
    api_version = "v1"
    kind = "ReplicationController"

    def selector(self, owner: JSON) -> labels.Selector | None:
        # Validation refuses an empty map; an empty one here (never stored) matches nothing.
        sel = (owner.get("spec") or {}).get("selector")
        if not isinstance(sel, dict) or not sel:
            return None
        try:
            return labels.from_label_selector({"matchLabels": sel})
        except labels.SelectorError:
            return None


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def _zero_none(value: Any) -> Any:
    return 0 if value is None else value


def _next_available(ready: list[JSON], mrs: int, now: datetime.datetime) -> float:
    waits = []
    for p in ready:
        c = objects.condition(p, "Ready") or {}
        since = c.get("lastTransitionTime")
        if since:
            left = (clock_mod.parse_rfc3339(since) + datetime.timedelta(seconds=mrs) - now).total_seconds()
            if left > 0:
                waits.append(left)
    return (min(waits) if waits else float(mrs)) + 0.5


def pod_from_template(owner: JSON) -> JSON:
    """A new pod for `owner`'s template: its labels, annotations and spec, owned by it."""
    template = (owner.get("spec") or {}).get("template") or {}
    tmeta = template.get("metadata") or {}
    meta: JSON = {
        "generateName": f"{objects.meta(owner)['name']}-",
        "namespace": objects.meta(owner).get("namespace"),
        "labels": dict(tmeta.get("labels") or {}),
        "ownerReferences": [objects.owner_ref(owner)],
    }
    if tmeta.get("annotations"):
        meta["annotations"] = dict(tmeta["annotations"])
    if tmeta.get("finalizers"):
        meta["finalizers"] = list(tmeta["finalizers"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": copy.deepcopy(template.get("spec") or {})}


_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def pods_to_delete(pods: list[JSON], count: int, *, related: list[JSON]) -> list[JSON]:
    """The `count` pods to delete first, by upstream's ActivePodsWithRanks order."""
    per_node: dict[str, int] = {}
    for p in related:
        node = (p.get("spec") or {}).get("nodeName")
        if node and objects.pod_active(p):
            per_node[node] = per_node.get(node, 0) + 1

    def rank(p: JSON) -> tuple[Any, ...]:
        spec = p.get("spec") or {}
        status = p.get("status") or {}
        node = spec.get("nodeName")
        ready = objects.pod_ready(p)
        ready_since = ((objects.condition(p, "Ready") or {}).get("lastTransitionTime") or "") if ready else ""
        restarts = max((int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or []), default=0)
        created = objects.meta(p).get("creationTimestamp") or ""
        return (
            1 if node else 0,
            _PHASE_RANK.get(status.get("phase", "Pending"), 1),
            1 if ready else 0,
            -per_node.get(node, 0) if node else 0,
            _desc(ready_since),
            -restarts,
            _desc(created),
        )

    return sorted(pods, key=rank)[:count]


def _desc(text: str) -> tuple[int, ...]:
    """Sort key for newest-first on RFC 3339 strings (empty sorts first)."""
    return tuple(-ord(ch) for ch in text) if text else ()
