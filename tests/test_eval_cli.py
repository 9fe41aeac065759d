"""eval.py end to end: train a tiny CLIPAlignModule for a few steps with train.py's CLI, then evaluate its
checkpoint on two held-out sources (a DataModule spec and a bare source spec) and check every output."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from _tiny_clip_run import train_tiny_clip
from PIL import Image

from cxr.labels import CHEXPERT_OBSERVATIONS

FINDINGS = ["Edema", "Cardiomegaly", "Pleural Effusion", "Pneumothorax"]


def _write_manifest(root: Path, name: str, n: int, seed: int, split: str | None) -> Path:
    """A small CSV-manifest dataset: PNG phantoms whose brightness pattern encodes the finding."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        f = i % len(FINDINGS)
        img = (rng.random((32, 32)) * 60).astype(np.uint8)
        img[f * 8:(f + 1) * 8, :] += 150  # the finding's band
        Image.fromarray(img).save(root / f"{name}_{i}.png")
        row = {"image_path": f"{name}_{i}.png", "study_id": f"s{i}", "patient_id": f"p{i}",
               "report": f"Findings consistent with {FINDINGS[f].lower()}. Case {i % 3}."}
        if split:
            row["split"] = split if split != "mixed" else ("train" if i < n * 0.7 else "test")
        for obs in CHEXPERT_OBSERVATIONS:
            row[obs] = "1.0" if obs == FINDINGS[f] else ""
        rows.append(row)
    path = root / "manifest.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("evalcli")
    train_csv = _write_manifest(tmp / "train_ds", "tr", 24, seed=0, split="mixed")
    ckpt = train_tiny_clip(tmp, train_csv, max_steps=3).checkpoint
    # held-out spec 1: a DataModule config; spec 2: a bare source (wrapped by eval.py)
    a_csv = _write_manifest(tmp / "held_a", "a", 20, seed=1, split="test")
    b_csv = _write_manifest(tmp / "held_b", "b", 16, seed=2, split=None)
    spec_a = tmp / "held_a.yaml"
    spec_a.write_text(yaml.safe_dump({"class_path": "cxr.data.datamodule.CXRDataModule", "init_args": {
        "sources": [], "eval_sources": [{"class_path": "cxr.data.sources.CsvManifestSource",
                                         "init_args": {"name": "held_a", "csv_path": str(a_csv)}}],
        "image_size": 32, "in_chans": 1, "batch_size": 8, "num_workers": 0}}))
    spec_b = tmp / "held_b.yaml"
    spec_b.write_text(yaml.safe_dump({"class_path": "cxr.data.sources.CsvManifestSource",
                                      "init_args": {"name": "held_b", "csv_path": str(b_csv), "split": "TEST"}}))
    return ckpt, spec_a, spec_b


@pytest.mark.slow
def test_eval_cli_writes_tables_and_dumps_for_two_datasets(trained_checkpoint, tmp_path, capsys):
    from cxr.evaluation.cli import main

    ckpt, spec_a, spec_b = trained_checkpoint
    out = tmp_path / "eval"
    assert main(["--checkpoint", str(ckpt), "--out", str(out), "--data", f"A={spec_a}", "--data", f"B={spec_b}",
                 "--ks", "1,5"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"\| A \| i2t \|", printed) and re.search(r"\| B \| t2i \|", printed)
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["dataset"], r["direction"]) for r in rows] == [("A", "i2t"), ("A", "t2i"), ("B", "i2t"), ("B", "t2i")]
    by = {(r["dataset"], r["direction"]): r for r in rows}
    assert int(float(by[("A", "i2t")]["num_queries"])) == 20
    assert int(float(by[("B", "t2i")]["num_candidates"])) == 16
    for r in rows:
        assert 0.0 <= float(r["R@1"]) <= float(r["R@5"]) <= 1.0
    assert 0.0 <= float(by[("A", "i2t")]["exact_P@1"]) <= 1.0
    data = json.loads((out / "results.json").read_text())
    assert set(data["datasets"]) == {"A", "B"} and data["settings"]["protocol"] == "study"
    assert (out / "results.md").read_text().startswith("| dataset | direction |")
    for name, n in (("A", 20), ("B", 16)):
        lines = (out / f"top1_{name}.jsonl").read_text().splitlines()
        assert len(lines) == n
        first = json.loads(lines[0])
        assert first["query_study_key"].startswith(("held_a:", "held_b:"))
        assert first["ground_truth_report"].strip() and first["retrieved_report"].strip()
        assert first["rank"] >= 1 and first["hit_at_1"] == (first["rank"] == 1)
        hit1 = float(by[(name, "i2t")]["R@1"])
        assert sum(json.loads(x)["hit_at_1"] for x in lines) / n == pytest.approx(hit1)


def test_eval_cli_rejects_missing_spec(trained_checkpoint, tmp_path):
    from cxr.evaluation.cli import main

    ckpt, _, _ = trained_checkpoint
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        main(["--checkpoint", str(ckpt), "--out", str(tmp_path), "--data", f"X={tmp_path / 'nope.yaml'}"])


@pytest.mark.slow
def test_eval_cli_judge_adds_green_column(trained_checkpoint, tmp_path, capsys):
    """``--judge URL``: every top-1 pair is sent (reference = ground truth, candidate = retrieved report) and the
    mean GREEN lands in the i2t row; the fake judge matches 1 finding when the reports are equal, else 1 error."""
    from _fake_judge import FakeJudge, FakeJudgeServer

    from cxr.evaluation.cli import main

    def same_or_not(reference: str, candidate: str) -> str:
        if reference == candidate:
            return "[Clinically Significant Errors]:\n(a) x: 0.\n\n[Matched Findings]:\n1. same."
        return "[Clinically Significant Errors]:\n(a) x: 1. wrong.\n\n[Matched Findings]:\n0."

    ckpt, spec_a, _ = trained_checkpoint
    out = tmp_path / "eval"
    with FakeJudgeServer(FakeJudge(answer=same_or_not)) as server:
        assert main(["--checkpoint", str(ckpt), "--out", str(out), "--data", f"A={spec_a}", "--judge", server.url,
                     "--judge-workers", "2"]) == 0
        sent = len(server.state.requests)
    top1 = [json.loads(line) for line in (out / "top1_A.jsonl").read_text().splitlines()]
    assert sent == len(top1) == 20
    expected = sum(r["ground_truth_report"] == r["retrieved_report"] for r in top1) / len(top1)
    with open(out / "results.csv") as fh:
        rows = {r["direction"]: r for r in csv.DictReader(fh)}
    assert float(rows["i2t"]["GREEN"]) == pytest.approx(expected) and float(rows["i2t"]["GREEN_n"]) == 20
    assert rows["t2i"]["GREEN"] == ""
    judged = [json.loads(line) for line in (out / "judge_A.jsonl").read_text().splitlines()]
    assert sorted(r["pair_id"] for r in judged) == sorted(f"A:{r['query_study_key']}" for r in top1)
    assert "GREEN" in capsys.readouterr().out
