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
import yaml
from _tiny_clip_run import train_tiny_clip
from sklearn.metrics import roc_auc_score

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


ZS_SPEC = {"mode": "binary",
           "templates": {"positive": ["{} is present", "findings of {}"], "negative": ["there is no {}"]},
           "classes": {"Edema": None, "Effusion": {"label": "Pleural Effusion", "names": ["pleural effusion"]},
                       "Pneumothorax": None}}


def _independent_binary(run, manifest: Path, spec_cfg: dict) -> dict[str, dict[str, float]]:
    """sklearn metrics of log p = log softmax(100·[cos(pos), cos(neg)]) with hand-ensembled prompts and hand-loaded images."""
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score

    from cxr.data.images import load_image
    from cxr.data.transforms import TransformConfig
    from cxr.evaluation.model_loading import load_checkpoint_model, prepare_model

    model = prepare_model(load_checkpoint_model(run.checkpoint))
    transform = TransformConfig(image_size=model.vision.image_size, in_chans=model.vision.in_chans).build(False)
    with open(manifest) as fh:
        rows = list(csv.DictReader(fh))
    with torch.no_grad():
        x = torch.stack([transform(load_image(manifest.parent / r["image_path"])) for r in rows])
        img = torch.nn.functional.normalize(model.encode_images(x), dim=-1).numpy()

        def ens(prompts):
            e = torch.nn.functional.normalize(model.encode_texts(prompts), dim=-1).mean(0)
            return torch.nn.functional.normalize(e, dim=-1).numpy()

        out = {}
        tpl = spec_cfg["templates"]
        for name, body in spec_cfg["classes"].items():
            body = body or {}
            names = body.get("names", [name])
            pos = ens([t.replace("{}", n.lower()) for t in tpl["positive"] for n in names])
            neg = ens([t.replace("{}", n.lower()) for t in tpl["negative"] for n in names])
            p = -np.logaddexp(0.0, 100 * (img @ neg - img @ pos))  # log softmax(100·[pos, neg])[0], no saturation
            y = np.array([r[body.get("label", name)] in ("1", "1.0") for r in rows])
            out[name] = {"auroc": roc_auc_score(y, p), "auprc": average_precision_score(y, p),
                         "accuracy": accuracy_score(y, p >= np.log(0.5)),
                         "f1": f1_score(y, p >= np.log(0.5), zero_division=0)}
    return out


@pytest.mark.slow
def test_zero_shot_cli_user_yaml_and_label_csv(tiny_run, tmp_path, capsys):
    """Binary mode from a user YAML and a label CSV (the synthetic manifest: image path + CheXpert columns)."""
    from cxr.evaluation.zero_shot_cli import main

    spec = tmp_path / "classes.yaml"
    spec.write_text(yaml.safe_dump(ZS_SPEC, sort_keys=False))
    out = tmp_path / "zs"
    assert main(["--checkpoint", str(tiny_run.checkpoint), "--prompts", str(spec), "--labels",
                 str(tiny_run.manifest), "--out", str(out)]) == 0
    assert "| Effusion |" in capsys.readouterr().out
    got = json.loads((out / "zero_shot.json").read_text())["metrics"]
    expected = _independent_binary(tiny_run, tiny_run.manifest, ZS_SPEC)
    for name, values in expected.items():
        for metric, value in values.items():
            assert got[name][metric] == pytest.approx(value, abs=1e-5), (name, metric)
    assert got["mean"]["auroc"] == pytest.approx(np.mean([v["auroc"] for v in expected.values()]), abs=1e-5)
    with open(out / "zero_shot.csv") as fh:
        assert [r["class"] for r in csv.DictReader(fh)] == ["Edema", "Effusion", "Pneumothorax", "mean"]


@pytest.mark.slow
def test_zero_shot_cli_multiclass_single_label_column(tiny_run, tmp_path):
    """Multi-class softmax from a one-column label file (RSNA/SIIM style)."""
    from cxr.evaluation.zero_shot_cli import main

    with open(tiny_run.manifest) as fh:
        rows = list(csv.DictReader(fh))
    labels = tmp_path / "mc.csv"
    with open(labels, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["img_path", "finding"])
        for r in rows:
            w.writerow([str(tiny_run.manifest.parent / r["image_path"]),
                        "effusion" if r["Pleural Effusion"] in ("1", "1.0") else "clear"])
    spec = tmp_path / "mc.yaml"
    spec.write_text(yaml.safe_dump({"mode": "multiclass", "label_column": "finding",
                                    "templates": ["a chest x-ray with {}", "{}"],
                                    "classes": {"clear": {"names": ["clear lungs"]}, "effusion": None}}))
    out = tmp_path / "zs"
    assert main(["--checkpoint", str(tiny_run.checkpoint), "--prompts", str(spec), "--labels", str(labels),
                 "--out", str(out)]) == 0
    got = json.loads((out / "zero_shot.json").read_text())
    metrics = got["metrics"]
    assert set(metrics) == {"clear", "effusion", "mean"} and got["settings"]["mode"] == "multiclass"
    y = np.array([r["Pleural Effusion"] in ("1", "1.0") for r in rows])
    assert metrics["effusion"]["positives"] == y.sum() and metrics["clear"]["positives"] == (~y).sum()
    # two classes: the softmax is monotone in the score difference, so both one-vs-rest AUROCs agree
    assert metrics["clear"]["auroc"] == pytest.approx(metrics["effusion"]["auroc"], abs=1e-6)
    # two classes: "predicted c vs is c" is right exactly when the argmax is right
    top1 = metrics["mean"]["top1_accuracy"]
    assert metrics["clear"]["accuracy"] == pytest.approx(top1) == metrics["effusion"]["accuracy"]


@pytest.mark.slow
def test_eval_zero_shot_prompts_yaml(tiny_run, tmp_path):
    """``eval.py --zero-shot-prompts``: the YAML's classes (CheXpert labels of the eval split) replace the 13 pairs."""
    from cxr.evaluation.cli import main

    spec = tmp_path / "classes.yaml"
    spec.write_text(yaml.safe_dump(ZS_SPEC, sort_keys=False))
    out = tmp_path / "eval"
    assert main(["--checkpoint", str(tiny_run.checkpoint), "--out", str(out), "--data",
                 f"synth={tiny_run.train_config}", "--zero-shot-prompts", str(spec), "--no-dump"]) == 0
    data = json.loads((out / "results.json").read_text())
    got = data["zero_shot"]["synth"]
    assert set(got) <= {"Edema", "Effusion", "Pneumothorax", "mean"} and len(got) >= 2
    assert data["settings"]["zero_shot_prompts"] == "classes.yaml"
    multiclass = tmp_path / "mc.yaml"
    multiclass.write_text(yaml.safe_dump({"mode": "multiclass", "templates": ["{}"], "classes": ["a", "b"]}))
    with pytest.raises(SystemExit, match="binary"):
        main(["--checkpoint", str(tiny_run.checkpoint), "--out", str(out), "--data", f"synth={tiny_run.train_config}",
              "--zero-shot-prompts", str(multiclass)])
