"""The container runtime layer on real runc, as root: CRI logs, exit codes, cgroup limits, OOM
kills, security settings, containers outliving the process that started them, adoption, and
removal that leaves nothing behind.

The rootfs is a lower directory holding /bin/busybox and its applets as symlinks (built once
per module), mounted as overlayfs under each container's bundle. Every test uses its own data
dir and its own cgroup parent (`edgekube-test-<random>`), and its finalizer deletes every
container, mount, cgroup and namespace it made, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgekube.kubelet.runtime import bundle, cgroups, containers, exits, runc
from tests.conftest import REPO

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="runc containers need root"),
    pytest.mark.skipif(shutil.which("runc") is None or not Path("/bin/busybox").exists(),
                       reason="needs runc and busybox-static (make installs both)"),
]

CRI_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z) (stdout|stderr) ([FP]) (.*)$")


@pytest.fixture(scope="module")
def lower(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox rootfs layer: bin/busybox, a symlink per applet, /etc/passwd and /etc/group."""
    root = tmp_path_factory.mktemp("busybox-layer")
    (root / "bin").mkdir()
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    for name in applets:
        if name != "busybox":
            (root / "bin" / name).symlink_to("busybox")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nextra:x:2000:app\n")
    for d in ("proc", "sys", "dev", "tmp", "home/app"):
        (root / d).mkdir(parents=True, exist_ok=True)
    return root


class Env:
    def __init__(self, base: Path, lower: Path) -> None:
        self.base = base
        self.lower = lower
        self.data = base / "data"
        self.logs = base / "logs"
        self.parent = f"edgekube-test-{uuid.uuid4().hex[:10]}"
        self.cg = cgroups.detect(parent=self.parent)
        self.runtimes: list[containers.Runtime] = []

    def runtime(self, *, subreaper: bool = True) -> containers.Runtime:
        rt = containers.Runtime(data_dir=self.data, cgroups=self.cg, pids_limit=200, subreaper=subreaper)
        self.runtimes.append(rt)
        return rt

    def pod(self, *, name: str | None = None, resources: dict[str, Any] | None = None, command: list[str] | None = None,
            security: dict[str, Any] | None = None, pod_security: dict[str, Any] | None = None) -> dict[str, Any]:
        uid = str(uuid.uuid4())
        c: dict[str, Any] = {"name": "main", "image": "busybox", "command": command or ["sh", "-c", "true"]}
        if resources:
            c["resources"] = resources
        if security:
            c["securityContext"] = security
        spec: dict[str, Any] = {"containers": [c]}
        if pod_security:
            spec["securityContext"] = pod_security
        return {"metadata": {"name": name or f"p-{uid[:8]}", "namespace": "default", "uid": uid}, "spec": spec}

    async def spec(self, rt: containers.Runtime, pod: dict[str, Any], *, netns: str | None = None) -> containers.ContainerSpec:
        pod_cgroup = await rt.ensure_pod(pod)
        m = pod["metadata"]
        cid = f"{m['uid']}-main-0"
        return containers.ContainerSpec(
            id=cid, pod=pod, container=pod["spec"]["containers"][0], image=bundle.ImageConfig(),
            lowerdirs=(self.lower,), log_path=self.logs / f"default_{m['name']}_{m['uid']}" / "main" / "0.log",
            pod_cgroup=pod_cgroup, netns=netns)


async def _cleanup(env: Env) -> None:
    rt = containers.Runtime(data_dir=env.data, cgroups=env.cg)
    with contextlib.suppress(Exception):
        await rt.open()
        await rt.sweep(known_containers=set(), known_pods=set())
    with contextlib.suppress(Exception):
        await rt.close()
    for r in env.runtimes:
        with contextlib.suppress(Exception):
            await r.close()
    # Anything still mounted under the test's dir, then the cgroup parent in every hierarchy.
    for mp in sorted((m for m in bundle.mountpoints() if env.base in m.parents), key=lambda m: len(m.parts),
                     reverse=True):
        with contextlib.suppress(OSError):
            bundle.unmount(mp)
    with contextlib.suppress(Exception):
        env.cg.remove("/" + env.parent)
    memory = containers.runc_root(env.data).parent  # runc's state and the exec scratch, in /run or /dev/shm
    if env.base not in memory.parents:
        shutil.rmtree(memory, ignore_errors=True)
        with contextlib.suppress(OSError):
            memory.parent.rmdir()
    exits.set_subreaper(False)  # the Runtime made this test process one, as it makes edgekube


