"""Export a trained vision tower as a timm model folder: timm loads it strictly, with its preprocessing.

``export_timm_vision(vision, DIR, transform, image_proj)`` writes, with timm's own ``save_for_hf``:

* ``model.safetensors`` — the backbone's state dict under timm's own key names (no ``vision.backbone.`` prefix);
* ``config.json`` — timm's hub config: ``architecture``, ``num_classes: 0``, ``model_args`` (``in_chans``,
  ``img_size`` where the model takes it) and ``pretrained_cfg`` with the training run's ``mean``/``std``,
  ``input_size``, ``num_classes: 0``, and ``crop_mode``/``crop_pct`` describing the eval geometry;
* ``image_proj.safetensors`` — the projection into the joint space (``weight``, ``bias``);
* ``cxr_vision.json`` — cxr's exact eval preprocessing (``TransformConfig``) and the projection size.

Then ``timm.create_model("local-dir:DIR", pretrained=True)`` rebuilds it with no further arguments, and
``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file="DIR/model.safetensors", ...),
num_classes=0, in_chans=..., img_size=...)`` loads the same weights strictly (timm raises on any key mismatch).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from enum import Enum
from pathlib import Path

import torch
from torch import nn

from cxr.data.transforms import EvalResize, TransformConfig
from cxr.models.vision import VisionTower

WEIGHTS = "model.safetensors"
PROJECTION = "image_proj.safetensors"
CXR_VISION_CONFIG = "cxr_vision.json"
FORMAT_VERSION = 1


def transform_dict(transform: TransformConfig) -> dict:
    """``TransformConfig`` as JSON-ready values (enums by value, tuples as lists)."""
    out = {}
    for key, value in asdict(transform).items():
        if isinstance(value, Enum):
            value = value.value
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def transform_from_dict(data: dict) -> TransformConfig:
    """Inverse of :func:`transform_dict`; unknown keys are an error naming them."""
    from cxr.data.transforms import AugmentStrength

    known = set(TransformConfig.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown preprocessing fields {unknown} (known: {sorted(known)})")
    values = dict(data)
    for key in ("mean", "std"):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    if "strength" in values:
        values["strength"] = AugmentStrength(values["strength"])
    if "eval_resize" in values:
        values["eval_resize"] = EvalResize(values["eval_resize"])
    return TransformConfig(**values)


def _per_channel(value, in_chans: int) -> list[float]:
    values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
    return values * in_chans if len(values) == 1 else values


def timm_pretrained_cfg(vision: VisionTower, transform: TransformConfig) -> dict:
    """timm ``pretrained_cfg`` fields for the run's preprocessing (timm's transforms approximate cxr's: the
    exact pipeline is ``cxr_vision.json``)."""
    c = vision.in_chans
    crop = EvalResize(transform.eval_resize) is EvalResize.CROP
    return {"input_size": [c, transform.image_size, transform.image_size], "mean": _per_channel(transform.mean, c),
            "std": _per_channel(transform.std, c), "num_classes": 0, "crop_pct": 1.0,
            "crop_mode": "center" if crop else "border", "interpolation": "bilinear", "tag": "cxr"}


def export_timm_vision(vision: VisionTower, out_dir: str | Path, transform: TransformConfig | None = None,
                       image_proj: nn.Linear | None = None) -> Path:
    """Write ``vision`` (and its projection) as a timm model folder; see the module docstring."""
    from safetensors.torch import save_file
    from timm.models import _hub

    transform = transform or TransformConfig(image_size=vision.image_size, in_chans=vision.in_chans)
    if transform.in_chans != vision.in_chans:
        raise ValueError(f"preprocessing gives {transform.in_chans} channels, the vision tower takes {vision.in_chans}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    backbone = vision.backbone
    was_training = backbone.training
    backbone.eval()
    try:
        _hub.save_for_hf(backbone, str(out), safe_serialization=True,
                         model_config={"pretrained_cfg": timm_pretrained_cfg(vision, transform)})
    finally:
        backbone.train(was_training)
    (out / "pytorch_model.bin").unlink(missing_ok=True)
    meta = {"format_version": FORMAT_VERSION, "model_name": vision.model_name, "in_chans": vision.in_chans,
            "image_size": vision.image_size, "num_features": vision.num_features,
            "preprocess": transform_dict(transform), "embed_dim": None}
    if image_proj is not None:
        save_file({"weight": image_proj.weight.detach().cpu().contiguous(),
                   "bias": image_proj.bias.detach().cpu().contiguous()}, str(out / PROJECTION))
        meta["embed_dim"] = int(image_proj.out_features)
    (out / CXR_VISION_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def load_timm_vision(path: str | Path) -> tuple[nn.Module, nn.Linear | None, TransformConfig]:
    """timm backbone (strict load, eval mode), projection (None if not exported) and preprocessing of a folder
    written by :func:`export_timm_vision`."""
    import timm
    from safetensors.torch import load_file

    folder = Path(path)
    meta = json.loads((folder / CXR_VISION_CONFIG).read_text())
    backbone = timm.create_model(f"local-dir:{folder.resolve()}", pretrained=True).eval()
    proj = None
    if (folder / PROJECTION).is_file():
        sd = load_file(str(folder / PROJECTION))
        proj = nn.Linear(sd["weight"].shape[1], sd["weight"].shape[0])
        proj.load_state_dict(sd, strict=True)
        proj.eval()
    return backbone, proj, transform_from_dict(meta["preprocess"])


@torch.no_grad()
def features_match(a: nn.Module, b: nn.Module, images: torch.Tensor) -> float:
    """Max |a(images) − b(images)| (eval mode), for checks and tests."""
    return float((a.eval()(images) - b.eval()(images)).abs().max())
