"""The composition root: build every component from one frozen config, start, stop.

Start order, each behind a named readiness gate: store (open LMDB, load the memory tier), api
(system namespaces, the `kubernetes` Service, TLS, listen), then the network (the service proxy's
nftables table written whole, net/proxy.py, and the NetworkPolicy chains), then the controllers
and scheduler, then the cluster DNS (its gate opens once it listens), then the pod network
(edgekube.net.podnet: the node's bridge, behind the `network` component; `--disable network`
leaves pods on loopback), then the kubelet (its gate opens once its node is registered Ready).
`/readyz` answers ok once every enabled gate is open. Shutdown runs in reverse: stop listening,
stop the kubelet (its containers go on running), the controllers and the scheduler, finish
queued writes, save the memory tier, close the database.

A supervised task that ends on its own stops the whole process with a non-zero exit, so systemd
restarts it: nothing dies silently.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import ipaddress
import logging
import signal
import socket
import ssl
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from edgekube import __version__
from edgekube import config as config_mod
from edgekube._cogs import clock as clock_mod
from edgekube._cogs import (
    dirlock,
    filemodes,
    files,
    memory,
    offload,
    resolvconf,
    sdnotify,
    tasks,
    timefloor,
    tlsalert,
)
from edgekube.api import audit, errors, fairness, listener, pki, server
from edgekube.api import metrics as metrics_mod
from edgekube.api.auth import bootstrap as rbac_bootstrap
from edgekube.api.auth import bootstraptokens, satokens, tokenfile
from edgekube.api.auth import policy as policy_mod
from edgekube.api.registry import chain, podsecurity, resources, rest, saadmission
from edgekube.client import events as events_mod
from edgekube.client import informer, local
from edgekube.controllers import manager, servicelb
from edgekube.controllers import manifests as manifests_mod
from edgekube.kubelet import images as images_mod
from edgekube.kubelet import kubelet as kubelet_mod
from edgekube.kubelet import logs as kubelet_logs
from edgekube.kubelet import network as kubelet_network
from edgekube.kubelet import node as kubelet_node
from edgekube.net import dnsservice, nft, policysync, proxyrules
from edgekube.net import proxy as proxy_mod
from edgekube.scheduler import scheduler as scheduler_mod
from edgekube.store import encryption
from edgekube.store import errors as store_errors
from edgekube.store import identity as identity_mod
from edgekube.store import store as store_mod

log = logging.getLogger(__name__)

GATES = ("store", "api")
# The running server stats its certificate files this often (changed: reload them), and checks
# their expiry (renewing leaves in their last 90 days) and the clock this often: monotonic
# sleeps, which no clock setting shortens or stretches.
_CERT_CHECK_SECONDS = 3600.0
_CLOCK_NOTICE_SECONDS = 86400.0  # the CA's and the clock's warnings, once a day while they hold
_CLOCK_STEP_SECONDS = 60.0  # the wall clock moved this much more or less than the monotonic: it was set
# The cyclic collector's thresholds: Python's defaults (700, 10) for the young generations, but a
# full collection considered after 100 young-generation-1 passes rather than 10. A full pass
# walks every object of the heap (informer caches of 5,000 pods: some 70 ms on a slow core, the
# event loop stopped all along); JSON trees, most of the heap, hold no cycles and are freed by
# reference counting anyway, so full passes find little and need not come often.
_GC_THRESHOLDS = (700, 10, 100)


def secure_data_dir(data_dir: Path) -> None:
    """The data dir private to edgekube (docs/security.md): the directory 0700; its own files,
    databases, TLS material, keys and kubeconfig 0600 (the CA certificate stays 0644: it is
    public); image store files 0600 (image layers keep their own modes: they are containers'
    file systems). The kubelet's directories keep the modes the kubelet gives them."""
    filemodes.ensure_mode(data_dir, 0o700)
    for entry in data_dir.iterdir():
        if entry.is_symlink():
            continue
        if entry.is_file():  # the lock, the store identity, the kubeconfig
            filemodes.ensure_mode(entry, 0o600)
        elif entry.name == "db" or entry.name.startswith("db."):  # and old databases kept aside
            filemodes.restrict_tree(entry)
    filemodes.restrict_tree(data_dir / "tls", keep=frozenset({"ca.crt"}))
    filemodes.restrict_tree(data_dir / encryption.KEY_FILE.parent)
    images = data_dir / images_mod.STORE_DIR
    filemodes.restrict_tree(images, keep=frozenset({"layers", "tmp"}))
    for sub in ("layers", "tmp"):
        filemodes.ensure_mode(images / sub, 0o700)


_BOOT_MARK = "# Written by edgekube at each start from "
_BOOT_HEADER = _BOOT_MARK + "{path}: edit that file instead.\n"


