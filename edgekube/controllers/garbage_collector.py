"""The garbage collector: dependents follow their owners (ownerReferences), as upstream's.

It watches every object (one in-process watch over the whole store) and keeps an index of
uids and of each owner's dependents. When an owner is gone, its dependents are deleted, or lose
the reference when another owner of theirs still exists (background propagation). An owner being
deleted with the `orphan` finalizer has the references removed from its dependents; with
`foregroundDeletion`, its dependents are deleted first (in foreground themselves) and the owner
goes once none with `blockOwnerDeletion` is left. A dependent whose owners never existed (or are
gone since) is collected too. It reads only objects' metadata (`records.decode_fields`): every
write of every kind passes through it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Hashable
from typing import Any

from edgekube._cogs import gctrack
from edgekube.api import errors
from edgekube.api.registry import rest
from edgekube.client import informer
from edgekube.client.local import LocalClient
from edgekube.controllers.base import Controller, Requeue
from edgekube.store import errors as store_errors
from edgekube.store import records

log = logging.getLogger(__name__)
JSON = dict[str, Any]
ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"
# All the graph needs of an object; the rest of it (a 1.5 MiB object's spec) is never decoded.
_METADATA = frozenset({"metadata"})


@dataclasses.dataclass(slots=True)
class Node:
    uid: str
    key: str
    namespace: str | None
    name: str
    owners: list[JSON]
    finalizers: list[str]
    deleting: bool


class GarbageCollector(Controller):
    name = "garbage-collector"

    def __init__(self, client: LocalClient) -> None:
        super().__init__()
        self._client = client
        self._nodes: dict[str, Node] = {}
        self._dependents: dict[str, set[str]] = {}
        self.synced = asyncio.Event()

    # --- the graph -------------------------------------------------------------------------

    async def watch(self) -> None:
        await informer.list_and_watch(
            self._relist, lambda since: self._client.watch_all(since=since), self._event, on_synced=self.synced.set,
            damage=self._client.damage, reader="the garbage collector",
        )

    def _relist(self) -> int:
        page = self._client.scan_all()
        fresh = {}
        for item in page.items:
            try:
                obj = item.fields(_METADATA)
            except store_errors.CorruptRecordError as exc:
                self._client.damage.note(exc, reader="the garbage collector")
                continue
            node = self._node(item.key, obj)
            if node is not None:
                fresh[node.uid] = node
        gone = set(self._nodes) - set(fresh)
        self._nodes.clear()
        self._dependents.clear()
        for node in fresh.values():
            self._index(node)
        for uid in gone:
            self.queue.add(("owner", uid))
        for node in fresh.values():
            self._check(node)
        return int(page.revision)

    def _node(self, key: str, obj: JSON) -> Node | None:
        meta = obj.get("metadata") or {}
        uid = meta.get("uid")
        if not uid:
            return None
        node = Node(uid=uid, key=key, namespace=meta.get("namespace"), name=meta.get("name", ""),
                    owners=[r for r in meta.get("ownerReferences") or [] if isinstance(r, dict) and r.get("uid")],
                    finalizers=list(meta.get("finalizers") or []), deleting=bool(meta.get("deletionTimestamp")))
        # One per object of the cluster, with two lists: off the collector's lists (`_cogs.gctrack`).
        gctrack.untrack([node.owners, node.finalizers])
        gctrack.untrack_one(node)
        return node

    def _index(self, node: Node) -> None:
        old = self._nodes.get(node.uid)
        if old is not None:
            for ref in old.owners:
                self._dependents.get(ref["uid"], set()).discard(node.uid)
        self._nodes[node.uid] = node
        for ref in node.owners:
            self._dependents.setdefault(ref["uid"], set()).add(node.uid)

    def _event(self, ev: records.Event) -> None:
        obj = ev.fields(_METADATA)
        node = self._node(ev.key, obj)
        if node is None:
            return
        if ev.type is records.EventType.DELETED:
            self._nodes.pop(node.uid, None)
            for ref in node.owners:
                self._dependents.get(ref["uid"], set()).discard(node.uid)
                self.queue.add(("owner", ref["uid"]))  # a foreground owner may be waiting for it
            if self._dependents.get(node.uid):
                self.queue.add(("owner", node.uid))
            return
        self._index(node)
        self._check(node)

    def _check(self, node: Node) -> None:
        if node.deleting and (ORPHAN in node.finalizers or FOREGROUND in node.finalizers):
            self.queue.add(("owner", node.uid))
        if any(ref["uid"] not in self._nodes for ref in node.owners):
            self.queue.add(("dependent", node.uid))

    # --- reconcile -------------------------------------------------------------------------

    async def reconcile(self, key: Hashable) -> None:
        assert isinstance(key, tuple)
        what, uid = key
        if what == "dependent":
            await self._dependent(uid)
        else:
            await self._owner(uid)

    async def _owner(self, uid: str) -> None:
        owner = self._nodes.get(uid)
        dependents = [self._nodes[d] for d in sorted(self._dependents.get(uid, ())) if d in self._nodes]
        if owner is None:
            for dep in dependents:
                if any(r["uid"] != uid and r["uid"] in self._nodes for r in dep.owners):
                    await self._drop_reference(dep, uid)
                else:
                    await self._delete(dep, "Background")
            return
        if not owner.deleting:
            return
        if ORPHAN in owner.finalizers:
            for dep in dependents:
                await self._drop_reference(dep, uid)
            await self._remove_finalizer(owner, ORPHAN)
            return
        if FOREGROUND in owner.finalizers:
            blocking = 0
            for dep in dependents:
                ref = next((r for r in dep.owners if r["uid"] == uid), {})
                if ref.get("blockOwnerDeletion"):
                    blocking += 1
                if not dep.deleting:
                    await self._delete(dep, "Foreground" if self._dependents.get(dep.uid) else "Background")
            if blocking:
                raise Requeue(0.5)
            await self._remove_finalizer(owner, FOREGROUND)

    async def _dependent(self, uid: str) -> None:
        dep = self._nodes.get(uid)
        if dep is None or not dep.owners:
            return
        absent = [r for r in dep.owners if r["uid"] not in self._nodes and not self._owner_exists(dep, r)]
        if not absent:
            return
        if len(absent) == len(dep.owners):
            await self._delete(dep, "Background")
        else:
            for ref in absent:
                await self._drop_reference(dep, ref["uid"])

    def _owner_exists(self, dep: Node, ref: JSON) -> bool:
        info = self._client.catalog.by_kind(str(ref.get("apiVersion", "")), str(ref.get("kind", "")))
        if info is None:
            # A kind this server does not serve (a CRD not installed yet): never delete on a guess;
            # upstream's collector likewise leaves such dependents alone until the kind resolves.
            return True
        try:
            obj = self._client.get(info.api_version, info.kind, name=str(ref.get("name", "")),
                                   namespace=dep.namespace if info.namespaced else None)
        except errors.APIError:
            return False
        return bool((obj.get("metadata") or {}).get("uid") == ref["uid"])

    # --- writes ----------------------------------------------------------------------------

    async def _delete(self, node: Node, policy: str) -> None:
        info = self._client.catalog.by_key(node.key)
        if info is None:
            return
        try:
            await self._client.delete_info(info, name=node.name, namespace=node.namespace if info.namespaced else None,
                                           options=rest.DeleteOptions(propagation_policy=policy, precondition_uid=node.uid))
        except errors.APIError as exc:
            if exc.code not in (404, 409):
                raise

    async def _patch(self, node: Node, mutate: Callable[[JSON], JSON]) -> None:
        info = self._client.catalog.by_key(node.key)
        if info is None:
            return
        try:
            await self._client.patch_info(info, name=node.name, namespace=node.namespace if info.namespaced else None,
                                          mutate=mutate)
        except errors.APIError as exc:
            if exc.code != 404:
                raise

    async def _drop_reference(self, node: Node, owner_uid: str) -> None:
        def drop(obj: JSON) -> JSON:
            meta = obj["metadata"]
            refs = [r for r in meta.get("ownerReferences") or [] if r.get("uid") != owner_uid]
            if refs:
                meta["ownerReferences"] = refs
            else:
                meta.pop("ownerReferences", None)
            return obj

        await self._patch(node, drop)

    async def _remove_finalizer(self, node: Node, finalizer: str) -> None:
        def release(obj: JSON) -> JSON:
            meta = obj["metadata"]
            meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != finalizer]
            if not meta["finalizers"]:
                del meta["finalizers"]
            return obj

        await self._patch(node, release)
