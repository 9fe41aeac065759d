"""The package layout of issue 14: floors, no cycles, and ARCHITECTURE.md's concept→file table matches the tree."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
import_graph = importlib.util.module_from_spec(_spec)
sys.modules["import_graph"] = import_graph  # dataclasses look their module up there
_spec.loader.exec_module(import_graph)

#: package -> the packages it may import (lower floors only)
ALLOWED = {
    "cxr.labels": set(),
    "cxr.distributed": set(),
    "cxr.llm_client": set(),
    "cxr.records": {"cxr.labels"},
    "cxr.reports": {"cxr.labels", "cxr.records"},
    "cxr.losses": {"cxr.distributed"},
    "cxr.metrics": {"cxr.labels", "cxr.distributed", "cxr.records"},
    "cxr.callbacks": {"cxr.labels", "cxr.records"},
    "cxr.data": {"cxr.labels", "cxr.records", "cxr.reports", "cxr.distributed", "cxr.llm_client"},
}


def test_no_cycles_between_packages_or_modules_even_counting_function_local_imports():
    packages, modules = import_graph.graphs(import_graph.cxr_imports())
    assert import_graph.find_cycles(packages) == []
    # function-local imports are in the module graph too, so none of them can be hiding a cycle
    assert import_graph.find_cycles(modules) == []


def test_lower_floors_import_nothing_above_them():
    packages, _ = import_graph.graphs(import_graph.cxr_imports())
    for package, allowed in ALLOWED.items():
        assert packages.get(package, set()) <= allowed, (package, packages.get(package, set()) - allowed)


def test_find_cycles_reports_a_planted_cycle():
    assert import_graph.find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_architecture_table_names_every_module_and_only_existing_paths():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    table = text[text.index("## Concept → file"):]
    named = set(re.findall(r"`(cxr/[\w/]+(?:\.py)?/?)`", table))
    for path in named:
        assert (ROOT / path).exists(), f"ARCHITECTURE.md names {path}, which does not exist"
    # a folder row may list its files by bare name: `cxr/data/sources/` (`base.py`, ...)
    rows = [line for line in table.splitlines() if line.startswith("|")]
    for f in sorted((ROOT / "cxr").rglob("*.py")):
        rel = f.relative_to(ROOT).as_posix()
        if f.name == "__init__.py" or "/synthetic/" in rel:
            continue
        folder = rel.rsplit("/", 1)[0] + "/"
        listed = rel in named or any(f"`{folder}`" in r and f"`{f.name}`" in r for r in rows)
        assert listed, f"{rel} is missing from ARCHITECTURE.md's concept → file table"
