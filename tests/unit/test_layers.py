"""tools/check_layers.py keeps the tree layered and cycle-free, and really catches violations.

The first test runs the checker on this repository (the promise CI relies on); the others build
tiny synthetic `edgekube` trees in a temp dir to prove each rule can fail, so a checker that
silently accepts everything cannot pass.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
CHECKER = REPO / "tools" / "check_layers.py"


def run_checker(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECKER), str(root)], capture_output=True, text=True,
                          timeout=60, check=False)


def make_tree(root: Path, files: dict[str, str]) -> Path:
    """An `edgekube` package under `root` with the given module sources (paths under edgekube/)."""
    pkg = root / "edgekube"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""pkg"""\n')
    for rel, src in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(pkg).parents:
            init = pkg / parent / "__init__.py"
            if not init.exists():
                init.write_text("")
        path.write_text(src)
    return root


def test_repository_tree_obeys_layers_and_has_no_cycles() -> None:
    result = run_checker(REPO)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_downward_imports_and_base_modules_are_accepted(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "config.py": "import edgekube\n",
        "store/log.py": "from edgekube import config\nfrom edgekube._cogs import clock\n",
        "_cogs/clock.py": "",
        "api/server.py": "from edgekube.store import log\nfrom . import errors\nfrom ..store import log as l2\n",
        "api/errors.py": "",
        "cli.py": "from edgekube import runtime\n",
        "runtime.py": "from edgekube.kubelet import agent\nfrom edgekube.net import proxy\n",
        "kubelet/agent.py": "from edgekube.client import local\n",
        "net/proxy.py": "from edgekube.api import errors\n",
        "client/local.py": "from edgekube.api import server\n",
        "__main__.py": "from edgekube import cli\n",
    })
    result = run_checker(root)
    assert result.returncode == 0, result.stderr


def test_lower_layer_importing_higher_one_fails_naming_file_line_and_layers(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "store/log.py": '"""doc"""\n\nfrom edgekube.api import errors\n',
        "api/errors.py": "",
    })
    result = run_checker(root)
    assert result.returncode == 1
    assert "edgekube/store/log.py:3:" in result.stderr
    assert "edgekube.api.errors (api, rank 3)" in result.stderr
    assert "lower layer may not import a higher one" in result.stderr


def test_relative_import_upward_is_resolved_and_fails(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "store/log.py": "from ..client import local\n",
        "client/local.py": "",
    })
    result = run_checker(root)
    assert result.returncode == 1
    assert "edgekube.client.local" in result.stderr


def test_function_level_import_counts(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "_cogs/tasks.py": "def f() -> None:\n    from edgekube import runtime\n",
        "runtime.py": "",
    })
    result = run_checker(root)
    assert result.returncode == 1
    assert "_cogs/tasks.py:2:" in result.stderr


def test_peer_layers_may_not_import_each_other(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "kubelet/agent.py": "from edgekube.net import bridge\n",
        "net/bridge.py": "",
    })
    result = run_checker(root)
    assert result.returncode == 1
    assert "peer layers may not import each other" in result.stderr


def test_base_modules_import_nothing_else_from_edgekube(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "config.py": "from edgekube._cogs import clock\n",
        "_cogs/clock.py": "",
    })
    result = run_checker(root)
    assert result.returncode == 1
    assert "edgekube/config.py:1:" in result.stderr


def test_package_in_no_layer_fails(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"addons/charts.py": ""})
    result = run_checker(root)
    assert result.returncode == 1
    assert "'edgekube.addons' is in no layer" in result.stderr


def test_import_cycle_within_a_layer_is_reported_as_a_path(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "store/a.py": "from edgekube.store import b\n",
        "store/b.py": "from edgekube.store import c\n",
        "store/c.py": "from edgekube.store import a\n",
    })
    result = run_checker(root)
    assert result.returncode == 1
    assert ("import cycle: edgekube.store.a -> edgekube.store.b -> edgekube.store.c -> edgekube.store.a"
            in result.stderr)


def test_type_checking_only_import_is_not_a_cycle(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "store/a.py": "from edgekube.store import b\n",
        "store/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from edgekube.store import a\n",
    })
    result = run_checker(root)
    assert result.returncode == 0, result.stderr


def test_type_checking_import_still_counts_for_layering(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "store/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from edgekube.api import x\n",
        "api/x.py": "",
    })
    result = run_checker(root)
    assert result.returncode == 1
    assert "edgekube/store/a.py:3:" in result.stderr
