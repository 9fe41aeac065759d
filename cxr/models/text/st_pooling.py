"""cxr's pooling as a self-contained sentence-transformers module, copied into text-encoder exports as
``cxr_pooling.py`` (``SentenceTransformer(export_dir, trust_remote_code=True)`` loads it).

It imports only torch, safetensors and (when present) sentence-transformers, never ``cxr``, so an export works
where cxr is not installed. It reproduces ``cxr.models.text.pooling.pool`` on the token ids a plain tokenizer
produces for ``instruction + "; " + text`` (cxr tokenises the two parts separately; the ids are the same for the
BPE and WordPiece tokenizers tested): per row, the tokenizer's leading/trailing special tokens are left out (by
position, as cxr does), a known instruction at the start of the text is left out too, and the rest is pooled.
``pool(hidden, input_ids, attention_mask, config)`` is the same computation for plain ``transformers.AutoModel``
users (see the export's README section in docs/export.md).
"""

from __future__ import annotations

import json
import os

import torch
from torch import nn

try:  # sentence-transformers >= 5 module base class; plain torch when only transformers is installed
    from sentence_transformers.base.modules.module import Module as _Base
except ImportError:  # pragma: no cover - exercised only without sentence-transformers
    _Base = nn.Module

CONFIG_NAME = "config.json"
LATENT_WEIGHTS = "pooling.safetensors"  # in the export's root, shared with cxr's own loader


class LatentAttention(nn.Module):
    """NV-Embed-style latent attention with cxr's parameter names (``latents``, ``multihead_attn``, ``mlp``)."""

    def __init__(self, d_model: int, num_latents: int, num_heads: int) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.zeros(num_latents, d_model))
        self.multihead_attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, d_model))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lat = self.latents.to(hidden.dtype).unsqueeze(0).expand(hidden.shape[0], -1, -1)
        out = self.mlp(self.multihead_attn(hidden, lat, lat, need_weights=False)[0])
        m = mask.to(out.dtype).unsqueeze(-1)  # each token's output is independent of the others: mask after
        return (out * m).sum(1) / m.sum(1).clamp(min=1)


def text_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, config: dict) -> torch.Tensor:
    """(B, L) mask of the tokens cxr pools: the attended tokens without the tokenizer's leading/trailing special
    tokens (unless ``pool_special_tokens``) and, with ``skip_instruction``, without a known instruction at the
    start of the text (right after the leading special tokens)."""
    attended = attention_mask.bool()
    positions = torch.arange(attended.shape[1], device=attended.device).expand_as(attended)
    first = attended.int().argmax(1)
    last = torch.where(attended, positions, torch.full_like(positions, -1)).max(1).values
    text_start = first + int(config["prefix_len"])
    start = text_start.clone()
    if config.get("skip_instruction", True):
        rows = input_ids.tolist()
        for r, s in enumerate(start.tolist()):
            for ids in sorted(config.get("instruction_ids", []), key=len, reverse=True):
                if ids and rows[r][s:s + len(ids)] == ids:
                    start[r] += len(ids)
                    break
    end = last + 1 - int(config["suffix_len"])
    mask = attended & (positions >= start.unsqueeze(1)) & (positions < end.unsqueeze(1))
    if config.get("pool_special_tokens", False):
        specials = (positions < text_start.unsqueeze(1)) | (positions >= end.unsqueeze(1))
        mask = mask | (attended & specials)
    return mask


def pool(hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, config: dict,
         latent: nn.Module | None = None) -> torch.Tensor:
    """cxr's pooling of ``hidden`` (B, L, d) for the given ``config`` (``1_Pooling/config.json``)."""
    mode = config["mode"]
    attended = attention_mask.bool()
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    positions = torch.arange(hidden.shape[1], device=hidden.device).expand_as(attended)
    if mode == "cls":
        return hidden[rows, attended.int().argmax(1)]
    if mode == "last_token":
        return hidden[rows, torch.where(attended, positions, torch.full_like(positions, -1)).max(1).values]
    mask = text_mask(input_ids, attention_mask, config)
    if mode == "mean":
        m = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    if mode == "weighted_mean":
        w = (mask.cumsum(-1) * mask).to(hidden.dtype).unsqueeze(-1)
        return (hidden * w).sum(1) / w.sum(1)
    if mode == "latent_attention":
        if latent is None:
            raise ValueError("latent_attention pooling needs the LatentAttention weights")
        return latent(hidden, mask)
    raise ValueError(f"unknown cxr pooling mode {mode!r}")


class CxrPooling(_Base):
    """sentence-transformers module: ``token_embeddings`` → ``sentence_embedding`` with cxr's pooling."""

    config_keys = ["mode", "embedding_dimension", "prefix_len", "suffix_len", "skip_instruction",
                   "pool_special_tokens", "instruction_ids", "latent_num_latents", "latent_num_heads"]

    def __init__(self, mode: str, embedding_dimension: int, prefix_len: int = 0, suffix_len: int = 0,
                 skip_instruction: bool = True, pool_special_tokens: bool = False,
                 instruction_ids: list[list[int]] | None = None, latent_num_latents: int | None = None,
                 latent_num_heads: int | None = None) -> None:
        super().__init__()
        self.mode, self.embedding_dimension = mode, int(embedding_dimension)
        self.prefix_len, self.suffix_len, self.skip_instruction = int(prefix_len), int(suffix_len), skip_instruction
        self.pool_special_tokens = bool(pool_special_tokens)
        self.instruction_ids = [list(map(int, ids)) for ids in (instruction_ids or [])]
        self.latent_num_latents, self.latent_num_heads = latent_num_latents, latent_num_heads
        self.latent = None
        if mode == "latent_attention":
            self.latent = LatentAttention(self.embedding_dimension, int(latent_num_latents), int(latent_num_heads))

    def get_config_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.config_keys}

    def forward(self, features: dict, **kwargs) -> dict:
        features["sentence_embedding"] = pool(features["token_embeddings"], features["input_ids"],
                                              features["attention_mask"], self.get_config_dict(), self.latent)
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return self.embedding_dimension

    def get_embedding_dimension(self) -> int:
        return self.embedding_dimension

    def save(self, output_path: str, *args, **kwargs) -> None:
        os.makedirs(output_path, exist_ok=True)
        with open(os.path.join(output_path, CONFIG_NAME), "w") as fh:
            json.dump(self.get_config_dict(), fh, indent=2)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs) -> CxrPooling:
        """Read ``<subfolder>/config.json`` and, for latent attention, the root's ``pooling.safetensors``."""
        with open(os.path.join(model_name_or_path, subfolder, CONFIG_NAME)) as fh:
            module = cls(**json.load(fh))
        if module.latent is not None:
            from safetensors.torch import load_file

            module.latent.load_state_dict(load_file(os.path.join(model_name_or_path, LATENT_WEIGHTS)), strict=True)
        return module
