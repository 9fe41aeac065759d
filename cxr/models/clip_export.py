"""Export the vision tower + projection (and the text adapter) for inference: safetensors + JSON config."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cxr.models.adapters import AdapterKind, TextAdapter
from cxr.models.vision import VisionTower

WEIGHTS = "model.safetensors"
CONFIG = "clip_export.json"


@dataclass
class ExportedCLIP:
    """What :func:`load_exported_clip` returns: image encoder (backbone + projection) and text adapter."""

    vision: VisionTower
    image_proj: nn.Linear
    text_adapter: TextAdapter
    config: dict

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_proj(self.vision(images))


def export_clip(module, out_dir: str | Path, include_text_encoder: bool = True) -> Path:
    """Write a self-contained export: projection/adapter weights, the vision tower as a timm folder, the text
    encoder as a sentence-transformers/transformers folder, and the stored preprocessing
    (``cxr.models.clip_export_io``; ``cxr.load(out_dir)`` reloads it)."""
    from cxr.models.clip_export_io import export_clip_folder

    return export_clip_folder(module, out_dir, include_text_encoder=include_text_encoder)


def load_exported_clip(path: str | Path) -> ExportedCLIP:
    """Rebuild the exported towers (strict load: every exported tensor must fit)."""
    from safetensors.torch import load_file

    folder = Path(path)
    cfg = json.loads((folder / CONFIG).read_text())
    sd = load_file(str(folder / WEIGHTS))
    if cfg.get("vision_dir"):  # the backbone lives in the timm folder (one copy of the weights)
        backbone = load_file(str(folder / cfg["vision_dir"] / WEIGHTS))
        sd.update({f"vision.backbone.{k}": v for k, v in backbone.items()})
    vision = VisionTower(**cfg["vision"])
    proj = nn.Linear(vision.num_features, cfg["embed_dim"])
    adapter = TextAdapter(AdapterKind(cfg["text"]["adapter"]), cfg["text"]["embedding_dim"], cfg["embed_dim"],
                          cfg["text"]["adapter_blocks"])
    for prefix, mod in (("vision.", vision), ("image_proj.", proj), ("text_adapter.", adapter)):
        mod.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}, strict=True)
        mod.eval()
    return ExportedCLIP(vision=vision, image_proj=proj, text_adapter=adapter, config=cfg)
