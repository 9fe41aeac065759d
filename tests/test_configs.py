"""Every YAML under configs/ parses with the CLI (``--print_config``) and resolves its class paths."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# configs/data/*.yaml are fragments for `--data`; they are checked combined with a full config below.
# configs/eval/*.yaml are eval.py dataset specs (a DataModule or a DatasetSource); checked by eval.py's parser.
# configs/eval_run/*.yaml are eval.py run configs (--config), parsed by eval.py's parser.
FULL_CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml")
                      if p.parent.name not in ("data", "eval", "eval_run"))
EVAL_RUNS = sorted((ROOT / "configs" / "eval_run").glob("*.yaml"))
DATA_FRAGMENTS = sorted((ROOT / "configs" / "data").glob("*.yaml"))
EVAL_SPECS = sorted((ROOT / "configs" / "eval").glob("*.yaml"))


def _print_config(args: list[str]) -> dict:
    from cxr.cli import cli_main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        cli_main(args)
    assert exc.value.code in (0, None), out.getvalue()
    return yaml.safe_load(out.getvalue())


@pytest.mark.parametrize("config", FULL_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_parses(config: Path) -> None:
    cfg = _print_config(["fit", "--config", str(config), "--print_config"])
    assert cfg["model"]["class_path"].startswith("cxr."), cfg["model"]
    assert cfg["data"]["class_path"].startswith("cxr."), cfg["data"]


@pytest.mark.parametrize("fragment", DATA_FRAGMENTS, ids=lambda p: p.name)
def test_data_fragment_parses(fragment: Path) -> None:
    base = ROOT / "configs" / "demo.yaml"
    cfg = _print_config(["fit", "--config", str(base), "--data", str(fragment), "--print_config"])
    assert cfg["data"]["class_path"].startswith("cxr."), cfg["data"]


@pytest.mark.parametrize("spec", EVAL_SPECS, ids=lambda p: p.name)
def test_eval_spec_parses(spec: Path) -> None:
    from cxr.evaluation.datasets import EvalDatasetSpec, parse_eval_spec

    _, parsed = parse_eval_spec(EvalDatasetSpec(spec.stem, spec))
    assert parsed.obj.class_path.startswith("cxr."), parsed.obj


@pytest.mark.parametrize("config", EVAL_RUNS, ids=lambda p: p.name)
def test_eval_run_config_parses(config: Path) -> None:
    """eval.py --config: its keys are eval.py's options, and every dataset spec it names parses."""
    from cxr.evaluation.cli import build_parser
    from cxr.evaluation.datasets import EvalDatasetSpec, parse_eval_spec

    args = build_parser().parse_args(["--config", str(config), "--checkpoint", "x.ckpt"])
    assert args.data and args.device == "auto"
    for text in args.data:
        spec = EvalDatasetSpec.parse(text)
        parse_eval_spec(EvalDatasetSpec(spec.name, ROOT / spec.config))


def test_readme_data_example_parses(tmp_path: Path) -> None:
    import re

    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    data_blocks = [b for b in blocks if b.lstrip("#").split("\n", 1)[-1].startswith("class_path: cxr.data.")
                   or "\nclass_path: cxr.data." in b]
    assert data_blocks, "the README shows a data config"
    for i, block in enumerate(data_blocks):
        fragment = tmp_path / f"readme_{i}.yaml"
        fragment.write_text(block)
        base = ROOT / "configs" / "demo.yaml"
        cfg = _print_config(["fit", "--config", str(base), "--data", str(fragment), "--print_config"])
        assert cfg["data"]["init_args"]["sources"], cfg["data"]


def test_there_are_configs() -> None:
    assert (ROOT / "configs" / "demo.yaml") in FULL_CONFIGS
    assert EVAL_SPECS
