"""Informers: a list-then-watch cache of one resource, with event handlers, as client-go's.

Handlers should only enqueue keys (`namespace/name`); controllers read the cache in their
reconcile. Cached objects are shared and must never be mutated. When the watch ends (the store
dropped a slow watcher, or the revision was compacted) the informer lists again and replays the
difference to its handlers, so nothing is missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from edgekube._cogs import gctrack
from edgekube.api import errors as api_errors
from edgekube.client.local import LocalClient
from edgekube.store import errors as store_errors
from edgekube.store import records
from edgekube.store.watch import Watcher

log = logging.getLogger(__name__)
JSON = dict[str, Any]
# Objects cached this long ago or more are taken off the cyclic collector's lists in one job on
# the offload worker (see `_cogs.gctrack`): a cache of thousands then costs full passes nothing.
UNTRACK_DELAY_S = 1.0


def object_key(obj: JSON) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


class Handlers:
    def __init__(
        self,
        *,
        on_add: Callable[[JSON], None] | None = None,
        on_update: Callable[[JSON, JSON], None] | None = None,
        on_delete: Callable[[JSON], None] | None = None,
    ) -> None:
        self.on_add = on_add
        self.on_update = on_update
        self.on_delete = on_delete


class Informer:
    def __init__(self, client: LocalClient, api_version: str, kind: str, *, name: str | None = None) -> None:
        """With `name`, only objects of that name (in any namespace) are cached and reported,
        and events for other keys are dropped before they are decoded."""
        self._client = client
        self.api_version = api_version
        self.kind = kind
        self._name = name
        self._cache: dict[str, JSON] = {}
        self._by_ns: dict[str, dict[str, JSON]] = {}
        self._handlers: list[Handlers] = []
        self.synced = asyncio.Event()
        self._fresh: list[JSON] = []  # cached since the last untracking job

    def add_handlers(self, handlers: Handlers) -> None:
        self._handlers.append(handlers)

    def get(self, key: str) -> JSON | None:
        return self._cache.get(key)

    def list(self, namespace: str | None = None) -> list[JSON]:
        if namespace is None:
            return list(self._cache.values())
        return list(self._by_ns.get(namespace, {}).values())

    def _put(self, key: str, obj: JSON) -> JSON | None:
        previous = self._cache.get(key)
        self._cache[key] = obj
        ns = (obj.get("metadata") or {}).get("namespace")
        if ns:
            self._by_ns.setdefault(ns, {})[key] = obj
        if gctrack.AVAILABLE:
            if not self._fresh:
                asyncio.get_running_loop().call_later(UNTRACK_DELAY_S, self._untrack_fresh)
            self._fresh.append(obj)
        return previous

    def _untrack_fresh(self) -> None:
        fresh, self._fresh = self._fresh, []
        self._client.offload.submit(gctrack.untrack, fresh)

    def _drop(self, key: str) -> None:
        obj = self._cache.pop(key, None)
        if obj is None:
            return
        ns = (obj.get("metadata") or {}).get("namespace")
        if ns and ns in self._by_ns:
            self._by_ns[ns].pop(key, None)
            if not self._by_ns[ns]:
                del self._by_ns[ns]

    async def run(self) -> None:
        await list_and_watch(
            self._relist,
            lambda since: self._client.watch(self.api_version, self.kind, since=since),
            self._apply,
            on_synced=self.synced.set,
            damage=self._client.damage,
            reader=f"the {self.kind} informer",
            load=self._load,
        )

    async def _load(self, ev: records.Event) -> records.Event:
        if self._name is not None and not ev.key.endswith("/" + self._name):
            return ev  # dropped by `_apply` before it is decoded
        return await self._client.load_event(ev)

    def _relist(self) -> int:
        try:
            listed = self._client.list(self.api_version, self.kind,
                                       field_selector=f"metadata.name={self._name}" if self._name else "")
        except api_errors.APIError:
            return 0
        fresh = {object_key(o): o for o in listed.items}
        for key, old in list(self._cache.items()):
            if key not in fresh:
                self._drop(key)
                self._emit_delete(old)
        for key, obj in fresh.items():
            cached = self._put(key, obj)
            if cached is None:
                self._emit_add(obj)
            elif cached.get("metadata", {}).get("resourceVersion") != obj.get("metadata", {}).get("resourceVersion"):
                self._emit_update(cached, obj)
        return int(listed.resource_version or 0)

    def _apply(self, ev: records.Event) -> None:
        if self._name is not None and not ev.key.endswith("/" + self._name):
            return
        obj = ev.object()
        key = object_key(obj)
        if ev.type is records.EventType.DELETED:
            cached = self._cache.get(key)
            self._drop(key)
            self._emit_delete(obj)
            if self._client.offload.heavy(len(ev.value)):
                self._client.offload.let_go(obj)
                self._client.offload.let_go(cached)
            return
        previous = self._put(key, obj)
        if previous is None:
            self._emit_add(obj)
        else:
            self._emit_update(previous, obj)
            # A large object replaced is freed on the worker (milliseconds on the loop).
            if self._client.offload.heavy(max(len(ev.value), len(ev.prev_value or b""))):
                self._client.offload.let_go(previous)

    def _emit_add(self, obj: JSON) -> None:
        for h in self._handlers:
            if h.on_add is not None:
                _safely(h.on_add, obj)

    def _emit_update(self, old: JSON, new: JSON) -> None:
        for h in self._handlers:
            if h.on_update is not None:
                _safely(h.on_update, old, new)

    def _emit_delete(self, obj: JSON) -> None:
        for h in self._handlers:
            if h.on_delete is not None:
                _safely(h.on_delete, obj)


class InformerFactory:
    """One shared informer per (apiVersion, kind): controllers that watch the same kind share
    its cache and its watch, as client-go's SharedInformerFactory."""

    def __init__(self, client: LocalClient) -> None:
        self._client = client
        self._informers: dict[tuple[str, str, str | None], Informer] = {}
        self._started: set[tuple[str, str, str | None]] = set()

    def get(self, api_version: str, kind: str, *, name: str | None = None) -> Informer:
        key = (api_version, kind, name)
        inf = self._informers.get(key)
        if inf is None:
            inf = self._informers[key] = Informer(self._client, api_version, kind, name=name)
        return inf

    def unstarted(self) -> list[tuple[str, Informer]]:
        """Informers made since the last call, with a task name for each (the caller starts them)."""
        out = []
        for key, inf in self._informers.items():
            if key not in self._started:
                self._started.add(key)
                out.append((f"informer/{inf.kind}" + (f"/{inf._name}" if inf._name else ""), inf))
        return out

    async def wait_synced(self) -> None:
        await asyncio.gather(*(inf.synced.wait() for inf in self._informers.values()))


