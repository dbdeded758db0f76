#!/usr/bin/env bash
# Build the single-file `edgekube` binary with Nuitka: dist/edgekube.
#
# Usage: packaging/build.sh            (from anywhere; uses the repo's .venv unless PYTHON is set)
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
# Other architectures (arm64 for Pi 4/5, armv7 for Pi 2/3) are NOT built here. The plan: run
# this same script inside a Debian container of the target arch under qemu-user-static
# (binfmt_misc), e.g. `docker run --platform linux/arm64 debian:12 ...` or a debootstrap
# --arch=arm64 chroot, with the repo mounted, after `make .venv`. Nuitka does not
# cross-compile: the C compiler and the Python it embeds must be the target's. Expect the build
# to be 5-10x slower under emulation; ccache (mount ~/.ccache) keeps rebuilds cheap.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
JOBS="${JOBS:-$(nproc)}"
LTO="${EDGEKUBE_LTO:-no}"
OUT_DIR="$REPO/build/nuitka"
DIST="$REPO/dist"

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
    --lto="$LTO" \
    --jobs="$JOBS" \
    --assume-yes-for-downloads \
    --output-dir="$OUT_DIR" \
    --output-filename=edgekube \
    --remove-output \
    edgekube/__main__.py </dev/null

install -m 0755 "$OUT_DIR/edgekube" "$DIST/edgekube"
end=$(date +%s)
size=$(stat -c %s "$DIST/edgekube")
echo "packaging/build.sh: built dist/edgekube ($((size / 1024 / 1024)) MiB) in $((end - start)) s"
"$DIST/edgekube" version
