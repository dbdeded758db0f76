"""DaemonSet controller: one pod of the template on every eligible node, as upstream's.

- Eligibility (upstream's NodeShouldRunDaemonPod): the template's nodeName, nodeSelector and
  required node affinity must match the node, and its taints must be tolerated, counting the
  tolerations every daemon pod gets (not-ready and unreachable NoExecute; disk-, memory- and
  pid-pressure and unschedulable NoSchedule; network-unavailable with hostNetwork). A node whose
  NoSchedule taint is not tolerated gets no new pod but keeps a running one; an untolerated
  NoExecute taint removes it.
- Pods are made from the template with those tolerations, the `controller-revision-hash` label
  (and `pod-template-generation` when the deprecated annotation is there) and a required node
  affinity on `metadata.name` (matchFields) for their node: the default scheduler binds them.
- Revisions: ControllerRevisions `<name>-<hash>` hold each template (see `revisions`); the one
  matching the template now is current (its number bumped to the top on a rollback), the oldest
  unused ones beyond `revisionHistoryLimit` are deleted. A name taken by another template bumps
  `status.collisionCount`.
- Updates: RollingUpdate replaces old pods while at most `maxUnavailable` pods are unavailable,
  or, with `maxSurge`, starts the new pod beside the old one and deletes the old one once the new
  one is available; OnDelete waits for the user to delete pods.
- Expectations: after creating or deleting pods nothing more is decided until the pod informer
  has shown each of them (or 5 minutes passed), so a burst of events never makes extra pods.
  Failed pods are deleted (and so replaced) with a per-node backoff of 1 s doubling to 15 min.
- Status: desiredNumberScheduled, currentNumberScheduled, numberMisscheduled, numberReady,
  numberAvailable (minReadySeconds), numberUnavailable, updatedNumberScheduled, observedGeneration.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
from collections.abc import Hashable, Iterable
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
# node name -> (shouldRun, shouldContinueRunning), worked out once per sync
Placement = dict[str, tuple[bool, bool]]

API_VERSION = "apps/v1"
KIND = "DaemonSet"
GENERATION_LABEL = "pod-template-generation"
GENERATION_ANNOTATION = "deprecated.daemonset.template.generation"
_BURST = 250  # upstream's burstReplicas
_EXPECTATION_TTL = 300.0
_BACKOFF_INITIAL = 1.0
_BACKOFF_MAX = 900.0
# Upstream's automatic tolerations (util.AddOrUpdateDaemonPodTolerations).
DAEMON_TOLERATIONS: tuple[tuple[str, str], ...] = (
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
)
NETWORK_UNAVAILABLE = ("node.kubernetes.io/network-unavailable", "NoSchedule")


class Expectations:
    """Pods a DaemonSet asked to create (a count) or delete (uids) and has not seen come or go."""

    def __init__(self, clock: clock_mod.Clock) -> None:
        self._clock = clock
        self._adds: dict[str, int] = {}
        self._dels: dict[str, set[str]] = {}
        self._since: dict[str, float] = {}

    def satisfied(self, key: str) -> bool:
        if self._adds.get(key, 0) <= 0 and not self._dels.get(key):
            return True
        if self._clock.monotonic() - self._since.get(key, 0.0) > _EXPECTATION_TTL:
            self.forget(key)
            return True
        return False

    def expect(self, key: str, *, adds: int, deletes: Iterable[str]) -> None:
        self._adds[key] = adds
        self._dels[key] = set(deletes)
        self._since[key] = self._clock.monotonic()

    def created(self, key: str, count: int = 1) -> None:
        if key in self._adds:
            self._adds[key] -= count

    def deleted(self, key: str, uid: str) -> None:
        self._dels.get(key, set()).discard(uid)

    def forget(self, key: str) -> None:
        self._adds.pop(key, None)
        self._dels.pop(key, None)
        self._since.pop(key, None)


# --- pure helpers ---------------------------------------------------------------------------


def add_daemon_tolerations(spec: JSON) -> None:
    """Add upstream's daemon tolerations to a pod spec (a mutable copy); one already there with the
    same key, operator, value and effect is replaced (it loses any tolerationSeconds)."""
    wanted = list(DAEMON_TOLERATIONS)
    if spec.get("hostNetwork"):
        wanted.append(NETWORK_UNAVAILABLE)
    tolerations = [t for t in spec.get("tolerations") or [] if isinstance(t, dict)]
    for key, effect in wanted:
        new = {"key": key, "operator": "Exists", "effect": effect}
        same = [i for i, t in enumerate(tolerations)
                if t.get("key") == key and t.get("effect") == effect and (t.get("operator") or "Equal") == "Exists"
                and not t.get("value")]
        if same:
            for i in same:
                tolerations[i] = dict(new)
        else:
            tolerations.append(new)
    spec["tolerations"] = tolerations


def daemon_pod_spec(ds: JSON) -> JSON:
    spec = copy.deepcopy(((ds.get("spec") or {}).get("template") or {}).get("spec") or {})
    add_daemon_tolerations(spec)
    return spec


def _untolerated(spec: JSON, node: JSON, effects: tuple[str, ...]) -> bool:
    tolerations = [t for t in spec.get("tolerations") or [] if isinstance(t, dict)]
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in effects and not any(objects.toleration_matches(t, taint) for t in tolerations):
            return True
    return False


def node_affinity_matches(spec: JSON, node: JSON) -> bool:
    return objects.required_node_affinity_matches(spec, node)


def should_run(node: JSON, ds: JSON) -> tuple[bool, bool]:
    """(shouldRun, shouldContinueRunning) of upstream's NodeShouldRunDaemonPod."""
    return node_should_run(node, daemon_pod_spec(ds))


