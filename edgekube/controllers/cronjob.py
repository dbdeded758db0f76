"""The CronJob controller (batch/v1), as upstream's cronjob-controller (v2).

Each sync of a CronJob reads its Jobs from the shared Job informer, forgets finished ones in
`status.active` (SawCompletedJob, `lastSuccessfulTime`), deletes the oldest finished Jobs beyond
`successfulJobsHistoryLimit`/`failedJobsHistoryLimit`, then works out the most recent schedule
time that has passed and was not run (never before `lastScheduleTime`, or the creation time, nor
older than `startingDeadlineSeconds`). Such a time starts a Job named `<cronjob>-<scheduled unix
minutes>` (the name is the lock against starting one twice), unless `concurrencyPolicy: Forbid`
and a Job is still active (JobAlreadyActive); `Replace` deletes the active Jobs first. A CronJob
that missed more than 100 times gets a TooManyMissedTimes warning and runs the latest only.

Schedules are standard five-field cron expressions (day-of-month and day-of-week OR-ed unless one
is `*`, as robfig/cron and Vixie cron), the `@hourly`-style macros and `@every <duration>`, read
by `cronsim` in `spec.timeZone` (UTC when unset; an unknown zone is an UnknownTimeZone warning and
no Jobs). Time comes from the injected clock, and every sync ends with a requeue for the next
schedule time (100 ms late, as upstream), so tests can drive the controller with a fake clock.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import logging
import re
import zoneinfo
from collections.abc import Hashable
from typing import Any

import cronsim

from edgekube._cogs import clock as clock_mod
from edgekube.api import errors
from edgekube.api.registry import rest
from edgekube.client import objects
from edgekube.client.events import Recorder
from edgekube.client.informer import Handlers, Informer, object_key
from edgekube.client.local import LocalClient
from edgekube.controllers import job as job_mod
from edgekube.controllers.base import Controller, Requeue

log = logging.getLogger(__name__)
JSON = dict[str, Any]

SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"
NEXT_SCHEDULE_DELTA = 0.1  # requeue a little after the schedule time (clock skew)
# The wait for a schedule time is a wall-clock difference slept on the monotonic clock: a clock
# set forward (NTP reaching a board without an RTC) would make the Job that late, and one set far
# back (a board booting at 1970) would sleep for decades. Never longer than this, then look again.
MAX_SCHEDULE_WAIT = 600.0
TOO_MANY_MISSED = 100
# startingDeadlineSeconds is an int64; past a century it means "no deadline" (and a timedelta
# of 2^62 seconds does not exist: the reconcile would fail forever).
_MAX_DEADLINE = datetime.timedelta(days=36500)

_MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


class ScheduleError(ValueError):
    pass


class Schedule:
    """A parsed schedule: `next(t)` is the first activation strictly after `t` (robfig's Next)."""

    def __init__(self, text: str, tz: datetime.tzinfo) -> None:
        self.tz = tz
        self._every: float | None = None
        self._expr = ""
        text = text.strip()
        if text.startswith("@every "):
            self._every = _parse_duration(text.removeprefix("@every ").strip())
            if self._every < 1:
                self._every = 1.0  # robfig rounds up to one second
            return
        expr = _MACROS.get(text.lower(), text)
        if len(expr.split()) != 5:
            raise ScheduleError(f"expected exactly 5 fields, found {len(expr.split())}: {text}")
        try:
            cronsim.CronSim(expr, datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC))
        except cronsim.CronSimError as exc:
            raise ScheduleError(str(exc)) from None
        self._expr = expr

    def next(self, t: datetime.datetime) -> datetime.datetime:
        if self._every is not None:
            return t.replace(microsecond=0) + datetime.timedelta(seconds=self._every)
        it = cronsim.CronSim(self._expr, t.astimezone(self.tz))
        try:
            found = next(it)
        except (StopIteration, cronsim.CronSimError):
            # no activation ever (e.g. Feb 30): far away, so a sync finds nothing to run
            return t + datetime.timedelta(days=366 * 100)
        return found.astimezone(datetime.UTC)


