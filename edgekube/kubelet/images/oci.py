"""OCI and Docker schema 2 documents: media types, descriptors, manifests, indexes, configs.

Both families are accepted everywhere (registries still serve Docker's types, `docker save` and
skopeo write both); inside the store everything is described with these records. Parsing is strict
about what the store relies on (digests, sizes, the platform of index entries, `rootfs.diff_ids`
matching the layers) and lenient about the rest, so images from any sane builder load.

Platform selection follows containerd's matcher: `linux`, the node's architecture, and for ARM the
best variant the CPU runs (arm64 takes `v8` or no variant; arm/v7 also runs v6 and v5 images, in
that order of preference). Entries with `unknown/unknown` (build attestations) never match.

Chain IDs are the OCI image spec's: chain(L0) = diff(L0), chain(Ln) = sha256(chain(Ln-1) + " " +
diff(Ln)). An unpacked layer is stored under its chain ID, so two images that share a base share
its directories, and a layer's hard links may resolve into the layers below it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform as platform_mod
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from edgekube.kubelet.images import errors

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
# Layer media types -> compression the unpacker must undo ("" is a plain tar).
LAYER_TYPES: dict[str, str] = {
    OCI_LAYER: "",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_NONDIST: "",
    OCI_LAYER_NONDIST_GZIP: "gzip",
    DOCKER_LAYER_GZIP: "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "",
}
MAX_DOCUMENT_BYTES = 4 << 20  # manifests, indexes and configs larger than this are refused

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
CONTAINERD_NAME_ANNOTATION = "io.containerd.image.name"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(value: object, *, where: str) -> str:
    if not isinstance(value, str) or not _DIGEST.match(value):
        raise errors.UnsupportedMediaType(f"{where}: digest {value!r} is not sha256:<64 lower-case hex>")
    return value


@dataclasses.dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


def parse_platform(text: str) -> Platform:
    """`linux/arm64`, `linux/arm/v7`, `amd64` (linux implied)."""
    parts = text.split("/")
    if len(parts) == 1:
        parts = ["linux", *parts]
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform {text!r} is not os/arch[/variant]")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "")


def host_platform() -> Platform:
    machine = platform_mod.machine().lower()
    table = {
        "x86_64": Platform("linux", "amd64"),
        "amd64": Platform("linux", "amd64"),
        "aarch64": Platform("linux", "arm64", "v8"),
        "arm64": Platform("linux", "arm64", "v8"),
        "armv7l": Platform("linux", "arm", "v7"),
        "armv8l": Platform("linux", "arm", "v7"),  # a 32-bit userland on a 64-bit core
        "armv6l": Platform("linux", "arm", "v6"),
        "i686": Platform("linux", "386"),
        "i386": Platform("linux", "386"),
        "riscv64": Platform("linux", "riscv64"),
        "s390x": Platform("linux", "s390x"),
        "ppc64le": Platform("linux", "ppc64le"),
    }
    return table.get(machine, Platform("linux", machine))


def _candidates(want: Platform) -> list[tuple[str, str, frozenset[str]]]:
    """(os, arch, acceptable variants) in order of preference."""
    if want.architecture == "arm64":
        return [(want.os, "arm64", frozenset({"", "v8"}))]
    if want.architecture == "arm":
        # containerd's normalisation: an arm entry without a variant is v7.
        order = ["v8", "v7", "v6", "v5"]
        start = order.index(want.variant) if want.variant in order else 1
        out: list[tuple[str, str, frozenset[str]]] = []
        for variant in order[start:]:
            out.append((want.os, "arm", frozenset({variant})))
            if variant == "v7":
                out.append((want.os, "arm", frozenset({""})))
        return out
    return [(want.os, want.architecture, frozenset({want.variant, ""}) if want.variant else frozenset({""}))]


@dataclasses.dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    urls: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            p: dict[str, str] = {"os": self.platform.os, "architecture": self.platform.architecture}
            if self.platform.variant:
                p["variant"] = self.platform.variant
            out["platform"] = p
        return out


def _descriptor(raw: Any, *, where: str) -> Descriptor:
    if not isinstance(raw, Mapping):
        raise errors.UnsupportedMediaType(f"{where}: descriptor is not an object")
    digest = check_digest(raw.get("digest"), where=where)
    size = raw.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise errors.UnsupportedMediaType(f"{where}: descriptor size {size!r} is not a non-negative integer")
    plat = None
    rp = raw.get("platform")
    if isinstance(rp, Mapping):
        plat = Platform(str(rp.get("os", "")), str(rp.get("architecture", "")), str(rp.get("variant", "") or ""))
    ann = raw.get("annotations") or {}
    urls = raw.get("urls") or ()
    return Descriptor(
        media_type=str(raw.get("mediaType", "")),
        digest=digest,
        size=size,
        platform=plat,
        annotations={str(k): str(v) for k, v in ann.items()} if isinstance(ann, Mapping) else {},
        urls=tuple(str(u) for u in urls) if isinstance(urls, list) else (),
    )


def _load(data: bytes, *, where: str) -> Mapping[str, Any]:
    if len(data) > MAX_DOCUMENT_BYTES:
        raise errors.ContentError(f"{where}: document of {len(data)} bytes is larger than {MAX_DOCUMENT_BYTES}")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise errors.ContentError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(doc, Mapping):
        raise errors.ContentError(f"{where}: not a JSON object")
    return doc


def media_type_of(data: bytes, *, header: str | None, where: str) -> str:
    """The document's type: its own `mediaType`, else the HTTP Content-Type, else by shape."""
    doc = _load(data, where=where)
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if header:
        base = header.split(";", 1)[0].strip()
        if base in (*MANIFEST_TYPES, *INDEX_TYPES, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED):
            return base
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1
    if "manifests" in doc:
        return OCI_INDEX
    if "layers" in doc and "config" in doc:
        return OCI_MANIFEST
    raise errors.UnsupportedMediaType(f"{where}: cannot tell what kind of document this is")


