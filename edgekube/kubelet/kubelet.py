"""The kubelet, composed: image store, runc runtime, node agent and pod workers, in this process.

`boot()` is quick and runs before the kubelet's tasks start (the runtime composition root awaits
it behind the `kubelet` readiness gate): it checks that it runs as root, finds the cgroup
hierarchies, opens the image store and the runtime (which lists and adopts the containers that
outlived the last process), reads the static pod manifests (so their containers are adopted, not
swept), puts node allocatable on the `kubepods` cgroup, and registers the Node as Ready. Nothing
of it waits on the network or on images.

`runners()` are the long-running tasks, each named, for the supervisor:

    kubelet/informer/Pod   the pods (the workers take those bound to this node)
    kubelet/pods           adoption and sweep once the informer synced, then a worker per pod
    kubelet/static-pods    the manifest folder read again every 20 s; mirror pods kept
    kubelet/lease          the node's Lease, every 10 s (memory tier)
    kubelet/node-status    the Node's status, written when it changed
    kubelet/images         tarballs in DATA/images imported at boot (pods wait for that before
                           they pull), then image GC every 5 minutes at the disk thresholds
    kubelet/metrics        pods' and the node's cpu and memory into the MetricsStore, every 15 s
    kubelet/watch/ConfigMap, kubelet/watch/Secret
                           changes of these wake the pods that use them (volumes refreshed at once)

The pod network is handed in (`network.PodNetwork`: the node's bridge from runtime.py, or
`Loopback` when the `network` component is off); its pod CIDRs go into the Node's spec at
registration, and the pod workers put each pod on it.

`close()` (after the tasks were cancelled) stops the log copiers and exit watches and closes the
image store. The containers go on running: the next boot adopts them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from edgekube import config as config_mod
from edgekube._cogs import clock as clock_mod
from edgekube._cogs import memory
from edgekube.api import metrics as metrics_mod
from edgekube.api import quantity
from edgekube.client import events as events_mod
from edgekube.client import informer as informer_mod
from edgekube.client import local
from edgekube.kubelet import images as images_mod
from edgekube.kubelet import logrotate, sandbox, staticpods
from edgekube.kubelet import network as network_mod
from edgekube.kubelet import node as node_mod
from edgekube.kubelet import pods as pods_mod
from edgekube.kubelet.runtime import cgroups as cgroups_mod
from edgekube.kubelet.runtime import containers as containers_mod

log = logging.getLogger(__name__)
JSON = dict[str, Any]

METRICS_SECONDS = 15.0
IMAGE_GC_SECONDS = 300.0
IMAGE_MIN_AGE_SECONDS = 120.0


class KubeletError(RuntimeError):
    """The kubelet cannot start; the message says what is missing and how to go on."""


@dataclasses.dataclass(frozen=True)
class Options:
    node_name: str
    data_dir: Path
    cluster_dns: str  # "" when the dns component is off
    cluster_domain: str
    resolv_conf: Path = Path("/etc/resolv.conf")  # the host's (_cogs/resolvconf.locate)


class Kubelet:
    def __init__(self, settings: config_mod.KubeletSettings, *, options: Options, client: local.LocalClient,
                 events: events_mod.Recorder, clock: clock_mod.Clock, metrics: metrics_mod.MetricsStore,
                 network: network_mod.PodNetwork | None = None) -> None:
        self.settings = settings
        self.network: network_mod.PodNetwork = network if network is not None else network_mod.Loopback()
        self.options = options
        self._client = client
        self._events = events
        self._clock = clock
        self.metrics = metrics
        self.layout = sandbox.Layout(settings.root_dir)
        self.informer = informer_mod.Informer(client, "v1", "Pod")
        self.runtime: containers_mod.Runtime | None = None
        self.images: images_mod.ImageStore | None = None
        self.node: node_mod.NodeAgent | None = None
        self.pods: pods_mod.PodManager | None = None
        self.static_pods: staticpods.FileSource | None = None
        self._cpu_sample: tuple[float, int, int] | None = None

    # --- boot ------------------------------------------------------------------------------

    async def boot(self) -> None:
        s = self.settings
        if os.geteuid() != 0:
            raise KubeletError("the kubelet runs containers with runc and needs root (cgroups, mounts, namespaces); "
                               "run edgekube as root, or start it with --disable kubelet")
        try:
            reservations = node_mod.Reservations.parse(
                cpu=s.system_reserved_cpu, memory=s.system_reserved_memory, eviction_memory=s.eviction_hard_memory,
                nodefs_percent=s.eviction_hard_nodefs_percent, max_pods=s.max_pods)
        except quantity.QuantityError as exc:
            raise KubeletError(f"kubelet settings: {exc}") from None
        try:
            registries = images_mod.load_registries(s.registries_file)
        except images_mod.RegistriesError as exc:
            raise KubeletError(str(exc)) from None

        def dirs() -> cgroups_mod.Cgroups:
            for d in (s.root_dir, s.pod_log_dir):
                d.mkdir(parents=True, exist_ok=True)
            os.chmod(s.root_dir, 0o711)
            os.chmod(s.pod_log_dir, 0o750)  # as upstream's kubelet (1.29+); the log files are 0640
            return cgroups_mod.detect(parent=s.cgroup_parent)

        try:
            cgroups = await asyncio.to_thread(dirs)
        except OSError as exc:
            raise KubeletError(f"kubelet: {exc}") from None
        self.images = await asyncio.to_thread(images_mod.ImageStore, self.options.data_dir / images_mod.STORE_DIR,
                                              registry_config=registries, clock=self._clock)
        version = await _runc_version(s.runc)
        agent = node_mod.NodeAgent(self._client, name=self.options.node_name, clock=self._clock, root_dir=s.root_dir,
                                   reservations=reservations, arch=images_mod.host_platform().architecture,
                                   runtime_version=f"runc://{version}", images=self._image_list,
                                   pod_cidrs=self.network.pod_cidrs)
        self.node = agent
        runtime = containers_mod.Runtime(
            data_dir=s.root_dir, cgroups=cgroups, runc_binary=s.runc, seccomp_default=s.seccomp_default,
            pids_limit=s.pod_pids_limit or None,
            log_rotation=logrotate.from_settings(max_size=s.container_log_max_size, max_files=s.container_log_max_files))
        pods = pods_mod.PodManager(
            client=self._client, events=self._events, runtime=runtime, images=self.images, layout=self.layout,
            clock=self._clock,
            settings=pods_mod.Settings(node_name=self.options.node_name, pod_log_dir=s.pod_log_dir,
                                       cluster_dns=self.options.cluster_dns,
                                       cluster_domain=self.options.cluster_domain,
                                       resolv_conf=self.options.resolv_conf),
            node=agent, metrics=self.metrics, network=self.network)
        runtime.on_exit = pods.on_exit
        self.runtime = runtime
        self.pods = pods
        try:
            pods.adopted = await runtime.open()
        except OSError as exc:
            raise KubeletError(f"kubelet: cannot open the container runtime under {s.root_dir}: {exc}") from None
        self.static_pods = staticpods.FileSource(s.pod_manifest_path, node_name=self.options.node_name,
                                                 client=self._client, pods=self.informer, workers=pods,
                                                 clock=self._clock, check_seconds=s.pod_manifest_check_seconds)
        await self.static_pods.load()
        await agent.register()
        await self._enforce_allocatable(cgroups, reservations)
        self.informer.add_handlers(informer_mod.Handlers(on_add=pods.on_add, on_update=pods.on_update,
                                                         on_delete=pods.on_delete))
        self.informer.add_handlers(self.static_pods.handlers())
        log.info("kubelet: node %s is Ready (%d containers found from before)", agent.name, len(pods.adopted))

    async def _enforce_allocatable(self, cgroups: cgroups_mod.Cgroups, r: node_mod.Reservations) -> None:
        """The `kubepods` cgroup gets node allocatable as upstream's `--enforce-node-allocatable=pods`:
        cpu shares of the allocatable cpu, memory capacity minus the reservations."""
        assert self.node is not None
        m = await asyncio.to_thread(node_mod.machine, self.settings.root_dir)
        limits = cgroups_mod.Limits(cpu_shares=cgroups_mod.milli_cpu_to_shares(max(1, m.cpus * 1000 - r.cpu_milli)),
                                    memory=max(0, m.memory - r.memory) or None)
        try:
            await asyncio.to_thread(cgroups.ensure_parents, allocatable=limits)
        except OSError as exc:
            log.warning("kubelet: cannot set node allocatable on the %s cgroup: %s", cgroups.parent, exc)

    def _image_list(self) -> list[JSON]:
        if self.images is None:
            return []
        try:
            infos = self.images.list()
        except images_mod.ImageError:
            return []
        infos.sort(key=lambda i: i.size, reverse=True)
        return [{"names": list(i.names), "sizeBytes": i.size} for i in infos if i.names]

    # --- tasks -----------------------------------------------------------------------------

    def runners(self) -> list[tuple[str, Callable[[], Coroutine[Any, Any, Any]]]]:
        assert self.node is not None and self.pods is not None and self.static_pods is not None
        pods, static_pods = self.pods, self.static_pods
        return [
            ("kubelet/informer/Pod", self.informer.run),
            ("kubelet/pods", lambda: pods.run(synced=self.informer.synced)),
            ("kubelet/static-pods", lambda: static_pods.run(synced=self.informer.synced)),
            ("kubelet/lease", self.node.lease_loop),
            ("kubelet/node-status", self.node.status_loop),
            ("kubelet/images", self._images_loop),
            ("kubelet/metrics", self._metrics_loop),
            ("kubelet/watch/ConfigMap", lambda: informer_mod.follow_names(
                self._client, "v1", "ConfigMap", lambda ns, name: pods.config_changed("ConfigMap", ns, name))),
            ("kubelet/watch/Secret", lambda: informer_mod.follow_names(
                self._client, "v1", "Secret", lambda ns, name: pods.config_changed("Secret", ns, name))),
        ]

    async def _images_loop(self) -> None:
        assert self.images is not None and self.pods is not None
        try:
            results = await self.images.import_dir(self.options.data_dir / images_mod.IMPORT_DIR)
            for r in results:
                if r.error:
                    log.error("kubelet: image tarball %s not imported: %s", r.path, r.error)
            if results:
                memory.release_free_memory()  # unpacking layers in a thread left its arena full
        finally:
            self.pods.images_ready.set()
        pods = self.pods

        def in_use(i: images_mod.ImageInfo) -> bool:
            used = pods.images_in_use()  # asked again per image: a pod may start meanwhile
            return i.image_ref in used or i.id in used

        while True:
            await asyncio.sleep(IMAGE_GC_SECONDS)

            try:
                result = await self.images.gc(high_percent=self.settings.image_gc_high_percent,
                                              low_percent=self.settings.image_gc_low_percent,
                                              in_use=in_use, min_age=IMAGE_MIN_AGE_SECONDS)
            except (OSError, images_mod.ImageError) as exc:
                log.warning("kubelet: image GC failed: %s", exc)
                continue
            if result.removed:
                log.info("kubelet: image GC removed %d images (disk %.0f%% -> %.0f%% used)", len(result.removed),
                         result.used_percent_before, result.used_percent_after)

    async def _metrics_loop(self) -> None:
        assert self.pods is not None and self.node is not None
        while True:
            await self.pods.report_usage()
            usage = await asyncio.to_thread(self._node_usage)
            if usage is not None:
                self.metrics.report_node(self.node.name, self._clock.now(), usage)
            await asyncio.sleep(METRICS_SECONDS)

    def _node_usage(self) -> metrics_mod.Usage | None:
        """The node's cpu over the last interval (from /proc/stat) and memory in use."""
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
            values = [int(v) for v in fields]
        except (OSError, ValueError, IndexError):
            return None
        busy = sum(values) - values[3] - (values[4] if len(values) > 4 else 0)
        t = self._clock.monotonic()
        before, self._cpu_sample = self._cpu_sample, (t, busy, 0)
        if before is None or t <= before[0]:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        milli = int((busy - before[1]) / ticks / (t - before[0]) * 1000)
        mem = node_mod.machine(self.settings.root_dir)
        return metrics_mod.Usage(cpu_milli=max(0, milli), memory_bytes=max(0, mem.memory - mem.memory_available))

    async def close(self) -> None:
        if self.pods is not None:
            await self.pods.stop_workers()
        if self.runtime is not None:
            await self.runtime.close()
        if self.images is not None:
            await self.images.close()


async def _runc_version(binary: str) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(binary, "--version", stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.DEVNULL)
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
    except (OSError, TimeoutError) as exc:
        raise KubeletError(f"kubelet: cannot run {binary!r} ({exc}); install runc (make does) or set kubelet.runc") from None
    first = out.decode(errors="replace").splitlines()[:1]
    parts = first[0].split() if first else []
    return parts[2] if len(parts) >= 3 else "unknown"
