#!/usr/bin/env bash
# Package dist/edgekube (built by `make binary`) as a release tarball:
#
#   dist/release/edgekube-<version>-linux-<arch>.tar.gz
#     edgekube-<version>-linux-<arch>/
#       edgekube  edgekube.service  config.yaml  install.sh  ARCH  README  SHA256SUMS
#   dist/release/SHA256SUMS          (of every tarball in dist/release)
#
# The architecture is read from the binary's own ELF header (a binary built for arm64 is
# packaged as arm64, whatever this machine is). Usage: packaging/release.sh [BINARY]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${1:-$REPO/dist/edgekube}"
if [ ! -x "$BIN" ]; then
    echo "packaging/release.sh: $BIN is missing: run 'make binary' first" >&2
    exit 2
fi
# e_machine at offset 18 (little-endian on every target): 0x3e x86_64, 0xb7 aarch64, 0x28 arm.
machine=$(od -An -tx1 -j18 -N2 "$BIN" | tr -d ' \n')
case "$machine" in
    3e00) arch=x86_64 ;;
    b700) arch=arm64 ;;
    2800) arch=armv7 ;;
    *) echo "packaging/release.sh: $BIN is for an ELF machine 0x$machine that edgekube does not ship" >&2; exit 2 ;;
esac
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$REPO/pyproject.toml" | head -1)
name="edgekube-$version-linux-$arch"
out="$REPO/dist/release"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/$name" "$out"
install -m 0755 "$BIN" "$work/$name/edgekube"
install -m 0644 "$REPO/edgekube/_data/edgekube.service" "$work/$name/edgekube.service"
install -m 0644 "$REPO/edgekube/_data/config.yaml" "$work/$name/config.yaml"
install -m 0755 "$REPO/packaging/install.sh" "$work/$name/install.sh"
echo "$arch" > "$work/$name/ARCH"
cat > "$work/$name/README" <<TXT
edgekube $version for Linux $arch: Kubernetes for devices at the edge, in one binary.

    sudo ./install.sh            # check the files, install, enable and start (edgekube install)
    sudo ./install.sh --uninstall [--purge]
    ./edgekube check-config      # can this machine run it, with the fix for each problem

Then: export KUBECONFIG=/var/lib/edgekube/kubeconfig.yaml; kubectl get nodes
TXT
(cd "$work/$name" && sha256sum edgekube edgekube.service config.yaml install.sh ARCH README > SHA256SUMS)
tar -C "$work" --owner=0 --group=0 --numeric-owner -czf "$out/$name.tar.gz" "$name"
(cd "$out" && sha256sum -- *.tar.gz > SHA256SUMS)
echo "$out/$name.tar.gz ($(du -h "$out/$name.tar.gz" | cut -f1))"
