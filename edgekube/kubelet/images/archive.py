"""Read image tarballs: OCI layouts (`skopeo copy ... oci-archive:`, `ctr export`, `docker save`
of Docker 25+) and docker-archives (`docker save`, `skopeo copy ... docker-archive:`).

The tarball is opened for random access (tarfile indexes the headers), so layers are unpacked
straight from it, never copied out first: an import writes each byte once, to its unpacked
layer. A gzip/bzip2/xz-compressed tarball works too (slower: seeking re-reads the stream).

OCI layout: `index.json` lists manifests (or nested indexes, from which the node's platform is
picked); a name comes from the `io.containerd.image.name` annotation, else from
`org.opencontainers.image.ref.name` when that is a full reference (`busybox:1.36`,
`registry.local/app:v1`); a bare tag (`latest`) leaves the image unnamed, reachable by its ID.
Blobs live at `blobs/sha256/<hex>` and must hash to their names.
docker-archive: `manifest.json` lists images with `Config`, `RepoTags` and `Layers` (paths in the
archive, possibly symlinks inside it, as skopeo writes them); the config's name, when it is a hex
digest, must match its content, and each layer is checked against the config's `diff_ids` while
it is unpacked. The store gets an OCI manifest synthesised for it (layers typed by their magic).

Every problem is an ArchiveError naming the file (and the member); the store commits nothing
of a tarball that failed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import orjson

from edgekube.kubelet.images import errors, oci, reference

_GZIP_MAGIC = b"\x1f\x8b"


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One image found in a tarball, ready for the store to unpack and commit."""

    names: tuple[str, ...]  # normalised references
    repo_digest: str  # the digest the name points at (an index's, or the manifest's)
    manifest: bytes
    manifest_digest: str
    config: bytes
    layer_openers: tuple[Callable[[], IO[bytes]], ...]
    layer_digests: tuple[str | None, ...]  # blob digests to check while unpacking (None: rely on diff IDs)


