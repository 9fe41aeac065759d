"""The optimiser and lr schedule of both LightningModules, and the CLIP module's parameter groups.

Groups: layer-wise lr decay on the vision backbone, no decay on norms/biases/scale. Schedule: one rule,
linear warm-up then cosine to a floor (``cosine``, EVA-CLIP's ``warmup_cosine_lr``), linear to a floor
(``linear``, the Hugging Face Trainer default that llm2vec and the authors' text stages ran with) or constant,
stepped every optimiser step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn


class ScheduleKind(str, Enum):
    """What the lr does after the warm-up."""

    COSINE = "cosine"
    LINEAR = "linear"
    CONSTANT = "constant"


def warmup_schedule(step: int, warmup_steps: int, total_steps: int, kind: ScheduleKind = ScheduleKind.COSINE,
                    min_ratio: float = 0.0) -> float:
    """LR multiplier at ``step``: linear warm-up ``(step + 1) / warmup_steps``, then cosine or linear to
    ``min_ratio`` over the remaining ``total_steps``, or constant 1."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind is ScheduleKind.CONSTANT:
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if kind is ScheduleKind.LINEAR:
        return min_ratio + (1 - min_ratio) * (1 - progress)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def adamw_with_schedule(params: Iterable, lr: float, weight_decay: float, warmup_steps: int, total_steps: int,
                        kind: ScheduleKind = ScheduleKind.COSINE, min_ratio: float = 0.0,
                        betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> dict:
    """AdamW plus :func:`warmup_schedule` as Lightning's ``configure_optimizers`` dict (stepped per step).

    ``params`` are tensors or group dicts (a group's own ``lr``/``weight_decay`` win over the defaults).
    """
    kind = ScheduleKind(kind)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_schedule(step, warmup_steps, total_steps, kind, min_ratio))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@dataclass
class GroupSpec:
    """One optimiser group before the base lr is applied (``lr = base_lr * lr_scale``)."""

    name: str
    params: list[nn.Parameter]
    weight_decay: float
    lr_scale: float = 1.0

    def as_dict(self, base_lr: float) -> dict:
        return {"name": self.name, "params": self.params, "weight_decay": self.weight_decay,
                "lr_scale": self.lr_scale, "lr": base_lr * self.lr_scale}


def _decay_split(module: nn.Module, prefix: str, weight_decay: float, lr_scale: float = 1.0) -> list[GroupSpec]:
    """Split trainable params into decay / no-decay (ndim ≤ 1: norms, biases, scalars)."""
    decay, no_decay = [], []
    for _, p in module.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    out = []
    if decay:
        out.append(GroupSpec(f"{prefix}/decay", decay, weight_decay, lr_scale))
    if no_decay:
        out.append(GroupSpec(f"{prefix}/no_decay", no_decay, 0.0, lr_scale))
    return out


def backbone_groups(backbone: nn.Module, weight_decay: float, layer_decay: float) -> list[GroupSpec]:
    """timm's ``param_groups_layer_decay`` (uses the model's ``group_matcher``; lr_scale = decay^(depth))."""
    if layer_decay >= 1.0:
        return _decay_split(backbone, "vision", weight_decay)
    from timm.optim import param_groups_layer_decay

    no_wd = getattr(backbone, "no_weight_decay", lambda: set())()
    groups = param_groups_layer_decay(backbone, weight_decay=weight_decay, no_weight_decay_list=no_wd,
                                      layer_decay=layer_decay)
    return [GroupSpec(f"vision/layer{i}/{'decay' if g['weight_decay'] > 0 else 'no_decay'}", list(g["params"]),
                      float(g["weight_decay"]), float(g.get("lr_scale", 1.0)))
            for i, g in enumerate(groups) if g["params"]]


def clip_param_groups(
    backbone: nn.Module, heads: dict[str, nn.Module], scalars: list[nn.Parameter],
    weight_decay: float, layer_decay: float, text_lr_scale: float = 1.0, text_heads: tuple[str, ...] = (),
) -> list[GroupSpec]:
    """All groups of the CLIP module.

    Args:
        backbone: the timm vision backbone (layer-decayed).
        heads: other trainable modules by name (vision head, text adapter, LoRA-wrapped encoder ...).
        scalars: logit scale / bias: never decayed.
        text_lr_scale: lr multiplier for the modules named in ``text_heads``.
    """
    groups = backbone_groups(backbone, weight_decay, layer_decay)
    for name, mod in heads.items():
        groups += _decay_split(mod, name, weight_decay, text_lr_scale if name in text_heads else 1.0)
    trainable_scalars = [p for p in scalars if p.requires_grad]
    if trainable_scalars:
        groups.append(GroupSpec("logit_scale", trainable_scalars, 0.0, 1.0))
    seen: set[int] = set()
    for g in groups:
        for p in g.params:
            if id(p) in seen:
                raise ValueError(f"parameter in two optimiser groups (group {g.name})")
            seen.add(id(p))
    return groups
