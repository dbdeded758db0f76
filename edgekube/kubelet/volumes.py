"""Pod volumes: emptyDir, hostPath, configMap, secret, downwardAPI and projected (with service
account tokens), and the bind mounts of a container's volumeMounts.

Each volume is a directory under `pods/<uid>/volumes/<plugin>/<name>` (upstream's layout, with
`kubernetes.io~empty-dir` and so on), bind-mounted into the containers that mount it. Semantics
kept from upstream:

- **emptyDir**: a directory with mode 0777; `medium: Memory` is a tmpfs sized by `sizeLimit`
  (else the node's allocatable memory). It lives as long as the pod.
- **hostPath**: the host path itself; `type` is checked (Directory, File, Socket, CharDevice,
  BlockDevice) or made (DirectoryOrCreate with 0755, FileOrCreate with 0644), with upstream's
  messages (`hostPath type check failed: /x is not a directory`).
- **configMap / secret / downwardAPI / projected**: files written the way upstream's
  AtomicWriter writes them: the payload goes to a new hidden directory `..<time>`, the
  `..data` symlink is swapped to it with a rename (atomic), and each top-level name is a symlink
  through `..data`. So a container that mounted the directory sees an update appear whole (a
  reader never sees half of the old and half of the new), and updates reach running pods
  whenever the kubelet syncs the pod. `items` pick keys and their paths, `defaultMode` and item
  `mode` set permissions (0644 by default), a missing object or key fails unless `optional`.
  Secret and projected volumes are on a tmpfs (upstream's memory medium for both), so Secrets
  are never written to flash. A projected `serviceAccountToken` source is the token the caller
  fetched for it (`tokens`, keyed by audience and lifetime: kubelet/tokens.py asks the
  TokenRequest API and rotates it), written as the file `path` with the volume's defaultMode;
  a rotated token reaches the pod through the same atomic swap.
- **volumeMounts**: `mountPath`, `readOnly`, `subPath` (a path inside the volume, made when
  missing, never leaving it), `subPathExpr` (expanded from the container's env),
  `mountPropagation`.

- **fsGroup** (the pod's `securityContext.fsGroup`): emptyDir, configMap, secret, downwardAPI
  and projected volumes are given to that group as upstream's SetVolumeOwnership does: every
  file and directory gets the group, group read (and write, for emptyDir), directories also the
  group's search bit and setgid, so new files inherit the group. Done when the volume is made
  and after each rewrite of its payload, not on every resync; `fsGroupChangePolicy:
  OnRootMismatch` skips the walk when the volume's root already has the group and the bits.
  hostPath volumes are the host's and never changed (upstream too).

Not handled (the pod gets a FailedMount event and stays ContainerCreating): persistentVolumeClaim
and the other network and cloud volume types, projected clusterTrustBundle. Everything here is
blocking file work, run in a thread by the caller.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import dataclasses
import datetime
import errno
import functools
import hashlib
import math
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgekube.api import quantity
from edgekube.kubelet import tokens as tokens_mod
from edgekube.kubelet.runtime import bundle as bundle_mod

JSON = dict[str, Any]
DEFAULT_MODE = 0o644
DATA_DIR = "..data"
READ_ONLY_KINDS = ("configMap", "secret", "downwardAPI", "projected")

PLUGINS = {
    "emptyDir": "kubernetes.io~empty-dir",
    "hostPath": "kubernetes.io~host-path",
    "configMap": "kubernetes.io~configmap",
    "secret": "kubernetes.io~secret",
    "downwardAPI": "kubernetes.io~downward-api",
    "projected": "kubernetes.io~projected",
}

_libc = ctypes.CDLL(None, use_errno=True)


class VolumeError(Exception):
    """A volume cannot be set up (reason FailedMount); the message names the volume and why."""


# Readers of API objects the kubelet passes in: (namespace, name) -> object, or None when absent.
Getter = Callable[[str, str], JSON | None]


@dataclasses.dataclass
class Volume:
    name: str
    kind: str
    path: Path  # what containers bind-mount
    digest: str = ""  # of the last payload written (configMap, secret, ...)


# --- the atomic writer -------------------------------------------------------------------------


def _check_rel(path: str, where: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or ".." in parts or any(p.startswith("..") for p in parts):
        raise VolumeError(f"{where}: path {path!r} must be relative, without '..' and not start with '..'")
    return path


def write_atomic(target: Path, payload: Mapping[str, tuple[bytes, int]], *,
                 before_swap: Callable[[Path], None] | None = None) -> bool:
    """Make `target` hold exactly `payload` (relative path -> (content, mode)); `before_swap`
    is called on the new payload directory before it becomes visible. Returns whether anything
    changed."""
    target.mkdir(parents=True, exist_ok=True)
    data_link = target / DATA_DIR
    current = None
    with contextlib.suppress(OSError):
        current = target / os.readlink(data_link)
    if current is not None and _same(current, payload):
        return False
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y_%m_%d_%H_%M_%S")
    new_dir = target / f"..{stamp}.{secrets.token_hex(4)}"
    new_dir.mkdir(mode=0o755)
    for rel, (content, mode) in payload.items():
        p = new_dir / rel
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        with open(p, "wb") as f:
            f.write(content)
        os.chmod(p, mode)
    if before_swap is not None:
        before_swap(new_dir)
    tmp_link = target / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    os.symlink(new_dir.name, tmp_link)
    os.replace(tmp_link, data_link)
    tops = {rel.split("/", 1)[0] for rel in payload}
    for top in tops:
        link = target / top
        if not link.is_symlink():
            os.symlink(f"{DATA_DIR}/{top}", link)
    for e in os.scandir(target):
        if e.name.startswith(".."):
            if e.name not in (DATA_DIR, new_dir.name):
                shutil.rmtree(e.path, ignore_errors=True) if e.is_dir(follow_symlinks=False) else os.unlink(e.path)
        elif e.name not in tops and e.is_symlink():
            os.unlink(e.path)
    return True


def _same(current: Path, payload: Mapping[str, tuple[bytes, int]]) -> bool:
    try:
        have = {str(Path(root, f).relative_to(current)) for root, _, files in os.walk(current) for f in files}
        if have != set(payload):
            return False
        for rel, (content, mode) in payload.items():
            p = current / rel
            if stat.S_IMODE(p.stat().st_mode) != mode or p.read_bytes() != content:
                return False
    except OSError:
        return False
    return True


# --- payloads ----------------------------------------------------------------------------------


def _mode(value: Any, default: int) -> int:
    return int(value) & 0o7777 if isinstance(value, int) and not isinstance(value, bool) else default


def _keyed_payload(data: Mapping[str, bytes], items: Sequence[Mapping[str, Any]] | None, *, default_mode: int,
                   optional: bool, what: str, where: str) -> dict[str, tuple[bytes, int]]:
    out: dict[str, tuple[bytes, int]] = {}
    if not items:
        for key, content in data.items():
            out[_check_rel(key, where)] = (content, default_mode)
        return out
    for item in items:
        key = str(item.get("key") or "")
        if key not in data:
            if optional:
                continue
            raise VolumeError(f"{where}: configuration error: key {key!r} not found in {what}")
        out[_check_rel(str(item.get("path") or key), where)] = (data[key], _mode(item.get("mode"), default_mode))
    return out


def configmap_data(cm: Mapping[str, Any]) -> dict[str, bytes]:
    out = {str(k): str(v).encode() for k, v in (cm.get("data") or {}).items()}
    for k, v in (cm.get("binaryData") or {}).items():
        with contextlib.suppress(binascii.Error, ValueError):
            out[str(k)] = base64.b64decode(str(v))
    return out


def secret_data(secret: Mapping[str, Any]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for k, v in (secret.get("data") or {}).items():
        with contextlib.suppress(binascii.Error, ValueError):
            out[str(k)] = base64.b64decode(str(v))
    for k, v in (secret.get("stringData") or {}).items():
        out[str(k)] = str(v).encode()
    return out


def field_value(pod: Mapping[str, Any], path: str) -> str:
    """A downward API fieldRef (upstream's podFieldSelectorRuntimeValue plus labels/annotations
    as whole files)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    for prefix, source in (("metadata.labels", meta.get("labels")), ("metadata.annotations", meta.get("annotations"))):
        if path == prefix:
            return "".join(f'{k}="{_escape(v)}"\n' for k, v in sorted((source or {}).items()))
        if path.startswith(prefix + "['") and path.endswith("']"):
            return str((source or {}).get(path[len(prefix) + 2:-2], ""))
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"), "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"), "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP"), "status.podIP": status.get("podIP"),
        "status.hostIPs": ",".join(str(i.get("ip")) for i in status.get("hostIPs") or [] if isinstance(i, Mapping)),
        "status.podIPs": ",".join(str(i.get("ip")) for i in status.get("podIPs") or [] if isinstance(i, Mapping)),
    }
    if path not in simple:
        raise VolumeError(f"unsupported fieldRef fieldPath {path!r}")
    return str(simple[path] or "")


