"""Which mount holds a path: the deepest mount point at or above it, from /proc/self/mounts."""

from __future__ import annotations

from pathlib import Path

MOUNTS = Path("/proc/self/mounts")


def table(mounts: Path = MOUNTS) -> list[tuple[Path, str]]:
    """(mount point, file system type) of every mount, in the kernel's order (raises OSError)."""
    out = []
    for line in mounts.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3:
            out.append((Path(fields[1].replace("\\040", " ")), fields[2]))
    return out


def holder(path: Path, mounts: list[tuple[Path, str]]) -> tuple[Path, str] | None:
    """The mount of `mounts` that holds `path` (absolute): the deepest point at or above it."""
    holders = [(point, fstype) for point, fstype in mounts if point == path or point in path.parents]
    return max(holders, key=lambda m: len(m[0].parts)) if holders else None
