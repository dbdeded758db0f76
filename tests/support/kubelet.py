"""An `edgekube server` with its kubelet on, for end-to-end tests, and everything to leave the
host as it was: the kubelet's containers outlive the server (by design), so a test's clean-up
removes them itself.

`KubeletServer` runs the server with a config of its own: the pod log dir and the kubelet's
root dir under the test's temp dir, and a cgroup parent named for the test
(`edgekube-e2e-<random>`), so nothing it makes is shared with the host or another test. With a
`netns` (tests/support/netns.py) the server runs inside it with its pod network (bridge, veths);
without one the `network` component is off, so it makes no link in the host's namespace (pods
on loopback).
`cleanup()` deletes every runc container under its root (through the runtime's own sweep), then
unmounts whatever is still mounted below its directory (overlay rootfs, network namespaces,
tmpfs volumes) and removes its cgroup parent in every hierarchy, killing stragglers.
`leftovers()` lists what is still there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from edgekube._cogs import memdir
from edgekube.kubelet.runtime import bundle, cgroups, containers
from tests.conftest import Server
from tests.support.netns import NetNS


class KubeletServer:
    def __init__(self, root: Path, *, settings: dict[str, Any] | None = None, netns: NetNS | None = None,
                 config: dict[str, Any] | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.parent = f"edgekube-e2e-{uuid.uuid4().hex[:8]}"
        self.log_dir = root / "pod-logs"
        self.data_dir = root / "data"
        self.kubelet_dir = self.data_dir / "kubelet"
        cfg = {"kubelet": {"pod-log-dir": str(self.log_dir), "cgroup-parent": self.parent, **(settings or {})},
               **(config or {})}
        if netns is None:
            # The network rule: outside a namespace of the test's own, the server makes no links.
            cfg["disable"] = sorted({*cfg.get("disable", []), "network"})
        self.config = root / "config.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.server = Server(self.data_dir, extra=["--config", str(self.config)], kubelet=True, netns=netns)

    @property
    def runc_root(self) -> Path:
        return containers.runc_root(self.kubelet_dir)

    def start(self) -> KubeletServer:
        self.server.start()
        return self

    def runc_list(self) -> dict[str, dict[str, Any]]:
        return runc_list(self.runc_root)

    def mounts(self) -> list[Path]:
        return [m for m in bundle.mountpoints() if self.root in m.parents]

    def cgroup_dirs(self, sub: str = "") -> list[Path]:
        cg = cgroups.detect(parent=self.parent)
        path = "/" + self.parent + (f"/{sub.strip('/')}" if sub else "")
        return cg.dirs(path)

    def pod_cgroups(self, uid: str) -> list[Path]:
        cg = cgroups.detect(parent=self.parent)
        path = cg.pods().get(uid)
        return cg.dirs(path) if path else []

    def leftovers(self) -> list[str]:
        left = [f"container {cid}" for cid in (self.runc_list() if self.runc_root.exists() else {})]
        left += [f"mount {m}" for m in self.mounts()]
        left += [f"cgroup {d}" for d in self.cgroup_dirs()]
        if self.root not in self.runc_root.parents and self.runc_root.parent.exists():
            left.append(f"directory {self.runc_root.parent}")
        return left

    def cleanup(self) -> None:
        self.server.close()
        sweep_host(kubelet_dir=self.kubelet_dir, parent=self.parent, below=self.root)


@contextlib.contextmanager
def running(ks: KubeletServer) -> Iterator[KubeletServer]:
    """`ks` started; at the end stopped and everything it made swept (even when the test failed),
    then checked gone."""
    try:
        ks.start()
        yield ks
    finally:
        ks.cleanup()
    left = ks.leftovers()
    assert not left, f"left behind on the host: {left}"


def runc_list(root: Path) -> dict[str, dict[str, Any]]:
    """runc's containers under `root`. `runc list` fails when a container's state directory goes
    while it reads them (the kubelet removing one): asked again then."""
    for attempt in range(5):
        done = subprocess.run(["runc", "--root", str(root), "list", "--format", "json"],
                              capture_output=True, text=True)
        if done.returncode == 0:
            return {c["id"]: c for c in json.loads(done.stdout or "null") or []}
        time.sleep(0.05 * (attempt + 1))
    raise RuntimeError(f"runc list failed: {done.stderr.strip()}")


def sweep_host(*, kubelet_dir: Path, parent: str, below: Path) -> None:
    """Leave nothing of a stopped kubelet on the host: the runtime's own sweep of its containers,
    then by hand whatever that left (it is the code under test): containers, every mount below
    `below` (overlay rootfs, namespaces, tmpfs volumes), the cgroup parent in every hierarchy."""

    async def sweep() -> None:
        rt = containers.Runtime(data_dir=kubelet_dir, cgroups=cgroups.detect(parent=parent), subreaper=False)
        try:
            await rt.open()
            await rt.sweep(known_containers=set(), known_pods=set())
        finally:
            await rt.close()

    root = containers.runc_root(kubelet_dir)
    if root.exists():
        with contextlib.suppress(Exception):
            asyncio.run(sweep())
        with contextlib.suppress(RuntimeError):
            for cid in runc_list(root):
                subprocess.run(["runc", "--root", str(root), "delete", "--force", cid], capture_output=True,
                               check=False)
    if below not in root.parents:  # its directory in memory (/run or /dev/shm), with the exec scratch
        shutil.rmtree(root.parent, ignore_errors=True)
        with contextlib.suppress(OSError):
            root.parent.parent.rmdir()  # edgekube's own directory there, once no kubelet has one
    unmount_below(below)
    with contextlib.suppress(Exception):
        cgroups.detect(parent=parent).remove("/" + parent)


def unmount_below(root: Path) -> None:
    """Unmount everything mounted below `root`, the deepest first."""
    for mp in sorted((m for m in bundle.mountpoints() if root in m.parents), key=lambda m: len(m.parts),
                     reverse=True):
        with contextlib.suppress(OSError):
            bundle.unmount(mp)


def simulate_reboot(ks: KubeletServer, netns: NetNS | None = None) -> None:
    """What a power cut and the next boot leave of the running node `ks` (see `power_cut`)."""
    if ks.server.proc is not None:
        ks.server.proc.kill()
        ks.server.proc.wait()
        ks.server.proc = None
    power_cut(kubelet_dir=ks.kubelet_dir, data_dir=ks.data_dir, parent=ks.parent, below=ks.root, netns=netns)


def power_cut(*, kubelet_dir: Path, data_dir: Path, parent: str, below: Path, netns: NetNS | None = None) -> None:
    """What a power cut and the next boot leave of a node whose server is already dead: every
    container killed at once, every mount below `below` gone (overlay roots, network namespaces,
    tmpfs volumes), the cgroups under `parent` gone, the memory file systems empty (runc's state
    and the database's lock file in /run), and in the node's network namespace no link but
    loopback and no nft table. What is on the disk (the database, bundles, pod directories,
    logs) stays as it was."""
    root = containers.runc_root(kubelet_dir)
    if root.exists():
        for state in runc_list(root).values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(state["pid"]), signal.SIGKILL)
    unmount_below(below)
    with contextlib.suppress(Exception):
        cgroups.detect(parent=parent).remove("/" + parent)
    for path in (kubelet_dir, data_dir / "db"):
        own = memdir.for_path(path)
        if own is not None:
            shutil.rmtree(own, ignore_errors=True)
    if netns is not None:
        netns.run(["nft", "flush", "ruleset"])
        for line in netns.run(["ip", "-o", "link", "show"]).stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name != "lo":
                netns.run(["ip", "link", "del", name], check=False)
