"""Bidirectional decoders on transformers 5: every supported family × attention implementation."""

from __future__ import annotations

import pytest
import torch

from cxr.models.text.bidirectional import first_position_change

FAMILIES = ["llama", "mistral", "qwen2", "gemma"]


@pytest.fixture(scope="module")
def tiny_dirs(tiny_text_model):
    return {fam: tiny_text_model(fam, seed=1) for fam in FAMILIES + ["bert"]}


def _encoder(path, attn, **kw):
    from cxr.models.text import TextEncoder

    return TextEncoder.from_pretrained(str(path), attn_implementation=attn, **kw)


def _probe(enc, pad):
    tok = enc.tokenizer
    return first_position_change(enc.model, vocab_size=len(tok), pad_id=tok.pad_token_id,
                                 special_ids=set(tok.all_special_ids), extra_kwargs=enc.backbone_kwargs, pad=pad)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_last_token_changes_first_position(tiny_dirs, family, attn):
    enc = _encoder(tiny_dirs[family], attn)
    for pad in (0, 3):  # batch size 1 (no padding) and a left-padded row in a batch of 2
        assert _probe(enc, pad) > 1e-4, (family, attn, pad)
    # control: the same probe on the causal model sees no change, so the probe can fail
    causal = _encoder(tiny_dirs[family], attn, bidirectional=False)
    assert _probe(causal, 0) == 0.0


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES + ["bert"])
def test_padding_never_changes_real_tokens(tiny_dirs, family, attn):
    enc = _encoder(tiny_dirs[family], attn).eval()
    short = enc.tokenize(["No acute process."])
    batch = enc.tokenize(["No acute process.", "Large right pneumothorax with mediastinal shift and effusion."])
    with torch.no_grad():
        alone = enc.hidden_states(short)[0]
        padded = enc.hidden_states(batch)[0]
    n = alone.shape[0]
    assert batch.attention_mask[0].sum() == n and batch.input_ids.shape[1] > n
    real = padded[-n:] if enc.tokenizer.padding_side == "left" else padded[:n]
    torch.testing.assert_close(real, alone, atol=1e-5, rtol=1e-4)
    if family != "bert":
        assert enc.tokenizer.padding_side == "left" and batch.attention_mask[0, 0] == 0


def test_config_flag_persists_and_unsupported_causal_encoder(tiny_dirs):
    import json

    cfg = json.loads((tiny_dirs["llama"] / "config.json").read_text())
    assert cfg["is_causal"] is False
    with pytest.raises(ValueError, match="bidirectional"):
        _encoder(tiny_dirs["bert"], "sdpa", bidirectional=False)


def test_assert_bidirectional_detects_causal(tiny_dirs):
    from cxr.models.text.bidirectional import assert_bidirectional, set_causal

    enc = _encoder(tiny_dirs["llama"], "eager")
    set_causal(enc.model, True)
    enc.bidirectional = False  # backbone_kwargs no longer force is_causal=False
    with pytest.raises(RuntimeError, match="causal"):
        assert_bidirectional(enc)