def apply_boot_config(cfg: config_mod.Config) -> None:
    """The first-boot file's sections in place (config.py's module doc): its `registries` as
    the data dir's boot-registries.yaml (when the config points the kubelet there: no
    registries file of its own), its `manifests` as boot-config.yaml of the manifests folder.
    Each is written only when its content changed (SD cards), and removed once the first-boot
    file no longer has it."""
    boot = cfg.boot
    if boot is not None and boot.error:
        # The files it gave last time stay as they are: a card edited wrongly must not take
        # the node's workloads (their manifests) or its mirrors away.
        log.error("first-boot file ignored: %s", boot.error)
        return
    if boot is not None:
        log.info("first-boot file %s read (settings under %s)", boot.path, config_mod.DEFAULT_CONFIG_FILE)
    where = str(boot.path) if boot is not None else ""
    registries = cfg.data_dir / config_mod.BOOT_REGISTRIES_FILE
    if boot is not None and boot.registries is not None and cfg.kubelet.registries_file == registries:
        try:
            images_mod.registries.parse(dict(boot.registries), source=f"{boot.path} (registries)")
        except images_mod.RegistriesError as exc:  # the kubelet would refuse it at its start
            log.error("first-boot file: its registries are ignored (the last ones written stay): %s", exc)
        else:
            _boot_file(registries, yaml.safe_dump(dict(boot.registries), sort_keys=False), where=where)
    else:
        _boot_file(registries, None, where=where)
    manifests = None
    if boot is not None and boot.manifests:
        manifests = yaml.safe_dump_all([dict(m) for m in boot.manifests], sort_keys=False)
    _boot_file(cfg.controllers.manifests_dir / config_mod.BOOT_MANIFESTS_FILE, manifests, where=where)


def _boot_file(path: Path, content: str | None, *, where: str) -> None:
    """`path` holds `content` under the header (None: removed, if it is one of ours)."""
    try:
        current = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        current = None
    except (OSError, UnicodeDecodeError) as exc:
        log.error("first-boot file: %s cannot be read: %s", path, exc)
        return
    if content is None:
        if current is not None and current.startswith(_BOOT_MARK):
            try:
                path.unlink()
            except OSError as exc:
                log.error("first-boot file: %s cannot be removed: %s", path, exc)
                return
            log.info("first-boot file: %s removed (no longer in the first-boot file)", path)
        return
    text = _BOOT_HEADER.format(path=where) + content
    if text == current:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_atomic(path, text.encode(), mode=0o600)
    except OSError as exc:  # a read-only or full file system: the node boots without it
        log.error("first-boot file: %s cannot be written: %s", path, exc)
        return
    log.info("first-boot file: %s written", path)