@dataclasses.dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


@dataclasses.dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


def parse_index(data: bytes, *, where: str) -> Index:
    doc = _load(data, where=where)
    raw = doc.get("manifests")
    if not isinstance(raw, list):
        raise errors.UnsupportedMediaType(f"{where}: index without a `manifests` list")
    media_type = str(doc.get("mediaType") or OCI_INDEX)
    return Index(media_type, tuple(_descriptor(m, where=f"{where} manifests[{i}]") for i, m in enumerate(raw)))


def parse_manifest(data: bytes, *, where: str) -> Manifest:
    doc = _load(data, where=where)
    media_type = str(doc.get("mediaType") or OCI_MANIFEST)
    if doc.get("schemaVersion") == 1 or media_type in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED):
        raise errors.UnsupportedMediaType(
            f"{where}: Docker schema 1 manifests are not supported (re-push the image with a current tool)"
        )
    config = _descriptor(doc.get("config"), where=f"{where} config")
    raw_layers = doc.get("layers")
    if not isinstance(raw_layers, list):
        raise errors.UnsupportedMediaType(f"{where}: manifest without a `layers` list")
    layers = tuple(_descriptor(x, where=f"{where} layers[{i}]") for i, x in enumerate(raw_layers))
    for i, layer in enumerate(layers):
        if layer.media_type == OCI_LAYER_ZSTD:
            raise errors.UnsupportedMediaType(f"{where} layers[{i}]: zstd-compressed layers are not supported")
        if layer.media_type not in LAYER_TYPES:
            raise errors.UnsupportedMediaType(f"{where} layers[{i}]: layer media type {layer.media_type!r} is not supported")
    return Manifest(media_type, config, layers)


def select_platform(index: Index, want: Platform, *, where: str) -> Descriptor:
    usable = [m for m in index.manifests if m.media_type in (*MANIFEST_TYPES, "") and m.platform is not None]
    for os_name, arch, variants in _candidates(want):
        for m in usable:
            p = m.platform
            assert p is not None
            if p.os == os_name and p.architecture == arch and p.variant in variants:
                return m
    offered = ", ".join(str(m.platform) for m in usable) or "none"
    raise errors.NoMatchingPlatform(f"{where}: no manifest for platform {want} (the index offers {offered})")


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """What a container needs from the image config (`config` of the OCI image config)."""

    entrypoint: tuple[str, ...] | None
    cmd: tuple[str, ...] | None
    env: tuple[str, ...]
    working_dir: str
    user: str
    exposed_ports: tuple[str, ...]  # "8080/tcp"
    labels: Mapping[str, str]
    stop_signal: str
    os: str
    architecture: str
    variant: str
    diff_ids: tuple[str, ...]
    created: str

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["labels"] = dict(self.labels)
        return out

    @staticmethod
    def from_json(doc: Mapping[str, Any]) -> ImageConfig:
        def opt(v: Any) -> tuple[str, ...] | None:
            return None if v is None else tuple(v)

        return ImageConfig(
            entrypoint=opt(doc.get("entrypoint")),
            cmd=opt(doc.get("cmd")),
            env=tuple(doc.get("env", ())),
            working_dir=str(doc.get("working_dir", "")),
            user=str(doc.get("user", "")),
            exposed_ports=tuple(doc.get("exposed_ports", ())),
            labels=dict(doc.get("labels", {})),
            stop_signal=str(doc.get("stop_signal", "")),
            os=str(doc.get("os", "")),
            architecture=str(doc.get("architecture", "")),
            variant=str(doc.get("variant", "")),
            diff_ids=tuple(doc.get("diff_ids", ())),
            created=str(doc.get("created", "")),
        )


def _str_list(value: Any, *, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise errors.ContentError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(value)


def parse_config(data: bytes, *, where: str) -> ImageConfig:
    doc = _load(data, where=where)
    cfg = doc.get("config") or {}
    if not isinstance(cfg, Mapping):
        raise errors.ContentError(f"{where}: `config` is not an object")
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, Mapping) or rootfs.get("type") != "layers":
        raise errors.ContentError(f"{where}: `rootfs` must be {{type: layers, diff_ids: [...]}}")
    diff_ids = tuple(check_digest(d, where=f"{where} rootfs.diff_ids") for d in (rootfs.get("diff_ids") or []))
    ports = cfg.get("ExposedPorts") or {}
    labels = cfg.get("Labels") or {}
    return ImageConfig(
        entrypoint=_str_list(cfg.get("Entrypoint"), where=f"{where} config.Entrypoint"),
        cmd=_str_list(cfg.get("Cmd"), where=f"{where} config.Cmd"),
        env=_str_list(cfg.get("Env"), where=f"{where} config.Env") or (),
        working_dir=str(cfg.get("WorkingDir") or ""),
        user=str(cfg.get("User") or ""),
        exposed_ports=tuple(sorted(str(p) for p in ports)) if isinstance(ports, Mapping) else (),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {},
        stop_signal=str(cfg.get("StopSignal") or ""),
        os=str(doc.get("os") or ""),
        architecture=str(doc.get("architecture") or ""),
        variant=str(doc.get("variant") or ""),
        diff_ids=diff_ids,
        created=str(doc.get("created") or ""),
    )


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    out: list[str] = []
    for diff in diff_ids:
        out.append(diff if not out else sha256_digest(f"{out[-1]} {diff}".encode()))
    return out
