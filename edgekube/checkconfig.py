"""`edgekube check-config`: can this machine run edgekube, and if not, the exact fix.

Each check reads the machine as the server would use it (the same config: data dir, runc binary,
enabled components) and reports `ok`, `warn` (edgekube runs, with a limit the line names) or
`FAIL` (the server, or pods, would not work), with the command or the file edit that fixes it.
Exit code 0 when nothing fails, 1 otherwise, so a provisioning script can stop on it.

What is probed, and how, without changing the machine:
- cgroups: the mounted hierarchies (v1 controllers, or the v2 unified tree's controllers), and
  `/proc/cgroups` for controllers the kernel has but the boot command line disabled (a Raspberry
  Pi's memory cgroup: `cgroup_memory=1 cgroup_enable=memory` in `/boot/firmware/cmdline.txt`);
- file systems the kernel offers (`/proc/filesystems`): overlay for container roots;
- links: a veth pair, a bridge and a vxlan device made in a network namespace of a child process
  of its own, which vanishes with the child (nothing in the host's namespace is touched);
- nftables: the `nft` binary, and the kernel's answer to `nft list tables`;
- seccomp: the `Seccomp:` line of `/proc/self/status` (a kernel built with it);
- capabilities of this process (root in LXC or a container lacks some);
- runc: the configured binary and its version;
- the data dir: its file system (tmpfs loses the cluster at reboot; FAT and network file
  systems cannot hold it) and its free space;
- the clock: earlier than this build (a board without a real-time clock before NTP).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from edgekube import config as config_mod
from edgekube._cogs import mounts as mounts_mod
from edgekube._cogs import timefloor
from edgekube.kubelet.runtime import cgroups

OK, WARN, FAIL = "ok", "warn", "FAIL"
PI_CMDLINE = Path("/boot/firmware/cmdline.txt")
_CAPS = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_SYS_RESOURCE": 24}
_V1_NEEDED = ("cpu", "cpuacct", "memory", "pids")
_V2_NEEDED = ("cpu", "memory", "pids")
_BAD_FS = {"vfat", "msdos", "exfat", "ntfs", "ntfs3", "fuseblk"}  # no owners, modes or locks LMDB needs
_NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "9p", "sshfs", "fuse.sshfs", "glusterfs", "ceph"}
LOW_FREE_BYTES = 1 << 30  # warn: image layers and logs fill this soon
MIN_FREE_BYTES = 64 << 20  # fail: the store keeps a reserve of 16 MiB and needs room to grow


@dataclasses.dataclass(frozen=True)
class Result:
    name: str
    status: str
    detail: str
    fix: str = ""


@dataclasses.dataclass(frozen=True)
class Proc:
    """Where the machine's facts are read (tests give files of their own)."""

    cgroups: Path = Path("/proc/cgroups")
    mountinfo: Path = Path("/proc/self/mountinfo")
    mounts: Path = mounts_mod.MOUNTS
    filesystems: Path = Path("/proc/filesystems")
    status: Path = Path("/proc/self/status")
    cmdline_txt: Path = PI_CMDLINE


def _memory_cgroup_fix(proc: Proc) -> str:
    where = proc.cmdline_txt if proc.cmdline_txt.exists() else Path("/boot/cmdline.txt")
    if where.exists():
        return (f"add `cgroup_memory=1 cgroup_enable=memory` to the end of the single line of {where} "
                "(Raspberry Pi), then reboot")
    return "add `cgroup_memory=1 cgroup_enable=memory` to the kernel command line (the boot loader's config), then reboot"


