"""cgroup limits as upstream computes them, the v2 unified files written into a directory tree
(this kernel cannot mount a pure v2 hierarchy), and the CRI log copier over a real FIFO."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import pytest

from edgekube.kubelet.runtime import cgroups, crilog


def c(requests: dict[str, str] | None = None, limits: dict[str, str] | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if requests:
        res["requests"] = requests
    if limits:
        res["limits"] = limits
    return {"name": "c", "resources": res}


def pod(*containers: dict[str, Any], init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers)}
    if init:
        spec["initContainers"] = init
    return {"metadata": {"uid": "u"}, "spec": spec}


def test_upstream_formulas() -> None:
    assert cgroups.milli_cpu_to_shares(0) == 2
    assert cgroups.milli_cpu_to_shares(1) == 2
    assert cgroups.milli_cpu_to_shares(100) == 102
    assert cgroups.milli_cpu_to_shares(1000) == 1024
    assert cgroups.milli_cpu_to_shares(10_000_000) == 262144
    assert cgroups.milli_cpu_to_quota(0) == 0
    assert cgroups.milli_cpu_to_quota(5) == 1000  # at least 1 ms
    assert cgroups.milli_cpu_to_quota(250) == 25000
    assert cgroups.shares_to_weight(2) == 1
    assert cgroups.shares_to_weight(1024) == 39
    assert cgroups.shares_to_weight(262144) == 10000


def test_container_limits() -> None:
    assert cgroups.container_limits(c({"cpu": "250m"}, {"cpu": "500m", "memory": "64Mi"}), pids_limit=50) == \
        cgroups.Limits(cpu_shares=256, cpu_quota=50000, cpu_period=100000, memory=64 << 20, pids=50)
    # Only a limit: shares from the limit.
    assert cgroups.container_limits(c(limits={"cpu": "1"})).cpu_shares == 1024
    assert cgroups.container_limits(c()) == cgroups.Limits(cpu_shares=2)


def test_pod_limits_per_qos() -> None:
    guaranteed = pod(c({"cpu": "1", "memory": "1Gi"}, {"cpu": "1", "memory": "1Gi"}),
                     c({"cpu": "500m", "memory": "1Gi"}, {"cpu": "500m", "memory": "1Gi"}))
    assert cgroups.qos_class(guaranteed) == cgroups.GUARANTEED
    assert cgroups.pod_limits(guaranteed) == cgroups.Limits(cpu_shares=1536, cpu_quota=150000, cpu_period=100000,
                                                            memory=2 << 30)
    # Burstable, one container without a cpu limit: no quota; both have memory limits: a limit.
    burstable = pod(c({"cpu": "100m", "memory": "10Mi"}, {"memory": "20Mi"}), c({"cpu": "100m"}, {"cpu": "1", "memory": "5Mi"}))
    assert cgroups.pod_limits(burstable) == cgroups.Limits(cpu_shares=204, memory=25 << 20)
    # Init containers count by their maximum.
    with_init = pod(c({"cpu": "100m", "memory": "10Mi"}, {"cpu": "100m", "memory": "10Mi"}),
                    init=[c({"cpu": "2", "memory": "10Mi"}, {"cpu": "2", "memory": "10Mi"})])
    assert cgroups.pod_limits(with_init).cpu_shares == 2048
    assert cgroups.pod_limits(pod(c())) == cgroups.Limits(cpu_shares=2)
    # The burstable parent's shares: the burstable pods' requests (Guaranteed and BestEffort not).
    assert cgroups.burstable_shares([burstable, guaranteed, pod(c())]) == 204
    assert cgroups.burstable_shares([]) == 2
    assert cgroups.pod_cgroup_path("u", cgroups.GUARANTEED) == "/kubepods/podu"
    assert cgroups.pod_cgroup_path("u", cgroups.BEST_EFFORT, parent="ek") == "/ek/besteffort/podu"


def test_v2_files_in_a_tree(tmp_path: Path) -> None:
    v2 = cgroups.V2(root=tmp_path, parent="kubepods")
    v2.ensure_parents()
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (tmp_path / "kubepods" / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (tmp_path / "kubepods" / "besteffort" / "cpu.weight").read_text() == "1"
    limits = cgroups.Limits(cpu_shares=256, cpu_quota=50000, cpu_period=100000, memory=64 << 20, pids=100)
    path = v2.ensure_pod("abc", qos=cgroups.BURSTABLE, limits=limits)
    assert path == "/kubepods/burstable/podabc"
    d = tmp_path / "kubepods" / "burstable" / "podabc"
    assert (d / "cpu.weight").read_text() == str(cgroups.shares_to_weight(256)) == "10"
    assert (d / "cpu.max").read_text() == "50000 100000"
    assert (d / "memory.max").read_text() == str(64 << 20)
    assert (d / "pids.max").read_text() == "100"
    assert (d / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    # No quota and no memory limit: the "max" forms.
    v2.set_limits(path, cgroups.Limits(cpu_period=100000, memory=0, pids=0))
    assert (d / "cpu.max").read_text() == "max 100000"
    assert (d / "memory.max").read_text() == "max" and (d / "pids.max").read_text() == "max"
    assert v2.pods() == {"abc": path}
    # Usage and OOM kills from the files the kernel would keep.
    (d / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    (d / "memory.current").write_text("1000000\n")
    (d / "memory.stat").write_text("anon 600000\ninactive_file 300000\nactive_file 100000\n")
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert v2.usage(path) == cgroups.Usage(cpu_ns=1_500_000, memory_usage=1_000_000, memory_working_set=700_000)
    assert v2.oom_kills(path) == 1
    for f in list(d.iterdir()):
        f.unlink()  # a real cgroup's files vanish with it; in a tree they must go first
    v2.remove(path)
    assert not d.exists() and v2.pods() == {}


def test_mount_discovery(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
        "31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
        "32 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "34 30 0:30 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
        "35 30 0:29 / /mnt/again rw - cgroup cgroup rw,memory\n")
    mounts = cgroups.cgroup_mounts(info)
    assert [(str(m.mountpoint), m.version, m.controllers) for m in mounts] == [
        ("/sys/fs/cgroup/unified", 2, ()),
        ("/sys/fs/cgroup/cpu,cpuacct", 1, ("cpu", "cpuacct")),
        ("/sys/fs/cgroup/memory", 1, ("memory",)),
        ("/sys/fs/cgroup/systemd", 1, ("name=systemd",)),
    ]
    assert isinstance(cgroups.detect(mountinfo=info), cgroups.V1)
    pure = tmp_path / "pure"
    pure.write_text("31 25 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    assert isinstance(cgroups.detect(mountinfo=pure), cgroups.V2)


# --- CRI logs ----------------------------------------------------------------------------------

LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z) (stdout|stderr) ([FP]) (.*)$")


def test_timestamp_is_go_rfc3339nano() -> None:
    assert crilog.timestamp(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    assert crilog.timestamp(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"
    assert crilog.timestamp(1_700_000_000_000_000_001) == "2023-11-14T22:13:20.000000001Z"


async def test_copier_writes_cri_entries_through_a_fifo(tmp_path: Path) -> None:
    out, err = crilog.make_fifos(tmp_path)
    w_out, w_err = crilog.open_for_container(out), crilog.open_for_container(err)
    log = crilog.LogFile(tmp_path / "logs" / "0.log")
    copiers = [crilog.Copier(out, stream="stdout", log=log, now_ns=lambda: 1_700_000_000_500_000_000),
               crilog.Copier(err, stream="stderr", log=log)]
    for cp in copiers:
        cp.start()
    long = b"x" * (crilog.MAX_LINE + 10)
    os.write(w_out, b"one\r\ntw")
    await asyncio.sleep(0.05)
    os.write(w_out, b"o\n" + long + b"\n" + b"tail")
    os.write(w_err, b"bad\n")
    os.close(w_out)
    os.close(w_err)  # every writer gone: end of stream
    async with asyncio.timeout(5):
        for cp in copiers:
            await cp.wait()
    entries = [LINE.match(line) for line in (tmp_path / "logs" / "0.log").read_text().splitlines()]
    assert all(entries)
    got = [(m.group(3), m.group(4), m.group(5)) for m in entries if m]
    assert ("stdout", "F", "one") in got and ("stdout", "F", "two") in got and ("stderr", "F", "bad") in got
    parts = [(t, len(x)) for s, t, x in got if x.startswith("x")]
    assert parts == [("P", crilog.MAX_LINE), ("F", 10)]
    assert got[-1] == ("stdout", "P", "tail") or ("stdout", "P", "tail") in got
    assert entries[0] and entries[0].group(1) == "2023-11-14T22:13:20.5Z"


async def test_a_new_reader_takes_over_without_loss(tmp_path: Path) -> None:
    """What an edgekube restart does: the first copier stops, the writer keeps writing into the
    pipe (never EPIPE: it holds a reader itself), a second copier picks up every byte."""
    out, _ = crilog.make_fifos(tmp_path)
    w = crilog.open_for_container(out)
    log = crilog.LogFile(tmp_path / "0.log")
    first = crilog.Copier(out, stream="stdout", log=log)
    first.start()
    os.write(w, b"before\npart")
    await asyncio.sleep(0.05)
    first.close()
    os.write(w, b"ial\nwhile down\n")  # no reader at all now
    second = crilog.Copier(out, stream="stdout", log=crilog.LogFile(tmp_path / "0.log"))
    second.start()
    os.write(w, b"after\n")
    os.close(w)
    async with asyncio.timeout(5):
        await second.wait()
    got = [line.split(" ", 3)[2:] for line in (tmp_path / "0.log").read_text().splitlines()]
    assert got == [["F", "before"], ["P", "part"], ["F", "ial"], ["F", "while down"], ["F", "after"]]


@pytest.mark.parametrize("shares", [2, 100, 1024, 262144])
def test_weight_in_range(shares: int) -> None:
    assert 1 <= cgroups.shares_to_weight(shares) <= 10000


def test_oom_score_adj_floor_is_the_own_value_without_cap_sys_resource(tmp_path: Path) -> None:
    status, own = tmp_path / "status", tmp_path / "oom_score_adj"
    own.write_text("-900\n")
    status.write_text("Name:\tedgekube\nCapEff:\t000001fffeffffff\n")  # every capability but 24
    assert cgroups.oom_score_adj_floor(status=status, own=own) == -900
    status.write_text("Name:\tedgekube\nCapEff:\t000001ffffffffff\n")
    assert cgroups.oom_score_adj_floor(status=status, own=own) is None


def test_memory_dir_is_the_first_candidate_on_a_tmpfs(tmp_path: Path) -> None:
    from edgekube._cogs import memdir

    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda / ext4 rw 0 0\ntmpfs /dev/shm tmpfs rw 0 0\n")
    run, shm = Path("/run/edgekube"), Path("/dev/shm/edgekube")
    assert memdir.memory_dir(candidates=(run, shm), mounts=mounts) == shm  # /run on the disk here
    mounts.write_text("/dev/vda / ext4 rw 0 0\ntmpfs /run tmpfs rw 0 0\ntmpfs /dev/shm tmpfs rw 0 0\n")
    assert memdir.memory_dir(candidates=(run, shm), mounts=mounts) == run
    mounts.write_text("/dev/vda / ext4 rw 0 0\n")
    assert memdir.memory_dir(candidates=(run, shm), mounts=mounts) is None
