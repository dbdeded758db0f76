"""The watch stream: newline-delimited JSON events over one chunked HTTP response.

Where a watch starts follows the Kubernetes rules for `resourceVersion`:
- unset or "0": synthetic ADDED events for what exists now, then changes after that snapshot;
- N: every change after revision N, replayed from the store, then live; if N is older than the
  store keeps, one ERROR event with a 410 Expired Status (as kube-apiserver sends it inside the
  stream) and the stream ends, so client-go relists;
- `sendInitialEvents=true` (streaming lists): the ADDED events first, then a BOOKMARK annotated
  `k8s.io/initial-events-end`.

Selectors are applied to transitions, not just states: an object that stops matching is sent as
DELETED, one that starts matching as ADDED, as a filtered watch must for a cache to stay right.
Bookmarks (when asked for) carry the newest revision every `bookmark_interval` seconds. The
stream ends at `timeoutSeconds`, when the client goes away, when the store drops a watcher that
fell too far behind, or at shutdown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from edgekube.api import errors, tables
from edgekube.api.registry import resources, rest
from edgekube.store import errors as store_errors
from edgekube.store import records

JSON = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class WatchSpec:
    info: resources.ResourceInfo
    namespace: str | None
    resource_version: str
    accept: Callable[[Mapping[str, Any]], bool] | None
    timeout: float
    bookmarks: bool
    bookmark_interval: float
    send_initial_events: bool
    table_version: str | None
    include_object: str


class _Writer:
    def __init__(self, response: web.StreamResponse, spec: WatchSpec) -> None:
        self._response = response
        self._spec = spec
        self._columns_sent = False

    async def event(self, type_: str, obj: JSON) -> None:
        obj = rest.present(self._spec.info, obj)
        if self._spec.table_version is not None and type_ in ("ADDED", "MODIFIED", "DELETED"):
            table = tables.to_table(self._spec.info.gk, [obj], include_object=self._spec.include_object,
                                    with_columns=not self._columns_sent, printer=tables.printer_for_info(self._spec.info))
            table["apiVersion"] = f"meta.k8s.io/{self._spec.table_version}"
            self._columns_sent = True
            obj = table
        await self._response.write(orjson.dumps({"type": type_, "object": obj}) + b"\n")

    async def bookmark(self, revision: int, *, initial_end: bool = False) -> None:
        meta: JSON = {"resourceVersion": str(revision)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        info = self._spec.info
        await self._response.write(
            orjson.dumps({"type": "BOOKMARK", "object": {"kind": info.kind, "apiVersion": info.api_version, "metadata": meta}}) + b"\n"
        )


async def serve(request: web.Request, registry: rest.Registry, spec: WatchSpec) -> web.StreamResponse:
    store = registry.store
    info = spec.info
    prefix = info.key_prefix(spec.namespace)
    rv = spec.resource_version
    initial: list[JSON] = []
    if spec.send_initial_events or rv in ("", "0"):
        page = store.scan(prefix)
        since = int(page.revision)
        for _, obj in store.objects(page.items, reader="a watch"):
            if spec.accept is None or spec.accept(obj):
                initial.append(obj)
    else:
        try:
            since = int(rv)
        except ValueError:
            raise errors.bad_request(f'invalid resourceVersion "{rv}" for watch') from None
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json", "Cache-Control": "no-cache"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    writer = _Writer(response, spec)
    try:
        watcher = await store.watch(prefix, since=since)
    except store_errors.CompactedError as exc:
        status = errors.gone(f"too old resource version: {exc.requested} ({exc.oldest})").status()
        await response.write(orjson.dumps({"type": "ERROR", "object": status}) + b"\n")
        return response
    try:
        for obj in initial:
            await writer.event("ADDED", obj)
        if spec.send_initial_events and spec.bookmarks:
            await writer.bookmark(since, initial_end=True)
        await _pump(watcher, writer, spec, store_revision=lambda: store.revision, damage=store.damage)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        watcher.close()
    return response


async def _pump(watcher: Any, writer: _Writer, spec: WatchSpec, *, store_revision: Callable[[], int],
                damage: records.Damage) -> None:
    deadline = time.monotonic() + spec.timeout
    next_bookmark = time.monotonic() + spec.bookmark_interval
    last_sent = 0
    while True:
        now = time.monotonic()
        if now >= deadline:
            return
        wait = deadline - now
        if spec.bookmarks:
            wait = min(wait, max(0.0, next_bookmark - now))
        ev: records.Event | None = await watcher.next(wait=wait)
        if ev is None:
            if watcher.closed:
                return
            if spec.bookmarks and time.monotonic() >= next_bookmark:
                rev = max(last_sent, store_revision())
                await writer.bookmark(rev)
                next_bookmark = time.monotonic() + spec.bookmark_interval
            continue
        try:
            out = _filter(ev, spec.accept)
        except store_errors.CorruptRecordError as exc:
            damage.note(exc, reader="a watch")
            out = None
        if out is not None:
            await writer.event(out[0], out[1])
        last_sent = ev.revision


def _filter(ev: records.Event, accept: Callable[[Mapping[str, Any]], bool] | None) -> tuple[str, JSON] | None:
    obj = ev.object()
    if accept is None:
        return ev.type.value, obj
    now_ok = accept(obj)
    if ev.type is records.EventType.DELETED:
        return ("DELETED", obj) if now_ok else None
    prev = ev.prev_object()
    if ev.type is records.EventType.ADDED or prev is None:
        # Without the previous state a MODIFIED that no longer matches cannot be told from one
        # that never did; sending DELETED for a key the client never saw is harmless.
        if now_ok:
            return ev.type.value, obj
        return ("DELETED", obj) if ev.type is records.EventType.MODIFIED and prev is None else None
    was_ok = accept(prev)
    if now_ok and was_ok:
        return "MODIFIED", obj
    if now_ok:
        return "ADDED", obj
    if was_ok:
        return "DELETED", obj
    return None
