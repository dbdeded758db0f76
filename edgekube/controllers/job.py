"""The Job controller (batch/v1), as upstream's job-controller.

A Job runs pods made from `spec.template` until enough of them succeed (`completions`, or any one
when completions is unset), at most `parallelism` at a time, and fails once more pods failed than
`backoffLimit` allows (for `restartPolicy: OnFailure`, container restarts count too) or it ran
longer than `activeDeadlineSeconds`. `completionMode: Indexed` gives each pod an index (annotation,
label, `JOB_COMPLETION_INDEX`, hostname `<job>-<index>`) and the Job completes when every index
has succeeded once (`status.completedIndexes`, e.g. "0-2,4"). `suspend` deletes the active pods.

Counting is exact, as upstream's: every pod is created with the `batch.kubernetes.io/job-tracking`
finalizer, so a finished pod cannot vanish before it was counted. A finished pod's uid first goes
into `status.uncountedTerminatedPods` (written), then its finalizer is removed, then it moves into
the `succeeded`/`failed` counters (written again); a crash between steps repeats none and loses
none. Pods whose Job is gone or finished lose the finalizer (the "orphan" keys of the queue).

Expectations, as client-go's: pods this controller created or deleted but has not seen in its
informer yet hold the Job's sync back, so a burst of events never creates extra pods; so do
finalizer removals not seen yet, so a pod is never counted twice. Each Job also remembers the
status revision it last wrote and waits for the informer to show it before trusting the cache.

Finishing is two-step (upstream with JobManagedBy/JobPodReplacementPolicy on): the interim
`SuccessCriteriaMet` or `FailureTarget` condition is written first, active pods are deleted, and
`Complete` or `Failed` follows once no pod is left terminating. Pod re-creation after failures
backs off 10 s doubling to 10 min. A Job whose `managedBy` names another controller is left
alone. Not covered: podFailurePolicy, backoffLimitPerIndex, successPolicy. Deleting finished Jobs
after `ttlSecondsAfterFinished` is the ttlafterfinished module's job, as upstream.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
import logging
from collections.abc import Hashable, Iterable
from typing import Any

from edgekube._cogs import clock as clock_mod
from edgekube.api import errors
from edgekube.client import objects
from edgekube.client.events import Recorder
from edgekube.client.informer import Handlers, Informer, object_key
from edgekube.client.local import LocalClient
from edgekube.controllers.base import Controller, Requeue

log = logging.getLogger(__name__)
JSON = dict[str, Any]

TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"  # the annotation and the label
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
CONTROLLER_NAME = "kubernetes.io/job-controller"

BATCH_PERIOD = 1.0  # pod events and status updates are batched per Job (upstream's syncJobBatchPeriod)
POD_FAILURE_BACKOFF = 10.0
MAX_POD_FAILURE_BACKOFF = 600.0
MAX_UNCOUNTED_PODS = 500
MAX_POD_CHANGES_PER_SYNC = 500
EXPECTATIONS_TIMEOUT = 300.0

COMPLETE = "Complete"
FAILED = "Failed"
FAILURE_TARGET = "FailureTarget"
SUCCESS_CRITERIA_MET = "SuccessCriteriaMet"
SUSPENDED = "Suspended"


# --- expectations ------------------------------------------------------------------------------


class Expectations:
    """Creations and deletions a controller made but has not observed yet, per controller key
    (client-go's ControllerExpectations): satisfied when none is outstanding or the record is
    older than five minutes (a missed event must not wedge the controller forever)."""

    def __init__(self, clock: clock_mod.Clock) -> None:
        self._clock = clock
        self._records: dict[str, list[float]] = {}  # key -> [adds, deletes, set at]

    def satisfied(self, key: str) -> bool:
        rec = self._records.get(key)
        if rec is None:
            return True
        adds, dels, at = rec
        return (adds <= 0 and dels <= 0) or self._clock.monotonic() - at > EXPECTATIONS_TIMEOUT

    def expect(self, key: str, *, adds: int = 0, deletes: int = 0) -> None:
        self._records[key] = [float(adds), float(deletes), self._clock.monotonic()]

    def creation_observed(self, key: str) -> None:
        rec = self._records.get(key)
        if rec is not None:
            rec[0] -= 1

    def deletion_observed(self, key: str) -> None:
        rec = self._records.get(key)
        if rec is not None:
            rec[1] -= 1

    def forget(self, key: str) -> None:
        self._records.pop(key, None)


@dataclasses.dataclass
class _Backoff:
    failures: int = 0  # failures since the last success
    last_failure: datetime.datetime | None = None

    def remaining(self, now: datetime.datetime) -> float:
        if self.failures == 0 or self.last_failure is None:
            return 0.0
        delay = POD_FAILURE_BACKOFF
        for _ in range(1, self.failures):
            delay *= 2
            if delay >= MAX_POD_FAILURE_BACKOFF:
                delay = MAX_POD_FAILURE_BACKOFF
                break
        elapsed = (now - self.last_failure).total_seconds()
        return max(0.0, delay - elapsed)


# --- small readers -----------------------------------------------------------------------------


def finished_condition(job: JSON) -> str | None:
    """"Complete" or "Failed" when the Job has finished (upstream's IsJobFinished)."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in (COMPLETE, FAILED) and c.get("status") == "True":
            return str(c["type"])
    return None


def completion_index(pod: JSON) -> int:
    value = (objects.meta(pod).get("annotations") or {}).get(COMPLETION_INDEX)
    try:
        ix = int(str(value))
    except ValueError:
        return -1
    return ix if ix >= 0 else -1


def _has_finalizer(pod: JSON) -> bool:
    return TRACKING_FINALIZER in (objects.meta(pod).get("finalizers") or [])


def _indexed(job: JSON) -> bool:
    return (job.get("spec") or {}).get("completionMode") == "Indexed"


def _suspended(job: JSON) -> bool:
    return bool((job.get("spec") or {}).get("suspend"))


def _managed_elsewhere(job: JSON) -> bool:
    managed = (job.get("spec") or {}).get("managedBy")
    return bool(managed) and managed != CONTROLLER_NAME


def _only_replace_failed(job: JSON) -> bool:
    spec = job.get("spec") or {}
    return spec.get("podReplacementPolicy") == "Failed" or spec.get("podFailurePolicy") is not None


def _phase(pod: JSON) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def _pod_failed(pod: JSON, job: JSON) -> bool:
    """A failed pod, or (unless only failed pods are replaced) one deleted before it succeeded."""
    if _only_replace_failed(job):
        return _phase(pod) == "Failed"
    if _phase(pod) == "Failed":
        return True
    return bool(objects.meta(pod).get("deletionTimestamp")) and _phase(pod) != "Succeeded"


def _terminating(pod: JSON) -> bool:
    return not objects.pod_terminal(pod) and bool(objects.meta(pod).get("deletionTimestamp"))


def _finish_time(pod: JSON) -> datetime.datetime:
    """When the pod finished: its last container's end, else Ready=False's transition, else its
    deletion, else its creation (upstream's getFinishedTime)."""
    status = pod.get("status") or {}
    latest: datetime.datetime | None = None
    statuses = status.get("containerStatuses") or []
    for cs in statuses:
        ended = ((cs.get("state") or {}).get("terminated") or {}).get("finishedAt")
        if not ended:
            latest = None
            break
        t = clock_mod.parse_rfc3339(ended)
        latest = t if latest is None or t > latest else latest
    if latest is not None and statuses:
        return latest
    ready = objects.condition(pod, "Ready")
    if ready is not None and ready.get("status") == "False" and ready.get("lastTransitionTime"):
        return clock_mod.parse_rfc3339(ready["lastTransitionTime"])
    meta = objects.meta(pod)
    if meta.get("deletionTimestamp"):
        grace = int(meta.get("deletionGracePeriodSeconds") or 0)
        return clock_mod.parse_rfc3339(meta["deletionTimestamp"]) - datetime.timedelta(seconds=grace)
    return clock_mod.parse_rfc3339(meta.get("creationTimestamp") or "1970-01-01T00:00:00Z")


def _removal_order(pod: JSON) -> tuple[Any, ...]:
    """Pods to delete first sort first: unscheduled, pending, not ready, restarted most, newest
    (upstream's controller.ActivePods)."""
    status = pod.get("status") or {}
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(_phase(pod), 0)
    restarts = max((int(cs.get("restartCount") or 0) for cs in status.get("containerStatuses") or []), default=0)
    created = objects.meta(pod).get("creationTimestamp")
    age = -clock_mod.parse_rfc3339(created).timestamp() if created else float("-inf")
    return (bool((pod.get("spec") or {}).get("nodeName")), phase_rank, objects.pod_ready(pod), -restarts, age)


# --- indexes -----------------------------------------------------------------------------------


Intervals = list[tuple[int, int]]


def parse_indexes(text: str, completions: int) -> Intervals:
    """`status.completedIndexes` ("1,3-5") as ordered intervals below `completions`."""
    out: Intervals = []
    for part in (text or "").split(","):
        if not part:
            continue
        first_s, _, last_s = part.partition("-")
        try:
            first = int(first_s)
            last = int(last_s) if last_s else first
        except ValueError:
            continue
        if first >= completions:
            break
        last = min(last, completions - 1)
        if out and out[-1][1] == first - 1:
            out[-1] = (out[-1][0], last)
        else:
            out.append((first, last))
    return out


def merge_indexes(intervals: Intervals, new: Iterable[int]) -> Intervals:
    merged: Intervals = []
    for first, last in sorted([*intervals, *((i, i) for i in new)]):
        if merged and first <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


def format_indexes(intervals: Intervals) -> str:
    """As upstream: "0-2,4", and two neighbours as "5,6"."""
    parts = []
    for first, last in intervals:
        if last == first:
            parts.append(str(first))
        elif last == first + 1:
            parts.append(f"{first},{last}")
        else:
            parts.append(f"{first}-{last}")
    return ",".join(parts)


def _total(intervals: Intervals) -> int:
    return sum(last - first + 1 for first, last in intervals)


def _has_index(intervals: Intervals, ix: int) -> bool:
    return any(first <= ix <= last for first, last in intervals)


def pod_generate_name(job_name: str, index: int | None = None) -> str:
    suffix = "-" if index is None else f"-{index}-"
    if len(job_name) + len(suffix) > 58:  # names.MaxGeneratedNameLength
        job_name = job_name[: 58 - len(suffix)]
    return job_name + suffix


# --- the controller ----------------------------------------------------------------------------


@dataclasses.dataclass
class _Sync:
    """One sync of one Job (upstream's syncJobCtx)."""

    key: str
    job: JSON
    pods: list[JSON]
    active_pods: list[JSON]
    ready: int
    terminating: int
    uncounted_succeeded: set[str]
    uncounted_failed: set[str]
    expected_rm: set[str]
    succeeded: int = 0
    failed: int = 0
    finished: JSON | None = None  # the condition the Job is heading for
    backoff: _Backoff = dataclasses.field(default_factory=_Backoff)
    prev_succeeded_indexes: Intervals = dataclasses.field(default_factory=list)
    succeeded_indexes: Intervals = dataclasses.field(default_factory=list)


class JobController(Controller):
    name = "job-controller"
    workers = 4

    def __init__(self, client: LocalClient, jobs: Informer, pods: Informer, events: Recorder, *,
                 clock: clock_mod.Clock) -> None:
        super().__init__()
        self._client = client
        self._jobs = jobs
        self._pods = pods
        self._events = events
        self._clock = clock
        self._expectations = Expectations(clock)
        self._rm_finalizers: dict[str, set[str]] = {}  # job key -> pod uids whose finalizer removal is unseen
        self._backoff: dict[str, _Backoff] = {}
        self._written: dict[str, int] = {}  # job key -> the status revision last written
        jobs.add_handlers(Handlers(on_add=self._job_added, on_update=self._job_updated, on_delete=self._job_deleted))
        pods.add_handlers(Handlers(on_add=self._pod_added, on_update=self._pod_updated,
                                   on_delete=lambda pod: self._pod_deleted(pod, final=True)))

    async def run(self) -> None:
        await asyncio.gather(self._jobs.synced.wait(), self._pods.synced.wait())
        await super().run()

    # --- event handlers: they only enqueue and note observations --------------------------

    def _enqueue(self, key: str, delay: float = 0.0) -> None:
        self.queue.add_after(("job", key), delay)

    def _job_for(self, pod: JSON, ref: JSON | None = None) -> JSON | None:
        ref = ref if ref is not None else objects.controller_of(pod)
        if ref is None or ref.get("kind") != "Job":
            return None
        job = self._jobs.get(f"{objects.meta(pod).get('namespace')}/{ref.get('name')}")
        if job is None or objects.meta(job).get("uid") != ref.get("uid"):
            return None
        return job

    def _matching_jobs(self, pod: JSON) -> list[JSON]:
        ns = objects.meta(pod).get("namespace")
        return [j for j in self._jobs.list(ns) if objects.matches(objects.selector_of(j), pod)]

    def _finalizer_seen_removed(self, job: JSON, pod: JSON) -> None:
        uids = self._rm_finalizers.get(object_key(job))
        if uids is not None:
            uids.discard(str(objects.meta(pod).get("uid")))

    def _pod_added(self, pod: JSON) -> None:
        if objects.meta(pod).get("deletionTimestamp"):
            self._pod_deleted(pod, final=False)
            return
        if objects.controller_of(pod) is not None:
            job = self._job_for(pod)
            if job is not None:
                self._expectations.creation_observed(object_key(job))
                self._enqueue(object_key(job), BATCH_PERIOD)
            return
        if _has_finalizer(pod):
            self.queue.add(("orphan", object_key(pod)))
        for job in self._matching_jobs(pod):
            self._enqueue(object_key(job), BATCH_PERIOD)

    def _pod_updated(self, old: JSON, new: JSON) -> None:
        if objects.meta(old).get("resourceVersion") == objects.meta(new).get("resourceVersion"):
            return
        if objects.meta(new).get("deletionTimestamp"):
            self._pod_deleted(new, final=False)
            return
        removed = not _has_finalizer(new)
        new_ref, old_ref = objects.controller_of(new), objects.controller_of(old)
        if new_ref != old_ref and old_ref is not None:
            job = self._job_for(old, old_ref)
            if job is not None:
                if removed:
                    self._finalizer_seen_removed(job, new)
                self._enqueue(object_key(job), BATCH_PERIOD)
        if new_ref is not None:
            job = self._job_for(new, new_ref)
            if job is not None:
                if removed:
                    self._finalizer_seen_removed(job, new)
                self._enqueue(object_key(job), BATCH_PERIOD)
            return
        if _has_finalizer(new):
            self.queue.add(("orphan", object_key(new)))
        if new_ref != old_ref or objects.meta(new).get("labels") != objects.meta(old).get("labels"):
            for job in self._matching_jobs(new):
                self._enqueue(object_key(job), BATCH_PERIOD)

    def _pod_deleted(self, pod: JSON, *, final: bool) -> None:
        has_finalizer = _has_finalizer(pod)
        ref = objects.controller_of(pod)
        job = self._job_for(pod, ref) if ref is not None else None
        if job is None or finished_condition(job):
            if has_finalizer:  # nobody else will remove it
                self.queue.add(("orphan", object_key(pod)))
            return
        key = object_key(job)
        self._expectations.deletion_observed(key)
        if final or not has_finalizer:
            self._finalizer_seen_removed(job, pod)
        self._enqueue(key, BATCH_PERIOD)

    def _job_added(self, job: JSON) -> None:
        self._enqueue(object_key(job))

    def _job_updated(self, old: JSON, new: JSON) -> None:
        key = object_key(new)
        same_spec = objects.meta(old).get("generation") == objects.meta(new).get("generation")
        self._enqueue(key, BATCH_PERIOD if same_spec else 0.0)
        if finished_condition(new):
            self._cleanup_pod_finalizers(new)
        start = (new.get("status") or {}).get("startTime")
        deadline = (new.get("spec") or {}).get("activeDeadlineSeconds")
        if start and deadline is not None and deadline != (old.get("spec") or {}).get("activeDeadlineSeconds"):
            passed = (self._clock.now() - clock_mod.parse_rfc3339(start)).total_seconds()
            self._enqueue(key, deadline - passed)

    def _job_deleted(self, job: JSON) -> None:
        self._enqueue(object_key(job))
        self._cleanup_pod_finalizers(job)

    def _cleanup_pod_finalizers(self, job: JSON) -> None:
        """Pods of a finished or deleted Job still holding the finalizer lose it (a backup: the
        Job is only marked finished once every finalizer is gone)."""
        uid = objects.meta(job).get("uid")
        selector = objects.selector_of(job)
        for pod in self._pods.list(objects.meta(job).get("namespace")):
            if not _has_finalizer(pod):
                continue
            ref = objects.controller_of(pod)
            if (ref is not None and ref.get("uid") == uid) or (ref is None and objects.matches(selector, pod)):
                self.queue.add(("orphan", object_key(pod)))

    # --- reconcile -----------------------------------------------------------------------------

    async def reconcile(self, key: Hashable) -> None:
        assert isinstance(key, tuple)
        kind, name = key
        if kind == "orphan":
            await self._sync_orphan(name)
        else:
            await self._sync_job(name)

    async def _sync_orphan(self, key: str) -> None:
        """Remove the tracking finalizer from a pod whose Job is gone or finished."""
        pod = self._pods.get(key)
        if pod is None or not _has_finalizer(pod):
            return
        ref = objects.controller_of(pod)
        if ref is not None:
            if ref.get("kind") != "Job" or ref.get("apiVersion") != "batch/v1":
                return
            job = self._job_for(pod, ref)
            if job is not None and (_managed_elsewhere(job) or not finished_condition(job)):
                return  # adopted, or still running: its Job counts it
        await self._remove_finalizer(pod)

    async def _remove_finalizer(self, pod: JSON) -> None:
        def drop(obj: JSON) -> JSON:
            meta = obj.setdefault("metadata", {})
            meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != TRACKING_FINALIZER]
            if not meta["finalizers"]:
                del meta["finalizers"]
            return obj

        m = objects.meta(pod)
        try:
            await self._client.patch("v1", "Pod", name=m["name"], namespace=m.get("namespace"), mutate=drop)
        except errors.APIError as exc:
            if exc.code != 404:
                raise

    async def _sync_job(self, key: str) -> None:
        shared = self._jobs.get(key)
        if shared is None:
            self._expectations.forget(key)
            self._rm_finalizers.pop(key, None)
            self._backoff.pop(key, None)
            self._written.pop(key, None)
            return
        if _managed_elsewhere(shared):
            return
        if finished_condition(shared):
            self._backoff.pop(key, None)
            return
        written = self._written.get(key)
        if written is not None and _revision(shared) < written:
            raise Requeue(0.05)  # our own status write is not in the cache yet
        job = copy.deepcopy(shared)
        spec = job.setdefault("spec", {})
        status = job.setdefault("status", {})
        uncounted = status.get("uncountedTerminatedPods") or {}
        status["uncountedTerminatedPods"] = {k: list(uncounted.get(k) or []) for k in ("succeeded", "failed")
                                             if uncounted.get(k)}
        satisfied = self._expectations.satisfied(key)
        pods = await self._pods_for_job(job)
        active_pods = [p for p in pods if objects.pod_active(p)]
        ctx = _Sync(key=key, job=job, pods=pods, active_pods=active_pods,
                    ready=sum(1 for p in active_pods if objects.pod_ready(p)),
                    terminating=sum(1 for p in pods if _terminating(p)),
                    uncounted_succeeded=set(uncounted.get("succeeded") or []),
                    uncounted_failed=set(uncounted.get("failed") or []),
                    expected_rm=set(self._rm_finalizers.get(key, ())))
        active = len(active_pods)
        new_succeeded, new_failed = self._new_finished_pods(ctx)
        ctx.succeeded = int(status.get("succeeded") or 0) + len(new_succeeded) + len(ctx.uncounted_succeeded)
        ctx.failed = int(status.get("failed") or 0) + len(new_failed) + len(ctx.uncounted_failed)
        now = self._clock.now()
        if not status.get("startTime") and not _suspended(job):
            status["startTime"] = clock_mod.rfc3339(now)
        ctx.backoff = self._new_backoff(key, new_succeeded, new_failed)

        backoff_limit = int(spec.get("backoffLimit", 6))
        ctx.finished = _condition(status, SUCCESS_CRITERIA_MET)
        if ctx.finished is None:
            target = _condition(status, FAILURE_TARGET)
            if target is not None:
                ctx.finished = _new_condition(FAILED, target.get("reason", ""), target.get("message", ""), now)
        if ctx.finished is None:
            deadline = spec.get("activeDeadlineSeconds")
            if ctx.failed > backoff_limit or _past_backoff_limit_on_failure(job, pods):
                ctx.finished = _new_condition(FAILURE_TARGET, "BackoffLimitExceeded",
                                              "Job has reached the specified backoff limit", now)
            elif self._past_active_deadline(job):
                ctx.finished = _new_condition(FAILURE_TARGET, "DeadlineExceeded",
                                              "Job was active longer than specified deadline", now)
            elif deadline is not None and not _suspended(job) and status.get("startTime"):
                left = deadline - (now - clock_mod.parse_rfc3339(status["startTime"])).total_seconds()
                self._enqueue(key, left)
        if _indexed(job):
            completions = int(spec.get("completions") or 0)
            ctx.prev_succeeded_indexes = parse_indexes(status.get("completedIndexes") or "", completions)
            new_indexes = {completion_index(p) for p in pods
                           if _phase(p) == "Succeeded" and _has_finalizer(p) and 0 <= completion_index(p) < completions}
            ctx.succeeded_indexes = merge_indexes(ctx.prev_succeeded_indexes, new_indexes)
            ctx.succeeded = _total(ctx.succeeded_indexes)

        suspend_changed = False
        manage_error: Exception | None = None
        if ctx.finished is not None:
            deleted_ready, deleted, manage_error = await self._delete_active_pods(job, ctx.active_pods)
            if deleted != active or not satisfied:
                ctx.finished = None  # pods or finalizers may remain that the cache does not show yet
            active -= deleted
            ctx.terminating += deleted
            ctx.ready -= deleted_ready
        else:
            managed = False
            if satisfied and not objects.meta(job).get("deletionTimestamp"):
                active, manage_error = await self._manage(ctx)
                managed = True
            completions = spec.get("completions")
            if completions is None:
                complete = ctx.succeeded > 0 and active == 0
            else:
                complete = ctx.succeeded >= int(completions) and active == 0
            if complete:
                ctx.finished = _new_condition(SUCCESS_CRITERIA_MET, "CompletionsReached",
                                              "Reached expected number of succeeded pods", now)
            elif managed:
                conds = status.setdefault("conditions", [])
                if _suspended(job):
                    if _ensure_condition(conds, SUSPENDED, "True", "JobSuspended", "Job suspended", now):
                        suspend_changed = True
                        self._events.normal(job, "Suspended", "Job suspended")
                elif _ensure_condition(conds, SUSPENDED, "False", "JobResumed", "Job resumed", now):
                    suspend_changed = True
                    self._events.normal(job, "Resumed", "Job resumed")
                    # activeDeadlineSeconds counts the time the Job is continuously active
                    status["startTime"] = clock_mod.rfc3339(now)
                if not conds:
                    del status["conditions"]

        needs_flush = (suspend_changed or active != int(status.get("active") or 0)
                       or ctx.ready != status.get("ready") or ctx.terminating != status.get("terminating"))
        status["active"] = active
        status["ready"] = ctx.ready
        status["terminating"] = ctx.terminating
        await self._track_status(ctx, needs_flush)
        if manage_error is not None:
            raise manage_error

    def _new_finished_pods(self, ctx: _Sync) -> tuple[list[JSON], list[JSON]]:
        """Finished pods not yet counted: they hold the finalizer and are not in the uncounted lists."""
        completions = int((ctx.job.get("spec") or {}).get("completions") or 0)
        succeeded, failed = [], []
        for p in ctx.pods:
            uid = str(objects.meta(p).get("uid"))
            if not _has_finalizer(p) or uid in ctx.expected_rm:
                continue
            if _indexed(ctx.job) and not 0 <= completion_index(p) < completions:
                continue
            if _phase(p) == "Succeeded" and uid not in ctx.uncounted_succeeded:
                succeeded.append(p)
            elif _pod_failed(p, ctx.job) and uid not in ctx.uncounted_failed:
                failed.append(p)
        return succeeded, failed

    def _new_backoff(self, key: str, succeeded: list[JSON], failed: list[JSON]) -> _Backoff:
        old = self._backoff.get(key) or _Backoff()
        record = _Backoff(old.failures, old.last_failure)
        failed_times = sorted(_finish_time(p) for p in failed)
        if not succeeded:
            if failed_times:
                record.failures += len(failed_times)
                record.last_failure = failed_times[-1]
            return record
        record.failures, record.last_failure = 0, None
        last_success = max(_finish_time(p) for p in succeeded)
        for t in reversed(failed_times):
            if t <= last_success:
                break
            if record.last_failure is None:
                record.last_failure = t
            record.failures += 1
        return record

    def _past_active_deadline(self, job: JSON) -> bool:
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        start = (job.get("status") or {}).get("startTime")
        if deadline is None or not start or _suspended(job):
            return False
        return (self._clock.now() - clock_mod.parse_rfc3339(start)).total_seconds() >= float(deadline)

    # --- pods ------------------------------------------------------------------------------

    async def _pods_for_job(self, job: JSON) -> list[JSON]:
        """The Job's pods: those it controls, adopting orphans its selector matches (adding the
        finalizer) and releasing those it no longer matches (upstream's ClaimPods)."""
        meta = objects.meta(job)
        uid = meta.get("uid")
        selector = objects.selector_of(job)
        out: list[JSON] = []
        deleting = bool(meta.get("deletionTimestamp"))
        for pod in self._pods.list(meta.get("namespace")):
            ref = objects.controller_of(pod)
            if ref is not None:
                if ref.get("uid") != uid:
                    continue
                if objects.matches(selector, pod) or deleting:
                    out.append(pod)
                    continue
                await self._release(job, pod)
                continue
            if deleting or objects.meta(pod).get("deletionTimestamp") or not objects.matches(selector, pod):
                continue
            adopted = await self._adopt(job, pod)
            if adopted is not None:
                out.append(adopted)
        return out

    async def _adopt(self, job: JSON, pod: JSON) -> JSON | None:
        try:
            fresh = self._client.get("batch/v1", "Job", name=objects.meta(job)["name"],
                                     namespace=objects.meta(job).get("namespace"))
        except errors.APIError as exc:
            if exc.code == 404:
                return None
            raise
        fm = objects.meta(fresh)
        if fm.get("uid") != objects.meta(job).get("uid") or fm.get("deletionTimestamp"):
            return None
        ref = objects.owner_ref(job)

        def adopt(obj: JSON) -> JSON:
            m = obj.setdefault("metadata", {})
            if objects.controller_of(obj) is not None:
                raise errors.conflict("pods", m.get("name", ""))  # someone else adopted it first
            m["ownerReferences"] = [*(m.get("ownerReferences") or []), ref]
            if TRACKING_FINALIZER not in (m.get("finalizers") or []):
                m["finalizers"] = [*(m.get("finalizers") or []), TRACKING_FINALIZER]
            return obj

        m = objects.meta(pod)
        try:
            return await self._client.patch("v1", "Pod", name=m["name"], namespace=m.get("namespace"), mutate=adopt)
        except errors.APIError as exc:
            if exc.code in (404, 409, 422):  # gone, adopted by another, or being deleted
                return None
            raise

    async def _release(self, job: JSON, pod: JSON) -> None:
        uid = objects.meta(job).get("uid")

        def release(obj: JSON) -> JSON:
            m = obj.setdefault("metadata", {})
            m["ownerReferences"] = [r for r in m.get("ownerReferences") or [] if r.get("uid") != uid]
            if not m["ownerReferences"]:
                del m["ownerReferences"]
            return obj

        m = objects.meta(pod)
        try:
            await self._client.patch("v1", "Pod", name=m["name"], namespace=m.get("namespace"), mutate=release)
        except errors.APIError as exc:
            if exc.code != 404:
                raise

    async def _manage(self, ctx: _Sync) -> tuple[int, Exception | None]:
        """Create or delete pods towards the wanted number of active ones; the new active count."""
        job, key = ctx.job, ctx.key
        spec = job.get("spec") or {}
        active = len(ctx.active_pods)
        parallelism = int(spec.get("parallelism", 1))
        if _suspended(job):
            doomed = _pods_for_removal(job, ctx.active_pods, active)
            self._expectations.expect(key, deletes=len(doomed))
            removed_ready, removed, err = await self._delete_job_pods(job, doomed)
            ctx.terminating += removed
            ctx.ready -= removed_ready
            return active - removed, err
        completions = spec.get("completions")
        if completions is None:
            want = active if ctx.succeeded > 0 else parallelism
        else:
            want = max(0, min(int(completions) - ctx.succeeded, parallelism))
        doomed = _pods_for_removal(job, ctx.active_pods, max(0, active - want))[:MAX_POD_CHANGES_PER_SYNC]
        if doomed:
            self._expectations.expect(key, deletes=len(doomed))
            removed_ready, removed, err = await self._delete_job_pods(job, doomed)
            ctx.terminating += removed
            ctx.ready -= removed_ready
            return active - removed, err
        terminating = ctx.terminating if _only_replace_failed(job) else 0
        diff = want - terminating - active
        if diff <= 0:
            return active, None
        wait = ctx.backoff.remaining(self._clock.now())
        if wait > 0:
            self._enqueue(key, max(wait, BATCH_PERIOD))
            return active, None
        diff = min(diff, MAX_POD_CHANGES_PER_SYNC)
        indexes: list[int | None] = [None] * diff
        if _indexed(job):
            indexes = list(_first_pending_indexes(ctx, diff, int(completions or 0)))
            diff = len(indexes)
        if diff == 0:
            return active, None
        self._expectations.expect(key, adds=diff)
        template = copy.deepcopy(spec.get("template") or {})
        if _indexed(job):
            _add_index_env(template)
        # Slow start, as upstream: batches of 1, 2, 4, ... stop at the first batch with a failure.
        created_failed: Exception | None = None
        batch = 1
        while indexes:
            chunk, indexes = indexes[:batch], indexes[batch:]
            results = await asyncio.gather(*(self._create_pod(job, template, ix) for ix in chunk))
            failures = [r for r in results if r is not None]
            active += len(chunk)
            for failure in failures:
                self._expectations.creation_observed(key)
                active -= 1
                created_failed = created_failed or failure
            if failures and indexes:
                for _ in indexes:  # never attempted: not expected either
                    self._expectations.creation_observed(key)
                break
            batch *= 2
        return active, created_failed

    async def _create_pod(self, job: JSON, template: JSON, index: int | None) -> Exception | None:
        jm = objects.meta(job)
        tmeta = template.get("metadata") or {}
        labels = dict(tmeta.get("labels") or {})
        annotations = dict(tmeta.get("annotations") or {})
        spec = copy.deepcopy(template.get("spec") or {})
        if index is not None:
            annotations[COMPLETION_INDEX] = str(index)
            labels[COMPLETION_INDEX] = str(index)
            spec["hostname"] = f"{jm['name']}-{index}"
        meta: JSON = {"generateName": pod_generate_name(jm["name"], index), "namespace": jm.get("namespace")}
        if labels:
            meta["labels"] = labels
        if annotations:
            meta["annotations"] = annotations
        finalizers = list(tmeta.get("finalizers") or [])
        if TRACKING_FINALIZER not in finalizers:
            finalizers.append(TRACKING_FINALIZER)
        meta["finalizers"] = finalizers
        meta["ownerReferences"] = [objects.owner_ref(job)]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
        try:
            created = await self._client.create(pod)
        except errors.APIError as exc:
            if exc.code == 403 and "being terminated" in exc.message:
                return None  # the namespace is going: every later create fails too
            self._events.warning(job, "FailedCreate", f"Error creating: {exc.message}")
            return exc
        self._events.normal(job, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")
        return None

    async def _delete_pod(self, job: JSON, pod: JSON) -> Exception | None:
        m = objects.meta(pod)
        try:
            await self._client.delete("v1", "Pod", name=m["name"], namespace=m.get("namespace"))
        except errors.APIError as exc:
            if exc.code == 404:
                return exc
            self._events.warning(job, "FailedDelete", f"Error deleting: {exc.message}")
            return exc
        self._events.normal(job, "SuccessfulDelete", f"Deleted pod: {m['name']}")
        return None

    async def _delete_active_pods(self, job: JSON, pods: list[JSON]) -> tuple[int, int, Exception | None]:
        """Delete the pods of a finishing Job, keeping their finalizers: they are counted as they go."""
        results = await asyncio.gather(*(self._delete_pod(job, p) for p in pods))
        deleted = ready = 0
        first: Exception | None = None
        for pod, err in zip(pods, results, strict=True):
            if err is None or (isinstance(err, errors.APIError) and err.code == 404):
                deleted += 1
            else:
                first = first or err
            if objects.pod_ready(pod):
                ready += 1
        return ready, deleted, first

    async def _delete_job_pods(self, job: JSON, pods: list[JSON]) -> tuple[int, int, Exception | None]:
        """Delete surplus pods (scale down, suspend): the finalizer goes first, so they are not
        counted as failures."""
        key = object_key(job)

        async def one(pod: JSON) -> Exception | None:
            try:
                if _has_finalizer(pod):
                    await self._remove_finalizer(pod)
            except errors.APIError as exc:
                self._expectations.deletion_observed(key)
                return exc
            err = await self._delete_pod(job, pod)
            if err is not None:
                self._expectations.deletion_observed(key)
                if isinstance(err, errors.APIError) and err.code == 404:
                    return None
            return err

        results = await asyncio.gather(*(one(p) for p in pods))
        deleted = ready = 0
        first: Exception | None = None
        for pod, err in zip(pods, results, strict=True):
            if err is None:
                deleted += 1
            else:
                first = first or err
            if objects.pod_ready(pod):
                ready += 1
        return ready, deleted, first

    # --- status ------------------------------------------------------------------------------

    async def _track_status(self, ctx: _Sync, needs_flush: bool) -> None:
        """Count finished pods through `uncountedTerminatedPods` and the finalizers, then mark the
        Job finished when nothing is left to count (upstream's trackJobStatusAndRemoveFinalizers)."""
        job = ctx.job
        completions = int((job.get("spec") or {}).get("completions") or 0)
        status = job["status"]
        with_finalizer = {str(objects.meta(p).get("uid")) for p in ctx.pods
                          if _has_finalizer(p) and str(objects.meta(p).get("uid")) not in ctx.expected_rm}
        if _clean_uncounted(status, with_finalizer):
            needs_flush = True
        to_release: list[JSON] = []
        new_indexes: list[int] = []
        pods = sorted(ctx.pods, key=completion_index) if _indexed(job) else ctx.pods
        uncounted = status["uncountedTerminatedPods"]
        for pod in pods:
            uid = str(objects.meta(pod).get("uid"))
            if not _has_finalizer(pod) or uid in ctx.expected_rm:
                continue  # counted by an earlier sync
            failed = _pod_failed(pod, job)
            if not (objects.meta(job).get("deletionTimestamp") or ctx.finished is not None
                    or _phase(pod) == "Succeeded" or failed):
                continue
            to_release.append(pod)
            ix = completion_index(pod)
            if _phase(pod) == "Succeeded" and uid not in ctx.uncounted_failed:
                if _indexed(job):
                    if 0 <= ix < completions and not _has_index(ctx.prev_succeeded_indexes, ix):
                        new_indexes.append(ix)
                        needs_flush = True
                elif uid not in ctx.uncounted_succeeded:
                    uncounted.setdefault("succeeded", []).append(uid)
                    needs_flush = True
            elif failed or (ctx.finished is not None and ctx.finished["type"] != SUCCESS_CRITERIA_MET):
                # a Job that is failing counts every pod it stops as failed
                if uid not in ctx.uncounted_failed and (not _indexed(job) or 0 <= ix < completions):
                    uncounted.setdefault("failed", []).append(uid)
                    needs_flush = True
            if len(new_indexes) + len(uncounted.get("succeeded") or []) + len(uncounted.get("failed") or []) >= MAX_UNCOUNTED_PODS:
                break
        capped = len(new_indexes) + len(uncounted.get("succeeded") or []) + len(uncounted.get("failed") or []) >= MAX_UNCOUNTED_PODS
        if _indexed(job):
            ctx.succeeded_indexes = merge_indexes(ctx.succeeded_indexes, new_indexes)
            text = format_indexes(ctx.succeeded_indexes)
            if text != (status.get("completedIndexes") or ""):
                needs_flush = True
            status["succeeded"] = _total(ctx.succeeded_indexes)
            status["completedIndexes"] = text
        now = self._clock.now()
        finished = ctx.finished
        if finished is not None and finished["type"] == FAILURE_TARGET:
            status.setdefault("conditions", []).append(finished)
            needs_flush = True
            finished = _new_condition(FAILED, finished["reason"], finished["message"], now)
        elif finished is not None and finished["type"] == SUCCESS_CRITERIA_MET:
            if _condition(status, SUCCESS_CRITERIA_MET) is None:
                status.setdefault("conditions", []).append(finished)
                needs_flush = True
            finished = _new_condition(COMPLETE, finished["reason"], finished["message"], now)
        if needs_flush:
            job = ctx.job = await self._write_status(ctx.key, job)
            self._backoff[ctx.key] = ctx.backoff
            needs_flush = False
        status = job["status"]
        release_error: Exception | None = None
        if to_release:
            uids = [str(objects.meta(p).get("uid")) for p in to_release]
            self._rm_finalizers.setdefault(ctx.key, set()).update(uids)
            results = await asyncio.gather(*(self._try_remove_finalizer(p) for p in to_release))
            for uid, err in zip(uids, results, strict=True):
                if err is None:
                    with_finalizer.discard(uid)
                else:
                    self._rm_finalizers[ctx.key].discard(uid)
                    release_error = release_error or err
        if _clean_uncounted(status, with_finalizer):
            needs_flush = True
        if release_error is not None:
            if needs_flush:
                await self._write_status(ctx.key, job)
            raise release_error
        done = False
        if finished is not None and not capped and not status["uncountedTerminatedPods"] and ctx.terminating == 0:
            _ensure_condition(status.setdefault("conditions", []), finished["type"], "True",
                              finished.get("reason", ""), finished.get("message", ""), now)
            if finished["type"] == COMPLETE:
                status["completionTime"] = clock_mod.rfc3339(now)
            done = needs_flush = True
        if needs_flush:
            job = await self._write_status(ctx.key, job)
            if done:
                self._record_finished(job, finished)

    async def _try_remove_finalizer(self, pod: JSON) -> Exception | None:
        try:
            await self._remove_finalizer(pod)
        except errors.APIError as exc:
            return exc
        return None

    async def _write_status(self, key: str, job: JSON) -> JSON:
        out = copy.deepcopy(job)
        status = out["status"]
        for k in ("active", "succeeded", "failed"):
            if not status.get(k):
                status.pop(k, None)
        if not status.get("completedIndexes"):
            status.pop("completedIndexes", None)
        written = await self._client.update(out, subresource="status")
        self._written[key] = _revision(written)
        written.setdefault("status", {}).setdefault("uncountedTerminatedPods", {})
        return written

    def _record_finished(self, job: JSON, finished: JSON | None) -> None:
        if finished is None:
            return
        if finished["type"] == COMPLETE:
            completions = (job.get("spec") or {}).get("completions")
            if completions is not None and int((job.get("status") or {}).get("succeeded") or 0) > int(completions):
                self._events.warning(job, "TooManySucceededPods", "Too many succeeded pods running after completion count reached")
            self._events.normal(job, "Completed", "Job completed")
        else:
            self._events.warning(job, finished.get("reason", ""), finished.get("message", ""))


# --- helpers of the sync -----------------------------------------------------------------------


def _revision(obj: JSON) -> int:
    try:
        return int(objects.meta(obj).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _condition(status: JSON, kind: str) -> JSON | None:
    for c in status.get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return dict(c)
    return None


def _new_condition(kind: str, reason: str, message: str, now: datetime.datetime) -> JSON:
    t = clock_mod.rfc3339(now)
    cond: JSON = {"type": kind, "status": "True", "lastProbeTime": t, "lastTransitionTime": t}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def _ensure_condition(conds: list[JSON], kind: str, value: str, reason: str, message: str,
                      now: datetime.datetime) -> bool:
    """Set a Job condition (upstream's ensureJobConditionStatus): a changed one is replaced
    whole, a new False one is not added. Returns whether the list changed."""
    new = _new_condition(kind, reason, message, now)
    new["status"] = value
    for i, c in enumerate(conds):
        if c.get("type") == kind:
            if c.get("status") != value or c.get("reason", "") != reason or c.get("message", "") != message:
                conds[i] = new
                return True
            return False
    if value == "False":
        return False
    conds.append(new)
    return True


def _clean_uncounted(status: JSON, with_finalizer: set[str]) -> bool:
    """Move uids whose pods lost the finalizer from `uncountedTerminatedPods` into the counters."""
    uncounted = status.setdefault("uncountedTerminatedPods", {})
    changed = False
    for field, counter in (("succeeded", "succeeded"), ("failed", "failed")):
        uids = uncounted.get(field) or []
        keep = [u for u in uids if u in with_finalizer]
        if len(keep) != len(uids):
            changed = True
            status[counter] = int(status.get(counter) or 0) + len(uids) - len(keep)
        if keep:
            uncounted[field] = keep
        else:
            uncounted.pop(field, None)
    return changed


def _past_backoff_limit_on_failure(job: JSON, pods: list[JSON]) -> bool:
    """restartPolicy OnFailure: container restarts of running and pending pods count as failures."""
    spec = job.get("spec") or {}
    if ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy") != "OnFailure":
        return False
    restarts = 0
    for pod in pods:
        if _phase(pod) in ("Running", "Pending"):
            status = pod.get("status") or {}
            for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
                restarts += int(cs.get("restartCount") or 0)
    limit = int(spec.get("backoffLimit", 6))
    return restarts > 0 if limit == 0 else restarts >= limit


def _pods_for_removal(job: JSON, pods: list[JSON], at_least: int) -> list[JSON]:
    """Active pods to delete: for an Indexed Job first those with a duplicate, invalid or missing
    index, then the least advanced ones."""
    remove: list[JSON] = []
    left = list(pods)
    if _indexed(job):
        completions = int((job.get("spec") or {}).get("completions") or 0)
        by_index: dict[int, list[JSON]] = {}
        left = []
        for pod in pods:
            ix = completion_index(pod)
            if not 0 <= ix < completions:
                remove.append(pod)
            else:
                by_index.setdefault(ix, []).append(pod)
        for same in by_index.values():
            same.sort(key=_removal_order)
            remove.extend(same[:-1])
            left.append(same[-1])
    if len(remove) < at_least:
        left.sort(key=_removal_order)
        remove.extend(left[: at_least - len(remove)])
    return remove


def _first_pending_indexes(ctx: _Sync, count: int, completions: int) -> list[int]:
    """The lowest `count` indexes that neither succeeded nor have an active pod."""
    busy = {completion_index(p) for p in ctx.active_pods}
    if _only_replace_failed(ctx.job):
        busy |= {completion_index(p) for p in ctx.pods if _terminating(p)}
    out: list[int] = []
    for ix in range(completions):
        if len(out) >= count:
            break
        if ix not in busy and not _has_index(ctx.succeeded_indexes, ix):
            out.append(ix)
    return out


def _add_index_env(template: JSON) -> None:
    """JOB_COMPLETION_INDEX in every container, from the pod's index label (PodIndexLabel)."""
    spec = template.setdefault("spec", {})
    for field in ("initContainers", "containers"):
        for c in spec.get(field) or []:
            env = c.setdefault("env", [])
            if any(e.get("name") == COMPLETION_INDEX_ENV for e in env):
                continue
            env.append({"name": COMPLETION_INDEX_ENV, "valueFrom": {"fieldRef": {
                "apiVersion": "v1", "fieldPath": f"metadata.labels['{COMPLETION_INDEX}']"}}})
