"""PodSecurity admission: upstream's pod-security-admission, levels by namespace labels.

A namespace says which Pod Security Standard its pods must meet with the labels
`pod-security.kubernetes.io/<mode>` (`privileged`, `baseline`, `restricted`) and
`pod-security.kubernetes.io/<mode>-version` (`latest` or `v1.x`), for three modes:

- enforce: a pod that violates the level is refused, 403 `pods "x" is forbidden: violates
  PodSecurity "restricted:latest": <reason> (<detail>), ...`;
- warn: the request succeeds with a `Warning` header `would violate PodSecurity ...`;
- audit: the same text as an audit annotation (`pod-security.kubernetes.io/audit-violations`).

Workload resources (Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs,
ReplicationControllers, PodTemplates) are only warned and audited on their pod template, never
refused: their pods are, when created. A label left out falls back to the configured defaults
(privileged:latest unless configured); an enforce level set without a warn level warns at the
enforce level as well.

The checks are upstream's, one function per check and version as in its `policy` package: each
check has versions from the Kubernetes minor that introduced it (the detail texts match
upstream's byte for byte, they are what users grep for). For a level and version the checks run
in upstream's order, baseline check IDs sorted, then restricted ones; a restricted check may
override a baseline one (restricted volumes replace hostPath volumes). `latest` and any version
newer than the Kubernetes version this server speaks mean that version (upstream's emulation
version), so an old pinned version keeps the older, looser rules.

Exemptions (usernames, runtime class names, namespaces) come from the configuration; the default
configuration exempts kube-system, as k3s's does. Changing a namespace's enforce label to a
stricter level checks its existing pods (at most 3000, for at most a second) and answers
warnings naming the ones that would now be refused; a label with a bad value is refused (422)
when written.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import edgekube
from edgekube.api import errors

JSON = dict[str, Any]

LABEL_PREFIX = "pod-security.kubernetes.io/"
MODES = ("enforce", "audit", "warn")
LEVELS = ("privileged", "baseline", "restricted")
Version = tuple[int, int]  # (major, minor); None stands for "latest"

_VERSION = re.compile(r"^v1\.([0-9]|[1-9][0-9]*)$")
_MAX_PODS_TO_CHECK = 3000
_POD_CHECK_SECONDS = 1.0
# Pod subresources that cannot change what a pod runs: never evaluated.
_IGNORED_POD_SUBRESOURCES = frozenset({"exec", "attach", "binding", "eviction", "log", "portforward", "proxy", "status"})
# Resources with a pod template (group, plural): where to find it.
_TEMPLATE_PATHS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "replicationcontrollers"): ("spec", "template"),
    ("", "podtemplates"): ("template",),
    ("apps", "replicasets"): ("spec", "template"),
    ("apps", "deployments"): ("spec", "template"),
    ("apps", "statefulsets"): ("spec", "template"),
    ("apps", "daemonsets"): ("spec", "template"),
    ("batch", "jobs"): ("spec", "template"),
    ("batch", "cronjobs"): ("spec", "jobTemplate", "spec", "template"),
}


def server_version() -> Version:
    """The Kubernetes minor this server speaks: what `latest` evaluates as."""
    major, minor = edgekube.KUBE_VERSION.lstrip("v").split(".")[:2]
    return int(major), int(minor)


@dataclasses.dataclass(frozen=True)
class LevelVersion:
    level: str
    version: Version | None = None  # None: latest

    def __str__(self) -> str:
        v = "latest" if self.version is None else f"v{self.version[0]}.{self.version[1]}"
        return f"{self.level}:{v}"

    def equivalent(self, other: LevelVersion) -> bool:
        return (self.level == "privileged" and other.level == "privileged") or self == other


@dataclasses.dataclass(frozen=True)
class Policy:
    enforce: LevelVersion = LevelVersion("privileged")
    audit: LevelVersion = LevelVersion("privileged")
    warn: LevelVersion = LevelVersion("privileged")

    @property
    def fully_privileged(self) -> bool:
        return all(getattr(self, m).level == "privileged" for m in MODES)

    def equivalent(self, other: Policy) -> bool:
        return all(getattr(self, m).equivalent(getattr(other, m)) for m in MODES)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Upstream's PodSecurityConfiguration: the defaults and the exemptions."""

    defaults: Policy = Policy()
    exempt_usernames: frozenset[str] = frozenset()
    exempt_runtime_classes: frozenset[str] = frozenset()
    exempt_namespaces: frozenset[str] = frozenset({"kube-system"})


