"""Export → reload gives identical embeddings (merged and adapter forms); authors' LLM2Vec4CXR layout import."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from cxr.models.text import LoraSettings, TextEncoder
from cxr.models.text.export import EXPORT_CONFIG_NAME, POOLING_WEIGHTS_NAME, export_text_encoder
from cxr.models.text.tiny import build_tiny_model

TEXTS = ["No acute cardiopulmonary process.", ("Retrieve the matching image", "Small left pleural effusion."),
         "Large right pneumothorax with mediastinal shift."]


@pytest.fixture(scope="module")
def trained(tiny_text_model):
    """A tiny Llama encoder with latent pooling and a LoRA adapter whose weights are not the identity."""
    path = tiny_text_model("llama", seed=3)
    torch.manual_seed(0)
    enc = TextEncoder.from_pretrained(str(path), pooling="latent_attention", init_pooling=True,
                                      latent_num_latents=8, latent_num_heads=4, max_length=64,
                                      instruction="Find similar reports",
                                      lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # LoRA B starts at zero: perturb so merging actually changes weights
        for name, p in enc.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return enc.eval()


@pytest.mark.parametrize("merge", [True, False])
def test_export_reload_identical(trained, tmp_path, merge):
    out = export_text_encoder(trained, tmp_path / "exp", merge_lora=merge)
    cfg = json.loads((out / EXPORT_CONFIG_NAME).read_text())
    assert cfg["pooling"] == "latent_attention" and cfg["instruction"] == "Find similar reports"
    assert (out / POOLING_WEIGHTS_NAME).is_file() and (out / "adapter" / "llm2clip").is_dir() != merge
    reloaded = TextEncoder.from_pretrained(str(out))
    assert reloaded.pooling == trained.pooling and reloaded.max_length == 64
    torch.testing.assert_close(reloaded.encode(TEXTS), trained.encode(TEXTS), atol=1e-5, rtol=1e-4)
    assert json.loads((out / "config.json").read_text())["is_causal"] is False


def test_export_leaves_live_encoder_untouched(trained, tmp_path):
    before = trained.fingerprint()
    export_text_encoder(trained, tmp_path / "a", merge_lora=True)
    export_text_encoder(trained, tmp_path / "b", merge_lora=False)
    assert trained.fingerprint() == before


def _write_authors_layout(tmp_path, num_latents=8):
    """A Llama checkpoint whose safetensors also hold ``latent_attn.*`` (as lukeingawesome/llm2vec4cxr)."""
    base = build_tiny_model("llama", tmp_path / "base", seed=4)
    ckpt = tmp_path / "authors"
    ckpt.mkdir()
    for f in base.iterdir():
        if f.name != "model.safetensors":
            (ckpt / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((base / "config.json").read_text())
    cfg.pop("is_causal", None)  # the authors' config does not carry our flag
    cfg["architectures"] = ["LlamaBiModel"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    tensors = {k: v for k, v in load_file(str(base / "model.safetensors")).items() if k.startswith("model.")}
    torch.manual_seed(5)
    from cxr.models.text.pooling import LatentAttentionPooling

    head = LatentAttentionPooling(64, num_latents=num_latents, num_heads=8)
    tensors.update({f"latent_attn.{k}": v.contiguous() for k, v in head.state_dict().items()})
    save_file(tensors, str(ckpt / "model.safetensors"))
    return ckpt, head


def test_import_authors_layout(tmp_path):
    ckpt, head = _write_authors_layout(tmp_path)
    enc = TextEncoder.from_pretrained(str(ckpt), pooling="latent_attention")
    assert enc.bidirectional and enc.model.config.is_causal is False
    for k, v in head.state_dict().items():
        torch.testing.assert_close(enc.latent_pooling.state_dict()[k], v)
    base_weights = load_file(str(ckpt / "model.safetensors"))
    torch.testing.assert_close(enc.model.embed_tokens.weight, base_weights["model.embed_tokens.weight"])
    # pooled output uses the loaded head
    feats = enc.tokenize(["No acute process."])
    with torch.no_grad():
        expected = head(enc.hidden_states(feats), feats.embed_mask)
    torch.testing.assert_close(enc(feats), expected, atol=1e-5, rtol=1e-4)


def test_latent_pooling_missing_weights_errors(tmp_path):
    path = build_tiny_model("qwen2", tmp_path / "q", seed=6)
    with pytest.raises(ValueError, match="latent_attention"):
        TextEncoder.from_pretrained(str(path), pooling="latent_attention")