def _escape(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def resource_value(pod: Mapping[str, Any], ref: Mapping[str, Any], *, default_container: str,
                   allocatable: Mapping[str, str]) -> str:
    """A resourceFieldRef: the container's limit or request over the divisor, rounded up; a
    limit that is not set is the node's allocatable (upstream's MergeContainerResourceLimits)."""
    name = str(ref.get("containerName") or default_container)
    resource = str(ref.get("resource") or "")
    spec = pod.get("spec") or {}
    container = next((c for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
                      if isinstance(c, Mapping) and c.get("name") == name), None)
    if container is None:
        raise VolumeError(f"resourceFieldRef: container {name!r} is not in the pod")
    kind, _, res = resource.partition(".")
    if kind not in ("limits", "requests") or res not in ("cpu", "memory", "ephemeral-storage"):
        raise VolumeError(f"resourceFieldRef: unsupported resource {resource!r}")
    values = (container.get("resources") or {}).get(kind) or {}
    raw = values.get(res)
    if raw is None and kind == "limits":
        raw = allocatable.get(res)
    if raw is None:
        raw = "0"
    divisor = ref.get("divisor") or "1"
    try:
        if res == "cpu":
            d = max(1, quantity.milli(divisor))
            v = math.ceil(quantity.milli(raw) / d)
        else:
            d = max(1, quantity.whole(divisor))
            v = math.ceil(quantity.whole(raw) / d)
    except quantity.QuantityError as exc:
        raise VolumeError(f"resourceFieldRef {resource}: {exc}") from None
    return str(v)


def downward_payload(pod: Mapping[str, Any], items: Sequence[Mapping[str, Any]], *, default_mode: int, where: str,
                     allocatable: Mapping[str, str]) -> dict[str, tuple[bytes, int]]:
    out: dict[str, tuple[bytes, int]] = {}
    for item in items:
        path = _check_rel(str(item.get("path") or ""), where)
        mode = _mode(item.get("mode"), default_mode)
        if item.get("fieldRef"):
            value = field_value(pod, str((item["fieldRef"] or {}).get("fieldPath") or ""))
        elif item.get("resourceFieldRef"):
            first = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("name", "")
            value = resource_value(pod, item["resourceFieldRef"], default_container=first, allocatable=allocatable)
        else:
            raise VolumeError(f"{where}: item {path!r} has neither fieldRef nor resourceFieldRef")
        out[path] = (value.encode(), mode)
    return out


# --- fsGroup -----------------------------------------------------------------------------------


def _ownership_ok(root: Path, gid: int, mask: int) -> bool:
    st = root.stat()
    want = mask | 0o110 | stat.S_ISGID
    return st.st_gid == gid and stat.S_IMODE(st.st_mode) & want == want


def set_ownership(root: Path, gid: int, *, readonly: bool, policy: str = "Always") -> None:
    """Give the tree under `root` to group `gid` as upstream's SetVolumeOwnership does: the
    group on everything, group read (and write unless `readonly`) on files, plus search and
    setgid on directories. The walk goes by file descriptor and never follows a symlink (a
    container may be changing the tree meanwhile: a file swapped for a link to a host file must
    not hand that host file over); links and special files get the group only."""
    mask = 0o440 if readonly else 0o660
    if policy == "OnRootMismatch" and _ownership_ok(root, gid, mask):
        return
    _own_fd_path(str(root), None, gid, mask | 0o110 | stat.S_ISGID)
    for _, dirnames, filenames, dir_fd in os.fwalk(root, follow_symlinks=False):
        for name in dirnames:
            _own_fd_path(name, dir_fd, gid, mask | 0o110 | stat.S_ISGID, want_dir=True)
        for name in filenames:
            _own_fd_path(name, dir_fd, gid, mask)


def _own_fd_path(name: str, dir_fd: int | None, gid: int, bits: int, *, want_dir: bool | None = None) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        with contextlib.suppress(FileNotFoundError):
            os.chown(name, -1, gid, dir_fd=dir_fd, follow_symlinks=False)
        return
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_DIRECTORY if want_dir else 0)
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # became a symlink meanwhile: not ours to follow
            return
        raise
    try:
        now = os.fstat(fd)
        os.fchown(fd, -1, gid)
        os.fchmod(fd, stat.S_IMODE(now.st_mode) | (bits if stat.S_ISDIR(now.st_mode) else bits & 0o777))
    finally:
        os.close(fd)


