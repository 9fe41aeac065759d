"""A tiny CLIPAlignModule run on a synthetic CSV world through train.py's CLI (fit a few steps, then predict with
the EmbeddingWriter): the demo outputs the notebooks and ``eval.py --zero-shot`` tests start from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class TinyRun:
    """Paths of one tiny run."""

    train_config: Path
    checkpoint: Path
    manifest: Path


def train_tiny_clip(tmp: Path, manifest: Path, max_steps: int = 3) -> TinyRun:
    """Fit a test_resnet + 1-layer random Llama dual tower for ``max_steps`` steps on ``manifest``."""
    from cxr.cli import cli_main
    from cxr.models.text.tiny import build_tiny_model

    text_dir = build_tiny_model("llama", tmp / "tiny_llama", hidden_size=32, layers=1, heads=2, kv_heads=1)
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": max_steps, "limit_val_batches": 0,
                    "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp / "run"),
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": str(tmp / "ckpt"), "save_last": True}}]},
        "model": {"class_path": "cxr.models.clip_module.CLIPAlignModule",
                  "init_args": {"vision": {"class_path": "cxr.models.vision.VisionTower",
                                           "init_args": {"model_name": "test_resnet", "in_chans": 1,
                                                         "image_size": 32}},
                                "text": {"class_path": "cxr.models.text.tower.TextTower",
                                         "init_args": {"model_name_or_path": str(text_dir), "use_cache": False,
                                                       "max_length": 64}},
                                "embed_dim": 16, "lr": 1e-3, "layer_decay": 1.0}},
        "data": {"class_path": "cxr.data.datamodule.CXRDataModule",
                 "init_args": {"sources": [{"class_path": "cxr.data.sources.CsvManifestSource",
                                            "init_args": {"name": "synth", "csv_path": str(manifest)}}],
                               "image_size": 32, "in_chans": 1, "batch_size": 4, "num_workers": 0}},
    }
    cfg_path = tmp / "train.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    cli_main(["fit", "--config", str(cfg_path)])
    ckpt = tmp / "ckpt" / "last.ckpt"
    assert ckpt.is_file()
    return TinyRun(train_config=cfg_path, checkpoint=ckpt, manifest=manifest)


def predict_embeddings(run: TinyRun, out_dir: Path, log_dir: Path) -> Path:
    """``train.py predict`` with the EmbeddingWriter appended on the command line (as the docs say); returns the
    ``config.yaml`` LightningCLI saved in ``log_dir``."""
    from cxr.cli import cli_main

    cli_main(["predict", "--config", str(run.train_config), "--ckpt_path", str(run.checkpoint),
              "--trainer.callbacks+=cxr.callbacks.embedding_writer.EmbeddingWriter",
              "--trainer.callbacks.output_dir", str(out_dir), "--trainer.default_root_dir", str(log_dir)])
    config = log_dir / "config.yaml"
    assert config.is_file() and (out_dir / "embeddings.safetensors").is_file()
    return config
