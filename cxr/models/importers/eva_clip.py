"""EVA-CLIP ``visual.*`` weights (EVA02-CLIP, as in the authors' ``eva_clip/eva_vit_model.py``) → timm ``Eva``.

The renaming is timm's own ``timm.models.eva.checkpoint_filter_fn`` (``mlp.w1/w2/w3`` → ``fc1_g/fc1_x/fc2``,
``ffn_ln`` → ``mlp.norm``, ``inner_attn_ln`` → ``attn.norm``, position-embedding resampling). This module adds
what an import needs around it: the architecture read from the shapes, the projection ``head`` split off, the
RoPE buffers (``rope.freqs_cos/sin``, shared into every block) checked against the grid timm computes instead of
dropped unseen, and a strict load — every key accounted for.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from cxr.models.importers.common import ImportReport, KeyFate, UnmappedKeysError

#: timm model of EVA02-CLIP-L/14(-336): the authors' vision tower (run at 448 px).
EVA02_CLIP_L = "eva02_large_patch14_clip_336"
_L14_ARCH = {"embed_dim": 1024, "depth": 24, "num_heads": 16, "patch_size": 14, "mlp_ratio": 4 * 2 / 3}
_ROPE = re.compile(r"^(?:blocks\.\d+\.attn\.)?rope\.freqs_(cos|sin)$")


@dataclass(frozen=True)
class EvaArchitecture:
    """Shapes read from an EVA-CLIP visual state dict."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    image_size: int
    in_chans: int
    mlp_hidden: int
    head_dim_out: int | None  # the CLIP projection's output size (``head``), if present

    def timm_kwargs(self) -> dict:
        """``timm.create_model`` overrides of :data:`EVA02_CLIP_L` needed for these shapes (empty for L/14)."""
        wanted = {"embed_dim": self.embed_dim, "depth": self.depth, "num_heads": self.num_heads,
                  "patch_size": self.patch_size, "mlp_ratio": self.mlp_hidden / self.embed_dim}
        out = {}
        for k, v in wanted.items():
            ref = _L14_ARCH[k]
            same = math.isclose(v, ref, rel_tol=1e-3) if k == "mlp_ratio" else v == ref
            if k == "mlp_ratio":  # timm and EVA-CLIP both take int(dim * ratio): the L/14 ratio must give the width
                same = int(self.embed_dim * ref) == self.mlp_hidden
            if not same:
                out[k] = v
        return out


def read_architecture(visual: dict[str, torch.Tensor]) -> EvaArchitecture:
    """Infer the EVA architecture from ``visual`` (keys without the ``visual.`` prefix)."""
    needed = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.w1.weight")
    missing = [k for k in needed if k not in visual]
    if missing:
        raise UnmappedKeysError(f"not an EVA02-CLIP visual state dict: missing {['visual.' + k for k in missing]}")
    width = int(visual["cls_token"].shape[-1])
    patch = visual["patch_embed.proj.weight"]
    grid = math.isqrt(int(visual["pos_embed"].shape[1]) - 1)
    if grid * grid != visual["pos_embed"].shape[1] - 1:
        raise ValueError(f"visual.pos_embed {tuple(visual['pos_embed'].shape)} is not a square grid + CLS token")
    depth = 1 + max(int(k.split(".")[1]) for k in visual if k.startswith("blocks."))
    rope = visual.get("rope.freqs_cos")
    # the rotary table covers one head (EVA-CLIP: dim = head_dim / 2 per axis, two axes); else 64-wide heads
    head_dim = int(rope.shape[-1]) if rope is not None else 64
    head = visual.get("head.weight")
    return EvaArchitecture(embed_dim=width, depth=depth, num_heads=width // head_dim,
                           patch_size=int(patch.shape[-1]), image_size=grid * int(patch.shape[-1]),
                           in_chans=int(patch.shape[1]), mlp_hidden=int(visual["blocks.0.mlp.w1.weight"].shape[0]),
                           head_dim_out=None if head is None else int(head.shape[0]))


def _check_rope(key: str, value: torch.Tensor, backbone: nn.Module) -> None:
    """EVA-CLIP stores its fixed rotary table; timm computes it. They must agree (same grid, same frequencies)."""
    rope = getattr(backbone, "rope", None)
    if rope is None:
        raise ValueError(f"visual.{key}: the checkpoint uses rotary embeddings, the timm model does not")
    emb = rope.get_embed()  # (N, 2·head_dim): sin then cos
    half = emb.shape[-1] // 2
    ours = emb[:, :half] if key.endswith("sin") else emb[:, half:]
    if ours.shape != value.shape or not torch.allclose(ours.float(), value.float(), atol=1e-3):
        diff = (ours.float() - value.float()).abs().max().item() if ours.shape == value.shape else None
        raise ValueError(f"visual.{key} {tuple(value.shape)} differs from timm's rotary table {tuple(ours.shape)}"
                         f" (max |diff| {diff}); the image size or RoPE grid does not match the checkpoint")


def convert_visual(visual: dict[str, torch.Tensor], backbone: nn.Module, report: ImportReport,
                   prefix: str = "visual.") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(timm backbone state dict, {"weight", "bias"} of the CLIP head)`` from EVA-CLIP ``visual`` tensors.

    Marks every source key (``prefix`` + key) in ``report``. The backbone's state dict must come out complete:
    the caller loads it strictly.
    """
    from timm.models.eva import checkpoint_filter_fn

    head = {}
    rest = {}
    for key, value in visual.items():
        if key in ("head.weight", "head.bias"):
            head[key.split(".")[1]] = value
            report.mark(prefix + key, KeyFate.LOADED)
        elif _ROPE.match(key):
            _check_rope(key, value, backbone)
            report.mark(prefix + key, KeyFate.VERIFIED)
        else:
            rest[key] = value
    converted = checkpoint_filter_fn({prefix + k: v for k, v in rest.items()}, backbone)
    if len(converted) != len(rest):  # timm's filter renames 1:1 here; anything it drops would go unseen
        raise UnmappedKeysError(f"timm's EVA filter kept {len(converted)} of {len(rest)} visual tensors")
    expected = set(backbone.state_dict())
    unknown, missing = sorted(set(converted) - expected), sorted(expected - set(converted))
    if unknown or missing:
        raise UnmappedKeysError(f"EVA visual weights do not fit timm {type(backbone).__name__}: unexpected "
                                f"{unknown[:8]}, missing {missing[:8]}")
    for key in rest:
        report.mark(prefix + key, KeyFate.LOADED)
    return converted, head
