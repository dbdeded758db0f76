"""The image store against real things: Debian's docker-registry (plain, htpasswd, token auth
with a token server), images built with umoci from busybox-static, tarballs written by skopeo,
overlayfs mounts of the unpacked layers, a tmpfs for disk-pressure GC. Needs root (chown,
whiteout devices, trusted.* xattrs, mounts), umoci, skopeo and docker-registry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgekube._cogs import clock as clock_mod
from edgekube.kubelet import images
from edgekube.kubelet.images import errors, registries
from tests.conftest import REPO
from tests.support import images as ti

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, whiteout devices, trusted xattrs, mounts)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("umoci", "skopeo", "docker-registry")),
                       reason="needs umoci, skopeo and docker-registry (make installs them)"),
]

USERS = {"alice": "wonderland"}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="module")
def busybox(work: Path) -> str:
    """`oci:LAYOUT:1.0`: busybox built with umoci, with an image config worth checking."""
    return ti.busybox_layout(work / "layout", tag="1.0", config=[
        "--config.entrypoint=/bin/busybox", "--config.workingdir=/tmp", "--config.user=1000:1000",
        "--config.exposedports=8080/tcp", "--config.env=GREETING=hello",
    ])


@pytest.fixture(scope="module")
def registry(work: Path) -> Iterator[ti.Registry]:
    reg = ti.Registry(work / "registry").start()
    try:
        yield reg
    finally:
        reg.close()


@pytest.fixture(scope="module")
def pushed(busybox: str, registry: ti.Registry) -> str:
    ti.skopeo_copy(busybox, f"docker://{registry.host}/library/busybox:1.0")
    return f"{registry.host}/library/busybox:1.0"


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    s = images.ImageStore(tmp_path / "store")
    try:
        yield s
    finally:
        await s.close()


def _leftovers(store: images.ImageStore) -> dict[str, list[str]]:
    return {d: sorted(p.name for p in (store.root / sub).iterdir())
            for d, sub in (("tmp", "tmp"), ("layers", "layers"), ("blobs", "blobs/sha256"))}


# --- pulls ------------------------------------------------------------------------------------


async def test_pull_gives_config_and_unpacked_layers(store: images.ImageStore, pushed: str,
                                                     registry: ti.Registry) -> None:
    events: list[images.PullEvent] = []
    info = await store.ensure(pushed, images.PullPolicy.IF_NOT_PRESENT, on_event=events.append)
    assert [e.reason for e in events if e.reason != "Progress"] == ["Pulling", "Pulled"]
    assert events[0].message == f'Pulling image "{pushed}"'
    assert events[-1].message.startswith(f'Successfully pulled image "{pushed}" in ')
    cfg = info.config
    assert cfg.entrypoint == ("/bin/busybox",) and cfg.cmd == ("/bin/sh",)
    assert "GREETING=hello" in cfg.env and cfg.working_dir == "/tmp" and cfg.user == "1000:1000"
    assert cfg.exposed_ports == ("8080/tcp",)
    assert info.id.startswith("sha256:") and info.image_ref.startswith(f"{registry.host}/library/busybox@sha256:")
    [layer] = store.layers(info)
    assert os.access(layer / "bin" / "busybox", os.X_OK) and os.readlink(layer / "bin" / "sh") == "busybox"
    assert stat.S_IMODE(os.stat(layer / "tmp").st_mode) == 0o1777
    assert _leftovers(store)["tmp"] == []
    # A second store on the same root sees it (the index is on disk).
    again = images.ImageStore(store.root)
    assert again.lookup(pushed) is not None and again.lookup(info.id[:19]) is not None
    await again.close()


async def test_pull_policies(store: images.ImageStore, pushed: str, registry: ti.Registry) -> None:
    never: list[images.PullEvent] = []
    with pytest.raises(errors.ImageNeverPull) as exc:
        await store.ensure(pushed, "Never", on_event=never.append)
    assert exc.value.reason == "ErrImageNeverPull"
    assert [(e.reason, e.type) for e in never] == [("ErrImageNeverPull", "Warning")]
    first = await store.ensure(pushed, "IfNotPresent")
    manifests = registry.requests(path_part="/manifests/")
    blobs = registry.requests(path_part="/blobs/")
    present: list[images.PullEvent] = []
    assert (await store.ensure(pushed, "IfNotPresent", on_event=present.append)).id == first.id
    assert (await store.ensure(pushed, "Never")).id == first.id
    assert [e.reason for e in present] == ["Pulled"] and "already present on machine" in present[0].message
    assert registry.requests(path_part="/manifests/") == manifests  # no registry traffic at all
    assert store.pulls_started == 1
    # Always asks the registry again, but downloads nothing it has.
    assert (await store.ensure(pushed, "Always")).id == first.id
    assert registry.requests(path_part="/manifests/") == manifests + 1
    assert registry.requests(path_part="/blobs/") == blobs


async def test_always_follows_a_moved_tag(store: images.ImageStore, work: Path, registry: ti.Registry) -> None:
    layout = ti.LayoutWriter(work / "moving")
    v1 = layout.image([layout.layer(ti.busybox_layer())], tag="v1")
    v2 = layout.image([layout.layer(ti.busybox_layer()), layout.layer([ti.file("version", b"2")])], tag="v2")
    assert v1 != v2
    ref = f"{registry.host}/moving/app:stable"
    ti.skopeo_copy(layout.ref("v1"), f"docker://{ref}")
    old = await store.ensure(ref, "IfNotPresent")
    ti.skopeo_copy(layout.ref("v2"), f"docker://{ref}")
    assert (await store.ensure(ref, "IfNotPresent")).id == old.id  # present: not asked
    new = await store.ensure(ref, "Always")
    assert new.id != old.id and len(store.layers(new)) == 2
    assert store.layers(new)[0] == store.layers(old)[0]  # the shared base is unpacked once
    assert (store.layers(new)[1] / "version").read_bytes() == b"2"
    stale = store.lookup(old.id)
    assert stale is not None and ref not in stale.names  # the tag moved to the new image


async def test_concurrent_pulls_are_done_once(store: images.ImageStore, work: Path, registry: ti.Registry) -> None:
    layout = ti.LayoutWriter(work / "concurrent")
    layout.image([layout.layer(ti.busybox_layer()), layout.layer([ti.file("big", os.urandom(1 << 20))])], tag="t")
    ref = f"{registry.host}/concurrent/app:t"
    ti.skopeo_copy(layout.ref("t"), f"docker://{ref}")
    before = registry.requests(path_part="/concurrent/app/blobs/")
    seen: list[list[images.PullEvent]] = [[] for _ in range(6)]
    results = await asyncio.gather(*(store.ensure(ref, "Always", on_event=seen[i].append) for i in range(6)))
    assert len({r.id for r in results}) == 1
    assert store.pulls_started == 1
    # config + 2 layers, fetched once between them all
    assert registry.requests(path_part="/concurrent/app/blobs/") - before == 3
    assert all([e.reason for e in s if e.reason != "Progress"] == ["Pulling", "Pulled"] for s in seen)


async def test_platform_selection_from_an_index(tmp_path: Path, work: Path, registry: ti.Registry) -> None:
    layout = ti.LayoutWriter(work / "multi")
    amd = layout.image([layout.layer([*ti.busybox_layer(), ti.file("arch", b"amd64")])], arch="amd64")
    arm64 = layout.image([layout.layer([ti.file("arch", b"arm64")])], arch="arm64", variant="v8")
    armv7 = layout.image([layout.layer([ti.file("arch", b"arm/v7")])], arch="arm", variant="v7")
    layout.multi([amd, arm64, armv7], tag="multi")
    ref = f"{registry.host}/multi/app:1"
    ti.skopeo_copy(layout.ref("multi"), f"docker://{ref}", all_platforms=True)
    for platform, expected in ((None, b"amd64"), ("linux/arm64", b"arm64"), ("linux/arm/v7", b"arm/v7")):
        s = images.ImageStore(tmp_path / f"store-{expected.decode().replace('/', '-')}",
                              platform=images.parse_platform(platform) if platform else None)
        try:
            info = await s.ensure(ref, "IfNotPresent")
            assert (s.layers(info)[-1] / "arch").read_bytes() == expected
            assert info.platform.startswith("linux/" + expected.decode().split("/")[0])
            # The tag's repo digest is the index's, the platform manifest is kept too.
            assert len(info.repo_digests) == 2
        finally:
            await s.close()
    s = images.ImageStore(tmp_path / "store-s390x", platform=images.parse_platform("linux/s390x"))
    try:
        with pytest.raises(errors.NoMatchingPlatform, match="linux/amd64, linux/arm64/v8, linux/arm/v7"):
            await s.ensure(ref, "IfNotPresent")
        assert _leftovers(s) == {"tmp": [], "layers": [], "blobs": []}
    finally:
        await s.close()


async def test_mirror_with_rewrite_and_a_dead_first_endpoint(tmp_path: Path, busybox: str,
                                                             registry: ti.Registry) -> None:
    ti.skopeo_copy(busybox, f"docker://{registry.host}/mirrored/busybox:1.0")
    dead = f"127.0.0.1:{ti.free_port()}"
    upstream = f"127.0.0.2:{ti.free_port()}"  # never contacted: the mirror answers first
    (tmp_path / "registries.yaml").write_text(
        f"mirrors:\n  \"{upstream}\":\n    endpoint: [\"http://{dead}\", \"http://{registry.host}\"]\n"
        f"    rewrite:\n      \"^library/(.*)$\": \"mirrored/$1\"\n"
    )
    s = images.ImageStore(tmp_path / "store", registry_config=registries.load(tmp_path / "registries.yaml"))
    try:
        info = await s.ensure(f"{upstream}/library/busybox:1.0", "IfNotPresent")
        assert f"{upstream}/library/busybox:1.0" in info.names
        assert registry.requests(path_part="/mirrored/busybox/manifests/1.0") >= 1
    finally:
        await s.close()


async def test_unknown_image_and_unreachable_registry(store: images.ImageStore, registry: ti.Registry) -> None:
    events: list[images.PullEvent] = []
    with pytest.raises(errors.ManifestUnknown, match="nothere") as exc:
        await store.ensure(f"{registry.host}/nothere:1", "IfNotPresent", on_event=events.append)
    assert exc.value.reason == "ErrImagePull"
    assert [(e.reason, e.type) for e in events] == [("Pulling", "Normal"), ("Failed", "Warning"), ("Failed", "Warning")]
    assert events[1].message.startswith(f'Failed to pull image "{registry.host}/nothere:1": ')
    assert events[2].message == "Error: ErrImagePull"
    with pytest.raises(errors.RegistryUnavailable, match="no endpoint answered"):
        await store.ensure(f"127.0.0.1:{ti.free_port()}/x:1", "Always")
    assert _leftovers(store) == {"tmp": [], "layers": [], "blobs": []}


# --- auth -------------------------------------------------------------------------------------


async def test_basic_auth_with_pull_secrets_and_registries_yaml(tmp_path: Path, busybox: str) -> None:
    reg = ti.Registry(tmp_path / "basic", auth=("htpasswd", USERS)).start()
    try:
        ti.skopeo_copy(busybox, f"docker://{reg.host}/private/bb:1", creds="alice:wonderland")
        ref = f"{reg.host}/private/bb:1"
        s = images.ImageStore(tmp_path / "store")
        try:
            with pytest.raises(errors.AuthenticationError, match="no imagePullSecret"):
                await s.ensure(ref, "IfNotPresent")
            with pytest.raises(errors.AuthenticationError, match="access denied with credentials"):
                await s.ensure(ref, "IfNotPresent", [ti.dockerconfig_secret(reg.host, "alice", "wrong")])
            info = await s.ensure(ref, "IfNotPresent", [ti.dockerconfig_secret(reg.host, "alice", "wonderland")])
            assert s.layers(info)
            # A secret for another registry is not sent here.
            with pytest.raises(errors.AuthenticationError):
                await s.ensure(ref, "Always", [ti.dockerconfig_secret("other.example", "alice", "wonderland")])
        finally:
            await s.close()
        (tmp_path / "registries.yaml").write_text(
            f"configs:\n  \"{reg.host}\":\n    auth: {{username: alice, password: wonderland}}\n")
        s = images.ImageStore(tmp_path / "store2", registry_config=registries.load(tmp_path / "registries.yaml"))
        try:
            assert s.layers(await s.ensure(ref, "IfNotPresent"))
        finally:
            await s.close()
    finally:
        reg.close()


async def test_bearer_token_auth(tmp_path: Path, busybox: str) -> None:
    tokens = ti.TokenServer(tmp_path / "token", users=USERS).start()
    try:
        reg = ti.Registry(tmp_path / "tokreg", auth=("token", tokens)).start()
        try:
            ti.skopeo_copy(busybox, f"docker://{reg.host}/secure/bb:1", creds="alice:wonderland")
            ref = f"{reg.host}/secure/bb:1"
            s = images.ImageStore(tmp_path / "store")
            try:
                tokens.requests.clear()
                with pytest.raises(errors.AuthenticationError, match="access denied without credentials"):
                    await s.ensure(ref, "IfNotPresent")
                assert tokens.requests == [("", "repository:secure/bb:pull")]  # anonymous
                info = await s.ensure(ref, "IfNotPresent", [ti.dockerconfig_secret(reg.host, "alice", "wonderland")])
                assert ("alice", "repository:secure/bb:pull") in tokens.requests
                assert s.layers(info)
                # The token obtained with the secret is not lent to a pod without it.
                with pytest.raises(errors.AuthenticationError):
                    await s.ensure(ref, "Always")
            finally:
                await s.close()
        finally:
            reg.close()
    finally:
        tokens.close()


# --- a registry that lies: digests are verified ------------------------------------------------


async def test_digest_mismatch_is_refused_and_leaves_nothing(tmp_path: Path, store: images.ImageStore) -> None:
    from aiohttp import web

    layout = ti.LayoutWriter(tmp_path / "liar")
    layer, _ = layout.layer([ti.file("x", b"honest")])
    desc = layout.image([(layer, ti.sha256(ti.tar_bytes([ti.file("x", b"honest")])))], tag="t")
    blobs = {p.name: p.read_bytes() for p in (tmp_path / "liar" / "blobs" / "sha256").iterdir()}
    tampered = layer["digest"].split(":")[1]

    async def manifest(request: web.Request) -> web.Response:
        return web.Response(body=blobs[desc["digest"].split(":")[1]], content_type=ti.OCI_MANIFEST)

    async def blob(request: web.Request) -> web.Response:
        hexd = request.match_info["digest"].split(":")[1]
        data = blobs[hexd]
        if hexd == tampered:
            data = data[:-1] + bytes([data[-1] ^ 1])  # same size, other bytes
        return web.Response(body=data)

    app = web.Application()
    app.router.add_get("/v2/liar/manifests/{ref}", manifest)
    app.router.add_get("/v2/liar/blobs/{digest}", blob)
    runner = web.AppRunner(app)
    await runner.setup()
    port = ti.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        with pytest.raises(errors.ContentError, match=f"content has digest .* expected {layer['digest']}"):
            await store.ensure(f"127.0.0.1:{port}/liar:t", "IfNotPresent")
        with pytest.raises(errors.ContentError, match="not the sha256:0000"):
            await store.ensure(f"127.0.0.1:{port}/liar@sha256:{'0' * 64}", "IfNotPresent")
        assert _leftovers(store) == {"tmp": [], "layers": [], "blobs": []}
    finally:
        await runner.cleanup()


# --- tarballs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tarballs(work: Path, busybox: str) -> dict[str, Path]:
    out = {"oci": work / "bb-oci.tar", "docker": work / "bb-docker.tar"}
    ti.skopeo_copy(busybox, f"oci-archive:{out['oci']}:busybox:oci")
    ti.skopeo_copy(busybox, f"docker-archive:{out['docker']}:registry.local/tools/busybox:docker")
    return out


async def test_import_oci_and_docker_archives_share_layers(store: images.ImageStore, tarballs: dict[str, Path]) -> None:
    [oci_img] = await store.import_tarball(tarballs["oci"])
    assert oci_img.tags == ("docker.io/library/busybox:oci",)
    layers_after_first = _leftovers(store)["layers"]
    [docker_img] = await store.import_tarball(tarballs["docker"])
    assert docker_img.id == oci_img.id  # the same config: the same image, now with both names
    assert set(docker_img.tags) == {"docker.io/library/busybox:oci", "registry.local/tools/busybox:docker"}
    assert _leftovers(store)["layers"] == layers_after_first  # unpacked once
    assert docker_img.config.entrypoint == ("/bin/busybox",)
    assert (await store.ensure("busybox:oci", "Never")).id == oci_img.id
    assert (await store.ensure("registry.local/tools/busybox:docker", "Never")).id == oci_img.id


@pytest.mark.parametrize("damage", ["truncated", "flipped", "not-a-tar", "missing-blob"])
async def test_corrupt_tarballs_name_the_file_and_leave_nothing(
    store: images.ImageStore, tarballs: dict[str, Path], tmp_path: Path, damage: str,
) -> None:
    data = tarballs["oci"].read_bytes()
    bad = tmp_path / f"{damage}.tar"
    if damage == "truncated":
        bad.write_bytes(data[: len(data) * 2 // 3])
    elif damage == "flipped":
        # Flip a byte inside the biggest member (the layer): its digest no longer matches.
        with tarfile.open(tarballs["oci"]) as tar:
            big = max(tar.getmembers(), key=lambda m: m.size)
        pos = big.offset_data + big.size // 2
        bad.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:])
    elif damage == "not-a-tar":
        bad.write_bytes(b"this is not an image\n" * 100)
    else:
        with tarfile.open(tarballs["oci"]) as src, tarfile.open(bad, "w") as dst:
            big = max(src.getmembers(), key=lambda m: m.size)
            for m in src.getmembers():
                if m.name != big.name:
                    dst.addfile(m, src.extractfile(m) if m.isreg() else None)
    with pytest.raises(errors.ArchiveError) as exc:
        await store.import_tarball(bad)
    assert str(bad) in str(exc.value)
    assert _leftovers(store) == {"tmp": [], "layers": [], "blobs": []}
    assert store.list() == []


def _malicious_archive(tmp_path: Path, entries: list[ti.TarEntry]) -> Path:
    layout = ti.LayoutWriter(tmp_path / "evil-layout")
    layout.image([layout.layer(ti.busybox_layer()), layout.layer(entries)], tag="evil.local/x:1")
    return layout.archive(tmp_path / "evil.tar")


@pytest.mark.parametrize(
    "entries",
    [
        [ti.file("../../../../tmp/edgekube-escape", b"pwned")],
        [ti.symlink("tmp/link", "/tmp"), ti.file("tmp/link/edgekube-escape", b"pwned")],
        [ti.symlink("bin/up", "../../../../../../tmp"), ti.file("bin/up/edgekube-escape", b"pwned")],
        [ti.hardlink("bin/stolen", "../../../../../../etc/shadow")],
    ],
    ids=["dotdot", "abs-symlink", "rel-symlink", "hardlink"],
)
async def test_malicious_layers_are_refused(store: images.ImageStore, tmp_path: Path, entries: list[ti.TarEntry]) -> None:
    outside = "/tmp/edgekube-escape"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(outside)
    with pytest.raises(errors.ArchiveError, match=r"evil\.tar") as exc:
        await store.import_tarball(_malicious_archive(tmp_path, entries))
    assert "layer 1" in str(exc.value)
    assert "edgekube-escape" not in os.listdir("/tmp")
    assert _leftovers(store) == {"tmp": [], "layers": [], "blobs": []}


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    mounted: list[Path] = []
    try:
        yield mounted
    finally:
        for m in reversed(mounted):
            subprocess.run(["umount", "-l", str(m)], check=False)


def _mount_overlay(lowers: list[Path], target: Path, mounts: list[Path]) -> None:
    """What a container's rootfs will be: the layers read-only, a private upper dir on top."""
    target.mkdir(parents=True)
    upper, work = target.with_name(target.name + "-upper"), target.with_name(target.name + "-work")
    upper.mkdir()
    work.mkdir()
    lowerdir = ":".join(str(p) for p in reversed(lowers))  # overlayfs wants the top layer first
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lowerdir},upperdir={upper},workdir={work}",
                    str(target)], check=True)
    mounts.append(target)


