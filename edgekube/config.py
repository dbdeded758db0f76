"""Configuration: built-in defaults, then the first-boot file, then a YAML file, then command-line flags.

The defaults live here, in code, because the single binary has no data files to read;
`configs/config.yaml` in the repo is the same set written out for users, and a test keeps the two
identical. Keys are the long flag names (`https-port`, `data-dir`, ...). A key the program does
not know is an error that names the key and the file, never silently ignored: a typo in an edge
device's config must not quietly fall back to a default.

The first-boot file (`/boot/firmware/edgekube.yaml`, or `/boot/edgekube.yaml` on older Raspberry
Pi OS images) is what a laptop can write on an SD card's FAT partition before the card goes into
a device: the same settings (they count under `/etc/edgekube/config.yaml`, which wins), plus
`registries:` (the content of a registries.yaml, used when `kubelet.registries-file` does not
exist) and `manifests:` (a list of objects, deployed as a file of the manifests folder). It is
read at every start, so an edit on the card takes effect at the next boot. Unlike the config
file, a first-boot file that cannot be used (bad YAML, an unknown key) does not stop the node:
it is ignored whole, and the server logs why at start (`Config.boot.error`); the registries and
manifests it gave at its last good start stay in place (runtime.apply_boot_config). A device whose
card was edited wrongly must still come up, with its workloads.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

COMPONENTS = ("scheduler", "controllers", "kubelet", "network", "dns", "manifests")
DEFAULT_CONFIG_FILE = Path("/etc/edgekube/config.yaml")
# The first existing one is read (see the module doc).
BOOT_CONFIG_FILES = (Path("/boot/firmware/edgekube.yaml"), Path("/boot/edgekube.yaml"))

DEFAULTS: dict[str, Any] = {
    "data-dir": "/var/lib/edgekube",
    "bind-address": "0.0.0.0",
    "advertise-address": "",
    "https-port": 6443,
    "disable": [],
    "node-name": "",
    "cluster-cidr": "10.42.0.0/16",
    "service-cidr": "10.43.0.0/16",
    "cluster-dns": "10.43.0.10",
    "cluster-domain": "cluster.local",
    "service-node-port-range": "30000-32767",
    # A CSV of static bearer tokens (upstream's --token-auth-file): token,user,uid,"group1,group2".
    "token-auth-file": "",
    "store": {
        "map-size-mb": 1024,
        "max-size-mb": 8192,
        "compaction-interval-seconds": 300,
        "compaction-window": 10000,
        "compaction-batch": 1000,
        "watch-cache-size": 4096,
        "watcher-queue": 1000,
        "revision-reserve": 10000,
        "preallocate-mb": 1,
        "reserve-mb": 16,
        # `edgekube snapshot save` on a schedule: every this many hours (0: never), the newest
        # `snapshot-retention` kept in `snapshot-dir` ("": <data-dir>/snapshots).
        "snapshot-interval-hours": 0,
        "snapshot-retention": 5,
        "snapshot-dir": "",
    },
    "api": {
        "max-request-bytes": 3145728,
        "default-watch-timeout-seconds": 1800,
        "bookmark-interval-seconds": 60,
        "max-connections": 1000,
        "tls-handshake-timeout-seconds": 10,
        "request-header-timeout-seconds": 32,
        "request-body-timeout-seconds": 60,
        "idle-timeout-seconds": 90,
        "send-stall-timeout-seconds": 60,
        "certificate-poll-seconds": 60,
        "service-account-issuer": "",
        "service-account-max-token-expiration-seconds": 0,
        "service-account-extend-token-expiration": True,
        # PEM public (or private) keys that service account tokens may also be signed with, besides
        # the data dir's tls/service.key (upstream's repeated --service-account-key-file): the
        # old key's public half after a rotation, until the tokens it signed have expired.
        "service-account-key-files": [],
    },
    "controllers": {
        "node-monitor-grace-period-seconds": 40,
        "event-ttl-seconds": 3600,
        "max-events": 5000,
        # Every object of the *.yaml/*.yml/*.json files here applied at boot and on change, and
        # pruned when its file no longer holds it (controllers/manifests.py); "": <data-dir>/manifests.
        "manifests-dir": "",
        "manifests-check-seconds": 10,
    },
    "kubelet": {
        "root-dir": "",
        "pod-manifest-path": "",
        "pod-log-dir": "/var/log/pods",
        "registries-file": "/etc/edgekube/registries.yaml",
        "max-pods": 110,
        "system-reserved-cpu": "100m",
        "system-reserved-memory": "128Mi",
        "eviction-hard-memory": "100Mi",
        "eviction-hard-nodefs-percent": 10,
        "image-gc-high-percent": 85,
        "image-gc-low-percent": 80,
        "cgroup-parent": "kubepods",
        "pod-pids-limit": 0,
        "seccomp-default": True,
        "runc": "runc",
        "container-log-max-size": "10Mi",
        "container-log-max-files": 5,
        "pod-manifest-check-seconds": 20,
    },
    "dns": {
        "listen-address": "",
        "port": 53,
        "metrics-port": 9153,
        "resolv-conf": "",
        "cache-size-mb": 4,
        "max-concurrent": 1000,
    },
    "pod-network": {
        "bridge": "ek0",
        "mtu": 0,
    },
    "audit": {
        "policy-file": "",
        "log-path": "",
        "log-maxsize": 10,
        "log-maxbackup": 5,
        "log-maxage": 0,
        "log-buffer-size": 10000,
    },
    "flowcontrol": {
        "max-requests-inflight": 40,
        "queue-length-per-flow": 128,
        "max-queued": 512,
        "queue-wait-seconds": 15,
    },
    "pod-security": {
        "enforce": "privileged",
        "enforce-version": "latest",
        "audit": "privileged",
        "audit-version": "latest",
        "warn": "privileged",
        "warn-version": "latest",
        "exempt-usernames": [],
        "exempt-runtime-classes": [],
        "exempt-namespaces": ["kube-system"],
    },
    "log-level": "info",
}


class ConfigError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class StoreSettings:
    map_size_mb: int
    max_size_mb: int
    compaction_interval_seconds: float
    compaction_window: int
    compaction_batch: int
    watch_cache_size: int
    watcher_queue: int
    revision_reserve: int
    preallocate_mb: int
    reserve_mb: int
    snapshot_interval_hours: float = 0.0
    snapshot_retention: int = 5
    snapshot_dir: Path = Path("/var/lib/edgekube/snapshots")


@dataclasses.dataclass(frozen=True)
class ApiSettings:
    max_request_bytes: int
    default_watch_timeout_seconds: int
    bookmark_interval_seconds: float
    # Slow and idle clients (api/listener.py): connections open at once, then the seconds allowed
    # for a TLS handshake, a whole request head, a whole request body, between requests, and for
    # a client to take any of what is sent to it.
    max_connections: int = 1000
    tls_handshake_timeout_seconds: int = 10
    request_header_timeout_seconds: int = 32
    request_body_timeout_seconds: int = 60
    idle_timeout_seconds: int = 90
    send_stall_timeout_seconds: int = 60
    # How often the running server looks at its certificate files (renewed, rotated) and at the
    # wall clock (a step makes it check the certificates' dates at once).
    certificate_poll_seconds: int = 60
    # Service account tokens (api/auth/satokens.py): the issuer ("": https://kubernetes.default.svc.
    # <cluster-domain>, also the API's audience), a cap on requested lifetimes (0: none), and
    # upstream's year-long extension of the kubelet's 3607 s tokens.
    service_account_issuer: str = ""
    service_account_max_token_expiration_seconds: int = 0
    service_account_extend_token_expiration: bool = True
    service_account_key_files: tuple[Path, ...] = ()


@dataclasses.dataclass(frozen=True)
class ControllerSettings:
    node_monitor_grace_period_seconds: int
    event_ttl_seconds: int
    max_events: int
    manifests_dir: Path = Path("/var/lib/edgekube/manifests")
    manifests_check_seconds: int = 10


@dataclasses.dataclass(frozen=True)
class KubeletSettings:
    root_dir: Path  # runc state, bundles, pod directories, network namespaces
    pod_manifest_path: Path  # the static pods' manifest files
    pod_log_dir: Path
    registries_file: Path
    max_pods: int
    system_reserved_cpu: str  # quantities, checked for their syntax here
    system_reserved_memory: str
    eviction_hard_memory: str
    eviction_hard_nodefs_percent: int
    image_gc_high_percent: int
    image_gc_low_percent: int
    cgroup_parent: str
    pod_pids_limit: int  # 0: no limit
    seccomp_default: bool
    runc: str
    container_log_max_size: int = 10 * 1024 * 1024  # bytes; a live CRI log file is rotated at this size; 0: never
    container_log_max_files: int = 5  # files kept per container run, the live one included
    pod_manifest_check_seconds: int = 20  # the static pods' folder is read again this often


@dataclasses.dataclass(frozen=True)
class DnsSettings:
    listen_address: str  # "": the node's pod gateway (the first address of its pod CIDR)
    port: int
    metrics_port: int  # 0: no metrics
    resolv_conf: Path | None  # None: /etc/resolv.conf, or systemd-resolved's list behind its stub
    cache_size_mb: int
    max_concurrent: int  # forwarded questions at once; more are REFUSED


@dataclasses.dataclass(frozen=True)
class PodNetworkSettings:
    bridge: str = "ek0"  # the node's bridge for its pods (the `network` component)
    mtu: int = 0  # of the bridge and the pods' links; 0: the MTU of the node's uplink, else 1500


@dataclasses.dataclass(frozen=True)
class AuditSettings:
    """The audit log (api/audit.py), upstream's --audit-* flags."""

    policy_file: Path | None = None  # None: no audit log
    log_path: str = ""  # "": <data-dir>/logs/audit.log; "-": stdout
    log_maxsize: int = 10  # megabytes before the file is rotated; 0: never
    log_maxbackup: int = 5  # rotated files kept; 0: all
    log_maxage: int = 0  # days a rotated file is kept; 0: any age
    log_buffer_size: int = 10000  # events waiting for the writer; more are dropped and counted


