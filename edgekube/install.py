"""`edgekube install` and `edgekube uninstall`: a device set up from the binary alone, and taken
back to what it was.

install [--root DIR] [--binary FILE] [--no-start]
- the binary to `ROOT/usr/local/bin/edgekube` (this program's own file unless `--binary`),
- the systemd unit (`edgekube/_data/edgekube.service`, carried inside the binary) to
  `ROOT/etc/systemd/system/edgekube.service`,
- the default config to `ROOT/etc/edgekube/config.yaml`, only when there is none (a config
  someone edited is never overwritten),
- enabled as `systemctl enable` does (the `multi-user.target.wants` link), then, when systemd runs
  this machine and ROOT is `/`, `systemctl daemon-reload` and `systemctl restart edgekube`
  (`--no-start`: not started);
- prints what it did and the kubeconfig's path. Run twice, it changes nothing the second time
  (each file is written only when its content differs) and says so.

uninstall [--root DIR] [--purge]
- stops the service (when systemd runs, before anything else: it holds the data dir), then
  removes everything edgekube put on the host while it ran: its containers (runc's state, bundles, overlay mounts), the pods' network namespaces and
  volume mounts, their cgroups (the `kubelet.cgroup-parent` tree in every hierarchy), the pod
  network's bridge and the nftables table `inet edgekube`, and its directories in memory
  (`/run/edgekube`); then the binary, the unit and its enable link.
- the config, the data dir (the cluster, its certificates) and the pods' logs stay, unless
  `--purge`.
What to remove is read from the config (`--config`, or the installed one): a data dir, a kubelet
root or a cgroup parent set there are honoured. With `--root` other than `/` (an image), only the
files under it are removed, the config's paths taken under it: nothing running on the machine
that runs the command is touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import os
import shutil
import subprocess
import sys
from pathlib import Path

from edgekube import config as config_mod
from edgekube._cogs import files, memdir
from edgekube.kubelet.runtime import bundle, cgroups, containers
from edgekube.net import nft

BINARY = Path("usr/local/bin/edgekube")
UNIT = Path("etc/systemd/system/edgekube.service")
WANTS = Path("etc/systemd/system/multi-user.target.wants/edgekube.service")
CONFIG = Path("etc/edgekube/config.yaml")


def data_file(name: str) -> bytes:
    """A file of `edgekube/_data/` (in the binary too: Nuitka includes the package's data)."""
    return (importlib.resources.files("edgekube") / "_data" / name).read_bytes()


def own_binary() -> Path | None:
    """This program's executable: the Nuitka binary it runs as (its onefile bootstrap's path),
    or None when it runs as Python source (`--binary` is needed then)."""
    if "__compiled__" not in globals():
        return None
    onefile = os.environ.get("NUITKA_ONEFILE_BINARY")
    return Path(onefile or sys.argv[0]).resolve()


def _systemd_runs(root: Path) -> bool:
    return root == Path("/") and Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def _place(path: Path, data: bytes, *, mode: int) -> bool:
    """`path` holds `data` (atomically); False when it already did."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_bytes() == data:
            if path.stat().st_mode & 0o7777 != mode:
                os.chmod(path, mode)
                return True
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path, data, mode=mode)
    return True


def install(root: Path, *, binary: Path, start: bool, out: list[str]) -> None:
    changed = []
    if binary.resolve() != (root / BINARY).resolve() and _place(root / BINARY, binary.read_bytes(), mode=0o755):
        changed.append(f"binary {root / BINARY}")
    if _place(root / UNIT, data_file("edgekube.service"), mode=0o644):
        changed.append(f"unit {root / UNIT}")
    if not (root / CONFIG).exists():
        _place(root / CONFIG, data_file("config.yaml"), mode=0o644)
        changed.append(f"config {root / CONFIG}")
    else:
        out.append(f"kept the config {root / CONFIG} as it is")
    link = root / WANTS
    target = Path("/") / UNIT
    if not link.is_symlink() or Path(os.readlink(link)) != target:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        changed.append(f"enabled ({link})")
    out.extend(f"installed {what}" for what in changed)
    if not changed:
        out.append("already installed: nothing changed")
    if _systemd_runs(root):
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        if start and changed:
            subprocess.run(["systemctl", "restart", "edgekube"], check=True)
            out.append("started: systemctl status edgekube")
        elif start:
            subprocess.run(["systemctl", "start", "edgekube"], check=True)
    elif start:
        out.append("systemd does not run this machine: start it with `edgekube server`")
    cfg = config_mod.load(config_file=root / CONFIG, boot_file=None)
    data_dir = _under(root, cfg.data_dir)
    out.append(f"kubeconfig (once it runs): {data_dir / 'kubeconfig.yaml'}")


def _under(root: Path, path: Path) -> Path:
    """A path of the config as seen from this machine: under `root` when that is an image's."""
    if root == Path("/"):
        return path
    return root / (path.relative_to("/") if path.is_absolute() else path)


def stop_service(root: Path, out: list[str]) -> None:
    """Stop and disable the service first (it holds the data dir: nothing can be removed under it)."""
    if _systemd_runs(root):
        subprocess.run(["systemctl", "disable", "--now", "edgekube"], check=False, capture_output=True)
        out.append("stopped and disabled the service")


def uninstall(root: Path, cfg: config_mod.Config, *, purge: bool, out: list[str]) -> None:
    """Everything edgekube put on this machine (`remove_runtime`), then its files. Under a
    `root` other than `/` (an image being built), the files under it only: nothing that runs
    on this machine is touched, and the config's paths are taken under `root`."""
    on_host = root == Path("/")
    if on_host:
        remove_runtime(cfg, out)
    else:
        out.append(f"{root} is not this machine's root: its files only, nothing running here is touched")
    for path in (root / BINARY, root / UNIT, root / WANTS):
        if path.is_symlink() or path.exists():
            path.unlink()
            out.append(f"removed {path}")
    if _systemd_runs(root):
        subprocess.run(["systemctl", "daemon-reload"], check=False)

    kept = [_under(root, cfg.data_dir), _under(root, cfg.kubelet.pod_log_dir), root / CONFIG]
    if purge:
        for path in (*kept[:2], (root / CONFIG).parent):
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
                out.append(f"purged {path}")
    else:
        out.append(f"kept the data dir {kept[0]}, the pods' logs {kept[1]} and the config {kept[2]} "
                   "(--purge removes them)")


def remove_runtime(cfg: config_mod.Config, out: list[str]) -> None:
    """What a stopped edgekube leaves running or mounted on this machine, removed: its
    containers, their mounts and the pods' network namespaces and volumes, its memory dirs,
    the pods' cgroups, the nftables table and the pod network's bridge."""
    kubelet_dir = cfg.kubelet.root_dir
    removed = asyncio.run(_remove_containers(kubelet_dir, parent=cfg.kubelet.cgroup_parent))
    out.append(f"removed {removed} containers")
    mounts = sorted((m for m in bundle.mountpoints() if cfg.data_dir in m.parents or kubelet_dir in m.parents),
                    key=lambda m: len(m.parts), reverse=True)
    for mp in mounts:
        with contextlib.suppress(OSError):
            bundle.unmount(mp)
    out.append(f"unmounted {len(mounts)} mounts (overlay roots, network namespaces, volumes)")
    # runc's state and exec scratch, and the database's lock file, in memory (`_cogs.memdir`).
    for path in (kubelet_dir, cfg.data_dir / "db"):
        own = memdir.for_path(path)
        if own is not None and own.exists():
            shutil.rmtree(own, ignore_errors=True)
            with contextlib.suppress(OSError):
                own.parent.rmdir()  # edgekube's memory dir, once no other data dir has one there
    with contextlib.suppress(Exception):
        cgroups.detect(parent=cfg.kubelet.cgroup_parent).remove("/" + cfg.kubelet.cgroup_parent)
        out.append(f"removed the cgroup tree /{cfg.kubelet.cgroup_parent}")
    if shutil.which("nft") is not None:
        done = subprocess.run(["nft", "delete", "table", nft.FAMILY, nft.TABLE], capture_output=True, text=True)
        if done.returncode == 0:
            out.append(f"removed the nftables table {nft.FAMILY} {nft.TABLE}")
    if _delete_link(cfg.pod_network.bridge):
        out.append(f"removed the bridge {cfg.pod_network.bridge}")


async def _remove_containers(kubelet_dir: Path, *, parent: str) -> int:
    try:
        cg = cgroups.detect(parent=parent)
    except cgroups.CgroupError:
        return 0
    if not containers.runc_root(kubelet_dir).exists() and not (kubelet_dir / "containers").exists():
        return 0
    rt = containers.Runtime(data_dir=kubelet_dir, cgroups=cg, subreaper=False)
    await rt.open()
    try:
        report = await rt.sweep(known_containers=set(), known_pods=set())
    finally:
        await rt.close()
    return len(report.containers)


def _delete_link(name: str) -> bool:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return False
        ipr.link("del", index=found[0])
    return True