def _fs_group(pod: Mapping[str, Any]) -> tuple[int | None, str]:
    psc = (pod.get("spec") or {}).get("securityContext") or {}
    gid = psc.get("fsGroup")
    if not isinstance(gid, int) or isinstance(gid, bool):
        return None, "Always"
    return gid, str(psc.get("fsGroupChangePolicy") or "Always")


# --- set-up and tear-down ----------------------------------------------------------------------


def _mount_tmpfs(target: Path, *, size: int | None, mode: int = 0o777) -> None:
    if target in bundle_mod.mountpoints():
        return
    target.mkdir(parents=True, exist_ok=True)
    data = f"mode={mode:o}" + (f",size={size}" if size else "")
    rc = _libc.mount(b"tmpfs", os.fsencode(target), b"tmpfs", ctypes.c_ulong(0), data.encode())
    if rc != 0:
        err = ctypes.get_errno()
        raise VolumeError(f"cannot mount a tmpfs on {target}: {os.strerror(err)}")


_HOSTPATH_CHECKS: dict[str, tuple[Callable[[int], bool], str]] = {
    "Directory": (stat.S_ISDIR, "a directory"),
    "File": (stat.S_ISREG, "a file"),
    "Socket": (stat.S_ISSOCK, "a socket file"),
    "CharDevice": (stat.S_ISCHR, "a character device"),
    "BlockDevice": (stat.S_ISBLK, "a block device"),
}