@dataclasses.dataclass(frozen=True)
class FlowControlSettings:
    """API priority and fairness (api/fairness.py), sized for a device."""

    max_requests_inflight: int = 40  # seats shared out among the priority levels; 0: no cap
    queue_length_per_flow: int = 128  # requests of one user waiting in one priority level
    max_queued: int = 512  # requests waiting in one priority level, all users
    queue_wait_seconds: int = 15  # a request waits this long for a seat, then is refused (429)


@dataclasses.dataclass(frozen=True)
class PodSecuritySettings:
    """PodSecurity admission's defaults (for namespaces without labels) and exemptions, as
    upstream's PodSecurityConfiguration; the level of each mode is (level, version)."""

    enforce: tuple[str, str] = ("privileged", "latest")
    audit: tuple[str, str] = ("privileged", "latest")
    warn: tuple[str, str] = ("privileged", "latest")
    exempt_usernames: tuple[str, ...] = ()
    exempt_runtime_classes: tuple[str, ...] = ()
    exempt_namespaces: tuple[str, ...] = ("kube-system",)


@dataclasses.dataclass(frozen=True)
class BootConfig:
    """What the first-boot file gave beyond settings (module doc)."""

    path: Path
    registries: Mapping[str, Any] | None = None  # a registries.yaml document
    manifests: tuple[Mapping[str, Any], ...] | None = None
    error: str = ""  # why the file was ignored ("": it was used)


