"""One OCI bundle per container: config.json from the pod, the container and the image config,
and a rootfs that is an overlayfs mount over the image's layers.

`build_config` is a pure function (tested without root); `Bundle` owns the directory:

    <bundle>/config.json   <bundle>/rootfs (overlay mount point)   <bundle>/upper  <bundle>/work
    <bundle>/stdout, stderr (log FIFOs, see crilog)   <bundle>/runc.log   <bundle>/status.json

The semantics kept, each as upstream (kubelet + containerd's CRI plugin) has them:

- **Command.** `command` replaces the image's Entrypoint and `args` its Cmd: neither given runs
  Entrypoint+Cmd; `command` alone runs just it (Cmd dropped); `args` alone runs Entrypoint+args;
  both run command+args. `$(VAR)` in command, args and env values expands from the container's
  env (`$$` escapes, unknown names stay as written), env values only from the entries before.
- **Env.** PATH default, then HOSTNAME, then the image's Env, then the container's env; a later
  entry with the same name replaces the earlier one in place.
- **User.** runAsUser/runAsGroup (container over pod), else the image's `User` ("uid",
  "uid:gid", "name", "name:group"; names resolved from the rootfs' /etc/passwd and /etc/group,
  read without following links out of the rootfs). A uid without a group takes its passwd
  entry's gid (0 when absent). Additional gids: the primary gid, the groups listing the user
  in /etc/group, supplementalGroups, fsGroup. runAsNonRoot is checked against the result.
- **Capabilities.** containerd's default set (CHOWN, DAC_OVERRIDE, FSETID, FOWNER, MKNOD,
  NET_RAW, SETGID, SETUID, SETFCAP, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, KILL, AUDIT_WRITE)
  as bounding, effective and permitted sets (inheritable and ambient empty); then add ALL, drop
  ALL, each add, each drop, in that order. Privileged: every capability the kernel has.
- **seccomp.** RuntimeDefault (see seccomp.py) when the profile says so and, for an unset
  profile, when `seccomp_default` is on (kubelet's --seccomp-default; on here, as on k3s);
  Unconfined: none; Localhost: the JSON file under `seccomp_root`. Privileged: none.
- **noNewPrivileges** when allowPrivilegeEscalation is false. **readOnlyRootFilesystem** makes
  the root read-only. Masked and read-only paths are upstream's defaults (none when
  privileged, or with procMount Unmasked).
- **Mounts.** /proc, /dev (tmpfs), /dev/pts, /dev/shm (64 MiB tmpfs), /dev/mqueue, /sys
  (read-only unless privileged), /sys/fs/cgroup (read-only), then the kubelet's bind mounts
  (/etc/hosts, /etc/resolv.conf, volumes...), which replace a default at the same
  destination; all sorted so a parent is mounted before what is inside it.
- **Namespaces.** pid, ipc, uts and mount of the container's own; the network namespace joined
  by the pod's path. hostNetwork: no network and no uts namespace; hostPID, hostIPC likewise.
- `process.terminal` is false (the container's stdio are its log FIFOs); `cgroupsPath` is the
  absolute path under the pod's cgroup; `linux.resources` carry the container's limits.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import json
import os
import re
import shutil
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgekube.kubelet.runtime import cgroups, seccomp

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DEFAULT_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

# By number: the kernel's cap_last_cap says how many of these exist.
ALL_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)

MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

SHM_SIZE = 64 * 1024 * 1024

ANNOTATION_POD_UID = "io.kubernetes.pod.uid"
ANNOTATION_POD_NAME = "io.kubernetes.pod.name"
ANNOTATION_POD_NAMESPACE = "io.kubernetes.pod.namespace"
ANNOTATION_CONTAINER_NAME = "io.kubernetes.container.name"
ANNOTATION_ATTEMPT = "io.kubernetes.container.restartCount"
ANNOTATION_LOG_PATH = "io.kubernetes.container.logpath"
ANNOTATION_CGROUP = "edgekube.io/cgroups-path"


class BundleError(ValueError):
    """The container cannot be configured as asked; the message names the field and why."""


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config (`config` object) a container starts from."""

    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""

    @classmethod
    def from_oci(cls, config: Mapping[str, Any] | None) -> ImageConfig:
        c = config or {}

        def strs(v: Any) -> tuple[str, ...] | None:
            return tuple(str(x) for x in v) if isinstance(v, list) else None

        return cls(entrypoint=strs(c.get("Entrypoint")), cmd=strs(c.get("Cmd")), env=strs(c.get("Env")) or (),
                   working_dir=str(c.get("WorkingDir") or ""), user=str(c.get("User") or ""))


