"""Functions stay <= 60 lines outside the synthetic phantom's drawing code (scripts/function_lengths.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    path = ROOT / "scripts" / "function_lengths.py"
    spec = importlib.util.spec_from_file_location("function_lengths", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_function_over_60_lines(capsys) -> None:
    status = _script().main([str(ROOT), "--top", "5"])
    assert status == 0, capsys.readouterr().out


def test_the_check_counts_decorators_docstrings_and_nesting(tmp_path) -> None:
    """A 61-line function fails the check, 60 lines pass; nested functions count once, in their parent."""
    script = _script()

    def write(n_lines: int) -> None:
        body = "\n".join(f"        x{i} = {i}" for i in range(n_lines - 4))
        (tmp_path / "cxr").mkdir(exist_ok=True)
        (tmp_path / "cxr" / "m.py").write_text(
            'import functools\n\n\n@functools.cache\ndef f():\n    """Doc."""\n    def inner():\n'
            f"{body}\n", "utf-8")

    write(60)
    rows = script.function_lengths(tmp_path)
    assert [(n, name) for n, _, name in rows] == [(60, "f"), (57, "f.inner")]
    assert script.main([str(tmp_path)]) == 0
    write(61)
    assert script.main([str(tmp_path)]) == 1
