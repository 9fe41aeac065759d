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


def _metrics(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_eval_cli_config_file_equals_flags_and_falls_back_to_cpu(trained_checkpoint, tmp_path, capsys):
    """A YAML config (jsonargparse) gives the same run as the flags; --device auto (the default) runs on the CPU
    of a machine without a GPU, says so in results.json, and shows a progress bar per dataset."""
    from cxr.evaluation.cli import main

    ckpt, spec_a, spec_b = trained_checkpoint
    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump({"checkpoint": str(ckpt), "data": [f"A={spec_a}", f"B={spec_b}"],
                                      "out": str(tmp_path / "from_config"), "ks": "1,5", "num_workers": 0,
                                      "device": "auto", "no_dump": True}))
    assert main(["--config", str(config)]) == 0
    captured = capsys.readouterr()
    bars = captured.out + captured.err  # Lightning's bars write to stdout
    assert "eval A" in bars and "eval B" in bars
    assert main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "from_flags"), "--data", f"A={spec_a}",
                 "--data", f"B={spec_b}", "--ks", "1,5", "--num-workers", "0"]) == 0
    a, b = _metrics(tmp_path / "from_config"), _metrics(tmp_path / "from_flags")
    for ds in ("A", "B"):
        for direction in ("i2t", "t2i"):
            assert a["datasets"][ds][direction] == pytest.approx(b["datasets"][ds][direction], abs=1e-6)
    import torch

    if torch.cuda.is_available():  # a GPU machine: auto must take it
        assert a["settings"]["runtime"]["accelerator"] == "cuda"
        assert a["settings"]["runtime"]["root_device"].startswith("cuda")
    else:
        assert a["settings"]["runtime"] == {"accelerator": "cpu", "root_device": "cpu", "world_size": 1,
                                            "precision": "32-true"}
    assert not (tmp_path / "from_config" / "top1_A.jsonl").exists()  # no_dump from the file


@pytest.mark.slow
def test_eval_cli_bf16_mixed_runs_close_to_fp32(trained_checkpoint, tmp_path):
    from cxr.evaluation.cli import main

    ckpt, spec_a, _ = trained_checkpoint
    for precision in ("32-true", "bf16-mixed"):
        assert main(["--checkpoint", str(ckpt), "--out", str(tmp_path / precision), "--data", f"A={spec_a}",
                     "--precision", precision, "--no-dump", "--no-progress"]) == 0  # the GPU where present
    fp32, bf16 = _metrics(tmp_path / "32-true"), _metrics(tmp_path / "bf16-mixed")
    assert bf16["settings"]["runtime"]["precision"] == "bf16-mixed"
    for direction in ("i2t", "t2i"):  # 20 queries: bf16 may swap near-ties, not reorder everything
        assert abs(bf16["datasets"]["A"][direction]["mean_rank"] - fp32["datasets"]["A"][direction]["mean_rank"]) < 2