@dataclasses.dataclass(frozen=True)
class Config:
    data_dir: Path
    bind_address: str
    https_port: int
    disable: frozenset[str]
    node_name: str
    cluster_cidr: str
    service_cidr: str
    cluster_dns: str
    cluster_domain: str
    node_port_range: tuple[int, int]
    store: StoreSettings
    api: ApiSettings
    controllers: ControllerSettings
    kubelet: KubeletSettings
    log_level: str
    source: str  # where the file part came from, for messages
    dns: DnsSettings = DnsSettings(listen_address="", port=53, metrics_port=9153, resolv_conf=None, cache_size_mb=4,
                                   max_concurrent=1000)
    pod_network: PodNetworkSettings = dataclasses.field(default_factory=PodNetworkSettings)
    audit: AuditSettings = dataclasses.field(default_factory=AuditSettings)
    flowcontrol: FlowControlSettings = dataclasses.field(default_factory=FlowControlSettings)
    # The address pods reach the API on (the `kubernetes` Service's endpoint); "": the bind
    # address when it is a specific one, else the node's InternalIP.
    advertise_address: str = ""
    token_auth_file: Path | None = None
    pod_security: PodSecuritySettings = dataclasses.field(default_factory=PodSecuritySettings)
    boot: BootConfig | None = None  # the first-boot file, when there is one

    def enabled(self, component: str) -> bool:
        return component not in self.disable


