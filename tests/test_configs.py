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
# configs/trainer/*.yaml are fragments for `--trainer`; checked combined with full configs below.
# configs/variants/*.yaml override a full config (a second --config); checked combined with their base below.
FRAGMENT_DIRS = ("data", "eval", "eval_run", "trainer", "variants")
FULL_CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p.parent.name not in FRAGMENT_DIRS)
EVAL_RUNS = sorted((ROOT / "configs" / "eval_run").glob("*.yaml"))
DATA_FRAGMENTS = sorted((ROOT / "configs" / "data").glob("*.yaml"))
TRAINER_FRAGMENTS = sorted((ROOT / "configs" / "trainer").glob("*.yaml"))
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


@pytest.mark.parametrize("base", ["configs/clip/llm2clip4cxr.yaml", "configs/text/tiny_llama.yaml"])
@pytest.mark.parametrize("fragment", TRAINER_FRAGMENTS, ids=lambda p: p.name)
def test_trainer_fragment_parses(fragment: Path, base: str) -> None:
    cfg = _print_config(["fit", "--config", str(ROOT / base), "--trainer", str(fragment), "--print_config"])
    expected = yaml.safe_load(fragment.read_text())
    trainer = cfg["trainer"]
    for key in ("accelerator", "devices", "precision"):  # the fragment's keys win ...
        assert trainer[key] == expected[key], key
    strategy = expected["strategy"]
    if isinstance(strategy, dict):
        assert trainer["strategy"]["class_path"] == strategy["class_path"]
        for key, value in strategy["init_args"].items():
            assert trainer["strategy"]["init_args"][key] == value, key
    base_trainer = yaml.safe_load((ROOT / base).read_text())["trainer"]
    for key in ("max_epochs", "max_steps", "gradient_clip_val", "use_distributed_sampler"):  # ... others stay
        if key in base_trainer and key not in expected:
            assert trainer[key] == base_trainer[key], key


def test_paper_config_variants() -> None:
    base = str(ROOT / "configs" / "clip" / "llm2clip4cxr.yaml")
    cached = _print_config(["fit", "--config", base, "--config",
                            str(ROOT / "configs/variants/llm2clip4cxr_cached.yaml"), "--print_config"])
    text = cached["model"]["init_args"]["text"]["init_args"]
    assert text["lora"] is None and text["use_cache"] is True and text["cache_dir"]
    assert cached["data"]["init_args"]["shuffle_prob"] == 0.0
    assert cached["model"]["init_args"]["embed_dim"] == 1280  # the rest is the paper's
    bucketed = _print_config(["fit", "--config", base, "--config",
                              str(ROOT / "configs/variants/llm2clip4cxr_bucketed.yaml"), "--print_config"])
    assert bucketed["data"]["init_args"]["length_bucketing"]["window_batches"] == 64
    assert bucketed["model"]["init_args"]["text"]["init_args"]["lora"]["r"] == 16


def test_trainer_fragments_exist() -> None:
    assert {p.stem for p in TRAINER_FRAGMENTS} >= {"cpu", "gpu", "ddp", "fsdp", "deepspeed"}


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


def test_llm2vec4cxr_paper_configs() -> None:
    """The paper-scale LLM2VEC4CXR configs: MNTP then supervised, 48 per device x 4, lr 2e-4, warm-up 300, bf16,
    full fine-tuning, latent attention, the authors' instructions, pairs built from a MIMIC source."""
    text = ROOT / "configs" / "text"
    mntp = _print_config(["fit", "--config", str(text / "llm2vec4cxr_mntp.yaml"), "--print_config"])
    sup = _print_config(["fit", "--config", str(text / "llm2vec4cxr.yaml"), "--print_config"])
    m1, m2, d2, t2 = (mntp["model"]["init_args"], sup["model"]["init_args"], sup["data"]["init_args"],
                      sup["trainer"])
    assert m1["stage"] == "MNTP" and "Llama-3.2-1B" in m1["model_name_or_path"] and m1["lora"] is None
    assert m2["model_name_or_path"] == m1["export_dir"]  # stage 2 starts from stage 1's export
    assert (m2["stage"], m2["lora"], m2["pooling"], m2["init_pooling"]) == ("SUPERVISED", None, "LATENT_ATTENTION",
                                                                             True)
    assert (m2["lr"], m2["warmup_steps"], m2["loss_scale"], m2["max_length"]) == (2e-4, 300, 50.0, 512)
    assert (t2["devices"], d2["batch_size"], t2["precision"], t2["strategy"]) == (4, 48, "bf16-mixed", "ddp")
    for cfg in (mntp, sup):
        data = cfg["data"]["init_args"]
        assert cfg["data"]["class_path"].endswith("PairDataModule") and data["instruction_set"] == "AUTHORS"
        assert [s["class_path"] for s in data["sources"]] == ["cxr.data.sources.mimic_cxr.MimicCxrSource"]
        assert data["manifest"] is None and data["train_pairs"] is None and cfg["trainer"]["precision"] == "bf16-mixed"