class Archive:
    """An open image tarball. Use as a context manager; blocking (run it in a thread)."""

    def __init__(self, path: Path, *, platform: oci.Platform) -> None:
        self.path = path
        self.platform = platform
        try:
            self._tar = tarfile.open(path, "r:*")
            self._members: dict[str, tarfile.TarInfo] = {}
            for m in self._tar.getmembers():
                self._members[_clean(m.name)] = m
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise errors.ArchiveError(f"{path}: not a readable tar archive ({exc or type(exc).__name__})") from None

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self._tar.close()

    def close(self) -> None:
        self._tar.close()

    # --- members ------------------------------------------------------------------------------

    def _member(self, name: str, *, why: str) -> tarfile.TarInfo:
        seen: set[str] = set()
        key = _clean(name)
        while True:
            m = self._members.get(key)
            if m is None:
                raise errors.ArchiveError(f"{self.path}: {why}: member {name!r} is missing (truncated archive?)")
            if m.issym() or m.islnk():
                if key in seen:
                    raise errors.ArchiveError(f"{self.path}: member {name!r} is a symlink loop")
                seen.add(key)
                base = posixpath.dirname(key) if m.issym() else ""
                key = _clean(posixpath.join(base, m.linkname))
                continue
            if not m.isreg():
                raise errors.ArchiveError(f"{self.path}: {why}: member {name!r} is not a regular file")
            return m

    def has(self, name: str) -> bool:
        return _clean(name) in self._members

    def read(self, name: str, *, why: str, limit: int = oci.MAX_DOCUMENT_BYTES) -> bytes:
        m = self._member(name, why=why)
        if m.size > limit:
            raise errors.ArchiveError(f"{self.path}: {why}: member {name!r} is {m.size} bytes, more than {limit}")
        try:
            f = self._tar.extractfile(m)
            assert f is not None
            data = f.read()
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise errors.ArchiveError(f"{self.path}: {why}: member {name!r} cannot be read ({exc}; truncated?)") from None
        if len(data) != m.size:
            raise errors.ArchiveError(f"{self.path}: {why}: member {name!r} is truncated")
        return data

    def opener(self, name: str, *, why: str) -> Callable[[], IO[bytes]]:
        m = self._member(name, why=why)

        def open_member() -> IO[bytes]:
            f = self._tar.extractfile(m)
            assert f is not None
            return f

        return open_member

    def size(self, name: str, *, why: str) -> int:
        return self._member(name, why=why).size

    def digest(self, name: str, *, why: str) -> str:
        h = hashlib.sha256()
        try:
            with self.opener(name, why=why)() as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise errors.ArchiveError(f"{self.path}: {why}: member {name!r} cannot be read ({exc}; truncated?)") from None
        return "sha256:" + h.hexdigest()

    # --- formats ------------------------------------------------------------------------------

    def candidates(self) -> list[Candidate]:
        if self.has("index.json") and self.has("oci-layout"):
            return self._oci()
        if self.has("manifest.json"):
            return self._docker()
        raise errors.ArchiveError(
            f"{self.path}: neither an OCI layout (index.json + oci-layout) nor a docker-archive (manifest.json)"
        )

    def _blob(self, digest: str, *, why: str, verify: bool = True) -> bytes:
        name = "blobs/" + digest.replace(":", "/", 1)
        data = self.read(name, why=why)
        if verify and oci.sha256_digest(data) != digest:
            raise errors.ArchiveError(f"{self.path}: {why}: blob {name} does not hash to its name (corrupt)")
        return data

    def _oci(self) -> list[Candidate]:
        try:
            index = oci.parse_index(self.read("index.json", why="OCI layout"), where=f"{self.path}: index.json")
        except errors.ImageError as exc:
            raise errors.ArchiveError(str(exc)) from None
        out: list[Candidate] = []
        for desc in index.manifests:
            names = _names_from(desc.annotations)
            where = f"{self.path}: manifest {desc.digest}"
            try:
                body = self._blob(desc.digest, why="index.json entry")
                kind = oci.media_type_of(body, header=desc.media_type, where=where)
                top = desc.digest
                if kind in oci.INDEX_TYPES:
                    inner = oci.parse_index(body, where=where)
                    desc = oci.select_platform(inner, self.platform, where=where)
                    body = self._blob(desc.digest, why=f"platform manifest of {top}")
                manifest = oci.parse_manifest(body, where=where)
                config = self._blob(manifest.config.digest, why=f"config of {desc.digest}")
            except errors.NoMatchingPlatform as exc:
                raise errors.ArchiveError(str(exc)) from None
            except errors.ArchiveError:
                raise
            except errors.ImageError as exc:
                raise errors.ArchiveError(str(exc)) from None
            openers = []
            for i, layer in enumerate(manifest.layers):
                name = "blobs/" + layer.digest.replace(":", "/", 1)
                why = f"layer {i} of {desc.digest}"
                if self.size(name, why=why) != layer.size:
                    raise errors.ArchiveError(f"{self.path}: {why}: blob {name} has {self.size(name, why=why)} bytes, "
                                              f"the manifest says {layer.size} (corrupt)")
                openers.append(self.opener(name, why=why))
            out.append(Candidate(
                names=names, repo_digest=top, manifest=body, manifest_digest=desc.digest, config=config,
                layer_openers=tuple(openers), layer_digests=tuple(x.digest for x in manifest.layers),
            ))
        if not out:
            raise errors.ArchiveError(f"{self.path}: index.json lists no images")
        return out

    def _docker(self) -> list[Candidate]:
        try:
            entries: Any = orjson.loads(self.read("manifest.json", why="docker-archive"))
        except orjson.JSONDecodeError as exc:
            raise errors.ArchiveError(f"{self.path}: manifest.json is not valid JSON ({exc})") from None
        if not isinstance(entries, list) or not entries:
            raise errors.ArchiveError(f"{self.path}: manifest.json lists no images")
        out: list[Candidate] = []
        for n, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) or not isinstance(entry.get("Layers"), list):
                raise errors.ArchiveError(f"{self.path}: manifest.json entry {n} lacks Config or Layers")
            config_name: str = entry["Config"]
            config = self.read(config_name, why=f"config of image {n}")
            config_digest = oci.sha256_digest(config)
            stem = posixpath.basename(config_name).removesuffix(".json")
            if len(stem) == 64 and all(c in "0123456789abcdef" for c in stem) and f"sha256:{stem}" != config_digest:
                raise errors.ArchiveError(f"{self.path}: config {config_name!r} does not hash to its name (corrupt)")
            layers: list[dict[str, Any]] = []
            openers = []
            for i, lname in enumerate(entry["Layers"]):
                why = f"layer {i} of image {n}"
                opener = self.opener(str(lname), why=why)
                with opener() as f:
                    head = f.read(2)
                media = oci.OCI_LAYER_GZIP if head == _GZIP_MAGIC else oci.OCI_LAYER
                digest = self.digest(str(lname), why=why)
                layers.append({"mediaType": media, "digest": digest, "size": self.size(str(lname), why=why)})
                openers.append(opener)
            manifest = orjson.dumps({
                "schemaVersion": 2,
                "mediaType": oci.OCI_MANIFEST,
                "config": {"mediaType": oci.OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": layers,
            })
            names: list[str] = []
            for tag in entry.get("RepoTags") or []:
                try:
                    names.append(reference.parse(str(tag)).name())
                except errors.InvalidImageName as exc:
                    raise errors.ArchiveError(f"{self.path}: RepoTags of image {n}: {exc}") from None
            digest = oci.sha256_digest(manifest)
            out.append(Candidate(
                names=tuple(names), repo_digest=digest, manifest=manifest, manifest_digest=digest, config=config,
                layer_openers=tuple(openers), layer_digests=tuple(None for _ in openers),
            ))
        return out


def _names_from(annotations: dict[str, str] | Any) -> tuple[str, ...]:
    for key in (oci.CONTAINERD_NAME_ANNOTATION, oci.REF_NAME_ANNOTATION):
        value = annotations.get(key)
        if not value:
            continue
        if key == oci.REF_NAME_ANNOTATION and not any(c in value for c in ":/@"):
            continue  # a bare tag: no repository to file it under
        try:
            return (reference.parse(value).name(),)
        except errors.InvalidImageName:
            continue
    return ()


def _clean(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")
