"""Permission bits for files a process keeps private: set once at start, fixing older installs.

Files are created with their final mode where the code creating them can say so; this is the
sweep that brings directories and files left by an earlier version (or created by a library that
takes no mode) to it. A mode is only changed when it differs, so a boot on a correct tree writes
nothing. Symbolic links are never followed, and nothing outside the given paths is touched.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)


def ensure_mode(path: Path, mode: int) -> bool:
    """Set `path`'s permission bits to `mode` unless they are already; False if it is missing
    or a symbolic link."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        return False
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)
        log.info("permissions of %s set to %o (were %o)", path, mode, stat.S_IMODE(st.st_mode))
    return True


def restrict_tree(root: Path, *, dir_mode: int = 0o700, file_mode: int = 0o600, recursive: bool = True,
                  keep: frozenset[str] = frozenset()) -> None:
    """`root` and the directories under it to `dir_mode`, regular files to `file_mode`; names
    in `keep` (relative to `root`, e.g. `layers` or `ca.crt`) are left as they are, with
    whatever is under them. Only `root`'s own entries unless `recursive`."""
    if not ensure_mode(root, dir_mode):
        return
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel = here.relative_to(root)
        for name in list(dirnames):
            sub = here / name
            if str(rel / name) in keep:
                dirnames.remove(name)
                continue
            ensure_mode(sub, dir_mode)
        for name in filenames:
            if str(rel / name) in keep:
                continue
            p = here / name
            if stat.S_ISREG(os.lstat(p).st_mode):
                ensure_mode(p, file_mode)
        if not recursive:
            break