def _parse_duration(text: str) -> float:
    """A Go duration ("1h30m", "90s")."""
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ScheduleError(f"failed to parse duration {text!r}")
    return total


def parse_schedule(cj: JSON) -> tuple[Schedule | None, str]:
    """The CronJob's schedule in its time zone, or None and why not."""
    spec = cj.get("spec") or {}
    text = str(spec.get("schedule") or "")
    tz: datetime.tzinfo = datetime.UTC
    if text.startswith(("TZ=", "CRON_TZ=")):
        head, _, text = text.partition(" ")
        zone = head.partition("=")[2]
    else:
        zone = spec.get("timeZone") or ""
    if zone:
        try:
            tz = zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            return None, f"unknown time zone {zone}: {exc}"
    try:
        return Schedule(text, tz), ""
    except ScheduleError as exc:
        return None, str(exc)


def _time(text: str | None) -> datetime.datetime | None:
    return clock_mod.parse_rfc3339(text) if text else None


def _deadline(seconds: Any) -> datetime.timedelta:
    return min(datetime.timedelta(seconds=max(0, min(int(seconds), 2**40))), _MAX_DEADLINE)


def most_recent_schedule_time(
    cj: JSON, now: datetime.datetime, sched: Schedule, *, include_deadline: bool
) -> tuple[datetime.datetime, datetime.datetime | None, int]:
    """(the earliest time considered, the most recent activation in (earliest, now] or None, how
    many activations were missed, roughly), as upstream's mostRecentScheduleTime. Raises
    ScheduleError for a schedule whose activations are less than a second apart."""
    meta = objects.meta(cj)
    status = cj.get("status") or {}
    earliest = _time(status.get("lastScheduleTime")) or _time(meta.get("creationTimestamp")) or now
    deadline = (cj.get("spec") or {}).get("startingDeadlineSeconds")
    if include_deadline and deadline is not None:
        floor = now - _deadline(deadline)
        if floor > earliest:
            earliest = floor
    t1 = sched.next(earliest)
    t2 = sched.next(t1)
    if now < t1:
        return earliest, None, 0
    if now < t2:
        return earliest, t1, 0
    between = round((t2 - t1).total_seconds())
    if between < 1:
        raise ScheduleError("time difference between two schedules is less than 1 second")
    missed = int((now - t1).total_seconds()) // between + 1
    # jump close to now, then let the schedule find the exact most recent time (irregular
    # schedules such as "30 6-16/4 * * 1-5" are not evenly spaced)
    t = sched.next(t1 + datetime.timedelta(seconds=(missed - 2) * between))
    recent: datetime.datetime | None = None
    while t <= now:
        recent = t
        t = sched.next(t)
    return earliest, recent, missed


def next_schedule_delay(cj: JSON, now: datetime.datetime, sched: Schedule) -> float:
    """Seconds until the sync after the next schedule time (upstream's nextScheduleTimeDuration),
    at most MAX_SCHEDULE_WAIT."""
    try:
        earliest, recent, missed = most_recent_schedule_time(cj, now, sched, include_deadline=False)
    except ScheduleError:
        recent, missed, earliest = now, 0, now
    if recent is None:
        recent = earliest if missed == 0 else now
    return min((sched.next(recent) - now).total_seconds() + NEXT_SCHEDULE_DELTA, MAX_SCHEDULE_WAIT)


def job_name(cj: JSON, scheduled: datetime.datetime) -> str:
    return f"{objects.meta(cj)['name']}-{int(scheduled.timestamp()) // 60}"


def _rfc3339_in(t: datetime.datetime, tz: datetime.tzinfo) -> str:
    """Go's time.RFC3339 of `t` in `tz`: "Z" in UTC, else the offset."""
    local = t.astimezone(tz)
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    offset = local.utcoffset() or datetime.timedelta(0)
    if offset == datetime.timedelta(0):
        return text + "Z"
    sign = "-" if offset < datetime.timedelta(0) else "+"
    minutes = int(abs(offset).total_seconds()) // 60
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def job_from_template(cj: JSON, scheduled: datetime.datetime, tz: datetime.tzinfo) -> JSON:
    meta = objects.meta(cj)
    template = (cj.get("spec") or {}).get("jobTemplate") or {}
    tmeta = template.get("metadata") or {}
    annotations = dict(tmeta.get("annotations") or {})
    annotations[SCHEDULED_TIMESTAMP] = _rfc3339_in(scheduled, tz)
    jmeta: JSON = {"name": job_name(cj, scheduled), "namespace": meta.get("namespace"),
                   "annotations": annotations, "ownerReferences": [objects.owner_ref(cj)]}
    if tmeta.get("labels"):
        jmeta["labels"] = dict(tmeta["labels"])
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": jmeta, "spec": copy.deepcopy(template.get("spec") or {})}


