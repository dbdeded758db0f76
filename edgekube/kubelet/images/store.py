"""The image store: content-addressed, shared unpacked layers, pulls, imports, GC.

Layout under the store's root (the kubelet uses `DATA/image-store`):

    images.json             the index: images by ID (config digest) with their names, layers
                            (chain IDs), sizes, times; tarballs already imported at boot
    lock                    flock(2) taken around every read-modify-write of images.json, so
                            `edgekube images ...` and a running server share the store safely
    blobs/sha256/<hex>      manifests and configs, verified against their digests
    layers/<chain hex>/fs   one unpacked layer: an overlayfs lower dir, shared by every image
                            whose layer stack starts the same (chain ID, OCI image spec)
    tmp/<pid>-<random>/     staging of one pull or import

Everything new is written in a staging directory first and renamed into place, under the lock,
only once the whole image verified and unpacked; then images.json is replaced atomically
(write, fsync, rename). A failed pull or import removes its staging directory, so nothing half
done stays behind; staging directories of dead processes are removed when a store opens. Layer
blobs (the compressed tars) are dropped once unpacked and verified: the unpacked directory is the
content, which halves the flash an image costs on a device. A pull skips the layers whose chain
IDs are already present, so shared bases are fetched and unpacked once.

Pull policy is the kubelet's: `Never` uses only what is present (ErrImageNeverPull otherwise),
`IfNotPresent` pulls only when no image answers to the name, `Always` asks the registry every
time and downloads only when the digest is new. Concurrent `ensure` calls for the same reference
and credentials share one pull (single flight), run as a task the store owns, so one caller
giving up does not cancel it for the others. Events the kubelet turns into Kubernetes Events go
through an optional callback, with upstream's reasons and messages (`Pulling`, `Pulled`,
`Failed`, `ErrImageNeverPull`); backoff is the kubelet's, the store only raises typed errors.

GC: when the filesystem holding the store is above `high_percent` used, remove images that are
not in use and older than `min_age`, least recently used first, until it is at or below
`low_percent` (the kubelet's imageGCHigh/LowThresholdPercent). Content is pruned when no image
references it, but never a layer mounted as an overlay lower dir (read from mountinfo), so even
`edgekube images rm` from a shell cannot pull a layer from under a running container.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import enum
import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from edgekube._cogs import clock as clock_mod
from edgekube.kubelet.images import (
    archive,
    credentials,
    distribution,
    errors,
    oci,
    reference,
    registries,
    unpack,
)

log = logging.getLogger(__name__)

TARBALL_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_DOWNLOADS_AT_ONCE = 3


class PullPolicy(enum.StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


@dataclasses.dataclass(frozen=True)
class PullEvent:
    """Something for the kubelet to record as an Event on the pod (or ignore: `Progress`)."""

    type: str  # "Normal" or "Warning"
    reason: str  # Pulling, Pulled, Failed, ErrImageNeverPull, Progress
    message: str
    image: str  # the reference as the pod spec wrote it
    done_bytes: int = 0
    total_bytes: int = 0


EventFn = Callable[[PullEvent], None]


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    id: str  # config digest: the image ID
    digest: str  # the platform manifest's digest
    names: tuple[str, ...]  # repo:tag and repo@digest references that point here
    config: oci.ImageConfig
    chain: tuple[str, ...]  # layer chain IDs, lowest first
    size: int  # bytes as distributed (compressed layers + config)
    disk_size: int  # bytes of files unpacked
    created: float  # wall-clock seconds it entered the store
    last_used: float
    platform: str

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if "@" not in n)

    @property
    def repo_digests(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if "@" in n)

    @property
    def image_ref(self) -> str:
        """What containerStatuses[].imageID shows: a repo digest, else the ID."""
        return self.repo_digests[0] if self.repo_digests else self.id


@dataclasses.dataclass(frozen=True)
class ImportResult:
    path: Path
    images: tuple[ImageInfo, ...] = ()
    error: str = ""
    skipped: bool = False  # imported before (same file digest)


@dataclasses.dataclass(frozen=True)
class GcResult:
    removed: tuple[ImageInfo, ...]
    used_percent_before: float
    used_percent_after: float


def _image_from(image_id: str, raw: Mapping[str, Any]) -> ImageInfo:
    return ImageInfo(
        id=image_id,
        digest=str(raw["digest"]),
        names=tuple(raw.get("names", ())),
        config=oci.ImageConfig.from_json(raw["config"]),
        chain=tuple(raw["chain"]),
        size=int(raw["size"]),
        disk_size=int(raw.get("disk_size", 0)),
        created=float(raw["created"]),
        last_used=float(raw.get("last_used", raw["created"])),
        platform=str(raw.get("platform", "")),
    )


def _empty_meta() -> dict[str, Any]:
    return {"version": 1, "images": {}, "imported": {}}


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def _overlay_lowers() -> set[str]:
    """Directories used as overlayfs lower dirs by any mount this process can see."""
    out: set[str] = set()
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        _, _, post = line.partition(" - ")
        fields = post.split(" ")
        if len(fields) < 3 or fields[0] != "overlay":
            continue
        for opt in fields[2].split(","):
            if opt.startswith("lowerdir="):
                for d in opt[len("lowerdir="):].split(":"):
                    out.add(os.path.normpath(d.replace("\\040", " ")))
    return out


class _Staging:
    """A private directory for one pull or import, removed when done either way."""

    def __init__(self, tmp_root: Path) -> None:
        self.path = tmp_root / f"{os.getpid()}-{secrets.token_hex(6)}"
        self.path.mkdir(parents=True)
        (self.path / "blobs").mkdir()
        (self.path / "layers").mkdir()
        self.layers: dict[str, Path] = {}  # chain id -> staged layer dir (holding fs/)
        self.blobs: dict[str, Path] = {}  # digest -> staged blob file

    def blob_path(self, digest: str) -> Path:
        return self.path / "blobs" / _hex(digest)

    def put_blob(self, digest: str, data: bytes) -> None:
        p = self.blob_path(digest)
        with open(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "wb") as f:
            f.write(data)
        self.blobs[digest] = p

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class _Missing(Exception):
    """Content an image reused vanished before the commit (a concurrent removal): redo."""


class ImageStore:
    def __init__(
        self,
        root: Path,
        *,
        registry_config: registries.Registries | None = None,
        platform: oci.Platform | None = None,
        clock: clock_mod.Clock | None = None,
    ) -> None:
        self.root = root
        self.platform = platform or oci.host_platform()
        self.clock = clock or clock_mod.WallClock()
        self.puller = distribution.Puller(registry_config=registry_config or registries.Registries())
        self._meta_path = root / "images.json"
        self._lock_path = root / "lock"
        self._blobs = root / "blobs" / "sha256"
        self._layers = root / "layers"
        self._tmp = root / "tmp"
        # Private to edgekube (docs/security.md): the store 0700, its own files 0600.
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for d in (self._blobs.parent, self._blobs, self._layers, self._tmp):
            d.mkdir(mode=0o700, exist_ok=True)
        self._lock_path.touch(mode=0o600, exist_ok=True)
        self._clean_stale_staging()
        self._cache: tuple[tuple[int, int, int], dict[str, Any]] | None = None
        self._used: dict[str, float] = {}  # image id -> last use, written with the next index write
        # (reference, credentials) -> the pull under way and the event callbacks of its waiters
        self._inflight: dict[tuple[str, str], tuple[asyncio.Future[ImageInfo], builtins.list[EventFn]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.pulls_started = 0  # pulls that reached a registry (for tests and metrics)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._used:
            await asyncio.to_thread(self._update, lambda meta: None)
        await self.puller.close()

    # --- index --------------------------------------------------------------------------------

    def _clean_stale_staging(self) -> None:
        for entry in self._tmp.iterdir():
            pid_text = entry.name.split("-", 1)[0]
            alive = False
            if pid_text.isdigit():
                try:
                    os.kill(int(pid_text), 0)
                    alive = True  # (this process's own staging may belong to another store object)
                except ProcessLookupError:
                    alive = False
                except PermissionError:
                    alive = True
            if not alive:
                shutil.rmtree(entry, ignore_errors=True)

    def _read(self) -> dict[str, Any]:
        try:
            st = os.stat(self._meta_path)
        except FileNotFoundError:
            return _empty_meta()
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        try:
            meta: dict[str, Any] = orjson.loads(self._meta_path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise errors.ImageError(f"{self._meta_path}: the image index is corrupt ({exc}); "
                                    "move it away to start an empty store") from None
        self._cache = (key, meta)
        return meta

    @contextlib.contextmanager
    def _locked(self) -> Any:
        with open(self._lock_path, "rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _update(self, change: Callable[[dict[str, Any]], Any]) -> Any:
        """Read-modify-write of images.json under the lock (blocking: call in a thread)."""
        with self._locked():
            self._cache = None
            meta = orjson.loads(orjson.dumps(self._read()))  # a private copy to change
            result = change(meta)
            for image_id, used in self._used.items():
                rec = meta["images"].get(image_id)
                if rec is not None and used > rec.get("last_used", 0):
                    rec["last_used"] = used
            self._used.clear()
            tmp = self._meta_path.with_name(f".images.json.{os.getpid()}")
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "wb") as f:
                f.write(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._meta_path)
            dir_fd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            self._cache = None
            return result

    def list(self) -> builtins.list[ImageInfo]:
        meta = self._read()
        out = [_image_from(i, r) for i, r in meta["images"].items()]
        return sorted(out, key=lambda im: (im.names[:1] or ("~",), im.id))

    @staticmethod
    def _find(meta: Mapping[str, Any], text: str) -> tuple[str, bool] | None:
        """(image ID, whether `text` named the ID itself) for a reference, ID or ID prefix."""
        images: Mapping[str, Any] = meta["images"]
        if text in images:
            return text, True
        prefix = text.removeprefix("sha256:")
        if len(prefix) >= 4 and all(c in "0123456789abcdef" for c in prefix):
            hits = [i for i in images if _hex(i).startswith(prefix)]
            if len(hits) == 1:
                return str(hits[0]), True
        try:
            name = reference.parse(text).name()
        except errors.InvalidImageName:
            return None
        for image_id, rec in images.items():
            if name in rec.get("names", ()):
                return str(image_id), False
        return None

    def lookup(self, ref: str) -> ImageInfo | None:
        """The image a reference, a repo digest, an ID or a unique ID prefix names, if present."""
        meta = self._read()
        found = self._find(meta, ref)
        if found is None:
            return None
        info = _image_from(found[0], meta["images"][found[0]])
        return info if all(self._layer_dir(c).is_dir() for c in info.chain) else None

    def _layer_dir(self, chain_id: str) -> Path:
        return self._layers / _hex(chain_id)

    def layers(self, image: ImageInfo | str) -> builtins.list[Path]:
        """The unpacked layer directories of `image`, lowest first (overlayfs wants them reversed
        in `lowerdir=`)."""
        info = image if isinstance(image, ImageInfo) else self.lookup(image)
        if info is None:
            raise errors.ImageNotFound(f"image {image!r} is not present")
        self.mark_used(info.id)
        return [self._layer_dir(c) / "fs" for c in info.chain]

    def mark_used(self, image_id: str) -> None:
        self._used[image_id] = self.clock.now().timestamp()

    # --- ensure (pull policy, single flight, events) ------------------------------------------

    async def ensure(
        self,
        image: str,
        policy: PullPolicy | str,
        pull_secrets: Sequence[Mapping[str, Any]] = (),
        *,
        on_event: EventFn | None = None,
    ) -> ImageInfo:
        """The image `image` names, pulled if the policy says so. `pull_secrets` are the pod's
        imagePullSecrets as Secret objects."""
        emit = on_event or (lambda e: None)
        policy = PullPolicy(policy)
        ref = reference.parse(image)
        local = self.lookup(ref.name())
        if local is not None and policy != PullPolicy.ALWAYS:
            emit(PullEvent("Normal", "Pulled", f'Container image "{image}" already present on machine', image))
            self.mark_used(local.id)
            return local
        if policy == PullPolicy.NEVER:
            emit(PullEvent("Warning", "ErrImageNeverPull",
                           f'Container image "{image}" is not present with pull policy of Never', image))
            raise errors.ImageNeverPull(f'image "{image}" is not present with pull policy of Never')
        creds = credentials.from_secrets(pull_secrets)
        key = (ref.name(), hashlib.sha256(orjson.dumps([dataclasses.astuple(c) for c in creds])).hexdigest())
        emit(PullEvent("Normal", "Pulling", f'Pulling image "{image}"', image))
        started = time.monotonic()
        inflight = self._inflight.get(key)
        if inflight is None:
            inflight = self._inflight[key] = (asyncio.get_running_loop().create_future(), [])
            task = asyncio.create_task(self._pull_task(ref, creds, inflight[0], key, inflight[1]),
                                       name=f"image-pull {ref}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        future, listeners = inflight
        listeners.append(emit)
        try:
            info = await asyncio.shield(future)
        except errors.ImageError as exc:
            emit(PullEvent("Warning", "Failed", f'Failed to pull image "{image}": {exc}', image))
            emit(PullEvent("Warning", "Failed", f"Error: {exc.reason}", image))
            raise
        took = time.monotonic() - started
        emit(PullEvent("Normal", "Pulled",
                       f'Successfully pulled image "{image}" in {took:.3g}s. Image size: {info.size} bytes.', image))
        self.mark_used(info.id)
        return info

    async def _pull_task(self, ref: reference.Reference, creds: Sequence[credentials.Credential],
                         future: asyncio.Future[ImageInfo], key: tuple[str, str], listeners: builtins.list[EventFn]) -> None:
        def progress(event: PullEvent) -> None:
            for fn in list(listeners):
                try:
                    fn(event)
                except Exception:  # a listener's bug must not break the pull of the others
                    log.exception("image pull event listener failed")

        try:
            info = await self._pull(ref, creds, progress=progress)
        except BaseException as exc:
            if not future.done():
                if isinstance(exc, errors.ImageError):
                    future.set_exception(exc)
                elif isinstance(exc, asyncio.CancelledError):
                    future.set_exception(errors.PullError(f"{ref}: pull cancelled (the image store is closing)"))
                else:
                    log.exception("pull of %s failed unexpectedly", ref)
                    future.set_exception(errors.PullError(f"{ref}: {type(exc).__name__}: {exc}"))
            future.exception()  # mark retrieved: waiters may all be gone
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            future.set_result(info)
        finally:
            self._inflight.pop(key, None)

    async def _pull(self, ref: reference.Reference, creds: Sequence[credentials.Credential], *,
                    progress: EventFn) -> ImageInfo:
        self.pulls_started += 1
        source, media_type, body, top_digest = await self.puller.resolve(ref, pull_credentials=creds)
        where = f"{ref} from {source.describe()}"
        if media_type in oci.INDEX_TYPES:
            desc = oci.select_platform(oci.parse_index(body, where=where), self.platform, where=where)
            media_type, body, manifest_digest = await source.manifest(desc.digest)
        else:
            manifest_digest = top_digest
        if media_type not in oci.MANIFEST_TYPES:
            raise errors.UnsupportedMediaType(f"{where}: manifest media type {media_type!r} is not supported")
        manifest = oci.parse_manifest(body, where=where)
        names = [ref.name(), f"{ref.repository}@{top_digest}"]
        if manifest_digest != top_digest:
            names.append(f"{ref.repository}@{manifest_digest}")
        present = self.lookup(manifest.config.digest)
        if present is not None:
            # Same content under a (maybe) new name: only the index changes.
            return await asyncio.to_thread(self._commit_names, present.id, names)
        config = await source.blob_bytes(manifest.config)
        total = sum(x.size for x in manifest.layers)
        done = 0

        def count(n: int) -> None:
            nonlocal done
            done += n

        async def fetch(i: int, desc: oci.Descriptor, staging: _Staging) -> unpack.BlobSource:
            path = staging.blob_path(desc.digest)
            await source.blob_to_file(desc, path, progress=count)
            progress(PullEvent("Normal", "Progress", f"layer {i + 1}/{len(manifest.layers)} of {ref}: "
                               f"{done} of {total} bytes", str(ref), done, total))
            return path

        return await self._materialize(
            names=names, manifest=body, manifest_digest=manifest_digest, config=config,
            fetch_layer=fetch, layer_digests=[None] * len(manifest.layers), where=where,
        )

    # --- shared by pull and import ------------------------------------------------------------

    async def _materialize(
        self,
        *,
        names: Sequence[str],
        manifest: bytes,
        manifest_digest: str,
        config: bytes,
        fetch_layer: Callable[[int, oci.Descriptor, _Staging], Awaitable[unpack.BlobSource]],
        layer_digests: Sequence[str | None],
        where: str,
    ) -> ImageInfo:
        parsed = oci.parse_manifest(manifest, where=where)
        cfg = oci.parse_config(config, where=f"{where}: config {parsed.config.digest}")
        if len(cfg.diff_ids) != len(parsed.layers):
            raise errors.ContentError(f"{where}: the manifest has {len(parsed.layers)} layers, "
                                      f"the config {len(cfg.diff_ids)} diff IDs")
        if cfg.architecture and cfg.architecture != self.platform.architecture:
            log.warning("%s: image is for %s/%s, this node is %s", where, cfg.os, cfg.architecture, self.platform)
        chain = oci.chain_ids(cfg.diff_ids)
        for attempt in range(3):
            staging = await asyncio.to_thread(_Staging, self._tmp)
            try:
                missing = [i for i, c in enumerate(chain) if not self._layer_dir(c).is_dir()]
                sem = asyncio.Semaphore(_DOWNLOADS_AT_ONCE)

                async def get(i: int, staging: _Staging = staging, sem: asyncio.Semaphore = sem) -> unpack.BlobSource:
                    async with sem:
                        return await fetch_layer(i, parsed.layers[i], staging)

                sources = dict(zip(missing, await asyncio.gather(*(get(i) for i in missing)), strict=True))
                disk = 0
                for i in missing:
                    lowers = [staging.layers[c] / "fs" if c in staging.layers else self._layer_dir(c) / "fs"
                              for c in chain[:i]]
                    dest = staging.path / "layers" / _hex(chain[i])
                    (dest / "fs").mkdir(parents=True)
                    disk += await asyncio.to_thread(
                        unpack.unpack, sources[i], dest / "fs", lowers=lowers, diff_id=cfg.diff_ids[i],
                        blob_digest=layer_digests[i], where=f"{where}: layer {i} ({parsed.layers[i].digest})",
                    )
                    staging.layers[chain[i]] = dest
                    src = sources[i]
                    if isinstance(src, Path):
                        src.unlink(missing_ok=True)  # unpacked and verified: the blob is not kept
                staging.put_blob(manifest_digest, manifest)
                staging.put_blob(parsed.config.digest, config)
                record = {
                    "digest": manifest_digest,
                    "names": list(names),
                    "config": cfg.to_json(),
                    "chain": chain,
                    "size": parsed.config.size + sum(x.size for x in parsed.layers),
                    "disk_size": disk,
                    "platform": str(oci.Platform(cfg.os or "linux", cfg.architecture, cfg.variant)),
                }
                return await asyncio.to_thread(self._commit, parsed.config.digest, record, staging)
            except _Missing:
                log.info("%s: content vanished during the pull (removed concurrently); again (%d)", where, attempt + 1)
                continue
            finally:
                await asyncio.to_thread(staging.remove)
        raise errors.PullError(f"{where}: content kept vanishing while this image was written; try again")

    def _commit(self, image_id: str, record: dict[str, Any], staging: _Staging) -> ImageInfo:
        def change(meta: dict[str, Any]) -> ImageInfo:
            for chain_id in record["chain"]:
                final = self._layer_dir(chain_id)
                if final.is_dir():
                    continue
                staged = staging.layers.get(chain_id)
                if staged is None:
                    raise _Missing(chain_id)
                os.rename(staged, final)
            for digest, path in staging.blobs.items():
                final_blob = self._blobs / _hex(digest)
                if not final_blob.exists():
                    os.rename(path, final_blob)
            now = self.clock.now().timestamp()
            old = meta["images"].get(image_id)
            rec = dict(record, created=old["created"] if old else now, last_used=now)
            if old:
                rec["names"] = list(dict.fromkeys([*old.get("names", ()), *record["names"]]))
                rec["disk_size"] = max(int(old.get("disk_size", 0)), int(record["disk_size"]))
            self._claim_names(meta, image_id, record["names"])
            meta["images"][image_id] = rec
            return _image_from(image_id, rec)

        return self._update(change)  # type: ignore[no-any-return]

    def _commit_names(self, image_id: str, names: Sequence[str]) -> ImageInfo:
        def change(meta: dict[str, Any]) -> ImageInfo:
            rec = meta["images"].get(image_id)
            if rec is None:
                raise errors.PullError(f"image {image_id} was removed while it was being tagged; try again")
            self._claim_names(meta, image_id, names)
            rec["names"] = list(dict.fromkeys([*rec.get("names", ()), *names]))
            rec["last_used"] = self.clock.now().timestamp()
            return _image_from(image_id, rec)

        return self._update(change)  # type: ignore[no-any-return]

    @staticmethod
    def _claim_names(meta: dict[str, Any], image_id: str, names: Iterable[str]) -> None:
        """A tag moves to the new image (the old one keeps its other names, or none)."""
        wanted = set(names)
        for other_id, rec in meta["images"].items():
            if other_id != image_id:
                rec["names"] = [n for n in rec.get("names", ()) if n not in wanted]

    # --- import -------------------------------------------------------------------------------

    async def import_tarball(self, path: Path) -> builtins.list[ImageInfo]:
        """Import every image of an OCI-layout or docker-archive tarball; all or nothing per
        image, and an ArchiveError naming the file when the tarball is unreadable or corrupt."""
        path = Path(path)
        arch = await asyncio.to_thread(archive.Archive, path, platform=self.platform)
        try:
            cands = await asyncio.to_thread(arch.candidates)
            out = []
            for cand in cands:
                async def fetch(i: int, desc: oci.Descriptor, staging: _Staging,
                                cand: archive.Candidate = cand) -> unpack.BlobSource:
                    return cand.layer_openers[i]

                try:
                    info = await self._materialize(
                        names=[*cand.names, *(f"{reference.parse(n).repository}@{cand.repo_digest}" for n in cand.names)],
                        manifest=cand.manifest, manifest_digest=cand.manifest_digest, config=cand.config,
                        fetch_layer=fetch, layer_digests=cand.layer_digests, where=str(path),
                    )
                except errors.ArchiveError:
                    raise
                except errors.ImageError as exc:
                    raise errors.ArchiveError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) from None
                out.append(info)
            return out
        finally:
            await asyncio.to_thread(arch.close)

    async def import_dir(self, directory: Path) -> builtins.list[ImportResult]:
        """Import every tarball in `directory` not imported before (by file digest), with no
        network; a bad tarball is reported and the others still imported. For the kubelet's boot."""
        results: builtins.list[ImportResult] = []
        def tarballs() -> builtins.list[Path]:
            try:
                return sorted(p for p in directory.iterdir()
                              if p.is_file() and not p.name.startswith(".") and p.name.endswith(TARBALL_SUFFIXES))
            except FileNotFoundError:
                return []

        files = await asyncio.to_thread(tarballs)
        for n, path in enumerate(files, 1):
            digest = await asyncio.to_thread(self._file_digest, path)
            if digest in self._read()["imported"]:
                results.append(ImportResult(path, skipped=True))
                continue
            # Progress in the log: a tarball of hundreds of MB takes a while on an SD card.
            size = (await asyncio.to_thread(path.stat)).st_size
            log.info("importing image tarball %s (%d of %d, %.1f MiB)", path, n, len(files), size / (1 << 20))
            started = time.monotonic()
            try:
                images = await self.import_tarball(path)
            except errors.ImageError as exc:
                log.error("importing %s failed: %s", path, exc)
                results.append(ImportResult(path, error=str(exc)))
                continue
            ids = [i.id for i in images]

            def remember(meta: dict[str, Any], digest: str = digest, path: Path = path, ids: builtins.list[str] = ids) -> None:
                st = path.stat()
                meta["imported"][digest] = {"path": str(path), "images": ids}
                meta.setdefault("imported_files", {})[str(path)] = {
                    "sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}

            await asyncio.to_thread(self._update, remember)
            log.info("imported %s in %.1f s: %s", path, time.monotonic() - started,
                     ", ".join(t for i in images for t in i.tags) or ids)
            results.append(ImportResult(path, images=tuple(images)))
        return results

    def _file_digest(self, path: Path) -> str:
        """The file's sha256, from the index when size, mtime and inode are unchanged (a boot
        must not re-read gigabytes of tarballs it already imported)."""
        st = path.stat()
        known = self._read().get("imported_files", {}).get(str(path))
        if known and (known["size"], known["mtime_ns"], known["ino"]) == (st.st_size, st.st_mtime_ns, st.st_ino):
            return str(known["sha256"])
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return "sha256:" + h.hexdigest()

    # --- removal and GC -----------------------------------------------------------------------

    async def remove(self, ref: str) -> ImageInfo:
        """Remove a name; the image goes when its last name does, or at once when `ref` is its ID
        (or an ID prefix). Returns the image as it was."""
        def change(meta: dict[str, Any]) -> ImageInfo:
            found = self._find(meta, ref)
            if found is None:
                raise errors.ImageNotFound(f"no image {ref!r} in {self.root}")
            image_id, by_id = found
            rec = meta["images"][image_id]
            info = _image_from(image_id, rec)
            if not by_id:
                name = reference.parse(ref).name()
                repo = reference.parse(ref).repository
                rec["names"] = [n for n in rec["names"] if n != name]
                # A repo digest goes with the repository's last tag.
                if not any(n.startswith(repo + ":") for n in rec["names"]):
                    rec["names"] = [n for n in rec["names"] if not n.startswith(repo + "@")]
            if by_id or not rec["names"]:
                del meta["images"][image_id]
                self._prune(meta)
            return info

        result: ImageInfo = await asyncio.to_thread(self._update, change)
        return result

    def _prune_locked(self) -> None:
        """Prune without rewriting the index (an idle node writes nothing)."""
        with self._locked():
            self._cache = None
            self._prune(self._read())

    def _prune(self, meta: Mapping[str, Any]) -> None:
        """Delete content no image references (under the lock), except mounted layers."""
        chains = {_hex(c) for rec in meta["images"].values() for c in rec["chain"]}
        blobs = {_hex(rec["digest"]) for rec in meta["images"].values()}  # manifests
        blobs |= {_hex(i) for i in meta["images"]}  # configs (the ID is the config's digest)
        mounted = _overlay_lowers()
        for d in self._layers.iterdir():
            if d.name in chains:
                continue
            if os.path.normpath(d / "fs") in mounted:
                log.warning("layer %s is unreferenced but mounted; left for a later GC", d.name)
                continue
            shutil.rmtree(d, ignore_errors=True)
        for b in self._blobs.iterdir():
            if b.name not in blobs:
                b.unlink(missing_ok=True)

    async def gc(
        self,
        *,
        high_percent: float,
        low_percent: float,
        in_use: Callable[[ImageInfo], bool],
        min_age: float = 0.0,
    ) -> GcResult:
        """Free space when the store's filesystem is at or above `high_percent` used. Content
        left unreferenced earlier (a layer that was mounted when its image went) goes first."""
        await asyncio.to_thread(self._prune_locked)
        before = await asyncio.to_thread(self.used_percent)
        if before < high_percent:
            return GcResult((), before, before)
        now = self.clock.now().timestamp()
        used = dict(self._used)
        candidates = [
            i for i in self.list()
            if not in_use(i) and now - i.created >= min_age
        ]
        candidates.sort(key=lambda i: (max(i.last_used, used.get(i.id, 0.0)), i.created))
        removed: builtins.list[ImageInfo] = []
        after = before
        for info in candidates:
            if after <= low_percent:
                break
            if in_use(info):  # may have started meanwhile
                continue
            try:
                await self.remove(info.id)
            except errors.ImageNotFound:
                continue
            removed.append(info)
            log.info("image GC removed %s (%s), last used %s", info.id, ", ".join(info.tags) or "untagged",
                     time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(info.last_used)))
            after = await asyncio.to_thread(self.used_percent)
        return GcResult(tuple(removed), before, after)

    def used_percent(self) -> float:
        st = os.statvfs(self.root)
        total = st.f_blocks * st.f_frsize
        free = st.f_bfree * st.f_frsize
        return 100.0 * (total - free) / total if total else 0.0