def settings(*, enforce: tuple[str, str], audit: tuple[str, str], warn: tuple[str, str],
             exempt_usernames: Iterable[str] = (), exempt_runtime_classes: Iterable[str] = (),
             exempt_namespaces: Iterable[str] = ("kube-system",)) -> Settings:
    """Settings from the configuration's (level, version) pairs (checked there)."""
    def lv(pair: tuple[str, str]) -> LevelVersion:
        version, why = _parse_version(pair[1])
        if why is not None:
            raise ValueError(f"PodSecurity version {pair[1]!r}: {why}")
        return LevelVersion(pair[0], version)

    return Settings(defaults=Policy(enforce=lv(enforce), audit=lv(audit), warn=lv(warn)),
                    exempt_usernames=frozenset(exempt_usernames), exempt_runtime_classes=frozenset(exempt_runtime_classes),
                    exempt_namespaces=frozenset(exempt_namespaces))


def compare_levels(a: str, b: str) -> int:
    return (LEVELS.index(a) > LEVELS.index(b)) - (LEVELS.index(a) < LEVELS.index(b))


def _parse_version(text: str) -> tuple[Version | None, str | None]:
    if text == "latest":
        return None, None
    m = _VERSION.match(text)
    if m is None:
        return None, 'must be "latest" or "v1.x"'
    return (1, int(m.group(1))), None


def policy_for(labels: Mapping[str, str] | None, defaults: Policy) -> tuple[Policy, list[errors.Cause]]:
    """upstream's PolicyToEvaluate: the namespace's policy, and the causes of its bad labels (a
    bad enforce level enforces restricted; a bad audit or warn level fails open)."""
    labels = labels or {}
    found: list[errors.Cause] = []
    values = {m: getattr(defaults, m) for m in MODES}
    has_enforce_level = has_warn_level = has_warn_version = False

    def bad(label: str, value: str, why: str) -> None:
        found.append(errors.Cause(f"metadata.labels[{label}]", f'Invalid value: "{value}": {why}'))

    for mode in MODES:
        lv = values[mode]
        label = LABEL_PREFIX + mode
        if label in labels:
            level = labels[label]
            if mode == "warn":
                has_warn_level = True
            if level in LEVELS:
                lv = dataclasses.replace(lv, level=level)
                has_enforce_level = has_enforce_level or mode == "enforce"
            else:
                bad(label, level, "must be one of " + ", ".join(LEVELS))
                lv = dataclasses.replace(lv, level="restricted" if mode == "enforce" else "privileged")
        vlabel = label + "-version"
        if vlabel in labels:
            has_warn_version = has_warn_version or mode == "warn"
            version, why = _parse_version(labels[vlabel])
            if why is not None:
                bad(vlabel, labels[vlabel], why)
            lv = dataclasses.replace(lv, version=version)
        values[mode] = lv
    if not has_warn_level and has_enforce_level and compare_levels(values["enforce"].level, values["warn"].level) > 0:
        values["warn"] = LevelVersion(values["enforce"].level,
                                      values["warn"].version if has_warn_version else values["enforce"].version)
    return Policy(**values), found


# --- the checks -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Result:
    reason: str
    detail: str


CheckFn = Callable[[JSON, JSON], Result | None]  # (pod metadata, pod spec) -> a violation or None


@dataclasses.dataclass(frozen=True)
class _Versioned:
    since: Version
    fn: CheckFn
    overrides: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class _Check:
    id: str
    level: str
    versions: tuple[_Versioned, ...]


def _d(value: Any) -> JSON:
    return value if isinstance(value, dict) else {}


def _containers(spec: JSON) -> Iterator[JSON]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                yield c


def _sc(obj: JSON) -> JSON:
    return _d(obj.get("securityContext"))


def _plural(one: str, many: str, n: int) -> str:
    return one if n == 1 else many


def _quote(items: Iterable[str]) -> str:
    items = list(items)
    return '"' + '", "'.join(items) + '"' if items else ""


def _containers_phrase(names: list[str]) -> str:
    return f"{_plural('container', 'containers', len(names))} {_quote(names)}"


def _windows(spec: JSON) -> bool:
    return _d(spec.get("os")).get("name") == "windows"


def _user_namespace(spec: JSON) -> bool:
    return spec.get("hostUsers") is False


def _not_windows(fn: CheckFn) -> CheckFn:
    return lambda meta, spec: None if _windows(spec) else fn(meta, spec)


def _not_user_namespace(fn: CheckFn) -> CheckFn:
    return lambda meta, spec: None if _user_namespace(spec) else fn(meta, spec)


def _allow_privilege_escalation(meta: JSON, spec: JSON) -> Result | None:
    bad = [str(c.get("name", "")) for c in _containers(spec) if _sc(c).get("allowPrivilegeEscalation") is not False]
    if bad:
        return Result("allowPrivilegeEscalation != false",
                      f"{_containers_phrase(bad)} must set securityContext.allowPrivilegeEscalation=false")
    return None


