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


def export_clip(module, out_dir: str | Path) -> Path:
    """Write ``model.safetensors`` (vision.*, image_proj.*, text_adapter.*, logit_scale) + ``clip_export.json``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()
          if k.startswith(("vision.", "image_proj.", "text_adapter.")) or k == "logit_scale"}
    save_file(sd, str(out / WEIGHTS))
    v, t = module.vision, module.text
    cfg = {"vision": {"model_name": v.model_name, "in_chans": v.in_chans, "image_size": v.image_size},
           "embed_dim": int(module.image_proj.out_features),
           "text": {"encoder": t.encoder_name, "adapter": t.adapter_kind.value, "adapter_blocks": t.adapter_blocks,
                    "embedding_dim": t.embedding_dim, "instruction": t.instruction},
           "loss": {"normalize": module.loss_config.normalize, "exp_scale": module.loss_config.exp_scale}}
    (out / CONFIG).write_text(json.dumps(cfg, indent=2))
    return out


def load_exported_clip(path: str | Path) -> ExportedCLIP:
    """Rebuild the exported towers (strict load: every exported tensor must fit)."""
    from safetensors.torch import load_file

    folder = Path(path)
    cfg = json.loads((folder / CONFIG).read_text())
    sd = load_file(str(folder / WEIGHTS))
    vision = VisionTower(**cfg["vision"])
    proj = nn.Linear(vision.num_features, cfg["embed_dim"])
    adapter = TextAdapter(AdapterKind(cfg["text"]["adapter"]), cfg["text"]["embedding_dim"], cfg["embed_dim"],
                          cfg["text"]["adapter_blocks"])
    for prefix, mod in (("vision.", vision), ("image_proj.", proj), ("text_adapter.", adapter)):
        mod.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}, strict=True)
        mod.eval()
    return ExportedCLIP(vision=vision, image_proj=proj, text_adapter=adapter, config=cfg)