@dataclasses.dataclass(frozen=True)
class Mount:
    """A bind mount the kubelet adds (hosts, resolv.conf, volumes, termination log)."""

    destination: str
    source: str
    readonly: bool = False
    propagation: str = "None"  # None | HostToContainer | Bidirectional (mountPropagation)
    type: str = "bind"
    options: tuple[str, ...] = ()

    def oci(self) -> dict[str, Any]:
        if self.type != "bind":
            return {"destination": self.destination, "type": self.type, "source": self.source,
                    "options": list(self.options)}
        prop = {"None": "rprivate", "HostToContainer": "rslave", "Bidirectional": "rshared"}.get(self.propagation)
        if prop is None:
            raise BundleError(f"mount {self.destination}: mountPropagation {self.propagation!r} is not one of "
                              "None, HostToContainer, Bidirectional")
        return {"destination": self.destination, "type": "bind", "source": self.source,
                "options": ["rbind", prop, "ro" if self.readonly else "rw", *self.options]}


# --- $(VAR) expansion (upstream's third_party/forked/golang/expansion) -----------------------


def expand(text: str, env: Mapping[str, str]) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                close = text.find(")", i + 2)
                if close >= 0:
                    name = text[i + 2:close]
                    out.append(env[name] if name in env else f"$({name})")
                    i = close + 1
                    continue
                out.append("$(")
                i += 2
                continue
            out.append("$" + nxt)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def container_env(container: Mapping[str, Any], *, env: Sequence[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """The container's env pairs, values expanded in order. `env` is what the kubelet resolved
    (valueFrom, envFrom, service variables; in order); without it, the literal `value`s."""
    pairs: list[tuple[str, str]] = list(env) if env is not None else [
        (str(e.get("name")), str(e.get("value") or "")) for e in container.get("env") or []
        if isinstance(e, Mapping) and e.get("name")]
    seen: dict[str, str] = {}
    out: list[tuple[str, str]] = []
    for name, value in pairs:
        v = expand(value, seen)
        seen[name] = v
        out.append((name, v))
    return out


def _merge_env(entries: Sequence[str]) -> list[str]:
    """Later entries replace earlier ones with the same name, in place (containerd's WithEnv)."""
    out: list[str] = []
    index: dict[str, int] = {}
    for e in entries:
        name = e.split("=", 1)[0]
        if name in index:
            out[index[name]] = e
        else:
            index[name] = len(out)
            out.append(e)
    return out


def process_args(container: Mapping[str, Any], image: ImageConfig, env: Mapping[str, str]) -> list[str]:
    """command/args over the image's Entrypoint/Cmd, as containerd's CRI plugin does."""
    command = [expand(str(x), env) for x in container.get("command") or []]
    args = [expand(str(x), env) for x in container.get("args") or []]
    if not command:
        if not args:
            args = list(image.cmd or ())
        entry = list(image.entrypoint or ())
        if not (len(entry) == 1 and entry[0] == ""):
            command = entry
    argv = command + args
    if not argv:
        raise BundleError(f"container {container.get('name')!r}: no command specified: the pod gives no "
                          "command or args and the image has no Entrypoint or Cmd")
    return argv


# --- users ------------------------------------------------------------------------------------


def secure_join(root: Path, path: str, *, depth: int = 0) -> Path:
    """`path` inside `root` with every symlink resolved as if `root` were `/` (so an image's
    /etc/passwd that links to /etc/shadow stays inside the image)."""
    if depth > 40:
        raise BundleError(f"too many symbolic links resolving {path} in the image")
    current = root
    parts = [p for p in path.split("/") if p and p != "."]
    i = 0
    while i < len(parts):
        part = parts[i]
        i += 1
        if part == "..":
            current = current.parent if current != root else root
            continue
        nxt = current / part
        try:
            st = os.lstat(nxt)
        except FileNotFoundError:
            current = nxt
            continue
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(nxt)
            base = root if target.startswith("/") else current
            rest = "/".join(parts[i:])
            rel = str(base.relative_to(root)) if base != root else ""
            return secure_join(root, f"{rel}/{target}/{rest}", depth=depth + 1)
        current = nxt
    return current


def _read_db(rootfs: Path, name: str) -> list[list[str]]:
    try:
        p = secure_join(rootfs, f"/etc/{name}")
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (OSError, BundleError):  # missing, or links that loop: no entries
        return []
    with os.fdopen(fd, "r", errors="replace") as f:
        text = f.read(1 << 20)
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


@dataclasses.dataclass(frozen=True)
class User:
    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    username: str = ""


def _lookup_user(rootfs: Path, who: str) -> tuple[int, int | None, str] | None:
    for entry in _read_db(rootfs, "passwd"):
        if len(entry) >= 4 and (entry[0] == who or entry[2] == who):
            try:
                return int(entry[2]), int(entry[3]), entry[0]
            except ValueError:
                continue
    return None


def resolve_user(pod: Mapping[str, Any], container: Mapping[str, Any], image: ImageConfig, *,
                 rootfs: Path) -> User:
    psc = (pod.get("spec") or {}).get("securityContext") or {}
    csc = container.get("securityContext") or {}
    run_as_user = csc.get("runAsUser", psc.get("runAsUser"))
    run_as_group = csc.get("runAsGroup", psc.get("runAsGroup"))
    username = ""
    gid: int | None = None
    if run_as_user is not None:
        uid = int(run_as_user)
        found = _lookup_user(rootfs, str(uid))
        if found is not None:
            gid, username = found[1], found[2]
    else:
        user, _, group = image.user.partition(":")
        user = user or "0"
        if user.isdigit():
            uid = int(user)
            found = _lookup_user(rootfs, user)
            if found is not None:
                gid, username = found[1], found[2]
        else:
            found = _lookup_user(rootfs, user)
            if found is None:
                raise BundleError(f"container {container.get('name')!r}: image user {user!r} is not in the "
                                  "image's /etc/passwd")
            uid, gid, username = found
        if group:
            if group.isdigit():
                gid = int(group)
            else:
                for entry in _read_db(rootfs, "group"):
                    if len(entry) >= 3 and entry[0] == group and entry[2].isdigit():
                        gid = int(entry[2])
                        break
                else:
                    raise BundleError(f"container {container.get('name')!r}: image group {group!r} is not in the "
                                      "image's /etc/group")
    if run_as_group is not None:
        gid = int(run_as_group)
    primary = gid if gid is not None else 0
    extra: list[int] = [primary]
    if username:
        for entry in _read_db(rootfs, "group"):
            if len(entry) >= 4 and username in entry[3].split(",") and entry[2].isdigit():
                extra.append(int(entry[2]))
    extra += [int(g) for g in psc.get("supplementalGroups") or []]
    if psc.get("fsGroup") is not None:
        extra.append(int(psc["fsGroup"]))
    return User(uid=uid, gid=primary, additional_gids=tuple(dict.fromkeys(extra)), username=username)


def check_non_root(pod: Mapping[str, Any], container: Mapping[str, Any], image: ImageConfig, user: User) -> None:
    """runAsNonRoot, as the kubelet checks it before creating the container."""
    psc = (pod.get("spec") or {}).get("securityContext") or {}
    csc = container.get("securityContext") or {}
    if not csc.get("runAsNonRoot", psc.get("runAsNonRoot")):
        return
    name = container.get("name")
    if csc.get("runAsUser", psc.get("runAsUser")) is not None:
        if user.uid == 0:
            raise BundleError(f"container {name!r} has runAsNonRoot and runAsUser 0: it would run as root")
        return
    image_user = image.user.partition(":")[0]
    if image_user and not image_user.isdigit():
        raise BundleError(f"container {name!r} has runAsNonRoot and image has non-numeric user ({image_user}), "
                          "cannot verify user is non-root")
    if user.uid == 0:
        raise BundleError(f"container {name!r} has runAsNonRoot and image will run as root")


# --- capabilities -----------------------------------------------------------------------------


def _cap_name(c: str) -> str:
    c = str(c).upper()
    return c if c.startswith("CAP_") else "CAP_" + c


def host_caps() -> list[str]:
    try:
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        last = len(ALL_CAPS) - 1
    return list(ALL_CAPS[:last + 1])


def capabilities(container: Mapping[str, Any], *, privileged: bool) -> list[str]:
    if privileged:
        return host_caps()
    spec = (container.get("securityContext") or {}).get("capabilities") or {}
    add = [str(c) for c in spec.get("add") or []]
    drop = [str(c) for c in spec.get("drop") or []]
    caps = list(DEFAULT_CAPS)
    if any(c.upper() == "ALL" for c in add):
        caps += [c for c in host_caps() if c not in caps]
    if any(c.upper() == "ALL" for c in drop):
        caps = []
    for c in add:
        if c.upper() != "ALL" and _cap_name(c) not in caps:
            caps.append(_cap_name(c))
    dropped = {_cap_name(c) for c in drop if c.upper() != "ALL"}
    return [c for c in caps if c not in dropped]


# --- the config ---------------------------------------------------------------------------


def pod_hostname(pod: Mapping[str, Any]) -> str:
    """Upstream's pod hostname: spec.hostname or the pod's name, cut to 63 characters."""
    name = str((pod.get("spec") or {}).get("hostname") or (pod.get("metadata") or {}).get("name") or "")
    if len(name) > 63:
        name = name[:63].rstrip("-.")
    return name


def _seccomp(pod: Mapping[str, Any], container: Mapping[str, Any], *, caps: Sequence[str], privileged: bool,
             default: bool, root: Path | None) -> dict[str, Any] | None:
    if privileged:
        return None
    profile = (container.get("securityContext") or {}).get("seccompProfile") or \
        ((pod.get("spec") or {}).get("securityContext") or {}).get("seccompProfile")
    kind = (profile or {}).get("type") if profile else ("RuntimeDefault" if default else "Unconfined")
    if kind == "RuntimeDefault":
        return seccomp.default_profile(caps)
    if kind == "Unconfined":
        return None
    if kind == "Localhost":
        rel = str((profile or {}).get("localhostProfile") or "")
        if root is None or not rel or rel.startswith("/") or ".." in rel.split("/"):
            raise BundleError(f"container {container.get('name')!r}: seccompProfile localhostProfile {rel!r} must "
                              "be a relative path under the kubelet's seccomp directory")
        try:
            loaded = json.loads((root / rel).read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"container {container.get('name')!r}: cannot load seccomp profile "
                              f"{root / rel}: {exc}") from exc
        return dict(loaded)
    raise BundleError(f"container {container.get('name')!r}: seccompProfile type {kind!r} is not one of "
                      "RuntimeDefault, Unconfined, Localhost")


def _default_mounts(*, privileged: bool, shm: str | None) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "rw" if privileged else "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "rw" if privileged else "ro"]},
    ]
    if shm:
        mounts.append({"destination": "/dev/shm", "type": "bind", "source": shm, "options": ["rbind", "rprivate", "rw"]})
    else:
        mounts.append({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                       "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={SHM_SIZE // 1024}k"]})
    return mounts


