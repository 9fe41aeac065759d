"""The demo pipeline end to end, small: synthetic world -> train.py fit -> eval.py (fresh processes).

A real learning check: the seeded demo model, trained briefly, retrieves the held-out studies' reports far
better than chance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _chance import chance_levels
from _demo_config import ROOT, demo_config

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}}
    env.update(HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout + proc.stderr


def _chance(name: str, spec: Path) -> dict[str, float]:
    from cxr.evaluation.datasets import EvalDatasetSpec, build_eval_datamodule

    dm = build_eval_datamodule(EvalDatasetSpec(name, spec))
    dm.setup("test")
    return chance_levels(dm.test_dataloader())


def test_demo_trains_and_beats_chance_on_held_out_sets(tmp_path, synthetic_dataset) -> None:
    """configs/demo.yaml, smaller (600 studies, 96 px, 8 epochs), through train.py and eval.py.

    Measured (seeded, repeatable): held-out test split of the training world, 117 studies: i2t R@5 0.145
    (chance 0.043), mean rank 36.7 (chance ≈ 59); held-out Open-I-layout world, 147 studies: R@5 ≈ 0.10
    (chance 0.034), mean rank ≈ 40 (chance ≈ 74).
    """
    data = synthetic_dataset("csv", num_studies=600, seed=0, image_size=128)
    config = demo_config(tmp_path, data / "manifest.csv", image_size=96, max_epochs=8, keep_outputs=True)
    _run([str(ROOT / "train.py"), "fit", "--config", str(config)], cwd=tmp_path)
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    assert ckpt.is_file()
    assert list((tmp_path / "run").glob("events.out.tfevents.*")), "no TensorBoard events were written"

    openi = synthetic_dataset("openi", num_studies=150, seed=1, image_size=128)
    openi_spec = tmp_path / "openi.yaml"
    spec = yaml.safe_load((ROOT / "configs" / "eval" / "demo_openi.yaml").read_text())
    spec["init_args"]["root"] = str(openi)
    openi_spec.write_text(yaml.safe_dump(spec))
    out = tmp_path / "eval"
    log = _run([str(ROOT / "eval.py"), "--checkpoint", str(ckpt), "--data", f"synthetic={config}",
                "--data", f"openi={openi_spec}", "--split", "test", "--out", str(out)], cwd=tmp_path)
    results = json.loads((out / "results.json").read_text())["datasets"]
    assert set(results) == {"synthetic", "openi"}
    assert "| synthetic" in log and "| openi" in log  # the table is printed

    # A clear margin, not a lucky draw: mean rank over >100 queries has a chance sd of ~3 ranks, so 0.75x the
    # chance mean rank is > 5 sd; R@5 must also reach 2x its empirical chance on the training world's split.
    synthetic = results["synthetic"]["i2t"]
    chance = _chance("synthetic", config)
    assert synthetic["num_queries"] >= 100
    assert synthetic["R@5"] >= 2 * chance["R@5"], (synthetic, chance)
    assert synthetic["mean_rank"] <= 0.75 * chance["mean_rank"], (synthetic, chance)
    cross = results["openi"]["i2t"]
    chance = _chance("openi", openi_spec)
    assert cross["num_queries"] >= 100
    assert cross["mean_rank"] <= 0.75 * chance["mean_rank"], (cross, chance)
