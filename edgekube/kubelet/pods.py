"""Pod workers: one per pod UID, fed the newest pod, that make the runtime match it (DESIGN §5).

Sources. The pods bound to this node (an informer on all pods, filtered by `spec.nodeName` in
its handlers; mirror pods left out), and static pods from manifest files (`staticpods`, through
`add_static`/`remove_static`): those are keyed by their own uid, their status goes to their
mirror pod, and their termination deletes no API object (the file source removes the mirror
pod once they stopped). Each pod UID gets one worker task that owns everything of that pod; handlers only
store the newest pod object and wake the worker, so one pod is never worked on twice at once and
a burst of updates collapses into one pass. Exits of containers (from the runtime's exit
watch), back-off timers, and a resync every minute (configMap/secret updates, drift) wake it too.

A worker's pass, level-triggered (it compares desired and observed each time):

- **sync** (a live pod): the sandbox (pod directory, network namespace, or none for hostNetwork,
  put on the pod network once per process (`network.PodNetwork`: its addresses are the pod's
  IPs; a failure is a FailedCreatePodSandBox event and a retry); the pod cgroup; /etc/hosts,
  /etc/hostname, /etc/resolv.conf), volumes,
  then containers: init containers one at a time in order, each to completion (sidecars, init
  containers with `restartPolicy: Always`, only until they have started, past their startup
  probe), then every container in order. A container's postStart hook runs right after it
  started, the pass waiting for it: the container counts as started only once it returned,
  and a failed one kills it (FailedPostStartHook). Containers that failed their liveness or
  startup probe (see `probes`: one prober per pod, whose result changes wake the worker) are
  killed first ("Container c failed liveness probe, will be restarted"), in the probe's grace
  period or else the pod's. A container that exited is restarted as `restartPolicy` says (one
  killed by a probe even after exiting 0 under OnFailure, as upstream), through the
  CrashLoopBackOff back-off (10 s doubling to 5 min, reset after 10 min); images are pulled
  per `imagePullPolicy` with the pod's `imagePullSecrets` (events Pulling/Pulled/Failed,
  ErrImagePull then ImagePullBackOff with its own back-off). Each start removes the pod's
  older runs of that container but the newest (kept for `lastState` and its log). Then the
  status is computed (see `podstatus`) and written through the status subresource when it
  differs from what was last written.
- **terminal** (the pod reached Succeeded or Failed): nothing is restarted; its containers,
  cgroup, network (address and link, its IPs stay in its status), network namespace and volumes
  are removed; its logs stay until the pod is deleted.
- **terminating** (`deletionTimestamp` set, or the pod vanished from the API): probing stops;
  every container runs its preStop hook, then gets SIGTERM, then SIGKILL, all within the grace
  period (`deletionGracePeriodSeconds`; what the hook leaves, at least 2 s, as upstream's
  killContainer), main containers before sidecars; the final status is written (Succeeded or
  Failed from the exit codes); then **terminated**: containers, cgroup, the pod's network (its
  address and link), network namespace, volumes, pod directory and log directory are removed, and the pod object is deleted with
  gracePeriodSeconds=0 and a uid precondition (so a new pod of the same name is never hit).

Adoption. At boot the runtime lists the containers that outlived the last process; once the
informer has synced they are matched to the node's pods by the pod UID in their annotations and
handed to the pods' workers: running ones are left running (their restart count is their
attempt number, kept in the bundle's annotations; their probes start over, so started and
ready are probed again), exited ones count as exits (restarted per policy). The pod network
is told which pods live (`restore`: it releases what deleted pods held); containers, cgroups,
namespaces and directories of pods that no longer exist are swept.

Container ids are random 64-hex strings, as containerd's; the log of attempt n of container c
is `<pod-log-dir>/<ns>_<pod>_<uid>/<c>/<n>.log`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from edgekube._cogs import clock as clock_mod
from edgekube._cogs import resolvconf
from edgekube.api import errors
from edgekube.api import metrics as metrics_mod
from edgekube.api.registry import rest
from edgekube.client import events as events_mod
from edgekube.client import local
from edgekube.kubelet import (
    actions,
    envvars,
    lifecycle,
    podstatus,
    probes,
    sandbox,
    staticpods,
    volumes,
)
from edgekube.kubelet import backoff as backoff_mod
from edgekube.kubelet import images as images_mod
from edgekube.kubelet import network as network_mod
from edgekube.kubelet import tokens as tokens_mod
from edgekube.kubelet.runtime import bundle as bundle_mod
from edgekube.kubelet.runtime import cgroups as cgroups_mod
from edgekube.kubelet.runtime import containers as containers_mod
from edgekube.kubelet.runtime import runc as runc_mod

log = logging.getLogger(__name__)
JSON = dict[str, Any]

RESYNC_SECONDS = 60.0
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0)
MIN_GRACE_SECONDS = 2.0
MAX_MESSAGE = 4096
FALLBACK_LINES = 80
FALLBACK_BYTES = 2048
TERMINAL = ("Succeeded", "Failed")
FINISHED_REMEMBERED = 10000
PULL_RETRY_SECONDS = 10.0
CONFIG_RETRY_SECONDS = 10.0
HOOK_POLL_SECONDS = 0.2  # how often a running postStart hook looks whether its pod is being deleted
# Upstream's activeDeadlineHandler: the pod's status reason and message, and a Normal event.
DEADLINE_REASON = "DeadlineExceeded"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"


@dataclasses.dataclass(frozen=True)
class Settings:
    node_name: str
    pod_log_dir: Path
    cluster_dns: str  # "" when no cluster DNS is served
    cluster_domain: str
    resolv_conf: Path = Path("/etc/resolv.conf")  # the host's, as _cogs/resolvconf.locate picked it


class NodeFacts(Protocol):
    """What workers read about the node (the node agent keeps it current)."""

    @property
    def address(self) -> str: ...

    @property
    def hostname(self) -> str: ...

    @property
    def allocatable(self) -> Mapping[str, str]: ...


@dataclasses.dataclass
class PodState:
    uid: str
    pod: JSON
    gone: bool = False
    finished: bool = False
    containers: dict[str, containers_mod.ContainerStatus] = dataclasses.field(default_factory=dict)
    dirty: set[str] = dataclasses.field(default_factory=set)
    waiting: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    retry_at: dict[str, float] = dataclasses.field(default_factory=dict)  # container -> when to try again (monotonic)
    pull_failed_at: dict[str, float] = dataclasses.field(default_factory=dict)  # image -> last pull failure
    messages: dict[str, str] = dataclasses.field(default_factory=dict)
    volumes: dict[str, volumes.Volume] = dataclasses.field(default_factory=dict)
    volume_error: str = ""
    sandbox_ready: bool = False
    torn_down: bool = False
    netns: str | None = None
    ips: tuple[str, ...] = ()  # from the pod network, IPv4 first; () until it set the pod up
    ipcns: str | None = None
    shm: str | None = None
    pod_cgroup: str = ""
    start_time: str = ""
    last_status: JSON | None = None
    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    wake_in: float | None = None
    task: asyncio.Task[None] | None = None
    errors_in_row: int = 0
    cpu: dict[str, tuple[float, int]] = dataclasses.field(default_factory=dict)
    failure: tuple[str, str] | None = None  # (reason, message) once the kubelet failed the pod itself
    prober: probes.Prober | None = None  # made with the sandbox; closed when the pod stops
    unhealthy: set[str] = dataclasses.field(default_factory=set)  # containers killed for failing a probe
    static: bool = False  # from a manifest file (staticpods), not from the API

    def schedule(self, seconds: float) -> None:
        self.wake_in = seconds if self.wake_in is None else min(self.wake_in, seconds)

    @property
    def meta(self) -> JSON:
        m = self.pod.get("metadata")
        return m if isinstance(m, dict) else {}

    @property
    def spec(self) -> JSON:
        s = self.pod.get("spec")
        return s if isinstance(s, dict) else {}

    @property
    def name(self) -> str:
        return f"{self.meta.get('namespace')}/{self.meta.get('name')}"

    def by_name(self) -> dict[str, list[containers_mod.ContainerStatus]]:
        out: dict[str, list[containers_mod.ContainerStatus]] = {}
        for cs in self.containers.values():
            out.setdefault(cs.name, []).append(cs)
        for runs in out.values():
            runs.sort(key=lambda c: (c.attempt, c.created_at), reverse=True)
        return out


class _Gone(Exception):
    """The pod of that name is another pod now (or no longer there)."""


class PodManager:
    def __init__(self, *, client: local.LocalClient, events: events_mod.Recorder, runtime: containers_mod.Runtime,
                 images: images_mod.ImageStore, layout: sandbox.Layout, clock: clock_mod.Clock,
                 settings: Settings, node: NodeFacts, metrics: metrics_mod.MetricsStore,
                 network: network_mod.PodNetwork | None = None) -> None:
        self._client = client
        self.network: network_mod.PodNetwork = network if network is not None else network_mod.Loopback()
        self._events = events
        self.runtime = runtime
        self.images = images
        self.layout = layout
        self._clock = clock
        self.settings = settings
        self.node = node
        self.metrics = metrics
        self.tokens = tokens_mod.TokenManager(client, clock=clock)  # projected service account tokens
        self.crash_backoff = backoff_mod.Backoff(clock=clock, initial=10.0, maximum=300.0)
        self.image_backoff = backoff_mod.Backoff(clock=clock, initial=10.0, maximum=300.0)
        self.pods: dict[str, PodState] = {}
        # Pods whose workers finished (deleted): late events about them are ignored.
        self._finished: dict[str, None] = {}
        self._cid_uid: dict[str, str] = {}
        self._started = False
        self.images_ready = asyncio.Event()
        self.adopted: list[containers_mod.ContainerStatus] = []
        self._host_hosts = ""
        self._host_resolv = ""

    # --- sources ----------------------------------------------------------------------------

    def _mine(self, pod: JSON) -> bool:
        """API pods bound to this node; a mirror pod stands for a static pod, run from its file."""
        return bool((pod.get("spec") or {}).get("nodeName") == self.settings.node_name) and not staticpods.is_mirror(pod)

    def on_add(self, pod: JSON) -> None:
        if self._mine(pod):
            self.update(pod)

    def on_update(self, old: JSON, new: JSON) -> None:
        if self._mine(new):
            self.update(new)

    def on_delete(self, pod: JSON) -> None:
        if not self._mine(pod):
            return
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        st = self.pods.get(uid)
        if st is not None and not st.finished:
            st.gone = True
            st.pod = pod
            st.wake.set()

    def update(self, pod: JSON) -> None:
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        if not uid or uid in self._finished:
            return
        st = self.pods.get(uid)
        if st is None:
            st = self.pods[uid] = PodState(uid=uid, pod=pod)
        elif st.finished:
            return
        else:
            # A change of the status alone (most often the worker's own write) is taken in
            # without a pass, as upstream's pod config does, unless it moved one of the pod's
            # readiness gates (upstream's HandlePodReconcile): Ready follows them.
            wanted = _desired(st.pod) != _desired(pod) or podstatus.gates(st.pod) != podstatus.gates(pod)
            st.pod = pod
            if not wanted:
                return
        if self._started:
            self._ensure_worker(st)
        st.wake.set()

    def config_changed(self, kind: str, namespace: str, name: str) -> None:
        """A ConfigMap or Secret changed: sync the pods that use it now (their volumes get the
        new payload, a container waiting for a missing key starts) instead of at their next
        resync, which is all upstream's kubelet does."""
        for st in self.pods.values():
            if not st.finished and st.meta.get("namespace") == namespace and name in _references(st.spec, kind):
                st.wake.set()

    def on_exit(self, cid: str) -> None:
        """The runtime saw a container's init exit (called on the loop)."""
        uid = self._cid_uid.get(cid)
        st = self.pods.get(uid) if uid else None
        if st is not None:
            st.dirty.add(cid)
            st.wake.set()

    # --- static pods (the file source) ------------------------------------------------------

    def add_static(self, pod: JSON) -> None:
        """Run a static pod; one that stopped (its file removed) may come back with the same uid.
        Its spec never changes: an edited file is a new uid."""
        uid = str(pod["metadata"]["uid"])
        if uid in self.pods:
            return
        self._finished.pop(uid, None)
        st = self.pods[uid] = PodState(uid=uid, pod=pod, static=True)
        if self._started:
            self._ensure_worker(st)
        st.wake.set()

    def remove_static(self, uid: str) -> None:
        """Stop a static pod whose file is gone, as a deleted pod (its own grace period)."""
        st = self.pods.get(uid)
        if st is None or not st.static or st.finished or st.meta.get("deletionTimestamp"):
            return
        st.pod = {**st.pod, "metadata": {**st.meta, "deletionTimestamp": clock_mod.rfc3339(self._clock.now())}}
        st.wake.set()

    def resend_status(self, uid: str) -> None:
        """A new mirror pod stands for this static pod: write the status there again."""
        st = self.pods.get(uid)
        if st is not None and st.static and not st.finished:
            st.last_status = None
            st.wake.set()

    def static_uids(self) -> set[str]:
        """The static pods with a worker, running or stopping."""
        return {uid for uid, st in self.pods.items() if st.static}

    # --- the manager's own task -------------------------------------------------------------

    async def run(self, *, synced: asyncio.Event) -> None:
        """Wait for the pod informer, adopt and sweep, then start a worker per pod; then keep
        the burstable QoS parent's shares up to date."""
        await synced.wait()
        await self._adopt_and_sweep()
        self._started = True
        for st in list(self.pods.values()):
            self._ensure_worker(st)
        qos_of: frozenset[str] | None = None
        try:
            while True:
                live = frozenset(uid for uid, st in self.pods.items() if not st.finished)
                if live != qos_of:
                    qos_of = live
                    try:
                        await self.runtime.update_qos([st.pod for st in self.pods.values() if not st.finished])
                    except OSError as exc:
                        log.warning("cannot update the burstable cgroup's cpu shares: %s", exc)
                self.crash_backoff.gc()
                self.image_backoff.gc()
                await asyncio.sleep(10)
        finally:
            await self.stop_workers()

    async def stop_workers(self) -> None:
        tasks = [st.task for st in self.pods.values() if st.task is not None and not st.task.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(st.prober.close() for st in self.pods.values() if st.prober is not None))

    async def _adopt_and_sweep(self) -> None:
        here = {uid for uid, st in self.pods.items()}
        self._host_hosts, self._host_resolv = await asyncio.to_thread(_host_files, self.settings.resolv_conf)
        for cs in self.adopted:
            st = self.pods.get(cs.pod_uid)
            if st is None:
                continue
            st.containers[cs.id] = cs
            self._cid_uid[cs.id] = cs.pod_uid
            if cs.state == containers_mod.EXITED:
                st.dirty.add(cs.id)
        known = {cs.id for cs in self.adopted if cs.pod_uid in here}
        # Before the sandboxes of deleted pods are swept: what the network holds for them goes.
        try:
            await self.network.restore({uid: (str(st.meta.get("namespace") or ""), str(st.meta.get("name") or ""),
                                              self.layout.netns(uid)) for uid, st in self.pods.items()})
        except OSError as exc:
            log.warning("the pod network could not release what deleted pods held: %s", exc)
        # What cannot be swept now (a busy mount, a cgroup that will not go) is left for the
        # next boot: it must not keep the pods that do exist from running.
        try:
            report = await self.runtime.sweep(known_containers=known, known_pods=here)
            if report.containers or report.bundles or report.cgroups:
                log.info("swept what no pod owns any more: containers %s, bundles %s, cgroups %s",
                         report.containers, report.bundles, report.cgroups)
        except (OSError, runc_mod.RuncError) as exc:
            log.warning("the sweep of containers no pod owns failed: %s", exc)
        stale = (await asyncio.to_thread(self.layout.known_uids) | {cs.pod_uid for cs in self.adopted}) - here
        stale.discard("")
        for uid in stale:
            try:
                await asyncio.to_thread(self._remove_sandbox_files, uid)
            except OSError as exc:
                log.warning("cannot remove the sandbox of deleted pod %s: %s", uid, exc)
        if stale:
            await asyncio.to_thread(self._remove_log_dirs, stale)
            log.info("removed what was left of pods deleted meanwhile: %s", ", ".join(sorted(stale)))
        running = sum(1 for cs in self.adopted if cs.pod_uid in here and cs.state == containers_mod.RUNNING)
        if self.adopted:
            log.info("adopted %d containers (%d running) of %d pods", len(known), running,
                     len({cs.pod_uid for cs in self.adopted if cs.pod_uid in here}))

    def _ensure_worker(self, st: PodState) -> None:
        if st.task is None or st.task.done():
            if st.finished:
                return
            st.task = asyncio.create_task(self._worker(st), name=f"pod-worker/{st.name}")

    # --- the worker -------------------------------------------------------------------------

    async def _worker(self, st: PodState) -> None:
        while not st.finished:
            st.wake.clear()
            st.wake_in = None
            try:
                if st.gone or st.meta.get("deletionTimestamp"):
                    await self._terminate(st)
                else:
                    await self._sync(st)
                st.errors_in_row = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = RETRY_SECONDS[min(st.errors_in_row, len(RETRY_SECONDS) - 1)]
                st.errors_in_row += 1
                log.warning("pod %s: sync failed (retrying in %.0fs): %s", st.name, delay, exc,
                            exc_info=not isinstance(exc, OSError | errors.APIError | runc_mod.RuncError))
                st.schedule(delay)
            if st.finished:
                break
            timeout = st.wake_in if st.wake_in is not None else RESYNC_SECONDS
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, timeout)):
                    await st.wake.wait()
        self.pods.pop(st.uid, None)
        self.tokens.forget(st.uid)
        self._finished[st.uid] = None
        while len(self._finished) > FINISHED_REMEMBERED:
            del self._finished[next(iter(self._finished))]

    # --- sync -------------------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def _ref(self, st: PodState) -> JSON:
        m = st.meta
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {k: m.get(k) for k in ("name", "namespace", "uid", "resourceVersion") if m.get(k)}}

    def pod_ips(self, st: PodState) -> tuple[str, ...]:
        """The pod's addresses, IPv4 first: the node's for hostNetwork pods, else the pod
        network's (none before it set the pod up)."""
        return (self.node.address,) if st.spec.get("hostNetwork") else st.ips

    def pod_ip(self, st: PodState) -> str:
        ips = self.pod_ips(st)
        return ips[0] if ips else network_mod.LOOPBACK_IP

    async def _refresh(self, st: PodState) -> None:
        for cid in list(st.dirty):
            st.dirty.discard(cid)
            try:
                cs = await self.runtime.status(cid)
            except runc_mod.NotFoundError:
                st.containers.pop(cid, None)
                continue
            st.containers[cid] = cs
            if cs.state == containers_mod.EXITED and cid not in st.messages:
                st.messages[cid] = await asyncio.to_thread(self._termination_message, st, cs)

    async def _sync(self, st: PodState) -> None:
        await self._refresh(st)
        if st.torn_down or (st.pod.get("status") or {}).get("phase") in TERMINAL:
            await self._tear_down_terminal(st)
            return
        if st.failure is None and self._past_deadline(st):
            st.failure = (DEADLINE_REASON, DEADLINE_MESSAGE)
            self._events.normal(self._ref(st), DEADLINE_REASON, DEADLINE_MESSAGE)
        if st.failure is not None:
            await self._fail(st)
            return
        await self.images_ready.wait()
        await self._ensure_sandbox(st)
        try:
            pod_tokens = await self._tokens_for(st)
            st.volumes = await asyncio.to_thread(
                volumes.setup, st.pod, volumes_dir=self.layout.volumes(st.uid), get_configmap=self._get_configmap,
                get_secret=self._get_secret, allocatable=self.node.allocatable, known=st.volumes, tokens=pod_tokens)
            st.volume_error = ""
        except (volumes.VolumeError, OSError) as exc:
            if str(exc) != st.volume_error:
                self._events.warning(self._ref(st), "FailedMount", str(exc))
            st.volume_error = str(exc)
            st.schedule(10.0)
            # A pod whose volumes were set up before (a ConfigMap it mounts was deleted, say)
            # keeps being synced with what it has, as upstream: probes, restarts, status.
            if not st.volumes and not any(cs.state == containers_mod.RUNNING for cs in st.containers.values()):
                await self._write_status(st)
                return
        if st.last_status is None:
            await self._write_status(st)  # ContainerCreating while images are pulled
        prober = self._prober(st)
        await self._kill_unhealthy(st, prober)
        await self._start_containers(st)
        await prober.sync(self._probed(st))
        status = await self._write_status(st)
        if status is not None and status.get("phase") in TERMINAL:
            await self._tear_down_terminal(st)

    async def _tokens_for(self, st: PodState) -> dict[tuple[str, int], str]:
        """The service account tokens of the pod's projected volumes (kubelet/tokens.py), and a
        wake-up when the next is due for rotation."""
        out: dict[tuple[str, int], str] = {}
        for audience, seconds in tokens_mod.sources(st.pod):
            try:
                out[(audience, seconds)] = await self.tokens.get(st.pod, audience=audience, expiration_seconds=seconds)
            except errors.APIError as exc:
                raise volumes.VolumeError(f"failed to fetch token: {exc.message}") from None
        due = self.tokens.refresh_in(st.uid)
        if due is not None:
            st.schedule(due)
        return out

    def _past_deadline(self, st: PodState) -> bool:
        """Whether the pod ran past its activeDeadlineSeconds (counted from its startTime, as
        upstream); if not, the worker is woken when it will have."""
        limit = st.spec.get("activeDeadlineSeconds")
        if not isinstance(limit, int) or isinstance(limit, bool):
            return False
        started = st.start_time or str((st.pod.get("status") or {}).get("startTime") or "")
        if not started:  # the sandbox, made next, sets the start time to now
            st.schedule(limit)
            return False
        try:
            # At most `limit` ahead: a wall clock set back (by years, at a board's first NTP sync)
            # must not put the deadline off by as much.
            left = min(clock_mod.parse_rfc3339(started).timestamp() + limit - self._now(), float(limit))
        except ValueError:
            return False
        if left > 0:
            st.schedule(left)
            return False
        return True

    async def _fail(self, st: PodState) -> None:
        """End a pod the kubelet itself failed: its containers stopped within the pod's grace
        period, phase Failed with the reason, then torn down like any finished pod."""
        grace = max(float(st.spec.get("terminationGracePeriodSeconds", 30) or 0), MIN_GRACE_SECONDS)
        await self._stop_all(st, grace)
        await self._write_status(st, terminal=True)
        await self._tear_down_terminal(st)

    async def _ensure_sandbox(self, st: PodState) -> None:
        host_network = bool(st.spec.get("hostNetwork"))
        if not st.pod_cgroup:
            st.pod_cgroup = await self.runtime.ensure_pod(st.pod)
        if not st.start_time:
            st.start_time = str((st.pod.get("status") or {}).get("startTime") or clock_mod.rfc3339(self._clock.now()))
        hostname = self.node.hostname if host_network else bundle_mod.pod_hostname(st.pod)
        resolv, dns_warnings = sandbox.resolv_conf(st.pod, cluster_dns=self.settings.cluster_dns,
                                              cluster_domain=self.settings.cluster_domain, host_resolv=self._host_resolv)
        pod_dir = self.layout.pod_dir(st.uid)
        netns_path = None if host_network else self.layout.netns(st.uid)
        private_ipc = not st.spec.get("hostIPC")
        ipcns_path, shm_path = self.layout.ipcns(st.uid), self.layout.shm(st.uid)

        def namespaces() -> bool:
            """Returns whether the network namespace was made now."""
            pod_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
            made = False
            if netns_path is not None and not sandbox.is_mounted(netns_path):
                sandbox.create_netns(netns_path)
                made = True
            if private_ipc:
                sandbox.create_ipcns(ipcns_path)
                sandbox.mount_shm(shm_path)
            return made

        def files(hosts: str) -> None:
            sandbox.write_if_changed(pod_dir / "etc-hosts", hosts)
            sandbox.write_if_changed(pod_dir / "etc-hostname", hostname + "\n")
            sandbox.write_if_changed(pod_dir / "resolv.conf", resolv)

        first = not st.sandbox_ready
        try:
            if await asyncio.to_thread(namespaces):
                st.ips = ()  # a new namespace (a first start, a node rebooted): nothing in it yet
            # The pod on the network once per process (after a restart the network finds what it
            # set up before and answers at once): its addresses go into /etc/hosts and its status.
            if netns_path is not None and not st.ips:
                meta = st.meta
                st.ips = await self.network.setup(st.uid, namespace=str(meta.get("namespace") or ""),
                                                  name=str(meta.get("name") or ""), netns=netns_path)
            hosts = sandbox.hosts_file(st.pod, pod_ip=self.pod_ip(st), hostname=hostname,
                                       cluster_domain=self.settings.cluster_domain, host_hosts=self._host_hosts)
            await asyncio.to_thread(files, hosts)
        except OSError as exc:
            self._events.warning(self._ref(st), "FailedCreatePodSandBox", f"Failed to create pod sandbox: {exc}")
            raise
        st.netns = str(netns_path) if netns_path is not None else None
        # hostIPC: the host's IPC namespace and its /dev/shm too (containerd's behaviour).
        st.ipcns, st.shm = (str(ipcns_path), str(shm_path)) if private_ipc else (None, "/dev/shm")
        st.sandbox_ready = True
        for reason, message in dns_warnings if first else []:
            self._events.warning(self._ref(st), reason, message)

    def _remove_log_dirs(self, uids: set[str]) -> None:
        """The log directories (`<ns>_<pod>_<uid>`) of pods this kubelet ran that are gone."""
        with contextlib.suppress(FileNotFoundError):
            for e in os.scandir(self.settings.pod_log_dir):
                if e.is_dir(follow_symlinks=False) and e.name.rpartition("_")[2] in uids:
                    shutil.rmtree(e.path, ignore_errors=True)

    def _remove_sandbox_files(self, uid: str) -> None:
        with contextlib.suppress(OSError):
            volumes.teardown(self.layout.volumes(uid))
        sandbox.remove_netns(self.layout.netns(uid))
        sandbox.remove_pod_dir(self.layout.pod_dir(uid))

    # --- containers -------------------------------------------------------------------------

    def _should_restart(self, st: PodState, container: Mapping[str, Any], latest: containers_mod.ContainerStatus,
                        *, init: bool) -> bool:
        if latest.state != containers_mod.EXITED:
            return False
        if init and podstatus.is_sidecar(container):
            return True
        policy = st.spec.get("restartPolicy") or "Always"
        if init:
            return latest.exit_code != 0 and policy != "Never"
        if policy == "Always" or (policy == "OnFailure" and latest.id in st.unhealthy):
            return True  # killed for a failed probe: restarted whatever its exit code, as upstream
        if policy == "OnFailure":
            return latest.exit_code != 0
        return False

    async def _start_containers(self, st: PodState) -> None:
        runs = st.by_name()
        # Upstream's podHasInitialized: once a regular container has run, the init sequence is
        # over for good; sidecars are then restarted on their own and hold nothing back.
        initialized = any(runs.get(str(c.get("name"))) for c in st.spec.get("containers") or [])
        for c in st.spec.get("initContainers") or []:
            name = str(c.get("name"))
            latest = _newest(runs.get(name))
            sidecar = podstatus.is_sidecar(c)
            running = latest is not None and latest.state in (containers_mod.RUNNING, containers_mod.PAUSED)
            if initialized:
                if sidecar and not running:
                    await self._start(st, c, latest, init=True)  # through its back-off, as any restart
                continue
            if running:
                assert latest is not None
                if sidecar and self._probe_state(st, c, latest)[0]:
                    continue
                return  # wait for it to complete (a sidecar: to start, past its startup probe)
            if latest is not None and latest.state == containers_mod.EXITED and not sidecar:
                if latest.exit_code == 0:
                    continue
                if not self._should_restart(st, c, latest, init=True):
                    return  # failed for good: the pod fails
            if not await self._start(st, c, latest, init=True):
                return
            cs = st.containers.get(self._newest_id(st, name))
            if not sidecar or cs is None or not self._probe_state(st, c, cs)[0]:
                return  # the next one waits for this one to complete (a sidecar: to start)
        for c in st.spec.get("containers") or []:
            if st.gone or st.meta.get("deletionTimestamp"):
                return  # deleted meanwhile (a postStart hook may have waited): start nothing more
            name = str(c.get("name"))
            latest = _newest(runs.get(name))
            if latest is not None and not self._should_restart(st, c, latest, init=False) \
                    and latest.state != containers_mod.CREATED:
                continue
            await self._start(st, c, latest, init=False)

    @staticmethod
    def _newest_id(st: PodState, name: str) -> str:
        latest = _newest(st.by_name().get(name))
        return latest.id if latest is not None else ""

    def _key(self, st: PodState, name: str) -> str:
        return f"{st.uid}/{name}"

    def _pod_text(self, st: PodState) -> str:
        return f"{st.meta.get('name')}_{st.meta.get('namespace')}({st.uid})"

    async def _start(self, st: PodState, c: Mapping[str, Any], latest: containers_mod.ContainerStatus | None, *,
                     init: bool) -> bool:
        name = str(c.get("name"))
        key = self._key(st, name)
        now = self._now()
        if latest is not None and latest.state == containers_mod.EXITED:
            t = latest.finished_at.timestamp() if latest.finished_at is not None else now
            if self.crash_backoff.in_backoff_since(key, t):
                window = self.crash_backoff.window(key)
                st.waiting[name] = ("CrashLoopBackOff", f"back-off {_duration(window)} restarting failed "
                                    f"container={name} pod={self._pod_text(st)}")
                self._events.warning(self._ref(st), "BackOff",
                                     f"Back-off restarting failed container {name} in pod {self._pod_text(st)}")
                st.schedule(self.crash_backoff.remaining(key, t) + 0.05)
                return False
        retry_at = st.retry_at.get(name)
        if retry_at is not None and retry_at > self._clock.monotonic():
            st.schedule(retry_at - self._clock.monotonic() + 0.05)
            return False
        info = await self._image(st, c)
        if info is None:
            return False
        attempt = self._next_attempt(st, name, latest)
        term_log = self.layout.termination_log(st.uid, name, attempt)
        try:
            env = envvars.resolve(st.pod, c, get_configmap=self._get_configmap, get_secret=self._get_secret,
                                  services=self._services(st), allocatable=self.node.allocatable)
            await asyncio.to_thread(_touch, term_log)
            mounts = self._mounts(st, c, env=dict(env), attempt=attempt)
        except (envvars.EnvError, volumes.VolumeError, OSError) as exc:
            self._start_failed(st, name, "CreateContainerConfigError", str(exc))
            return False
        if latest is not None and latest.state == containers_mod.EXITED:
            self.crash_backoff.next(key, latest.finished_at.timestamp() if latest.finished_at else now)
        await self._remove_old_runs(st, name, keep=latest if latest is not None and latest.state == containers_mod.EXITED
                                    else None)
        cid = secrets.token_hex(32)
        log_path = self.log_dir(st) / name / f"{attempt}.log"
        wanted_oom, oom = self.runtime.oom_score_adj(st.pod, c)
        spec = containers_mod.ContainerSpec(
            id=cid, pod=st.pod, container=c, image=_image_config(info), lowerdirs=tuple(self.images.layers(info)),
            log_path=log_path, pod_cgroup=st.pod_cgroup, netns=st.netns, ipcns=st.ipcns, shm=st.shm,
            mounts=tuple(mounts), env=tuple(env),
            attempt=attempt, annotations={podstatus.ANNOTATION_IMAGE_ID: info.image_ref,
                                          podstatus.ANNOTATION_IMAGE: str(c.get("image") or "")},
            oom_score_adj=oom)
        self._cid_uid[cid] = st.uid
        try:
            st.containers[cid] = await self.runtime.create(spec)
        except bundle_mod.BundleError as exc:
            self._cid_uid.pop(cid, None)
            self._start_failed(st, name, "CreateContainerConfigError", str(exc))
            return False
        except (runc_mod.RuncError, OSError) as exc:
            self._cid_uid.pop(cid, None)
            self._start_failed(st, name, "CreateContainerError", str(exc))
            return False
        self._events.normal(self._ref(st), "Created", f"Created container {name}")
        if oom != wanted_oom:
            self._events.warning(self._ref(st), "OOMScoreAdjustClamped",
                                 f"container {name}: oom_score_adj {wanted_oom} ({cgroups_mod.qos_class(st.pod)}) needs "
                                 f"CAP_SYS_RESOURCE, which edgekube lacks; set to {oom}, edgekube's own")
        try:
            st.containers[cid] = await self.runtime.start(cid)
        except runc_mod.RuncError as exc:
            with contextlib.suppress(runc_mod.RuncError, OSError):
                await self.runtime.remove(cid)
            st.containers.pop(cid, None)
            self._cid_uid.pop(cid, None)
            self._start_failed(st, name, "RunContainerError", str(exc))
            return False
        if st.containers[cid].state == containers_mod.EXITED:
            st.dirty.add(cid)
        self._events.normal(self._ref(st), "Started", f"Started container {name}")
        st.waiting.pop(name, None)
        st.retry_at.pop(name, None)
        hook = (c.get("lifecycle") or {}).get("postStart")
        if isinstance(hook, Mapping) and st.containers[cid].state == containers_mod.RUNNING:
            return await self._post_start(st, c, st.containers[cid], hook)
        return True

    def _start_failed(self, st: PodState, name: str, reason: str, message: str) -> None:
        """The container could not be made or started. A configuration error (a missing
        ConfigMap, say) is tried again after upstream's worker back-off period of 10 s; a
        failure of the runtime goes through the container's CrashLoopBackOff back-off."""
        st.waiting[name] = (reason, message)
        self._events.warning(self._ref(st), "Failed", f"Error: {message}")
        now = self._now()
        if reason == "CreateContainerConfigError":
            delay = CONFIG_RETRY_SECONDS
        else:
            key = self._key(st, name)
            self.crash_backoff.next(key, now)
            delay = self.crash_backoff.remaining(key, now)
        st.retry_at[name] = self._clock.monotonic() + delay
        st.schedule(delay + 0.05)

    def _next_attempt(self, st: PodState, name: str, latest: containers_mod.ContainerStatus | None) -> int:
        if latest is not None:
            return latest.attempt + (0 if latest.state == containers_mod.CREATED else 1)
        # No container left of it (removed while the pod lived, or a restart lost them): go on
        # from what the API last showed, so restartCount never goes back.
        for s in [*((st.pod.get("status") or {}).get("containerStatuses") or []),
                  *((st.pod.get("status") or {}).get("initContainerStatuses") or [])]:
            if isinstance(s, Mapping) and s.get("name") == name:
                # With its container's id: that run was attempt restartCount. Without (a run
                # lost in a reboot, already counted by `podstatus`): the next is restartCount.
                count = int(s.get("restartCount") or 0)
                return count + 1 if s.get("containerID") else count
        return 0

    async def _remove_old_runs(self, st: PodState, name: str, *, keep: containers_mod.ContainerStatus | None) -> None:
        for cs in list(st.containers.values()):
            if cs.name == name and (keep is None or cs.id != keep.id):
                await self._remove_container(st, cs)

    async def _remove_container(self, st: PodState, cs: containers_mod.ContainerStatus) -> None:
        await self.runtime.remove(cs.id)
        st.containers.pop(cs.id, None)
        st.messages.pop(cs.id, None)
        st.unhealthy.discard(cs.id)
        st.cpu.pop(cs.id, None)
        self._cid_uid.pop(cs.id, None)
        older = Path(cs.log_path) if cs.log_path else None

        def files() -> None:
            with contextlib.suppress(OSError):
                self.layout.termination_log(st.uid, cs.name, cs.attempt).unlink()
            # Logs of runs before the one kept for --previous go with their containers (their
            # rotated files, `<n>.log.<stamp>[.gz]`, too).
            if older is not None and older.parent.is_dir():
                for p in older.parent.iterdir():
                    stem, sep, _ = p.name.partition(".log")
                    if sep and stem.isdigit() and int(stem) < cs.attempt:
                        with contextlib.suppress(OSError):
                            p.unlink()

        await asyncio.to_thread(files)

    def _mounts(self, st: PodState, c: Mapping[str, Any], *, env: Mapping[str, str],
                attempt: int) -> list[bundle_mod.Mount]:
        mounts = volumes.container_mounts(c, st.volumes, env)
        taken = {m.destination.rstrip("/") for m in mounts}
        ro = bool((c.get("securityContext") or {}).get("readOnlyRootFilesystem"))
        pod_dir = self.layout.pod_dir(st.uid)
        extra = [("/etc/hosts", pod_dir / "etc-hosts"), ("/etc/hostname", pod_dir / "etc-hostname"),
                 ("/etc/resolv.conf", pod_dir / "resolv.conf")]
        term_path = str(c.get("terminationMessagePath") or "/dev/termination-log")
        extra.append((term_path, self.layout.termination_log(st.uid, str(c.get("name")), attempt)))
        for dest, src in extra:
            if dest not in taken:
                mounts.append(bundle_mod.Mount(destination=dest, source=str(src), readonly=ro and dest != term_path))
        return mounts

    def _termination_message(self, st: PodState, cs: containers_mod.ContainerStatus) -> str:
        try:
            with open(self.layout.termination_log(st.uid, cs.name, cs.attempt), "rb") as f:
                text = f.read(MAX_MESSAGE).decode(errors="replace")
        except OSError:
            text = ""
        if text or not cs.exit_code:
            return text
        c: JSON = next((c for c in [*(st.spec.get("containers") or []), *(st.spec.get("initContainers") or [])]
                        if c.get("name") == cs.name), {})
        if c.get("terminationMessagePolicy") != "FallbackToLogsOnError" or not cs.log_path:
            return ""
        return _log_tail(Path(cs.log_path))

    # --- probes and lifecycle hooks ---------------------------------------------------------

    def _prober(self, st: PodState) -> probes.Prober:
        if st.prober is None:
            def event(kind: str, reason: str, message: str) -> None:
                (self._events.warning if kind == "Warning" else self._events.normal)(self._ref(st), reason, message)

            st.prober = probes.Prober(pod=st.name, runtime=self.runtime, pod_ip=self.pod_ip(st),
                                      netns=Path(st.netns) if st.netns else None, clock=self._clock,
                                      on_change=st.wake.set, on_event=event)
        return st.prober

    def _probed(self, st: PodState) -> list[tuple[Mapping[str, Any], containers_mod.ContainerStatus | None]]:
        """The containers that may have probes (sidecars and main containers), with their newest runs."""
        runs = st.by_name()
        return [(c, _newest(runs.get(str(c.get("name")))))
                for c in [*(c for c in st.spec.get("initContainers") or [] if podstatus.is_sidecar(c)),
                          *(st.spec.get("containers") or [])]]

    def _probe_state(self, st: PodState, c: Mapping[str, Any], cs: containers_mod.ContainerStatus) -> tuple[bool, bool]:
        """(started, ready) of a container's run as its probes say (before the prober exists: only
        a container without startup and readiness probes is either)."""
        if st.prober is None:
            return not isinstance(c.get("startupProbe"), Mapping), not (
                isinstance(c.get("startupProbe"), Mapping) or isinstance(c.get("readinessProbe"), Mapping))
        return st.prober.started(c, cs.id), st.prober.ready(c, cs.id)

    def _target(self, st: PodState, c: Mapping[str, Any], cs: containers_mod.ContainerStatus) -> actions.Target:
        return actions.Target(cid=cs.id, container=c, pod_ip=self.pod_ip(st),
                              netns=Path(st.netns) if st.netns else None)

    def _grace(self, st: PodState, probe: probes.Spec | None = None) -> float:
        """Upstream's setTerminationGracePeriod: the deletion's grace period, else the failed
        probe's, else the pod's."""
        deletion = st.meta.get("deletionGracePeriodSeconds")
        if isinstance(deletion, int):
            return float(deletion)
        if probe is not None and probe.grace is not None:
            return float(probe.grace)
        return float(st.spec.get("terminationGracePeriodSeconds", 30) or 0)

    async def _kill_unhealthy(self, st: PodState, prober: probes.Prober) -> None:
        """Kill the containers that failed their liveness or startup probe (preStop hook first,
        in the probe's or the pod's grace period); `_start_containers` then restarts them as
        restartPolicy says, through the CrashLoopBackOff back-off, as upstream's
        computePodActions and SyncPod do."""
        restarts = (st.spec.get("restartPolicy") or "Always") != "Never"
        sidecars = {str(c.get("name")) for c in st.spec.get("initContainers") or [] if podstatus.is_sidecar(c)}
        for c, cs in self._probed(st):
            if cs is None or cs.state != containers_mod.RUNNING:
                continue
            failed = prober.failure(c, cs.id)
            if failed is None:
                continue
            what = "liveness" if failed.kind == probes.LIVENESS else "startup"
            message = f"Container {cs.name} failed {what} probe" + (
                ", will be restarted" if restarts or cs.name in sidecars else "")
            st.unhealthy.add(cs.id)
            await self._stop_container(st, cs, grace=self._grace(st, failed), message=message)
            st.dirty.add(cs.id)
        await self._refresh(st)

    async def _stop_container(self, st: PodState, cs: containers_mod.ContainerStatus, *, grace: float,
                              message: str) -> None:
        """Upstream's killContainer: the Killing event, the preStop hook (of a running container,
        with a grace period to spend) within the grace period, then SIGTERM, and SIGKILL after
        what is left of it, 2 s at least."""
        self._events.normal(self._ref(st), "Killing", message)
        c: Mapping[str, Any] = next((c for c in [*(st.spec.get("initContainers") or []),
                                                 *(st.spec.get("containers") or [])] if c.get("name") == cs.name), {})
        hook = (c.get("lifecycle") or {}).get("preStop")
        if isinstance(hook, Mapping) and cs.state == containers_mod.RUNNING and grace > 0:
            loop = asyncio.get_running_loop()
            began = loop.time()
            await self._pre_stop(st, c, cs, hook, grace)
            grace -= loop.time() - began
        try:
            st.containers[cs.id] = await self.runtime.stop(cs.id, grace=max(grace, MIN_GRACE_SECONDS))
        except (runc_mod.RuncError, KeyError, TimeoutError) as exc:
            log.warning("pod %s: stopping container %s: %s", st.name, cs.name, exc)
            st.dirty.add(cs.id)

    async def _pre_stop(self, st: PodState, c: Mapping[str, Any], cs: containers_mod.ContainerStatus,
                        hook: Mapping[str, Any], grace: float) -> None:
        try:
            async with asyncio.timeout(grace):
                failed = await lifecycle.run(hook, self._target(st, c, cs), runtime=self.runtime,
                                             pod=self._pod_text(st))
        except TimeoutError:
            # As upstream: not a failure, the grace period is simply spent.
            log.info("pod %s: the preStop hook of %s did not complete in %.0fs", st.name, cs.name, grace)
            return
        if failed is not None:
            self._events.warning(self._ref(st), "FailedPreStopHook", failed)

    async def _post_start(self, st: PodState, c: Mapping[str, Any], cs: containers_mod.ContainerStatus,
                          hook: Mapping[str, Any]) -> bool:
        """Run the postStart hook before the container counts as started, as upstream's
        startContainer: the worker waits for it (a pod deleted meanwhile stops the wait). A
        failure kills the container (FailedPostStartHook event, waiting reason
        PostStartHookError), to be restarted as restartPolicy says. Returns whether it passed."""
        name = str(c.get("name"))
        hook_task = asyncio.create_task(
            lifecycle.run(hook, self._target(st, c, cs), runtime=self.runtime, pod=self._pod_text(st)),
            name=f"post-start/{st.name}/{name}")
        try:
            while not hook_task.done():
                await asyncio.wait({hook_task}, timeout=HOOK_POLL_SECONDS)
                if st.gone or st.meta.get("deletionTimestamp"):
                    return False  # the pod is stopping: the container with it
        finally:
            if not hook_task.done():
                hook_task.cancel()
            await asyncio.gather(hook_task, return_exceptions=True)
        failed = hook_task.result()
        if failed is None:
            return True
        self._events.warning(self._ref(st), "FailedPostStartHook", failed)
        await self._stop_container(st, cs, grace=self._grace(st), message="FailedPostStartHook")
        st.dirty.add(cs.id)
        st.waiting[name] = ("PostStartHookError", failed)
        return False

    # --- images -----------------------------------------------------------------------------

    async def _image(self, st: PodState, c: Mapping[str, Any]) -> images_mod.ImageInfo | None:
        name = str(c.get("name"))
        image = str(c.get("image") or "")
        key = f"{st.uid}/image/{image}"
        failed = st.pull_failed_at.get(image)
        if failed is not None and self.image_backoff.in_backoff_since(key, failed):
            st.waiting[name] = ("ImagePullBackOff", f'Back-off pulling image "{image}"')
            self._events.normal(self._ref(st), "BackOff", f'Back-off pulling image "{image}"')
            self._events.warning(self._ref(st), "Failed", "Error: ImagePullBackOff")
            st.schedule(min(PULL_RETRY_SECONDS, self.image_backoff.remaining(key, failed) + 0.05))
            return None
        policy = str(c.get("imagePullPolicy") or _default_policy(image))
        pull_secrets = []
        for ref in st.spec.get("imagePullSecrets") or []:
            secret = self._get_secret(str(st.meta.get("namespace")), str((ref or {}).get("name") or ""))
            if secret is not None:
                pull_secrets.append(secret)
        pod_ref = self._ref(st)

        def emit(e: images_mod.PullEvent) -> None:
            if e.reason == "Progress":
                return
            (self._events.warning if e.type == "Warning" else self._events.normal)(pod_ref, e.reason, e.message)

        if st.waiting.get(name, ("",))[0] in ("ImagePullBackOff", "ErrImagePull"):
            st.waiting[name] = ("ContainerCreating", "")
        try:
            info = await self.images.ensure(image, policy, pull_secrets, on_event=emit)
        except images_mod.ImageError as exc:
            now = self._now()
            st.waiting[name] = (exc.reason, str(exc))
            self.image_backoff.next(key, now)
            st.pull_failed_at[image] = now
            # Tried again after upstream's worker back-off period, not at the window's end: in
            # between the container shows ErrImagePull, then ImagePullBackOff while in the window.
            st.schedule(PULL_RETRY_SECONDS)
            return None
        st.pull_failed_at.pop(image, None)
        return info

    # --- reads of other objects -------------------------------------------------------------

    def _get(self, kind: str, namespace: str, name: str) -> JSON | None:
        try:
            return self._client.get("v1", kind, name=name, namespace=namespace)
        except errors.APIError as exc:
            if exc.code == 404:
                return None
            raise

    def _get_configmap(self, namespace: str, name: str) -> JSON | None:
        return self._get("ConfigMap", namespace, name)

    def _get_secret(self, namespace: str, name: str) -> JSON | None:
        return self._get("Secret", namespace, name)

    def _services(self, st: PodState) -> list[JSON]:
        ns = str(st.meta.get("namespace") or "default")
        out: dict[tuple[str, str], JSON] = {}
        with contextlib.suppress(errors.APIError):
            master = self._client.get("v1", "Service", name="kubernetes", namespace="default")
            out[("default", "kubernetes")] = master
        if st.spec.get("enableServiceLinks", True) is not False:
            with contextlib.suppress(errors.APIError):
                for svc in self._client.list("v1", "Service", namespace=ns).items:
                    out[(ns, str(svc["metadata"]["name"]))] = svc
        return list(out.values())

    # --- status -----------------------------------------------------------------------------

    def compute_status(self, st: PodState, *, terminal: bool = False) -> JSON:
        runs = st.by_name()
        api_status = st.pod.get("status") or {}
        previous = st.last_status or podstatus.ours(api_status)
        old_init = {s.get("name"): s for s in api_status.get("initContainerStatuses") or [] if isinstance(s, Mapping)}
        old_main = {s.get("name"): s for s in api_status.get("containerStatuses") or [] if isinstance(s, Mapping)}
        has_init = bool(st.spec.get("initContainers"))
        default = "PodInitializing" if has_init else "ContainerCreating"
        deleting = bool((st.pod.get("metadata") or {}).get("deletionTimestamp"))

        def one(c: Mapping[str, Any], *, init: bool, old: Mapping[str, Any] | None) -> JSON:
            name = str(c.get("name"))
            r = runs.get(name) or []
            latest = r[0] if r else None
            will = latest is not None and not terminal and self._should_restart(st, c, latest, init=init)
            started, ready = self._probe_state(st, c, latest) if latest is not None else (False, False)
            obs = podstatus.Observed(latest=latest, previous=r[1] if len(r) > 1 else None,
                                     waiting=st.waiting.get(name), messages=st.messages, will_restart=will,
                                     started=started, ready=ready)
            return podstatus.container_status(c, obs, old=old, default_waiting=default, init=init, deleting=deleting)

        init_list = [one(c, init=True, old=old_init.get(c.get("name"))) for c in st.spec.get("initContainers") or []]
        main_list = [one(c, init=False, old=old_main.get(c.get("name"))) for c in st.spec.get("containers") or []]
        init_map = {s["name"]: s for s in init_list}
        main_map = {s["name"]: s for s in main_list}
        phase = "Failed" if st.failure else podstatus.phase(st.pod, init_map, main_map, terminal=terminal)
        now = clock_mod.rfc3339(self._clock.now())
        conds = podstatus.conditions(st.pod, init_map, main_map, pod_phase=phase,
                                     sandbox_ready=st.sandbox_ready and not st.torn_down and not terminal, now=now,
                                     previous=previous.get("conditions") or [])
        ips = self.pod_ips(st) if st.sandbox_ready or st.ips else ()
        out: JSON = {
            "phase": phase, "hostIP": self.node.address, "hostIPs": [{"ip": self.node.address}],
            "startTime": st.start_time or str(api_status.get("startTime") or now),
            "containerStatuses": main_list,
        }
        if ips:
            out["podIP"] = ips[0]
            out["podIPs"] = [{"ip": ip} for ip in ips]
        elif api_status.get("podIP"):
            # Not set up by this process (yet): what was reported stands (a pod deleted while
            # edgekube was down keeps its last addresses in its final status, as upstream).
            out["podIP"] = api_status.get("podIP")
            out["podIPs"] = api_status.get("podIPs") or [{"ip": api_status.get("podIP")}]
        else:
            out["podIP"] = None
            out["podIPs"] = None
        if init_list:
            out["initContainerStatuses"] = init_list
        if st.failure:
            out["reason"], out["message"] = st.failure
        out["conditions"] = sorted(conds, key=lambda c: str(c["type"]))
        return out

    async def _write_status(self, st: PodState, *, terminal: bool = False) -> JSON | None:
        """Write the pod's status when it differs from the last one written. Returns the status
        now in force (None when the pod is gone)."""
        if st.gone:
            return None
        status = self.compute_status(st, terminal=terminal)
        current = podstatus.ours(st.pod.get("status") or {})
        if status == st.last_status or (st.last_status is None and status == current):
            st.last_status = status
            return status
        uid, static = st.uid, st.static

        def mutate(obj: JSON) -> JSON:
            if (staticpods.mirror_of(obj) if static else (obj.get("metadata") or {}).get("uid")) != uid:
                raise _Gone()
            s = obj.setdefault("status", {})
            if s.get("phase") in TERMINAL and status["phase"] not in TERMINAL:
                raise _Gone()  # a finished pod never runs again
            for k, v in status.items():
                if k == "conditions":
                    s["conditions"] = podstatus.merge_conditions(s.get("conditions") or [], v)
                elif v is None:
                    s.pop(k, None)
                else:
                    s[k] = v
            return obj

        ns, name = str(st.meta.get("namespace")), str(st.meta.get("name"))
        try:
            await self._client.patch("v1", "Pod", name=name, namespace=ns, mutate=mutate, subresource="status")
        except (_Gone, errors.APIError) as exc:
            if isinstance(exc, errors.APIError) and exc.code != 404:
                raise
            if not static:
                return None
            # A static pod's status stands without its mirror pod, which gets it once made.
        st.last_status = status
        return status

    # --- terminal, terminating, terminated ----------------------------------------------------

    async def _stop_all(self, st: PodState, grace: float) -> None:
        """Main containers first, then sidecars and anything else, each SIGTERM then SIGKILL; the
        sidecars get what is left of the grace period (at least the 2 s minimum), as upstream."""
        sidecars = {str(c.get("name")) for c in st.spec.get("initContainers") or [] if podstatus.is_sidecar(c)}
        live = [cs for cs in st.containers.values()
                if cs.state in (containers_mod.RUNNING, containers_mod.CREATED, containers_mod.PAUSED)]
        if st.prober is not None:
            await st.prober.close()  # a terminating pod is probed no more
        deadline = self._clock.monotonic() + grace
        for group in ([cs for cs in live if cs.name not in sidecars], [cs for cs in live if cs.name in sidecars]):
            left = max(deadline - self._clock.monotonic(), MIN_GRACE_SECONDS)
            await asyncio.gather(*(self._stop_container(st, cs, grace=left, message=f"Stopping container {cs.name}")
                                   for cs in group))
        for cs in live:
            st.dirty.add(cs.id)
        await self._refresh(st)

    async def _tear_down_terminal(self, st: PodState) -> None:
        if st.torn_down:
            return
        await self._stop_all(st, MIN_GRACE_SECONDS)
        for cs in list(st.containers.values()):
            await self._remove_container(st, cs)
        await self.runtime.remove_pod(st.uid)
        await self._network_teardown(st)

        def files() -> None:
            volumes.teardown(self.layout.volumes(st.uid))
            sandbox.remove_netns(self.layout.netns(st.uid))
            for pinned in (self.layout.shm(st.uid), self.layout.ipcns(st.uid)):
                bundle_mod.unmount(pinned)

        await asyncio.to_thread(files)
        st.torn_down = True
        st.sandbox_ready = False
        self.metrics.forget_pod(str(st.meta.get("namespace")), str(st.meta.get("name")))

    async def _terminate(self, st: PodState) -> None:
        meta = st.meta
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = st.spec.get("terminationGracePeriodSeconds", 30)
        grace = max(float(grace or 0), MIN_GRACE_SECONDS)
        if st.gone:
            grace = MIN_GRACE_SECONDS
        await self._refresh(st)
        await self._stop_all(st, grace)
        if not st.gone and not st.torn_down and (st.pod.get("status") or {}).get("phase") not in TERMINAL:
            await self._write_status(st, terminal=True)
        for cs in list(st.containers.values()):
            await self._remove_container(st, cs)
        await self.runtime.remove_pod(st.uid)
        await self._network_teardown(st)
        log_dir = self.log_dir(st)

        def files() -> None:
            self._remove_sandbox_files(st.uid)
            shutil.rmtree(log_dir, ignore_errors=True)

        await asyncio.to_thread(files)
        self.metrics.forget_pod(str(meta.get("namespace")), str(meta.get("name")))
        self.crash_backoff.forget(st.uid + "/")
        self.image_backoff.forget(st.uid + "/")
        if not st.gone and not st.static:
            opts = rest.DeleteOptions(grace_period_seconds=0, precondition_uid=st.uid)
            try:
                await self._client.delete("v1", "Pod", name=str(meta.get("name")), namespace=str(meta.get("namespace")),
                                          options=opts)
            except errors.APIError as exc:
                if exc.code not in (404, 409):
                    raise
        st.finished = True

    async def _network_teardown(self, st: PodState) -> None:
        """The pod off the network (its address back to the pool), before its namespace goes."""
        if not st.spec.get("hostNetwork"):
            await self.network.teardown(st.uid)

    def log_dir(self, st: PodState) -> Path:
        return self.settings.pod_log_dir / f"{st.meta.get('namespace')}_{st.meta.get('name')}_{st.uid}"

    # --- metrics ----------------------------------------------------------------------------

    async def report_usage(self) -> int:
        """Read the running containers' cgroups and report each pod's usage. Returns how many
        pods were reported."""
        reported = 0
        now = self._clock.now()
        for st in list(self.pods.values()):
            if st.finished or st.torn_down:
                continue
            usage: dict[str, metrics_mod.Usage] = {}
            window = 0.0
            for cs in list(st.containers.values()):
                if cs.state != containers_mod.RUNNING:
                    continue
                try:
                    u = await self.runtime.stats(cs.id)
                except (OSError, ValueError):
                    continue
                t = self._clock.monotonic()
                before = st.cpu.get(cs.id)
                st.cpu[cs.id] = (t, u.cpu_ns)
                if before is None or t <= before[0]:
                    continue
                window = max(window, t - before[0])
                milli = max(0, int((u.cpu_ns - before[1]) / ((t - before[0]) * 1e6)))
                usage[cs.name] = metrics_mod.Usage(cpu_milli=milli, memory_bytes=u.memory_working_set)
            if usage:
                self.metrics.report_pod(str(st.meta.get("namespace")), str(st.meta.get("name")),
                                        metrics_mod.PodUsage(timestamp=now, window_seconds=window, containers=usage))
                reported += 1
        return reported

    def images_in_use(self) -> set[str]:
        return {cs.annotations.get(podstatus.ANNOTATION_IMAGE_ID, "") for st in self.pods.values()
                for cs in st.containers.values()}


