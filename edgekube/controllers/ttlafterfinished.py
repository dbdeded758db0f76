"""The TTL-after-finished controller: a finished Job with `ttlSecondsAfterFinished` is deleted
that many seconds after it finished, as upstream's ttl-after-finished-controller.

The finish time is the Complete or Failed condition's lastTransitionTime. A Job not yet expired is
requeued for the moment it expires; an expired one is read again from the API (its TTL may have
changed meanwhile) and deleted with foreground propagation (its pods go first, as upstream) and a
uid precondition, so a new Job of the same name is never deleted by mistake.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Hashable
from typing import Any

from edgekube._cogs import clock as clock_mod
from edgekube.api import errors
from edgekube.api.registry import rest
from edgekube.client import objects
from edgekube.client.informer import Handlers, Informer, object_key
from edgekube.client.local import LocalClient
from edgekube.controllers import job as job_mod
from edgekube.controllers.base import Controller, Requeue

log = logging.getLogger(__name__)
JSON = dict[str, Any]


def _needs_cleanup(job: JSON) -> bool:
    return (job.get("spec") or {}).get("ttlSecondsAfterFinished") is not None and job_mod.finished_condition(job) is not None


def expires_at(job: JSON) -> datetime.datetime | None:
    """When a finished Job with a TTL may be deleted; None when it has no TTL or has not finished."""
    if not _needs_cleanup(job):
        return None
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in (job_mod.COMPLETE, job_mod.FAILED) and c.get("status") == "True" and c.get("lastTransitionTime"):
            ttl = int(job["spec"]["ttlSecondsAfterFinished"])
            return clock_mod.parse_rfc3339(c["lastTransitionTime"]) + datetime.timedelta(seconds=ttl)
    return None


class TTLAfterFinishedController(Controller):
    name = "ttl-after-finished-controller"

    def __init__(self, client: LocalClient, jobs: Informer, *, clock: clock_mod.Clock) -> None:
        super().__init__()
        self._client = client
        self._jobs = jobs
        self._clock = clock
        jobs.add_handlers(Handlers(on_add=self._maybe, on_update=lambda _old, new: self._maybe(new)))

    async def run(self) -> None:
        await self._jobs.synced.wait()
        await super().run()

    def _maybe(self, job: JSON) -> None:
        if not objects.meta(job).get("deletionTimestamp") and _needs_cleanup(job):
            self.queue.add(object_key(job))

    def _left(self, job: JSON) -> float | None:
        """Seconds until the Job expires (<= 0: expired); None when it is not to be cleaned up."""
        if objects.meta(job).get("deletionTimestamp"):
            return None
        at = expires_at(job)
        if at is None:
            return None
        return (at - self._clock.now()).total_seconds()

    async def reconcile(self, key: Hashable) -> None:
        cached = self._jobs.get(str(key))
        if cached is None:
            return
        left = self._left(cached)
        if left is None:
            return
        if left > 0:
            raise Requeue(left)
        ns, _, name = str(key).partition("/")
        try:
            fresh = self._client.get("batch/v1", "Job", name=name, namespace=ns)
        except errors.APIError as exc:
            if exc.code == 404:
                return
            raise
        left = self._left(fresh)
        if left is None:
            return
        if left > 0:
            raise Requeue(left)
        try:
            await self._client.delete("batch/v1", "Job", name=name, namespace=ns, options=rest.DeleteOptions(
                propagation_policy="Foreground", precondition_uid=objects.meta(fresh).get("uid")))
        except errors.APIError as exc:
            if exc.code not in (404, 409):
                raise
