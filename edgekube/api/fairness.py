"""Fair sharing of the API: a cap on requests in flight, shared fairly among users.

This is the idea of upstream's API Priority and Fairness, sized for a device: the levels are a
small fixed set rather than FlowSchema and PriorityLevelConfiguration objects, and each level's
queues are one per flow rather than shuffle-shard hands of a fixed number.

- **Priority levels.** `exempt`: the health probes (`/healthz`, `/livez`, `/readyz`), never
  queued. `system`: the node and edgekube's own components when they talk HTTP (the group
  `system:nodes`, and any `system:` user that is not a service account or anonymous: the kubelet
  of an agent, the controller manager, the scheduler). `workload-high`: service accounts of
  `kube-system` (the controllers of add-ons). `global-default`: everyone else, the admin
  included (upstream exempts `system:masters`; here the admin's kubectl is one user among
  others, so a noisy script running as the admin cannot starve a second user either). Each
  level has its own seats (a share of `max-requests-inflight`: 30%, 20%, 50%), so no amount of
  traffic in one level takes a seat of another: a noisy client in `global-default` cannot
  starve the kubelet.
- **Flows.** Within a level, requests are queued per flow, the user's name (a service account's
  name holds its namespace, as upstream's flow distinguisher by user). When a seat frees, the
  next request comes from the waiting flow with the fewest requests executing, ties taken in
  turn: a flow holding many seats with slow requests (large lists) waits while others, holding
  none, are served first, and among flows holding as many, the one served longest ago. This approximates upstream's fair queuing by seats in use rather than
  by virtual time.
- **Bounds.** A flow may have `queue-length-per-flow` requests waiting in a level and a level
  `max-queued` in all; a request past either, or still waiting after `queue-wait-seconds`, is
  refused with upstream's 429 `TooManyRequests` Status and a `Retry-After` header.
- **Not counted**: long-running requests (watches, pod logs, exec, attach, port-forward, proxy:
  upstream's long-running check) are neither capped nor queued, and in-process clients
  (`LocalClient`) do not go through HTTP at all.

The server's filter chain (api/filters.py) asks for the seat after authentication and
impersonation (the flow is the user a request acts as) and inside audit, so a refused request is
audited, as upstream's filter chain orders them. `/metrics` exposes upstream's `apiserver_flowcontrol_*` counters.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import Iterable

from edgekube.api import errors, reqattrs
from edgekube.api.auth import user as user_mod

_PROBES = ("/healthz", "/livez", "/readyz")
_NODES = "system:nodes"
_KUBE_SYSTEM_SA = user_mod.SERVICE_ACCOUNT_PREFIX + "kube-system:"
# The level's share of the seats, and upstream's name of the FlowSchema that leads to it.
_SHARES = (("system", 30, "system-nodes"), ("workload-high", 20, "kube-system-service-accounts"),
           ("global-default", 50, "global-default"))
_RETRY_AFTER = 1  # seconds, as upstream's APF answers
_MESSAGE = "Too many requests, please try again later."


@dataclasses.dataclass(frozen=True)
class Settings:
    max_requests_inflight: int  # 0: no cap, no queues
    queue_length_per_flow: int
    max_queued: int
    queue_wait_seconds: float


class Level:
    """One priority level: its seats, and its waiting requests queued per flow."""

    def __init__(self, name: str, *, seats: int, schema: str, per_flow: int, max_queued: int) -> None:
        self.name = name
        self.schema = schema
        self.seats = seats
        self._per_flow = per_flow
        self._max_queued = max_queued
        self.executing = 0
        self.queued = 0
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        self._running: dict[str, int] = {}  # requests executing per flow
        # When each flow with anything running or waiting last got a seat: ties go to the
        # flow served longest ago (a flow new to the level first).
        self._served_at: dict[str, int] = {}
        self._turn = 0
        self.dispatched = 0
        self.rejected = {"queue-full": 0, "time-out": 0}

    def _start(self, flow: str) -> None:
        self.executing += 1
        self._running[flow] = self._running.get(flow, 0) + 1
        self.dispatched += 1
        self._turn += 1
        self._served_at[flow] = self._turn

    def try_start(self, flow: str) -> bool:
        """A seat for one request of `flow` if one is free and nobody waits (no coroutine: the
        path of nearly every request)."""
        if self.executing < self.seats and not self.queued:
            self._start(flow)
            return True
        return False

    async def acquire(self, flow: str, *, wait: float) -> None:
        """A seat for one request of `flow`, at once or after a wait; a 429 when there is none."""
        if self.try_start(flow):
            return
        queue = self._waiting.get(flow)
        if self.queued >= self._max_queued or (queue is not None and len(queue) >= self._per_flow):
            self.rejected["queue-full"] += 1
            raise errors.too_many_requests(_MESSAGE, retry_after=_RETRY_AFTER)
        if queue is None:
            queue = self._waiting[flow] = deque()
        seat: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(seat)
        self.queued += 1
        try:
            await asyncio.wait((seat,), timeout=wait)
        except BaseException:  # the request itself was cancelled
            if seat.done():
                self.release(flow)  # granted meanwhile: given back
            else:
                self._leave(flow, queue, seat)
            raise
        if not seat.done():
            self._leave(flow, queue, seat)
            self.rejected["time-out"] += 1
            raise errors.too_many_requests(_MESSAGE, retry_after=_RETRY_AFTER)

    def _leave(self, flow: str, queue: deque[asyncio.Future[None]], seat: asyncio.Future[None]) -> None:
        seat.cancel()
        queue.remove(seat)
        self.queued -= 1
        if not queue and self._waiting.get(flow) is queue:
            del self._waiting[flow]
            if flow not in self._running:
                self._served_at.pop(flow, None)

    def release(self, flow: str) -> None:
        self.executing -= 1
        left = self._running[flow] - 1
        if left:
            self._running[flow] = left
        else:
            del self._running[flow]
            if flow not in self._waiting:
                self._served_at.pop(flow, None)
        while self.executing < self.seats and self.queued:
            self._dispatch()

    def _dispatch(self) -> None:
        """The next request: from the waiting flow with the fewest executing, ties to the one
        served longest ago."""
        best = min(self._waiting, key=lambda f: (self._running.get(f, 0), self._served_at.get(f, 0)))
        queue = self._waiting[best]
        seat = queue.popleft()
        self.queued -= 1
        if not queue:
            del self._waiting[best]
        self._start(best)
        seat.set_result(None)


class Fairness:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        total = settings.max_requests_inflight
        self.levels = {name: Level(name, seats=max(1, total * share // 100), schema=schema,
                                   per_flow=settings.queue_length_per_flow, max_queued=settings.max_queued)
                       for name, share, schema in _SHARES}
        self.exempt = 0  # probes, dispatched without a seat (long-running requests are not counted)

    @property
    def enabled(self) -> bool:
        return self.settings.max_requests_inflight > 0

    def classify(self, user: user_mod.UserInfo | None) -> Level:
        if user is not None:
            if _NODES in user.groups:
                return self.levels["system"]
            name = user.name
            if name.startswith(_KUBE_SYSTEM_SA):
                return self.levels["workload-high"]
            if name.startswith("system:") and not name.startswith(user_mod.SERVICE_ACCOUNT_PREFIX) \
                    and name != user_mod.ANONYMOUS:
                return self.levels["system"]
        return self.levels["global-default"]

    def level_for(self, path: str, user: user_mod.UserInfo | None, info: reqattrs.RequestInfo) -> Level | None:
        """The level in which the request must take a seat; None when it takes none (no cap, a
        long-running request, a health probe)."""
        if not self.enabled or info.long_running:
            return None
        if path.startswith(_PROBES):
            self.exempt += 1
            return None
        return self.classify(user)

    async def acquire(self, level: Level, flow: str) -> None:
        """A seat in `level` for `flow` after a wait (`level.try_start` found none free), given
        back with `level.release(flow)`."""
        await level.acquire(flow, wait=self.settings.queue_wait_seconds)

    def metrics(self) -> Iterable[str]:
        """Prometheus text lines, upstream's apiserver_flowcontrol_* names."""
        levels = list(self.levels.values())

        def labels(lv: Level) -> str:
            return f'flow_schema="{lv.schema}",priority_level="{lv.name}"'

        yield "# TYPE apiserver_flowcontrol_dispatched_requests_total counter"
        yield f'apiserver_flowcontrol_dispatched_requests_total{{flow_schema="probes",priority_level="exempt"}} {self.exempt}'
        yield from (f"apiserver_flowcontrol_dispatched_requests_total{{{labels(lv)}}} {lv.dispatched}" for lv in levels)
        yield "# TYPE apiserver_flowcontrol_rejected_requests_total counter"
        for lv in levels:
            for reason, count in lv.rejected.items():
                yield f'apiserver_flowcontrol_rejected_requests_total{{{labels(lv)},reason="{reason}"}} {count}'
        yield "# TYPE apiserver_flowcontrol_current_inqueue_requests gauge"
        yield from (f"apiserver_flowcontrol_current_inqueue_requests{{{labels(lv)}}} {lv.queued}" for lv in levels)
        yield "# TYPE apiserver_flowcontrol_current_executing_requests gauge"
        yield from (f"apiserver_flowcontrol_current_executing_requests{{{labels(lv)}}} {lv.executing}" for lv in levels)
        yield "# TYPE apiserver_flowcontrol_nominal_limit_seats gauge"
        yield from (f'apiserver_flowcontrol_nominal_limit_seats{{priority_level="{lv.name}"}} {lv.seats}'
                    for lv in levels)