def _host_path(spec: Mapping[str, Any], where: str) -> Path:
    path = str(spec.get("path") or "")
    if not path.startswith("/"):
        raise VolumeError(f"{where}: hostPath path {path!r} must be absolute")
    kind = str(spec.get("type") or "")
    p = Path(path)
    if kind == "DirectoryOrCreate":
        if not p.exists():
            p.mkdir(parents=True, mode=0o755)
        kind = "Directory"
    elif kind == "FileOrCreate":
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
            os.close(fd)
        kind = "File"
    if kind in _HOSTPATH_CHECKS:
        check, what = _HOSTPATH_CHECKS[kind]
        try:
            mode = os.stat(p).st_mode
        except FileNotFoundError:
            raise VolumeError(f"{where}: hostPath type check failed: {path} does not exist") from None
        if not check(mode):
            raise VolumeError(f"{where}: hostPath type check failed: {path} is not {what}")
    elif kind:
        raise VolumeError(f"{where}: hostPath type {kind!r} is not supported")
    return p


def setup(pod: Mapping[str, Any], *, volumes_dir: Path, get_configmap: Getter, get_secret: Getter,
          allocatable: Mapping[str, str], known: Mapping[str, Volume],
          tokens: Mapping[tuple[str, int], str] | None = None) -> dict[str, Volume]:
    """Set up (or refresh) every volume of the pod. `known` is what the last call returned (its
    payload digests spare rewriting unchanged files)."""
    meta = pod.get("metadata") or {}
    ns = str(meta.get("namespace") or "default")
    fs_group, policy = _fs_group(pod)
    out: dict[str, Volume] = {}
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        name = str(vol.get("name") or "")
        where = f'volume "{name}"'
        kind = next((k for k in PLUGINS if k in vol), None)
        if kind is None:
            other = next((k for k in vol if k != "name"), "?")
            raise VolumeError(f"{where}: {other} volumes are not supported by this kubelet")
        src = vol.get(kind) or {}
        if kind == "hostPath":
            out[name] = Volume(name, kind, _host_path(src, where))
            continue
        target = volumes_dir / PLUGINS[kind] / name
        if kind == "emptyDir":
            if name not in known:
                if src.get("medium") == "Memory":
                    size = None
                    with contextlib.suppress(quantity.QuantityError):
                        size = quantity.whole(src.get("sizeLimit") or allocatable.get("memory") or "0") or None
                    _mount_tmpfs(target, size=size)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    os.chmod(target, 0o777)
                if fs_group is not None:
                    set_ownership(target, fs_group, readonly=False, policy=policy)
            out[name] = Volume(name, kind, target)
            continue
        if kind in ("secret", "projected"):  # as upstream's: projected volumes carry Secrets and tokens
            _mount_tmpfs(target, size=None, mode=0o755)
        payload = _payload(kind, src, pod=pod, ns=ns, where=where, get_configmap=get_configmap,
                           get_secret=get_secret, allocatable=allocatable, tokens=tokens or {})
        digest = _digest(payload)
        prev = known.get(name)
        if prev is None or prev.digest != digest or not (target / DATA_DIR).exists():
            # Upstream gives these volumes no change policy (always the whole payload), and
            # owns the new payload before `..data` points at it.
            own = None if fs_group is None else functools.partial(set_ownership, gid=fs_group, readonly=True)
            write_atomic(target, payload, before_swap=own)
            if fs_group is not None:  # then the root and its links (a small walk: a few names)
                set_ownership(target, fs_group, readonly=True)
        out[name] = Volume(name, kind, target, digest)
    return out


