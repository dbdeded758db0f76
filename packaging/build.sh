#!/usr/bin/env bash
# Build the single-file `edgekube` binary with Nuitka: dist/edgekube.
#
# Usage: packaging/build.sh            (from anywhere; uses the repo's .venv unless PYTHON is set)
#        ARCH=arm64 packaging/build.sh (or armv7: see below)
# Env:   PYTHON=...        interpreter that has Nuitka and edgekube's runtime deps
#        EDGEKUBE_LTO=yes  link-time optimisation (smaller/faster binary, much slower build)
#        JOBS=N            parallel C compile jobs (default: all cores)
#
# Design:
# - We compile edgekube/__main__.py and follow every import, so the binary carries the whole
#   package plus its runtime deps (aiohttp, lmdb, msgpack, orjson, yaml, cryptography, jsonpatch)
#   and a Python runtime; nothing needs to be installed on the device. Secrets' AES-GCM calls
#   OpenSSL through ctypes (edgekube/_cogs/aesgcm.py) on the libcrypto that `_ssl` links, which
#   Nuitka copies next to `_ssl` as its dependency: nothing to add here for it.
# - Test and dev-only modules (kubernetes client, pytest, mypy, setuptools, ...) are cut with
#   --nofollow-import-to: they are in the build venv but must never reach a device, and
#   following them would double the build time.
# - --include-package=edgekube so that modules reached only through importlib (registry tables,
#   plugins) are compiled too; likewise dns.rdtypes: dnspython loads each record type's module
#   by name when it first meets the type (the cluster DNS, edgekube/net/dns*.py).
# - --include-package-data=edgekube: the systemd unit and the default config (edgekube/_data/),
#   which `edgekube install` writes; the repo's systemd/ and configs/ files link to them.
# - --include-package-data=celpy: cel-python reads its grammar (cel.lark) from its package dir
#   when the first CEL expression is compiled (edgekube/api/registry/cel.py).
# - Onefile unpacks into a fresh temp dir per start (Nuitka's default spec); the bootstrap
#   forwards SIGTERM/SIGINT to the payload, so systemd's KillMode=process stop works.
# - The build time goes into the binary (edgekube/_cogs/_built.py, removed again afterwards): the
#   server never issues a certificate dated before it, on a board whose clock still reads 1970
#   (edgekube/_cogs/timefloor.py). SOURCE_DATE_EPOCH, when set, is used instead (reproducible).
# - ccache (Debian package) is picked up by Nuitka from PATH; a rebuild with unchanged C code
#   then takes a fraction of the first build.
#
# - ARCH=arm64 (Pi 3/4/5, 64-bit OS) or ARCH=armv7 (Pi 2/3, 32-bit OS) builds for that board on
#   this x86_64 machine into dist/edgekube-linux-<arch>, at native speed: packaging/cross.sh
#   prepares Debian's cross compiler, the target's libpython and the target's wheels, and
#   packaging/nuitka_cross.py (a Nuitka plugin) links and packs the target's files instead of the
#   host's. Nothing is emulated but the final `edgekube version` (qemu-user). On armv7 there are
#   no google-re2 and cel-python wheels: the binary goes without them (pyproject.toml).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "$(uname -m)" in aarch64) host=arm64 ;; armv7l|armv8l) host=armv7 ;; *) host="$(uname -m)" ;; esac
ARCH="${ARCH:-$host}"
JOBS="${JOBS:-$(nproc)}"
LTO="${EDGEKUBE_LTO:-no}"
DIST="$REPO/dist"
cross_flags=()
if [ "$ARCH" = "$host" ]; then
    OUT_DIR="$REPO/build/nuitka"
    TARGET="$DIST/edgekube"
else
    cross_env="$(bash "$REPO/packaging/cross.sh" "$ARCH")"  # a failure there stops the build here
    eval "$cross_env"  # PYTHON, CC, EDGEKUBE_CROSS_*
    OUT_DIR="$REPO/build/nuitka-$ARCH"
    TARGET="$DIST/edgekube-linux-$ARCH"
    cross_flags=(--user-plugin="$REPO/packaging/nuitka_cross.py")
    if [ "$ARCH" = armv7 ]; then
        cross_flags+=(--nofollow-import-to=re2 --nofollow-import-to=celpy)
    fi
fi
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"

if ! "$PYTHON" -m nuitka --version >/dev/null 2>&1; then
    echo "packaging/build.sh: Nuitka is not importable by $PYTHON (run 'make .venv' or pip install nuitka)" >&2
    exit 2
fi
for tool in gcc patchelf; do
    if ! command -v "$tool" >/dev/null; then
        echo "packaging/build.sh: '$tool' not found; Nuitka needs it (apt-get install $tool)" >&2
        exit 2
    fi
done
if command -v ccache >/dev/null; then
    # Hash paths relative to the repo, so a fresh clone at another path (CI) still hits the cache.
    export CCACHE_BASEDIR="$REPO" CCACHE_NOHASHDIR=1
    echo "packaging/build.sh: using ccache ($(command -v ccache))"
else
    echo "packaging/build.sh: ccache not found; building without a compile cache"
fi

mkdir -p "$OUT_DIR" "$DIST"
cd "$REPO"
BUILT="$REPO/edgekube/_cogs/_built.py"
trap 'rm -f "$BUILT"' EXIT
printf '"""Written by packaging/build.sh: when this binary was built (edgekube._cogs.timefloor)."""\n\nBUILD_EPOCH = %d\n' \
    "${SOURCE_DATE_EPOCH:-$(date +%s)}" >"$BUILT"
start=$(date +%s)
# PYTHONPATH makes this tree's edgekube win over any other installed copy.
# </dev/null: Nuitka never waits on a prompt (CI has no stdin).
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m nuitka \
    --onefile \
    --follow-imports \
    --include-package=edgekube \
    --include-package=dns.rdtypes \
    --include-package-data=celpy \
    --include-package-data=edgekube \
    --nofollow-import-to=kubernetes \
    --nofollow-import-to=pytest \
    --nofollow-import-to=_pytest \
    --nofollow-import-to=pytest_asyncio \
    --nofollow-import-to=mypy \
    --nofollow-import-to=mypyc \
    --nofollow-import-to=setuptools \
    --nofollow-import-to=pkg_resources \
    --nofollow-import-to=distutils \
    --nofollow-import-to=pip \
    --nofollow-import-to=nuitka \
    --nofollow-import-to=tests \
    --nofollow-import-to=benchmarks \
    --nofollow-import-to=IPython \
    --nofollow-import-to=tkinter \
    "${cross_flags[@]}" \
    --lto="$LTO" \
    --jobs="$JOBS" \
    --assume-yes-for-downloads \
    --output-dir="$OUT_DIR" \
    --output-filename=edgekube \
    --remove-output \
    edgekube/__main__.py </dev/null

install -m 0755 "$OUT_DIR/edgekube" "$TARGET"
if [ "$TARGET" = "$DIST/edgekube" ]; then ln -f "$TARGET" "$DIST/edgekube-linux-$ARCH"; fi
end=$(date +%s)
size=$(stat -c %s "$TARGET")
echo "packaging/build.sh: built ${TARGET#"$REPO/"} for $ARCH ($((size / 1024 / 1024)) MiB) in $((end - start)) s"
"$TARGET" version  # another architecture's binary runs through qemu-user (cross.sh registered it)