def _host_devices() -> list[dict[str, Any]]:
    """Every device node of the host's /dev, for privileged containers."""
    out: list[dict[str, Any]] = []
    skip = {"/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/fd", "/dev/console"}
    for dirpath, dirnames, filenames in os.walk("/dev"):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
        for name in filenames:
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                out.append({"path": p, "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
                            "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                            "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid})
    return out


def memory_capacity() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def build_config(pod: Mapping[str, Any], *, container: Mapping[str, Any], image: ImageConfig, rootfs: Path,
                 cgroups_path: str, netns: str | None, mounts: Sequence[Mount] = (),
                 env: Sequence[tuple[str, str]] | None = None, attempt: int = 0, log_path: str = "",
                 seccomp_default: bool = True, seccomp_root: Path | None = None, pids_limit: int | None = None,
                 shm: str | None = None, ipcns: str | None = None, node_memory: int | None = None,
                 annotations: Mapping[str, str] | None = None, oom_score_adj: int | None = None) -> dict[str, Any]:
    """The container's config.json. `rootfs` is the (mounted) root, read for /etc/passwd and
    /etc/group; `netns` the pod's network namespace path (None with hostNetwork: the host's;
    None without it: a private one, for tests only); `oom_score_adj` the kubelet's choice
    (by default upstream's for the pod's QoS class)."""
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    csc = container.get("securityContext") or {}
    privileged = bool(csc.get("privileged"))
    host_network = bool(spec.get("hostNetwork"))

    pairs = container_env(container, env=env)
    env_map = dict(pairs)
    argv = process_args(container, image, env_map)
    hostname = "" if host_network else pod_hostname(pod)
    env_list = _merge_env([DEFAULT_PATH, *([f"HOSTNAME={hostname}"] if hostname else []), *image.env,
                           *(f"{k}={v}" for k, v in pairs)])

    user = resolve_user(pod, container, image, rootfs=rootfs)
    check_non_root(pod, container, image, user)
    caps = capabilities(container, privileged=privileged)
    ape = csc.get("allowPrivilegeEscalation")
    process: dict[str, Any] = {
        "terminal": False,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": list(user.additional_gids)},
        "args": argv,
        "env": env_list,
        "cwd": str(container.get("workingDir") or image.working_dir or "/"),
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": ape is False and not privileged,
    }
    if oom_score_adj is None:
        capacity = node_memory if node_memory is not None else memory_capacity()
        oom_score_adj = cgroups.oom_score_adj(pod, container, memory_capacity=capacity)
    process["oomScoreAdj"] = oom_score_adj

    limits = cgroups.container_limits(container, pids_limit=pids_limit)
    resources = limits.oci()
    resources["devices"] = [{"allow": True, "access": "rwm"}] if privileged else [{"allow": False, "access": "rwm"}]

    namespaces: list[dict[str, Any]] = [{"type": "mount"}]
    if not spec.get("hostPID"):
        namespaces.append({"type": "pid"})
    if not spec.get("hostIPC"):
        namespaces.append({"type": "ipc", "path": ipcns} if ipcns else {"type": "ipc"})
    if not host_network:
        namespaces.append({"type": "uts"})
        namespaces.append({"type": "network", "path": netns} if netns else {"type": "network"})

    extra = [m.oci() for m in mounts]
    taken = {m["destination"].rstrip("/") for m in extra}
    all_mounts = [m for m in _default_mounts(privileged=privileged, shm=shm) if m["destination"] not in taken] + extra
    all_mounts.sort(key=lambda m: len([p for p in m["destination"].split("/") if p]))

    linux: dict[str, Any] = {
        "cgroupsPath": cgroups_path,
        "resources": resources,
        "namespaces": namespaces,
    }
    unmasked = csc.get("procMount") == "Unmasked"
    if not privileged and not unmasked:
        linux["maskedPaths"] = list(MASKED_PATHS) + _thermal_throttle_paths()
        linux["readonlyPaths"] = list(READONLY_PATHS)
    if privileged:
        linux["devices"] = _host_devices()
    profile = _seccomp(pod, container, caps=caps, privileged=privileged, default=seccomp_default, root=seccomp_root)
    if profile is not None:
        linux["seccomp"] = profile
    sysctls = {str(s.get("name")): str(s.get("value")) for s in
               (spec.get("securityContext") or {}).get("sysctls") or [] if isinstance(s, Mapping)}
    if sysctls:
        linux["sysctl"] = sysctls

    notes = {
        ANNOTATION_POD_UID: str(meta.get("uid") or ""),
        ANNOTATION_POD_NAME: str(meta.get("name") or ""),
        ANNOTATION_POD_NAMESPACE: str(meta.get("namespace") or ""),
        ANNOTATION_CONTAINER_NAME: str(container.get("name") or ""),
        ANNOTATION_ATTEMPT: str(attempt),
        ANNOTATION_LOG_PATH: log_path,
        ANNOTATION_CGROUP: cgroups_path,
        **(annotations or {}),
    }
    config: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": "rootfs", "readonly": bool(csc.get("readOnlyRootFilesystem"))},
        "mounts": all_mounts,
        "linux": linux,
        "annotations": notes,
    }
    if hostname:
        config["hostname"] = hostname
    return config


