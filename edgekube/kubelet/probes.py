"""Liveness, readiness and startup probes, as upstream's prober manager and workers
(pkg/kubelet/prober). A pod worker owns one `Prober`; the prober runs one task per probe of
each running container (sidecar init containers too) and keeps its result; the pod worker
reads `started`, `ready` and `failure` when it computes the status and decides what to kill.

A probe's worker is bound to one run of its container (the runtime's container id): a new run
gets new workers and fresh results, a stopped one none. Per worker, as upstream's:

- results start as readiness Failure, liveness Success, startup Unknown;
- the first try comes `initialDelaySeconds` after the container started, then one every
  `periodSeconds` (default 10), each bounded by `timeoutSeconds` (default 1);
- the published result changes only after `failureThreshold` (3) failures or
  `successThreshold` (1) successes in a row;
- liveness and readiness wait until the startup probe, if any, has succeeded: `started` follows
  the startup probe (true at once without one), and a container is ready only once started
  and its readiness probe (if any) succeeded;
- a liveness failure, or any startup result, puts the worker on hold until the container is
  replaced: the pod worker kills a container whose liveness or startup result is Failure, and
  restarts it as its restartPolicy says (see `pods`);
- a probe that cannot be tried at all (a port name the container lacks, runc unable to exec) is
  "errored": its try is thrown away, with an Unhealthy event.

Events (Warning, on the pod): `Unhealthy` "<Kind> probe failed: <output>" for each failed try,
`Unhealthy` "<Kind> probe errored and resulted in unknown state: <why>", `ProbeWarning` "<Kind>
probe warning: ..." for a success that says something (an HTTP redirect to another host).

gRPC probes are not supported (a gRPC client would be a dependency of its own): they error on
each try, so their results stay the initial ones (a grpc readiness probe never makes its
container ready; a grpc liveness probe never kills it). A terminating pod's probes are stopped
(`close`), readiness included; the results seen last stay.

The settings are read with upstream's defaults (`Spec.of`); exec commands get `$(VAR)`
expanded from the container's literal `env` values only, as upstream's
ExpandContainerCommandOnlyStatic.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgekube._cogs import clock as clock_mod
from edgekube.kubelet import actions
from edgekube.kubelet.runtime import bundle as bundle_mod
from edgekube.kubelet.runtime import containers as containers_mod

log = logging.getLogger(__name__)

LIVENESS = "Liveness"
READINESS = "Readiness"
STARTUP = "Startup"
FIELDS = {"startupProbe": STARTUP, "livenessProbe": LIVENESS, "readinessProbe": READINESS}
SUCCESS = "Success"
FAILURE = "Failure"
UNKNOWN = "Unknown"
INITIAL = {LIVENESS: SUCCESS, READINESS: FAILURE, STARTUP: UNKNOWN}


def _positive(probe: Mapping[str, Any], key: str, default: int) -> int:
    """A count as upstream's defaulting leaves it: 0 or unset gives the default."""
    v = probe.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else default


def _seconds(probe: Mapping[str, Any], key: str, default: float) -> float:
    """A duration (whole seconds in the API; fractions are taken as given)."""
    v = probe.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and v > 0 else default


@dataclasses.dataclass(frozen=True)
class Spec:
    """One probe of a container, its settings defaulted."""

    kind: str  # LIVENESS | READINESS | STARTUP
    probe: Mapping[str, Any]  # the probe object: its handler (exec, httpGet, tcpSocket, grpc) and fields
    initial_delay: float = 0
    period: float = 10
    timeout: float = 1
    success_threshold: int = 1
    failure_threshold: int = 3
    grace: int | None = None  # terminationGracePeriodSeconds of a liveness or startup probe

    @classmethod
    def of(cls, kind: str, probe: Mapping[str, Any]) -> Spec:
        grace = probe.get("terminationGracePeriodSeconds")
        return cls(kind=kind, probe=probe, initial_delay=_seconds(probe, "initialDelaySeconds", 0),
                   period=_seconds(probe, "periodSeconds", 10), timeout=_seconds(probe, "timeoutSeconds", 1),
                   # Liveness and startup probes succeed after one success, whatever the field says.
                   success_threshold=_positive(probe, "successThreshold", 1) if kind == READINESS else 1,
                   failure_threshold=_positive(probe, "failureThreshold", 3),
                   grace=grace if kind != READINESS and isinstance(grace, int) and not isinstance(grace, bool)
                   and grace > 0 else None)