def check_cgroups(proc: Proc) -> list[Result]:
    try:
        mounts = cgroups.cgroup_mounts(proc.mountinfo)
    except OSError as exc:
        return [Result("cgroups", FAIL, f"cannot read {proc.mountinfo}: {exc}")]
    disabled: set[str] = set()
    with contextlib.suppress(OSError):
        for line in proc.cgroups.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 4 and fields[3] == "0":
                disabled.add(fields[0])
    out: list[Result] = []
    unified = next((m for m in mounts if m.version == 2 and m.mountpoint == Path("/sys/fs/cgroup")), None)
    if unified is not None:
        try:
            have = set((unified.mountpoint / "cgroup.controllers").read_text().split())
        except OSError as exc:
            return [Result("cgroups v2", FAIL, f"cannot read {unified.mountpoint}/cgroup.controllers: {exc}")]
        missing = [c for c in _V2_NEEDED if c not in have]
        version, found = "v2", sorted(have)
    else:
        v1 = {c for m in mounts if m.version == 1 for c in m.controllers}
        if not v1:
            return [Result("cgroups", FAIL, "no cgroup hierarchy is mounted",
                           "mount the cgroup file systems (systemd does at boot; in a container, run it with "
                           "the host's /sys/fs/cgroup)")]
        missing = [c for c in _V1_NEEDED if c not in v1]
        version, found = "v1", sorted(c for c in v1 if not c.startswith("name="))
    if "memory" in missing or "memory" in disabled:
        out.append(Result("memory cgroup", FAIL, "the kernel's memory controller is disabled"
                          + (" by the boot command line" if "memory" in disabled else " or not mounted"),
                          _memory_cgroup_fix(proc)))
    others = [c for c in missing if c != "memory"]
    if others:
        out.append(Result(f"cgroups {version}", FAIL, f"missing controllers: {', '.join(others)} (found: {', '.join(found)})",
                          "a kernel with CONFIG_CGROUP_SCHED, CONFIG_CGROUP_CPUACCT and CONFIG_CGROUP_PIDS, "
                          "and those controllers mounted"))
    else:
        out.append(Result(f"cgroups {version}", OK, ", ".join(found)))
    return out


def check_filesystems(proc: Proc) -> list[Result]:
    try:
        names = {line.split()[-1] for line in proc.filesystems.read_text().splitlines() if line.split()}
    except OSError as exc:
        return [Result("overlayfs", FAIL, f"cannot read {proc.filesystems}: {exc}")]
    if "overlay" in names:
        return [Result("overlayfs", OK, "container root file systems")]
    return [Result("overlayfs", FAIL, "the kernel has no overlay file system (containers need it for their roots)",
                   "`modprobe overlay` (and `overlay` in /etc/modules), or a kernel with CONFIG_OVERLAY_FS")]