def _desired(pod: JSON) -> JSON:
    """The pod without its status and the metadata every write changes."""
    meta = {k: v for k, v in (pod.get("metadata") or {}).items()
            if k not in ("resourceVersion", "managedFields", "generation")}
    return {"metadata": meta, "spec": pod.get("spec")}


def _references(spec: Mapping[str, Any], kind: str) -> set[str]:
    """Names of the ConfigMaps (or Secrets) a pod spec uses in volumes and environment."""
    key, field = ("configMap", "name") if kind == "ConfigMap" else ("secret", "secretName")
    ref, env_ref = ("configMapKeyRef", "configMapRef") if kind == "ConfigMap" else ("secretKeyRef", "secretRef")
    out: set[str] = set()
    for vol in spec.get("volumes") or []:
        if isinstance(vol.get(key), Mapping):
            out.add(str(vol[key].get(field) or ""))
        for source in (vol.get("projected") or {}).get("sources") or []:
            if isinstance(source.get(key), Mapping):
                out.add(str(source[key].get("name") or ""))
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for env in c.get("env") or []:
            src = (env.get("valueFrom") or {}).get(ref)
            if isinstance(src, Mapping):
                out.add(str(src.get("name") or ""))
        for env_from in c.get("envFrom") or []:
            if isinstance(env_from.get(env_ref), Mapping):
                out.add(str(env_from[env_ref].get("name") or ""))
    return out


