"""The CronJob controller in-process, over a real Registry and Store, driven by a fake clock.

Each step moves the clock, runs one sync of a CronJob (as the work queue would at its requeue
time), waits for the informers to show what the sync wrote, and checks the Jobs, the status and
the events through the API. The Jobs' own progress is written to their status by hand, as the
Job controller would (no pods run here).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edgekube._cogs import clock as clock_mod
from edgekube.api.registry import resources, rest
from edgekube.client import events as events_mod
from edgekube.client import informer, local
from edgekube.controllers import cronjob
from edgekube.controllers.base import Requeue
from edgekube.store import store as store_mod

JSON = dict[str, Any]
UTC = datetime.UTC
START = datetime.datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)


@dataclasses.dataclass
class Env:
    clock: clock_mod.FakeClock
    store: store_mod.Store
    client: local.LocalClient
    cronjobs: informer.Informer
    jobs: informer.Informer
    ctl: cronjob.CronJobController

    async def sync(self, name: str) -> float | None:
        """One reconcile of CronJob `name`: its requeue delay (None: not requeued)."""
        after: float | None = None
        try:
            await self.ctl.reconcile(f"default/{name}")
        except Requeue as again:
            after = again.after
        await self.settle()
        return after

    async def settle(self) -> None:
        """Wait until both informers show exactly what the store holds."""
        def caught_up() -> bool:
            for kind, inf in (("CronJob", self.cronjobs), ("Job", self.jobs)):
                stored = {o["metadata"]["name"]: o["metadata"]["resourceVersion"]
                          for o in self.client.list("batch/v1", kind, namespace="default").items}
                cached = {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in inf.list("default")}
                if stored != cached:
                    return False
            return True

        await _until(caught_up)

    def job_names(self) -> list[str]:
        return sorted(j["metadata"]["name"] for j in self.client.list("batch/v1", "Job", namespace="default").items)

    def get(self, name: str) -> JSON:
        return self.client.get("batch/v1", "CronJob", name=name, namespace="default")

    async def create(self, name: str, schedule: str, **spec: Any) -> JSON:
        obj = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name, "namespace": "default"},
               "spec": {"schedule": schedule, **spec, "jobTemplate": {
                   "metadata": {"labels": {"app": name}},
                   "spec": {"template": {"spec": {"restartPolicy": "Never",
                                                  "containers": [{"name": "c", "image": "busybox:1.36"}]}}}}}}
        out = await self.client.create(obj)
        await self.settle()
        return out

    async def finish(self, job_name: str, *, succeeded: bool = True) -> None:
        """Write a finished status on the Job, as the Job controller does."""
        job = self.client.get("batch/v1", "Job", name=job_name, namespace="default")
        now = clock_mod.rfc3339(self.clock.now())
        interim, final = ("SuccessCriteriaMet", "Complete") if succeeded else ("FailureTarget", "Failed")
        conds = [{"type": t, "status": "True", "lastProbeTime": now, "lastTransitionTime": now} for t in (interim, final)]
        job["status"] = {"startTime": now, "conditions": conds, "ready": 0, "terminating": 0,
                         "uncountedTerminatedPods": {}}
        if succeeded:
            job["status"].update(succeeded=1, completionTime=now)
        else:
            job["status"]["failed"] = 1
        await self.client.update(job, subresource="status")
        await self.settle()

    async def event(self, involved: str, reason: str) -> JSON:
        found: list[JSON] = []

        def seen() -> bool:
            found[:] = [e for e in self.client.list("v1", "Event", namespace="default").items
                        if e["involvedObject"].get("name") == involved and e["reason"] == reason]
            return bool(found)

        await _until(seen)
        return found[0]

    def reasons(self, involved: str) -> set[str]:
        return {e["reason"] for e in self.client.list("v1", "Event", namespace="default").items
                if e["involvedObject"].get("name") == involved}


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(2000):  # 20 s
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met within 20s")


def _minutes(t: datetime.datetime) -> int:
    return int(t.timestamp()) // 60


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    clock = clock_mod.FakeClock(START)
    catalog = resources.Catalog()
    store = store_mod.Store(
        store_mod.StoreConfig(path=tmp_path, map_size_mb=32, max_size_mb=64, compaction_interval_seconds=0),
        memory_prefixes=[i.key_prefix() for i in catalog.all() if i.memory_tier],
    )
    await store.start()
    registry = rest.Registry(store, catalog=catalog, clock=clock, network=rest.ServiceNetwork())
    await registry.ensure_system_namespaces()
    client = local.LocalClient(registry, manager="test")
    factory = informer.InformerFactory(client)
    recorder = events_mod.EventRecorder(client, clock=clock)
    cronjobs, jobs = factory.get("batch/v1", "CronJob"), factory.get("batch/v1", "Job")
    ctl = cronjob.CronJobController(client, cronjobs, jobs, recorder.for_component("cronjob-controller"), clock=clock)
    tasks = [asyncio.create_task(inf.run(), name=name) for name, inf in factory.unstarted()]
    tasks.append(asyncio.create_task(recorder.run(), name="events"))
    await asyncio.wait_for(factory.wait_synced(), 20)
    try:
        yield Env(clock=clock, store=store, client=client, cronjobs=cronjobs, jobs=jobs, ctl=ctl)
    finally:
        for task in tasks:
            # Cancel until it ends: on Python 3.11 asyncio.wait_for (the event recorder's loop)
            # can swallow a cancel that lands just as its inner get completes.
            while not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=0.1)
        await store.close()


async def test_fires_at_its_schedule_and_requeues_for_the_next(env: Env) -> None:
    cj = await env.create("every5", "*/5 * * * *")
    # 00:00:30: nothing is due; the next sync is 100 ms after 00:05:00
    after = await env.sync("every5")
    assert after == pytest.approx(270.1)
    assert env.job_names() == []

    env.clock.advance(270)  # 00:05:00
    after = await env.sync("every5")
    assert after == pytest.approx(300.1)
    first_time = datetime.datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    first = f"every5-{_minutes(first_time)}"
    assert env.job_names() == [first]
    job = env.client.get("batch/v1", "Job", name=first, namespace="default")
    assert job["metadata"]["annotations"][cronjob.SCHEDULED_TIMESTAMP] == "2026-01-01T00:05:00Z"
    assert job["metadata"]["labels"] == {"app": "every5"}
    ref = job["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"], ref["blockOwnerDeletion"]) == \
        ("CronJob", "every5", cj["metadata"]["uid"], True, True)
    status = env.get("every5")["status"]
    assert [a["name"] for a in status["active"]] == [first]
    assert status["active"][0]["uid"] == job["metadata"]["uid"]
    assert status["lastScheduleTime"] == "2026-01-01T00:05:00Z"
    ev = await env.event("every5", "SuccessfulCreate")
    assert ev["message"] == f"Created job {first}" and ev["source"]["component"] == "cronjob-controller"

    # the same schedule time is never run twice
    env.clock.advance(20)
    await env.sync("every5")
    assert env.job_names() == [first]

    # the Job completes; at 00:10 the next one starts and the finished one leaves status.active
    env.clock.advance(40)
    await env.finish(first)
    finished_at = clock_mod.rfc3339(env.clock.now())
    env.clock.advance(240)  # 00:10:00
    await env.sync("every5")
    second = f"every5-{_minutes(first_time) + 5}"
    assert env.job_names() == sorted([first, second])
    status = env.get("every5")["status"]
    assert [a["name"] for a in status["active"]] == [second]
    assert status["lastSuccessfulTime"] == finished_at
    assert status["lastScheduleTime"] == "2026-01-01T00:10:00Z"
    ev = await env.event("every5", "SawCompletedJob")
    assert ev["message"] == f"Saw completed job: {first}, condition: Complete"


async def test_forbid_waits_for_the_active_job_and_replace_replaces_it(env: Env) -> None:
    await env.create("forbid", "*/5 * * * *", concurrencyPolicy="Forbid")
    await env.create("replace", "*/5 * * * *", concurrencyPolicy="Replace")
    env.clock.advance(270)  # 00:05
    await env.sync("forbid")
    await env.sync("replace")
    t5 = _minutes(datetime.datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
    assert env.job_names() == [f"forbid-{t5}", f"replace-{t5}"]

    env.clock.advance(300)  # 00:10, both first Jobs still running
    after = await env.sync("forbid")
    assert after == pytest.approx(300.1)
    await env.sync("replace")
    assert env.job_names() == [f"forbid-{t5}", f"replace-{t5 + 5}"]
    ev = await env.event("forbid", "JobAlreadyActive")
    assert ev["message"] == "Not starting job because prior execution is running and concurrency policy is Forbid"
    assert ev["type"] == "Normal"
    assert (await env.event("replace", "SuccessfulDelete"))["message"] == f"Deleted job replace-{t5}"
    assert [a["name"] for a in env.get("replace")["status"]["active"]] == [f"replace-{t5 + 5}"]
    assert [a["name"] for a in env.get("forbid")["status"]["active"]] == [f"forbid-{t5}"]
    assert env.get("forbid")["status"]["lastScheduleTime"] == "2026-01-01T00:05:00Z"

    # once the Forbid Job finishes, the next schedule time starts a new one
    await env.finish(f"forbid-{t5}")
    env.clock.advance(300)  # 00:15
    await env.sync("forbid")
    assert f"forbid-{t5 + 10}" in env.job_names()
    assert f"forbid-{t5 + 5}" not in env.job_names()  # the time it skipped is not made up for


async def test_history_limits_keep_the_newest_finished_jobs(env: Env) -> None:
    await env.create("hist", "* * * * *", successfulJobsHistoryLimit=2, failedJobsHistoryLimit=1)
    made = []
    for i in range(6):
        env.clock.advance(60)
        await env.sync("hist")
        made.append(f"hist-{_minutes(env.clock.now())}")
        env.clock.advance(1)
        await env.finish(made[-1], succeeded=i < 3)
    env.clock.advance(60)
    await env.sync("hist")  # cleans up, and starts the 7th
    latest = f"hist-{_minutes(env.clock.now())}"
    # successes: made[0..2], of which the newest two stay; failures: made[3..5], the newest stays
    assert env.job_names() == sorted([made[1], made[2], made[5], latest])
    assert (await env.event("hist", "SuccessfulDelete"))["message"].startswith("Deleted job hist-")
    assert [a["name"] for a in env.get("hist")["status"]["active"]] == [latest]


async def test_history_limit_zero_deletes_every_finished_job(env: Env) -> None:
    await env.create("none", "*/5 * * * *", successfulJobsHistoryLimit=0)
    env.clock.advance(270)
    await env.sync("none")
    [name] = env.job_names()
    await env.finish(name)
    await env.sync("none")
    assert env.job_names() == []
    assert "active" not in env.get("none")["status"]


async def test_time_zone_schedules_in_local_time(env: Env) -> None:
    await env.create("ny", "0 9 * * *", timeZone="America/New_York")
    after = await env.sync("ny")
    # 09:00 in New York on 1 January is 14:00 UTC; the controller looks again before that (a
    # wall-clock wait is never slept in one piece: the clock may be set meanwhile)
    assert after == cronjob.MAX_SCHEDULE_WAIT
    env.clock.advance(14 * 3600 - 30)
    await env.sync("ny")
    fire = datetime.datetime(2026, 1, 1, 14, 0, tzinfo=UTC)
    [name] = env.job_names()
    assert name == f"ny-{_minutes(fire)}"
    job = env.client.get("batch/v1", "Job", name=name, namespace="default")
    assert job["metadata"]["annotations"][cronjob.SCHEDULED_TIMESTAMP] == "2026-01-01T09:00:00-05:00"
    assert env.get("ny")["status"]["lastScheduleTime"] == "2026-01-01T14:00:00Z"


async def test_an_unknown_time_zone_is_an_event_and_no_jobs(env: Env) -> None:
    await env.create("mars", "*/5 * * * *", timeZone="UTC")
    # A zone the time zone database does not know (say, dropped from it since the CronJob was
    # made): written straight to the store, as the API would refuse it today.
    key = env.client.resource("batch/v1", "CronJob").key("mars", "default")
    item = env.store.get(key)
    assert item is not None
    obj = item.object()
    obj["spec"]["timeZone"] = "Mars/Olympus_Mons"
    await env.store.update(key, obj, expect_revision=item.revision)
    await env.settle()
    env.clock.advance(600)
    assert await env.sync("mars") is None
    assert env.job_names() == []
    ev = await env.event("mars", "UnknownTimeZone")
    assert ev["type"] == "Warning" and ev["message"].startswith('invalid timeZone: "Mars/Olympus_Mons"')


async def test_starting_deadline_skips_starts_that_are_too_late(env: Env) -> None:
    await env.create("late", "*/5 * * * *")
    await env.create("strict", "*/5 * * * *", startingDeadlineSeconds=60)
    env.clock.advance(390)  # 00:07:00: 00:05 was missed by two minutes
    await env.sync("late")
    t5 = _minutes(datetime.datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
    assert env.job_names() == [f"late-{t5}"]  # no deadline: it starts late
    after = await env.sync("strict")
    assert after == pytest.approx(180.1)  # nothing now, next at 00:10
    assert env.job_names() == [f"late-{t5}"]
    assert "lastScheduleTime" not in env.get("strict").get("status", {})
    env.clock.advance(210)  # 00:10:30: 30 s late, within the deadline
    await env.sync("strict")
    assert f"strict-{t5 + 5}" in env.job_names()
    annotations = env.client.get("batch/v1", "Job", name=f"strict-{t5 + 5}", namespace="default")["metadata"]["annotations"]
    assert annotations[cronjob.SCHEDULED_TIMESTAMP] == "2026-01-01T00:10:00Z"


async def test_an_int64_starting_deadline_is_no_deadline_not_a_reconcile_error(env: Env) -> None:
    await env.create("huge", "*/5 * * * *", startingDeadlineSeconds=2**62)  # a valid int64
    env.clock.advance(390)
    await env.sync("huge")  # raised OverflowError at every retry before
    t5 = _minutes(datetime.datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
    assert env.job_names() == [f"huge-{t5}"]


async def test_too_many_missed_start_times_warns_and_runs_the_latest(env: Env) -> None:
    await env.create("busy", "* * * * *")
    env.clock.advance(200 * 60 + 15)
    await env.sync("busy")
    latest = env.clock.now().replace(second=0)
    assert env.job_names() == [f"busy-{_minutes(latest)}"]
    assert env.get("busy")["status"]["lastScheduleTime"] == clock_mod.rfc3339(latest)
    ev = await env.event("busy", "TooManyMissedTimes")
    assert ev["type"] == "Warning"
    assert ev["message"] == ("too many missed start times. Set or decrease .spec.startingDeadlineSeconds "
                             "or check clock skew")


async def test_suspended_cronjob_starts_nothing_until_resumed(env: Env) -> None:
    await env.create("paused", "@hourly", suspend=True)
    env.clock.advance(3600)  # 01:00:30
    assert await env.sync("paused") is None
    assert env.job_names() == []

    def resume(obj: JSON) -> JSON:
        obj["spec"]["suspend"] = False
        return obj

    await env.client.patch("batch/v1", "CronJob", name="paused", namespace="default", mutate=resume)
    await env.settle()
    after = await env.sync("paused")
    one = datetime.datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    assert env.job_names() == [f"paused-{_minutes(one)}"]
    assert after == min(3600 - 30 + 0.1, cronjob.MAX_SCHEDULE_WAIT)  # next at 02:00


async def test_a_job_made_by_hand_from_the_cronjob_is_not_adopted(env: Env) -> None:
    cj = await env.create("manual", "0 0 1 1 *")
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "manual-run", "namespace": "default",
                        "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
                        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "manual",
                                             "uid": cj["metadata"]["uid"], "controller": True}]},
           "spec": cj["spec"]["jobTemplate"]["spec"]}
    await env.client.create(job)
    await env.settle()
    await env.sync("manual")
    assert "active" not in env.get("manual").get("status", {})
    ev = await env.event("manual", "UnexpectedJob")
    assert ev["message"] == "Saw a job that the controller did not create or forgot: manual-run"


def test_schedules_parse_as_robfig_cron() -> None:
    t = datetime.datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    nxt = lambda text: cronjob.Schedule(text, UTC).next(t)  # noqa: E731
    assert nxt("@hourly") == datetime.datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    assert nxt("@daily") == datetime.datetime(2026, 1, 2, 0, 0, tzinfo=UTC)
    assert nxt("@weekly") == datetime.datetime(2026, 1, 4, 0, 0, tzinfo=UTC)  # a Sunday
    assert nxt("@every 1h30m") == datetime.datetime(2026, 1, 1, 1, 30, 30, tzinfo=UTC)
    # day of month OR day of week when both are restricted; AND when one is a star
    assert nxt("0 0 13 * FRI") == datetime.datetime(2026, 1, 2, 0, 0, tzinfo=UTC)
    assert nxt("0 0 */2 * FRI") == datetime.datetime(2026, 1, 9, 0, 0, tzinfo=UTC)
    with pytest.raises(cronjob.ScheduleError):
        cronjob.Schedule("0 0 31 2 *", UTC)
    with pytest.raises(cronjob.ScheduleError):
        cronjob.Schedule("0 0 * *", UTC)


async def test_a_clock_set_back_or_forward_starts_no_storm_and_loses_no_schedule(env: Env) -> None:
    """A board's clock set back a year (booted without an RTC) starts nothing and keeps looking,
    instead of sleeping until the old schedule comes round; set right again, the most recent
    missed time starts one Job, not one per missed slot."""
    await env.create("every5", "*/5 * * * *")
    env.clock.advance(270)  # 00:05:00
    await env.sync("every5")
    assert len(env.job_names()) == 1
    env.clock.jump(-365 * 86400)
    after = await env.sync("every5")
    assert after is not None and after <= cronjob.MAX_SCHEDULE_WAIT
    assert len(env.job_names()) == 1
    env.clock.jump(365 * 86400 + 3600)  # set right, an hour on: twelve slots went by
    await env.sync("every5")
    names = env.job_names()
    assert len(names) == 2
    assert names[-1] == f"every5-{_minutes(datetime.datetime(2026, 1, 1, 1, 5, tzinfo=UTC))}"
