"""Pooling: masked, batched modes; latent attention equals the authors' per-sample loop."""

from __future__ import annotations

import pytest
import torch

from cxr.models.text.pooling import LatentAttentionPooling, PoolingMode, pool


def _batch(seed=0, b=4, length=9, d=32):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, length, d, generator=g)
    lengths = torch.tensor([9, 5, 1, 7])
    attn = torch.zeros(b, length, dtype=torch.long)
    for i, n in enumerate(lengths):  # left padding
        attn[i, length - n:] = 1
    embed = attn.clone()
    embed[0, :3] = 0  # row 0: first 3 tokens are an instruction
    return hidden, attn, embed


def test_latent_attention_matches_per_sample_reference():
    torch.manual_seed(0)
    head = LatentAttentionPooling(32, num_latents=16, num_heads=4).eval()
    hidden, attn, embed = _batch()
    with torch.no_grad():
        batched = pool(hidden, attn, embed, PoolingMode.LATENT_ATTENTION, head)
        refs = []
        for i in range(hidden.shape[0]):  # the authors' loop: slice valid tokens, attend, MLP, mean
            tokens = hidden[i][embed[i].bool()].unsqueeze(0)
            lat = head.latents.unsqueeze(0)
            out, _ = head.multihead_attn(tokens, lat, lat)
            refs.append(head.mlp(out).mean(1)[0])
    torch.testing.assert_close(batched, torch.stack(refs), atol=1e-5, rtol=0)


def test_latent_attention_parameter_names_match_authors():
    names = set(LatentAttentionPooling(16, num_latents=4, num_heads=2).state_dict())
    assert names == {"latents", "multihead_attn.in_proj_weight", "multihead_attn.in_proj_bias",
                     "multihead_attn.out_proj.weight", "multihead_attn.out_proj.bias",
                     "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"}


def test_modes_against_loops():
    hidden, attn, embed = _batch(1)
    for i in range(hidden.shape[0]):
        sel = hidden[i][embed[i].bool()]
        valid = hidden[i][attn[i].bool()]
        w = torch.arange(1, sel.shape[0] + 1, dtype=sel.dtype).unsqueeze(-1)
        torch.testing.assert_close(pool(hidden, attn, embed, "mean")[i], sel.mean(0))
        torch.testing.assert_close(pool(hidden, attn, embed, "weighted_mean")[i], (sel * w).sum(0) / w.sum())
        torch.testing.assert_close(pool(hidden, attn, embed, "eos_token")[i], valid[-1])
        torch.testing.assert_close(pool(hidden, attn, embed, "cls")[i], valid[0])
    # right padding works too for first/last token
    right = attn.flip(-1)
    torch.testing.assert_close(pool(hidden, right, right, "last_token")[2], hidden[2, 0])
    assert PoolingMode("bos_token") is PoolingMode.CLS and PoolingMode("eos") is PoolingMode.EOS_TOKEN


def test_empty_embed_mask_is_an_error():
    hidden, attn, embed = _batch()
    embed[1] = 0
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        pool(hidden, attn, embed, "mean")
