"""The image store's pure parts: references, registries.yaml, pull-secret credentials,
WWW-Authenticate, platform selection, chain IDs, and the layer unpacker's refusals."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from edgekube.kubelet.images import (
    credentials,
    distribution,
    errors,
    oci,
    reference,
    registries,
    unpack,
)
from tests.support import images as ti


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("user/app", "docker.io/user/app:latest"),
        ("index.docker.io/library/busybox:1", "docker.io/library/busybox:1"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("localhost/app", "localhost/app:latest"),
        ("127.0.0.1:5000/a/b/c:v1", "127.0.0.1:5000/a/b/c:v1"),
        ("ghcr.io/org/tool:1.0", "ghcr.io/org/tool:1.0"),
        ("busybox:1@sha256:" + "a" * 64, "docker.io/library/busybox@sha256:" + "a" * 64),
    ],
)
def test_reference_normalisation(text: str, name: str) -> None:
    assert reference.parse(text).name() == name


def test_reference_parts() -> None:
    ref = reference.parse("registry.local:5000/team/app:v2")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("registry.local:5000", "team/app", "v2", None)
    assert ref.locator == "v2" and ref.repository == "registry.local:5000/team/app"
    pinned = reference.parse("app:v1@sha256:" + "b" * 64)
    assert pinned.locator == "sha256:" + "b" * 64 and str(pinned).endswith(":v1@sha256:" + "b" * 64)


@pytest.mark.parametrize("text", ["", "Busybox", "docker.io/User/app", "app:", "app@sha256:abc", "app:-x", " app", "a//b"])
def test_invalid_references(text: str) -> None:
    with pytest.raises(errors.InvalidImageName) as exc:
        reference.parse(text)
    assert exc.value.reason == "InvalidImageName"


def test_registries_yaml_mirrors_rewrites_and_configs(tmp_path: Path) -> None:
    path = tmp_path / "registries.yaml"
    path.write_text(
        """
mirrors:
  docker.io:
    endpoint: ["https://mirror.local:5000/v2", "http://10.0.0.2:5000"]
    rewrite:
      "^library/(.*)": "hub/$1"
  registry.corp:
    endpoint: ["https://registry.corp"]
  "*":
    endpoint: ["http://catchall.local"]
configs:
  "mirror.local:5000":
    auth: {auth: dXNlcjpwYXNz}
    tls: {insecure_skip_verify: true}
  registry.corp:
    auth: {username: a, password: b}