def _merge(base: dict[str, Any], over: Mapping[str, Any], *, where: str, path: str = "") -> None:
    for key, value in over.items():
        full = f"{path}{key}"
        if key not in base:
            raise ConfigError(f"{where}: unknown setting '{full}' (known: {', '.join(sorted(base))})")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: '{full}' must be a mapping, got {type(value).__name__}")
            _merge(base[key], value, where=where, path=full + ".")
        else:
            base[key] = value


def load(
    *,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    boot_file: Path | None = None,
) -> Config:
    """Defaults, then the first-boot file (`boot_file`, else the first of `BOOT_CONFIG_FILES`
    present), then `config_file` (or /etc/edgekube/config.yaml when present), then overrides."""
    data = copy.deepcopy(DEFAULTS)
    source = "defaults"
    boot = _boot(data, boot_file if boot_file is not None else next((p for p in BOOT_CONFIG_FILES if p.exists()), None))
    if boot is not None and not boot.error:
        source = str(boot.path)
    path = config_file
    if path is None and DEFAULT_CONFIG_FILE.exists():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        raw = _read_yaml(path)
        if raw is not None:
            _merge(data, raw, where=str(path))
        source = str(path) if source == "defaults" else f"{path} over {source}"
    if overrides:
        _merge(data, {k: v for k, v in overrides.items() if v is not None}, where="command line")
    cfg = _build(data, source=source)
    written = cfg.data_dir / BOOT_REGISTRIES_FILE  # by an earlier start: kept while the file is unusable
    if boot is not None and (boot.registries is not None or (boot.error and written.exists())) \
            and not cfg.kubelet.registries_file.exists():
        cfg = dataclasses.replace(cfg, kubelet=dataclasses.replace(cfg.kubelet, registries_file=written))
    return dataclasses.replace(cfg, boot=boot)


# Where the server writes the first-boot file's registries and manifests (runtime.py).
BOOT_REGISTRIES_FILE = "boot-registries.yaml"
BOOT_MANIFESTS_FILE = "boot-config.yaml"


def _read_yaml(path: Path) -> Mapping[str, Any] | None:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    return raw


def _boot(data: dict[str, Any], path: Path | None) -> BootConfig | None:
    """Merge the first-boot file's settings into `data` and return its own sections; a file
    that cannot be used leaves `data` as it was and says why (module doc)."""
    if path is None:
        return None
    try:
        raw = dict(_read_yaml(path) or {})
        registries = raw.pop("registries", None)
        manifests = raw.pop("manifests", None)
        if registries is not None and not isinstance(registries, Mapping):
            raise ConfigError(f"{path}: 'registries' must be a mapping (a registries.yaml document)")
        if manifests is not None and (not isinstance(manifests, list)
                                      or not all(isinstance(m, Mapping) for m in manifests)):
            raise ConfigError(f"{path}: 'manifests' must be a list of objects")
        merged = copy.deepcopy(data)
        _merge(merged, raw, where=str(path))
        _build(merged, source=str(path))  # its settings valid on their own
    except ConfigError as exc:
        return BootConfig(path, error=f"{exc}; the whole file is ignored")
    data.clear()
    data.update(merged)
    return BootConfig(path, registries=registries, manifests=tuple(manifests) if manifests is not None else None)


def _int(data: Mapping[str, Any], key: str, where: str, *, lo: int = 0, hi: int | None = None) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{where}: '{key}' must be an integer, got {value!r}")
    try:
        out = int(value)
    except ValueError:
        raise ConfigError(f"{where}: '{key}' must be an integer, got {value!r}") from None
    if out < lo or (hi is not None and out > hi):
        raise ConfigError(f"{where}: '{key}' must be between {lo} and {hi}, got {out}")
    return out


def _hours(data: Mapping[str, Any], key: str, where: str) -> float:
    """A number of hours, fractions allowed (0.25: every quarter of an hour); 0: never."""
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{where}: '{key}' must be a number of hours, got {value!r}")
    try:
        out = float(value)
    except ValueError:
        raise ConfigError(f"{where}: '{key}' must be a number of hours, got {value!r}") from None
    if not 0 <= out <= 24 * 366:
        raise ConfigError(f"{where}: '{key}' must be between 0 and {24 * 366} hours, got {value!r}")
    return out


