"""Pooling of token hidden states into one embedding: masked, batched (no per-sample Python loop)."""

from __future__ import annotations

from enum import Enum

import torch
from torch import nn


class PoolingMode(str, Enum):
    """How token states become one embedding (paper §A.3). Aliases: ``eos`` → eos_token, ``bos_token``/``first``
    → cls.

    ``eos_token`` and ``last_token`` both pool the last attended token; as in llm2vec, only ``eos_token`` makes
    the encoder append an end-of-sequence token to the text first (``cxr.models.text.instructions.eos_suffix``).
    """

    MEAN = "mean"
    WEIGHTED_MEAN = "weighted_mean"
    EOS_TOKEN = "eos_token"
    LAST_TOKEN = "last_token"
    CLS = "cls"
    LATENT_ATTENTION = "latent_attention"

    @classmethod
    def _missing_(cls, value):
        aliases = {"eos": cls.EOS_TOKEN, "bos_token": cls.CLS, "first": cls.CLS, "cls_token": cls.CLS}
        return aliases.get(str(value).lower())


class LatentAttentionPooling(nn.Module):
    """NV-Embed-style latent attention as in LLM2VEC4CXR: tokens query a bank of latents, then an MLP.

    Parameter names match the authors' checkpoint (``latents``, ``multihead_attn``, ``mlp.0``, ``mlp.2``) so
    ``latent_attn.*`` tensors load directly. No residual/LayerNorm (as released). Because keys and values are
    only latents, each token's output is independent of the other tokens: running the whole padded batch and
    averaging over the valid tokens equals the authors' per-sample loop (paper §F pitfall 12).
    """

    def __init__(self, d_model: int, num_latents: int = 512, num_heads: int = 8) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, d_model))
        self.multihead_attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, d_model))

    def token_outputs(self, hidden: torch.Tensor) -> torch.Tensor:
        """Per-token outputs (B, L, d) before averaging."""
        lat = self.latents.to(hidden.dtype).unsqueeze(0).expand(hidden.shape[0], -1, -1)
        attended, _ = self.multihead_attn(hidden, lat, lat, need_weights=False)
        return self.mlp(attended)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pool (B, L, d) hidden states over ``mask`` (B, L; 1 = token to average) into (B, d)."""
        if mask is None:
            return self.token_outputs(hidden).mean(1)
        # Only the pooled tokens are computed: pack them into one sequence (outputs are per-token independent),
        # then sum back per row; no padding work and no Python loop.
        valid = mask.bool()
        out = self.token_outputs(hidden[valid].unsqueeze(0))[0]
        rows = valid.nonzero()[:, 0]
        sums = torch.zeros(hidden.shape[0], out.shape[-1], dtype=out.dtype, device=out.device)
        sums = sums.index_add(0, rows, out)
        return sums / valid.sum(1, keepdim=True).clamp(min=1).to(out.dtype)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, L, d) over positions where ``mask`` (B, L) is nonzero."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, embed_mask: torch.Tensor, mode: PoolingMode | str,
         latent: LatentAttentionPooling | None = None) -> torch.Tensor:
    """Pool token states (B, L, d) into (B, d).

    ``embed_mask`` marks the tokens that are pooled by mean/weighted_mean/latent_attention (the text without its
    instruction); ``eos_token``/``last_token`` and ``cls`` take the last/first attended token (works for left or
    right padding).
    Rows with an empty ``embed_mask`` are an error (the authors' slicing would pool the whole padded row).
    """
    mode = PoolingMode(mode)
    if embed_mask.shape != attention_mask.shape or hidden.shape[:2] != attention_mask.shape:
        raise ValueError(f"shape mismatch: hidden {tuple(hidden.shape)}, attention_mask "
                         f"{tuple(attention_mask.shape)}, embed_mask {tuple(embed_mask.shape)}")
    empty = (embed_mask.sum(-1) == 0).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"rows {empty.tolist()} have no text tokens to pool (empty embed_mask)")
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if mode is PoolingMode.MEAN:
        return masked_mean(hidden, embed_mask)
    if mode is PoolingMode.WEIGHTED_MEAN:
        # position weights 1..n over the pooled tokens, as llm2vec's weighted_mean
        w = (embed_mask.cumsum(-1) * embed_mask).to(hidden.dtype).unsqueeze(-1)
        return (hidden * w).sum(1) / w.sum(1)
    if mode in (PoolingMode.LAST_TOKEN, PoolingMode.EOS_TOKEN):
        positions = torch.arange(attention_mask.shape[1], device=hidden.device)
        last = (attention_mask.bool() * positions).argmax(-1)
        return hidden[rows, last]
    if mode is PoolingMode.CLS:
        first = attention_mask.bool().int().argmax(-1)  # argmax returns the first maximal index
        return hidden[rows, first]
    if latent is None:
        raise ValueError("latent_attention pooling needs a LatentAttentionPooling module")
    return latent(hidden, embed_mask)