"""
    )
    cfg = registries.load(path)
    eps = cfg.endpoints(reference.parse("busybox:1"))
    assert [(e.url, e.repository, e.is_mirror) for e in eps] == [
        ("https://mirror.local:5000", "hub/busybox", True),
        ("http://10.0.0.2:5000", "hub/busybox", True),
        ("https://registry-1.docker.io", "library/busybox", False),  # the default, last
    ]
    assert eps[1].plain_http and not eps[0].plain_http
    # The registry itself listed as its own endpoint is not repeated, and not rewritten.
    assert [e.url for e in cfg.endpoints(reference.parse("registry.corp/x/y"))] == ["https://registry.corp"]
    assert [e.url for e in cfg.endpoints(reference.parse("quay.io/a/b"))] == ["http://catchall.local", "https://quay.io"]
    auth = cfg.host_config("mirror.local:5000").auth
    assert auth is not None and (auth.username, auth.password) == ("user", "pass")
    assert cfg.ssl_context("mirror.local:5000").verify_mode.name == "CERT_NONE"
    assert cfg.ssl_context("registry.corp").verify_mode.name == "CERT_REQUIRED"
    # Loopback registries are plain HTTP by default, others HTTPS.
    assert [e.url for e in registries.Registries().endpoints(reference.parse("127.0.0.1:5000/a"))] == ["http://127.0.0.1:5000"]
    assert [e.url for e in registries.Registries().endpoints(reference.parse("localhost:5000/a"))] == ["http://localhost:5000"]
    assert registries.load(tmp_path / "missing.yaml") == registries.Registries()


def test_registries_yaml_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "registries.yaml"
    path.write_text("mirrors:\n  docker.io:\n    endpoints: [x]\n")
    with pytest.raises(registries.RegistriesError, match=r"mirrors\.docker\.io.*endpoints"):
        registries.load(path)
    path.write_text("configs:\n  r:\n    tls: {insecure: true}\n")
    with pytest.raises(registries.RegistriesError, match=r"configs\.r\.tls.*insecure"):
        registries.load(path)
    path.write_text("mirrors:\n  docker.io:\n    endpoint: ['ftp://x']\n")
    with pytest.raises(registries.RegistriesError, match="ftp"):
        registries.load(path)


def test_pull_secret_credentials_match_host_and_path() -> None:
    def secret(auths: dict[str, dict[str, str]], kind: str = "kubernetes.io/dockerconfigjson") -> dict[str, object]:
        if kind == "kubernetes.io/dockerconfigjson":
            blob, field = {"auths": auths}, ".dockerconfigjson"
        else:
            blob, field = auths, ".dockercfg"  # type: ignore[assignment]
        return {"type": kind, "data": {field: base64.b64encode(json.dumps(blob).encode()).decode()}}

    creds = credentials.from_secrets([
        secret({"https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()}}),
        secret({"registry.local:5000": {"username": "u", "password": "p"},
                "registry.local:5000/team": {"username": "team", "password": "tp"}}),
        secret({"*.corp.example": {"username": "glob", "password": "g"}}, kind="kubernetes.io/dockercfg"),
        {"type": "Opaque", "data": {"x": "eA=="}},
    ])
    assert [c.username for c in credentials.lookup(creds, host="registry-1.docker.io", repository="library/busybox")] == ["hub"]
    assert [c.username for c in credentials.lookup(creds, host="registry.local:5000", repository="team/app")] == ["team", "u"]
    assert [c.username for c in credentials.lookup(creds, host="registry.local:5000", repository="other/app")] == ["u"]
    assert [c.username for c in credentials.lookup(creds, host="r1.corp.example", repository="x")] == ["glob"]
    assert credentials.lookup(creds, host="a.b.corp.example", repository="x") == []
    assert credentials.lookup(creds, host="registry.local:5001", repository="team/app") == []


def test_www_authenticate_parsing() -> None:
    [ch] = distribution.parse_www_authenticate(
        'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"'
    )
    assert ch.scheme == "bearer"
    assert ch.params == {"realm": "https://auth.example/token", "service": "registry.example", "scope": "repository:a/b:pull,push"}
    [basic] = distribution.parse_www_authenticate('Basic realm="a \\"quoted\\" realm"')
    assert basic.scheme == "basic" and basic.params["realm"] == 'a "quoted" realm'


def _index(*platforms: str) -> oci.Index:
    body = {"schemaVersion": 2, "manifests": [
        {"mediaType": oci.OCI_MANIFEST, "digest": "sha256:" + f"{i:064x}", "size": 1,
         "platform": dict(zip(("os", "architecture", "variant"), p.split("/"), strict=False))}
        for i, p in enumerate(platforms)
    ]}
    return oci.parse_index(json.dumps(body).encode(), where="test")


@pytest.mark.parametrize(
    ("offered", "want", "chosen"),
    [
        (["unknown/unknown", "linux/amd64", "linux/arm64/v8"], "linux/amd64", "linux/amd64"),
        (["linux/amd64", "linux/arm64/v8", "linux/arm/v7"], "linux/arm64/v8", "linux/arm64/v8"),
        (["linux/amd64", "linux/arm64"], "linux/arm64/v8", "linux/arm64"),
        (["linux/arm/v6", "linux/arm/v7"], "linux/arm/v7", "linux/arm/v7"),
        (["linux/arm/v6", "linux/amd64"], "linux/arm/v7", "linux/arm/v6"),
        (["linux/arm/v5", "linux/arm"], "linux/arm/v7", "linux/arm"),
    ],
)
def test_platform_selection(offered: list[str], want: str, chosen: str) -> None:
    picked = oci.select_platform(_index(*offered), oci.parse_platform(want), where="test")
    assert str(picked.platform) == chosen


def test_platform_selection_without_match_names_what_is_offered() -> None:
    with pytest.raises(errors.NoMatchingPlatform, match="linux/amd64, linux/arm/v7"):
        oci.select_platform(_index("linux/amd64", "linux/arm/v7"), oci.parse_platform("linux/arm/v6"), where="img")


def test_chain_ids_follow_the_image_spec() -> None:
    a, b = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    assert oci.chain_ids([a, b]) == [a, oci.sha256_digest(f"{a} {b}".encode())]


def test_schema1_and_zstd_are_refused_with_a_reason() -> None:
    with pytest.raises(errors.UnsupportedMediaType, match="schema 1"):
        oci.parse_manifest(b'{"schemaVersion": 1, "name": "x", "fsLayers": []}', where="m")
    doc = {"schemaVersion": 2, "config": {"mediaType": oci.OCI_CONFIG, "digest": "sha256:" + "0" * 64, "size": 2},
           "layers": [{"mediaType": oci.OCI_LAYER_ZSTD, "digest": "sha256:" + "1" * 64, "size": 3}]}
    with pytest.raises(errors.UnsupportedMediaType, match="zstd"):
        oci.parse_manifest(json.dumps(doc).encode(), where="m")


def test_image_config_fields() -> None:
    cfg = oci.parse_config(json.dumps({
        "architecture": "arm64", "os": "linux",
        "config": {"Entrypoint": ["/init"], "Cmd": ["--serve"], "Env": ["A=1"], "WorkingDir": "/srv",
                   "User": "app", "ExposedPorts": {"8080/tcp": {}, "53/udp": {}}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "3" * 64]},
    }).encode(), where="c")
    assert cfg.entrypoint == ("/init",) and cfg.cmd == ("--serve",) and cfg.env == ("A=1",)
    assert (cfg.working_dir, cfg.user, cfg.exposed_ports) == ("/srv", "app", ("53/udp", "8080/tcp"))
    assert oci.ImageConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg


# --- the unpacker's refusals (no root needed: refusals happen before anything is written) -----


def _unpack(tmp_path: Path, entries: list[ti.TarEntry]) -> Path:
    blob = tmp_path / "layer.tar"
    blob.write_bytes(ti.tar_bytes(entries))
    dest = tmp_path / "fs"
    dest.mkdir()
    unpack.unpack(blob, dest, lowers=[], diff_id=ti.sha256(blob.read_bytes()), where="test layer")
    return dest


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([ti.file("/etc/evil", b"x")], "absolute"),
        ([ti.file("../evil", b"x")], "'..'"),
        ([ti.file("a/../../evil", b"x")], "'..'"),
        ([ti.symlink("escape", "../../.."), ti.file("escape/evil", b"x")], "symlink 'escape'"),
        ([ti.directory("d"), ti.symlink("d/up", "/"), ti.file("d/up/evil", b"x")], "symlink 'd/up'"),
        ([ti.hardlink("h", "../outside")], "'..'"),
        ([ti.hardlink("h", "/etc/hostname")], "absolute"),
        ([ti.symlink("s", "/etc"), ti.hardlink("h", "s/hostname")], "names nothing"),
        ([ti.hardlink("h", "not-there")], "names nothing"),
    ],
)
def test_unsafe_layers_are_refused(tmp_path: Path, entries: list[ti.TarEntry], message: str) -> None:
    with pytest.raises(errors.UnsafeLayerError, match=message):
        _unpack(tmp_path, entries)
    # Nothing landed beside the layer's directory.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fs", "layer.tar"]
    assert not (tmp_path.parent / "evil").exists()


def test_layer_contents_and_hard_links(tmp_path: Path) -> None:
    dest = _unpack(tmp_path, [
        ti.directory("etc"), ti.file("etc/a", b"hello", 0o640), ti.hardlink("etc/b", "etc/a"),
        ti.symlink("etc/abs", "/etc/a"), ti.symlink("etc/rel", "../../../etc/a"),
        ti.file("etc/a2", b"replaced"), ti.file("etc/a2", b"second wins"),
    ])
    assert (dest / "etc" / "a").read_bytes() == b"hello"
    assert os.stat(dest / "etc" / "a").st_ino == os.stat(dest / "etc" / "b").st_ino
    assert oct(os.stat(dest / "etc" / "a").st_mode & 0o777) == oct(0o640)
    # Symlinks are stored verbatim (they resolve inside the container) and never followed.
    assert os.readlink(dest / "etc" / "abs") == "/etc/a" and os.readlink(dest / "etc" / "rel") == "../../../etc/a"
    assert (dest / "etc" / "a2").read_bytes() == b"second wins"


def test_diff_id_mismatch_and_truncation_are_content_errors(tmp_path: Path) -> None:
    raw = ti.tar_bytes([ti.file("x", b"data" * 1000)])
    blob = tmp_path / "layer.tar"
    blob.write_bytes(raw)
    (tmp_path / "fs").mkdir()
    with pytest.raises(errors.ContentError, match="the image config says"):
        unpack.unpack(blob, tmp_path / "fs", lowers=[], diff_id="sha256:" + "0" * 64, where="layer 0")
    blob.write_bytes(raw[:700])
    (tmp_path / "fs2").mkdir()
    with pytest.raises(errors.ContentError, match="layer 0: layer is corrupt or truncated"):
        unpack.unpack(blob, tmp_path / "fs2", lowers=[], diff_id=None, where="layer 0")


def test_stale_staging_of_dead_processes_is_removed_on_open(tmp_path: Path) -> None:
    import subprocess

    from edgekube.kubelet.images import store as store_mod

    dead = subprocess.Popen(["true"])
    dead.wait()
    root = tmp_path / "store"
    (root / "tmp" / f"{dead.pid}-abc" / "layers").mkdir(parents=True)
    (root / "tmp" / f"{os.getpid()}-live").mkdir(parents=True)  # a running process's pull stays
    store_mod.ImageStore(root)
    assert sorted(p.name for p in (root / "tmp").iterdir()) == [f"{os.getpid()}-live"]
