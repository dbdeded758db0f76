"""Claiming dependents, as client-go's ControllerRefManager: adopt matching orphans, release the rest.

An object a controller owns (its controller reference names the owner's uid) and that still
matches is the owner's; one that stopped matching loses the reference (released). An orphan that
matches gets the reference (adopted), but only while the owner, read afresh from the store and not
from a cache, still exists with the same uid and is not being deleted: adopting into an owner that
is going would orphan the object again. Objects being deleted are never adopted. Races (the
object changed or went, another controller took it) skip the object; the next sync sees the truth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edgekube.api import errors
from edgekube.client import objects
from edgekube.client.informer import Informer
from edgekube.client.local import LocalClient
from edgekube.client.workqueue import WorkQueue

log = logging.getLogger(__name__)
JSON = dict[str, Any]


class _Skip(Exception):
    """The object changed under us: leave it for the next sync."""


async def claim(client: LocalClient, owner: JSON, candidates: list[JSON], *,
                match: Callable[[JSON], bool]) -> list[JSON]:
    """The candidates `owner` controls after adoption and release (cached objects, or the patched
    copies of adopted ones)."""
    uid = objects.meta(owner).get("uid")
    out: list[JSON] = []
    can_adopt: bool | None = None
    for obj in candidates:
        ref = objects.controller_of(obj)
        meta = objects.meta(obj)
        if ref is not None:
            if ref.get("uid") != uid:
                continue
            if match(obj):
                out.append(obj)
            elif not meta.get("deletionTimestamp"):
                await _set_ref(client, obj, owner, adopt=False)
            continue
        if meta.get("deletionTimestamp") or not match(obj):
            continue
        if can_adopt is None:
            can_adopt = _owner_alive(client, owner)
        if not can_adopt:
            continue
        adopted = await _set_ref(client, obj, owner, adopt=True)
        if adopted is not None:
            out.append(adopted)
    return out


def _owner_alive(client: LocalClient, owner: JSON) -> bool:
    meta = objects.meta(owner)
    try:
        fresh = client.get(owner["apiVersion"], owner["kind"], name=meta["name"], namespace=meta.get("namespace"))
    except errors.APIError:
        return False
    fm = objects.meta(fresh)
    return fm.get("uid") == meta.get("uid") and not fm.get("deletionTimestamp")


async def _set_ref(client: LocalClient, obj: JSON, owner: JSON, *, adopt: bool) -> JSON | None:
    meta = objects.meta(obj)
    uid = objects.meta(owner).get("uid")

    def change(fresh: JSON) -> JSON:
        m = fresh["metadata"]
        if m.get("uid") != meta.get("uid"):
            raise _Skip()
        refs = [r for r in m.get("ownerReferences") or [] if r.get("uid") != uid]
        if adopt:
            if any(r.get("controller") for r in refs) or m.get("deletionTimestamp"):
                raise _Skip()
            refs.append(objects.owner_ref(owner))
        if refs:
            m["ownerReferences"] = refs
        else:
            m.pop("ownerReferences", None)
        return fresh

    try:
        return await client.patch(obj["apiVersion"], obj["kind"], name=meta["name"], namespace=meta.get("namespace"),
                                  mutate=change)
    except _Skip:
        return None
    except errors.APIError as exc:
        if exc.code in (404, 409, 422):
            log.info("%s %s/%s not %s: %s", obj.get("kind"), meta.get("namespace"), meta.get("name"),
                     "adopted" if adopt else "released", exc.message)
            return None
        raise


def route_pod_update(queue: WorkQueue, owners: Informer, old_key: str | None, key: str | None,
                     old: JSON, new: JSON, *, adopters: Callable[[JSON], None]) -> None:
    """A pod changed: requeue the owner it left and the one it has now (and again when it becomes
    available, minReadySeconds after turning ready); an orphan whose labels changed or that was
    just released goes to `adopters` (the owners whose selector may now match it)."""
    if old_key is not None and old_key != key:
        queue.add(old_key)
    if key is not None:
        queue.add(key)
        owner = owners.get(key) or {}
        mrs = int((owner.get("spec") or {}).get("minReadySeconds") or 0)
        if mrs > 0 and objects.pod_ready(new) and not objects.pod_ready(old):
            queue.add_after(key, mrs + 1.0)
        return
    if objects.controller_of(new) is None and (
            objects.meta(old).get("labels") != objects.meta(new).get("labels")
            or objects.controller_of(old) is not None):
        adopters(new)
