"""``eval.py --zero-shot``: per-observation prompt-pair AUROC in the results, checked against an independent
recomputation (sklearn AUROC of cos(present) − cos(absent)) on a tiny trained model and the synthetic world."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from _tiny_clip_run import train_tiny_clip
from cxr.evaluation.zero_shot import ZERO_SHOT_OBSERVATIONS
from cxr.labels import OBSERVATION_INDEX


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, synthetic_dataset):
    world = synthetic_dataset("csv", num_studies=100, seed=0, image_size=64)
    return train_tiny_clip(tmp_path_factory.mktemp("zeroshot"), world / "manifest.csv", max_steps=2)


def _expected_auroc(run) -> dict[str, float]:
    """Independent path: embed the test split and the prompts by hand, AUROC of the cosine difference."""
    from cxr.evaluation.datasets import EvalDatasetSpec, build_eval_datamodule
    from cxr.evaluation.model_loading import load_checkpoint_model, prepare_model

    model = prepare_model(load_checkpoint_model(run.checkpoint))
    dm = build_eval_datamodule(EvalDatasetSpec("synth", run.train_config))
    dm.setup("test")
    images, labels = [], []
    with torch.no_grad():
        for batch in dm.test_dataloader():
            images.append(model.encode_images(batch.images))
            labels.append(batch.labels)
        img = torch.nn.functional.normalize(torch.cat(images), dim=-1).numpy()
        present = model.encode_texts([f"{o.lower()} is present" for o in ZERO_SHOT_OBSERVATIONS])
        absent = model.encode_texts([f"there is no {o.lower()}" for o in ZERO_SHOT_OBSERVATIONS])
        present = torch.nn.functional.normalize(present, dim=-1).numpy()
        absent = torch.nn.functional.normalize(absent, dim=-1).numpy()
    lab = torch.cat(labels).numpy()
    out = {}
    for c, obs in enumerate(ZERO_SHOT_OBSERVATIONS):
        y = lab[:, OBSERVATION_INDEX[obs]] == 1  # uncertain_policy zeros: -1 and not-mentioned are negatives
        if 0 < y.sum() < len(y):
            out[obs] = roc_auc_score(y, img @ present[c] - img @ absent[c])
    return out


@pytest.mark.slow
def test_eval_zero_shot_reports_auroc_for_observations_with_both_classes(tiny_run, tmp_path, capsys):
    from cxr.evaluation.cli import main

    out = tmp_path / "eval"
    assert main(["--checkpoint", str(tiny_run.checkpoint), "--out", str(out), "--data",
                 f"synth={tiny_run.train_config}", "--zero-shot", "--no-dump"]) == 0
    printed = capsys.readouterr().out
    assert "Zero-shot AUROC" in printed and "| synth |" in printed
    expected = _expected_auroc(tiny_run)
    assert len(expected) >= 3  # the synthetic test split has several findings with both classes
    data = json.loads((out / "results.json").read_text())
    got = data["zero_shot"]["synth"]
    assert set(got) == set(expected) | {"mean"}
    for obs, value in expected.items():
        assert got[obs] == pytest.approx(value, abs=1e-6), obs
    assert got["mean"] == pytest.approx(float(np.mean(list(expected.values()))), abs=1e-6)
    with open(out / "zero_shot.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["dataset"] for r in rows] == ["synth"]
    assert float(rows[0]["mean"]) == pytest.approx(got["mean"])
    assert all(rows[0][o] == "" for o in ZERO_SHOT_OBSERVATIONS if o not in expected and o in rows[0])
    md = (out / "results.md").read_text()
    assert md.startswith("| dataset | direction |") and "Zero-shot AUROC" in md
    assert data["settings"]["zero_shot"] is True


def test_zero_shot_table_leaves_missing_observations_empty():
    from cxr.evaluation.retrieval_eval import DatasetResult
    from cxr.evaluation.tables import zero_shot_table

    results = [DatasetResult("a", {}, zero_shot={"Edema": 0.7, "mean": 0.7}),
               DatasetResult("b", {}),  # ran without zero-shot: no row
               DatasetResult("c", {}, zero_shot={"Pneumothorax": 0.4, "Edema": 0.6, "mean": 0.5})]
    header, rows = zero_shot_table(results)
    assert header == ["dataset", "mean", "Edema", "Pneumothorax"]
    assert rows == [["a", 0.7, 0.7, ""], ["c", 0.5, 0.6, 0.4]]
    assert zero_shot_table([DatasetResult("b", {})])[1] == []
    assert not any(math.isnan(v) for r in rows for v in r[1:] if isinstance(v, float))


def test_eval_without_flag_writes_no_zero_shot(tmp_path):
    from cxr.evaluation.retrieval_eval import DatasetResult
    from cxr.evaluation.tables import write_results

    paths = write_results([DatasetResult("a", {"i2t": {"R@1": 0.5}, "t2i": {"R@1": 0.25}})], tmp_path)
    assert "zero_shot_csv" not in paths and not (tmp_path / "zero_shot.csv").exists()
    assert "zero_shot" not in json.loads(Path(paths["json"]).read_text())
