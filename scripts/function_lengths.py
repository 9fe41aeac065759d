"""List the longest functions of the project (issue 14's acceptance: <= 60 lines outside the synthetic drawing).

``python scripts/function_lengths.py [ROOT] [--top N] [--limit L]`` prints ``lines  file:line  name`` for the
``N`` longest functions under ``ROOT/cxr``, ``train.py`` and ``eval.py``; the exit status is 1 when a function
outside the exempt drawing code is longer than ``L`` lines. A function's length counts from its ``def`` (or
first decorator) to its last line, docstring included, nested functions counted once in their parent.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

#: The synthetic phantom's drawing code: long, linear sequences of geometry, exempt by the issue.
EXEMPT = ("cxr/data/synthetic/phantom.py",)


def function_lengths(root: Path) -> list[tuple[int, str, str]]:
    """``(lines, "file:line", qualified name)`` for every function, longest first."""
    files = sorted((root / "cxr").rglob("*.py")) + [root / n for n in ("train.py", "eval.py") if (root / n).exists()]
    out: list[tuple[int, str, str]] = []
    for f in files:
        rel = f.relative_to(root).as_posix()
        tree = ast.parse(f.read_text(encoding="utf-8"))

        def walk(node: ast.AST, prefix: str, rel: str = rel) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                    out.append((child.end_lineno - start + 1, f"{rel}:{start}", prefix + child.name))
                    walk(child, f"{prefix}{child.name}.")
                elif isinstance(child, ast.ClassDef):
                    walk(child, f"{prefix}{child.name}.")
                else:
                    walk(child, prefix)

        walk(tree, "")
    return sorted(out, key=lambda r: (-r[0], r[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--limit", type=int, default=60)
    args = ap.parse_args(argv)
    rows = function_lengths(Path(args.root))
    for n, where, name in rows[: args.top]:
        print(f"{n:4d}  {where}  {name}")
    over = [r for r in rows if r[0] > args.limit and not r[1].startswith(EXEMPT)]
    print(f"{len(over)} function(s) over {args.limit} lines outside {', '.join(EXEMPT)}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
