"""`edgekube check-config` (edgekube/checkconfig.py) against machines described by files: each
problem found, with its fix, and its weight (FAIL or warn)."""

from __future__ import annotations

import datetime
from pathlib import Path

from edgekube import checkconfig
from edgekube import config as config_mod

CGROUPS_V1 = """#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t3\t4\t1
cpu\t1\t4\t1
cpuacct\t2\t4\t1
memory\t0\t1\t{memory}
pids\t8\t4\t1
"""

MOUNT = "{id} 20 0:{id} / {point} rw,nosuid - {fstype} {source} {options}\n"


def _mountinfo(*mounts: tuple[str, str, str]) -> str:
    return "".join(MOUNT.format(id=30 + i, point=p, fstype=t, source=t, options=o) for i, (p, t, o) in enumerate(mounts))


V1_MOUNTS = [("/", "ext4", "rw"), ("/sys/fs/cgroup/cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"),
             ("/sys/fs/cgroup/pids", "cgroup", "rw,pids")]


def _proc(tmp_path: Path, *, memory: str = "1", mounts: list[tuple[str, str, str]] | None = None,
          filesystems: str = "nodev\ttmpfs\n\text4\nnodev\toverlay\n", caps: str = "000001fffeffffff",
          cmdline: bool = True) -> checkconfig.Proc:
    (tmp_path / "cgroups").write_text(CGROUPS_V1.format(memory=memory))
    mem = [("/sys/fs/cgroup/memory", "cgroup", "rw,memory")] if memory == "1" else []
    table = mounts if mounts is not None else V1_MOUNTS + mem
    (tmp_path / "mountinfo").write_text(_mountinfo(*table))
    (tmp_path / "mounts").write_text("".join(f"{t} {p} {t} {o} 0 0\n" for p, t, o in table))
    (tmp_path / "filesystems").write_text(filesystems)
    (tmp_path / "status").write_text(f"Name:\tedgekube\nCapEff:\t{caps}\nSeccomp:\t0\n")
    if cmdline:
        (tmp_path / "cmdline.txt").write_text("console=serial0,115200 root=PARTUUID=1234-02 rootwait\n")
    return checkconfig.Proc(cgroups=tmp_path / "cgroups", mountinfo=tmp_path / "mountinfo", mounts=tmp_path / "mounts",
                            filesystems=tmp_path / "filesystems", status=tmp_path / "status",
                            cmdline_txt=tmp_path / "cmdline.txt")


def _cfg(tmp_path: Path, **overrides: object) -> config_mod.Config:
    return config_mod.load(overrides={"data-dir": str(tmp_path / "data"), **overrides}, boot_file=None)


def _by_name(results: list[checkconfig.Result]) -> dict[str, checkconfig.Result]:
    return {r.name: r for r in results}


def test_a_pi_with_its_memory_cgroup_disabled_is_told_the_cmdline_fix(tmp_path: Path) -> None:
    proc = _proc(tmp_path, memory="0")
    results = _by_name(checkconfig.check_cgroups(proc))
    mem = results["memory cgroup"]
    assert mem.status == checkconfig.FAIL and "disabled by the boot command line" in mem.detail
    assert mem.fix == (f"add `cgroup_memory=1 cgroup_enable=memory` to the end of the single line of "
                       f"{tmp_path / 'cmdline.txt'} (Raspberry Pi), then reboot")
    assert results["cgroups v1"].status == checkconfig.OK


def test_a_healthy_v1_machine_passes(tmp_path: Path) -> None:
    results = checkconfig.check_cgroups(_proc(tmp_path))
    assert [(r.name, r.status, r.detail) for r in results] == [("cgroups v1", "ok", "cpu, cpuacct, memory, pids")]


def test_missing_controllers_are_named(tmp_path: Path) -> None:
    proc = _proc(tmp_path, mounts=[("/", "ext4", "rw"), ("/sys/fs/cgroup/memory", "cgroup", "rw,memory")])
    result = _by_name(checkconfig.check_cgroups(proc))["cgroups v1"]
    assert result.status == checkconfig.FAIL and result.detail.startswith("missing controllers: cpu, cpuacct, pids")


def test_no_overlayfs_fails_with_its_fix(tmp_path: Path) -> None:
    [result] = checkconfig.check_filesystems(_proc(tmp_path, filesystems="\text4\nnodev\ttmpfs\n"))
    assert result.status == checkconfig.FAIL and "modprobe overlay" in result.fix


def test_capabilities_a_container_lacks(tmp_path: Path) -> None:
    without_resource = f"{0x000001fffeffffff & ~(1 << 24):016x}"
    results = _by_name(checkconfig.check_capabilities(_proc(tmp_path, caps=without_resource)))
    assert results["CAP_SYS_RESOURCE"].status == checkconfig.WARN
    assert results["capabilities"].status == checkconfig.OK
    unprivileged = f"{0x000001fffeffffff & ~(1 << 21) & ~(1 << 12):016x}"
    results = _by_name(checkconfig.check_capabilities(_proc(tmp_path, caps=unprivileged)))
    assert results["capabilities"].status == checkconfig.FAIL
    assert "CAP_NET_ADMIN, CAP_SYS_ADMIN" in results["capabilities"].detail


def test_the_data_dir_file_system(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    for fstype, status, words in (("vfat", checkconfig.FAIL, "no owners, modes or locks"),
                                  ("nfs4", checkconfig.FAIL, "network file system"),
                                  ("tmpfs", checkconfig.WARN, "lost at reboot"),
                                  ("ext4", checkconfig.OK, "GiB free")):
        proc = _proc(tmp_path, mounts=[("/", "ext4", "rw"), (str(tmp_path), fstype, "rw")])
        [result] = checkconfig.check_data_dir(cfg, proc)
        assert result.status == status and words in result.detail, (fstype, result)
        assert f"on {fstype} ({tmp_path})" in result.detail


def test_missing_tools_fail_only_when_their_component_runs(tmp_path: Path) -> None:
    [runc] = checkconfig.check_runc(_cfg(tmp_path), which=lambda _: None)
    assert runc.status == checkconfig.FAIL and "apt-get install runc" in runc.fix
    [runc] = checkconfig.check_runc(_cfg(tmp_path, disable=["kubelet"]), which=lambda _: None)
    assert runc.status == checkconfig.WARN
    [nft] = checkconfig.check_nft(_cfg(tmp_path), which=lambda _: None)
    assert nft.status == checkconfig.FAIL and nft.fix == "apt-get install nftables"


def test_links_the_kernel_refuses(tmp_path: Path) -> None:
    refused = {"veth": "", "bridge": "", "vxlan": "(95, 'Operation not supported')"}
    results = _by_name(checkconfig.check_links(_cfg(tmp_path), probe=lambda: refused))
    assert results["vxlan links"].status == checkconfig.WARN  # only multi-node needs it
    refused = {"veth": "(95, 'Operation not supported')", "bridge": "", "vxlan": ""}
    results = _by_name(checkconfig.check_links(_cfg(tmp_path), probe=lambda: refused))
    assert results["veth links"].status == checkconfig.FAIL and "CONFIG_VETH" in results["veth links"].fix


def test_a_clock_before_the_build_is_a_warning() -> None:
    [result] = checkconfig.check_clock(now=datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC))
    assert result.status == checkconfig.WARN and "no real-time clock" in result.detail
