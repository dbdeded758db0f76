"""Launcher for the kubelet benchmark: `edgekube server` with benchmark-only observation switched on.

    python benchmarks/kubelet_server.py [--debug LOGGER]... [--tracemalloc FILE] -- server ARGS...

It is `python -m edgekube server ARGS` with three additions, none of which changes what
the server does:
- `--debug LOGGER` sets that logger to DEBUG before the server configures logging at its own
  level (the root's), so only that logger's debug lines are printed (the kubelet benchmark reads
  `edgekube.kubelet.runtime.containers`' per-container start line this way);
- a line `<unix time> bench-launcher: edgekube imported` on stderr once `edgekube.cli` (which
  imports the whole server) is imported, to split the boot into interpreter + imports and the
  rest;
- `--tracemalloc FILE` starts tracemalloc before the imports (10 frames) and, on SIGUSR1, writes
  the traced memory grouped by the code that allocated it (see `_owner`) to FILE as JSON. It
  costs memory and time itself: only for the diagnostic run, never for a measured figure.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import sys
import sysconfig
import time
import tracemalloc
from pathlib import Path
from types import FrameType

_REPO = Path(__file__).resolve().parent.parent
_STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()
_FRAMES = 10  # enough to climb out of the import machinery; more makes the snapshot take minutes


@functools.cache
def _owner(filename: str) -> str:
    """The package that allocated: `edgekube.<sub>` for edgekube's code, the top-level name for
    third-party packages, `stdlib:<module>` for the standard library."""
    if filename.startswith("<"):
        return filename
    path = Path(filename).resolve()
    parts = path.parts
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1:]
        return rest[0].removesuffix(".py").split(".")[0] if rest else filename
    try:
        rel = path.relative_to(_REPO)
    except ValueError:
        pass
    else:
        if rel.parts[0] == "edgekube" and len(rel.parts) > 2:
            return f"edgekube.{rel.parts[1]}"
        return ".".join(rel.with_suffix("").parts)
    try:
        return f"stdlib:{path.relative_to(_STDLIB).parts[0].removesuffix('.py')}"
    except ValueError:
        return filename


def _is_import_machinery(filename: str) -> bool:
    return filename.startswith("<frozen importlib")


def _dump(path: Path) -> None:
    """Traced memory by owner: each trace is charged to the most recent frame outside the import
    machinery (a module's code objects thus go to the module that imported it)."""
    snap = tracemalloc.take_snapshot()
    owners: dict[str, list[int]] = {}
    for stat in snap.statistics("traceback"):
        frames = list(stat.traceback)  # oldest first
        chosen = next((f.filename for f in reversed(frames) if not _is_import_machinery(f.filename)),
                      frames[-1].filename if frames else "?")
        entry = owners.setdefault(_owner(chosen), [0, 0])
        entry[0] += stat.size
        entry[1] += stat.count
    traced, peak = tracemalloc.get_traced_memory()
    rows = sorted(((k, size, count) for k, (size, count) in owners.items()), key=lambda r: -r[1])
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps({"traced": traced, "peak": peak, "modules": len(sys.modules), "owners": rows}))
    os.replace(part, path)  # whole or not there


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--debug", action="append", default=[], metavar="LOGGER")
    p.add_argument("--tracemalloc", type=Path, default=None, metavar="FILE")
    p.add_argument("edgekube_args", nargs=argparse.REMAINDER)
    args = p.parse_args()
    rest = list(args.edgekube_args)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    if args.tracemalloc is not None:
        tracemalloc.start(_FRAMES)
        out: Path = args.tracemalloc

        def on_usr1(_sig: int, _frame: FrameType | None) -> None:
            _dump(out)

        signal.signal(signal.SIGUSR1, on_usr1)
    for name in args.debug:
        logging.getLogger(name).setLevel(logging.DEBUG)
    if str(_REPO) not in sys.path:
        sys.path.insert(0, str(_REPO))
    from edgekube import cli

    print(f"{time.time():.6f} bench-launcher: edgekube imported", file=sys.stderr, flush=True)
    return cli.main(rest)


if __name__ == "__main__":
    sys.exit(main())