def _digest(payload: Mapping[str, tuple[bytes, int]]) -> str:
    h = hashlib.sha256()
    for rel in sorted(payload):
        content, mode = payload[rel]
        h.update(f"{rel}\0{mode}\0{len(content)}\0".encode())
        h.update(content)
    return h.hexdigest()


def _payload(kind: str, src: Mapping[str, Any], *, pod: Mapping[str, Any], ns: str, where: str,
             get_configmap: Getter, get_secret: Getter, allocatable: Mapping[str, str],
             tokens: Mapping[tuple[str, int], str]) -> dict[str, tuple[bytes, int]]:
    default_mode = _mode(src.get("defaultMode"), DEFAULT_MODE)
    if kind == "configMap":
        return _object_payload("configmap", str(src.get("name") or ""), src, ns=ns, where=where,
                               get=get_configmap, decode=configmap_data, default_mode=default_mode)
    if kind == "secret":
        return _object_payload("secret", str(src.get("secretName") or ""), src, ns=ns, where=where,
                               get=get_secret, decode=secret_data, default_mode=default_mode)
    if kind == "downwardAPI":
        return downward_payload(pod, src.get("items") or [], default_mode=default_mode, where=where,
                                allocatable=allocatable)
    out: dict[str, tuple[bytes, int]] = {}
    for source in src.get("sources") or []:
        if source.get("configMap"):
            s = source["configMap"]
            out.update(_object_payload("configmap", str(s.get("name") or ""), s, ns=ns, where=where,
                                       get=get_configmap, decode=configmap_data, default_mode=default_mode))
        elif source.get("secret"):
            s = source["secret"]
            out.update(_object_payload("secret", str(s.get("name") or ""), s, ns=ns, where=where,
                                       get=get_secret, decode=secret_data, default_mode=default_mode))
        elif source.get("downwardAPI"):
            out.update(downward_payload(pod, source["downwardAPI"].get("items") or [], default_mode=default_mode,
                                        where=where, allocatable=allocatable))
        elif source.get("serviceAccountToken"):
            s = source["serviceAccountToken"]
            key = tokens_mod.token_key(s)
            if key not in tokens:
                raise VolumeError(f"MountVolume.SetUp failed for {where} : no service account token fetched for it")
            out[_check_rel(str(s.get("path") or ""), where)] = (tokens[key].encode(), default_mode)
        else:
            other = next(iter(source), "?")
            raise VolumeError(f"{where}: projected {other} sources are not supported by this kubelet")
    return out


