"""Shared helpers: temp dirs on the repo's disk, percentiles, a ~500-byte ConfigMap, machine info."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def temp_dir(label: str) -> Path:
    """A fresh directory on the same filesystem as the repo (so fsync costs are the real ones)."""
    repo_dev = REPO.stat().st_dev
    for base in (Path("/var/tmp"), Path(tempfile.gettempdir())):
        try:
            if base.is_dir() and base.stat().st_dev == repo_dev and os.access(base, os.W_OK):
                return Path(tempfile.mkdtemp(prefix=f"edgekube-bench-{label}-", dir=base))
        except OSError:
            continue
    fallback = REPO / ".bench-tmp"
    fallback.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{label}-", dir=fallback))


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    parent = path.parent
    if parent.name == ".bench-tmp":
        try:
            parent.rmdir()
        except OSError:
            pass


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of `values` (unsorted is fine); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


_FILLER = "x" * 330


def configmap(name: str, namespace: str = "default") -> dict[str, Any]:
    """A ConfigMap-like object of about 500 bytes when serialised."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": "bench", "tier": "edge"},
        },
        "data": {"config.yaml": _FILLER, "mode": "benchmark"},
    }


def _run(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def disk_info(path: Path) -> str:
    """`source (fstype, rotational|ssd)` for the filesystem holding `path`."""
    line = _run(["df", "--output=source,fstype", str(path)]).splitlines()
    if len(line) < 2:
        return "unknown"
    parts = line[1].split()
    source = parts[0]
    fstype = parts[1] if len(parts) > 1 else "?"
    kind = ""
    dev = Path(source).name
    for candidate in (dev, dev.rstrip("0123456789"), dev.rstrip("0123456789").rstrip("p")):
        rot = Path(f"/sys/block/{candidate}/queue/rotational")
        if candidate and rot.exists():
            kind = "rotational" if rot.read_text().strip() == "1" else "non-rotational"
            break
    return f"{source} ({fstype}{', ' + kind if kind else ''})"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(data_path: Path) -> dict[str, str]:
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "disk (data dir)": f"{data_path}: {disk_info(data_path)}",
    }
