"""Events as upstream's recorder makes them: deduplicated, written off the caller's path, bounded.

`record()` never blocks and never fails its caller: events go into a bounded queue (dropped
when it is full, as client-go's broadcaster does) and one task writes them. An event equal to a
recent one (same object, type, reason, message and source) bumps that event's `count` and
`lastTimestamp` instead of making a new object. Events live in the memory tier; the same task
deletes events older than `ttl` and the oldest beyond `limit`, so they never grow without bound.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
import time
from typing import Any

from edgekube._cogs import clock as clock_mod
from edgekube.api import errors
from edgekube.client.local import LocalClient

log = logging.getLogger(__name__)
JSON = dict[str, Any]

NORMAL = "Normal"
WARNING = "Warning"
_QUEUE = 1000
_REMEMBERED = 4096


class EventRecorder:
    def __init__(self, client: LocalClient, *, clock: clock_mod.Clock, ttl_seconds: float = 3600.0,
                 limit: int = 5000, sweep_seconds: float = 60.0) -> None:
        self._client = client
        self._clock = clock
        self._queue: asyncio.Queue[tuple[str, str, JSON, str, str, str]] | None = None
        # dedup key -> (namespace, event name); an LRU of the events written lately
        self._recent: collections.OrderedDict[tuple[str, ...], tuple[str, str]] = collections.OrderedDict()
        self.ttl = ttl_seconds
        self.limit = limit
        self._sweep = sweep_seconds
        self.dropped = 0

    def for_component(self, component: str, host: str = "") -> Recorder:
        return Recorder(self, component, host)

    def _enqueue(self, component: str, host: str, obj: JSON, kind: str, reason: str, message: str) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue(_QUEUE)
        try:
            self._queue.put_nowait((component, host, obj, kind, reason, message))
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue(_QUEUE)
        sweeper = asyncio.ensure_future(self._sweep_loop())
        try:
            while True:
                item = await self._queue.get()
                try:
                    await self._write(*item)
                except Exception as exc:
                    log.warning("event %s for %s not recorded: %s", item[4], _ref_name(item[2]), exc,
                                exc_info=_is_bug(exc))
        finally:
            sweeper.cancel()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self._sweep)
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("event clean-up failed: %s", exc, exc_info=_is_bug(exc))

    async def _write(self, component: str, host: str, obj: JSON, kind: str, reason: str, message: str) -> None:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        involved = {"kind": obj.get("kind"), "namespace": meta.get("namespace"), "name": meta.get("name"),
                    "uid": meta.get("uid"), "apiVersion": obj.get("apiVersion"),
                    "resourceVersion": meta.get("resourceVersion")}
        involved = {k: v for k, v in involved.items() if v}
        key = (component, host, str(involved.get("uid") or involved.get("name")), str(obj.get("kind")), kind, reason, message)
        now = clock_mod.rfc3339(self._clock.now())
        known = self._recent.get(key)
        if known is not None:
            self._recent.move_to_end(key)

            def bump(ev: JSON) -> JSON:
                ev["count"] = int(ev.get("count") or 1) + 1
                ev["lastTimestamp"] = now
                return ev

            try:
                await self._client.patch("v1", "Event", name=known[1], namespace=known[0], mutate=bump)
                return
            except errors.APIError as exc:
                if exc.code != 404:
                    raise
        name = f"{meta.get('name')}.{time.time_ns():x}"
        event: JSON = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "reason": reason, "message": message, "type": kind,
            "source": {"component": component, **({"host": host} if host else {})},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "eventTime": None, "reportingComponent": component, "reportingInstance": host,
        }
        await self._client.create(event)
        self._recent[key] = (namespace, name)
        while len(self._recent) > _REMEMBERED:
            self._recent.popitem(last=False)

    async def sweep(self) -> int:
        """Delete events past their time to live, then the oldest beyond the limit."""
        events = self._client.list("v1", "Event").items
        cutoff = self._clock.now() - datetime.timedelta(seconds=self.ttl)

        def last(ev: JSON) -> str:
            return str(ev.get("lastTimestamp") or (ev.get("metadata") or {}).get("creationTimestamp") or "")

        events.sort(key=last)
        doomed = [ev for ev in events if last(ev) and clock_mod.parse_rfc3339(last(ev)) < cutoff]
        keep = len(events) - len(doomed)
        if keep > self.limit:
            doomed.extend(events[len(doomed):len(doomed) + keep - self.limit])
        for ev in doomed:
            m = ev["metadata"]
            try:
                await self._client.delete("v1", "Event", name=m["name"], namespace=m.get("namespace"))
            except errors.APIError as exc:
                if exc.code != 404:
                    raise
        return len(doomed)


class Recorder:
    """One component's handle on the shared EventRecorder."""

    def __init__(self, events: EventRecorder, component: str, host: str) -> None:
        self._events = events
        self.component = component
        self.host = host

    def normal(self, obj: JSON, reason: str, message: str) -> None:
        self._events._enqueue(self.component, self.host, obj, NORMAL, reason, message)

    def warning(self, obj: JSON, reason: str, message: str) -> None:
        self._events._enqueue(self.component, self.host, obj, WARNING, reason, message)


def _is_bug(exc: Exception) -> bool:
    """A traceback for a fault of the recorder; a Status (an administrator took the component's
    rights away, the namespace is terminating) is the cluster's state, told in one line."""
    return not isinstance(exc, errors.APIError)


def _ref_name(obj: JSON) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')} {meta.get('namespace', '')}/{meta.get('name')}"
