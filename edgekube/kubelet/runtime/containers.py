"""The container runtime the kubelet drives: create, start, stop, remove, status, adopt and sweep
runc containers together with their bundles, overlay mounts, log FIFOs and cgroups.

State lives where it survives edgekube: runc's root (`<data>/runc`, one state.json per
container), the bundles (`<data>/containers/<id>`: config.json with the pod's identity in its
annotations, the FIFOs, and status.json with what runc does not keep: when the container was
started and, once edgekube saw it exit, its exit code, finish time and OOM kill). `open()` after a
restart lists runc's containers and picks each one up again: running ones get their log copiers
and exit watch back, stopped ones are reported with what is known. Nothing is restarted.

What is known about a container that stopped (see `exits` for the mechanisms):
- it exited while this edgekube process ran (started by it, or adopted): exit code and finish
  time, exact; OOM kill from the cgroup's counter;
- it exited while edgekube was down: runc says "stopped", the OOM counter still answers, but
  the exit code and finish time are unknown (`exit_code` None, reason
  `ContainerStatusUnknown`, upstream's word for a status the runtime lost).

`exec` runs one more process in a running container (`runc exec`, the container's own process
settings with other args), for the kubelet's probes and lifecycle hooks.

Each running container's output goes through `crilog` copiers into its CRI log file, rotated by
size per `log_rotation` (upstream's 10Mi and 5 files unless the kubelet passes its settings;
None turns rotation off; see `edgekube.kubelet.logrotate`).

Removal leaves nothing: `runc delete --force` (kills what runs and removes the container's
cgroup), the exit is reaped, the log copiers drain to EOF, leftover cgroup directories are
removed (stragglers SIGKILLed), the rootfs and anything mounted under the bundle are
unmounted, and the bundle is deleted. `sweep()` does the same at boot for every container,
bundle, mount and pod cgroup the kubelet no longer knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgekube._cogs import memdir
from edgekube.kubelet import logrotate
from edgekube.kubelet.runtime import bundle as bundle_mod
from edgekube.kubelet.runtime import cgroups as cgroups_mod
from edgekube.kubelet.runtime import crilog, exits, runc

log = logging.getLogger(__name__)

CREATED = "created"
RUNNING = "running"
PAUSED = "paused"
EXITED = "exited"
EXEC_OUTPUT_LIMIT = 10 * 1024  # what upstream keeps of a probe's output
ORPHAN_REAP_SECONDS = 0.2  # while stopping: how often the container's orphaned processes are reaped


@dataclasses.dataclass(frozen=True)
class ContainerSpec:
    """What the kubelet asks for: the pod and container objects, the image's config and layers
    (unpacked directories, base layer first), where the CRI log goes, the pod's cgroup (from
    `ensure_pod`) and network namespace, and the bind mounts it prepared."""

    id: str
    pod: Mapping[str, Any]
    container: Mapping[str, Any]
    image: bundle_mod.ImageConfig
    lowerdirs: tuple[Path, ...]
    log_path: Path
    pod_cgroup: str
    netns: str | None = None
    mounts: tuple[bundle_mod.Mount, ...] = ()
    env: tuple[tuple[str, str], ...] | None = None
    attempt: int = 0
    shm: str | None = None  # the pod's /dev/shm to bind-mount (else a tmpfs of the container's own)
    ipcns: str | None = None  # the pod's IPC namespace to join (else one of the container's own)
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    oom_score_adj: int | None = None  # else upstream's for the pod's QoS class (`Runtime.oom_score_adj`)


@dataclasses.dataclass(frozen=True)
class ContainerStatus:
    id: str
    state: str  # created | running | paused | exited
    pid: int
    pod_uid: str
    pod_name: str
    namespace: str
    name: str
    attempt: int
    created_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    exit_code: int | None
    oom_killed: bool
    reason: str  # "" while not exited; Completed | Error | OOMKilled | ContainerStatusUnknown
    log_path: str
    cgroup: str
    annotations: Mapping[str, str]


@dataclasses.dataclass
class SweepReport:
    containers: list[str] = dataclasses.field(default_factory=list)
    bundles: list[str] = dataclasses.field(default_factory=list)
    mounts: list[str] = dataclasses.field(default_factory=list)
    cgroups: list[str] = dataclasses.field(default_factory=list)


def runc_root(data_dir: Path) -> Path:
    """runc's state directory for the kubelet whose data is `data_dir`: in memory (runc writes
    in a container's state directory at every exec: some 40 KB of the flash's life each), one
    per data dir, gone at a reboot as the containers are. A `runc` directory left in the data
    dir by an edgekube before this one (its containers may still run) stays where it is."""
    legacy = data_dir / "runc"
    if legacy.is_dir() and any(legacy.iterdir()):
        return legacy
    own = memdir.for_path(data_dir)
    return legacy if own is None else own / "runc"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _iso(t: datetime.datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _parse_iso(v: Any) -> datetime.datetime | None:
    if not isinstance(v, str) or not v:
        return None
    try:
        return datetime.datetime.fromisoformat(v)
    except ValueError:
        return None


class Runtime:
    def __init__(self, *, data_dir: Path, cgroups: cgroups_mod.Cgroups, runc_binary: str = "runc",
                 timeout: float = 30.0, seccomp_default: bool = True, seccomp_root: Path | None = None,
                 pids_limit: int | None = None, on_exit: Callable[[str], None] | None = None,
                 subreaper: bool = True, log_rotation: logrotate.Policy | None = logrotate.UPSTREAM,
                 scratch_dir: Path | None = None) -> None:
        self.data_dir = data_dir
        self.containers_dir = data_dir / "containers"
        self.cgroups = cgroups
        root = runc_root(data_dir)
        if root.parent != data_dir:
            memdir.claim(data_dir)  # its directory in memory, with the name of its owner
        self.runc = runc.Runc(root=root, binary=runc_binary, timeout=timeout)
        # Each exec (probes, hooks: several a second on a busy node) writes its process spec,
        # with the container's environment, and runc its pid file: in memory, not on the flash.
        self.scratch_dir = scratch_dir or root.with_name("exec")
        self.seccomp_default = seccomp_default
        self.seccomp_root = seccomp_root
        self.pids_limit = pids_limit
        self.on_exit = on_exit
        self.log_rotation = log_rotation  # size-based rotation of the CRI log files (None: none)
        # subreaper=False only for tests that need to play a restarted process (not the parent).
        self.watcher = exits.Watcher(subreaper=subreaper)
        # None: any oom_score_adj may be set; else the lowest one (no CAP_SYS_RESOURCE).
        self.oom_floor = cgroups_mod.oom_score_adj_floor()
        self._memory = 0
        self._copiers: dict[str, list[crilog.Copier]] = {}
        self._records: dict[str, dict[str, Any]] = {}
        self._exited: dict[str, asyncio.Event] = {}
        self._pids: dict[str, int] = {}
        self._parents_ready = False
        # What `create` knows of a container until `start`, so neither asks `runc state`.
        self._created: dict[str, runc.State] = {}
        # Phase times of `create` (monotonic marks) until `start` logs them; kept only at DEBUG.
        self._timings: dict[str, tuple[str, float, float, float, float]] = {}

    # --- life of the runtime ------------------------------------------------------------------

    async def open(self) -> list[ContainerStatus]:
        """Start (or, after a restart, pick up where the last process left): every container
        runc knows is adopted. Returns their statuses."""
        await asyncio.to_thread(self._make_dirs)
        if self.oom_floor is not None:
            log.warning("edgekube lacks CAP_SYS_RESOURCE (as in LXC and containers): containers' oom_score_adj "
                        "cannot go below %d, edgekube's own (Guaranteed pods' -997 is clamped)", self.oom_floor)
        self.watcher.open()
        out = []
        for st in await self.runc.list():
            try:
                out.append(await self._adopt(st))
            except (OSError, runc.RuncError) as exc:
                log.warning("cannot adopt container %s: %s", st.id, exc)
        return out

    def _make_dirs(self) -> None:
        self.containers_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.runc.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def close(self) -> None:
        """Stop watching and copying; the containers go on running (they outlive edgekube)."""
        for copiers in self._copiers.values():
            for c in copiers:
                c.close()
        self._copiers.clear()
        self.watcher.close()

    # --- pods -------------------------------------------------------------------------------

    async def ensure_pod(self, pod: Mapping[str, Any]) -> str:
        """The pod's cgroup (QoS parents made on first use), limits from the pod's resources."""
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        if not uid:
            raise ValueError("pod has no metadata.uid")
        limits = cgroups_mod.pod_limits(pod, pids_limit=self.pids_limit)
        qos = cgroups_mod.qos_class(pod)

        def work() -> str:
            if not self._parents_ready:
                self.cgroups.ensure_parents()
                self._parents_ready = True
            return self.cgroups.ensure_pod(uid, qos=qos, limits=limits)

        return await asyncio.to_thread(work)

    async def update_qos(self, pods: Sequence[Mapping[str, Any]]) -> None:
        """Burstable parent's cpu.shares from the requests of the node's burstable pods (call
        when pods come or go)."""
        shares = cgroups_mod.burstable_shares(pods)
        path = f"/{self.cgroups.parent}/burstable"
        await asyncio.to_thread(self.cgroups.set_limits, path, cgroups_mod.Limits(cpu_shares=shares))

    async def remove_pod(self, pod_uid: str) -> None:
        """Remove the pod's cgroup (its containers must be removed first; stragglers are killed)."""
        path = (await asyncio.to_thread(self.cgroups.pods)).get(pod_uid)
        if path is not None:
            await asyncio.to_thread(self.cgroups.remove, path)

    # --- containers ---------------------------------------------------------------------------

    def oom_score_adj(self, pod: Mapping[str, Any], container: Mapping[str, Any]) -> tuple[int, int]:
        """(upstream's oom_score_adj for the container, the one it gets): the same, unless this
        process may not go as low (`oom_floor`), when it gets the floor."""
        if not self._memory:
            self._memory = bundle_mod.memory_capacity()
        wanted = cgroups_mod.oom_score_adj(pod, container, memory_capacity=self._memory)
        return wanted, wanted if self.oom_floor is None else max(wanted, self.oom_floor)

    def bundle(self, cid: str) -> bundle_mod.Bundle:
        return bundle_mod.Bundle(self.containers_dir / runc.check_id(cid))

    async def create(self, spec: ContainerSpec) -> ContainerStatus:
        """Bundle, overlay rootfs, config.json, FIFOs, then `runc create`: the container's init
        waits for `start`. On failure nothing of it is left."""
        b = self.bundle(spec.id)
        cgroup_path = cgroups_mod.container_cgroup_path(spec.pod_cgroup, spec.id)
        if b.path.exists():
            raise runc.AlreadyExistsError(f"container {spec.id} already exists (bundle {b.path})",
                                          command=["create", spec.id], returncode=None)

        marks = [time.monotonic()]

        annotations: dict[str, str] = {}

        def prepare() -> tuple[int, int]:
            b.prepare(lowerdirs=spec.lowerdirs)
            marks.append(time.monotonic())
            config = bundle_mod.build_config(
                spec.pod, container=spec.container, image=spec.image, rootfs=b.rootfs, cgroups_path=cgroup_path,
                netns=spec.netns, mounts=spec.mounts, env=spec.env, attempt=spec.attempt,
                log_path=str(spec.log_path), seccomp_default=self.seccomp_default, seccomp_root=self.seccomp_root,
                pids_limit=self.pids_limit, shm=spec.shm, ipcns=spec.ipcns, annotations=spec.annotations,
                oom_score_adj=spec.oom_score_adj if spec.oom_score_adj is not None
                else self.oom_score_adj(spec.pod, spec.container)[1])
            b.write_config(config)
            annotations.update(config.get("annotations") or {})
            out_fifo, err_fifo = crilog.make_fifos(b.path)
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            return crilog.open_for_container(out_fifo), crilog.open_for_container(err_fifo)

        out_w = err_w = -1
        try:
            out_w, err_w = await asyncio.to_thread(prepare)
            marks.append(time.monotonic())
            pid = await self.runc.create(spec.id, bundle=b.path, stdout=out_w, stderr=err_w, pid_file=b.pid_file)
        except BaseException:
            for fd in (out_w, err_w):
                if fd >= 0:
                    os.close(fd)
            with contextlib.suppress(runc.RuncError, OSError):
                await self.runc.delete(spec.id, force=True)
            await asyncio.to_thread(self._remove_files, b, cgroup_path)
            raise
        # Only the container holds its FIFOs' write ends from now on (see crilog).
        os.close(out_w)
        os.close(err_w)
        self._records[spec.id] = {"cgroup": cgroup_path}
        if log.isEnabledFor(logging.DEBUG):
            meta = spec.pod.get("metadata") or {}
            what = f"pod {meta.get('namespace')}/{meta.get('name')}, {spec.container.get('name')}"
            self._timings[spec.id] = (what, marks[0], marks[1], marks[2], time.monotonic())
        self._exited[spec.id] = asyncio.Event()
        self._attach_logs(spec.id, b, spec.log_path)
        self._watch(spec.id, pid)
        # What `runc state` would say now, without running it (each runc run is a fork and exec
        # on the loop: ~5-10 ms, and they add up when many pods start at once).
        created = runc.State(id=spec.id, pid=pid, status="created", bundle=str(b.path), rootfs=str(b.rootfs),
                             created=_now(), annotations=annotations)
        self._created[spec.id] = created
        return self._status(created)

    async def start(self, cid: str) -> ContainerStatus:
        """`runc start`; returns the container's status after it."""
        rec = self._records.setdefault(cid, {})
        rec["startedAt"] = _iso(_now())
        timing = self._timings.pop(cid, None)
        begin = time.monotonic()
        try:
            await self.runc.start(cid)
        except runc.RuncError:
            rec.pop("startedAt", None)
            raise
        # On the loop, like the exit callback's write: one small file, and the two never race.
        self._save_record(cid)
        created = self._created.pop(cid, None)
        exited = self._exited.get(cid)
        status = (self._status(dataclasses.replace(created, status="running"))
                  if created is not None and exited is not None and not exited.is_set() else await self.status(cid))
        if timing is not None:
            # One line per container start, for the kubelet benchmark's split of pod startup.
            what, t0, mounted, configured, made = timing
            end = time.monotonic()
            log.debug("container %s (%s) started in %.1f ms: rootfs %.1f ms, config %.1f ms, runc create %.1f ms, "
                      "runc start %.1f ms", cid[:12], what, 1000 * (end - t0), 1000 * (mounted - t0),
                      1000 * (configured - mounted), 1000 * (made - configured), 1000 * (end - begin))
        return status

    async def run(self, spec: ContainerSpec) -> ContainerStatus:
        await self.create(spec)
        return await self.start(spec.id)

    async def kill(self, cid: str, sig: int = signal.SIGTERM) -> None:
        with contextlib.suppress(runc.NotRunningError):
            await self.runc.kill(cid, sig)

    async def wait(self, cid: str) -> ContainerStatus:
        """Until the container's init exited (bound it with asyncio.timeout)."""
        event = self._exited.get(cid)
        if event is None:
            st = await self.status(cid)
            if st.state == EXITED:
                return st
            raise KeyError(f"container {cid} is not watched by this runtime")
        await event.wait()
        return await self.status(cid)

    async def stop(self, cid: str, *, grace: float) -> ContainerStatus:
        """SIGTERM, up to `grace` seconds, then SIGKILL (the kubelet's graceful termination).
        Meanwhile the container's processes that were orphaned to us are reaped: its init
        cannot exit before they are (`exits.Watcher.reap_orphans`)."""
        await self.kill(cid, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                return await self._wait_reaping(cid)
        except TimeoutError:
            await self.kill(cid, signal.SIGKILL)
            async with asyncio.timeout(self.runc.timeout):
                return await self._wait_reaping(cid)

    async def _wait_reaping(self, cid: str) -> ContainerStatus:
        wait = asyncio.ensure_future(self.wait(cid))
        try:
            while True:
                done, _ = await asyncio.wait({wait}, timeout=ORPHAN_REAP_SECONDS)
                if done:
                    return wait.result()
                self.watcher.reap_orphans()
        finally:
            wait.cancel()

    async def exec(self, cid: str, command: Sequence[str], *, time_limit: float | None,
                   limit: int = EXEC_OUTPUT_LIMIT) -> runc.ExecResult:
        """Run `command` in the running container as its own process runs: the container's
        env, cwd, user, capabilities and namespaces, from its config.json; no terminal. Returns
        its exit code (None past `time_limit`, when it was killed) and its first `limit` bytes of
        stdout and stderr. The probes' and lifecycle hooks' exec."""
        b = self.bundle(cid)
        name = f"exec-{secrets.token_hex(8)}"
        spec_path, pid_file = self.scratch_dir / f"{name}.json", self.scratch_dir / f"{name}.pid"

        def write() -> None:
            self.scratch_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            process = dict(b.read_config().get("process") or {})
            process.update(args=list(command), terminal=False)
            bundle_mod.write_json(spec_path, process)

        def clean() -> None:
            for p in (spec_path, pid_file):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()

        try:
            await asyncio.to_thread(write)
            return await self.runc.exec(cid, process=spec_path, pid_file=pid_file, time_limit=time_limit,
                                        limit=limit)
        finally:
            await asyncio.to_thread(clean)

    async def status(self, cid: str) -> ContainerStatus:
        st = await self.runc.state(cid)
        return self._status(st)

    async def list(self) -> list[ContainerStatus]:
        return [self._status(st) for st in await self.runc.list()]

    async def stats(self, cid: str) -> cgroups_mod.Usage:
        path = self._cgroup_of(cid)
        return await asyncio.to_thread(self.cgroups.usage, path)

    async def remove(self, cid: str) -> None:
        """Delete the container and everything it had: process, cgroup, mounts, bundle, FIFOs."""
        b = self.bundle(cid)
        cgroup_path = self._cgroup_of(cid)
        try:
            st: runc.State | None = await self.runc.state(cid)
        except runc.NotFoundError:
            st = None
        if st is not None:
            if st.status != "stopped" and cid not in self._pids and st.pid:
                self._watch(cid, st.pid)
            await self.runc.delete(cid, force=True)
            event = self._exited.get(cid)
            if event is not None and cid in self._pids:
                # The kill is reaped (a zombie child of ours would otherwise stay behind).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), self.runc.timeout)
        for c in self._copiers.pop(cid, []):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(c.wait(), 5)
            c.close()
        pid = self._pids.pop(cid, None)
        if pid is not None:
            self.watcher.unwatch(pid)
        await asyncio.to_thread(self._remove_files, b, cgroup_path)
        self._records.pop(cid, None)
        self._exited.pop(cid, None)
        self._timings.pop(cid, None)
        self._created.pop(cid, None)

    def _remove_files(self, b: bundle_mod.Bundle, cgroup_path: str | None) -> None:
        if cgroup_path:
            with contextlib.suppress(ValueError):
                self.cgroups.remove(cgroup_path)
        b.remove()

    async def sweep(self, *, known_containers: set[str], known_pods: set[str]) -> SweepReport:
        """Remove what belongs to no container or pod the kubelet knows (run at boot, after
        `open`): runc containers, bundles, mounts under the bundles, pod and container cgroups."""
        report = SweepReport()
        listed = await self.runc.list()
        for st in listed:
            if st.id not in known_containers:
                await self.remove(st.id)
                report.containers.append(st.id)
        runc_ids = {st.id for st in listed}

        def files() -> None:
            for mp in bundle_mod.mountpoints():
                if self.containers_dir in mp.parents:
                    cid = mp.relative_to(self.containers_dir).parts[0]
                    if cid not in known_containers:
                        bundle_mod.unmount(mp)
                        report.mounts.append(str(mp))
            if self.containers_dir.is_dir():
                for e in os.scandir(self.containers_dir):
                    if e.name not in known_containers and e.name not in runc_ids:
                        bundle_mod.Bundle(Path(e.path)).remove()
                        report.bundles.append(e.name)
            for uid, path in self.cgroups.pods().items():
                if uid not in known_pods:
                    self.cgroups.remove(path)
                    report.cgroups.append(path)
                    continue
                for d in self.cgroups.dirs(path):
                    for e in os.scandir(d):
                        if e.is_dir() and e.name not in known_containers:
                            sub = f"{path}/{e.name}"
                            self.cgroups.remove(sub)
                            report.cgroups.append(sub)

        await asyncio.to_thread(files)
        return report

    # --- internals ----------------------------------------------------------------------------

    def _cgroup_of(self, cid: str) -> str:
        rec = self._records.get(cid) or {}
        if rec.get("cgroup"):
            return str(rec["cgroup"])
        try:
            config = self.bundle(cid).read_config()
        except (OSError, ValueError):
            return ""
        return str((config.get("linux") or {}).get("cgroupsPath") or "")

    def _attach_logs(self, cid: str, b: bundle_mod.Bundle, log_path: Path) -> None:
        logfile = crilog.LogFile(log_path, rotation=self.log_rotation)
        copiers = [crilog.Copier(b.path / crilog.STDOUT, stream=crilog.STDOUT, log=logfile),
                   crilog.Copier(b.path / crilog.STDERR, stream=crilog.STDERR, log=logfile)]
        for c in copiers:
            c.start()
        self._copiers[cid] = copiers

    def _watch(self, cid: str, pid: int) -> None:
        self._pids[cid] = pid
        if not self.watcher.watch(pid, lambda e: self._on_exit(cid, e)):
            self._on_exit(cid, self.watcher.reap_now(pid))

    def _on_exit(self, cid: str, e: exits.Exit) -> None:
        rec = self._records.setdefault(cid, {})
        rec["finishedAt"] = _iso(_now())
        rec["exitCode"] = e.exit_code
        rec["exitSource"] = e.source
        path = self._cgroup_of(cid)
        if path:
            with contextlib.suppress(OSError, ValueError):
                rec["oomKilled"] = self.cgroups.oom_kills(path) > 0
        try:
            self._save_record(cid)
        except OSError as exc:
            log.warning("container %s: cannot record its exit: %s", cid, exc)
        self._pids.pop(cid, None)
        event = self._exited.setdefault(cid, asyncio.Event())
        event.set()
        if self.on_exit is not None:
            self.on_exit(cid)

    def _save_record(self, cid: str) -> None:
        b = self.bundle(cid)
        if b.path.is_dir():
            bundle_mod.write_json(b.status_path, self._records.get(cid) or {})

    def _load_record(self, cid: str) -> dict[str, Any]:
        try:
            data = json.loads(self.bundle(cid).status_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    async def _adopt(self, st: runc.State) -> ContainerStatus:
        cid = st.id
        rec = self._records.setdefault(cid, {})
        rec.update({k: v for k, v in (await asyncio.to_thread(self._load_record, cid)).items() if k not in rec})
        b = self.bundle(cid)
        self._exited.setdefault(cid, asyncio.Event())
        if st.status != "stopped" and st.pid:
            log_path = st.annotations.get(bundle_mod.ANNOTATION_LOG_PATH)
            if log_path and (b.path / crilog.STDOUT).exists():
                self._attach_logs(cid, b, Path(log_path))
            # Watch first (a pidfd pins the process), then check the pid is still the
            # container's init and not a reuse of its number.
            self._watch(cid, st.pid)
            if cid in self._pids and not _same_process(self.runc.root, cid, st.pid):
                self.watcher.unwatch(st.pid)
                self._on_exit(cid, exits.Exit(st.pid, None, "unknown"))
        elif "finishedAt" not in rec and "exitCode" not in rec:
            # Exited while edgekube was down: code and time are gone; the OOM counter is not.
            path = self._cgroup_of(cid)
            if path:
                with contextlib.suppress(OSError, ValueError):
                    rec["oomKilled"] = await asyncio.to_thread(self.cgroups.oom_kills, path) > 0
            rec.setdefault("exitSource", "unknown")
            self._exited[cid].set()
        else:
            self._exited[cid].set()
        return self._status(await self.runc.state(cid))

    def _status(self, st: runc.State) -> ContainerStatus:
        rec = self._records.get(st.id)
        if rec is None:
            rec = self._load_record(st.id)
        state = {"stopped": EXITED, "pausing": RUNNING}.get(st.status, st.status)
        exit_code = rec.get("exitCode") if state == EXITED else None
        oom = bool(rec.get("oomKilled")) if state == EXITED else False
        reason = ""
        if state == EXITED:
            if oom:
                reason = "OOMKilled"
            elif exit_code is None:
                reason = "ContainerStatusUnknown"
            else:
                reason = "Completed" if exit_code == 0 else "Error"
        a = st.annotations
        try:
            attempt = int(a.get(bundle_mod.ANNOTATION_ATTEMPT) or 0)
        except ValueError:
            attempt = 0
        return ContainerStatus(
            id=st.id, state=state, pid=st.pid if state != EXITED else 0,
            pod_uid=a.get(bundle_mod.ANNOTATION_POD_UID, ""), pod_name=a.get(bundle_mod.ANNOTATION_POD_NAME, ""),
            namespace=a.get(bundle_mod.ANNOTATION_POD_NAMESPACE, ""), name=a.get(bundle_mod.ANNOTATION_CONTAINER_NAME, ""),
            attempt=attempt, created_at=st.created, started_at=_parse_iso(rec.get("startedAt")),
            finished_at=_parse_iso(rec.get("finishedAt")) if state == EXITED else None,
            exit_code=int(exit_code) if isinstance(exit_code, int) else None, oom_killed=oom, reason=reason,
            log_path=a.get(bundle_mod.ANNOTATION_LOG_PATH, ""), cgroup=a.get(bundle_mod.ANNOTATION_CGROUP, ""),
            annotations=dict(a))


def _same_process(root: Path, cid: str, pid: int) -> bool:
    """Whether `pid` is still the container's init and not a reuse of its number: the start time
    runc recorded against the one /proc gives (what runc itself compares)."""
    try:
        state = json.loads((root / cid / "state.json").read_text())
        recorded = int(state.get("init_process_start") or 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return False
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19]) == recorded  # field 22, starttime (clock ticks since boot)
    except (IndexError, ValueError):
        return False


def statuses_by_pod(statuses: Sequence[ContainerStatus]) -> dict[str, list[ContainerStatus]]:
    out: dict[str, list[ContainerStatus]] = {}
    for s in statuses:
        out.setdefault(s.pod_uid, []).append(s)
    return out