def _newest(runs: list[containers_mod.ContainerStatus] | None) -> containers_mod.ContainerStatus | None:
    return runs[0] if runs else None


def _default_policy(image: str) -> str:
    """Upstream's default: Always for `:latest` or no tag (and no digest), else IfNotPresent."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last or last.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def _image_config(info: images_mod.ImageInfo) -> bundle_mod.ImageConfig:
    c = info.config
    return bundle_mod.ImageConfig(entrypoint=c.entrypoint, cmd=c.cmd, env=c.env, working_dir=c.working_dir,
                                  user=c.user)


def _duration(seconds: float) -> str:
    """Go's time.Duration string for whole seconds and minutes (10s, 20s, 1m20s, 5m0s)."""
    s = int(seconds)
    return f"{s // 60}m{s % 60}s" if s >= 60 else f"{s}s"


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o666)
    os.close(fd)
    os.chmod(path, 0o666)


def _host_files(resolv_conf: Path) -> tuple[str, str]:
    try:
        hosts = Path("/etc/hosts").read_text()
    except OSError:
        hosts = ""
    return hosts, resolvconf.read(resolv_conf)


def _log_tail(path: Path) -> str:
    """The last lines of a CRI log as plain text (FallbackToLogsOnError)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    lines = []
    for line in data.decode(errors="replace").splitlines()[-FALLBACK_LINES:]:
        parts = line.split(" ", 3)
        if len(parts) == 4:
            lines.append(parts[3] + ("\n" if parts[2] == "F" else ""))
    return "".join(lines)[-FALLBACK_BYTES:]

