"""Nuitka user plugin: the C stage of an edgekube build for another architecture (arm64, armv7).

Nuitka does not cross-compile: it writes C for the Python that runs it and compiles that C for
the same machine. Its Python stage does not depend on the CPU, though, as long as the Python that
runs it is the same version and build as the target's: Debian's python3.11 on x86_64 and Debian's
python3.11 for arm64 (multiarch, `libpython3.11-dev:arm64`) come from one source package. So
packaging/build.sh runs Nuitka natively under Debian's python3.11 with CC set to Debian's cross
compiler, and this plugin changes the three places where the host's binaries would otherwise get
in:

- the static libpython that the program links: the target's (`config-3.11-<triplet>`);
- the extension modules that the standalone folder copies from the build venv (x86_64 `.so`):
  each is replaced by the target's build of the same module at the same version, from the target's
  wheels (`pip download --platform`, unpacked into EDGEKUBE_CROSS_SITE) or from Debian's
  lib-dynload for the target; where the target's wheel of that version has none (a pure-Python
  wheel), the module is left out and the package's Python fallback runs;
- the shared libraries those modules need (libssl, libffi, ...): the host's are dropped and the
  target's copied in from its multiarch directories, as a closure over DT_NEEDED.

This runs before the onefile payload is packed, so the onefile carries the target's files only;
the plugin fails the build if any ELF file of another machine is left in the folder.

Set by packaging/build.sh: EDGEKUBE_CROSS_TRIPLET (aarch64-linux-gnu, arm-linux-gnueabihf) and
EDGEKUBE_CROSS_SITE (the unpacked target wheels).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from nuitka.plugins.PluginBase import NuitkaPluginBase
from nuitka.utils import StaticLibraries

TRIPLET = os.environ.get("EDGEKUBE_CROSS_TRIPLET", "")
SITE = Path(os.environ.get("EDGEKUBE_CROSS_SITE", "/nonexistent"))
PY = "3.11"

# ELF e_machine values
_MACHINES = {"aarch64-linux-gnu": 183, "arm-linux-gnueabihf": 40}
# Provided by the target's C library: never copied into the folder.
_SYSTEM = ("libc.so", "libm.so", "libdl.so", "libpthread.so", "librt.so", "libutil.so", "ld-linux")


def _machine(path: Path) -> int | None:
    """The ELF e_machine of `path`, None if it is no ELF file."""
    try:
        with path.open("rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return int.from_bytes(head[18:20], "big" if head[5] == 2 else "little")


def _needed(path: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return [line.split("[", 1)[1].split("]", 1)[0] for line in out.splitlines() if "(NEEDED)" in line]


def _module_key(rel: Path) -> tuple[str, str]:
    """(folder, module) of an extension module's path: `aiohttp/_http_parser.cpython-311-x86_64-
    linux-gnu.so` and `aiohttp/_http_parser.so` are both ("aiohttp", "_http_parser")."""
    return (str(rel.parent), rel.name.split(".", 1)[0])


class EdgekubeCross(NuitkaPluginBase):
    plugin_name = "edgekube-cross"
    plugin_desc = "Links and packs an edgekube build for another architecture (packaging/build.sh ARCH=...)."

    def __init__(self) -> None:
        if TRIPLET not in _MACHINES:
            self.sysexit(f"EDGEKUBE_CROSS_TRIPLET must be one of {sorted(_MACHINES)}, not {TRIPLET!r}")
        if not SITE.is_dir():
            self.sysexit(f"EDGEKUBE_CROSS_SITE={SITE}: no such folder (the target's unpacked wheels)")
        self.machine = _MACHINES[TRIPLET]
        libpython = Path(f"/usr/lib/python{PY}/config-{PY}-{TRIPLET}/libpython{PY}-pic.a")
        if not libpython.exists():
            self.sysexit(f"{libpython} missing: apt-get install libpython{PY}-dev:{_dpkg_arch()}")
        # Nuitka asks this once, when it writes the C stage's options; the target's libpython
        # is linked instead of the host's.
        StaticLibraries._static_lib_python_path = str(libpython)
        self.lib_dirs = [Path(f"/usr/lib/{TRIPLET}"), Path(f"/lib/{TRIPLET}")]
        self.modules: dict[tuple[str, str], Path] = {}
        for root in (SITE, Path(f"/usr/lib/python{PY}/lib-dynload")):
            for so in root.rglob("*.so"):
                if _machine(so) == self.machine:
                    rel = so.relative_to(root)
                    if root != SITE:  # lib-dynload modules are top-level modules
                        rel = Path(rel.name)
                    self.modules.setdefault(_module_key(rel), so)

    def onStandaloneDistributionFinished(self, dist_dir: str) -> None:
        dist = Path(dist_dir)
        main = [p for p in dist.iterdir() if p.is_file() and _machine(p) == self.machine and not p.name.endswith(".so")
                and ".so." not in p.name]
        replaced = dropped = 0
        for path in sorted(dist.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            m = _machine(path)
            if m is None or m == self.machine:
                continue
            rel = path.relative_to(dist)
            target = self.modules.get(_module_key(rel))
            if target is not None:
                shutil.copyfile(target, path)
                replaced += 1
            elif _is_library(rel):
                path.unlink()  # a host library; the closure below brings the target's
                dropped += 1
            elif rel.parent != Path(".") and (SITE / rel.parent).is_dir():
                # The target's wheel of this very version ships no such extension (pure-Python
                # wheels of propcache and pendulum on armv7): the package's own fallback runs.
                path.unlink()
                dropped += 1
            else:
                self.sysexit(f"no {TRIPLET} build of {rel} (add its wheel to the target's site: {SITE})")
        copied = self._closure(dist)
        strays = [str(p.relative_to(dist)) for p in dist.rglob("*") if p.is_file() and _machine(p) not in
                  (None, self.machine)]
        if strays:
            self.sysexit(f"files of another machine left in the build: {strays}")
        if not main:
            self.sysexit("the program itself was not built for the target (is CC the cross compiler?)")
        self.info(f"{TRIPLET}: {replaced} extension modules replaced, {dropped} host libraries dropped, "
                  f"{copied} target libraries copied")

    def _closure(self, dist: Path) -> int:
        """Copy into the folder's top every library that its ELF files need and the target's
        C library does not provide; extension modules find them through their RPATH."""
        copied = 0
        todo = [p for p in dist.rglob("*") if p.is_file() and _machine(p) == self.machine]
        while todo:
            for name in _needed(todo.pop()):
                if name.startswith(_SYSTEM) or (dist / name).exists():
                    continue
                source = next((d / name for d in self.lib_dirs if (d / name).exists()), None)
                if source is None:
                    self.sysexit(f"{name}: not found in {[str(d) for d in self.lib_dirs]} (install its :{_dpkg_arch()} package)")
                shutil.copyfile(source.resolve(), dist / name)
                todo.append(dist / name)
                copied += 1
        for so in dist.rglob("*.so"):
            if _machine(so) == self.machine and so.parent != dist:
                up = os.path.relpath(dist, so.parent)
                subprocess.run(["patchelf", "--set-rpath", f"$ORIGIN/{up}", str(so)], check=True)
        return copied


def _is_library(rel: Path) -> bool:
    """A shared library copied as a dependency (libfoo.so.N at the folder's top or in a wheel's
    `.libs` folder), not an extension module."""
    return rel.name.startswith("lib") and (len(rel.parts) == 1 or rel.parts[0].endswith(".libs"))


def _dpkg_arch() -> str:
    return {"aarch64-linux-gnu": "arm64", "arm-linux-gnueabihf": "armhf"}.get(TRIPLET, "?")