def node_should_run(node: JSON, spec: JSON) -> tuple[bool, bool]:
    """should_run for a daemon pod spec (the template's, with the daemon tolerations)."""
    name = objects.meta(node).get("name")
    if spec.get("nodeName") and spec["nodeName"] != name:
        return False, False
    if not node_affinity_matches(spec, node):
        return False, False
    if _untolerated(spec, node, ("NoSchedule", "NoExecute")):
        return False, not _untolerated(spec, node, ("NoExecute",))
    return True, True


def with_node_affinity(spec: JSON, node: str) -> None:
    """Replace the required node affinity with one that selects `node` by name (a mutable copy)."""
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
    affinity = spec.get("affinity")
    if not isinstance(affinity, dict):
        affinity = spec["affinity"] = {}
    na = affinity.get("nodeAffinity")
    if not isinstance(na, dict):
        na = affinity["nodeAffinity"] = {}
    required = na.get("requiredDuringSchedulingIgnoredDuringExecution")
    if not isinstance(required, dict):
        required = na["requiredDuringSchedulingIgnoredDuringExecution"] = {}
    required["nodeSelectorTerms"] = [term]


def target_node(pod: JSON) -> str | None:
    """The node a daemon pod is for: its nodeName, else its matchFields affinity (GetTargetNodeName)."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    for term in required.get("nodeSelectorTerms") or []:
        for f in (term or {}).get("matchFields") or []:
            if f.get("key") == "metadata.name" and f.get("operator") == "In":
                values = f.get("values") or []
                return str(values[0]) if len(values) == 1 else None
    return None


def template_generation(ds: JSON) -> int | None:
    value = (objects.meta(ds).get("annotations") or {}).get(GENERATION_ANNOTATION)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def is_updated(pod: JSON, hash_: str, generation: int | None) -> bool:
    labels = objects.meta(pod).get("labels") or {}
    return bool((generation is not None and labels.get(GENERATION_LABEL) == str(generation))
                or (hash_ and labels.get(revisions.HASH_LABEL) == hash_))


def scaled(value: Any, total: int, *, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        pct = int(text[:-1])
        exact = pct * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(text)


def _pod_order(pod: JSON) -> tuple[int, str, str]:
    """Scheduled pods first, then the oldest, then by name (podByCreationTimestampAndPhase)."""
    m = objects.meta(pod)
    return (0 if (pod.get("spec") or {}).get("nodeName") else 1, m.get("creationTimestamp") or "", m.get("name") or "")


def _name(obj: JSON) -> str:
    return str(objects.meta(obj).get("name"))


def _uid(obj: JSON) -> str:
    return str(objects.meta(obj).get("uid"))


# --- the controller -------------------------------------------------------------------------


class DaemonSetController(Controller):
    name = "daemonset-controller"
    workers = 2

    def __init__(self, client: LocalClient, sets: Informer, pods: Informer, nodes: Informer, history: Informer,
                 events: Recorder, *, clock: clock_mod.Clock) -> None:
        super().__init__()
        self._client = client
        self._sets = sets
        self._pods = pods
        self._nodes = nodes
        self._history = history
        self._events = events
        self._clock = clock
        self.expectations = Expectations(clock)
        self._backoff: dict[str, tuple[float, float]] = {}  # key -> (delay, when it was last moved)
        sets.add_handlers(Handlers(on_add=self._enqueue, on_update=lambda _o, n: self._enqueue(n),
                                   on_delete=self._set_deleted))
        pods.add_handlers(Handlers(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted))
        nodes.add_handlers(Handlers(on_add=self._node_added, on_update=self._node_updated,
                                    on_delete=lambda _n: self._enqueue_all()))
        history.add_handlers(Handlers(on_add=self._history_changed, on_update=lambda _o, n: self._history_changed(n),
                                      on_delete=self._history_changed))

    async def run(self) -> None:
        for inf in (self._sets, self._pods, self._nodes, self._history):
            await inf.synced.wait()
        await super().run()

    # --- event handlers (enqueue only) --------------------------------------------------------

    def _enqueue(self, ds: JSON) -> None:
        m = objects.meta(ds)
        self.queue.add(f"{m.get('namespace')}/{m.get('name')}")

    def _enqueue_all(self) -> None:
        for ds in self._sets.list():
            self._enqueue(ds)

    def _set_deleted(self, ds: JSON) -> None:
        m = objects.meta(ds)
        key = f"{m.get('namespace')}/{m.get('name')}"
        self.expectations.forget(key)
        self.queue.add(key)

    def _owner(self, obj: JSON) -> str | None:
        """The key of the DaemonSet controlling `obj`, if it exists with the referenced uid."""
        ref = objects.controller_of(obj)
        if ref is None or ref.get("kind") != KIND:
            return None
        key = f"{objects.meta(obj).get('namespace')}/{ref.get('name')}"
        ds = self._sets.get(key)
        if ds is None or objects.meta(ds).get("uid") != ref.get("uid"):
            return None
        return key

    def _enqueue_matching(self, obj: JSON) -> None:
        for k in self._matching_sets(obj):
            self.queue.add(k)

    def _matching_sets(self, obj: JSON) -> list[str]:
        out = []
        for ds in self._sets.list(objects.meta(obj).get("namespace")):
            if objects.matches(objects.selector_of(ds), obj):
                m = objects.meta(ds)
                out.append(f"{m.get('namespace')}/{m.get('name')}")
        return out

    def _pod_added(self, pod: JSON) -> None:
        if objects.meta(pod).get("deletionTimestamp"):
            self._pod_deleted(pod)
            return
        key = self._owner(pod)
        if key is not None:
            self.expectations.created(key)
            self.queue.add(key)
        elif objects.controller_of(pod) is None:
            self._enqueue_matching(pod)

    def _pod_updated(self, old: JSON, new: JSON) -> None:
        if objects.meta(new).get("resourceVersion") == objects.meta(old).get("resourceVersion"):
            return
        if objects.meta(new).get("deletionTimestamp"):
            self._pod_deleted(new)
            return
        ownership.route_pod_update(self.queue, self._sets, self._owner(old), self._owner(new), old, new,
                                   adopters=self._enqueue_matching)

    def _pod_deleted(self, pod: JSON) -> None:
        key = self._owner(pod)
        if key is None:
            ref = objects.controller_of(pod)
            if ref is None or ref.get("kind") != KIND:
                return
            key = f"{objects.meta(pod).get('namespace')}/{ref.get('name')}"
        self.expectations.deleted(key, _uid(pod))
        self.queue.add(key)

    def _node_added(self, node: JSON) -> None:
        for ds in self._sets.list():
            if should_run(node, ds)[0]:
                self._enqueue(ds)

    def _node_updated(self, old: JSON, new: JSON) -> None:
        def placement(n: JSON) -> tuple[Any, ...]:
            return (objects.meta(n).get("labels"), (n.get("spec") or {}).get("taints"))

        if placement(old) == placement(new):
            return
        for ds in self._sets.list():
            if should_run(old, ds) != should_run(new, ds):
                self._enqueue(ds)

    def _history_changed(self, rev: JSON) -> None:
        ref = objects.controller_of(rev)
        if ref is not None:
            if ref.get("kind") == KIND:
                self.queue.add(f"{objects.meta(rev).get('namespace')}/{ref.get('name')}")
            return
        self._enqueue_matching(rev)

    # --- reconcile ------------------------------------------------------------------------------

    async def reconcile(self, key: Hashable) -> None:
        key = str(key)
        ds = self._sets.get(key)
        if ds is None:
            self.expectations.forget(key)
            return
        if (ds.get("spec") or {}).get("selector") == {}:
            self._events.warning(ds, "SelectingAll", "This daemon set is selecting all pods. A non-empty selector is required.")
            return
        if objects.meta(ds).get("deletionTimestamp"):
            # Its pods and revisions may be going too: nothing reliable to count or write.
            return
        spec = daemon_pod_spec(ds)
        nodes: Placement = {_name(n): node_should_run(n, spec) for n in self._nodes.list()}
        cur, old = await self._construct_history(ds)
        hash_ = (objects.meta(cur).get("labels") or {}).get(revisions.HASH_LABEL, "")
        waits: list[float] = []
        if not self.expectations.satisfied(key):
            await self._update_status(ds, nodes, hash_, observed=False, waits=waits)
            return
        failure: Exception | None = None
        try:
            await self._update(key, ds, nodes, hash_, old, waits)
        except Exception as exc:
            failure = exc
        try:
            await self._update_status(ds, nodes, hash_, observed=True, waits=waits)
        except Exception as exc:
            if failure is None:
                raise
            log.warning("daemon set %s: status not updated: %s", key, exc, exc_info=not isinstance(exc, errors.APIError))
        if failure is not None:
            raise failure
        if waits:
            raise Requeue(min(waits))

    async def _claimed_pods(self, ds: JSON) -> list[JSON]:
        selector = objects.selector_of(ds)
        pods = self._pods.list(objects.meta(ds).get("namespace"))
        return await ownership.claim(self._client, ds, pods, match=lambda p: objects.matches(selector, p))

    def _nodes_to_pods(self, pods: list[JSON], *, include_deleted_terminal: bool = False) -> dict[str, list[JSON]]:
        out: dict[str, list[JSON]] = {}
        for pod in pods:
            if not include_deleted_terminal and objects.pod_terminal(pod) and objects.meta(pod).get("deletionTimestamp"):
                continue
            node = target_node(pod)
            if node is not None:
                out.setdefault(node, []).append(pod)
        return out

    async def _update(self, key: str, ds: JSON, nodes: Placement, hash_: str, old: list[JSON],
                      waits: list[float]) -> None:
        pods = await self._claimed_pods(ds)
        await self._manage(key, ds, nodes, self._nodes_to_pods(pods), hash_, waits)
        if self.expectations.satisfied(key):
            strategy = (ds.get("spec") or {}).get("updateStrategy") or {}
            if strategy.get("type") == "RollingUpdate":
                await self._rolling_update(key, ds, nodes, self._nodes_to_pods(pods), hash_)
        await self._cleanup_history(ds, old, pods)

    # --- creating and deleting pods ---------------------------------------------------------------

    def _surge_allowed(self, ds: JSON) -> bool:
        return self._max_surge(ds, 1) > 0

    def _max_surge(self, ds: JSON, total: int) -> int:
        strategy = (ds.get("spec") or {}).get("updateStrategy") or {}
        if strategy.get("type") != "RollingUpdate":
            return 0
        value = (strategy.get("rollingUpdate") or {}).get("maxSurge")
        return 0 if value is None else scaled(value, total, round_up=True)

    def _max_unavailable(self, ds: JSON, total: int) -> int:
        strategy = (ds.get("spec") or {}).get("updateStrategy") or {}
        if strategy.get("type") != "RollingUpdate":
            return 0
        value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable")
        return 0 if value is None else scaled(value, total, round_up=True)

    def _in_backoff(self, key: str) -> float:
        """Seconds left in the failed-pod backoff of `key` (0 when none); moves it on when over."""
        now = self._clock.monotonic()
        delay, since = self._backoff.get(key, (0.0, 0.0))
        if delay and now - since < delay:
            return delay - (now - since)
        if delay and now - since > 2 * _BACKOFF_MAX:
            delay = 0.0  # long quiet: start over
        self._backoff[key] = (min(delay * 2, _BACKOFF_MAX) if delay else _BACKOFF_INITIAL, now)
        if len(self._backoff) > 1024:  # forget nodes and generations long quiet
            self._backoff = {k: v for k, v in self._backoff.items() if now - v[1] <= 2 * _BACKOFF_MAX}
        return 0.0

    async def _manage(self, key: str, ds: JSON, nodes: Placement, node_pods: dict[str, list[JSON]], hash_: str,
                      waits: list[float]) -> None:
        create_on: list[str] = []
        delete: list[JSON] = []
        surge = self._surge_allowed(ds)
        now = self._clock.now()
        mrs = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        dmeta = objects.meta(ds)
        observed = int((ds.get("status") or {}).get("observedGeneration") or 0)
        for name, (run, keep) in nodes.items():
            pods = node_pods.get(name)
            if run and not pods:
                create_on.append(name)
            elif keep:
                alive = []
                for pod in pods or []:
                    pm = objects.meta(pod)
                    if pm.get("deletionTimestamp"):
                        continue
                    phase = (pod.get("status") or {}).get("phase")
                    if phase == "Failed":
                        left = self._in_backoff(f"{dmeta.get('uid')}/{observed}/{name}")
                        if left:
                            waits.append(left)
                            continue
                        self._events.warning(ds, "FailedDaemonPod", f"Found failed daemon pod {pm.get('namespace')}/"
                                             f"{pm.get('name')} on node {name}, will try to kill it")
                        delete.append(pod)
                    elif phase == "Succeeded":
                        self._events.normal(ds, "SucceededDaemonPod", f"Found succeeded daemon pod {pm.get('namespace')}/"
                                            f"{pm.get('name')} on node {name}, will try to delete it")
                        delete.append(pod)
                    else:
                        alive.append(pod)
                alive.sort(key=_pod_order)
                if not surge:
                    delete.extend(alive[1:])
                    continue
                if not alive:
                    if run:
                        create_on.append(name)
                    continue
                # Surging: an old and a new pod may share the node while the new one comes up.
                oldest_new: JSON | None = None
                oldest_old: JSON | None = None
                for pod in alive:
                    is_new = (objects.meta(pod).get("labels") or {}).get(revisions.HASH_LABEL) == hash_
                    if is_new and oldest_new is None:
                        oldest_new = pod
                    elif not is_new and oldest_old is None:
                        oldest_old = pod
                    else:
                        delete.append(pod)
                if oldest_new is not None and oldest_old is not None and (
                        not objects.pod_ready(oldest_old) or objects.pod_available(oldest_new, mrs, now)):
                    delete.append(oldest_old)
            elif pods:
                delete.extend(p for p in pods if not objects.meta(p).get("deletionTimestamp"))
        # Unscheduled pods for nodes that are gone: nothing else would ever remove them.
        for node_name, pods in node_pods.items():
            if node_name not in nodes:
                delete.extend(p for p in pods if not (p.get("spec") or {}).get("nodeName"))
        await self._sync_nodes(key, ds, delete, create_on, hash_)

    def _pod_template(self, ds: JSON, hash_: str) -> JSON:
        template = (ds.get("spec") or {}).get("template") or {}
        tmeta = template.get("metadata") or {}
        labels = dict(tmeta.get("labels") or {})
        generation = template_generation(ds)
        if generation is not None:
            labels[GENERATION_LABEL] = str(generation)
        if hash_:
            labels[revisions.HASH_LABEL] = hash_
        meta: JSON = {"generateName": f"{_name(ds)}-", "namespace": objects.meta(ds).get("namespace"),
                      "labels": labels, "ownerReferences": [objects.owner_ref(ds)]}
        if tmeta.get("annotations"):
            meta["annotations"] = dict(tmeta["annotations"])
        if tmeta.get("finalizers"):
            meta["finalizers"] = list(tmeta["finalizers"])
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": daemon_pod_spec(ds)}

    async def _sync_nodes(self, key: str, ds: JSON, delete: list[JSON], create_on: list[str], hash_: str) -> None:
        create_on = create_on[:_BURST]
        delete = delete[:_BURST]
        if not create_on and not delete:
            return
        self.expectations.expect(key, adds=len(create_on), deletes={_uid(p) for p in delete})
        template = self._pod_template(ds, hash_)
        failures: list[Exception] = []

        async def create(node: str) -> None:
            pod = copy.deepcopy(template)
            with_node_affinity(pod["spec"], node)
            try:
                made = await self._client.create(pod)
            except errors.APIError as exc:
                self.expectations.created(key)  # never coming
                if any(c.get("reason") == "NamespaceTerminating" for c in (exc.details or {}).get("causes") or []):
                    return
                self._events.warning(ds, "FailedCreate", f"Error creating: {exc.message}")
                failures.append(exc)
                return
            self._events.normal(ds, "SuccessfulCreate", f"Created pod: {_name(made)}")

        # Slow start: batches of 1, 2, 4, ...; a failing batch stops the rest until the next sync.
        pos, batch = 0, 1
        while pos < len(create_on):
            chunk = create_on[pos:pos + batch]
            before = len(failures)
            await asyncio.gather(*(create(n) for n in chunk))
            pos += len(chunk)
            batch *= 2
            if len(failures) > before and pos < len(create_on):
                self.expectations.created(key, len(create_on) - pos)
                break

        async def remove(pod: JSON) -> None:
            pm = objects.meta(pod)
            try:
                await self._client.delete("v1", "Pod", name=pm["name"], namespace=pm.get("namespace"),
                                          options=rest.DeleteOptions(precondition_uid=pm.get("uid")))
            except errors.APIError as exc:
                self.expectations.deleted(key, _uid(pod))
                if exc.code not in (404, 409):
                    self._events.warning(ds, "FailedDelete", f"Error deleting: {exc.message}")
                    failures.append(exc)
                return
            self._events.normal(ds, "SuccessfulDelete", f"Deleted pod: {pm['name']}")

        await asyncio.gather(*(remove(p) for p in delete))
        if failures:
            raise failures[0]

    # --- rolling update ---------------------------------------------------------------------------

    def _counts(self, ds: JSON, nodes: Placement, node_pods: dict[str, list[JSON]]) -> tuple[int, int, int]:
        """(maxSurge, maxUnavailable, desiredNumberScheduled); adds an empty entry to `node_pods` for
        each node that should run a pod and has none."""
        desired = 0
        for name, (run, _keep) in nodes.items():
            if run:
                desired += 1
                node_pods.setdefault(name, [])
        surge = self._max_surge(ds, desired)
        unavailable = self._max_unavailable(ds, desired)
        if desired > 0 and surge == 0 and unavailable == 0:
            unavailable = 1  # an impossible configuration: accept unavailability, as upstream
        return surge, unavailable, desired

    @staticmethod
    def _new_and_old(ds: JSON, pods: list[JSON], hash_: str) -> tuple[JSON | None, JSON | None, bool]:
        """The node's one new and one old pod (not being deleted); ok=False when there are more."""
        new: JSON | None = None
        old: JSON | None = None
        generation = template_generation(ds)
        for pod in pods:
            if objects.meta(pod).get("deletionTimestamp"):
                continue
            if is_updated(pod, hash_, generation):
                if new is not None:
                    return None, None, False
                new = pod
            else:
                if old is not None:
                    return None, None, False
                old = pod
        return new, old, True

    async def _rolling_update(self, key: str, ds: JSON, nodes: Placement, node_pods: dict[str, list[JSON]],
                              hash_: str) -> None:
        max_surge, max_unavailable, desired = self._counts(ds, nodes, node_pods)
        mrs = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        now = self._clock.now()

        def available(pod: JSON) -> bool:
            return objects.pod_available(pod, mrs, now)

        def runs_there(node_name: str) -> bool:
            return node_name in nodes and nodes[node_name][0]

        if max_surge == 0:
            # Delete just enough old pods to stay within maxUnavailable; manage() makes the new ones.
            unavailable = 0
            replace: list[JSON] = []
            candidates: list[JSON] = []
            for node_name in sorted(node_pods):
                new, old, ok = self._new_and_old(ds, node_pods[node_name], hash_)
                if not ok or (new is None) == (old is None):
                    unavailable += 1  # manage() is still at work on this node
                elif new is not None:
                    if not available(new):
                        unavailable += 1
                elif old is not None:
                    if not available(old):
                        replace.append(old)
                        unavailable += 1
                    elif unavailable < max_unavailable:
                        candidates.append(old)
            room = max(0, min(max_unavailable - unavailable, len(candidates)))
            await self._sync_nodes(key, ds, replace + candidates[:room], [], hash_)
            return

        # Surging: start new pods beside old ones (at most maxSurge at once), then delete each old
        # pod whose new one is available.
        to_delete: list[JSON] = []
        sunset: list[JSON] = []
        candidates_new: list[str] = []
        allowed_new: list[str] = []
        surging = 0
        available_count = 0
        for node_name in sorted(node_pods):
            new, old, ok = self._new_and_old(ds, node_pods[node_name], hash_)
            if not ok:
                surging += 1
                continue
            if (old is not None and available(old)) or (old is None and new is not None and available(new)):
                available_count += 1
            if old is None:
                continue
            if new is None:
                if not available(old):
                    if not runs_there(node_name):
                        to_delete.append(old)
                        continue
                    allowed_new.append(node_name)
                else:
                    if not runs_there(node_name):
                        sunset.append(old)
                        continue
                    if surging >= max_surge:
                        continue
                    candidates_new.append(node_name)
            elif not available(new):
                surging += 1
            else:
                to_delete.append(old)
        deletable = available_count - desired
        if deletable > 0:
            to_delete.extend(sunset[:deletable])
        room = max(0, min(max_surge - surging, len(candidates_new)))
        await self._sync_nodes(key, ds, to_delete, allowed_new + candidates_new[:room], hash_)

    # --- history ----------------------------------------------------------------------------------

    async def _construct_history(self, ds: JSON) -> tuple[JSON, list[JSON]]:
        """The current revision (made, or renumbered to the top, if need be) and the old ones."""
        ns = objects.meta(ds).get("namespace")
        selector = objects.selector_of(ds)
        owned = await ownership.claim(self._client, ds, self._history.list(ns),
                                      match=lambda r: objects.matches(selector, r))
        current: list[JSON] = []
        old: list[JSON] = []
        for rev in owned:
            if revisions.HASH_LABEL not in (objects.meta(rev).get("labels") or {}):
                # Upstream labels old revisions with their name rather than a recomputed hash.
                rev = await self._patch_revision(rev, label=_name(rev))
            (current if revisions.matches(ds, rev) else old).append(rev)
        top = revisions.max_number(old) + 1
        if not current:
            return await self._snapshot(ds, top), old
        cur = await self._dedup(ds, current)
        if revisions.number(cur) < top:
            cur = await self._patch_revision(cur, number=top)
        return cur, old

    async def _patch_revision(self, rev: JSON, *, label: str | None = None, number: int | None = None) -> JSON:
        m = objects.meta(rev)

        def mutate(obj: JSON) -> JSON:
            if label is not None:
                obj["metadata"].setdefault("labels", {})[revisions.HASH_LABEL] = label
            if number is not None:
                obj["revision"] = number
            return obj

        return await self._client.patch("apps/v1", "ControllerRevision", name=m["name"], namespace=m.get("namespace"),
                                        mutate=mutate)

    async def _snapshot(self, ds: JSON, number: int) -> JSON:
        meta = objects.meta(ds)
        collisions = (ds.get("status") or {}).get("collisionCount")
        hash_ = revisions.compute_hash((ds.get("spec") or {}).get("template") or {}, collisions)
        name = f"{meta['name']}-{hash_}"
        labels = {**revisions.template_labels(ds), revisions.HASH_LABEL: hash_}
        rev = revisions.new(ds, name=name, data=revisions.template_patch(ds), revision=number, labels=labels)
        try:
            return await self._client.create(rev)
        except errors.APIError as exc:
            if exc.reason != "AlreadyExists":
                raise
            existing = self._client.get("apps/v1", "ControllerRevision", name=name, namespace=meta.get("namespace"))
            if revisions.matches(ds, existing):
                return existing
            # Another template has this name: bump collisionCount, so that the next sync hashes anew.
            fresh = self._client.get(API_VERSION, KIND, name=meta["name"], namespace=meta.get("namespace"))
            if (fresh.get("status") or {}).get("collisionCount") != collisions:
                raise RuntimeError(f"daemon set {meta.get('namespace')}/{meta['name']}: stale collisionCount "
                                   f"{collisions}; will retry once it is updated") from exc
            log.info("daemon set %s/%s: hash collision on %s; bumping collisionCount", meta.get("namespace"),
                     meta["name"], name)

            def bump(obj: JSON) -> JSON:
                st = obj.setdefault("status", {})
                st["collisionCount"] = int(st.get("collisionCount") or 0) + 1
                return obj

            await self._client.patch(API_VERSION, KIND, name=meta["name"], namespace=meta.get("namespace"),
                                     mutate=bump, subresource="status")
            raise

    async def _dedup(self, ds: JSON, current: list[JSON]) -> JSON:
        if len(current) == 1:
            return current[0]
        keep = max(current, key=revisions.number)
        keep_hash = (objects.meta(keep).get("labels") or {}).get(revisions.HASH_LABEL, "")
        for pod in await self._claimed_pods(ds):
            if (objects.meta(pod).get("labels") or {}).get(revisions.HASH_LABEL) != keep_hash:
                pm = objects.meta(pod)

                def relabel(obj: JSON) -> JSON:
                    obj["metadata"].setdefault("labels", {})[revisions.HASH_LABEL] = keep_hash
                    return obj

                await self._client.patch("v1", "Pod", name=pm["name"], namespace=pm.get("namespace"), mutate=relabel)
        for rev in current:
            if _name(rev) != _name(keep):
                await self._delete_revision(rev)
        return keep

    async def _delete_revision(self, rev: JSON) -> None:
        m = objects.meta(rev)
        try:
            await self._client.delete("apps/v1", "ControllerRevision", name=m["name"], namespace=m.get("namespace"))
        except errors.APIError as exc:
            if exc.code != 404:
                raise

    async def _cleanup_history(self, ds: JSON, old: list[JSON], pods: list[JSON]) -> None:
        limit = (ds.get("spec") or {}).get("revisionHistoryLimit")
        keep = 10 if limit is None else int(limit)
        excess = len(old) - keep
        if excess <= 0:
            return
        live = {(objects.meta(p).get("labels") or {}).get(revisions.HASH_LABEL) for p in pods}
        live.discard(None)
        for rev in revisions.sort(old):
            if excess <= 0:
                break
            if (objects.meta(rev).get("labels") or {}).get(revisions.HASH_LABEL) in live:
                continue
            await self._delete_revision(rev)
            excess -= 1

    # --- status -----------------------------------------------------------------------------------

    async def _update_status(self, ds: JSON, nodes: Placement, hash_: str, *, observed: bool,
                             waits: list[float]) -> None:
        selector = objects.selector_of(ds)
        uid = objects.meta(ds).get("uid")
        owned = [p for p in self._pods.list(objects.meta(ds).get("namespace"))
                 if (objects.controller_of(p) or {}).get("uid") == uid and objects.matches(selector, p)]
        node_pods = self._nodes_to_pods(owned)
        mrs = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        now = self._clock.now()
        generation = template_generation(ds)
        desired = current = misscheduled = ready = updated = available = 0
        for name, (run, _keep) in nodes.items():
            pods = sorted(node_pods.get(name) or [], key=_pod_order)
            if not run:
                if pods:
                    misscheduled += 1
                continue
            desired += 1
            if not pods:
                continue
            current += 1
            pod = pods[0]
            if objects.pod_ready(pod):
                ready += 1
                if objects.pod_available(pod, mrs, now):
                    available += 1
            if is_updated(pod, hash_, generation):
                updated += 1
        want: JSON = {
            "desiredNumberScheduled": desired, "currentNumberScheduled": current, "numberMisscheduled": misscheduled,
            "numberReady": ready, "updatedNumberScheduled": updated, "numberAvailable": available,
            "numberUnavailable": desired - available,
        }
        status = ds.get("status") or {}
        generation_now = int(objects.meta(ds).get("generation") or 1)
        if mrs > 0 and ready != available:
            waits.append(float(mrs))
        if all(int(status.get(k) or 0) == v for k, v in want.items()) and \
                int(status.get("observedGeneration") or 0) >= generation_now:
            return
        m = objects.meta(ds)

        def write(obj: JSON) -> JSON:
            st = obj.setdefault("status", {})
            if observed:
                st["observedGeneration"] = generation_now
            for k, v in want.items():
                # The last three are omitempty upstream: zero is left out.
                if v or k not in ("updatedNumberScheduled", "numberAvailable", "numberUnavailable"):
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
