#!/usr/bin/env python3
"""Enforce edgekube's import layering and the absence of import cycles.

Layers, low to high (DESIGN §8.1; a module may import its own layer and any lower one):

    0  edgekube (the package __init__) and edgekube.config: imported by anyone; they import
       nothing from edgekube except each other
    1  _cogs
    2  store
    3  api
    4  client
    5  controllers, scheduler, kubelet, net: same rank, and none may import another
    6  runtime
    7  cli, __main__

How: parse every `.py` under `edgekube/` with `ast` (no import, so a broken module is still
checked), collect `import` and `from ... import` statements anywhere in the file (function-level
imports count: a lazy import is still a dependency), resolve relative imports, and map each
target to its layer by the first name after `edgekube.`. A top-level name that is in no layer is
an error too, so a new package must be placed in the table here before it lands.

Cycles are found on the module graph (Tarjan's strongly connected components). Imports under
`if TYPE_CHECKING:` count for layering (a type from a higher layer is still a dependency on it)
but not for cycles, since they never run.

Exit status: 0 clean, 1 with a list of `file:line: what is wrong` on stderr.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "edgekube"

# top-level name under edgekube -> (rank, group). Same group: free to import each other.
# Same rank, different group: forbidden (the peers of rank 5 stay independent).
LAYERS: dict[str, tuple[int, str]] = {
    "": (0, "base"),  # edgekube/__init__.py
    "config": (0, "base"),
    "_cogs": (1, "_cogs"),
    "store": (2, "store"),
    "api": (3, "api"),
    "client": (4, "client"),
    "controllers": (5, "controllers"),
    "scheduler": (5, "scheduler"),
    "kubelet": (5, "kubelet"),
    "net": (5, "net"),
    "runtime": (6, "runtime"),
    "cli": (7, "cli"),
    "secrets_cli": (7, "cli"),
    "checkconfig": (7, "cli"),
    "install": (7, "cli"),
    "__main__": (7, "cli"),
}


@dataclass(frozen=True)
class Import:
    """One `edgekube.*` import found in a module."""

    target: str  # resolved dotted module (or package) name
    line: int
    type_checking: bool


@dataclass
class Module:
    name: str
    path: Path
    imports: list[Import] = field(default_factory=list)


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int
    message: str

    def render(self, *, root: Path) -> str:
        try:
            shown = self.path.relative_to(root)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}: {self.message}"


def module_name(path: Path, *, root: Path) -> str:
    """Dotted name of a file under `root` (the directory holding the `edgekube` package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_key(name: str) -> str:
    """The layer-table key of a dotted name: '' for the package itself, else its first part."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _resolve_relative(*, module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def collect_imports(tree: ast.Module, *, module: str, is_package: bool, known: set[str]) -> list[Import]:
    """Every `edgekube.*` import in `tree`, resolved to the most specific known module."""
    found: list[Import] = []

    def visit(node: ast.AST, *, tc: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, tc=True)
            for child in node.orelse:
                visit(child, tc=tc)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    found.append(Import(alias.name, node.lineno, tc))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve_relative(module=module, is_package=is_package, level=node.level,
                                         target=node.module)
            else:
                base = node.module or ""
            if base == PACKAGE or base.startswith(PACKAGE + "."):
                for alias in node.names:
                    # `from edgekube.store import store` names a submodule when one exists;
                    # otherwise it is an attribute of `base`.
                    sub = f"{base}.{alias.name}"
                    found.append(Import(sub if sub in known else base, node.lineno, tc))
        for sub_node in ast.iter_child_nodes(node):
            visit(sub_node, tc=tc)

    visit(tree, tc=False)
    return found


def load(root: Path) -> tuple[dict[str, Module], list[Problem]]:
    """Parse every module of the package under `root`."""
    pkg = root / PACKAGE
    paths = sorted(p for p in pkg.rglob("*.py") if "__pycache__" not in p.parts)
    modules = {module_name(p, root=root): Module(module_name(p, root=root), p) for p in paths}
    known = set(modules)
    problems: list[Problem] = []
    for mod in modules.values():
        try:
            tree = ast.parse(mod.path.read_bytes(), filename=str(mod.path))
        except SyntaxError as exc:
            problems.append(Problem(mod.path, exc.lineno or 0, f"cannot parse: {exc.msg}"))
            continue
        mod.imports = collect_imports(tree, module=mod.name, is_package=mod.path.name == "__init__.py",
                                      known=known)
    return modules, problems


def _describe(key: str) -> str:
    rank, group = LAYERS[key]
    return f"{group}, rank {rank}"


def layering_problems(modules: dict[str, Module]) -> list[Problem]:
    problems: list[Problem] = []
    for mod in modules.values():
        src_key = layer_key(mod.name)
        if src_key not in LAYERS:
            problems.append(Problem(
                mod.path, 1,
                f"{mod.name}: '{PACKAGE}.{src_key}' is in no layer; add it to LAYERS in tools/check_layers.py",
            ))
            continue
        src_rank, src_group = LAYERS[src_key]
        for imp in mod.imports:
            dst_key = layer_key(imp.target)
            if dst_key not in LAYERS:
                problems.append(Problem(
                    mod.path, imp.line,
                    f"{mod.name} imports {imp.target}: '{PACKAGE}.{dst_key}' is in no layer",
                ))
                continue
            dst_rank, dst_group = LAYERS[dst_key]
            if dst_group == src_group:
                continue
            why = ""
            if src_rank == 0:
                why = "the base modules (edgekube, edgekube.config) import nothing else from edgekube"
            elif dst_rank > src_rank:
                why = "a lower layer may not import a higher one"
            elif dst_rank == src_rank:
                why = "peer layers may not import each other"
            if why:
                problems.append(Problem(
                    mod.path, imp.line,
                    f"{mod.name} ({_describe(src_key)}) imports {imp.target} ({_describe(dst_key)}): {why}",
                ))
    return problems


def find_cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Each import cycle once, as a closed path `[a, b, ..., a]` (runtime imports only)."""
    graph: dict[str, list[str]] = {
        name: sorted({i.target for i in mod.imports if not i.type_checking and i.target in modules})
        for name, mod in modules.items()
    }
    # Tarjan's SCC, iterative so deep packages cannot hit the recursion limit.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, int]] = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            recurse = False
            edges = graph[node]
            while i < len(edges):
                nxt = edges[i]
                i += 1
                if nxt not in index:
                    work.append((node, i))
                    work.append((nxt, 0))
                    recurse = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if recurse:
                continue
            if low[node] == index[node]:
                comp: list[str] = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1 or node in graph[node]:
                    sccs.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return [_cycle_path(comp, graph=graph) for comp in sccs]


def _cycle_path(comp: list[str], *, graph: dict[str, list[str]]) -> list[str]:
    """One concrete cycle through the component's first module (BFS back to it)."""
    members = set(comp)
    start = comp[0]
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier: list[str] = []
        for node in frontier:
            for nxt in graph[node]:
                if nxt not in members:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [*reversed(path), start]
                if nxt not in prev:
                    prev[nxt] = node
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    return [*comp, comp[0]]


def check(root: Path) -> list[Problem]:
    """All layering and cycle problems of the package under `root`."""
    if not (root / PACKAGE / "__init__.py").is_file():
        return [Problem(root, 0, f"no {PACKAGE}/__init__.py under {root}")]
    modules, problems = load(root)
    problems.extend(layering_problems(modules))
    for cycle in find_cycles(modules):
        problems.append(Problem(modules[cycle[0]].path, 1, "import cycle: " + " -> ".join(cycle)))
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Check edgekube's import layers and cycles.")
    ap.add_argument("root", nargs="?", type=Path, default=Path(__file__).resolve().parent.parent,
                    help="directory that holds the edgekube package (default: this repo)")
    args = ap.parse_args(argv)
    root: Path = args.root.resolve()
    problems = check(root)
    if problems:
        print(f"check_layers: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print("  " + p.render(root=root), file=sys.stderr)
        print("layers, low to high: base(edgekube, config) < _cogs < store < api < client < "
              "controllers|scheduler|kubelet|net < runtime < cli", file=sys.stderr)
        return 1
    count = sum(1 for p in (root / PACKAGE).rglob("*.py") if "__pycache__" not in p.parts)
    print(f"check_layers: {count} modules, layering and cycles OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