def specs(container: Mapping[str, Any]) -> list[Spec]:
    return [Spec.of(kind, p) for field, kind in FIELDS.items() if isinstance(p := container.get(field), Mapping)]


@dataclasses.dataclass
class Counter:
    """A probe's published result and the run of equal results behind it (upstream's worker
    fields lastResult and resultRun)."""

    kind: str
    success_threshold: int = 1
    failure_threshold: int = 3
    result: str = ""
    last: str = ""
    run: int = 0

    def __post_init__(self) -> None:
        self.result = self.result or INITIAL[self.kind]

    def observe(self, result: str) -> bool:
        """Count one try's result (SUCCESS or FAILURE); True when the published result changed."""
        if result == self.last:
            self.run += 1
        else:
            self.last, self.run = result, 1
        if (result == FAILURE and self.run < self.failure_threshold) or \
                (result == SUCCESS and self.run < self.success_threshold):
            return False
        changed = result != self.result
        self.result = result
        return changed

    @property
    def on_hold(self) -> bool:
        """Nothing more to learn from this run of the container (upstream's onHold)."""
        return (self.kind == LIVENESS and self.result == FAILURE) or (self.kind == STARTUP and self.result != UNKNOWN)


def static_env(container: Mapping[str, Any]) -> dict[str, str]:
    return {str(e.get("name")): str(e.get("value") or "") for e in container.get("env") or []
            if isinstance(e, Mapping) and e.get("name") and e.get("valueFrom") is None}


async def run_probe(spec: Spec, target: actions.Target, *, runtime: actions.Exec) -> actions.Outcome:
    """One try of a probe. Raises `actions.ActionError` when it cannot be tried."""
    p = spec.probe
    if isinstance(p.get("exec"), Mapping):
        env = static_env(target.container)
        command = [bundle_mod.expand(str(a), env) for a in p["exec"].get("command") or []]
        return await actions.run_exec(runtime, target, command, time_limit=spec.timeout)
    if isinstance(p.get("httpGet"), Mapping):
        return await actions.http_get(p["httpGet"], target, time_limit=spec.timeout)
    if isinstance(p.get("tcpSocket"), Mapping):
        return await actions.tcp_connect(p["tcpSocket"], target, time_limit=spec.timeout)
    if isinstance(p.get("grpc"), Mapping):
        raise actions.ActionError("grpc probes are not supported by this kubelet")
    raise actions.ActionError(f"missing probe handler for container {target.container.get('name')}")


@dataclasses.dataclass
class _Worker:
    spec: Spec
    container: Mapping[str, Any]
    cid: str
    started_at: float  # wall-clock seconds the container started
    counter: Counter
    passed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)  # a startup probe succeeded
    task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return str(self.container.get("name"))