async def test_whiteouts_and_opaque_dirs_under_overlayfs(store: images.ImageStore, tmp_path: Path,
                                                         mounts: list[Path]) -> None:
    layout = ti.LayoutWriter(tmp_path / "wh")
    base = layout.layer([ti.TarEntry("a", "dir", mode=0o750, uid=1000, gid=1000), ti.file("a/gone", b"1"), ti.file("a/kept", b"2"),
                         ti.directory("b"), ti.file("b/old", b"3"), ti.file("c", b"4"),
                         ti.file("d/hardlinked", b"5")])
    top = layout.layer([ti.whiteout("a/gone"), ti.opaque("b"), ti.file("b/new", b"6"), ti.whiteout("c"),
                        ti.hardlink("d/again", "d/hardlinked"), ti.file("a/.wh..wh.plnk", b"")])
    layout.image([base, top], tag="wh.local/x:1")
    [info] = await store.import_tarball(layout.archive(tmp_path / "wh.tar"))
    lower, upper = store.layers(info)
    st = os.lstat(upper / "a" / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert os.getxattr(upper / "b", "trusted.overlay.opaque") == b"y"
    # `a` is implied by the whiteout in the top layer; it keeps the lower's owner and mode.
    st = os.stat(upper / "a")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o750)
    assert not (upper / "a" / ".wh..wh.plnk").exists() and not (upper / "b" / ".wh..wh..opq").exists()
    assert (upper / "d" / "again").read_bytes() == b"5"  # a link into the layer below: copied
    merged = tmp_path / "merged"
    _mount_overlay([lower, upper], merged, mounts)
    assert sorted(os.listdir(merged / "a")) == ["kept"] and os.stat(merged / "a").st_uid == 1000
    assert sorted(os.listdir(merged / "b")) == ["new"]
    assert not (merged / "c").exists()
    # And a real program runs from the merged tree of a pulled busybox (see the next test too).