class Runtime:
    def __init__(self, cfg: config_mod.Config) -> None:
        self.cfg = cfg
        self.clock = clock_mod.WallClock()
        self.catalog = resources.Catalog()
        self.supervisor = tasks.Supervisor()
        self.gates: dict[str, bool] = dict.fromkeys(GATES, False)
        self.store: store_mod.Store | None = None
        self.registry: rest.Registry | None = None
        self.tokens: satokens.ServiceAccountTokens | None = None
        self._runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self.kubeconfig = cfg.data_dir / "kubeconfig.yaml"
        self.lock = dirlock.DirLock(cfg.data_dir)
        self.identity: identity_mod.Identity | None = None
        self.node_name = cfg.node_name or socket.gethostname().lower()
        self.metrics = metrics_mod.MetricsStore()  # fed by the kubelet, read by the autoscaler
        self.offload = offload.Offload()  # the worker thread of large requests' CPU work
        self._control_plane: list[str] = []  # task names, stopped before the store closes
        self.kubelet: kubelet_mod.Kubelet | None = None
        self._kubelet_tasks: list[str] = []  # stopped first: the kubelet writes through the API
        self._network_tasks: list[str] = []
        self._clock_noticed = float("-inf")
        self.last_seen = timefloor.LastSeen(cfg.data_dir)
        if cfg.enabled("network"):
            self.gates["network"] = False
        if cfg.enabled("kubelet"):
            if cfg.enabled("network"):
                self.gates["pod-network"] = False
            self.gates["kubelet"] = False
        self.dns: Any = None  # net.dns.ClusterDns, imported only when the dns component runs
        self._dns_tasks: list[str] = []
        self.auditor: audit.Auditor | None = None  # its queued events are written at stop
        if cfg.enabled("dns"):
            self.gates["dns"] = False
        # The host's resolver configuration for the DNS forwarder and pods' resolv.conf (k3s's choice).
        self.resolv_conf = resolvconf.locate(cfg.dns.resolv_conf)

    def ready(self) -> bool:
        return all(self.gates.values())

    def request_stop(self) -> None:
        self._stop.set()

    async def start(self) -> None:
        cfg = self.cfg
        gc.set_threshold(*_GC_THRESHOLDS)
        # Read before anything else: a bad token file stops the boot before it touched the data dir.
        authenticators = [tokenfile.TokenFile(cfg.token_auth_file)] if cfg.token_auth_file else []
        self._claim_data_dir()
        # Private to edgekube (secure_data_dir, below, once the certificates are there).
        filemodes.ensure_mode(cfg.data_dir, 0o700)
        # First, while this process has no other thread: pki issues in a forked child then.
        names, addresses = pki.host_identities()
        service_ip = str(ipaddress.ip_network(cfg.service_cidr).network_address + 1)
        extra = [cfg.bind_address] if cfg.bind_address not in ("0.0.0.0", "::", "") else []
        sans = {"hostnames": names, "addresses": [service_ip, *addresses, *extra]}
        wall, now = self._trusted_now()
        the_pki = pki.ensure_pki(cfg.data_dir / "tls", **sans, now=now)
        pki.check_ca(the_pki, now=now)
        self.last_seen.record(wall, force=True)
        secure_data_dir(cfg.data_dir)
        apply_boot_config(cfg)
        memory_prefixes = [i.key_prefix() for i in self.catalog.all() if i.memory_tier]
        self.store = store_mod.Store(
            store_mod.StoreConfig(
                path=cfg.data_dir,
                map_size_mb=cfg.store.map_size_mb,
                max_size_mb=cfg.store.max_size_mb,
                compaction_interval_seconds=cfg.store.compaction_interval_seconds,
                compaction_window=cfg.store.compaction_window,
                compaction_batch=cfg.store.compaction_batch,
                watch_cache_size=cfg.store.watch_cache_size,
                watcher_queue=cfg.store.watcher_queue,
                revision_reserve=cfg.store.revision_reserve,
                preallocate_mb=cfg.store.preallocate_mb,
                reserve_mb=cfg.store.reserve_mb,
                encryption_key_file=cfg.data_dir / encryption.KEY_FILE,
                lock_in_memory=True,
            ),
            memory_prefixes=memory_prefixes,
        )
        await self.store.start()
        assert self.identity is not None
        if self.store.cluster_id() != self.identity.cluster:
            self.store.set_cluster_id(self.identity.cluster)
        for task in self.store.tasks():
            self.supervisor.watch(task.get_name(), task)
        self.gates["store"] = True

        # Who may do what (api/auth/policy.py): its gate is the registry's, for HTTP and in process.
        policy = policy_mod.Policy(self.store, catalog=self.catalog)
        psa = cfg.pod_security
        self.registry = rest.Registry(
            self.store,
            catalog=self.catalog,
            clock=self.clock,
            network=rest.ServiceNetwork(service_cidr=cfg.service_cidr, node_port_range=cfg.node_port_range),
            offload=self.offload,
            gate=policy.gate,
            policy=chain.Chain(self.store, catalog=self.catalog, offload=self.offload, pod_security=podsecurity.settings(
                enforce=psa.enforce, audit=psa.audit, warn=psa.warn, exempt_usernames=psa.exempt_usernames,
                exempt_runtime_classes=psa.exempt_runtime_classes, exempt_namespaces=psa.exempt_namespaces)),
        )
        self.registry.rebuild_allocations()
        advertise = await asyncio.to_thread(self._advertise_address)
        self.tokens = self._service_account_tokens(advertise=advertise)
        await self.registry.ensure_system_namespaces()
        await self.registry.ensure_system_priority_classes()
        self.registry.sync_crds()
        await self.registry.resume_crd_deletions()
        for name, run in await policy.start(self.registry):
            self.supervisor.start(name, run)

        try:
            await self._ensure_kubernetes_service(service_ip=service_ip, address=advertise)
        except (errors.APIError, store_errors.StoreError) as exc:
            # Serving without it beats not serving at all (a damaged record, a full disk).
            log.error("could not write the default/kubernetes Service and its endpoints: %s", exc)
        # Before any client is answered: from here on a lost database is refused at boot.
        identity_mod.record(cfg.data_dir, cluster=self.identity.cluster, revision=self.store.revision)
        host = "127.0.0.1" if cfg.bind_address in ("0.0.0.0", "::", "", "127.0.0.1") else cfg.bind_address
        url = f"https://{_url_host(host)}:{cfg.https_port}"
        pki.write_kubeconfig(self.kubeconfig, server_url=url, pki=the_pki)
        tlsalert.install()
        tls = pki.ServingContext(the_pki)
        auditor = self._auditor()
        api = server.ApiServer(
            self.registry,
            max_body=cfg.api.max_request_bytes,
            watch_timeout=cfg.api.default_watch_timeout_seconds,
            bookmark_interval=cfg.api.bookmark_interval_seconds,
            authenticators=[*authenticators, self.tokens,
                            bootstraptokens.BootstrapTokens(self.store, catalog=self.catalog, clock=self.clock)],
            service_accounts=self.tokens,
            server_address=f"{_url_host(host)}:{cfg.https_port}",
            ready=self.ready,
            logs=kubelet_logs.FileLogs(cfg.kubelet.pod_log_dir),  # pods/log reads the node's CRI log files
            limits=listener.Limits(max_connections=cfg.api.max_connections,
                                   tls_handshake_timeout=cfg.api.tls_handshake_timeout_seconds,
                                   request_header_timeout=cfg.api.request_header_timeout_seconds,
                                   send_stall_timeout=cfg.api.send_stall_timeout_seconds),
            body_timeout=cfg.api.request_body_timeout_seconds,
            auditor=auditor,
            flowcontrol=fairness.Fairness(fairness.Settings(
                max_requests_inflight=cfg.flowcontrol.max_requests_inflight,
                queue_length_per_flow=cfg.flowcontrol.queue_length_per_flow,
                max_queued=cfg.flowcontrol.max_queued, queue_wait_seconds=cfg.flowcontrol.queue_wait_seconds)),
        )
        if auditor.enabled:
            self.supervisor.start("audit-writer", auditor.run())
        self._runner = await server.serve(
            api, host=cfg.bind_address, port=cfg.https_port, ssl_context=tls.context,
            idle_timeout=cfg.api.idle_timeout_seconds,
        )
        self.gates["api"] = True
        self.supervisor.start("certificates", self._watch_certificates(tls, sans=sans, url=url))
        # The network before the controllers: its boot sync writes every Service's rules in one
        # batch, which goes twice as fast without the controllers' first passes over the same
        # objects competing for the loop (and the table is in place sooner after a restart).
        await self._start_network()
        self._start_control_plane(ca_pem=the_pki.ca_cert.read_text())
        # Everything made at boot (modules, schemas, caches) lives as long as the process: move it
        # out of the collector's reach, so a full collection later scans only what came since
        # (unfrozen, a full pass over the boot heap stalled requests by tens of milliseconds).
        gc.collect()
        gc.freeze()
        memory.release_free_memory()  # what boot used and freed
        log.info("edgekube API serving on %s; kubeconfig at %s", url, self.kubeconfig)
        await self._start_dns()
        await self._start_kubelet()
        self._start_manifests()
        if cfg.store.snapshot_interval_hours > 0:
            self.supervisor.start("snapshots", self._snapshot_loop())
            self._control_plane.append("snapshots")

    def _auditor(self) -> audit.Auditor:
        """The audit log (api/audit.py), when a policy is configured: its file opened now, so a
        policy or a log file it cannot have stops the boot with what is wrong."""
        a = self.cfg.audit
        if a.policy_file is None:
            return audit.Auditor(None, settings=None)
        path = None if a.log_path == "-" else Path(a.log_path) if a.log_path else self.cfg.data_dir / "logs" / "audit.log"
        auditor = audit.Auditor(audit.load_policy(a.policy_file), settings=audit.LogSettings(
            path=path, max_size_mb=a.log_maxsize, max_backups=a.log_maxbackup, max_age_days=a.log_maxage,
            buffer_size=a.log_buffer_size))
        auditor.open()
        self.auditor = auditor
        return auditor

    def _claim_data_dir(self) -> None:
        """Before anything in the data dir is read or written: one process per data dir, and a
        database that is this data dir's own (not lost, emptied, rolled back or foreign)."""
        self.lock.acquire()
        if self.identity is None:
            self.identity = identity_mod.verify(self.cfg.data_dir)

    def _trusted_now(self) -> tuple[datetime.datetime, datetime.datetime]:
        """(wall clock, trusted time): see edgekube._cogs.timefloor. A wall clock behind the
        trusted time is named in the log (at most once a day)."""
        wall = self.clock.now()
        now = timefloor.trusted_now(wall, last_seen=self.last_seen.read())
        mono = self.clock.monotonic()
        if now - wall > datetime.timedelta(hours=1) and mono >= self._clock_noticed:
            self._clock_noticed = mono + _CLOCK_NOTICE_SECONDS
            log.warning("the system clock reads %s, before this build or the last time this node saw (%s): "
                        "certificates are issued from the latter; set the clock (NTP, an RTC)",
                        clock_mod.rfc3339(wall), clock_mod.rfc3339(now))
        return wall, now

    async def _watch_certificates(self, tls: pki.ServingContext, *, sans: dict[str, list[str]], url: str) -> None:
        """While running: renew leaf certificates in their last 90 days (as k3s; in a forked
        child, so this process never loads `cryptography`), hourly and at once when the wall
        clock is set (NTP reaching a board that booted at 1970 moves the trusted time by years);
        load renewed or rotated files (`edgekube certs rotate`) into the serving context and the
        kubeconfig; warn about the CA once a day; note the time seen (written once a day).
        Nothing here fails the task (which would stop the node): a failure is logged and tried
        again at the next poll or check."""
        mono, wall = self.clock.monotonic, self.clock.now
        checked = noticed = mono()
        last_wall, last_mono = wall(), mono()
        kubeconfig_stale = False
        while True:
            await asyncio.sleep(self.cfg.api.certificate_poll_seconds)
            step = (wall() - last_wall).total_seconds() - (mono() - last_mono)
            last_wall, last_mono = wall(), mono()
            if abs(step) > _CLOCK_STEP_SECONDS:
                log.info("the wall clock was set %s by %.0f s: checking the certificates now",
                         "forward" if step > 0 else "back", abs(step))
            if abs(step) > _CLOCK_STEP_SECONDS or mono() - checked >= _CERT_CHECK_SECONDS:
                checked = mono()
                at, now = self._trusted_now()
                self.last_seen.record(at)
                try:
                    await pki.renew(tls.pki, **sans, now=now)
                except OSError as exc:  # PkiError, or no fork (memory)
                    log.error("renewing the certificates under %s: %s", tls.pki.dir, exc)
                if mono() - noticed >= _CLOCK_NOTICE_SECONDS:
                    noticed = mono()
                    pki.check_ca(tls.pki, now=now)
            if tls.changed():
                try:
                    tls.reload()
                except (ssl.SSLError, OSError) as exc:
                    log.error("loading the renewed certificates under %s failed (%s); serving the previous ones",
                              tls.pki.dir, exc)
                    continue
                served = pki.inspect(tls.pki.server_cert)
                log.info("serving the certificate in %s (valid until %s)", tls.pki.server_cert,
                         clock_mod.rfc3339(served.not_after) if served else "?")
                kubeconfig_stale = True
            if kubeconfig_stale:
                try:
                    pki.rewrite_kubeconfig(self.kubeconfig, pki=tls.pki, default_url=url)
                    kubeconfig_stale = False
                except OSError as exc:  # a full disk
                    log.error("rewriting %s with the renewed admin certificate: %s", self.kubeconfig, exc)

    async def _start_kubelet(self) -> None:
        """The kubelet (DESIGN §5): boot registers a Ready node (quick, no network), then its
        tasks run supervised. Its gate opens once the node is registered."""
        assert self.registry is not None
        cfg = self.cfg
        if not cfg.enabled("kubelet"):
            return
        client = local.LocalClient(self.registry, manager="kubelet", user=rbac_bootstrap.node_user(self.node_name), audit=self.auditor)
        recorder = events_mod.EventRecorder(client, clock=self.clock, ttl_seconds=cfg.controllers.event_ttl_seconds,
                                            limit=cfg.controllers.max_events)
        network: kubelet_network.PodNetwork = kubelet_network.Loopback()
        if cfg.enabled("network"):
            network = await self._start_pod_network()
        self.kubelet = kubelet_mod.Kubelet(
            cfg.kubelet,
            options=kubelet_mod.Options(node_name=self.node_name, data_dir=cfg.data_dir,
                                        cluster_dns=cfg.cluster_dns if cfg.enabled("dns") else "",
                                        cluster_domain=cfg.cluster_domain, resolv_conf=self.resolv_conf),
            client=client, events=recorder.for_component("kubelet", self.node_name), clock=self.clock,
            metrics=self.metrics, network=network)
        await self.kubelet.boot()
        self.supervisor.start("kubelet/events", recorder.run())
        self._kubelet_tasks.append("kubelet/events")
        for name, run in self.kubelet.runners():
            self.supervisor.start(name, run())
            self._kubelet_tasks.append(name)
        self.gates["kubelet"] = True

    async def _snapshot_loop(self) -> None:
        """`edgekube snapshot save` every `snapshot-interval-hours` (monotonic: no clock setting
        brings one forward or holds it back), the newest `snapshot-retention` kept. A snapshot
        that fails is logged and tried again at the next interval; it never stops the node."""
        from edgekube.store import (
            snapshot as snapshot_mod,  # only when snapshots are on: tarfile, gzip
        )

        s = self.cfg.store
        prefix = f"edgekube-{self.node_name}-"
        while True:
            await asyncio.sleep(s.snapshot_interval_hours * 3600)
            assert self.store is not None
            now = self.clock.now()
            dest = s.snapshot_dir / f"{prefix}{now.astimezone(datetime.UTC):%Y%m%dT%H%M%SZ}{snapshot_mod.SUFFIX}"
            try:
                await asyncio.to_thread(s.snapshot_dir.mkdir, mode=0o700, parents=True, exist_ok=True)
                info = await asyncio.to_thread(snapshot_mod.save, self.cfg.data_dir, dest, copy=self.store.copy_database,
                                               version=__version__, now=now)
                gone = await asyncio.to_thread(snapshot_mod.prune, s.snapshot_dir, keep=s.snapshot_retention,
                                               prefix=prefix, newest=dest)
            except (OSError, snapshot_mod.SnapshotError) as exc:
                log.error("scheduled snapshot to %s failed: %s", dest, exc)
                continue
            except Exception:  # a snapshot never stops the node: logged, tried at the next interval
                log.exception("scheduled snapshot to %s failed", dest)
                continue
            log.info("scheduled snapshot: revision %d saved to %s%s", info.revision, dest,
                     f"; {len(gone)} older removed" if gone else "")

    def _start_manifests(self) -> None:
        """The deployer of the manifests folder (controllers/manifests.py), last: what its files
        hold may need the cluster DNS and the kubelet, and a manifest never holds up the boot."""
        assert self.registry is not None
        if not self.cfg.enabled("manifests"):
            return
        client = local.LocalClient(self.registry, manager=manifests_mod.FIELD_MANAGER,
                                   user=rbac_bootstrap.manifests_user(), audit=self.auditor)
        c = self.cfg.controllers
        deployer = manifests_mod.Deployer(c.manifests_dir, client=client, clock=self.clock,
                                          check_seconds=float(c.manifests_check_seconds))
        self.supervisor.start("manifests", deployer.run())
        self._control_plane.append("manifests")

    async def _start_dns(self) -> None:
        """Cluster DNS (net/dns.py) on the node's pod gateway address, behind the kube-dns
        Service. Its gate opens once it listens; a port it cannot bind stops the boot."""
        assert self.registry is not None
        cfg = self.cfg
        client = local.LocalClient(self.registry, manager="edgekube-dns",
                                   user=rbac_bootstrap.component_user(rbac_bootstrap.DNS), audit=self.auditor)
        if not cfg.enabled("dns"):
            await dnsservice.disabled(client)
            return
        # Imported here, not at the top: dnspython costs about 6 MiB of RSS, which a node
        # without the cluster DNS should not pay.
        from edgekube.net import dns as dns_mod

        self.dns = dns_mod.ClusterDns(client, cfg.dns, address=dns_mod.listen_address(cfg.dns, cluster_cidr=cfg.cluster_cidr),
                                      cluster_ip=cfg.cluster_dns, domain=cfg.cluster_domain, node_name=self.node_name,
                                      resolv_conf=self.resolv_conf)
        await self.dns.start()
        for name, run in self.dns.runners():
            self.supervisor.start(name, run())
            self._dns_tasks.append(name)
        self.gates["dns"] = True

    async def _start_network(self) -> None:
        """The service proxy, the LoadBalancer status and NetworkPolicy (DESIGN §6). A machine without nftables
        stops the boot here with what it lacks (nft.Unavailable); the gate opens once the whole
        table is in the kernel. Its rules outlive the process, as containers do."""
        assert self.registry is not None
        cfg = self.cfg
        if not cfg.enabled("network"):
            return
        runner = nft.Nft()
        await proxy_mod.check_kernel(runner)
        client = local.LocalClient(self.registry, manager="edgekube-proxy",
                                   user=rbac_bootstrap.component_user(rbac_bootstrap.PROXY), audit=self.auditor)
        factory = informer.InformerFactory(client)
        table = nft.Table(runner)  # one table, one lock: the proxy's and the policies' batches never interleave
        proxy = proxy_mod.Proxy(factory, table=table, node_name=self.node_name,
                                settings=proxyrules.Settings(cluster_cidrs=(cfg.cluster_cidr,),
                                                             service_cidrs=(cfg.service_cidr,)))
        lb_client = local.LocalClient(self.registry, manager="edgekube-servicelb",
                                      user=rbac_bootstrap.component_user(rbac_bootstrap.SERVICELB), audit=self.auditor)
        lb = servicelb.ServiceLBController(lb_client, factory.get("v1", "Service"), factory.get("v1", "Node"))
        policies = policysync.PolicyAgent(factory, table=table, node_name=self.node_name)
        for name, inf in factory.unstarted():
            self.supervisor.start(f"network/{name}", inf.run())
            self._network_tasks.append(f"network/{name}")
        await proxy.boot()
        for name, run in ((proxy.name, proxy.run), (lb.name, lb.run), (policies.name, policies.run)):
            self.supervisor.start(name, run())
            self._network_tasks.append(name)
        self.gates["network"] = True

    async def _start_pod_network(self) -> kubelet_network.PodNetwork:
        """The pod network (edgekube.net.podnet): the node's bridge and pod CIDR, before the
        kubelet, which puts its pods on it. Its gate opens once the bridge is up; a node that
        cannot have it stops at boot, as when the kubelet cannot start."""
        # Imported here, not at the top: pyroute2 costs about 5 MiB of RSS and 50 ms of boot,
        # which only a node that runs a pod network should pay.
        from edgekube.net import podnet

        assert self.registry is not None
        cfg = self.cfg
        try:
            network = podnet.BridgeNetwork(
                podnet.Settings(node_name=self.node_name, cluster_cidrs=podnet.parse_cidrs(cfg.cluster_cidr),
                                bridge=cfg.pod_network.bridge, mtu=cfg.pod_network.mtu,
                                state_dir=cfg.data_dir / "network"),
                client=local.LocalClient(self.registry, manager="edgekube-network",
                                         user=rbac_bootstrap.component_user(rbac_bootstrap.POD_NETWORK), audit=self.auditor))
            await network.start()
        except ValueError as exc:
            raise kubelet_mod.KubeletError(f"network: cluster-cidr {cfg.cluster_cidr!r}: {exc}") from None
        except podnet.StartError as exc:
            raise kubelet_mod.KubeletError(str(exc)) from None
        self.gates["pod-network"] = True
        return network

    def _start_control_plane(self, *, ca_pem: str) -> None:
        """The controllers and the scheduler (DESIGN §4), over shared informers."""
        assert self.registry is not None
        cfg = self.cfg
        if not (cfg.enabled("controllers") or cfg.enabled("scheduler")):
            return
        client = local.LocalClient(self.registry, manager="edgekube-controller-manager",
                                   user=rbac_bootstrap.component_user(rbac_bootstrap.CONTROLLER_MANAGER), audit=self.auditor)
        factory = informer.InformerFactory(client)
        recorder = events_mod.EventRecorder(client, clock=self.clock, ttl_seconds=cfg.controllers.event_ttl_seconds,
                                            limit=cfg.controllers.max_events)
        runners: list[tuple[str, Callable[[], Coroutine[Any, Any, Any]]]] = []
        if cfg.enabled("controllers"):
            ctx = manager.Context(client=client, informers=factory, events=recorder, clock=self.clock,
                                  settings=cfg.controllers, ca_pem=ca_pem,
                                  local_node=self.node_name if cfg.enabled("kubelet") else "", metrics=self.metrics,
                                  sign_legacy_token=self._legacy_signer())
            controllers, gc = manager.build(ctx)
            runners.append(("garbage-collector/graph", gc.watch))
            runners.extend((ctl.name, ctl.run) for ctl in controllers)
        if cfg.enabled("scheduler"):
            scheduler_client = local.LocalClient(self.registry, manager="edgekube-scheduler",
                                                 user=rbac_bootstrap.component_user(rbac_bootstrap.SCHEDULER), audit=self.auditor)
            sched = scheduler_mod.Scheduler(scheduler_client, factory,
                                            recorder.for_component("default-scheduler"), clock=self.clock)
            runners.append(("scheduler", sched.run))
        for name, inf in factory.unstarted():
            self.supervisor.start(name, inf.run())
            self._control_plane.append(name)
        self.supervisor.start("events", recorder.run())
        self._control_plane.append("events")

        async def after_sync(run: Callable[[], Coroutine[Any, Any, Any]]) -> None:
            # A controller that reconciled before its caches were full would act on half a
            # picture (a ReplicaSet seeing none of its pods would make them all again).
            await factory.wait_synced()
            await run()

        for name, run in runners:
            self.supervisor.start(name, after_sync(run))
            self._control_plane.append(name)

    def _advertise_address(self) -> str:
        """Where pods reach the API (the `kubernetes` Service's endpoint): the configured
        advertise address, else the bind address when it is a specific, non-loopback one, else
        the node's InternalIP (as the kubelet reports it), which a 0.0.0.0 listener serves."""
        cfg = self.cfg
        if cfg.advertise_address:
            return cfg.advertise_address
        bind = cfg.bind_address
        if bind not in ("0.0.0.0", "::", "") and not ipaddress.ip_address(bind).is_loopback:
            return bind
        return kubelet_node.internal_ip()

    def _service_account_tokens(self, *, advertise: str) -> satokens.ServiceAccountTokens:
        """The service account token issuer and authenticator (api/auth/satokens.py), its key
        made at first boot; TokenRequest (`serviceaccounts/token`) served through the registry."""
        assert self.store is not None and self.registry is not None
        cfg = self.cfg
        issuer = cfg.api.service_account_issuer or satokens.default_issuer(cfg.cluster_domain)
        settings = satokens.Settings(
            issuer=issuer, audiences=(issuer,),
            max_expiration_seconds=cfg.api.service_account_max_token_expiration_seconds,
            extend_expiration=cfg.api.service_account_extend_token_expiration,
            jwks_uri=f"https://{_url_host(advertise)}:{cfg.https_port}{satokens.JWKS_PATH}")
        tokens = satokens.tokens_for(self.store, catalog=self.catalog, tls_dir=cfg.data_dir / "tls", settings=settings,
                                     clock=self.clock, key_files=cfg.api.service_account_key_files)

        async def token_request(namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
            return await tokens.token_request(namespace=namespace, name=name, body=body)

        self.registry.subresource_creators["serviceaccounts/token"] = token_request
        self.registry.pod_admission.append(saadmission.ServiceAccountAdmission(self.store, catalog=self.catalog).admit)
        return tokens

    def _legacy_signer(self) -> Callable[[dict[str, Any], dict[str, Any]], str] | None:
        tokens = self.tokens
        if tokens is None:
            return None
        return lambda account, secret: tokens.legacy_token(account, secret=secret)

    async def _ensure_kubernetes_service(self, *, service_ip: str, address: str) -> None:
        """The `default/kubernetes` Service that in-cluster clients use to reach the API, its
        endpoint the advertise address (`_advertise_address`)."""
        assert self.registry is not None
        svc_info = self.catalog.lookup("", "v1", "services")
        ep_info = self.catalog.lookup("", "v1", "endpoints")
        assert svc_info is not None and ep_info is not None
        labels = {"component": "apiserver", "provider": "kubernetes"}
        svc = {
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": service_ip,
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": self.cfg.https_port}],
                "sessionAffinity": "None",
            },
        }
        assert self.store is not None
        if self.store.get(svc_info.key("kubernetes", "default")) is None:
            await self.registry.create(svc_info, svc, namespace="default")
        eps = {
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": address}],
                         "ports": [{"name": "https", "port": self.cfg.https_port, "protocol": "TCP"}]}],
        }
        try:
            current = self.registry.get(ep_info, namespace="default", name="kubernetes")
            if current.get("subsets") != eps["subsets"]:
                current["subsets"] = eps["subsets"]
                await self.registry.update(ep_info, current, namespace="default", name="kubernetes")
        except errors.APIError as exc:
            if exc.code != 404:
                raise
            await self.registry.create(ep_info, eps, namespace="default")
        # And its EndpointSlice, as upstream's API server keeps it (clients that read slices).
        slice_info = self.catalog.lookup("discovery.k8s.io", "v1", "endpointslices")
        assert slice_info is not None
        family = "IPv6" if ":" in address else "IPv4"
        endpoints = [{"addresses": [address], "conditions": {"ready": True}}]
        ports = [{"name": "https", "port": self.cfg.https_port, "protocol": "TCP"}]
        try:
            current = self.registry.get(slice_info, namespace="default", name="kubernetes")
            if current.get("endpoints") != endpoints or current.get("ports") != ports:
                current.update(addressType=family, endpoints=endpoints, ports=ports)
                await self.registry.update(slice_info, current, namespace="default", name="kubernetes")
        except errors.APIError as exc:
            if exc.code != 404:
                raise
            await self.registry.create(slice_info, {
                "metadata": {"name": "kubernetes", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "kubernetes"}},
                "addressType": family, "endpoints": endpoints, "ports": ports}, namespace="default")

    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT or a component failure, stop. Returns the exit code."""
        # A second server on this data dir, or a database that is not this data dir's, stops
        # here, with one line and nothing touched.
        self._claim_data_dir()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        code = 0
        # systemd (Type=notify) hears READY=1 once every gate is open; watchdog pings come from
        # the loop from the start (systemd counts them once the service is ready; the boot is
        # TimeoutStartSec's), so a wedged loop is restarted.
        notifier = sdnotify.Notifier.from_environ()
        if notifier.enabled and notifier.watchdog_seconds is not None:
            self.supervisor.start("watchdog", notifier.watchdog())
        try:
            notifier.status("starting")
            await self.start()
            notifier.ready(f"ready: node {self.node_name}, API on port {self.cfg.https_port}")
            stop = asyncio.ensure_future(self._stop.wait())
            failed = asyncio.ensure_future(self.supervisor.wait_failure())
            done, _ = await asyncio.wait({stop, failed}, return_when=asyncio.FIRST_COMPLETED)
            if failed in done:
                log.error("component %s failed; shutting down", failed.result())
                code = 1
            for f in (stop, failed):
                f.cancel()
        except (kubelet_mod.KubeletError, nft.NftError, audit.AuditError, audit.PolicyError) as exc:
            log.error("%s", exc)
            code = 1
        finally:
            notifier.stopping()
            await self.stop()
            notifier.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return code

    async def stop(self) -> None:
        for gate in self.gates:
            self.gates[gate] = False
        self.supervisor.begin_stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        # The kubelet, then controllers and the scheduler go before the store they write to.
        # (The kubelet's containers go on running: the next start adopts them.)
        await self.supervisor.stop_some(self._kubelet_tasks)
        self._kubelet_tasks.clear()
        if self.kubelet is not None:
            await self.kubelet.close()
            self.kubelet = None
        await self.supervisor.stop_some(self._dns_tasks)
        self._dns_tasks.clear()
        if self.dns is not None:
            await self.dns.close()
            self.dns = None
        await self.supervisor.stop_some(self._network_tasks)  # the table stays in the kernel
        self._network_tasks.clear()
        await self.supervisor.stop_some(self._control_plane)
        self._control_plane.clear()
        if self.auditor is not None:  # after every writer, in process or not, has stopped
            await self.supervisor.stop_some(["audit-writer"])
            await self.auditor.close()  # what the last requests and components queued
            self.auditor = None
        if self.registry is not None:
            await self.registry.policy.close()  # the admission webhooks' client connections
        if self.store is not None:
            # Queued writes finish and the memory tier is saved before the database closes.
            await self.store.close()
            if self.identity is not None:
                identity_mod.record(self.cfg.data_dir, cluster=self.identity.cluster, revision=self.store.revision)
            self.store = None
        self.offload.close()
        self.last_seen.record(self.clock.now(), force=True)
        await self.supervisor.stop()
        self.lock.release()
        log.info("edgekube stopped")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def data_paths(data_dir: Path) -> dict[str, Path]:
    return {"db": data_dir / "db", "tls": data_dir / "tls", "kubeconfig": data_dir / "kubeconfig.yaml"}