@pytest.mark.slow
def test_eval_cli_two_process_ddp_equals_one_process(trained_checkpoint, tmp_path):
    """Multi-device evaluation through Lightning (2 CPU processes, gloo): the same metrics and dumps as one
    process (the DistributedSampler's padding is dropped, keys/texts are gathered from both ranks)."""
    import os
    import subprocess
    import sys

    ckpt, spec_a, spec_b = trained_checkpoint
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in {"LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}}
    env.update(HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(root))
    common = ["--checkpoint", str(ckpt), "--data", f"A={spec_a}", "--data", f"B={spec_b}", "--ks", "1,5",
              "--num-workers", "0", "--device", "cpu", "--no-progress"]
    from cxr.evaluation.cli import main

    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    proc = subprocess.run([sys.executable, str(root / "eval.py"), *common, "--out", str(tmp_path / "two"),
                           "--devices", "2", "--strategy", "ddp"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert two["settings"]["runtime"]["world_size"] == 2
    for ds in ("A", "B"):
        for direction in ("i2t", "t2i"):
            for key, value in one["datasets"][ds][direction].items():
                assert two["datasets"][ds][direction][key] == pytest.approx(value, abs=1e-6), (ds, direction, key)
        rows = []
        for name in ("one", "two"):
            with open(tmp_path / name / f"top1_{ds}.csv") as fh:
                rows.append(list(csv.DictReader(fh)))
        assert len(rows[0]) == len(rows[1]) > 0
        for r1, r2 in zip(*rows, strict=True):  # same queries, retrieved reports and ranks; scores to float rounding
            score1, score2 = float(r1.pop("retrieved_score")), float(r2.pop("retrieved_score"))
            assert r1 == r2 and score1 == pytest.approx(score2, abs=1e-6)


def test_device_names_map_to_lightning():
    from cxr.evaluation.engine import accelerator_and_devices

    assert accelerator_and_devices("auto") == ("auto", 1)
    assert accelerator_and_devices("CPU", 2) == ("cpu", 2)
    assert accelerator_and_devices("cuda", "auto") == ("gpu", "auto")
    assert accelerator_and_devices("cuda:1") == ("gpu", [1])
    with pytest.raises(ValueError, match="names one GPU"):
        accelerator_and_devices("cuda:1", 2)
    with pytest.raises(ValueError, match="unknown device 'tpu0'"):
        accelerator_and_devices("tpu0")


def test_auto_device_takes_a_gpu_when_present(monkeypatch):
    """--device auto asks Lightning to choose: with a (mocked) CUDA device present it is the GPU, else the CPU."""
    from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator

    from cxr.evaluation.engine import EvalRuntime, build_eval_trainer

    monkeypatch.setattr("lightning.fabric.accelerators.cuda.num_cuda_devices", lambda: 0)
    monkeypatch.setattr("lightning.pytorch.accelerators.cuda.num_cuda_devices", lambda: 0)
    assert isinstance(build_eval_trainer(EvalRuntime(progress_bar=False)).accelerator, CPUAccelerator)
    monkeypatch.setattr("lightning.fabric.accelerators.cuda.num_cuda_devices", lambda: 1)
    monkeypatch.setattr("lightning.pytorch.accelerators.cuda.num_cuda_devices", lambda: 1)
    monkeypatch.setattr("lightning.fabric.accelerators.mps.MPSAccelerator.is_available", staticmethod(lambda: False))
    assert isinstance(build_eval_trainer(EvalRuntime(progress_bar=False)).accelerator, CUDAAccelerator)


def test_eval_parser_reads_yaml_and_keeps_dashed_flags(tmp_path):
    from cxr.evaluation.cli import build_parser, default_num_workers

    assert default_num_workers() >= 1
    config = tmp_path / "c.yaml"
    config.write_text("checkpoint: m.ckpt\nout: o\ndata: [a=x.yaml]\nbatch_size: 7\nprecision: bf16-mixed\n")
    args = build_parser().parse_args(["--config", str(config), "--data", "b=y.yaml", "--num-workers", "3"])
    assert args.data == ["a=x.yaml", "b=y.yaml"] and args.batch_size == 7 and args.num_workers == 3
    assert args.precision == "bf16-mixed" and args.device == "auto"


@pytest.mark.slow
def test_eval_cli_paper_protocol_scores_every_image_and_states_it(trained_checkpoint, tmp_path):
    """``--protocol paper``: every image of a two-view study is a query and a candidate row (its report repeated),
    the tables say which protocol made them, and the settings record that duplicates are not correct."""
    from cxr.evaluation.cli import main

    ckpt, _, _ = trained_checkpoint
    rng = np.random.default_rng(5)
    root = tmp_path / "views"
    root.mkdir()
    rows = []
    for i in range(8):
        for v in ("pa", "ap"):
            Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(root / f"{i}{v}.png")
        rows.append({"image_path": f"{i}pa.png;{i}ap.png", "view": "PA;AP", "study_id": f"s{i}",
                     "patient_id": f"p{i}", "report": f"Report {i % 3}.", "split": "test"})
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    spec = tmp_path / "views.yaml"
    spec.write_text(yaml.safe_dump({"class_path": "cxr.data.sources.CsvManifestSource", "init_args": {
        "name": "views", "csv_path": str(root / "manifest.csv")}}))
    counts = {}
    for protocol in ("study", "paper"):
        out = tmp_path / protocol
        assert main(["--checkpoint", str(ckpt), "--out", str(out), "--data", f"V={spec}",
                     "--protocol", protocol, "--no-dump"]) == 0
        with open(out / "results.csv") as fh:
            table = {r["direction"]: r for r in csv.DictReader(fh)}
        assert {r["protocol"] for r in table.values()} == {protocol}
        assert f"| V | i2t | {protocol} |" in (out / "results.md").read_text()
        counts[protocol] = {d: (int(float(r["num_queries"])), int(float(r["num_candidates"])))
                            for d, r in table.items()}
        settings = _metrics(out)["settings"]
        assert settings["eval_unit"] == ("image" if protocol == "paper" else "study")
        assert settings["duplicate_texts_correct"] is (protocol == "study")
    assert counts["study"] == {"i2t": (8, 8), "t2i": (8, 8)}
    assert counts["paper"] == {"i2t": (16, 16), "t2i": (16, 16)}