_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|E|Ei|P|Pi)?$")


def _quantity(data: Mapping[str, Any], key: str, where: str) -> str:
    value = str(data[key]).strip()
    if not _QUANTITY.match(value):
        raise ConfigError(f"{where}: '{key}' must be a quantity such as 100m, 512Mi or 1, got {data[key]!r}")
    return value


_SIZE_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
               "Ti": 2**40}
_SIZE = re.compile(r"^([0-9]+)(k|M|G|T|Ki|Mi|Gi|Ti)?$")


def _size(data: Mapping[str, Any], key: str, where: str) -> int:
    """A size in bytes written as a whole quantity (10Mi, 500k, 1048576)."""
    value = data[key]
    m = _SIZE.match(str(value).strip()) if not isinstance(value, bool) and isinstance(value, int | str) else None
    if m is None:
        raise ConfigError(f"{where}: '{key}' must be a size such as 10Mi, 500Ki or 1048576, got {value!r}")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2) or ""]


def _kubelet(k: Mapping[str, Any], *, data_dir: Path, where: str) -> KubeletSettings:
    high = _int(k, "image-gc-high-percent", where, lo=1, hi=100)
    low = _int(k, "image-gc-low-percent", where, lo=0, hi=100)
    if low > high:
        raise ConfigError(f"{where}: 'image-gc-low-percent' ({low}) must not be above 'image-gc-high-percent' ({high})")
    parent = str(k["cgroup-parent"]).strip("/")
    if not parent or ".." in parent.split("/"):
        raise ConfigError(f"{where}: 'cgroup-parent' must be a cgroup path such as kubepods, got {k['cgroup-parent']!r}")
    root = str(k["root-dir"] or "")
    manifests = str(k["pod-manifest-path"] or "")
    return KubeletSettings(
        root_dir=Path(root) if root else data_dir / "kubelet",
        pod_manifest_path=Path(manifests) if manifests else data_dir / "pod-manifests",
        pod_log_dir=Path(str(k["pod-log-dir"])),
        registries_file=Path(str(k["registries-file"])),
        max_pods=_int(k, "max-pods", where, lo=1),
        system_reserved_cpu=_quantity(k, "system-reserved-cpu", where),
        system_reserved_memory=_quantity(k, "system-reserved-memory", where),
        eviction_hard_memory=_quantity(k, "eviction-hard-memory", where),
        eviction_hard_nodefs_percent=_int(k, "eviction-hard-nodefs-percent", where, lo=0, hi=99),
        image_gc_high_percent=high,
        image_gc_low_percent=low,
        cgroup_parent=parent,
        pod_pids_limit=_int(k, "pod-pids-limit", where, lo=0),
        seccomp_default=_bool(k, "seccomp-default", where),
        runc=str(k["runc"]),
        container_log_max_size=_size(k, "container-log-max-size", where),
        container_log_max_files=_int(k, "container-log-max-files", where, lo=2),
        pod_manifest_check_seconds=_int(k, "pod-manifest-check-seconds", where, lo=1),
    )


def _dns(d: Mapping[str, Any], *, where: str) -> DnsSettings:
    address = str(d["listen-address"] or "")
    if address:
        try:
            ipaddress.ip_address(address)
        except ValueError as exc:
            raise ConfigError(f"{where}: 'listen-address' is not an IP address: {exc}") from None
    resolv = str(d["resolv-conf"] or "")
    return DnsSettings(listen_address=address, port=_int(d, "port", where, lo=0, hi=65535),
                       metrics_port=_int(d, "metrics-port", where, lo=0, hi=65535),
                       resolv_conf=Path(resolv) if resolv else None,
                       cache_size_mb=_int(d, "cache-size-mb", where, lo=1, hi=1024),
                       max_concurrent=_int(d, "max-concurrent", where, lo=1))
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def _pod_network(p: Mapping[str, Any], *, where: str) -> PodNetworkSettings:
    bridge = str(p["bridge"])
    if not _IFNAME.match(bridge) or bridge in (".", ".."):
        raise ConfigError(f"{where}: 'bridge' must be an interface name of 1 to 15 letters, digits, '_', '.' or '-', "
                          f"got {p['bridge']!r}")
    mtu = _int(p, "mtu", where, lo=0, hi=65535)
    if 0 < mtu < 576:
        raise ConfigError(f"{where}: 'mtu' must be 0 (the uplink's) or at least 576, got {mtu}")
    return PodNetworkSettings(bridge=bridge, mtu=mtu)