async def list_and_watch(
    relist: Callable[[], int],
    watch: Callable[[int], Awaitable[Watcher]],
    apply: Callable[[records.Event], None],
    *,
    on_synced: Callable[[], None],
    damage: records.Damage,
    reader: str,
    load: Callable[[records.Event], Awaitable[records.Event]] | None = None,
) -> None:
    """List (`relist` returns the list's revision), then apply watch events from there; list again
    whenever the watch ends (a dropped slow watcher) or its revision was compacted. `load`, when
    given, may decode an event's object ahead, off the event loop (`LocalClient.load_event`).

    An event whose object cannot be decoded is noted in `damage` and skipped: one damaged record
    must not stop a consumer (and with it the server, at every boot)."""
    while True:
        since = relist()
        on_synced()
        try:
            watcher = await watch(since)
        except store_errors.CompactedError:
            continue
        try:
            while True:
                ev = await watcher.next()
                if ev is None:
                    break
                try:
                    apply(await load(ev) if load is not None else ev)
                except store_errors.CorruptRecordError as exc:
                    damage.note(exc, reader=reader)
        finally:
            watcher.close()
        await asyncio.sleep(0.1)


async def follow_names(client: LocalClient, api_version: str, kind: str,
                       changed: Callable[[str, str], None]) -> None:
    """Call `changed(namespace, name)` for every change of a kind from now on, without caching
    or decoding the objects (for readers that only need to know when to look again)."""

    def apply(ev: records.Event) -> None:
        namespace, name = ev.key.rsplit("/", 2)[-2:]
        _safely(changed, namespace, name)

    await list_and_watch(client.revision, lambda since: client.watch(api_version, kind, since=since), apply,
                         on_synced=lambda: None, damage=client.damage, reader=f"the {kind} name watch")


def _safely(fn: Callable[..., None], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("informer handler %s failed", getattr(fn, "__qualname__", fn))