def _ref(job: JSON) -> JSON:
    m = objects.meta(job)
    return {"kind": "Job", "namespace": m.get("namespace"), "name": m.get("name"), "uid": m.get("uid"),
            "apiVersion": "batch/v1", "resourceVersion": m.get("resourceVersion")}


def _active(cj: JSON) -> list[JSON]:
    return list((cj.get("status") or {}).get("active") or [])


def _in_active(cj: JSON, uid: str) -> bool:
    return any(r.get("uid") == uid for r in _active(cj))


def _drop_active(cj: JSON, uid: str) -> None:
    status = cj.setdefault("status", {})
    status["active"] = [r for r in _active(cj) if r.get("uid") != uid]


def _start_order(job: JSON) -> tuple[bool, str, str]:
    start = (job.get("status") or {}).get("startTime")
    return (start is None, start or "", str(objects.meta(job).get("name")))


class CronJobController(Controller):
    name = "cronjob-controller"

    def __init__(self, client: LocalClient, cronjobs: Informer, jobs: Informer, events: Recorder, *,
                 clock: clock_mod.Clock) -> None:
        super().__init__()
        self._client = client
        self._cronjobs = cronjobs
        self._jobs = jobs
        self._events = events
        self._clock = clock
        cronjobs.add_handlers(Handlers(on_add=lambda cj: self.queue.add(object_key(cj)),
                                       on_update=self._cronjob_updated,
                                       on_delete=lambda cj: self.queue.add(object_key(cj))))
        jobs.add_handlers(Handlers(on_add=self._job_changed, on_update=self._job_updated, on_delete=self._job_changed))

    async def run(self) -> None:
        await asyncio.gather(self._cronjobs.synced.wait(), self._jobs.synced.wait())
        await super().run()

    # --- event handlers ----------------------------------------------------------------------

    def _owner_key(self, job: JSON, ref: JSON | None) -> str | None:
        if ref is None or ref.get("kind") != "CronJob":
            return None
        key = f"{objects.meta(job).get('namespace')}/{ref.get('name')}"
        cj = self._cronjobs.get(key)
        if cj is None or objects.meta(cj).get("uid") != ref.get("uid"):
            return None
        return key

    def _job_changed(self, job: JSON) -> None:
        key = self._owner_key(job, objects.controller_of(job))
        if key is not None:
            self.queue.add(key)

    def _job_updated(self, old: JSON, new: JSON) -> None:
        if objects.meta(old).get("resourceVersion") == objects.meta(new).get("resourceVersion"):
            return
        old_ref, new_ref = objects.controller_of(old), objects.controller_of(new)
        if old_ref != new_ref:
            key = self._owner_key(old, old_ref)
            if key is not None:
                self.queue.add(key)
        self._job_changed(new)

    def _cronjob_updated(self, old: JSON, new: JSON) -> None:
        key = object_key(new)
        ospec, nspec = old.get("spec") or {}, new.get("spec") or {}
        if ospec.get("schedule") != nspec.get("schedule") or ospec.get("timeZone") != nspec.get("timeZone"):
            sched, _ = parse_schedule(new)
            if sched is None:
                self._events.warning(new, "UnParseableCronJobSchedule",
                                     f"unparseable schedule for cronjob: {nspec.get('schedule')}")
                return
            self.queue.add_after(key, next_schedule_delay(new, self._clock.now(), sched))
            return
        self.queue.add(key)

    # --- reconcile -----------------------------------------------------------------------------

    async def reconcile(self, key: Hashable) -> None:
        cached = self._cronjobs.get(str(key))
        if cached is None:
            return
        uid = objects.meta(cached).get("uid")
        name = objects.meta(cached).get("name")
        jobs = []
        for job in self._jobs.list(objects.meta(cached).get("namespace")):
            ref = objects.controller_of(job)
            if ref is not None and ref.get("kind") == "CronJob" and ref.get("name") == name and ref.get("uid") == uid:
                jobs.append(job)
        cj = copy.deepcopy(cached)
        cj.setdefault("status", {})
        cleaned = await self._cleanup_finished(cj, jobs)
        requeue, changed, failure = await self._sync(cj, jobs)
        if cleaned or changed:
            out = copy.deepcopy(cj)
            if not out["status"].get("active"):
                out["status"].pop("active", None)
            await self._client.update(out, subresource="status")
        if requeue is not None:
            raise Requeue(requeue)
        if failure is not None:
            raise failure

    async def _sync(self, cj: JSON, jobs: list[JSON]) -> tuple[float | None, bool, Exception | None]:
        """Start the Job of the most recent unmet schedule time: (requeue after, status changed,
        error), as upstream's syncCronJob."""
        now = self._clock.now()
        meta = objects.meta(cj)
        ns = meta.get("namespace")
        status = cj["status"]
        changed = False
        children = set()
        for job in jobs:
            jm = objects.meta(job)
            juid = str(jm.get("uid"))
            children.add(juid)
            found = _in_active(cj, juid)
            done = job_mod.finished_condition(job)
            if not found and done is None:
                try:
                    fresh = self._client.get("batch/v1", "CronJob", name=meta["name"], namespace=ns)
                except errors.APIError as exc:
                    return None, changed, exc
                if _in_active(fresh, juid):
                    continue
                # a Job we did not start (kubectl create job --from), or forgot after a crash
                self._events.warning(cj, "UnexpectedJob",
                                     f"Saw a job that the controller did not create or forgot: {jm.get('name')}")
            elif done is not None:
                if found:
                    _drop_active(cj, juid)
                    self._events.normal(cj, "SawCompletedJob", f"Saw completed job: {jm.get('name')}, condition: {done}")
                    changed = True
                completed = (job.get("status") or {}).get("completionTime")
                if done == job_mod.COMPLETE and completed:
                    last = status.get("lastSuccessfulTime")
                    if not last or clock_mod.parse_rfc3339(completed) > clock_mod.parse_rfc3339(last):
                        status["lastSuccessfulTime"] = completed
                        changed = True
        for ref in _active(cj):
            if ref.get("uid") in children:
                continue
            # not in the cache: ask the API before believing it gone
            try:
                self._client.get("batch/v1", "Job", name=ref.get("name", ""), namespace=ref.get("namespace") or ns)
            except errors.APIError as exc:
                if exc.code != 404:
                    return None, changed, exc
                self._events.normal(cj, "MissingJob", f"Active job went missing: {ref.get('name')}")
                _drop_active(cj, str(ref.get("uid")))
                changed = True
        if meta.get("deletionTimestamp"):
            return None, changed, None
        spec = cj.get("spec") or {}
        zone = spec.get("timeZone")
        if zone:
            try:
                zoneinfo.ZoneInfo(zone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
                self._events.warning(cj, "UnknownTimeZone", f'invalid timeZone: "{zone}": {exc}')
                return None, changed, None
        if spec.get("suspend"):
            return None, changed, None
        if "TZ" in str(spec.get("schedule") or ""):
            self._events.warning(cj, "UnsupportedSchedule",
                                 f'CRON_TZ or TZ used in schedule "{spec.get("schedule")}" is not officially supported, '
                                 "see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details")
        sched, why = parse_schedule(cj)
        if sched is None:
            self._events.warning(cj, "UnparseableSchedule", f'unparseable schedule: "{spec.get("schedule")}" : {why}')
            return None, changed, None
        try:
            _, scheduled, missed = most_recent_schedule_time(cj, now, sched, include_deadline=True)
        except ScheduleError as exc:
            self._events.warning(cj, "InvalidSchedule", f"invalid schedule: {spec.get('schedule')} : {exc}")
            return None, changed, None
        if scheduled is None or scheduled > now:
            return next_schedule_delay(cj, now, sched), changed, None
        if missed > TOO_MANY_MISSED:
            self._events.warning(cj, "TooManyMissedTimes", "too many missed start times. Set or decrease "
                                 ".spec.startingDeadlineSeconds or check clock skew")
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None and scheduled + _deadline(deadline) < now:
            self._events.warning(cj, "MissSchedule", "Missed scheduled time to start a job: "
                                 + scheduled.astimezone(datetime.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000"))
            return next_schedule_delay(cj, now, sched), changed, None
        name = job_name(cj, scheduled)
        if any(r.get("name") == name and (r.get("namespace") or ns) == ns for r in _active(cj)) or \
                status.get("lastScheduleTime") == clock_mod.rfc3339(scheduled):
            return next_schedule_delay(cj, now, sched), changed, None
        policy = spec.get("concurrencyPolicy", "Allow")
        if policy == "Forbid" and _active(cj):
            self._events.normal(cj, "JobAlreadyActive",
                                "Not starting job because prior execution is running and concurrency policy is Forbid")
            return next_schedule_delay(cj, now, sched), changed, None
        if policy == "Replace":
            for ref in _active(cj):
                try:
                    job = self._client.get("batch/v1", "Job", name=ref.get("name", ""), namespace=ref.get("namespace") or ns)
                except errors.APIError as exc:
                    self._events.warning(cj, "FailedGet", f"Get job: {exc.message}")
                    return None, changed, exc
                if not await self._delete_job(cj, job):
                    return None, changed, RuntimeError(f"could not replace job {ns}/{ref.get('name')}")
                changed = True
        request = job_from_template(cj, scheduled, sched.tz)
        try:
            created = await self._client.create(request)
        except errors.APIError as exc:
            if exc.code == 403 and "being terminated" in exc.message:
                return None, changed, exc
            if exc.code != 409:
                self._events.warning(cj, "FailedCreate", f"Error creating job: {exc.message}")
                return None, changed, exc
            # made before, by us (and the status write was lost) or by someone else
            try:
                created = self._client.get("batch/v1", "Job", name=name, namespace=ns)
            except errors.APIError as again:
                return None, changed, again
            owner = objects.controller_of(created)
            if owner is None or owner.get("uid") != meta.get("uid") or _in_active(cj, str(objects.meta(created).get("uid"))):
                return None, changed, None
            log.info("cronjob %s/%s: job %s already exists", ns, meta.get("name"), name)
        else:
            self._events.normal(cj, "SuccessfulCreate", f"Created job {name}")
        status["active"] = [*_active(cj), _ref(created)]
        status["lastScheduleTime"] = clock_mod.rfc3339(scheduled)
        return next_schedule_delay(cj, now, sched), True, None

    async def _cleanup_finished(self, cj: JSON, jobs: list[JSON]) -> bool:
        """Delete the oldest finished Jobs beyond the history limits."""
        spec = cj.get("spec") or {}
        changed = False
        for kind, limit_field in ((job_mod.COMPLETE, "successfulJobsHistoryLimit"), (job_mod.FAILED, "failedJobsHistoryLimit")):
            limit = spec.get(limit_field)
            if limit is None:
                continue
            done = sorted((j for j in jobs if job_mod.finished_condition(j) == kind), key=_start_order)
            for job in done[: max(0, len(done) - int(limit))]:
                if await self._delete_job(cj, job):
                    changed = True
        return changed

    async def _delete_job(self, cj: JSON, job: JSON) -> bool:
        jm = objects.meta(job)
        try:
            await self._client.delete("batch/v1", "Job", name=jm["name"], namespace=jm.get("namespace"),
                                      options=rest.DeleteOptions(propagation_policy="Background"))
        except errors.APIError as exc:
            self._events.warning(cj, "FailedDelete", f"Deleted job: {exc.message}")
            return False
        _drop_active(cj, str(jm.get("uid")))
        self._events.normal(cj, "SuccessfulDelete", f"Deleted job {jm['name']}")
        return True
