#!/bin/sh
# edgekube's installer, shipped in each release tarball beside the binary.
#
#   ./install.sh [--root DIR] [--no-start]       install (or upgrade) and start edgekube
#   ./install.sh --uninstall [--purge]           stop it and remove all it made (data kept unless --purge)
#
# It checks the tarball's files against SHA256SUMS and the machine's architecture against the
# binary's, then hands over to the binary itself (`edgekube install` / `edgekube uninstall`),
# which carries the systemd unit and the default config.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
if ! sha256sum --check --quiet --strict SHA256SUMS; then
    echo "install.sh: the files do not match SHA256SUMS: download the release again" >&2
    exit 1
fi
want=$(cat ARCH)
have=$(uname -m)
case "$have" in aarch64|arm64) have=arm64 ;; armv7l|armv7|armhf|armv8l) have=armv7 ;; x86_64|amd64) have=x86_64 ;; esac
if [ "$want" != "$have" ]; then
    echo "install.sh: this release is for $want, this machine is $have: download edgekube-*-linux-$have.tar.gz" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run it as root (it installs a system service)" >&2
    exit 1
fi
if [ "${1:-}" = "--uninstall" ]; then
    shift
    exec "$here/edgekube" uninstall "$@"
fi
exec "$here/edgekube" install --binary "$here/edgekube" "$@"