def _apparmor(meta: JSON, spec: JSON) -> Result | None:
    allowed = ("RuntimeDefault", "Localhost")
    setters: list[str] = []
    values: set[str] = set()
    pod_profile = _sc(spec).get("appArmorProfile")
    if isinstance(pod_profile, dict) and pod_profile.get("type") not in allowed:
        setters.append("pod")
        values.add(str(pod_profile.get("type") or ""))
    bad: list[str] = []
    for c in _containers(spec):
        profile = _sc(c).get("appArmorProfile")
        if isinstance(profile, dict) and profile.get("type") not in allowed:
            bad.append(str(c.get("name", "")))
            values.add(str(profile.get("type") or ""))
    if bad:
        setters.append(_containers_phrase(bad))
    value_list = sorted(values)
    annotations = sorted(
        f'{k}="{v}"' for k, v in _d(meta.get("annotations")).items()
        if k.startswith("container.apparmor.security.beta.kubernetes.io/")
        and not (not v or v == "runtime/default" or str(v).startswith("localhost/"))
    )
    if annotations:
        value_list += annotations
        setters.append(_plural("annotation", "annotations", len(annotations)))
    if setters:
        return Result(_plural("forbidden AppArmor profile", "forbidden AppArmor profiles", len(value_list)),
                      f"{' and '.join(setters)} must not set AppArmor profile type to {_quote(value_list)}")
    return None


_DEFAULT_CAPABILITIES = frozenset({"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                                   "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})


def _capabilities_baseline(meta: JSON, spec: JSON) -> Result | None:
    bad: list[str] = []
    caps: set[str] = set()
    for c in _containers(spec):
        added = [str(a) for a in _d(_sc(c).get("capabilities")).get("add") or [] if str(a) not in _DEFAULT_CAPABILITIES]
        if added:
            bad.append(str(c.get("name", "")))
            caps.update(added)
    if bad:
        return Result("non-default capabilities",
                      f"{_containers_phrase(bad)} must not include {_quote(sorted(caps))} in securityContext.capabilities.add")
    return None


def _capabilities_restricted(meta: JSON, spec: JSON) -> Result | None:
    missing: list[str] = []
    adding: list[str] = []
    caps: set[str] = set()
    for c in _containers(spec):
        name = str(c.get("name", ""))
        capabilities = _sc(c).get("capabilities")
        if not isinstance(capabilities, dict):
            missing.append(name)
            continue
        if "ALL" not in (capabilities.get("drop") or []):
            missing.append(name)
        added = [str(a) for a in capabilities.get("add") or [] if a != "NET_BIND_SERVICE"]
        if added:
            adding.append(name)
            caps.update(added)
    details = []
    if missing:
        details.append(f'{_containers_phrase(missing)} must set securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f"{_containers_phrase(adding)} must not include {_quote(sorted(caps))} in securityContext.capabilities.add")
    return Result("unrestricted capabilities", "; ".join(details)) if details else None


def _host_namespaces(meta: JSON, spec: JSON) -> Result | None:
    found = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k) is True]
    return Result("host namespaces", ", ".join(found)) if found else None


def _host_path_volumes(meta: JSON, spec: JSON) -> Result | None:
    found = [str(v.get("name", "")) for v in spec.get("volumes") or [] if isinstance(v, dict) and v.get("hostPath") is not None]
    if found:
        return Result("hostPath volumes", f"{_plural('volume', 'volumes', len(found))} {_quote(found)}")
    return None


def _host_ports(meta: JSON, spec: JSON) -> Result | None:
    bad: list[str] = []
    ports: set[str] = set()
    for c in _containers(spec):
        used = [str(p.get("hostPort")) for p in c.get("ports") or [] if isinstance(p, dict) and p.get("hostPort")]
        if used:
            bad.append(str(c.get("name", "")))
            ports.update(used)
    if bad:
        return Result("hostPort", f"{_containers_phrase(bad)} {_plural('uses', 'use', len(bad))} "
                                  f"{_plural('hostPort', 'hostPorts', len(ports))} {', '.join(sorted(ports))}")
    return None


def _handler_hosts(handler: Any) -> list[str]:
    handler = _d(handler)
    return [str(h) for h in (_d(handler.get("httpGet")).get("host"), _d(handler.get("tcpSocket")).get("host")) if h]


def _host_probes(meta: JSON, spec: JSON) -> Result | None:
    bad: set[str] = set()
    hosts: set[str] = set()
    for c in _containers(spec):
        lifecycle = _d(c.get("lifecycle"))
        handlers = [c.get("livenessProbe"), c.get("readinessProbe"), c.get("startupProbe"),
                    lifecycle.get("postStart"), lifecycle.get("preStop")]
        found = [h for handler in handlers for h in _handler_hosts(handler)]
        if found:
            bad.add(str(c.get("name", "")))
            hosts.update(found)
    if bad:
        return Result("probe or lifecycle host",
                      f"{_containers_phrase(sorted(bad))} {_plural('uses', 'use', len(bad))} "
                      f"{_plural('probe or lifecycle host', 'probe or lifecycle hosts', len(hosts))} {_quote(sorted(hosts))}")
    return None


