"""LLM2VEC4CXR from a config alone: PairDataModule builds pairs from dataset sources (no pair CSV, no manifest),
and the paper-scale configs train their tiny-model twin on a synthetic MIMIC-CXR-layout world."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cxr.data.pairs.datamodule import PairDataModule, load_report_records
from cxr.data.pairs.tasks import AUTHORS_INSTRUCTIONS, TASK_SPECS, InstructionSet, PairTask
from cxr.data.sources import CsvManifestSource, MimicCxrSource, OpenIXmlSource
from cxr.data.validation import DataValidationError, ProblemKind
from cxr.records import Split

ROOT = Path(__file__).resolve().parents[1]
SPLITS = (0.6, 0.25, 0.15)  # enough val studies for findings→impression validation in a small world


def test_pairs_from_mimic_source_equal_pairs_from_its_records(synthetic_dataset) -> None:
    from cxr.data.pairs.pairs import PairBuildOptions, build_pairs

    world = synthetic_dataset("mimic-cxr-jpg", num_studies=48, image_size=32, split_fractions=SPLITS)
    dm = PairDataModule(sources=[MimicCxrSource(str(world))], batch_size=4, seed=3)
    dm.setup("fit")
    records = load_report_records([MimicCxrSource(str(world))])
    assert dm.train_set.pairs == build_pairs(records[Split.TRAIN], seed=3)
    assert {p.task for p in dm.train_set.pairs} == set(PairTask)
    assert dm.val_set is not None and all(p.task is PairTask.SUMMARIZE for p in dm.val_set.pairs)
    val_queries = {p.query for p in dm.val_set.pairs}
    assert val_queries == {p.query for p in build_pairs(records[Split.VAL], seed=3,
                                                         options=PairBuildOptions(tasks=(PairTask.SUMMARIZE,)))}
    batch = next(iter(dm.train_dataloader()))
    spec = TASK_SPECS[batch.task]  # asymmetric tasks are also served reversed (reverse_prob)
    assert batch.queries[0][0] in (spec.instruction, spec.reverse_instruction) and batch.negatives is not None


def test_sources_of_every_kind_and_authors_instructions(synthetic_dataset) -> None:
    csv_world = synthetic_dataset("csv", num_studies=40, image_size=32)
    openi = synthetic_dataset("openi-xml", num_studies=12, image_size=32)
    dm = PairDataModule(sources=[CsvManifestSource("hospital", str(csv_world / "manifest.csv")),
                                 OpenIXmlSource(str(openi), split="train")],
                        instruction_set=InstructionSet.AUTHORS, batch_size=4)
    dm.setup("fit")
    keys = {p.query for p in dm.train_set.pairs}
    assert len(keys) > 40  # both sources contribute (Open-I studies were put in train)
    for i in range(len(dm.train_set)):
        task, (instruction, _), _, _ = dm.train_set[i]
        assert instruction == AUTHORS_INSTRUCTIONS[task]
    assert AUTHORS_INSTRUCTIONS[PairTask.SUMMARIZE] == "Summarize the give findings"  # verbatim, typo included


def test_report_problems_raise_or_skip_and_image_problems_do_not_matter(synthetic_dataset, tmp_path, caplog) -> None:
    import shutil

    world = tmp_path / "mimic"
    shutil.copytree(synthetic_dataset("mimic-cxr-jpg", num_studies=48, image_size=32, split_fractions=SPLITS), world)
    reports = sorted(world.glob("files/p*/p*/s*.txt"))
    reports[0].write_text("   \n")                    # empty report
    for jpg in (world / "files").rglob("*.jpg"):      # no image at all: irrelevant for text
        jpg.unlink()
    with pytest.raises(DataValidationError) as err:
        PairDataModule(sources=[MimicCxrSource(str(world))], batch_size=4).setup("fit")
    assert {p.kind for p in err.value.problems} == {ProblemKind.EMPTY_REPORT}
    assert str(reports[0]) in str(err.value)
    with caplog.at_level(logging.WARNING):
        dm = PairDataModule(sources=[MimicCxrSource(str(world))], batch_size=4, bad_input="skip")
        dm.setup("fit")
    assert "skipped 1 of 48 studies" in caplog.text and "empty report: 1" in caplog.text
    assert dm.train_set.pairs


def test_exactly_one_pair_input() -> None:
    with pytest.raises(ValueError, match="one of"):
        PairDataModule()
    with pytest.raises(ValueError, match="one of"):
        PairDataModule(manifest="m.csv", sources=[MimicCxrSource("/nonexistent")])


def _tiny_twin_args(config: str, model: Path, world: Path, export: Path, max_steps: int) -> list[str]:
    """The paper config on a tiny Llama on CPU: only hardware, size and paths change."""
    return ["fit", "--config", str(ROOT / "configs" / "text" / config),
            "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto",
            "--trainer.precision=32-true", f"--trainer.max_steps={max_steps}", "--trainer.val_check_interval=2",
            "--trainer.limit_val_batches=1", "--trainer.logger=false",
            f"--model.init_args.model_name_or_path={model}", f"--model.init_args.export_dir={export}",
            "--model.init_args.max_length=96", "--model.init_args.warmup_steps=1",
            "--model.init_args.gradient_checkpointing=false",
            # the whole list is given: jsonargparse has no per-index override of a list of classes
            "--data.init_args.sources=" + json.dumps([{"class_path": "cxr.data.sources.mimic_cxr.MimicCxrSource",
                                                       "init_args": {"root": str(world), "reports_dir": str(world)}}]),
            "--data.init_args.batch_size=4", "--data.init_args.eval_batch_size=16", "--data.init_args.num_workers=0"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_paper_configs_train_tiny_twin_from_mimic_layout(synthetic_dataset, tmp_path: Path) -> None:
    """Acceptance: ``python train.py fit --config configs/text/llm2vec4cxr[_mntp].yaml`` on a MIMIC-layout world."""
    from cxr.models.text import TextEncoder
    from cxr.models.text.pooling import PoolingMode
    from cxr.models.text.tiny import build_tiny_model

    world = synthetic_dataset("mimic-cxr-jpg", num_studies=48, image_size=32, split_fractions=SPLITS)
    assert not list(world.glob("**/*pairs*.csv"))  # nothing prepared by hand
    base = build_tiny_model("llama", tmp_path / "base", seed=1)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    stages = (("llm2vec4cxr_mntp.yaml", base, tmp_path / "mntp"),
              ("llm2vec4cxr.yaml", tmp_path / "mntp", tmp_path / "encoder"))
    for config, model, export in stages:
        run = subprocess.run([sys.executable, str(ROOT / "train.py"),
                              *_tiny_twin_args(config, model, world, export, max_steps=3)],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=500)
        assert run.returncode == 0, run.stderr[-3000:]
        assert (export / "cxr_text_encoder.json").is_file()
    encoder = TextEncoder.from_pretrained(str(tmp_path / "encoder"))
    assert encoder.pooling is PoolingMode.LATENT_ATTENTION and encoder.latent_pooling is not None
    assert encoder.encode(["No acute cardiopulmonary process."]).isfinite().all()
