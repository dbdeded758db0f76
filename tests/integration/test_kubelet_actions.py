"""What probes and hooks do to a real runc container, as root: `Runtime.exec` (the container's
env, cwd, user and namespaces; exit codes; output capped; a process past its time killed), and
HTTP and TCP actions made from inside a pod's network namespace. Fixtures and clean-up are
test_runtime_runc's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekube.kubelet import actions, sandbox
from edgekube.kubelet.runtime import containers, runc
from tests.integration.test_runtime_runc import Env, env, lower, until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="runc containers need root"),
    pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="needs busybox-static"),
]
__all__ = ["env", "lower"]  # fixtures, used by name

LOOP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]


async def test_exec_runs_as_the_container_runs(env: Env) -> None:
    rt = env.runtime()
    await rt.open()
    pod = env.pod(command=LOOP, security={"runAsUser": 1000})
    pod["spec"]["containers"][0].update(env=[{"name": "GREETING", "value": "hello"}], workingDir="/home/app")
    spec = await env.spec(rt, pod)
    st = await rt.run(spec)
    done = await rt.exec(spec.id, ["sh", "-c", "echo $GREETING; pwd; id -u; readlink /proc/self/ns/pid; echo oops >&2"],
                         time_limit=10)
    out = done.output.decode().splitlines()
    assert done.exit_code == 0
    assert out[:3] == ["hello", "/home/app", "1000"]
    assert out[3] == os.readlink(f"/proc/{st.pid}/ns/pid")  # the container's pid namespace
    assert out[4] == "oops"  # stderr too, in one stream
    assert (await rt.exec(spec.id, ["sh", "-c", "exit 3"], time_limit=10)).exit_code == 3
    # Output beyond the limit is drained, not kept.
    big = await rt.exec(spec.id, ["sh", "-c", "yes | head -c 50000"], time_limit=10, limit=1000)
    assert big.exit_code == 0 and len(big.output) == 1000
    # Past its time the process is killed, and nothing of it stays in the container.
    slow = await rt.exec(spec.id, ["sleep", "30"], time_limit=0.5)
    assert slow.exit_code is None
    ps = await rt.exec(spec.id, ["ps", "-o", "args"], time_limit=10)
    assert "sleep 30" not in ps.output.decode()
    # The exec's files in the bundle are gone.
    assert not list(rt.bundle(spec.id).path.glob("exec-*"))
    await rt.remove(spec.id)


async def test_exec_in_a_stopped_container_is_refused(env: Env) -> None:
    rt = env.runtime()
    await rt.open()
    spec = await env.spec(rt, env.pod(command=["true"]))
    await rt.run(spec)
    async with asyncio.timeout(20):
        await rt.wait(spec.id)
    with pytest.raises(runc.RuncError):
        await rt.exec(spec.id, ["true"], time_limit=10)
    target = actions.Target(cid=spec.id, container={"name": "main"}, pod_ip="127.0.0.1", netns=None)
    with pytest.raises(actions.ActionError):
        await actions.run_exec(rt, target, ["true"], time_limit=10)
    await rt.remove(spec.id)


@pytest.fixture
def pod_netns(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "netns" / "pod"
    sandbox.create_netns(path)
    try:
        yield path
    finally:
        sandbox.remove_netns(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_http_and_tcp_reach_into_the_pod_network_namespace(env: Env, pod_netns: Path) -> None:
    rt = env.runtime()
    await rt.open()
    port = _free_port()  # free on the host: only the pod's namespace listens on it
    pod = env.pod(command=["sh", "-c", f"echo ready > /tmp/index.html; exec httpd -f -p 127.0.0.1:{port} -h /tmp"])
    spec = await env.spec(rt, pod, netns=str(pod_netns))
    await rt.run(spec)
    target = actions.Target(cid=spec.id, container=pod["spec"]["containers"][0], pod_ip="127.0.0.1", netns=pod_netns)
    action = {"path": "/index.html", "port": port}

    async def served() -> bool:
        return (await actions.http_get(action, target, time_limit=2)).result == actions.SUCCESS

    await until(served, what="httpd answering in the pod's namespace")
    assert await actions.http_get(action, target, time_limit=2) == actions.Outcome(actions.SUCCESS, "ready\n")
    assert (await actions.tcp_connect({"port": port}, target, time_limit=2)).result == actions.SUCCESS
    # From the host's namespace the same address answers nothing.
    host = actions.Target(cid=spec.id, container=target.container, pod_ip="127.0.0.1", netns=None)
    assert (await actions.tcp_connect({"port": port}, host, time_limit=2)).output.endswith("connection refused")
    # A namespace that is not there is an error, never a socket of the host's.
    with pytest.raises(FileNotFoundError):
        await sandbox.socket_in(pod_netns.parent / "none", socket.AF_INET)
    await rt.remove(spec.id)


async def test_a_container_stops_though_an_exec_lost_its_runc(env: Env) -> None:
    """A `runc exec` killed before its process (a probe past its time, runc itself hung) leaves
    that process to edgekube, the subreaper. When the container stops, the kernel kills it but
    the container's init cannot exit until it is reaped: the pod stayed Terminating for good."""
    rt = env.runtime()
    await rt.open()
    spec = await env.spec(rt, env.pod(command=LOOP))
    st = await rt.run(spec)
    process = rt.scratch_dir / "orphan.json"

    def write() -> None:
        rt.scratch_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        config = rt.bundle(spec.id).read_config()["process"]
        process.write_text(json.dumps({**config, "args": ["sleep", "600"], "terminal": False}))

    await asyncio.to_thread(write)
    proc = await asyncio.create_subprocess_exec(rt.runc.binary, "--root", str(rt.runc.root), "exec", "--process",
                                                str(process), spec.id, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

    def sleeper() -> int | None:
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                with contextlib.suppress(OSError):
                    if (p / "cmdline").read_bytes() == b"sleep\x00600\x00" and \
                            os.readlink(p / "ns" / "pid") == os.readlink(f"/proc/{st.pid}/ns/pid"):
                        return int(p.name)
        return None

    pid = await until(sleeper, within=10, what="the exec'd sleep")
    proc.kill()  # runc exec dies first: its process is ours now
    await proc.wait()
    def parent() -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

    assert await until(lambda: parent() == os.getpid(), within=10, what="the sleep re-parented to us")
    done = await asyncio.wait_for(rt.stop(spec.id, grace=1), timeout=30)
    assert done.state == containers.EXITED
    assert not await asyncio.to_thread(Path(f"/proc/{pid}").exists)  # reaped, not a zombie of ours
    await rt.remove(spec.id)


_OWN_CHILD_PROBE = """
import os, time
from edgekube.kubelet.runtime import exits
pid = os.fork()
if pid == 0:
    os._exit(3)
time.sleep(0.3)  # a zombie now, as runc is for a moment before asyncio reaps it
assert exits.Watcher().reap_orphans() == 0
assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 3  # still ours to reap, with its status
print("ok")
"""


@pytest.mark.parametrize("inside", [False, True], ids=["on-the-host", "in-a-pid-namespace"])
def test_orphan_reaping_leaves_edgekubes_own_children_alone(inside: bool) -> None:
    """Only container processes are reaped: edgekube's own children (runc, waited for by asyncio)
    never, also when edgekube itself runs in a pid namespace (LXC, a container), where they are
    two namespaces deep too."""
    prefix = ["unshare", "--pid", "--fork", "--mount-proc"] if inside else []
    out = subprocess.run([*prefix, sys.executable, "-c", _OWN_CHILD_PROBE], capture_output=True, text=True,
                         timeout=60, check=False, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
