"""The watch hub: fan-out of committed events to watchers, and a cache of recent events.

Watchers register for one resource prefix (`/core/pods/`) with an optional narrower key prefix
(one namespace). The hub keeps watchers in a dict by resource prefix, so publishing an event
costs only the watchers of that resource.

Each watcher has a bounded buffer. A watcher that falls `limit` events behind is dropped, not
buffered without bound: its stream ends and the client re-watches from its last revision (or
relists after 410), which is exactly what Kubernetes clients do when an apiserver closes a watch.

The recent-events ring serves most watch resumptions from memory: every event with revision
greater than `ring_start` is in it. Older ones come from the durable log (store.py decides).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable

from edgekube._cogs import gctrack
from edgekube.store import records


class Watcher:
    def __init__(self, *, hub: WatchHub, resource: str, prefix: str, limit: int) -> None:
        self._hub = hub
        self.resource = resource
        self.prefix = prefix
        self._limit = limit
        self._buffer: collections.deque[records.Event] = collections.deque()
        self._wakeup = asyncio.Event()
        # Highest revision buffered or delivered: anything at or below it is a duplicate.
        self._tail = 0
        self.dropped = False
        self.closed = False

    def _offer(self, event: records.Event) -> None:
        if self.closed:
            return
        if event.revision <= self._tail or not event.key.startswith(self.prefix):
            return
        if len(self._buffer) >= self._limit:
            self.dropped = True
            self.close()
            return
        self._buffer.append(event)
        self._tail = event.revision
        self._wakeup.set()

    def _replay(self, events: Iterable[records.Event], *, after: int) -> None:
        """Put replayed history in front of whatever arrived live meanwhile, de-duplicated."""
        live = list(self._buffer)
        self._buffer.clear()
        last = after
        for ev in events:
            if ev.revision > last and ev.key.startswith(self.prefix):
                self._buffer.append(ev)
                last = ev.revision
        for ev in live:
            if ev.revision > last:
                self._buffer.append(ev)
                last = ev.revision
        self._tail = last
        if self._buffer:
            self._wakeup.set()

    async def next(self, wait: float | None = None) -> records.Event | None:
        """The next event; None when the watcher is closed or `wait` seconds pass."""
        while not self._buffer:
            if self.closed:
                return None
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), wait)
            except TimeoutError:
                return None
        return self._buffer.popleft()

    def pending(self) -> int:
        return len(self._buffer)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._hub._remove(self)
            self._wakeup.set()


# The resource group of watchers that see every key (in-process consumers such as the garbage
# collector, which follows ownerReferences across all kinds).
ALL = ""


class WatchHub:
    def __init__(self, *, ring_size: int, start_revision: int, watcher_limit: int) -> None:
        self._watchers: dict[str, set[Watcher]] = {}
        self._ring: collections.deque[records.Event] = collections.deque(maxlen=ring_size)
        # Every event with revision > ring_start is in the ring.
        self.ring_start = start_revision
        self._watcher_limit = watcher_limit

    def subscribe(self, resource: str, prefix: str, *, limit: int | None = None) -> Watcher:
        w = Watcher(hub=self, resource=resource, prefix=prefix, limit=limit or self._watcher_limit)
        self._watchers.setdefault(resource, set()).add(w)
        return w

    def _remove(self, w: Watcher) -> None:
        group = self._watchers.get(w.resource)
        if group is not None:
            group.discard(w)
            if not group:
                del self._watchers[w.resource]

    def publish(self, event: records.Event) -> None:
        if len(self._ring) == self._ring.maxlen and self._ring:
            self.ring_start = self._ring[0].revision
        self._ring.append(event)
        gctrack.untrack_one(event)  # thousands kept: no full collection need walk them
        group = self._watchers.get(records.resource_prefix(event.key))
        if group:
            for w in list(group):
                w._offer(event)
        everything = self._watchers.get(ALL)
        if everything:
            for w in list(everything):
                w._offer(event)

    def recent(self, after: int, *, prefix: str) -> list[records.Event]:
        return [ev for ev in self._ring if ev.revision > after and ev.key.startswith(prefix)]

    def watcher_count(self) -> int:
        return sum(len(g) for g in self._watchers.values())

    def close_all(self) -> None:
        for group in list(self._watchers.values()):
            for w in list(group):
                w.close()