@pytest.fixture
async def env(tmp_path: Path, lower: Path) -> AsyncIterator[Env]:
    e = Env(tmp_path, lower)
    try:
        yield e
    finally:
        await _cleanup(e)
        assert not env_leftovers(e), env_leftovers(e)


def env_leftovers(e: Env) -> list[str]:
    left = [str(m) for m in bundle.mountpoints() if e.base in m.parents]
    left += [str(d) for d in e.cg.dirs("/" + e.parent)]
    memory = containers.runc_root(e.data).parent
    if e.base not in memory.parents and memory.exists():
        left.append(str(memory))
    return left


def read_log(path: Path) -> list[tuple[str, str, str, str]]:
    out = []
    for line in path.read_text().splitlines():
        m = CRI_LINE.match(line)
        assert m, f"not a CRI log line: {line!r}"
        out.append((m.group(1), m.group(2), m.group(3), m.group(4)))
    return out


async def run_to_exit(rt: containers.Runtime, spec: containers.ContainerSpec, *,
                      within: float = 30) -> containers.ContainerStatus:
    await rt.run(spec)
    async with asyncio.timeout(within):
        return await rt.wait(spec.id)


async def until(check: Any, *, within: float = 20, what: str = "condition") -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last = None
    while loop.time() < deadline:
        last = await check() if asyncio.iscoroutinefunction(check) else check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not met within {within}s (last: {last!r})")


# --- logs and exit codes ---------------------------------------------------------------------


async def test_echo_output_lands_in_cri_log(env: Env) -> None:
    rt = env.runtime()
    await rt.open()
    pod = env.pod(command=["sh", "-c", "echo hello world; echo oops >&2; printf 'no newline'"])
    spec = await env.spec(rt, pod)
    st = await run_to_exit(rt, spec)
    assert (st.state, st.exit_code, st.reason, st.oom_killed) == ("exited", 0, "Completed", False)
    assert st.started_at is not None and st.finished_at is not None and st.finished_at >= st.started_at
    assert (st.pod_uid, st.name, st.attempt) == (pod["metadata"]["uid"], "main", 0)
    await until(lambda: spec.log_path.exists() and "no newline" in spec.log_path.read_text(), what="log written")
    entries = read_log(spec.log_path)
    assert ("stdout", "F", "hello world") in [e[1:] for e in entries]
    assert ("stderr", "F", "oops") in [e[1:] for e in entries]
    # Bytes without a newline at the end of the stream are a partial entry.
    assert ("stdout", "P", "no newline") in [e[1:] for e in entries]
    await rt.remove(spec.id)
    assert spec.log_path.exists(), "the log outlives the container (kubectl logs --previous)"


@pytest.mark.parametrize(("command", "code", "reason"), [
    (["sh", "-c", "exit 3"], 3, "Error"),
    (["sh", "-c", "exit 255"], 255, "Error"),
    (["true"], 0, "Completed"),
])
async def test_exit_codes(env: Env, command: list[str], code: int, reason: str) -> None:
    rt = env.runtime()
    await rt.open()
    spec = await env.spec(rt, env.pod(command=command))
    st = await run_to_exit(rt, spec)
    assert (st.exit_code, st.reason) == (code, reason)
    await rt.remove(spec.id)


async def test_stop_sends_sigterm_then_sigkill(env: Env) -> None:
    rt = env.runtime()
    await rt.open()
    # PID 1 of a pid namespace ignores SIGTERM it has no handler for: stop must escalate.
    spec = await env.spec(rt, env.pod(command=["sleep", "300"]))
    await rt.run(spec)
    st = await rt.stop(spec.id, grace=0.5)
    assert (st.state, st.exit_code) == ("exited", 137)
    # One that handles SIGTERM exits with its own code within the grace period.
    spec2 = await env.spec(rt, env.pod(command=["sh", "-c", "trap 'exit 42' TERM; while true; do sleep 0.1; done"]))
    await rt.run(spec2)
    await until(lambda: spec2.log_path.parent.exists(), what="started")
    await asyncio.sleep(0.3)  # let the shell install its trap
    st2 = await rt.stop(spec2.id, grace=20)
    assert st2.exit_code == 42
    await rt.remove(spec.id)
    await rt.remove(spec2.id)