def _object_payload(what: str, name: str, src: Mapping[str, Any], *, ns: str, where: str, get: Getter,
                    decode: Callable[[Mapping[str, Any]], dict[str, bytes]],
                    default_mode: int) -> dict[str, tuple[bytes, int]]:
    obj = get(ns, name)
    optional = bool(src.get("optional"))
    if obj is None:
        if optional:
            return {}
        raise VolumeError(f'MountVolume.SetUp failed for {where} : {what} "{name}" not found')
    return _keyed_payload(decode(obj), src.get("items"), default_mode=default_mode, optional=optional,
                          what=f"{what} {ns}/{name}", where=where)


def container_mounts(container: Mapping[str, Any], volumes: Mapping[str, Volume],
                     env: Mapping[str, str]) -> list[bundle_mod.Mount]:
    """The container's volumeMounts as bind mounts."""
    out: list[bundle_mod.Mount] = []
    for m in container.get("volumeMounts") or []:
        name = str(m.get("name") or "")
        vol = volumes.get(name)
        where = f'volumeMount "{name}" of container "{container.get("name")}"'
        if vol is None:
            raise VolumeError(f"{where}: the pod has no volume {name!r}")
        source = vol.path
        sub = str(m.get("subPath") or "")
        if m.get("subPathExpr"):
            sub = bundle_mod.expand(str(m["subPathExpr"]), env)
        if sub:
            if sub.startswith("/") or ".." in sub.split("/"):
                raise VolumeError(f"{where}: subPath {sub!r} must be a relative path without '..'")
            source = bundle_mod.secure_join(vol.path, sub)
            if vol.path not in source.parents and source != vol.path:
                raise VolumeError(f"{where}: subPath {sub!r} leaves the volume")
            if not source.exists():
                source.mkdir(parents=True, mode=0o755)
        out.append(bundle_mod.Mount(destination=str(m.get("mountPath") or ""), source=str(source),
                                    # Always read-only for these, as upstream (CVE-2017-1002102).
                                    readonly=bool(m.get("readOnly")) or vol.kind in READ_ONLY_KINDS,
                                    propagation=str(m.get("mountPropagation") or "None")))
    return out


def teardown(volumes_dir: Path) -> None:
    """Unmount the pod's tmpfs volumes and remove its volume directories (hostPaths are the
    host's and stay)."""
    if not volumes_dir.exists():
        return
    for mp in sorted((m for m in bundle_mod.mountpoints() if volumes_dir in m.parents), key=lambda m: len(m.parts),
                     reverse=True):
        bundle_mod.unmount(mp)
    shutil.rmtree(volumes_dir, ignore_errors=True)