def _probe_links() -> dict[str, str]:
    """Make a veth pair, a bridge and a vxlan device in a network namespace of a child of its
    own: kind -> "" (made) or the kernel's error. The namespace goes with the child."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        result: dict[str, str] = {}
        try:
            os.close(read_fd)
            from edgekube._cogs import netns

            netns.unshare_net()
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                for kind, spec in (("veth", {"ifname": "ekc0", "kind": "veth", "peer": "ekc1"}),
                                   ("bridge", {"ifname": "ekcbr", "kind": "bridge"}),
                                   ("vxlan", {"ifname": "ekcvx", "kind": "vxlan", "vxlan_id": 42, "vxlan_port": 4789})):
                    try:
                        ipr.link("add", **spec)
                        result[kind] = ""
                    except Exception as exc:
                        result[kind] = str(exc) or type(exc).__name__
        except BaseException as exc:
            result = {k: f"cannot probe: {exc}" for k in ("veth", "bridge", "vxlan")}
        finally:
            with contextlib.suppress(BaseException):
                os.write(write_fd, json.dumps(result).encode())
            os._exit(0)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as f:
            data = f.read()
    finally:
        os.waitpid(pid, 0)
    try:
        answer = json.loads(data)
    except ValueError:
        answer = {}
    return {k: str(answer.get(k, "the probe died")) for k in ("veth", "bridge", "vxlan")}


def check_links(cfg: config_mod.Config, probe: Callable[[], dict[str, str]] = _probe_links) -> list[Result]:
    results = probe()
    fixes = {"veth": "a kernel with CONFIG_VETH (`modprobe veth`)", "bridge": "a kernel with CONFIG_BRIDGE (`modprobe bridge`)",
             "vxlan": "a kernel with CONFIG_VXLAN (`modprobe vxlan`)"}
    out = []
    for kind, error in results.items():
        if not error:
            out.append(Result(f"{kind} links", OK, "made in a scratch network namespace"))
            continue
        # The pod network needs veth and bridge; vxlan only joins nodes (multi-node, later).
        needed = kind != "vxlan" and cfg.enabled("network")
        out.append(Result(f"{kind} links", FAIL if needed else WARN, f"the kernel refused one: {error}", fixes[kind]))
    return out


def check_nft(cfg: config_mod.Config, *, which: Callable[[str], str | None] = shutil.which) -> list[Result]:
    needed = cfg.enabled("network")
    nft = which("nft")
    if nft is None:
        return [Result("nftables", FAIL if needed else WARN, "no `nft` binary (the service proxy writes its rules with it)",
                       "apt-get install nftables")]
    try:
        done = subprocess.run([nft, "list", "tables"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Result("nftables", FAIL if needed else WARN, f"`nft list tables` failed: {exc}")]
    if done.returncode != 0:
        return [Result("nftables", FAIL if needed else WARN, f"the kernel refused `nft list tables`: {done.stderr.strip()}",
                       "a kernel with CONFIG_NF_TABLES (`modprobe nf_tables`), run as root")]
    return [Result("nftables", OK, nft)]


def check_seccomp(cfg: config_mod.Config, proc: Proc) -> list[Result]:
    try:
        status = proc.status.read_text()
    except OSError as exc:
        return [Result("seccomp", WARN, f"cannot read {proc.status}: {exc}")]
    if any(line.startswith("Seccomp:") for line in status.splitlines()):
        return [Result("seccomp", OK, "RuntimeDefault profiles can be enforced")]
    return [Result("seccomp", FAIL if cfg.kubelet.seccomp_default else WARN, "the kernel was built without seccomp",
                   "a kernel with CONFIG_SECCOMP_FILTER, or `kubelet: {seccomp-default: false}` in the config")]


def check_capabilities(proc: Proc) -> list[Result]:
    try:
        line = next(x for x in proc.status.read_text().splitlines() if x.startswith("CapEff:"))
        eff = int(line.split()[1], 16)
    except (OSError, StopIteration, ValueError, IndexError) as exc:
        return [Result("capabilities", WARN, f"cannot read them from {proc.status}: {exc}")]
    missing = [name for name, bit in _CAPS.items() if not eff & (1 << bit)]
    out = []
    hard = [c for c in missing if c != "CAP_SYS_RESOURCE"]
    if hard:
        out.append(Result("capabilities", FAIL, f"missing {', '.join(hard)}: containers and the pod network need them",
                          "run edgekube as root, not in an unprivileged container (LXC: a privileged one, or "
                          "`lxc.cap.keep` with these)"))
    if "CAP_SYS_RESOURCE" in missing:
        out.append(Result("CAP_SYS_RESOURCE", WARN, "missing (LXC, containers): Guaranteed pods keep this process's "
                          "oom_score_adj instead of -997, with an OOMScoreAdjustClamped event",
                          "none needed; a privileged container or a host install restores upstream's values"))
    if not missing:
        out.append(Result("capabilities", OK, ", ".join(_CAPS)))
    elif not hard:
        out.append(Result("capabilities", OK, ", ".join(c for c in _CAPS if c not in missing)))
    return out


def check_runc(cfg: config_mod.Config, *, which: Callable[[str], str | None] = shutil.which) -> list[Result]:
    needed = cfg.enabled("kubelet")
    runc = which(cfg.kubelet.runc)
    if runc is None:
        return [Result("runc", FAIL if needed else WARN, f"`{cfg.kubelet.runc}` not found (the kubelet runs containers with it)",
                       "apt-get install runc, or `kubelet: {runc: /path/to/runc}` in the config")]
    try:
        done = subprocess.run([runc, "--version"], capture_output=True, text=True, timeout=20)
        version = (done.stdout.splitlines() or ["?"])[0]
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Result("runc", FAIL if needed else WARN, f"{runc} does not run: {exc}")]
    return [Result("runc", OK, f"{runc}: {version}")]


def check_data_dir(cfg: config_mod.Config, proc: Proc) -> list[Result]:
    path = cfg.data_dir
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        point, fstype = mounts_mod.holder(existing.resolve(), mounts_mod.table(proc.mounts)) or (Path("/"), "")
        st = os.statvfs(existing)
    except OSError as exc:
        return [Result("data dir", FAIL, f"{path}: {exc}")]
    free = st.f_bavail * st.f_frsize
    where = f"{path} on {fstype or '?'} ({point}), {free / (1 << 30):.1f} GiB free"
    out = []
    if fstype in _BAD_FS:
        out.append(Result("data dir", FAIL, f"{where}: this file system has no owners, modes or locks",
                          "put the data dir on ext4, f2fs, btrfs or xfs (`--data-dir`, or `data-dir:` in the config)"))
    elif fstype in _NETWORK_FS:
        out.append(Result("data dir", FAIL, f"{where}: LMDB cannot lock a database on a network file system",
                          "put the data dir on a local file system"))
    elif fstype in ("tmpfs", "ramfs"):
        out.append(Result("data dir", WARN, f"{where}: memory only, the whole cluster is lost at reboot",
                          "put the data dir on the SD card or disk for a node that keeps its state"))
    elif free < MIN_FREE_BYTES:
        out.append(Result("data dir", FAIL, f"{where}: too little room for the store",
                          "free some space, or move the data dir to a larger file system"))
    elif free < LOW_FREE_BYTES:
        out.append(Result("data dir", WARN, f"{where}: image layers and logs will soon fill it"))
    else:
        out.append(Result("data dir", OK, where))
    return out


def check_clock(*, now: datetime.datetime | None = None) -> list[Result]:
    wall = now or datetime.datetime.now(datetime.UTC)
    floor = timefloor.build_time()
    if wall < floor:
        return [Result("clock", WARN, f"{wall:%Y-%m-%d %H:%M} UTC is before this build ({floor:%Y-%m-%d}): no real-time "
                       "clock yet, or no NTP; edgekube stamps certificates from the later of the two",
                       "let NTP set the clock (a Raspberry Pi has no RTC), or add an RTC")]
    return [Result("clock", OK, f"{wall:%Y-%m-%d %H:%M} UTC")]


def run_checks(cfg: config_mod.Config, proc: Proc = Proc()) -> Iterator[Result]:
    yield from check_cgroups(proc)
    yield from check_filesystems(proc)
    yield from check_links(cfg)
    yield from check_nft(cfg)
    yield from check_seccomp(cfg, proc)
    yield from check_capabilities(proc)
    yield from check_runc(cfg)
    yield from check_data_dir(cfg, proc)
    yield from check_clock()


def report(results: list[Result], *, cfg: config_mod.Config, as_json: bool) -> str:
    if as_json:
        return json.dumps([dataclasses.asdict(r) for r in results], indent=2)
    lines = [f"edgekube check-config: Linux {platform.release()} on {platform.machine()}, config {cfg.source}"]
    for r in results:
        lines.append(f"  {r.status:<5} {r.name}: {r.detail}")
        if r.fix and r.status != OK:
            lines.append(f"        fix: {r.fix}")
    fails = sum(r.status == FAIL for r in results)
    warns = sum(r.status == WARN for r in results)
    lines.append(f"{fails} failed, {warns} warning{'' if warns == 1 else 's'}: " + ("edgekube can run here" if not fails else "fix the FAIL lines first"))
    return "\n".join(lines)
