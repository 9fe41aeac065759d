"""The import graph of ``cxr``: package-level cycles and function-local imports (issue 14's acceptance check).

Run ``python scripts/import_graph.py`` from the repository root. It prints the package graph (``cxr.<pkg>``
level), any cycle between packages or between modules, and every import of a ``cxr`` module made inside a
function. ``tests/test_import_graph.py`` asserts the same properties.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Import:
    """One ``cxr`` import: importing module, imported module, line, and whether it sits inside a function."""

    source: str
    target: str
    line: int
    local: bool


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.Import | ast.ImportFrom, modules: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif node.module is None or node.level:
        return []
    else:  # ``from cxr.x import y`` imports cxr.x.y when y is a module, else cxr.x
        names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                 for a in node.names]
    return [n for n in names if n == "cxr" or n.startswith("cxr.")]


def cxr_imports(root: Path = ROOT) -> list[Import]:
    """Every import of a ``cxr`` module by a ``cxr`` module (``TYPE_CHECKING`` blocks excluded)."""
    files = sorted((root / "cxr").rglob("*.py"))
    modules = {module_name(f, root) for f in files}
    found: list[Import] = []
    for f in files:
        src = module_name(f, root)
        tree = ast.parse(f.read_text(encoding="utf-8"))
        local_lines = {n.lineno for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
        typing_lines = {n.lineno for blk in ast.walk(tree) if isinstance(blk, ast.If)
                        and "TYPE_CHECKING" in ast.unparse(blk.test) for n in ast.walk(blk)
                        if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno not in typing_lines:
                found += [Import(src, t, node.lineno, node.lineno in local_lines) for t in _targets(node, modules)]
    return found


def package_of(module: str) -> str:
    """``cxr.<first component>``: the floor a module lives on (``cxr.models.text.tower`` -> ``cxr.models``)."""
    return ".".join(module.split(".")[:2])


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return cycles


def graphs(imports: list[Import]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(package graph, module graph); both include function-local imports."""
    packages: dict[str, set[str]] = {}
    modules: dict[str, set[str]] = {}
    for imp in imports:
        modules.setdefault(imp.source, set()).add(imp.target)
        a, b = package_of(imp.source), package_of(imp.target)
        if a != b:
            packages.setdefault(a, set()).add(b)
    return packages, modules


def main() -> int:
    imports = cxr_imports()
    packages, modules = graphs(imports)
    print("package graph:")
    for p in sorted(packages):
        print(f"  {p} -> {', '.join(sorted(packages[p]))}")
    pkg_cycles, mod_cycles = find_cycles(packages), find_cycles(modules)
    print("package cycles:", pkg_cycles or "none")
    print("module cycles:", mod_cycles or "none")
    local = [i for i in imports if i.local]
    print(f"function-local cxr imports: {len(local)}")
    for i in sorted(set(local), key=lambda i: (i.source, i.line)):
        print(f"  {i.source}:{i.line} -> {i.target}")
    return 1 if pkg_cycles or mod_cycles else 0


if __name__ == "__main__":
    sys.exit(main())
