"""A self-contained CLIP export folder (``export_clip``) and its loader for ``cxr.load``.

Layout::

    clip_export.json      towers, adapter, similarity rule, and ``inference`` (preprocessing + text settings)
    model.safetensors     image_proj.*, text_adapter.*, logit_scale (and logit_bias for SigLIP)
    vision/               the backbone as a timm folder (``cxr.models.timm_export``): timm loads it strictly
    text_encoder/         the text encoder (LoRA merged) as a text export: sentence-transformers / AutoModel load it

With ``include_text_encoder=False`` the text side names the training's encoder path instead (a frozen LLM need
not be copied); ``cxr.load`` then needs that path to exist.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG = "clip_export.json"
WEIGHTS = "model.safetensors"
VISION_DIR = "vision"
TEXT_DIR = "text_encoder"
FORMAT_VERSION = 2


def export_clip_folder(module, out_dir: str | Path, include_text_encoder: bool = True) -> Path:
    """Write ``module`` (a ``CLIPAlignModule``) as the folder described in the module docstring."""
    from safetensors.torch import save_file

    from cxr.models.inference_config import inference_record, preprocessing_of
    from cxr.models.text.export import export_text_encoder
    from cxr.models.timm_export import export_timm_vision

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()
          if k.startswith(("image_proj.", "text_adapter.")) or k in ("logit_scale", "logit_bias")}
    save_file(sd, str(out / WEIGHTS))
    transform, _ = preprocessing_of(module)
    export_timm_vision(module.vision, out / VISION_DIR, transform, module.image_proj)
    t = module.text
    if include_text_encoder:
        had_encoder = t.encoder is not None
        export_text_encoder(t.build_encoder(), out / TEXT_DIR, merge_lora=True)
        if not had_encoder:
            t.release_encoder()  # a cached tower had released its LLM: keep it that way
    v = module.vision
    cfg = {"format_version": FORMAT_VERSION,
           "vision": {"model_name": v.model_name, "in_chans": v.in_chans, "image_size": v.image_size},
           "vision_dir": VISION_DIR, "embed_dim": int(module.image_proj.out_features),
           "text": {"encoder": t.model_name_or_path, "adapter": t.adapter_kind.value, "adapter_blocks": t.adapter_blocks,
                    "embedding_dim": t.embedding_dim, "instruction": t.instruction, "max_length": t.max_length,
                    "torch_dtype": t.torch_dtype, "exported_dir": TEXT_DIR if include_text_encoder else None},
           "loss": {"normalize": module.loss_config.normalize, "exp_scale": module.loss_config.exp_scale},
           "inference": inference_record(module)}
    (out / CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")
    return out

