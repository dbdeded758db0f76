"""Flash wear: what a node writes to the block device under its data dir, per hour.

    .venv/bin/python benchmarks/flash_bench.py [--window 60] [--pods 10]

As root, with runc: the data dir is an ext4 file system of its own, made on a file and mounted
through a loop device (`mkfs.ext4` with its lazy initialisation off, so that the kernel does not
zero inode tables meanwhile); the figure is the device's own count of sectors written
(`/sys/block/loopN/stat`, field 7) over a window, after `sync` on both sides, as bytes per hour.
The server is `edgekube server` with its kubelet (its network off: pods get loopback only), the
busybox image from a registry on 127.0.0.1; only the data dir is on the measured file system
(the server's own log goes to journald on a device; container logs are the user's, counted
apart, as the issue asks). Phases, each measured over the window after the
pods settled:
- idle: the node with no pods;
- healthy: `--pods` pods, each with an exec readiness probe and an exec liveness probe every
  10 s (a `runc exec` each), Running and Ready;
- healthy, probed every second: the same pods with both probes every second (20 execs a second
  for 10 pods), to show that an exec costs the flash nothing;
- restarting: `--pods` pods whose container exits after a second, restarted by the kubelet
  (with its back-off).
Files whose change time moved under the data dir in each window are listed. Targets (issue 16):
0 B/hour idle, <= 1 MiB/hour with 10 healthy pods; `make bench` runs it (benchmarks/run_all.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from tests.e2e.test_kubectl import Kubectl  # noqa: E402
from tests.support import images as ti  # noqa: E402
from tests.support.kubelet import KubeletServer, running  # noqa: E402

SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


class LoopFs:
    """An ext4 file system on a loop device, mounted at `mnt`."""

    def __init__(self, work: Path, mnt: Path, size: str = "2G") -> None:
        self.image = work / "fs.img"
        self.mnt = mnt
        subprocess.run(["truncate", "-s", size, str(self.image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(self.image)],
                       check=True)
        self.dev = subprocess.run(["losetup", "-f", "--show", str(self.image)], capture_output=True, text=True,
                                  check=True).stdout.strip()
        self.mnt.mkdir(parents=True)
        subprocess.run(["mount", self.dev, str(self.mnt)], check=True)
        (self.mnt / "lost+found").rmdir()  # an empty data dir, as edgekube expects a new one

    def sectors_written(self) -> int:
        return int(Path(f"/sys/block/{Path(self.dev).name}/stat").read_text().split()[6])

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.mnt)], check=False)
        subprocess.run(["losetup", "-d", self.dev], check=False)


def _pod(name: str, image: str, *, period: int, crash: bool) -> str:
    probe = {"exec": {"command": ["true"]}, "periodSeconds": period}
    container = {"name": "main", "image": image,
                 "command": ["sh", "-c", "sleep 1; exit 1"] if crash else SLEEPER}
    if not crash:
        container.update(readinessProbe=probe, livenessProbe=probe)
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                       "spec": {"terminationGracePeriodSeconds": 1, "containers": [container]}})


def _window(fs: LoopFs, data: Path, seconds: float) -> tuple[float, list[str]]:
    """Bytes per hour written to `fs` over `seconds`, and the paths under `data` changed meanwhile."""
    subprocess.run(["sync"], check=True)
    stamp = time.time()
    before, t0 = fs.sectors_written(), time.monotonic()
    time.sleep(seconds)
    subprocess.run(["sync"], check=True)
    after, t1 = fs.sectors_written(), time.monotonic()
    changed = sorted(str(p.relative_to(data)) for p in [data, *data.rglob("*")] if p.lstat().st_ctime > stamp)
    return (after - before) * 512 * 3600 / (t1 - t0), changed


def _summary(changed: list[str]) -> str:
    """The changed paths by their first two components, with counts."""
    counts: dict[str, int] = {}
    for path in changed:
        top = "/".join(path.split("/")[:2])
        counts[top] = counts.get(top, 0) + 1
    return ", ".join(f"{top} ({n})" for top, n in sorted(counts.items()))


def run(window: float, pods: int, log=print) -> dict[str, tuple[float, list[str]]]:  # type: ignore[no-untyped-def]
    work = Path(tempfile.mkdtemp(prefix="edgekube-flash-"))
    # The data dir alone on the measured file system: the server's own log (journald's, on a
    # device) and the container logs are elsewhere.
    fs = LoopFs(work, work / "node" / "data")
    registry = None
    out: dict[str, tuple[float, list[str]]] = {}
    try:
        layout = ti.busybox_layout(work / "layout", tag="1.0")
        registry = ti.Registry(work / "registry").start()
        ti.skopeo_copy(layout, f"docker://{registry.host}/busybox:1.0")
        image = f"{registry.host}/busybox:1.0"
        ks = KubeletServer(work / "node", settings={"pod-log-dir": str(work / "pod-logs")})
        with running(ks):
            k = Kubectl("1.36", ks.server, "default")
            time.sleep(5)
            out["idle"] = _window(fs, ks.data_dir, window)
            log(f"  idle: {out['idle'][0] / 2**20:.2f} MiB/hour")
            for phase, period, crash in (("healthy", 10, False), ("healthy, probed every second", 1, False),
                                         ("restarting", 10, True)):
                for i in range(pods):
                    k.run("apply", "-f", "-", input=_pod(f"p{i}", image, period=period, crash=crash))
                time.sleep(15)
                out[phase] = _window(fs, ks.data_dir, window)
                log(f"  {phase}: {out[phase][0] / 2**20:.2f} MiB/hour")
                k.run("delete", "pods", "--all", "--wait=false")
                deadline = time.monotonic() + 300
                while k.json("get", "pods")["items"] and time.monotonic() < deadline:
                    time.sleep(1)
            for name, (rate, changed) in out.items():
                log(f"  {name:30} {rate / 2**20:8.2f} MiB/hour   changed: {_summary(changed) or '-'}")
    finally:
        if registry is not None:
            registry.close()
        fs.close()  # (the kubelet's sweep may have unmounted it already: everything below its root goes)
        shutil.rmtree(work, ignore_errors=True)
    return out


# Issue 16: nothing at all while idle; the node's own writes with 10 healthy pods probed.
IDLE_TARGET_BPH = 0.0
HEALTHY_TARGET_BPH = 2.0**20
TARGETS = {"idle": IDLE_TARGET_BPH, "healthy": HEALTHY_TARGET_BPH}


def markdown(res: dict[str, tuple[float, list[str]]], *, window: float, pods: int) -> str:
    """A section of docs/performance.md: one row per phase, the files each changed."""
    rows = []
    for phase, (rate, changed) in res.items():
        target = TARGETS.get(phase)
        verdict = "info" if target is None else ("PASS" if rate <= target else "FAIL")
        bound = "-" if target is None else ("0 B/hour" if target == 0 else f"<= {target / 2**20:.0f} MiB/hour")
        rows.append(f"| {phase} | {rate / 2**20:.3f} MiB/hour ({rate:,.0f} B) | {bound} | {verdict} | "
                    f"{_summary(changed) or '-'} |")
    return "\n".join([
        "",
        "## Flash wear",
        "",
        f"benchmarks/flash_bench.py, {pods} pods, each phase measured over {window:.0f} s: the data dir is an "
        "ext4 file system of its own on a loop device, and the figure is the device's count of sectors written "
        "(`/sys/block/loopN/stat`) after `sync` on both sides, per hour. The server runs its kubelet (network off), "
        "the busybox image from a registry on 127.0.0.1; container logs are elsewhere (the user's, counted "
        "apart). Phases: idle (no pods); healthy (exec readiness and liveness probes every 10 s); the same probed "
        "every second; restarting (each container exits after a second, restarted with the kubelet's back-off).",
        "",
        "| Phase | Written | Target | Verdict | Changed under the data dir |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--pods", type=int, default=10)
    args = ap.parse_args()
    run(args.window, args.pods)
    return 0


if __name__ == "__main__":
    sys.exit(main())
