"""Weight-space interpolation of an adapted text encoder toward its starting weights (WiSE-FT).

Wortsman et al. 2022 ("Robust fine-tuning of zero-shot models"): ``start + alpha * (trained - start)`` keeps most of
what fine-tuning gained and what the starting model could already do. For LLM2VEC4CXR it keeps the near-ceiling
skills of the unadapted encoder (retrieving a report from its abbreviated rewrite) that a short adaptation can
trade for clinical content (docs/llm2vec4cxr.md, "every text benchmark").

What moves, per trainable parameter of the adapted encoder:

* present in the starting encoder (full fine-tuning): interpolated;
* a LoRA ``lora_B`` matrix: scaled by ``alpha`` (it starts at zero, so the adapter's update ``B A`` is scaled
  exactly);
* anything else new (a fresh latent-attention head, LoRA ``lora_A``): kept as trained: it has no meaningful start.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class InterpolationReport:
    """How many parameter tensors were interpolated, scaled (LoRA B) and kept."""

    interpolated: int
    scaled: int
    kept: int


@torch.no_grad()
def interpolate_toward_start(model: nn.Module, start_state: dict[str, torch.Tensor], alpha: float,
                             ) -> InterpolationReport:
    """In place: every trainable parameter of ``model`` becomes ``start + alpha * (current - start)``.

    ``start_state`` maps parameter names (as ``model.named_parameters()`` spells them) to the starting values;
    computed in float32 and cast back. ``alpha`` 1 keeps the trained weights, 0 restores the start.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    interpolated = scaled = kept = 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        start = start_state.get(name)
        if start is not None:
            if start.shape != p.shape:
                raise ValueError(f"{name}: start shape {tuple(start.shape)} != trained {tuple(p.shape)}")
            start = start.to(device=p.device, dtype=torch.float32)
            p.copy_((start + alpha * (p.float() - start)).to(p.dtype))
            interpolated += 1
        elif ".lora_B." in f".{name}.":
            p.mul_(alpha)
            scaled += 1
        else:
            kept += 1
    return InterpolationReport(interpolated, scaled, kept)