def _audit(a: Mapping[str, Any], *, where: str) -> AuditSettings:
    policy = str(a["policy-file"] or "")
    return AuditSettings(policy_file=Path(policy) if policy else None, log_path=str(a["log-path"] or ""),
                         log_maxsize=_int(a, "log-maxsize", where), log_maxbackup=_int(a, "log-maxbackup", where),
                         log_maxage=_int(a, "log-maxage", where), log_buffer_size=_int(a, "log-buffer-size", where, lo=1))


def _flowcontrol(f: Mapping[str, Any], *, where: str) -> FlowControlSettings:
    return FlowControlSettings(max_requests_inflight=_int(f, "max-requests-inflight", where),
                               queue_length_per_flow=_int(f, "queue-length-per-flow", where),
                               max_queued=_int(f, "max-queued", where),
                               queue_wait_seconds=_int(f, "queue-wait-seconds", where, lo=1))


def _build(data: Mapping[str, Any], *, source: str) -> Config:
    disable = data["disable"]
    if isinstance(disable, str):
        disable = [disable]
    if not isinstance(disable, Sequence):
        raise ConfigError(f"{source}: 'disable' must be a list of components")
    for comp in disable:
        if comp not in COMPONENTS:
            raise ConfigError(f"{source}: cannot disable unknown component '{comp}' (one of: {', '.join(COMPONENTS)})")
    for key in ("cluster-cidr", "service-cidr"):
        try:
            ipaddress.ip_network(data[key])
        except ValueError as exc:
            raise ConfigError(f"{source}: '{key}' is not a CIDR: {exc}") from None
    try:
        ipaddress.ip_address(data["cluster-dns"])
    except ValueError as exc:
        raise ConfigError(f"{source}: 'cluster-dns' is not an IP address: {exc}") from None
    rng = str(data["service-node-port-range"])
    try:
        lo_s, hi_s = rng.split("-")
        lo, hi = int(lo_s), int(hi_s)
        if not 0 < lo <= hi <= 65535:
            raise ValueError(rng)
    except ValueError:
        raise ConfigError(f"{source}: 'service-node-port-range' must look like 30000-32767, got {rng!r}") from None
    level = str(data["log-level"]).lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{source}: 'log-level' must be debug, info, warning or error")
    s = data["store"]
    a = data["api"]
    where_s = f"{source} (store)"
    where_a = f"{source} (api)"
    c = data["controllers"]
    where_c = f"{source} (controllers)"
    data_dir = Path(str(data["data-dir"]))
    return Config(
        data_dir=data_dir,
        bind_address=str(data["bind-address"]),
        https_port=_int(data, "https-port", source, lo=1, hi=65535),
        disable=frozenset(disable),
        node_name=str(data["node-name"] or ""),
        cluster_cidr=str(data["cluster-cidr"]),
        service_cidr=str(data["service-cidr"]),
        cluster_dns=str(data["cluster-dns"]),
        cluster_domain=str(data["cluster-domain"]),
        node_port_range=(lo, hi),
        store=StoreSettings(
            map_size_mb=_int(s, "map-size-mb", where_s, lo=1),
            max_size_mb=_int(s, "max-size-mb", where_s, lo=1),
            compaction_interval_seconds=float(_int(s, "compaction-interval-seconds", where_s)),
            compaction_window=_int(s, "compaction-window", where_s, lo=1),
            compaction_batch=_int(s, "compaction-batch", where_s, lo=1),
            watch_cache_size=_int(s, "watch-cache-size", where_s, lo=1),
            watcher_queue=_int(s, "watcher-queue", where_s, lo=1),
            revision_reserve=_int(s, "revision-reserve", where_s, lo=1),
            preallocate_mb=_int(s, "preallocate-mb", where_s, lo=0, hi=1024),
            reserve_mb=_int(s, "reserve-mb", where_s, lo=0, hi=4096),
            snapshot_interval_hours=_hours(s, "snapshot-interval-hours", where_s),
            snapshot_retention=_int(s, "snapshot-retention", where_s, lo=1, hi=10000),
            snapshot_dir=Path(str(s["snapshot-dir"])) if s["snapshot-dir"] else data_dir / "snapshots",
        ),
        api=ApiSettings(
            max_request_bytes=_int(a, "max-request-bytes", where_a, lo=1024),
            default_watch_timeout_seconds=_int(a, "default-watch-timeout-seconds", where_a, lo=1),
            bookmark_interval_seconds=float(_int(a, "bookmark-interval-seconds", where_a, lo=1)),
            max_connections=_int(a, "max-connections", where_a, lo=1),
            tls_handshake_timeout_seconds=_int(a, "tls-handshake-timeout-seconds", where_a, lo=1),
            request_header_timeout_seconds=_int(a, "request-header-timeout-seconds", where_a, lo=1),
            request_body_timeout_seconds=_int(a, "request-body-timeout-seconds", where_a, lo=1),
            idle_timeout_seconds=_int(a, "idle-timeout-seconds", where_a, lo=1),
            send_stall_timeout_seconds=_int(a, "send-stall-timeout-seconds", where_a, lo=1),
            certificate_poll_seconds=_int(a, "certificate-poll-seconds", where_a, lo=1, hi=3600),
            service_account_issuer=str(a["service-account-issuer"] or ""),
            service_account_max_token_expiration_seconds=_int(a, "service-account-max-token-expiration-seconds",
                                                              where_a, lo=0),
            service_account_extend_token_expiration=_bool(a, "service-account-extend-token-expiration", where_a),
            service_account_key_files=_paths(a, "service-account-key-files", where_a),
        ),
        controllers=ControllerSettings(
            node_monitor_grace_period_seconds=_int(c, "node-monitor-grace-period-seconds", where_c, lo=1),
            event_ttl_seconds=_int(c, "event-ttl-seconds", where_c, lo=1),
            max_events=_int(c, "max-events", where_c, lo=1),
            manifests_dir=Path(str(c["manifests-dir"])) if c["manifests-dir"] else data_dir / "manifests",
            manifests_check_seconds=_int(c, "manifests-check-seconds", where_c, lo=1, hi=86400),
        ),
        kubelet=_kubelet(data["kubelet"], data_dir=data_dir, where=f"{source} (kubelet)"),
        log_level=level,
        source=source,
        dns=_dns(data["dns"], where=f"{source} (dns)"),
        pod_network=_pod_network(data["pod-network"], where=f"{source} (pod-network)"),
        audit=_audit(data["audit"], where=f"{source} (audit)"),
        flowcontrol=_flowcontrol(data["flowcontrol"], where=f"{source} (flowcontrol)"),
        advertise_address=_address(data, "advertise-address", source),
        token_auth_file=Path(str(data["token-auth-file"])) if data["token-auth-file"] else None,
        pod_security=_pod_security(data["pod-security"], where=f"{source} (pod-security)"),
    )


