"""ResourceQuota controller: status.hard is spec.hard, status.used what the namespace uses.

As upstream's resourcequota-controller: a quota is synced when it is created, when its spec.hard
changes (not on status writes), when an object it counts changes in a way that changes its usage
(created, deleted, a pod turning terminal, a service changing type, ...), and every
`resync_seconds` (upstream's --resource-quota-sync-period, 5 minutes), which also undoes any
overcharge an admission left when the object's own write then failed.

A sync reads the quota and the namespace's objects through the registry (not the caches, which
lag), keeps the last observed usage of resources no evaluator measures, and writes the status only
when hard or used changed, with the quota's resourceVersion as precondition: an admission charge
that landed since the read makes the write conflict, and the sync runs again on the new state.

The admission charges a quota a moment *before* the object itself is written, so a recount in
between would miss the object and give its charge back, letting one more object in. Upstream has
that window; here a recount that comes out lower than status.used is held back: the quota is
counted again `settle_seconds` later, and the lower count is written only if the quota's
resourceVersion did not move meanwhile (no charge since the first count, so any charged object has
landed by then, or failed and rightly goes uncounted). Freed quota thus shows a second later.

Changes reach it through one in-process watch of the store (as the garbage collector's): events
are filtered by their key before anything is decoded, so namespaces without quotas cost a string
split. Usage is compared before and after a change only where a quota counts that resource.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from edgekube._cogs import clock as clock_mod
from edgekube.api import errors
from edgekube.api.registry import quota, resources
from edgekube.client import informer
from edgekube.client.informer import Handlers, Informer
from edgekube.client.local import LocalClient
from edgekube.controllers.base import Controller, Requeue
from edgekube.store import records

JSON = dict[str, Any]
RESYNC_SECONDS = 300.0
# A recount lower than the status is written only when a second recount this much later, with no
# charge in between, agrees (see the module docstring).
SETTLE_SECONDS = 1.0


class ResourceQuotaController(Controller):
    name = "resourcequota-controller"
    workers = 2

    def __init__(self, client: LocalClient, quotas: Informer, *, clock: clock_mod.Clock,
                 resync_seconds: float = RESYNC_SECONDS, settle_seconds: float = SETTLE_SECONDS) -> None:
        super().__init__()
        self._client = client
        self._quotas = quotas
        self._clock = clock
        self._resync = resync_seconds
        self._settle = settle_seconds
        # Quotas whose recount came out lower than their status: key -> the resourceVersion seen.
        self._settling: dict[str, str] = {}
        quotas.add_handlers(Handlers(on_add=self._enqueue, on_update=self._quota_changed))

    def _enqueue(self, rq: JSON) -> None:
        self.queue.add(informer.object_key(rq))

    def _quota_changed(self, old: JSON, new: JSON) -> None:
        # As upstream: only spec changes. Status writes (ours, the admission's charges) need no
        # recount, and recounting on a charge would race the charged object's own write.
        if ((old.get("spec") or {}).get("hard") or {}) != ((new.get("spec") or {}).get("hard") or {}):
            self._enqueue(new)

    # --- triggers ----------------------------------------------------------------------------

    async def run(self) -> None:
        await asyncio.gather(super().run(), self._watch(), self._resync_all())

    async def _watch(self) -> None:
        await informer.list_and_watch(
            self._relist, lambda since: self._client.watch_all(since=since), self._event, on_synced=lambda: None,
            damage=self._client.damage, reader="the resource quota controller",
        )

    def _relist(self) -> int:
        """(Re)starting the watch may have missed changes: recount every quota."""
        listed = self._client.list("v1", "ResourceQuota")
        for rq in listed.items:
            self._enqueue(rq)
        return int(listed.resource_version or 0)

    async def _resync_all(self) -> None:
        while True:
            await asyncio.sleep(self._resync)
            for rq in self._quotas.list():
                self._enqueue(rq)

    def _event(self, ev: records.Event) -> None:
        parts = ev.key.split("/")  # "", group, resource, namespace, name
        if len(parts) != 5:
            return
        quotas = self._quotas.list(parts[3])
        if not quotas:
            return
        group = "" if parts[1] == "core" else parts[1]
        evaluator = quota.evaluator_for(group, parts[2])
        tracking = [rq for rq in quotas if evaluator.matching_resources(_hard_names(rq))]
        if not tracking:
            return
        if ev.type is records.EventType.MODIFIED:
            before = ev.prev_object()
            if before is not None and not self._usage_changed(evaluator, tracking, before, ev.object()):
                return
        for rq in tracking:
            self._enqueue(rq)

    def _usage_changed(self, evaluator: quota.Evaluator, quotas: list[JSON], old: JSON, new: JSON) -> bool:
        now = self._clock.now()
        if not quota.equals(evaluator.usage(old, now=now), evaluator.usage(new, now=now)):
            return True
        return any(
            all(evaluator.matches_scope(s, old) for s in quota.scope_selectors(rq))
            != all(evaluator.matches_scope(s, new) for s in quota.scope_selectors(rq))
            for rq in quotas
        )

    # --- sync --------------------------------------------------------------------------------

    async def reconcile(self, key: Hashable) -> None:
        namespace, name = str(key).split("/", 1)
        try:
            rq = self._client.get("v1", "ResourceQuota", name=name, namespace=namespace)
        except errors.APIError as exc:
            if exc.code == 404:
                self._settling.pop(str(key), None)
                return
            raise
        spec_hard = dict((rq.get("spec") or {}).get("hard") or {})
        status = rq.get("status") or {}
        old_used = quota.parse_list(status.get("used"))
        used = dict(old_used)
        used.update(quota.calculate_usage(rq, self._evaluators(), list_objects=self._lister(namespace),
                                          now=self._clock.now()))
        used = quota.mask(used, spec_hard)
        dirty = ("hard" not in status or "used" not in status
                 or not quota.equals(quota.parse_list(status.get("hard")), quota.parse_list(spec_hard))
                 or not quota.equals(used, old_used))
        if not dirty:
            self._settling.pop(str(key), None)
            return
        rv = str(rq["metadata"].get("resourceVersion"))
        if any(k in old_used and v.value < old_used[k].value for k, v in used.items()):
            # Lower than charged: maybe an object charged for but not written yet. Count again
            # once that write must be over, unless no charge has come since.
            if self._settling.get(str(key)) != rv:
                self._settling[str(key)] = rv
                raise Requeue(self._settle)
        self._settling.pop(str(key), None)
        rq["status"] = {"hard": spec_hard, "used": quota.render(used)}
        # The resourceVersion read is the precondition: a charge since then conflicts (and we retry).
        await self._client.update(rq, subresource="status")

    def _evaluators(self) -> list[quota.Evaluator]:
        """One per namespaced resource the API serves (custom resources included)."""
        seen: set[tuple[str, str]] = set()
        out: list[quota.Evaluator] = []
        for info in self._client.catalog.all():
            if info.namespaced and "list" in info.verbs and (info.group, info.plural) not in seen:
                seen.add((info.group, info.plural))
                out.append(quota.evaluator_for(info.group, info.plural))
        return out

    def _lister(self, namespace: str) -> Callable[[str, str], Iterable[JSON]]:
        infos: dict[tuple[str, str], resources.ResourceInfo] = {}
        for info in self._client.catalog.all():
            infos.setdefault((info.group, info.plural), info)

        def list_objects(group: str, plural: str) -> Iterable[JSON]:
            info = infos.get((group, plural))
            return self._client.list_info(info, namespace=namespace).items if info is not None else []

        return list_objects


def _hard_names(rq: JSON) -> list[str]:
    return list(((rq.get("spec") or {}).get("hard") or {}).keys() | ((rq.get("status") or {}).get("hard") or {}).keys())
