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
import collections
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson
from aiohttp import web

from edgekube._cogs import offload as offload_mod
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
        self.columns_sent = False

    async def line(self, line: bytes) -> None:
        if self._spec.table_version is not None:
            self.columns_sent = True
        # A large line in pieces, each a pass through TLS and a yield: the watches of one
        # large event are woken together, and a 1.8 MB line each would hold the loop meanwhile.
        for at in range(0, len(line), _BATCH):
            if at:
                await asyncio.sleep(0)  # a write yields only when the socket's buffer is full
            await self._response.write(line[at:at + _BATCH])

    async def bookmark(self, revision: int, *, initial_end: bool = False) -> None:
        meta: JSON = {"resourceVersion": str(revision)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        info = self._spec.info
        await self._response.write(
            orjson.dumps({"type": "BOOKMARK", "object": {"kind": info.kind, "apiVersion": info.api_version, "metadata": meta}}) + b"\n"
        )


def _line(spec: WatchSpec, type_: str, obj: JSON, *, with_columns: bool) -> bytes:
    """One event as its JSON line (pure: may run off the event loop)."""
    obj = rest.present(spec.info, obj)
    if spec.table_version is not None and type_ in ("ADDED", "MODIFIED", "DELETED"):
        table = tables.to_table(spec.info.gk, [obj], include_object=spec.include_object,
                                with_columns=with_columns, printer=tables.printer_for_info(spec.info))
        table["apiVersion"] = f"meta.k8s.io/{spec.table_version}"
        obj = table
    return orjson.dumps({"type": type_, "object": obj}) + b"\n"


class SharedLines:
    """The lines of recent large events, made once for every watch that shows them the same way
    (all of a resource's watches without selectors or tables): twenty watches of a 1.5 MiB
    object would otherwise decode and encode it twenty times. Owned by the handlers, shared by
    their watches; a few entries, as a large write reaches its watches at about the same time."""

    def __init__(self, *, size: int = 8) -> None:
        self._size = size
        self._lines: collections.OrderedDict[tuple[int, str, str], asyncio.Future[bytes | None]] = collections.OrderedDict()

    def get(self, key: tuple[int, str, str], start: Callable[[], asyncio.Future[bytes | None]]) -> asyncio.Future[bytes | None]:
        """The line of `key` (revision, key, apiVersion), being made or made; `start` makes it."""
        found = self._lines.get(key)
        if found is None:
            found = self._lines[key] = start()
            found.add_done_callback(_retrieved)
            while len(self._lines) > self._size:
                self._lines.popitem(last=False)
        return found


def _retrieved(fut: asyncio.Future[bytes | None]) -> None:
    # Each watch awaits the future itself; this only keeps asyncio from reporting a failure
    # (a damaged record) as never retrieved when no watch is left to await it.
    if not fut.cancelled():
        fut.exception()


async def serve(request: web.Request, registry: rest.Registry, spec: WatchSpec, *,
                shared: SharedLines | None = None) -> web.StreamResponse:
    store = registry.store
    info = spec.info
    prefix = info.key_prefix(spec.namespace)
    rv = spec.resource_version
    initial: list[bytes] = []
    if spec.send_initial_events or rv in ("", "0"):
        # The objects there are now, read, filtered and encoded on the offload worker (there may
        # be thousands).
        page = await store.scan_off_loop(prefix, offload=registry.offload)
        since = int(page.revision)
        initial = await registry.offload.always(_initial_lines, spec, page.items, damage=store.damage)
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
        for batch in _batches(initial):
            await writer.line(batch)
            await asyncio.sleep(0)
        if spec.send_initial_events and spec.bookmarks:
            await writer.bookmark(since, initial_end=True)
        await _pump(watcher, writer, spec, store_revision=lambda: store.revision, damage=store.damage,
                    offload=registry.offload, shared=shared)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        watcher.close()
    return response


def _initial_lines(spec: WatchSpec, items: list[records.Item], *, damage: records.Damage) -> list[bytes]:
    """The ADDED lines of the objects a watch starts with (pure: runs off the event loop)."""
    out: list[bytes] = []
    for _, obj in records.objects(items, damage=damage, reader="a watch"):
        if spec.accept is None or spec.accept(obj):
            out.append(_line(spec, "ADDED", obj, with_columns=not out))
    return out


# Lines are written in batches of about this size: each write is a pass through TLS and a yield.
_BATCH = 256 * 1024


def _batches(lines: list[bytes]) -> Iterator[bytes]:
    batch: list[bytes] = []
    size = 0
    for line in lines:
        batch.append(line)
        size += len(line)
        if size >= _BATCH:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


async def _pump(watcher: Any, writer: _Writer, spec: WatchSpec, *, store_revision: Callable[[], int],
                damage: records.Damage, offload: offload_mod.Offload, shared: SharedLines | None) -> None:
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
            if offload.heavy(len(ev.value)):
                line = await _large_event(ev, spec, offload=offload, shared=shared,
                                          with_columns=not writer.columns_sent)
            else:
                out = _filter(ev, spec.accept)
                line = _line(spec, out[0], out[1], with_columns=not writer.columns_sent) if out is not None else None
        except store_errors.CorruptRecordError as exc:
            damage.note(exc, reader="a watch")
            line = None
        if line is not None:
            await writer.line(line)
        last_sent = ev.revision


async def _large_event(ev: records.Event, spec: WatchSpec, *, offload: offload_mod.Offload,
                       shared: SharedLines | None, with_columns: bool) -> bytes | None:
    """The line of a large event (None: filtered out), made on the offload worker from its
    object decoded in pieces, and made once for all the plain watches of its resource."""

    def make() -> bytes | None:
        obj = records.decode_in_pieces(ev.value, key=ev.key, revision=ev.revision)

        def prev() -> JSON | None:
            if ev.prev_value is None:
                return None
            return records.decode_in_pieces(ev.prev_value, key=ev.key, revision=ev.revision)

        out = _choose(ev.type, obj, prev, spec.accept)
        return _line(spec, out[0], out[1], with_columns=with_columns) if out is not None else None

    if shared is None or spec.accept is not None or spec.table_version is not None:
        return await offload.always(make)
    return await asyncio.shield(shared.get((ev.revision, ev.key, spec.info.api_version), lambda: offload.submit(make)))


def _filter(ev: records.Event, accept: Callable[[Mapping[str, Any]], bool] | None) -> tuple[str, JSON] | None:
    return _choose(ev.type, ev.object(), ev.prev_object, accept)


def _choose(type_: records.EventType, obj: JSON, prev_object: Callable[[], JSON | None],
            accept: Callable[[Mapping[str, Any]], bool] | None) -> tuple[str, JSON] | None:
    """The event a watch with `accept` sees of a change (its type and object), or None."""
    if accept is None:
        return type_.value, obj
    now_ok = accept(obj)
    if type_ is records.EventType.DELETED:
        return ("DELETED", obj) if now_ok else None
    prev = prev_object()
    if type_ is records.EventType.ADDED or prev is None:
        # Without the previous state a MODIFIED that no longer matches cannot be told from one
        # that never did; sending DELETED for a key the client never saw is harmless.
        if now_ok:
            return type_.value, obj
        return ("DELETED", obj) if type_ is records.EventType.MODIFIED and prev is None else None
    was_ok = accept(prev)
    if now_ok and was_ok:
        return "MODIFIED", obj
    if now_ok:
        return "ADDED", obj
    if was_ok:
        return "DELETED", obj
    return None
