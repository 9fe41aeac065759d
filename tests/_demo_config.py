"""Write a copy of configs/demo.yaml pointed at a test's own data and output directories."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"


def demo_config(tmp_path: Path, manifest: Path, *, vision: str | None = None, encoder: str | None = None,
                image_size: int | None = None, max_epochs: int | None = None, batch_size: int | None = None,
                keep_outputs: bool = False) -> Path:
    """The demo config with its manifest, cache and (optionally) logger/checkpoint dirs moved under ``tmp_path``."""
    cfg = yaml.safe_load(DEMO.read_text())
    data = cfg["data"]["init_args"]
    data["sources"][0]["init_args"]["csv_path"] = str(manifest)
    model = cfg["model"]["init_args"]
    model["text"]["init_args"]["cache_dir"] = str(tmp_path / "text_cache")
    if encoder is not None:
        model["text"]["init_args"]["model_name_or_path"] = encoder
    if vision is not None:
        model["vision"]["init_args"]["model_name"] = vision
    if image_size is not None:
        model["vision"]["init_args"]["image_size"] = image_size
        data["image_size"] = image_size
    if batch_size is not None:
        data["batch_size"] = batch_size
    trainer = cfg["trainer"]
    if max_epochs is not None:
        trainer["max_epochs"] = max_epochs
    if keep_outputs:
        run = tmp_path / "run"
        trainer["default_root_dir"] = str(tmp_path)
        trainer["logger"]["init_args"]["save_dir"] = str(tmp_path)
        for cb in trainer["callbacks"]:
            if "dirpath" in cb.get("init_args", {}):
                cb["init_args"]["dirpath"] = str(run / "checkpoints")
    else:
        for key in ("logger", "callbacks", "default_root_dir"):
            trainer.pop(key, None)
        trainer["logger"] = False
        trainer["enable_checkpointing"] = False
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
