"""Reading upstream Kubernetes sources for the schema generators (gen_apischema, gen_pbschema).

`root` is a checkout or a bare git dir (read at HEAD).
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def read(root: Path, path: str) -> str:
    if (root / path).exists():
        return (root / path).read_text()
    return subprocess.run(["git", "--git-dir", str(root), "show", f"HEAD:{path}"], check=True,
                          capture_output=True, text=True).stdout


def type_sources(root: Path, prefix: str) -> list[str]:
    """The hand-written Go files of a package (no tests, no generated or conversion code)."""
    if (root / prefix).is_dir():
        names = [str(p.relative_to(root)) for p in (root / prefix).glob("*.go")]
    else:
        out = subprocess.run(["git", "--git-dir", str(root), "ls-tree", "--name-only", "HEAD", prefix + "/"],
                             check=True, capture_output=True, text=True).stdout
        names = out.split()
    return sorted(
        n for n in names
        if n.endswith(".go") and not n.endswith("_test.go")
        and not any(word in n.rsplit("/", 1)[-1] for word in ("generated", "conversion", "deepcopy"))
    )
