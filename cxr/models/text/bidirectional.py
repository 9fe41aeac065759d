"""Bidirectional attention for decoder LLMs on transformers 5 (the LLM2Vec conversion, without vendored classes).

transformers >= 5 builds its attention masks in ``masking_utils``; when ``config.is_causal`` is False,
``create_causal_mask``/``create_sliding_window_causal_mask`` return a bidirectional (padding-only) mask, and the
``is_causal=False`` forward kwarg switches SDPA's own causal flag off. We use all three layers of defence
(persisted config flag, per-module flag, forward kwarg) because a silent fallback to causal attention is the #1
risk of this method (paper §F pitfall 1), and ``assert_bidirectional`` proves it at runtime.
"""

from __future__ import annotations

import torch
from torch import nn

# Families the LLM2Vec recipe supports (paper §A.2); others are accepted only if ``assert_bidirectional`` passes.
SUPPORTED_DECODER_TYPES: frozenset[str] = frozenset({"llama", "mistral", "qwen2", "gemma"})


def is_decoder_config(config) -> bool:
    """True for decoder-only LLM configs (causal by default), False for BERT-style encoders."""
    if config.model_type in SUPPORTED_DECODER_TYPES:
        return True
    if getattr(config, "is_encoder_decoder", False):
        return False
    archs = getattr(config, "architectures", None) or []
    return bool(getattr(config, "is_decoder", False)) or any(a.endswith("ForCausalLM") for a in archs)


def set_causal(model: nn.Module, causal: bool) -> None:
    """Set ``is_causal`` on the model's config (persisted by ``save_pretrained``) and on every attention module."""
    for module in model.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(cfg, "model_type"):
            cfg.is_causal = causal
        if hasattr(module, "is_causal") and not isinstance(module.is_causal, (nn.Module, type(None))):
            module.is_causal = causal


def forward_kwargs(decoder: bool, bidirectional: bool) -> dict[str, bool]:
    """Extra kwargs for the backbone's forward: ``is_causal=False`` for bidirectional decoders (encoders take none).

    Decoders also get ``use_cache=False``: an encoder never generates, and a KV cache built during the forward is
    appended to again when activation checkpointing recomputes the layer (FSDP's checkpoint wrapper), which
    doubles the key length and breaks the attention shapes.
    """
    if not decoder:
        return {}
    return {"is_causal": False, "use_cache": False} if bidirectional else {"use_cache": False}


def _probe_ids(vocab_size: int, special_ids: set[int], length: int, seed: int) -> torch.Tensor:
    """Deterministic non-special token ids for the probe."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (length * 4,), generator=g)
    ids = ids[~torch.isin(ids, torch.tensor(sorted(special_ids) or [-1]))]
    if ids.numel() < length:
        raise RuntimeError("could not draw non-special probe tokens")
    return ids[:length]


@torch.no_grad()
def first_position_change(model: nn.Module, *, vocab_size: int, pad_id: int, special_ids: set[int],
                          extra_kwargs: dict, length: int = 6, pad: int = 0, seed: int = 0) -> float:
    """Max |Δ hidden[first real token]| when only the last token changes (0 ⇔ causal).

    With ``pad > 0`` the probe is left-padded by ``pad`` tokens inside a batch of two (the other row unpadded),
    so the padded-mask path is exercised too.
    """
    device = next(model.parameters()).device
    a = _probe_ids(vocab_size, special_ids, length, seed)
    b = a.clone()
    alt = _probe_ids(vocab_size, special_ids | {int(a[-1])}, 1, seed + 1)
    b[-1] = alt[0]
    outs = []
    for seq in (a, b):
        ids = torch.cat([torch.full((pad,), pad_id, dtype=torch.long), seq]).unsqueeze(0)
        mask = torch.cat([torch.zeros(pad, dtype=torch.long), torch.ones(length, dtype=torch.long)]).unsqueeze(0)
        if pad:
            other = _probe_ids(vocab_size, special_ids, length + pad, seed + 2).unsqueeze(0)
            ids, mask = torch.cat([ids, other]), torch.cat([mask, torch.ones_like(mask)])
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), **extra_kwargs)
        outs.append(out.last_hidden_state[0, pad].float())
    return float((outs[0] - outs[1]).abs().max())


def assert_bidirectional(encoder, tol: float = 1e-6) -> None:
    """Raise ``RuntimeError`` unless the encoder's backbone attends to later tokens (batch 1 and left-padded batch).

    ``encoder`` is a ``TextEncoder`` (uses its backbone, tokenizer and forward kwargs).
    """
    tok = encoder.tokenizer
    special = set(int(i) for i in tok.all_special_ids)
    was_training = encoder.model.training
    encoder.model.eval()
    try:
        for pad in (0, 2):
            delta = first_position_change(encoder.model, vocab_size=min(len(tok), encoder.vocab_size),
                                          pad_id=int(tok.pad_token_id), special_ids=special,
                                          extra_kwargs=encoder.backbone_kwargs, pad=pad)
            if delta <= tol:
                raise RuntimeError(
                    f"text encoder {encoder.model_name_or_path!r} is causal (first-token change {delta:.2e} with "
                    f"{'left padding' if pad else 'batch size 1'}); bidirectional attention was not applied")
    finally:
        encoder.model.train(was_training)