def _privileged(meta: JSON, spec: JSON) -> Result | None:
    bad = [str(c.get("name", "")) for c in _containers(spec) if _sc(c).get("privileged") is True]
    if bad:
        return Result("privileged", f"{_containers_phrase(bad)} must not set securityContext.privileged=true")
    return None


def _proc_mount(meta: JSON, spec: JSON) -> Result | None:
    bad: list[str] = []
    types: set[str] = set()
    for c in _containers(spec):
        pm = _sc(c).get("procMount")
        if pm is not None and pm != "Default":
            bad.append(str(c.get("name", "")))
            types.add(str(pm))
    if bad:
        return Result("procMount", f"{_containers_phrase(bad)} must not set securityContext.procMount to {_quote(sorted(types))}")
    return None


_BAD_VOLUME_TYPES = ("hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi", "glusterfs",
                     "rbd", "flexVolume", "cinder", "cephfs", "flocker", "fc", "azureFile", "vsphereVolume",
                     "quobyte", "azureDisk", "photonPersistentDisk", "portworxVolume", "scaleIO", "storageos")
_ALLOWED_VOLUME_TYPES = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image", "persistentVolumeClaim",
                         "projected", "secret")


def _restricted_volumes(meta: JSON, spec: JSON) -> Result | None:
    bad: list[str] = []
    types: set[str] = set()
    for v in spec.get("volumes") or []:
        if not isinstance(v, dict) or any(v.get(t) is not None for t in _ALLOWED_VOLUME_TYPES):
            continue
        bad.append(str(v.get("name", "")))
        types.add(next((t for t in _BAD_VOLUME_TYPES if v.get(t) is not None), "unknown"))
    if bad:
        return Result("restricted volume types",
                      f"{_plural('volume', 'volumes', len(bad))} {_quote(bad)} {_plural('uses', 'use', len(bad))} "
                      f"{_plural('restricted volume type', 'restricted volume types', len(types))} {_quote(sorted(types))}")
    return None


def _run_as_non_root(meta: JSON, spec: JSON) -> Result | None:
    setters: list[str] = []
    pod_value = _sc(spec).get("runAsNonRoot")
    if pod_value is False:
        setters.append("pod")
    explicit: list[str] = []
    implicit: list[str] = []
    for c in _containers(spec):
        value = _sc(c).get("runAsNonRoot")
        if value is not None:
            if value is False:
                explicit.append(str(c.get("name", "")))
        elif pod_value is not True:
            implicit.append(str(c.get("name", "")))
    if explicit:
        setters.append(_containers_phrase(explicit))
    if setters:
        return Result("runAsNonRoot != true", f"{' and '.join(setters)} must not set securityContext.runAsNonRoot=false")
    if implicit:
        return Result("runAsNonRoot != true", f"pod or {_containers_phrase(implicit)} must set securityContext.runAsNonRoot=true")
    return None


def _run_as_user(meta: JSON, spec: JSON) -> Result | None:
    def root(sc: JSON) -> bool:
        return type(sc.get("runAsUser")) is int and sc["runAsUser"] == 0

    setters = ["pod"] if root(_sc(spec)) else []
    bad = [str(c.get("name", "")) for c in _containers(spec) if root(_sc(c))]
    if bad:
        setters.append(_containers_phrase(bad))
    return Result("runAsUser=0", f"{' and '.join(setters)} must not set runAsUser=0") if setters else None


def _selinux(allowed: frozenset[str]) -> CheckFn:
    def check(meta: JSON, spec: JSON) -> Result | None:
        bad_types: set[str] = set()
        flags = {"user": False, "role": False}

        def valid(opts: JSON) -> bool:
            ok = True
            if str(opts.get("type") or "") not in allowed:
                ok = False
                bad_types.add(str(opts.get("type") or ""))
            for k in ("user", "role"):
                if opts.get(k):
                    ok = False
                    flags[k] = True
            return ok

        setters = []
        pod_opts = _sc(spec).get("seLinuxOptions")
        if isinstance(pod_opts, dict) and not valid(pod_opts):
            setters.append("pod")
        bad = [str(c.get("name", "")) for c in _containers(spec)
               if isinstance(_sc(c).get("seLinuxOptions"), dict) and not valid(_sc(c)["seLinuxOptions"])]
        if bad:
            setters.append(_containers_phrase(bad))
        if not setters:
            return None
        data = []
        if bad_types:
            data.append(f"{_plural('type', 'types', len(bad_types))} {_quote(sorted(bad_types))}")
        data += [f"{k} may not be set" for k in ("user", "role") if flags[k]]
        return Result("seLinuxOptions",
                      f"{' and '.join(setters)} set forbidden securityContext.seLinuxOptions: {'; '.join(data)}")
    return check


