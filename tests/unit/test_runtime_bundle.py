"""config.json as the container runtime layer builds it (no root needed): command/args over the
image's Entrypoint/Cmd, env merging and $(VAR) expansion, users from the image's files,
capabilities, seccomp, mounts, namespaces, resources and annotations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgekube.kubelet.runtime import bundle, seccomp


def pod(container: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    c = {"name": "app", "image": "x", **(container or {})}
    return {"metadata": {"name": "web-1", "namespace": "ns", "uid": "u-1"}, "spec": {"containers": [c], **spec}}


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nweb:x:33:44::/var/www:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\nwww:x:44:\nlogs:x:70:web,other\nstaff:x:50:\n")
    return tmp_path


def build(p: dict[str, Any], rootfs: Path, image: bundle.ImageConfig | None = None, **kw: Any) -> dict[str, Any]:
    kw.setdefault("cgroups_path", "/kubepods/besteffort/podu-1/c1")
    kw.setdefault("netns", "/run/netns/p")
    kw.setdefault("node_memory", 1 << 30)
    return bundle.build_config(p, container=p["spec"]["containers"][0], image=image or bundle.ImageConfig(cmd=("sh",)),
                               rootfs=rootfs, **kw)


IMAGE = bundle.ImageConfig(entrypoint=("/entry",), cmd=("--default",))


@pytest.mark.parametrize(("container", "argv"), [
    ({}, ["/entry", "--default"]),
    ({"command": ["/bin/run"]}, ["/bin/run"]),
    ({"args": ["--x"]}, ["/entry", "--x"]),
    ({"command": ["/bin/run"], "args": ["--x"]}, ["/bin/run", "--x"]),
])
def test_command_and_args_over_entrypoint_and_cmd(container: dict[str, Any], argv: list[str]) -> None:
    assert bundle.process_args(container, IMAGE, {}) == argv


def test_no_command_anywhere_is_an_error() -> None:
    with pytest.raises(bundle.BundleError, match="no command specified"):
        bundle.process_args({"name": "a"}, bundle.ImageConfig(entrypoint=("",)), {})


def test_expansion_as_upstream() -> None:
    env = {"A": "1", "B": "two"}
    assert bundle.expand("$(A)-$(B)", env) == "1-two"
    assert bundle.expand("$(MISSING)", env) == "$(MISSING)"
    assert bundle.expand("$$(A)", env) == "$(A)"
    assert bundle.expand("$(A", env) == "$(A"
    assert bundle.expand("a$b$", env) == "a$b$"


def test_env_image_then_container_with_expansion(rootfs: Path) -> None:
    p = pod({"command": ["echo", "$(GREETING)"],
             "env": [{"name": "NAME", "value": "edge"}, {"name": "GREETING", "value": "hi $(NAME) $(LATER)"},
                     {"name": "LATER", "value": "x"}, {"name": "MODE", "value": "container"}]})
    image = bundle.ImageConfig(cmd=("sh",), env=("PATH=/opt/bin:/bin", "MODE=image", "IMG=1"))
    c = build(p, rootfs, image)
    env = c["process"]["env"]
    assert env[0] == "PATH=/opt/bin:/bin"  # the image's PATH replaces the default in place
    assert "HOSTNAME=web-1" in env and "IMG=1" in env and "MODE=container" in env
    assert "MODE=image" not in env
    assert "GREETING=hi edge $(LATER)" in env  # only earlier entries expand
    assert c["process"]["args"] == ["echo", "hi edge $(LATER)"]


def test_user_from_image_name_and_groups(rootfs: Path) -> None:
    c = build(pod(), rootfs, bundle.ImageConfig(cmd=("sh",), user="web"),
              )
    assert c["process"]["user"] == {"uid": 33, "gid": 44, "additionalGids": [44, 70]}
    c = build(pod(), rootfs, bundle.ImageConfig(cmd=("sh",), user="web:staff"))
    assert c["process"]["user"]["gid"] == 50
    c = build(pod(), rootfs, bundle.ImageConfig(cmd=("sh",), user="4242"))
    assert c["process"]["user"] == {"uid": 4242, "gid": 0, "additionalGids": [0]}


def test_run_as_user_over_image_with_pod_groups(rootfs: Path) -> None:
    p = pod({"securityContext": {"runAsUser": 33}}, securityContext={
        "runAsUser": 1, "runAsGroup": 3000, "supplementalGroups": [4000], "fsGroup": 5000})
    c = build(p, rootfs, bundle.ImageConfig(cmd=("sh",), user="root"))
    assert c["process"]["user"] == {"uid": 33, "gid": 3000, "additionalGids": [3000, 70, 4000, 5000]}


def test_unknown_image_user_is_an_error(rootfs: Path) -> None:
    with pytest.raises(bundle.BundleError, match="nobody"):
        build(pod(), rootfs, bundle.ImageConfig(cmd=("sh",), user="nobody"))


def test_passwd_symlink_cannot_leave_the_rootfs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    outside = tmp_path / "host-passwd"
    outside.write_text("web:x:999:999::/:/bin/sh\n")
    (root / "etc" / "passwd").symlink_to(f"/../../../../{outside}")
    # Resolved inside the rootfs, the link points at a file that does not exist there.
    assert bundle.secure_join(root, "/etc/passwd") == root / outside.relative_to("/")
    with pytest.raises(bundle.BundleError):
        build(pod(), root, bundle.ImageConfig(cmd=("sh",), user="web"))


@pytest.mark.parametrize(("sc", "image_user", "ok"), [
    ({"runAsNonRoot": True}, "0", False),
    ({"runAsNonRoot": True}, "1000", True),
    ({"runAsNonRoot": True}, "web", False),  # non-numeric: cannot verify
    ({"runAsNonRoot": True, "runAsUser": 0}, "1000", False),
    ({"runAsNonRoot": True, "runAsUser": 5}, "root", True),
])
def test_run_as_non_root(rootfs: Path, sc: dict[str, Any], image_user: str, ok: bool) -> None:
    p = pod({"securityContext": sc})
    image = bundle.ImageConfig(cmd=("sh",), user=image_user)
    if ok:
        build(p, rootfs, image)
    else:
        with pytest.raises(bundle.BundleError, match="runAsNonRoot"):
            build(p, rootfs, image)


def test_capabilities() -> None:
    assert bundle.capabilities({}, privileged=False) == list(bundle.DEFAULT_CAPS)
    caps = bundle.capabilities({"securityContext": {"capabilities": {"add": ["NET_ADMIN"], "drop": ["chown", "KILL"]}}},
                               privileged=False)
    assert "CAP_NET_ADMIN" in caps and "CAP_CHOWN" not in caps and "CAP_KILL" not in caps
    assert bundle.capabilities({"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["SYS_TIME"]}}},
                               privileged=False) == ["CAP_SYS_TIME"]
    every = bundle.capabilities({"securityContext": {"capabilities": {"add": ["ALL"], "drop": ["SYS_ADMIN"]}}},
                                privileged=False)
    assert "CAP_SYS_ADMIN" not in every and "CAP_NET_ADMIN" in every
    assert "CAP_SYS_ADMIN" in bundle.capabilities({}, privileged=True)


def test_security_fields(rootfs: Path) -> None:
    c = build(pod({"securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True}}), rootfs)
    assert c["process"]["noNewPrivileges"] is True and c["root"] == {"path": "rootfs", "readonly": True}
    assert c["process"]["terminal"] is False
    assert set(bundle.MASKED_PATHS) <= set(c["linux"]["maskedPaths"])
    assert c["linux"]["readonlyPaths"] == list(bundle.READONLY_PATHS)
    assert c["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert c["process"]["capabilities"]["bounding"] == list(bundle.DEFAULT_CAPS)
    assert "inheritable" not in c["process"]["capabilities"] and "ambient" not in c["process"]["capabilities"]
    plain = build(pod(), rootfs)
    assert plain["process"]["noNewPrivileges"] is False and plain["root"]["readonly"] is False
    priv = build(pod({"securityContext": {"privileged": True}}), rootfs)
    assert "seccomp" not in priv["linux"] and "maskedPaths" not in priv["linux"]
    assert priv["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert next(m for m in priv["mounts"] if m["destination"] == "/sys")["options"][-1] == "rw"


def test_seccomp_choices(rootfs: Path, tmp_path: Path) -> None:
    assert "seccomp" not in build(pod(), rootfs, seccomp_default=False)["linux"]
    assert "seccomp" in build(pod(), rootfs, seccomp_default=True)["linux"]
    unconfined = pod(securityContext={"seccompProfile": {"type": "Unconfined"}})
    assert "seccomp" not in build(unconfined, rootfs)["linux"]
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "mine.json").write_text('{"defaultAction": "SCMP_ACT_LOG"}')
    local = pod({"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/mine.json"}}})
    assert build(local, rootfs, seccomp_root=tmp_path)["linux"]["seccomp"] == {"defaultAction": "SCMP_ACT_LOG"}
    escape = pod({"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "../x.json"}}})
    with pytest.raises(bundle.BundleError, match="localhostProfile"):
        build(escape, rootfs, seccomp_root=tmp_path)


def test_seccomp_profile_shape() -> None:
    plain = seccomp.default_profile(list(bundle.DEFAULT_CAPS), arch="x86_64")
    names = {n for r in plain["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args") for n in r["names"]}
    assert {"read", "write", "execve", "arch_prctl", "chroot"} <= names
    assert not {"mount", "unshare", "setns", "reboot", "bpf", "kexec_load", "init_module"} & names
    clone = [r for r in plain["syscalls"] if r["names"] == ["clone"]]
    assert clone and clone[0]["args"][0]["op"] == "SCMP_CMP_MASKED_EQ"
    assert next(r for r in plain["syscalls"] if r["names"] == ["clone3"])["errnoRet"] == 38
    assert plain["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    admin = seccomp.default_profile(["CAP_SYS_ADMIN"], arch="aarch64")
    admin_names = {n for r in admin["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
    assert {"mount", "unshare", "clone3", "cacheflush"} <= admin_names and "chroot" not in admin_names


def test_mounts_namespaces_and_defaults(rootfs: Path) -> None:
    extra = (bundle.Mount("/etc/hosts", "/var/lib/p/hosts"), bundle.Mount("/data/sub", "/v/2", readonly=True),
             bundle.Mount("/data", "/v/1", propagation="HostToContainer"), bundle.Mount("/dev/shm", "/pod/shm"))
    c = build(pod(), rootfs, mounts=extra)
    dests = [m["destination"] for m in c["mounts"]]
    assert dests.index("/data") < dests.index("/data/sub") and dests.index("/dev") < dests.index("/dev/pts")
    assert dests.count("/dev/shm") == 1  # the kubelet's mount replaces the default
    assert {"/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/etc/hosts"} <= set(dests)
    by = {m["destination"]: m for m in c["mounts"]}
    assert by["/sys"]["options"][-1] == "ro"
    assert by["/data/sub"]["options"] == ["rbind", "rprivate", "ro"]
    assert by["/data"]["options"] == ["rbind", "rslave", "rw"]
    ns = {n["type"]: n.get("path") for n in c["linux"]["namespaces"]}
    assert ns == {"mount": None, "pid": None, "ipc": None, "uts": None, "network": "/run/netns/p"}
    assert c["hostname"] == "web-1"
    host = build(pod(hostNetwork=True, hostPID=True), rootfs, netns=None)
    assert {n["type"] for n in host["linux"]["namespaces"]} == {"mount", "ipc"}
    assert "hostname" not in host


def test_resources_annotations_and_oom_score(rootfs: Path) -> None:
    p = pod({"resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}})
    c = build(p, rootfs, attempt=3, log_path="/var/log/pods/x/app/3.log", pids_limit=100)
    assert c["linux"]["resources"]["cpu"] == {"shares": 102, "quota": 100000, "period": 100000}
    assert c["linux"]["resources"]["memory"] == {"limit": 512 << 20}
    assert c["linux"]["resources"]["pids"] == {"limit": 100}
    assert c["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert c["linux"]["cgroupsPath"] == "/kubepods/besteffort/podu-1/c1"
    a = c["annotations"]
    assert (a[bundle.ANNOTATION_POD_UID], a[bundle.ANNOTATION_CONTAINER_NAME], a[bundle.ANNOTATION_ATTEMPT]) == (
        "u-1", "app", "3")
    assert a[bundle.ANNOTATION_LOG_PATH] == "/var/log/pods/x/app/3.log"
    # Burstable: 1000 - 1000*256Mi/1Gi = 750.
    assert c["process"]["oomScoreAdj"] == 750
    assert build(pod(), rootfs)["process"]["oomScoreAdj"] == 1000
