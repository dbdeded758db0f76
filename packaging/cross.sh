#!/usr/bin/env bash
# Prepare this x86_64 Debian machine to build edgekube for ARCH (arm64: Pi 3/4/5 on a 64-bit OS,
# armv7: Pi 2/3 on 32-bit Raspberry Pi OS), then print the environment packaging/build.sh needs.
#
# Usage: packaging/cross.sh ARCH       (called by packaging/build.sh when ARCH is not the machine's)
#
# The fast path (see packaging/nuitka_cross.py for why it is sound): Nuitka's Python stage runs
# natively under Debian's python3.11 (x86_64), and its C stage compiles natively too, with
# Debian's cross compiler, against the target's Debian libpython3.11 (multiarch). The extension
# modules and libraries are the target's: Debian's arm packages and the target's wheels of exactly
# the versions in the build venv (`pip download --platform`). Nothing runs under emulation but
# the finished binary's `edgekube version`, through qemu-user (binfmt_misc).
#
# Made here (build/cross/, reused by later builds):
#   build/cross/venv/            Debian python3.11 + Nuitka + edgekube's runtime dependencies
#   build/cross/<arch>/site/     the target's wheels of the same versions, unpacked
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ARCH="${1:?usage: packaging/cross.sh arm64|armv7}"
PY=3.11
case "$ARCH" in
    arm64) triplet=aarch64-linux-gnu; deb=arm64; qemu=aarch64
           plats=(manylinux_2_36_aarch64 manylinux_2_28_aarch64 manylinux_2_26_aarch64 manylinux_2_17_aarch64 manylinux2014_aarch64) ;;
    armv7) triplet=arm-linux-gnueabihf; deb=armhf; qemu=arm
           plats=(manylinux_2_36_armv7l manylinux_2_31_armv7l manylinux_2_28_armv7l manylinux_2_17_armv7l manylinux2014_armv7l) ;;
    *) echo "packaging/cross.sh: ARCH must be arm64 or armv7, not '$ARCH'" >&2; exit 2 ;;
esac
say() { echo "packaging/cross.sh: $*" >&2; }

# --- Debian packages: the cross compiler, the target's libpython, qemu-user --------------------
if ! dpkg --print-foreign-architectures | grep -qx "$deb"; then
    say "adding the $deb architecture to dpkg"
    dpkg --add-architecture "$deb"
    apt-get update -q >&2
fi
pkgs=(gcc-"$triplet" "libpython$PY-dev:$deb" "libstdc++6:$deb" "libffi-dev:$deb" "libyaml-dev:$deb" "python$PY-venv" "python$PY-dev" patchelf binutils qemu-user-static)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    apt-get install -y -q "${missing[@]}" >&2 || { apt-get update -q >&2 && apt-get install -y -q "${missing[@]}" >&2; }
fi

# --- qemu-user through binfmt_misc, for running the result (`edgekube version`, the tests) ------
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/register" ]; then
    mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || say "binfmt_misc cannot be mounted: $ARCH binaries will not run here"
fi
if [ -e "$binfmt/register" ] && [ ! -e "$binfmt/qemu-$qemu" ] && [ -f "/usr/lib/binfmt.d/qemu-$qemu.conf" ]; then
    cat "/usr/lib/binfmt.d/qemu-$qemu.conf" > "$binfmt/register" || say "could not register qemu-$qemu with binfmt_misc"
fi

# --- the build venv: Debian's python3.11, the versions of the repo's .venv ----------------------
cross="$REPO/build/cross"
venv="$cross/venv"
mkdir -p "$cross"
if [ ! -x "$venv/bin/python" ] || [ "$venv/.stamp" -ot "$REPO/pyproject.toml" ]; then
    say "build venv $venv (Debian python$PY)"
    rm -rf "$venv"
    "/usr/bin/python$PY" -m venv "$venv"
    constraints="$cross/constraints.txt"
    if [ -x "$REPO/.venv/bin/pip" ]; then
        "$REPO/.venv/bin/pip" freeze --exclude-editable | grep -v '^#' > "$constraints"
    else
        : > "$constraints"
    fi
    "$venv/bin/pip" install -q -c "$constraints" nuitka zstandard >&2
    "$venv/bin/pip" install -q -c "$constraints" "$REPO" >&2
    "$venv/bin/pip" uninstall -q -y edgekube >&2  # the build compiles the tree (PYTHONPATH), not a copy
    touch "$venv/.stamp"
fi

# --- the target's wheels: every dependency that carries compiled code, same version --------------
site="$cross/$ARCH/site"
if [ ! -d "$site" ] || [ "$site" -ot "$venv/.stamp" ]; then
    say "the $ARCH wheels of the build venv's compiled dependencies -> $site"
    reqs="$cross/$ARCH/compiled.txt"
    mkdir -p "$cross/$ARCH"
    "$venv/bin/python" - "$ARCH" > "$reqs" <<'EOF'
import importlib.metadata as md
import sys

# Distributions with compiled code, not the build tools; on armv7 edgekube goes without google-re2
# and cel-python (no armv7 wheels: pyproject.toml's markers).
skip = {"nuitka", "zstandard", "pip", "setuptools", "wheel"}
if sys.argv[1] == "armv7":
    skip |= {"google-re2", "cel-python"}
for d in md.distributions():
    name = d.metadata["Name"].lower().replace("_", "-")
    if name in skip:
        continue
    if any(str(f).endswith(".so") for f in d.files or []):
        print(f"{name}=={d.version}")
EOF
    wheels="$cross/$ARCH/wheels"
    rm -rf "$wheels" "$site.tmp"
    platform_args=()
    for p in "${plats[@]}"; do platform_args+=(--platform "$p"); done
    while read -r req; do
        if "$venv/bin/pip" download -q --only-binary=:all: --no-deps --python-version "$PY" --implementation cp \
            --abi "cp${PY/./}" --abi abi3 --abi none "${platform_args[@]}" -d "$wheels" "$req" >/dev/null 2>&1; then
            continue
        fi
        # No wheel for the target on PyPI (PyYAML, lmdb, msgpack, cffi on armv7): built here from
        # the sdist with the cross compiler, against the target's Python build settings (Debian
        # ships them: _sysconfigdata for each architecture of libpython3.11-stdlib).
        say "no $ARCH wheel of $req on PyPI: cross-compiling its sdist"
        CC="$triplet-gcc" LDSHARED="$triplet-gcc -shared" _PYTHON_HOST_PLATFORM="linux-${plats[0]##*_}" \
            _PYTHON_SYSCONFIGDATA_NAME="_sysconfigdata__$triplet" \
            "$venv/bin/pip" wheel -q --no-deps --no-binary "${req%%==*}" -w "$wheels" "$req" >&2
    done < "$reqs"
    mkdir -p "$site.tmp"
    for w in "$wheels"/*.whl; do
        "$venv/bin/python" -m zipfile -e "$w" "$site.tmp"
    done
    rm -rf "$site"
    mv "$site.tmp" "$site"
fi

# For packaging/build.sh: eval "$(packaging/cross.sh ARCH)"
printf 'PYTHON=%q\nexport CC=%q\nexport EDGEKUBE_CROSS_TRIPLET=%q\nexport EDGEKUBE_CROSS_SITE=%q\n' \
    "$venv/bin/python" "$triplet-gcc" "$triplet" "$site"