def _thermal_throttle_paths() -> list[str]:
    """Upstream masks each CPU's thermal_throttle directory too (it leaks host details)."""
    base = Path("/sys/devices/system/cpu")
    out: list[str] = []
    with contextlib.suppress(OSError):
        for e in os.scandir(base):
            if re.fullmatch(r"cpu\d+", e.name) and os.path.isdir(os.path.join(e.path, "thermal_throttle")):
                out.append(os.path.join(e.path, "thermal_throttle"))
    return sorted(out)


# --- mounts -----------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


def _mount(source: str, target: str, fstype: str, data: str) -> None:
    rc = _libc.mount(source.encode(), target.encode(), fstype.encode(), ctypes.c_ulong(0), data.encode())
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype} on {target} failed: {os.strerror(err)}")


def unmount(target: Path) -> None:
    """Unmount `target`; a busy mount is detached lazily (it goes once its last user does)."""
    rc = _libc.umount2(os.fsencode(target), 0)
    if rc == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more)
        return
    if err == errno.EBUSY and _libc.umount2(os.fsencode(target), MNT_DETACH) == 0:
        return
    raise OSError(err, f"cannot unmount {target}: {os.strerror(err)}")


def mountpoints(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[Path]:
    out = []
    for line in mountinfo.read_text().splitlines():
        fields = line.split()
        if len(fields) > 4:
            out.append(Path(fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")))
    return out


def mount_overlay(*, lowerdirs: Sequence[Path], upper: Path, work: Path, target: Path) -> None:
    """overlayfs at `target`: `lowerdirs` bottom first (image layer order), upper/work private."""
    if not lowerdirs:
        raise BundleError("an overlay rootfs needs at least one lower directory (the image's layers)")
    for p in (*lowerdirs, upper, work):
        if any(ch in str(p) for ch in ",:\n"):
            raise BundleError(f"overlay directory {p} contains ',' or ':', which overlayfs options cannot carry")
    lower = ":".join(str(p) for p in reversed(lowerdirs))
    data = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if len(data) >= 4000:
        raise BundleError(f"overlay options for {target} are {len(data)} bytes; the kernel takes one page "
                          "(too many layers with long paths)")
    _mount("overlay", str(target), "overlay", data)


class Bundle:
    """A container's bundle directory and its overlay rootfs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def pid_file(self) -> Path:
        return self.path / "init.pid"

    def is_mounted(self) -> bool:
        return self.rootfs in mountpoints()

    def prepare(self, *, lowerdirs: Sequence[Path]) -> None:
        """Directories and the overlay mount (kept when already mounted: idempotent)."""
        for d in (self.path, self.rootfs, self.path / "upper", self.path / "work"):
            d.mkdir(mode=0o711, parents=True, exist_ok=True)
        if not self.is_mounted():
            mount_overlay(lowerdirs=lowerdirs, upper=self.path / "upper", work=self.path / "work",
                          target=self.rootfs)

    def write_config(self, config: Mapping[str, Any]) -> None:
        write_json(self.config_path, config)

    def read_config(self) -> dict[str, Any]:
        return dict(json.loads(self.config_path.read_text()))

    def remove(self) -> None:
        """Unmount the rootfs (and anything left mounted below the bundle) and delete it all."""
        for mp in sorted((m for m in mountpoints() if m == self.path or self.path in m.parents),
                         key=lambda m: len(m.parts), reverse=True):
            unmount(mp)
        if self.path.exists():
            shutil.rmtree(self.path)


def write_json(path: Path, obj: Any) -> None:
    """Atomically (write, then rename over)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
    os.replace(tmp, path)