def _paths(section: Mapping[str, Any], key: str, where: str) -> tuple[Path, ...]:
    value = section[key]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: '{key}' must be a list of file paths, got {value!r}")
    return tuple(Path(v) for v in value)


def _bool(data: Mapping[str, Any], key: str, where: str) -> bool:
    value = data[key]
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: '{key}' must be true or false, got {value!r}")
    return value


def _address(data: Mapping[str, Any], key: str, where: str) -> str:
    value = str(data[key] or "")
    if value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ConfigError(f"{where}: '{key}' must be an IP address, got {value!r}") from None
    return value



_PSA_VERSION = re.compile(r"^(latest|v1\.(0|[1-9][0-9]*))$")


def _pod_security(p: Mapping[str, Any], *, where: str) -> PodSecuritySettings:
    modes = {}
    for mode in ("enforce", "audit", "warn"):
        level, version = str(p[mode]), str(p[f"{mode}-version"])
        if level not in ("privileged", "baseline", "restricted"):
            raise ConfigError(f"{where}: '{mode}' must be privileged, baseline or restricted, got {p[mode]!r}")
        if not _PSA_VERSION.match(version):
            raise ConfigError(f"{where}: '{mode}-version' must be latest or v1.x, got {p[f'{mode}-version']!r}")
        modes[mode] = (level, version)
    lists = {}
    for key in ("exempt-usernames", "exempt-runtime-classes", "exempt-namespaces"):
        value = p[key]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{where}: '{key}' must be a list of names, got {value!r}")
        lists[key.replace("-", "_")] = tuple(value)
    return PodSecuritySettings(**modes, **lists)