async def test_busybox_runs_from_the_overlay(store: images.ImageStore, tarballs: dict[str, Path], tmp_path: Path,
                                             mounts: list[Path]) -> None:
    [info] = await store.import_tarball(tarballs["docker"])
    merged = tmp_path / "root"
    _mount_overlay(store.layers(info), merged, mounts)
    assert ti.run("chroot", str(merged), "/bin/sh", "-c", "echo hello from $(id -u)") == "hello from 0\n"
    # Removing the image while a container mounts it keeps the mounted layer.
    await store.remove(info.id)
    assert store.list() == []
    assert (merged / "bin" / "busybox").exists()
    assert len(_leftovers(store)["layers"]) == 1
    ti.run("umount", str(merged))
    mounts.remove(merged)
    await store.gc(high_percent=0, low_percent=0, in_use=lambda i: False)
    assert _leftovers(store)["layers"] == []


# --- boot import and the CLI ------------------------------------------------------------------


async def test_boot_import_once_by_file_digest(tmp_path: Path, tarballs: dict[str, Path],
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edgekube.kubelet.images.store")
    drop = tmp_path / "images"
    drop.mkdir()
    shutil.copy(tarballs["oci"], drop / "a.tar")
    shutil.copy(tarballs["docker"], drop / "b.tar")
    (drop / "broken.tar").write_bytes(tarballs["oci"].read_bytes()[:5000])
    (drop / "notes.txt").write_text("not an image")
    s = images.ImageStore(tmp_path / "store")
    try:
        results = {r.path.name: r for r in await s.import_dir(drop)}
        assert sorted(results) == ["a.tar", "b.tar", "broken.tar"]
        assert results["a.tar"].images and results["b.tar"].images
        assert "broken.tar" in results["broken.tar"].error
        assert {t for i in s.list() for t in i.tags} == {"docker.io/library/busybox:oci", "registry.local/tools/busybox:docker"}
    finally:
        await s.close()
    # Progress in the log: which tarball, which of how many, how big, and how long it took.
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith(("importing image tarball", "imported "))]
    assert progress[0].startswith(f"importing image tarball {drop / 'a.tar'} (1 of 3, ") and progress[0].endswith(" MiB)")
    assert progress[1].startswith(f"imported {drop / 'a.tar'} in ") and progress[1].endswith(": docker.io/library/busybox:oci")
    assert progress[2].startswith(f"importing image tarball {drop / 'b.tar'} (2 of 3, ")
    caplog.clear()
    # "Reboot": a new store imports nothing again, except what failed; a copy under another
    # name is recognised by its digest.
    shutil.copy(tarballs["oci"], drop / "c.tar")
    s = images.ImageStore(tmp_path / "store")
    try:
        results = {r.path.name: r for r in await s.import_dir(drop)}
        assert results["a.tar"].skipped and results["b.tar"].skipped and results["c.tar"].skipped
        assert results["broken.tar"].error
    finally:
        await s.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekube", "images", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def test_cli_import_ls_rm(tmp_path: Path, tarballs: dict[str, Path]) -> None:
    data = tmp_path / "data"
    out = _cli("import", "--data-dir", str(data), str(tarballs["oci"]), str(tarballs["docker"]))
    assert out.returncode == 0, out.stderr
    assert "imported docker.io/library/busybox:oci" in out.stdout
    ls = _cli("ls", "--data-dir", str(data))
    assert ls.returncode == 0
    lines = ls.stdout.splitlines()
    assert lines[0].split() == ["IMAGE", "TAG", "DIGEST", "IMAGE", "ID", "SIZE", "PLATFORM"]
    assert any(line.split()[:2] == ["docker.io/library/busybox", "oci"] for line in lines)
    assert any(line.split()[:2] == ["registry.local/tools/busybox", "docker"] for line in lines)
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"garbage")
    out = _cli("import", "--data-dir", str(data), str(bad))
    assert out.returncode == 1 and str(bad) in out.stderr
    assert _cli("rm", "--data-dir", str(data), "busybox:oci").returncode == 0
    assert "busybox:oci" not in _cli("ls", "--data-dir", str(data)).stdout
    [image_id] = _cli("ls", "-q", "--data-dir", str(data)).stdout.split()
    out = _cli("rm", "--data-dir", str(data), image_id[7:19])
    assert out.returncode == 0, out.stderr
    assert _cli("ls", "-q", "--data-dir", str(data)).stdout == ""
    assert not list((data / images.STORE_DIR / "layers").iterdir())
    out = _cli("rm", "--data-dir", str(data), "nothing:here")
    assert out.returncode == 1 and "no image" in out.stderr