class Prober:
    """The probes of one pod. `on_change` is called when a published result changes (the pod
    worker then runs a pass); `on_event(type, reason, message)` records an event on the pod."""

    def __init__(self, *, pod: str, runtime: actions.Exec, pod_ip: str, netns: Path | None, clock: clock_mod.Clock,
                 on_change: Callable[[], None], on_event: Callable[[str, str, str], None]) -> None:
        self._pod = pod
        self._runtime = runtime
        self._pod_ip = pod_ip
        self._netns = netns
        self._clock = clock
        self._on_change = on_change
        self._on_event = on_event
        self._workers: dict[tuple[str, str], _Worker] = {}
        self._closed = False

    async def sync(self, containers: Sequence[tuple[Mapping[str, Any], containers_mod.ContainerStatus | None]]) -> None:
        """Probe these containers' current runs (None: not running): workers of runs that are
        gone stop, new runs get new workers."""
        if self._closed:
            return
        wanted: dict[tuple[str, str], tuple[Spec, Mapping[str, Any], containers_mod.ContainerStatus]] = {}
        for c, cs in containers:
            if cs is None or cs.state != containers_mod.RUNNING:
                continue
            for spec in specs(c):
                wanted[(str(c.get("name")), spec.kind)] = (spec, c, cs)
        stale = [w for key, w in self._workers.items() if key not in wanted or wanted[key][2].id != w.cid]
        for w in stale:
            del self._workers[(w.name, w.spec.kind)]
        await _stop(stale)
        for key, (spec, c, cs) in wanted.items():
            if key in self._workers:
                continue
            started = cs.started_at or cs.created_at
            w = _Worker(spec=spec, container=c, cid=cs.id, started_at=started.timestamp(),
                        counter=Counter(spec.kind, spec.success_threshold, spec.failure_threshold))
            self._workers[key] = w
            w.task = asyncio.create_task(self._run(w), name=f"probe/{self._pod}/{key[0]}/{spec.kind.lower()}")

    def _worker(self, container: Mapping[str, Any], kind: str, cid: str) -> _Worker | None:
        w = self._workers.get((str(container.get("name")), kind))
        return w if w is not None and w.cid == cid else None

    def started(self, container: Mapping[str, Any], cid: str) -> bool:
        """Whether the run `cid` (running) has started: its startup probe succeeded, or it has none."""
        if not isinstance(container.get("startupProbe"), Mapping):
            return True
        w = self._worker(container, STARTUP, cid)
        return w is not None and w.counter.result == SUCCESS

    def ready(self, container: Mapping[str, Any], cid: str) -> bool:
        """Whether the run `cid` (running) is ready: started, and its readiness probe succeeded
        (or it has none)."""
        if not self.started(container, cid):
            return False
        if not isinstance(container.get("readinessProbe"), Mapping):
            return True
        w = self._worker(container, READINESS, cid)
        return w is not None and w.counter.result == SUCCESS

    def failure(self, container: Mapping[str, Any], cid: str) -> Spec | None:
        """The liveness or startup probe the run `cid` failed (it is to be killed), if any."""
        for kind in (LIVENESS, STARTUP):
            w = self._worker(container, kind, cid)
            if w is not None and w.counter.result == FAILURE:
                return w.spec
        return None

    async def close(self) -> None:
        """Stop probing (the pod is terminating or gone); the results stay as they are."""
        self._closed = True
        await _stop(list(self._workers.values()))

    # --- a worker's loop ------------------------------------------------------------------------

    async def _run(self, w: _Worker) -> None:
        loop = asyncio.get_running_loop()
        # The time since the start as the wall clock says it, bounded to [0, the initial delay]: a
        # clock set back by a year must not hold the probe for a year, nor forward skip more.
        since = min(max(self._clock.now().timestamp() - w.started_at, 0.0), float(w.spec.initial_delay))
        delay = w.spec.initial_delay - since
        if delay > 0:
            await asyncio.sleep(delay)
        if w.spec.kind != STARTUP:
            gate = self._workers.get((w.name, STARTUP))
            if gate is not None and gate.cid == w.cid:
                await gate.passed.wait()
        target = actions.Target(cid=w.cid, container=w.container, pod_ip=self._pod_ip, netns=self._netns)
        while not w.counter.on_hold:
            began = loop.time()
            await self._try(w, target)
            await asyncio.sleep(max(0.0, began + w.spec.period - loop.time()))

    async def _try(self, w: _Worker, target: actions.Target) -> None:
        kind = w.spec.kind
        try:
            outcome = await run_probe(w.spec, target, runtime=self._runtime)
        except actions.ActionError as exc:
            self._on_event("Warning", "Unhealthy", f"{kind} probe errored and resulted in unknown state: {exc}")
            return
        except Exception as exc:  # a bug must not end the probing of this container
            log.warning("pod %s: %s probe of %s: %s", self._pod, kind.lower(), w.name, exc, exc_info=True)
            return
        if outcome.result == actions.FAILURE:
            self._on_event("Warning", "Unhealthy", f"{kind} probe failed: {outcome.output}")
        elif outcome.result == actions.WARNING:
            self._on_event("Warning", "ProbeWarning", f"{kind} probe warning: {outcome.output}")
        if w.counter.observe(FAILURE if outcome.result == actions.FAILURE else SUCCESS):
            if kind == STARTUP and w.counter.result == SUCCESS:
                w.passed.set()
            self._on_change()


async def _stop(workers: Sequence[_Worker]) -> None:
    tasks = [w.task for w in workers if w.task is not None and not w.task.done()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