def _valid_seccomp_annotation(v: str) -> bool:
    return v in ("runtime/default", "docker/default") or v.startswith("localhost/")


def _seccomp_baseline_annotations(meta: JSON, spec: JSON) -> Result | None:
    annotations = _d(meta.get("annotations"))
    found: set[str] = set()
    pod_key = "seccomp.security.alpha.kubernetes.io/pod"
    if pod_key in annotations and not _valid_seccomp_annotation(str(annotations[pod_key])):
        found.add(f'{pod_key}="{annotations[pod_key]}"')
    for c in _containers(spec):
        key = "container.seccomp.security.alpha.kubernetes.io/" + str(c.get("name", ""))
        if key in annotations and not _valid_seccomp_annotation(str(annotations[key])):
            found.add(f'{key}="{annotations[key]}"')
    if found:
        return Result("seccompProfile", f"forbidden {_plural('annotation', 'annotations', len(found))} {', '.join(sorted(found))}")
    return None


def _seccomp(*, required: bool) -> CheckFn:
    def check(meta: JSON, spec: JSON) -> Result | None:
        allowed = ("RuntimeDefault", "Localhost")
        setters: list[str] = []
        values: set[str] = set()
        pod_set = False
        pod_profile = _sc(spec).get("seccompProfile")
        if isinstance(pod_profile, dict):
            if pod_profile.get("type") not in allowed:
                setters.append("pod")
                values.add(str(pod_profile.get("type") or ""))
            else:
                pod_set = True
        explicit: list[str] = []
        implicit: list[str] = []
        for c in _containers(spec):
            profile = _sc(c).get("seccompProfile")
            if isinstance(profile, dict):
                if profile.get("type") not in allowed:
                    explicit.append(str(c.get("name", "")))
                    values.add(str(profile.get("type") or ""))
            elif not pod_set:
                implicit.append(str(c.get("name", "")))
        if explicit:
            setters.append(_containers_phrase(explicit))
        if setters:
            return Result("seccompProfile", f"{' and '.join(setters)} must not set securityContext.seccompProfile.type to {_quote(sorted(values))}")
        if required and implicit:
            return Result("seccompProfile", f'pod or {_containers_phrase(implicit)} must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"')
        return None
    return check


_SYSCTLS_1_0 = frozenset({"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
                          "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start"})
