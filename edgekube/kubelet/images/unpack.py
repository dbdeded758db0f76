"""Unpack one layer tarball into its own directory, ready to be an overlayfs lower dir.

Each layer gets a fresh, empty directory (the store names it by chain ID and shares it between
images). Whiteouts are written as overlayfs reads them, exactly as containerd's overlay applier
does: `.wh.NAME` becomes a character device 0/0 named NAME (owned like the tar entry), and
`.wh..wh..opq` marks its directory opaque with the xattr `trusted.overlay.opaque=y`; other
`.wh..wh.*` entries (aufs bookkeeping) are dropped.

Safety: nothing is ever written outside the directory. Entry names that are absolute or climb
with `..` are refused, and so is an entry whose parent path goes through a symlink (the classic
"symlink to /etc, then etc/passwd" escape: parents are checked with lstat, and files are created
with O_EXCL|O_NOFOLLOW, so a symlink is never followed). Hard links must name a path inside the
layer that reaches no symlink on the way; a link to a file of a lower layer (legal in layers made
by diffing) is materialised as a copy of that file, found the same careful way. A parent
directory the tarball implies without listing it copies the attributes of the directory below. Symlinks
themselves are stored verbatim: their targets mean something only inside the container, where an
absolute target is rooted at the container's root. A refused entry refuses the whole layer.
`trusted.overlay.*` xattrs carried by the tarball are dropped, so a layer cannot smuggle overlay
metadata (redirects, opaque marks) past the rules above.

Verification: the uncompressed stream is hashed as it is read, and must equal the config's diff
ID; a truncated or corrupt stream (bad gzip, short tar) is a ContentError naming the layer.
This is blocking work: callers run it in a thread.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from edgekube.kubelet.images import errors

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class _HashingReader:
    """A read-only stream that hashes what passes through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


class _Extractor:
    def __init__(self, dest: Path, *, lowers: Sequence[Path], where: str) -> None:
        self.dest = dest
        self.lowers = list(reversed(lowers))  # nearest lower first
        self.where = where
        self.root = os.geteuid() == 0
        self.known_dirs: set[str] = {""}
        self.dirs: dict[str, tarfile.TarInfo] = {}
        self.size = 0

    # --- paths --------------------------------------------------------------------------------

    def _parts(self, name: str, *, what: str) -> list[str]:
        if name.startswith("/"):
            raise errors.UnsafeLayerError(f"{self.where}: {what} {name!r} is an absolute path")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise errors.UnsafeLayerError(f"{self.where}: {what} {name!r} climbs out with '..'")
        return parts

    def _ensure_dir(self, parts: Sequence[str], *, name: str) -> Path:
        """The directory `parts` inside dest, created as needed, never through a symlink."""
        cur = self.dest
        for i, comp in enumerate(parts):
            rel = "/".join(parts[: i + 1])
            cur = cur / comp
            if rel in self.known_dirs:
                continue
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                os.mkdir(cur, 0o755)
                self._like_lower(cur, parts[: i + 1])
                self.known_dirs.add(rel)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise errors.UnsafeLayerError(f"{self.where}: entry {name!r} goes through the symlink {rel!r}")
            if not stat.S_ISDIR(st.st_mode):
                raise errors.ContentError(f"{self.where}: entry {name!r} needs {rel!r} to be a directory, it is a file")
            self.known_dirs.add(rel)
        return cur

    def _like_lower(self, path: Path, parts: Sequence[str]) -> None:
        """A directory the tarball implies but does not list takes the attributes of the same
        directory below: in overlayfs the top-most copy's owner and mode are what the container
        sees, and a layer that only whites out `a/x` must not turn `a` into root's 0755."""
        for lower in self.lowers:
            found = self._find(lower, parts)
            if found is None:
                continue
            st = os.lstat(found)
            if stat.S_ISDIR(st.st_mode):
                if self.root:
                    os.lchown(path, st.st_uid, st.st_gid)
                os.chmod(path, stat.S_IMODE(st.st_mode))
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
            return

    @staticmethod
    def _find(base: Path, parts: Sequence[str]) -> Path | None:
        """`parts` under `base` if every parent is a real directory; None otherwise."""
        cur = base
        for comp in parts[:-1]:
            cur = cur / comp
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                return None
            if not stat.S_ISDIR(st.st_mode):
                return None
        target = cur / parts[-1]
        return target if os.path.lexists(target) else None

    def _clear(self, target: Path, rel: str, *, keep_dir: bool) -> None:
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            shutil.rmtree(target)
            self.known_dirs = {d for d in self.known_dirs if d != rel and not d.startswith(rel + "/")}
            self.dirs = {d: m for d, m in self.dirs.items() if d != rel and not d.startswith(rel + "/")}
        else:
            os.unlink(target)

    # --- metadata -----------------------------------------------------------------------------

    def _owner(self, target: Path | int, m: tarfile.TarInfo) -> None:
        if not self.root:
            return
        if isinstance(target, int):
            os.fchown(target, m.uid, m.gid)
        else:
            os.lchown(target, m.uid, m.gid)

    def _xattrs(self, target: Path, m: tarfile.TarInfo) -> None:
        for key, value in m.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr."):]
            if name.startswith("trusted.overlay."):
                continue
            try:
                os.setxattr(target, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
            except OSError as exc:
                log.debug("%s: cannot set xattr %s on %s: %s", self.where, name, m.name, exc)

    # --- entries ------------------------------------------------------------------------------

    def entry(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = self._parts(m.name, what="entry")
        if not parts:
            return  # the layer's root: the container's root takes its attributes from elsewhere
        base = parts[-1]
        rel = "/".join(parts)
        parent = self._ensure_dir(parts[:-1], name=m.name)
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parts, parent, m)
            return
        target = parent / base
        self._clear(target, rel, keep_dir=m.isdir())
        if m.isdir():
            if not os.path.isdir(target):
                os.mkdir(target, 0o700)
            self.known_dirs.add(rel)
            self.dirs[rel] = m
            self._owner(target, m)
            self._xattrs(target, m)
            return
        if m.isreg():
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                src = tar.extractfile(m)
                if src is not None:
                    shutil.copyfileobj(src, out, 1 << 20)
                self._owner(out.fileno(), m)
                os.fchmod(out.fileno(), m.mode & 0o7777)
            self.size += m.size
        elif m.issym():
            os.symlink(m.linkname, target)
            self._owner(target, m)
        elif m.islnk():
            self._hardlink(target, m)
            return  # a hard link shares the inode's metadata: nothing more to set
        elif m.ischr() or m.isblk():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(target, kind | (m.mode & 0o7777), os.makedev(m.devmajor, m.devminor))
            self._owner(target, m)
            os.chmod(target, m.mode & 0o7777)
        elif m.isfifo():
            os.mkfifo(target, m.mode & 0o7777)
            self._owner(target, m)
            os.chmod(target, m.mode & 0o7777)
        else:
            log.warning("%s: skipping entry %r of unsupported tar type %r", self.where, m.name, m.type)
            return
        self._xattrs(target, m)
        os.utime(target, (m.mtime, m.mtime), follow_symlinks=False)

    def _whiteout(self, parts: list[str], parent: Path, m: tarfile.TarInfo) -> None:
        base = parts[-1]
        if base == OPAQUE:
            os.setxattr(parent, OPAQUE_XATTR, b"y")
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # aufs metadata (.wh..wh.plnk, .wh..wh.aufs): meaningless to overlayfs
        name = base[len(WHITEOUT_PREFIX):]
        if not name or name in (".", ".."):
            raise errors.UnsafeLayerError(f"{self.where}: whiteout {m.name!r} names no file")
        target = parent / name
        rel = "/".join([*parts[:-1], name])
        self._clear(target, rel, keep_dir=False)
        os.mknod(target, stat.S_IFCHR, os.makedev(0, 0))
        self._owner(target, m)

    def _hardlink(self, target: Path, m: tarfile.TarInfo) -> None:
        parts = self._parts(m.linkname, what=f"hard link {m.name!r} ->")
        if not parts:
            raise errors.UnsafeLayerError(f"{self.where}: hard link {m.name!r} points at the layer's root")
        source = self._find(self.dest, parts)
        if source is not None:
            if os.path.isdir(source) and not os.path.islink(source):
                raise errors.UnsafeLayerError(f"{self.where}: hard link {m.name!r} -> {m.linkname!r} names a directory")
            os.link(source, target, follow_symlinks=False)
            return
        for lower in self.lowers:
            found = self._find(lower, parts)
            if found is None:
                continue
            st = os.lstat(found)
            if stat.S_ISREG(st.st_mode):
                shutil.copy2(found, target, follow_symlinks=False)
                if self.root:
                    os.lchown(target, st.st_uid, st.st_gid)
                    os.chmod(target, stat.S_IMODE(st.st_mode))
                return
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                break  # whited out below: the link target does not exist
            raise errors.UnsafeLayerError(f"{self.where}: hard link {m.name!r} -> {m.linkname!r} names a non-file")
        raise errors.UnsafeLayerError(
            f"{self.where}: hard link {m.name!r} -> {m.linkname!r} names nothing inside the image"
        )

    def finish(self) -> None:
        for rel in sorted(self.dirs, key=lambda r: r.count("/"), reverse=True):
            m = self.dirs[rel]
            path = self.dest / rel
            os.chmod(path, m.mode & 0o7777)
            os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)