# --- cgroups ----------------------------------------------------------------------------------


async def test_cgroup_limits_are_applied(env: Env) -> None:
    rt = env.runtime()
    await rt.open()
    pod = env.pod(command=["sleep", "300"], resources={
        "requests": {"cpu": "250m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}})
    spec = await env.spec(rt, pod)
    await rt.run(spec)
    uid = pod["metadata"]["uid"]
    pod_path = f"/{env.parent}/burstable/pod{uid}"
    assert spec.pod_cgroup == pod_path
    cpu = Path("/sys/fs/cgroup/cpu") / pod_path.strip("/")
    mem = Path("/sys/fs/cgroup/memory") / pod_path.strip("/")
    pids = Path("/sys/fs/cgroup/pids") / pod_path.strip("/")
    # The container's own cgroup, as runc made it from cgroupsPath.
    assert (cpu / spec.id / "cpu.shares").read_text().strip() == "256"
    assert (cpu / spec.id / "cpu.cfs_quota_us").read_text().strip() == "50000"
    assert (cpu / spec.id / "cpu.cfs_period_us").read_text().strip() == "100000"
    assert (mem / spec.id / "memory.limit_in_bytes").read_text().strip() == str(64 * 1024 * 1024)
    assert (pids / spec.id / "pids.max").read_text().strip() == "200"
    # The pod's cgroup: shares from requests, quota and memory since every container has limits.
    assert (cpu / "cpu.shares").read_text().strip() == "256"
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
    assert (mem / "memory.limit_in_bytes").read_text().strip() == str(64 * 1024 * 1024)
    assert (pids / "pids.max").read_text().strip() == "200"
    # BestEffort's parent gets the minimum shares; Burstable's the sum of its pods' requests.
    assert (Path("/sys/fs/cgroup/cpu") / env.parent / "besteffort" / "cpu.shares").read_text().strip() == "2"
    await rt.update_qos([pod, env.pod(resources={"requests": {"cpu": "1"}})])
    assert (Path("/sys/fs/cgroup/cpu") / env.parent / "burstable" / "cpu.shares").read_text().strip() == "1280"
    # The container's init is in that cgroup.
    st = await rt.status(spec.id)
    assert str(st.pid) in (mem / spec.id / "cgroup.procs").read_text().split()
    usage = await rt.stats(spec.id)
    assert usage.cpu_ns > 0 and usage.memory_usage > 0
    data = await rt.runc.stats(spec.id)
    assert data["memory"]["usage"]["limit"] == 64 * 1024 * 1024
    await rt.remove(spec.id)
    await rt.remove_pod(uid)
    assert not env.cg.exists(pod_path)


async def test_guaranteed_pod_sits_under_the_parent(env: Env) -> None:
    rt = env.runtime()
    await rt.open()
    pod = env.pod(resources={"requests": {"cpu": "100m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "16Mi"}})
    path = await rt.ensure_pod(pod)
    assert path == f"/{env.parent}/pod{pod['metadata']['uid']}"
    assert (Path("/sys/fs/cgroup/cpu") / path.strip("/") / "cpu.cfs_quota_us").read_text().strip() == "10000"
    await rt.remove_pod(pod["metadata"]["uid"])
    assert not env.cg.exists(path)


async def test_oom_killed_container_is_reported(env: Env) -> None:
    rt = env.runtime()
    await rt.open()
    # Memory of a shell variable doubling until the 8Mi limit is hit.
    pod = env.pod(command=["sh", "-c", "x=0123456789abcdef; while true; do x=$x$x; done"],
                  resources={"limits": {"memory": "8Mi"}, "requests": {"memory": "8Mi"}})
    spec = await env.spec(rt, pod)
    st = await run_to_exit(rt, spec, within=60)
    assert st.oom_killed and st.reason == "OOMKilled"
    assert st.exit_code == 137
    await rt.remove(spec.id)


# --- security settings -----------------------------------------------------------------------


async def test_security_context_is_applied(env: Env) -> None:
    rt = env.runtime()
    await rt.open()
    script = ("id; hostname; grep -E '^(Seccomp|NoNewPrivs|CapBnd|CapEff):' /proc/self/status; "
              "if touch /written 2>/dev/null; then echo rootfs-writable; else echo rootfs-readonly; fi; "
              "wc -c < /proc/interrupts; ls /sys/fs/cgroup >/dev/null && echo sys-ok")
    pod = env.pod(name="secpod", command=["sh", "-c", script],
                  security={"runAsUser": 1000, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}},
                  pod_security={"runAsGroup": 3000, "supplementalGroups": [4000], "fsGroup": 5000})
    spec = await env.spec(rt, pod)
    st = await run_to_exit(rt, spec)
    assert st.exit_code == 0, spec.log_path.read_text()
    out = [e[3] for e in read_log(spec.log_path) if e[1] == "stdout"]
    ident = out[0]
    assert "uid=1000(app)" in ident and "gid=3000" in ident
    assert "4000" in ident and "5000" in ident and "2000(extra)" in ident
    assert out[1] == "secpod"
    status = dict(line.split(":\t") for line in out[2:6])
    assert status["Seccomp"] == "2" and status["NoNewPrivs"] == "1"
    assert int(status["CapBnd"], 16) == 1 << 10  # CAP_NET_BIND_SERVICE only
    assert "rootfs-readonly" in out
    assert out[out.index("rootfs-readonly") + 1].strip() == "0"  # /proc/interrupts masked (/dev/null)
    await rt.remove(spec.id)


async def test_default_seccomp_profile_refuses_what_it_omits(env: Env) -> None:
    rt = env.runtime()
    await rt.open()
    # With CAP_SYS_ADMIN granted, unshare(2) is allowed by the profile; without it the profile
    # lets clone/unshare through only without namespace flags: unshare -m fails with EPERM.
    spec = await env.spec(rt, env.pod(command=["sh", "-c", "unshare -m true && echo unshared || echo refused"]))
    await run_to_exit(rt, spec)
    assert [e[3] for e in read_log(spec.log_path) if e[1] == "stdout"] == ["refused"]
    await rt.remove(spec.id)
    spec2 = await env.spec(rt, env.pod(command=["sh", "-c", "unshare -m true && echo unshared || echo refused"],
                                       security={"capabilities": {"add": ["SYS_ADMIN"]}}))
    await run_to_exit(rt, spec2)
    assert [e[3] for e in read_log(spec2.log_path) if e[1] == "stdout"] == ["unshared"]
    await rt.remove(spec2.id)


@pytest.fixture
def netns() -> Iterator[str]:
    """A named network namespace (as the network layer will make one per pod)."""
    name = f"ekt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


async def test_network_namespace_joined_by_path(env: Env, netns: str) -> None:
    rt = env.runtime()
    await rt.open()
    spec = await env.spec(rt, env.pod(command=["sh", "-c", "readlink /proc/self/ns/net"]), netns=netns)
    await run_to_exit(rt, spec)
    inode = os.stat(netns).st_ino
    assert [e[3] for e in read_log(spec.log_path) if e[1] == "stdout"] == [f"net:[{inode}]"]
    await rt.remove(spec.id)


# --- outliving edgekube -----------------------------------------------------------------------

STARTER = textwrap.dedent("""
    import asyncio, json, sys
    from pathlib import Path
    from edgekube.kubelet.runtime import bundle, cgroups, containers

    async def main(args):
        cg = cgroups.detect(parent=args["parent"])
        rt = containers.Runtime(data_dir=Path(args["data"]), cgroups=cg)
        await rt.open()
        pod = args["pod"]
        pod_cgroup = await rt.ensure_pod(pod)
        spec = containers.ContainerSpec(
            id=args["id"], pod=pod, container=pod["spec"]["containers"][0], image=bundle.ImageConfig(),
            lowerdirs=(Path(args["lower"]),), log_path=Path(args["log"]), pod_cgroup=pod_cgroup)
        st = await rt.run(spec)
        print(json.dumps({"pid": st.pid}), flush=True)
        # No close(): the process just ends, as after kill -9.

    asyncio.run(main(json.loads(sys.argv[1])))
""")


def gone(pid: int) -> bool:
    """No such process, or a zombie (exited, waiting for a parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"


def reap(pid: int) -> None:
    """Reap `pid` if it is this process's zombie (it is once this process is a subreaper)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def start_from_subprocess(env: Env, pod: dict[str, Any], cid: str, log: Path) -> int:
    """Start the container from another process that then ends, so that it is not this test's
    process's child: earlier tests made this process a child subreaper (as edgekube is), which
    would adopt the orphan; a restarted edgekube is not the parent of what it adopts."""
    exits.set_subreaper(False)
    args = {"parent": env.parent, "data": str(env.data), "lower": str(env.lower), "pod": pod, "id": cid,
            "log": str(log)}
    out = subprocess.run([sys.executable, "-c", STARTER, json.dumps(args)], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    return int(json.loads(out.stdout.strip().splitlines()[-1])["pid"])


async def test_container_outlives_its_starter_and_is_adopted(env: Env) -> None:
    pod = env.pod(command=["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done"])
    cid = f"{pod['metadata']['uid']}-main-0"
    log = env.logs / "outlive" / "0.log"
    pid = start_from_subprocess(env, pod, cid, log)
    # The starter is gone; the container runs on, and with no reader its output waits in the pipe.
    assert not gone(pid)
    await asyncio.sleep(0.5)
    rt = env.runtime(subreaper=False)
    adopted = {s.id: s for s in await rt.open()}
    assert adopted[cid].state == "running" and adopted[cid].pid == pid
    assert adopted[cid].pod_uid == pod["metadata"]["uid"] and adopted[cid].log_path == str(log)

    def ticks() -> list[int]:
        return [int(e[3].split()[1]) for e in read_log(log) if e[3].startswith("tick")] if log.exists() else []

    # Output keeps reaching the same log, with no gap across the change of reader.
    await until(lambda: len(ticks()) > 15, what="ticks logged after adoption")
    seen = ticks()
    assert seen == list(range(1, len(seen) + 1))
    # Its exit is seen by the new process too, with the code, though it is not its parent.
    await rt.kill(cid, signal.SIGKILL)
    async with asyncio.timeout(20):
        st = await rt.wait(cid)
    assert st.state == "exited"
    # Not our child: the code came from the kernel's process-events connector.
    assert rt.watcher.connector.fileno() >= 0, "this kernel has the proc connector"
    assert st.exit_code == 137
    assert json.loads(rt.bundle(cid).status_path.read_text())["exitSource"] == "connector"
    await rt.remove(cid)
    await until(lambda: gone(pid), what="process gone")


async def test_exit_while_down_is_reported_unknown(env: Env) -> None:
    pod = env.pod(command=["sh", "-c", "sleep 0.3; exit 5"])
    cid = f"{pod['metadata']['uid']}-main-0"
    pid = start_from_subprocess(env, pod, cid, env.logs / "down" / "0.log")
    r = runc.Runc(root=containers.runc_root(env.data))
    await until(lambda: gone(pid), what="container exited")
    assert (await r.state(cid)).status == "stopped"
    rt = env.runtime(subreaper=False)
    adopted = {s.id: s for s in await rt.open()}
    st = adopted[cid]
    # runc knows it stopped; nobody kept its exit code.
    assert (st.state, st.exit_code, st.reason, st.started_at is not None) == ("exited", None, "ContainerStatusUnknown", True)
    await rt.remove(cid)


# --- clean-up ---------------------------------------------------------------------------------


def _leftovers(env: Env, spec: containers.ContainerSpec, pid: int) -> list[str]:
    left = []
    b = env.data / "containers" / spec.id
    if b.exists():
        left.append(f"bundle {b}")
    left += [f"mount {m}" for m in bundle.mountpoints() if b == m or b in m.parents]
    left += [f"cgroup {d}" for d in env.cg.dirs(cgroups.container_cgroup_path(spec.pod_cgroup, spec.id))]
    if Path(f"/proc/{pid}").exists():
        left.append(f"process {pid}")
    return left


async def test_remove_leaves_nothing_behind(env: Env) -> None:
    rt = env.runtime()
    await rt.open()
    spec = await env.spec(rt, env.pod(command=["sh", "-c", "sleep 300 & sleep 300"]))
    st = await rt.run(spec)
    assert not gone(st.pid) and rt.bundle(spec.id).is_mounted()
    await rt.remove(spec.id)
    assert _leftovers(env, spec, st.pid) == []
    with pytest.raises(runc.NotFoundError):
        await rt.runc.state(spec.id)
    # Created but never started: same.
    spec2 = await env.spec(rt, env.pod(command=["sleep", "300"]))
    st2 = await rt.create(spec2)
    assert st2.state == "created"
    await rt.remove(spec2.id)
    assert _leftovers(env, spec2, st2.pid) == []


async def test_failed_create_leaves_nothing_and_says_why(env: Env) -> None:
    rt = env.runtime()
    await rt.open()
    spec = await env.spec(rt, env.pod(command=["/no/such/binary"]))
    with pytest.raises(runc.RuncError) as info:
        await rt.run(spec)
    assert "/no/such/binary" in str(info.value)
    with contextlib.suppress(runc.RuncError):
        await rt.remove(spec.id)
    assert _leftovers(env, spec, 0) == []


async def test_sweep_removes_orphans(env: Env) -> None:
    rt = env.runtime()
    await rt.open()
    keep_pod = env.pod(command=["sleep", "300"])
    drop_pod = env.pod(command=["sleep", "300"])
    keep = await env.spec(rt, keep_pod)
    drop = await env.spec(rt, drop_pod)
    await rt.run(keep)
    dropped = await rt.run(drop)
    # A stray bundle with a mount and no runc container, as a crash mid-create leaves.
    stray = rt.bundle("stray-1")
    stray.prepare(lowerdirs=(env.lower,))
    await rt.close()
    rt2 = env.runtime()
    await rt2.open()
    report = await rt2.sweep(known_containers={keep.id}, known_pods={keep_pod["metadata"]["uid"]})
    assert report.containers == [drop.id]
    assert "stray-1" in report.bundles
    assert f"/{env.parent}/pod{drop_pod['metadata']['uid']}" in [c.replace("/burstable", "").replace("/besteffort", "")
                                                                 for c in report.cgroups]
    assert _leftovers(env, drop, dropped.pid) == []
    assert not stray.path.exists()
    assert (await rt2.status(keep.id)).state == "running"
    await rt2.remove(keep.id)


async def test_runc_run_detached_and_typed_errors(env: Env) -> None:
    """The wrapper on its own: run -d of a bundle, state, list, kill, delete, and runc's messages."""
    r = runc.Runc(root=env.data / "runc-raw")
    b = bundle.Bundle(env.data / "raw" / "c1")
    pod = env.pod(command=["sleep", "300"])
    b.prepare(lowerdirs=(env.lower,))
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        b.write_config(bundle.build_config(pod, container=pod["spec"]["containers"][0], image=bundle.ImageConfig(),
                                           rootfs=b.rootfs, cgroups_path=f"/{env.parent}/raw-c1", netns=None))
        pid = await r.run_detached("raw-c1", bundle=b.path, stdout=null, stderr=null, pid_file=b.pid_file)
        st = await r.state("raw-c1")
        assert (st.status, st.pid, st.bundle) == ("running", pid, str(b.path))
        assert [s.id for s in await r.list()] == ["raw-c1"]
        with pytest.raises(runc.AlreadyExistsError):
            await r.run_detached("raw-c1", bundle=b.path, stdout=null, stderr=null, pid_file=b.pid_file)
        await r.kill("raw-c1", signal.SIGKILL)
        await until(lambda: gone(pid), what="killed")
        reap(pid)
        with pytest.raises(runc.NotRunningError):
            await r.kill("raw-c1", signal.SIGKILL)
        await r.delete("raw-c1")
        with pytest.raises(runc.NotFoundError) as info:
            await r.state("raw-c1")
        assert "does not exist" in info.value.message
    finally:
        os.close(null)
        with contextlib.suppress(runc.RuncError):
            await r.delete("raw-c1", force=True)
        b.remove()