# --- garbage collection at disk pressure ------------------------------------------------------


async def test_gc_removes_least_recently_used_unused_images(tmp_path: Path, mounts: list[Path]) -> None:
    fs = tmp_path / "small-fs"
    fs.mkdir()
    ti.run("mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(fs))
    mounts.append(fs)
    clock = clock_mod.FakeClock()
    s = images.ImageStore(fs / "store", clock=clock)
    try:
        infos = []
        for n in range(4):
            layout = ti.LayoutWriter(tmp_path / f"gc-{n}")
            # 4 MiB of incompressible data each, so every image costs the same on disk.
            layout.image([layout.layer([ti.file("payload", os.urandom(4 << 20))], compress=False)], tag=f"gc.local/img:{n}")
            [info] = await s.import_tarball(layout.archive(tmp_path / f"gc-{n}.tar"))
            infos.append(info)
            clock.advance(60)
        each = 4 * (1 << 20) * 100 / (48 << 20)  # percent of the filesystem one image holds
        # Use order: 1 oldest, then 0, 3, 2 (most recent). Image 1 is in use.
        for n in (1, 0, 3, 2):
            s.layers(infos[n])
            clock.advance(60)
        used = s.used_percent()
        nothing = await s.gc(high_percent=used + 1, low_percent=0, in_use=lambda i: False)
        assert nothing.removed == ()
        result = await s.gc(high_percent=used - 1, low_percent=used - 1.5 * each,
                            in_use=lambda i: i.id == infos[1].id)
        assert [i.id for i in result.removed] == [infos[0].id, infos[3].id]
        assert result.used_percent_after <= used - 1.5 * each
        assert {i.id for i in s.list()} == {infos[1].id, infos[2].id}
        assert len(_leftovers(s)["layers"]) == 2
    finally:
        await s.close()