BlobSource = Path | Callable[[], IO[bytes]]


def unpack(blob: BlobSource, dest: Path, *, lowers: Sequence[Path], diff_id: str | None,
           blob_digest: str | None = None, where: str) -> int:
    """Unpack `blob` (a tar, or a gzip'd tar; a path or a function opening a seekable stream)
    into the empty directory `dest`; return the bytes of regular files written. `lowers` are the
    unpacked layers below, lowest first. `diff_id` and `blob_digest`, when given, are checked
    against the uncompressed and the raw stream."""
    try:
        with (open(blob, "rb") if isinstance(blob, Path) else blob()) as f:
            raw = _HashingReader(f)
            head = f.read(4)
            f.seek(0)
            if head == _ZSTD_MAGIC:
                raise errors.UnsupportedMediaType(f"{where}: zstd-compressed layers are not supported")
            stream: IO[bytes] | _HashingReader = (
                gzip.GzipFile(fileobj=raw, mode="rb") if head.startswith(_GZIP_MAGIC) else raw  # type: ignore[call-overload]
            )
            plain = _HashingReader(stream)  # type: ignore[arg-type]
            extractor = _Extractor(dest, lowers=lowers, where=where)
            with tarfile.open(fileobj=plain, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    extractor.entry(tar, member)
            plain.drain()
            raw.drain()
            extractor.finish()
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise errors.ContentError(f"{where}: layer is corrupt or truncated ({exc or type(exc).__name__})") from None
    if blob_digest is not None:
        got = "sha256:" + raw.hash.hexdigest()
        if got != blob_digest:
            raise errors.ContentError(f"{where}: content has digest {got}, expected {blob_digest}")
    if diff_id is not None:
        got = "sha256:" + plain.hash.hexdigest()
        if got != diff_id:
            raise errors.ContentError(f"{where}: uncompressed content has digest {got}, the image config says {diff_id}")
    return extractor.size
