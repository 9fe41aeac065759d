"""Text-side adapters mapping frozen LLM embeddings into the shared image–text space."""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn


class AdapterKind(str, Enum):
    """``ln_linear``: the authors' LayerNorm → Linear (paper §C.2). ``residual_mlp``: Microsoft LLM2CLIP's
    residual MLP blocks on the L2-normalised frozen embedding."""

    LN_LINEAR = "ln_linear"
    RESIDUAL_MLP = "residual_mlp"


class LinearBlock(nn.Module):
    """LN → Linear(d, 2d) → GELU → Linear(2d, d), added residually (LLM2CLIP ``LinearBlock``)."""

    def __init__(self, dim: int, expansion: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, expansion * dim), nn.GELU(),
                                 nn.Linear(expansion * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class TextAdapter(nn.Module):
    """Project a text embedding of size ``in_dim`` to ``out_dim``.

    Args:
        kind: which adapter (see :class:`AdapterKind`).
        in_dim: text-encoder embedding size.
        out_dim: joint embedding size.
        num_blocks: residual blocks for ``residual_mlp`` (LLM2CLIP: 4).
    """

    def __init__(self, kind: AdapterKind, in_dim: int, out_dim: int, num_blocks: int = 4) -> None:
        super().__init__()
        self.kind = AdapterKind(kind)
        if self.kind == AdapterKind.LN_LINEAR:
            self.blocks = nn.Sequential()
        else:
            self.blocks = nn.Sequential(*[LinearBlock(in_dim) for _ in range(num_blocks)])
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.proj.weight.dtype)
        if self.kind == AdapterKind.RESIDUAL_MLP:
            x = F.normalize(x, dim=-1)
        return self.proj(self.norm(self.blocks(x)))