_SYSCTLS_1_27 = _SYSCTLS_1_0 | {"net.ipv4.ip_local_reserved_ports"}
_SYSCTLS_1_29 = _SYSCTLS_1_27 | {"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                                 "net.ipv4.tcp_keepalive_probes"}
_SYSCTLS_1_32 = _SYSCTLS_1_29 | {"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"}
_SYSCTLS_1_37 = _SYSCTLS_1_32 | {"net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat"}


def _sysctls(allowed: frozenset[str]) -> CheckFn:
    def check(meta: JSON, spec: JSON) -> Result | None:
        found = [str(s.get("name", "")) for s in _sc(spec).get("sysctls") or []
                 if isinstance(s, dict) and s.get("name") not in allowed]
        return Result("forbidden sysctls", ", ".join(found)) if found else None
    return check


def _windows_host_process(meta: JSON, spec: JSON) -> Result | None:
    setters = ["pod"] if _d(_sc(spec).get("windowsOptions")).get("hostProcess") is True else []
    bad = [str(c.get("name", "")) for c in _containers(spec) if _d(_sc(c).get("windowsOptions")).get("hostProcess") is True]
    if bad:
        setters.append(_containers_phrase(bad))
    if setters:
        return Result("hostProcess", f"{' and '.join(setters)} must not set securityContext.windowsOptions.hostProcess=true")
    return None


_SELINUX_1_0 = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
_CHECKS: tuple[_Check, ...] = (
    _Check("allowPrivilegeEscalation", "restricted", (
        _Versioned((1, 8), _allow_privilege_escalation), _Versioned((1, 25), _not_windows(_allow_privilege_escalation)))),
    _Check("appArmorProfile", "baseline", (_Versioned((1, 0), _apparmor),)),
    _Check("capabilities_baseline", "baseline", (_Versioned((1, 0), _capabilities_baseline),)),
    _Check("capabilities_restricted", "restricted", (
        _Versioned((1, 22), _capabilities_restricted, ("capabilities_baseline",)),
        _Versioned((1, 25), _not_windows(_capabilities_restricted), ("capabilities_baseline",)))),
    _Check("hostNamespaces", "baseline", (_Versioned((1, 0), _host_namespaces),)),
    _Check("hostPathVolumes", "baseline", (_Versioned((1, 0), _host_path_volumes),)),
    _Check("hostPorts", "baseline", (_Versioned((1, 0), _host_ports),)),
    _Check("hostProbesAndHostLifecycle", "baseline", (_Versioned((1, 34), _host_probes),)),
    _Check("privileged", "baseline", (_Versioned((1, 0), _privileged),)),
    _Check("procMount", "baseline", (_Versioned((1, 0), _proc_mount), _Versioned((1, 35), _not_user_namespace(_proc_mount)))),
    _Check("procMount_restricted", "restricted", (_Versioned((1, 35), _proc_mount, ("procMount",)),)),
    _Check("restrictedVolumes", "restricted", (_Versioned((1, 0), _restricted_volumes, ("hostPathVolumes",)),)),
    _Check("runAsNonRoot", "restricted", (_Versioned((1, 0), _run_as_non_root), _Versioned((1, 35), _not_user_namespace(_run_as_non_root)))),
    _Check("runAsUser", "restricted", (_Versioned((1, 23), _run_as_user), _Versioned((1, 35), _not_user_namespace(_run_as_user)))),
    _Check("seLinuxOptions", "baseline", (
        _Versioned((1, 0), _selinux(_SELINUX_1_0)), _Versioned((1, 31), _selinux(_SELINUX_1_0 | {"container_engine_t"})))),
    _Check("seccompProfile_baseline", "baseline", (
        _Versioned((1, 0), _seccomp_baseline_annotations), _Versioned((1, 19), _seccomp(required=False)))),
    _Check("seccompProfile_restricted", "restricted", (
        _Versioned((1, 19), _seccomp(required=True), ("seccompProfile_baseline",)),
        _Versioned((1, 25), _not_windows(_seccomp(required=True)), ("seccompProfile_baseline",)))),
    _Check("sysctls", "baseline", (
        _Versioned((1, 0), _sysctls(_SYSCTLS_1_0)), _Versioned((1, 27), _sysctls(_SYSCTLS_1_27)),
        _Versioned((1, 29), _sysctls(_SYSCTLS_1_29)), _Versioned((1, 32), _sysctls(_SYSCTLS_1_32)),
        _Versioned((1, 37), _sysctls(_SYSCTLS_1_37)))),
    _Check("windowsHostProcess", "baseline", (_Versioned((1, 0), _windows_host_process),)),
)


def _at(check: _Check, version: Version) -> _Versioned | None:
    found = None
    for v in check.versions:
        if v.since <= version:
            found = v
    return found


class Evaluator:
    """The checks of each level and version, worked out once per (level, version) asked."""

    def __init__(self, *, max_version: Version | None = None) -> None:
        newest = max(c.versions[-1].since for c in _CHECKS)
        self.max_version = min(newest, max_version or server_version())
        self._cache: dict[tuple[str, Version], list[CheckFn]] = {}
        self._order = sorted(c.id for c in _CHECKS if c.level == "baseline") + sorted(
            c.id for c in _CHECKS if c.level == "restricted")

    def checks(self, lv: LevelVersion) -> list[CheckFn]:
        if lv.level == "privileged":
            return []
        version = lv.version if lv.version is not None and lv.version < self.max_version else self.max_version
        key = (lv.level, version)
        if key not in self._cache:
            by_id = {c.id: c for c in _CHECKS}
            chosen: dict[str, _Versioned] = {}
            for c in _CHECKS:
                if c.level == "baseline" or lv.level == "restricted":
                    v = _at(c, version)
                    if v is not None:
                        chosen[c.id] = v
            overridden = {o for cid, v in chosen.items() if by_id[cid].level == "restricted" for o in v.overrides}
            self._cache[key] = [chosen[i].fn for i in self._order if i in chosen and i not in overridden]
        return self._cache[key]

    def evaluate(self, lv: LevelVersion, meta: JSON, spec: JSON) -> list[Result]:
        """The violations of `lv` by a pod's metadata and spec, in upstream's order."""
        found = []
        for fn in self.checks(lv):
            r = fn(meta, spec)
            if r is not None:
                found.append(Result(r.reason or "unknown forbidden reason", r.detail))
        return found


def detail(results: list[Result]) -> str:
    """upstream's AggregateCheckResult.ForbiddenDetail: `reason (detail), reason (detail)`."""
    return ", ".join(f"{r.reason} ({r.detail})" if r.detail else r.reason for r in results)


def pod_template(group: str, plural: str, obj: JSON) -> tuple[JSON, JSON] | None:
    """(metadata, spec) of the pod a workload object describes; None when it has no template."""
    path = _TEMPLATE_PATHS.get((group, plural))
    if path is None:
        return None
    node: Any = obj
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return None
    return _d(node.get("metadata")), _d(node.get("spec"))


def handles(group: str, plural: str) -> bool:
    return (group, plural) in _TEMPLATE_PATHS or (group, plural) in (("", "pods"), ("", "namespaces"))


# --- the plugin -----------------------------------------------------------------------------

@dataclasses.dataclass
class Outcome:
    """What one admission decision adds to the response besides refusing."""

    warnings: list[str] = dataclasses.field(default_factory=list)
    audit: dict[str, str] = dataclasses.field(default_factory=dict)  # keys without LABEL_PREFIX
    refused: errors.APIError | None = None  # raised by the caller once the audit annotations are kept


class PodSecurity:
    """The plugin: `namespace_labels(name)` reads a namespace's labels (None: no such namespace),
    `pods(namespace)` lists its pods (for the dry run of a stricter enforce label)."""

    def __init__(self, settings: Settings, *, namespace_labels: Callable[[str], Mapping[str, str] | None],
                 pods: Callable[[str], Iterable[JSON]], evaluator: Evaluator | None = None) -> None:
        self.settings = settings
        self.evaluator = evaluator or Evaluator()
        self._namespace_labels = namespace_labels
        self._pods = pods

    def policy(self, labels: Mapping[str, str] | None) -> tuple[Policy, list[errors.Cause]]:
        return policy_for(labels, self.settings.defaults)

    def admit(self, *, group: str, plural: str, obj: JSON, old: JSON | None, namespace: str, name: str,
              subresource: str | None, username: str) -> Outcome:
        """Validate one create or update: a refusal is `Outcome.refused` (403) or raised (422 for
        bad namespace labels, 500 for a pod whose namespace cannot be read)."""
        out = Outcome()
        if (group, plural) == ("", "namespaces"):
            if subresource is None:
                self._namespace(obj, old=old, out=out)
            return out
        if (group, plural) == ("", "pods"):
            if subresource in _IGNORED_POD_SUBRESOURCES:
                return out
        elif subresource is not None or (group, plural) not in _TEMPLATE_PATHS:
            return out
        if namespace in self.settings.exempt_namespaces:
            out.audit["exempt"] = "namespace"
            return out
        if username and username in self.settings.exempt_usernames:
            out.audit["exempt"] = "user"
            return out
        labels = self._namespace_labels(namespace)
        if labels is None:
            if plural == "pods":
                raise errors.internal(f'failed to lookup namespace "{namespace}"')
            out.audit["error"] = f'failed to lookup namespace "{namespace}": namespaces "{namespace}" not found'
            return out
        policy, bad = self.policy(labels)
        if plural == "pods":
            if not bad and policy.fully_privileged:
                out.audit["enforce-policy"] = str(LevelVersion("privileged"))
                return out
            if old is not None and not _significant_pod_update(obj, old):
                return out
            meta, spec = _d(obj.get("metadata")), _d(obj.get("spec"))
        else:
            if not bad and policy.warn.level == "privileged" and policy.audit.level == "privileged":
                return out
            found = pod_template(group, plural, obj)
            if found is None:
                return out
            meta, spec = found
        self._evaluate(policy, bad, meta, spec, enforce=plural == "pods", plural=plural, group=group, name=name, out=out)
        return out

    def _evaluate(self, policy: Policy, bad: list[errors.Cause], meta: JSON, spec: JSON, *, enforce: bool, plural: str,
                  group: str, name: str, out: Outcome) -> None:
        if spec.get("runtimeClassName") and spec["runtimeClassName"] in self.settings.exempt_runtime_classes:
            out.audit["exempt"] = "runtimeClass"
            return
        if bad:
            out.audit["error"] = "Failed to parse policy: " + _aggregate_causes(bad)
        cached: dict[LevelVersion, list[Result]] = {}

        def results(lv: LevelVersion) -> list[Result]:
            if lv not in cached:
                cached[lv] = self.evaluator.evaluate(lv, meta, spec)
            return cached[lv]

        if enforce:
            out.audit["enforce-policy"] = str(policy.enforce)
            if found := results(policy.enforce):
                out.refused = errors.forbidden_object(
                    plural, name, f'violates PodSecurity "{policy.enforce}": {detail(found)}', group=group)
        if found := results(policy.audit):
            out.audit["audit-violations"] = f'would violate PodSecurity "{policy.audit}": {detail(found)}'
        if out.refused is None and (found := results(policy.warn)):  # no warnings with a refusal
            out.warnings.append(f'would violate PodSecurity "{policy.warn}": {detail(found)}')

    def _namespace(self, ns: JSON, *, old: JSON | None, out: Outcome) -> None:
        meta = _d(ns.get("metadata"))
        name = str(meta.get("name") or "")
        labels = _d(meta.get("labels"))
        new_policy, new_bad = self.policy(labels)
        if old is None:
            if new_bad:
                raise errors.invalid("Namespace", name, new_bad)
            return
        old_policy, old_bad = self.policy(_d(_d(old.get("metadata")).get("labels")))
        if new_bad and (not old_bad or new_bad != old_bad):
            raise errors.invalid("Namespace", name, new_bad)
        if new_policy.enforce == old_policy.enforce or new_policy.enforce.level == "privileged":
            return
        if (new_policy.enforce.version == old_policy.enforce.version
                and compare_levels(new_policy.enforce.level, old_policy.enforce.level) < 1):
            return
        if name in self.settings.exempt_namespaces:
            if warning := self._exempt_warning(name, new_policy, labels):
                out.warnings.append(warning)
            return
        out.warnings.extend(self._check_pods(name, new_policy.enforce))

    def _exempt_warning(self, name: str, policy: Policy, labels: Mapping[str, str]) -> str:
        if policy.fully_privileged or policy.equivalent(self.settings.defaults):
            return ""
        parts = []
        for mode in MODES:
            lv: LevelVersion = getattr(policy, mode)
            if lv.level != "privileged" and (LABEL_PREFIX + mode in labels or LABEL_PREFIX + mode + "-version" in labels):
                parts.append(f"{mode}={lv}")
        return f'namespace "{name}" is exempt from Pod Security, and the policy ({", ".join(parts)}) will be ignored'

    def _check_pods(self, namespace: str, enforce: LevelVersion) -> list[str]:
        """upstream's EvaluatePodsInNamespace: warnings for the existing pods the new enforce
        level would refuse, one per distinct reason, the lexically first pod named."""
        deadline = time.monotonic() + _POD_CHECK_SECONDS
        pods = _prioritized([p for p in self._pods(namespace)
                             if _d(p.get("spec")).get("runtimeClassName") not in self.settings.exempt_runtime_classes
                             or not _d(p.get("spec")).get("runtimeClassName")])
        total = len(pods)
        pods = pods[:_MAX_PODS_TO_CHECK]
        checked = len(pods)
        counts: dict[str, tuple[str, int]] = {}
        order: list[str] = []
        for i, pod in enumerate(pods):
            found = self.evaluator.evaluate(enforce, _d(pod.get("metadata")), _d(pod.get("spec")))
            if found:
                reason = ", ".join(r.reason for r in found)
                pod_name = str(_d(pod.get("metadata")).get("name") or "")
                first, n = counts.get(reason, (pod_name, 0))
                if reason not in counts:
                    order.append(reason)
                counts[reason] = (min(first, pod_name), n + 1)
            if time.monotonic() > deadline:
                checked = i + 1
                break
        warnings = []
        if checked < total:
            warnings.append(f"new PodSecurity enforce level only checked against the first {checked} of {total} existing pods")
        if order:
            warnings.append(f'existing pods in namespace "{namespace}" violate the new PodSecurity enforce level "{enforce}"')
        decorated = []
        for reason in order:
            first, n = counts[reason]
            if n == 1:
                decorated.append(f"{first}: {reason}")
            elif n == 2:
                decorated.append(f"{first} (and 1 other pod): {reason}")
            else:
                decorated.append(f"{first} (and {n - 1} other pods): {reason}")
        return warnings + sorted(decorated)


def _prioritized(pods: list[JSON]) -> list[JSON]:
    """One pod per controller first, the other replicas after (upstream's prioritizePods)."""
    first: list[JSON] = []
    rest: list[JSON] = []
    seen: set[str] = set()
    for pod in pods:
        owner = next((r for r in _d(pod.get("metadata")).get("ownerReferences") or []
                      if isinstance(r, dict) and r.get("controller")), None)
        if owner is None:
            first.append(pod)
        elif owner.get("uid") in seen:
            rest.append(pod)
        else:
            seen.add(str(owner.get("uid")))
            first.append(pod)
    return first + rest


def _significant_pod_update(pod: JSON, old: JSON) -> bool:
    """Only a change of image (or of the containers' number) can change a pod's verdict."""
    spec, old_spec = _d(pod.get("spec")), _d(old.get("spec"))
    for key in ("containers", "initContainers"):
        new_c, old_c = spec.get(key) or [], old_spec.get(key) or []
        if len(new_c) != len(old_c) or any(_d(a).get("image") != _d(b).get("image") for a, b in zip(new_c, old_c, strict=True)):
            return True
    old_eph = {_d(c).get("name"): _d(c) for c in old_spec.get("ephemeralContainers") or []}
    for c in spec.get("ephemeralContainers") or []:
        before = old_eph.get(_d(c).get("name"))
        if before is None or before.get("image") != _d(c).get("image"):
            return True
    return False


def _aggregate_causes(causes: list[errors.Cause]) -> str:
    messages = [f"{c.field}: {c.message}" for c in causes]
    return messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"
