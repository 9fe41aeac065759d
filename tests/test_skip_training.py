"""A training run with ``bad_input: SKIP`` over a dataset holding every image defect of the corpus finishes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from _bad_images import BAD_IMAGES, write_bad_image
from _data_writers import write_image, write_manifest

from cxr.data.datamodule import CXRDataModule
from cxr.data.sources import CsvManifestSource
from cxr.records import Split

GOOD = 40


def _world(tmp: Path) -> tuple[Path, dict[str, Path]]:
    """40 good studies and one per image defect, each bad one right after a good one (never two in a row)."""
    rows, bad_paths = [], {}
    names = list(BAD_IMAGES)
    for i in range(GOOD):
        rows.append({"study_id": f"g{i}", "image_path": f"img/g{i}.png", "report": f"Finding {i % 7}. Note {i}.",
                     "split": "train"})
        write_image(tmp / "img" / f"g{i}.png", seed=i, size=32)
        if i < len(names):
            path = write_bad_image(tmp / "img" / f"bad{i}", names[i])
            bad_paths[names[i]] = path
            rows.append({"study_id": f"b{i}", "image_path": f"img/{path.name}", "report": f"Bad {i}.",
                         "split": "train"})
    return write_manifest(tmp, rows, write_images=False), bad_paths


def test_decode_check_drops_every_image_defect_at_set_up(tmp_path: Path) -> None:
    manifest, bad = _world(tmp_path)
    dm = CXRDataModule([CsvManifestSource("m", str(manifest))], bad_input="skip", num_workers=0)
    kept = {r.study_id for r in dm.load_records()[Split.TRAIN]}
    assert kept == {f"g{i}" for i in range(GOOD)}  # all 17 defective studies dropped before training


@pytest.mark.slow
def test_fit_with_skip_over_every_image_defect_finishes(tmp_path: Path) -> None:
    """The cheap PROBE check lets five defects through (truncated JPEG, constant and 1x1 images, a damaged JPEG
    2000 codestream, a too-small BitsStored): they used to kill the run in a DataLoader worker. Under SKIP each
    is replaced by the next loadable sample and counted in the epoch log."""
    from cxr.cli import cli_main
    from cxr.models.text.tiny import build_tiny_model

    manifest, bad = _world(tmp_path)
    runtime = {bad[n] for n, b in BAD_IMAGES.items() if not b.probe_catches}
    assert len(runtime) == 5
    text_dir = build_tiny_model("llama", tmp_path / "tiny_llama", hidden_size=16, layers=1, heads=2, kv_heads=1)
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 2, "limit_val_batches": 0,
                    "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": str(tmp_path / "run")},
        "model": {"class_path": "cxr.models.clip_module.CLIPAlignModule",
                  "init_args": {"vision": {"class_path": "cxr.models.vision.VisionTower",
                                           "init_args": {"model_name": "test_resnet", "in_chans": 1,
                                                         "image_size": 32}},
                                "text": {"class_path": "cxr.models.text.tower.TextTower",
                                         "init_args": {"model_name_or_path": str(text_dir), "use_cache": False,
                                                       "max_length": 32}},
                                "embed_dim": 8}},
        "data": {"class_path": "cxr.data.datamodule.CXRDataModule",
                 "init_args": {"sources": [{"class_path": "cxr.data.sources.CsvManifestSource",
                                            "init_args": {"name": "m", "csv_path": str(manifest)}}],
                               "image_size": 32, "batch_size": 9, "num_workers": 0, "bad_input": "SKIP",
                               "image_check": "PROBE"}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = cli_main(["fit", "--config", str(path)])
    assert cli.trainer.current_epoch == 2 and cli.trainer.global_step == 10  # 45 items / 9, two epochs
    assert float(cli.trainer.callback_metrics["train/skipped_images"]) == len(runtime)  # the epoch log
    assert {Path(p) for p in cli.datamodule.skipped_images} == runtime
    assert all(n == 2 for n in cli.datamodule.skipped_images.values())  # once per epoch each
