"""TextEncoder: instructions and embed_mask, encode contract, fingerprint, LoRA/checkpointing, MNTP head."""

from __future__ import annotations

import pytest
import torch

from cxr.models.text import LoraSettings, TextEncoder, instruction_for_report
from cxr.models.text.instructions import FINDINGS_INSTRUCTION, IMPRESSION_INSTRUCTION, REPORT_INSTRUCTION
from cxr.models.text.pooling import masked_mean
from cxr.models.text.tiny import build_tiny_model

TEXTS = ["No acute cardiopulmonary process.", "Small left pleural effusion.",
         "Large right pneumothorax with mediastinal shift.", "Heart size is normal."]


@pytest.fixture(scope="module")
def llama_dir(tiny_text_model):
    return tiny_text_model("llama", seed=2)


@pytest.fixture(scope="module")
def encoder(llama_dir):
    return TextEncoder.from_pretrained(str(llama_dir))


def test_instruction_attended_but_not_pooled(encoder):
    a = encoder.encode([("Retrieve semantically similar sentences", TEXTS[0])])
    b = encoder.encode([("Classify the given report", TEXTS[0])])
    assert not torch.allclose(a, b, atol=1e-4)  # the instruction is attended to (bidirectional)
    feats = encoder.tokenize([("Classify the given report", TEXTS[0]), TEXTS[1]])
    text_ids = encoder.tokenizer(" " + TEXTS[0], add_special_tokens=False)["input_ids"]
    row = feats.embed_mask[0].bool()
    assert feats.input_ids[0][row].tolist() == text_ids  # mask covers exactly the text tokens
    assert int(feats.attention_mask[0].sum()) > len(text_ids)
    with torch.no_grad():
        pooled = encoder(feats)
        manual = masked_mean(encoder.hidden_states(feats), feats.embed_mask)
    torch.testing.assert_close(pooled, manual)
    torch.testing.assert_close(pooled[0:1], b, atol=1e-5, rtol=1e-4)


def test_empty_text_is_an_error(encoder):
    with pytest.raises(ValueError, match="text 2 is empty"):
        encoder.encode([TEXTS[0], TEXTS[1], "   "])
    with pytest.raises(ValueError, match="text 1 is empty"):
        encoder.tokenize([TEXTS[0], ("Some instruction", "")])


def test_encode_order_dtype_and_batching(encoder):
    whole = encoder.encode(TEXTS, batch_size=4)
    pieces = torch.cat([encoder.encode([t]) for t in TEXTS])
    assert whole.dtype == torch.float32 and whole.device.type == "cpu" and whole.shape == (4, 64)
    torch.testing.assert_close(whole, pieces, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(encoder.encode(TEXTS[::-1], batch_size=3), whole.flip(0), atol=1e-5, rtol=1e-4)


def test_encode_sorts_by_length_and_shows_progress(encoder, monkeypatch, capsys):
    texts = [TEXTS[3], " ".join(TEXTS), TEXTS[0], TEXTS[2] + " " + TEXTS[1], TEXTS[1]]
    widths: list[list[int]] = []
    tokenize = encoder.tokenize

    def recording(items):
        widths.append([len(t) for _, t in items])
        return tokenize(items)

    monkeypatch.setattr(encoder, "tokenize", recording)
    encoder.encode(texts, batch_size=2, show_progress=True)
    flat = [w for batch in widths for w in batch]
    assert [len(b) for b in widths] == [2, 2, 1] and flat == sorted(map(len, texts), reverse=True)
    assert "encode" in capsys.readouterr().err  # tqdm bar on stderr
    encoder.encode(texts[:1])
    assert "encode" not in capsys.readouterr().err  # off by default


def test_truncation_keeps_instruction(llama_dir):
    enc = TextEncoder.from_pretrained(str(llama_dir), max_length=12)
    feats = enc.tokenize([("Retrieve", " ".join(TEXTS))])
    assert feats.input_ids.shape[1] == 12 and feats.embed_mask.sum() > 0
    with pytest.raises(ValueError, match="no room"):
        TextEncoder.from_pretrained(str(llama_dir), max_length=4).tokenize([(REPORT_INSTRUCTION, TEXTS[0])])


def test_default_instruction_and_rule(llama_dir):
    assert instruction_for_report("[FINDINGS] x [IMPRESSION] y") == FINDINGS_INSTRUCTION
    assert instruction_for_report("[IMPRESSION] y") == IMPRESSION_INSTRUCTION
    assert instruction_for_report("plain") == REPORT_INSTRUCTION
    enc = TextEncoder.from_pretrained(str(llama_dir), instruction=REPORT_INSTRUCTION)
    plain = TextEncoder.from_pretrained(str(llama_dir))
    torch.testing.assert_close(enc.encode([TEXTS[0]]), plain.encode([(REPORT_INSTRUCTION, TEXTS[0])]))
    assert enc.fingerprint() != plain.fingerprint()


def test_fingerprint_tracks_weights_and_settings(llama_dir, encoder):
    base = encoder.fingerprint()
    assert TextEncoder.from_pretrained(str(llama_dir)).fingerprint() == base
    assert TextEncoder.from_pretrained(str(llama_dir), max_length=64).fingerprint() != base
    assert TextEncoder.from_pretrained(str(llama_dir), pooling="weighted_mean").fingerprint() != base
    assert TextEncoder.from_pretrained(str(llama_dir), skip_instruction=False).fingerprint() != base
    other = TextEncoder.from_pretrained(str(llama_dir))
    with torch.no_grad():
        p = other.model.layers[1].mlp.down_proj.weight
        p[3, 5] += 1e-3  # one element, not necessarily in the strided sample: the sums catch it
    assert other.fingerprint() != base


def _lora_encoder(llama_dir, checkpointing: bool) -> TextEncoder:
    torch.manual_seed(0)
    enc = TextEncoder.from_pretrained(str(llama_dir), lora=LoraSettings(r=4, alpha=8, dropout=0.0),
                                      freeze=True, gradient_checkpointing=checkpointing,
                                      pooling="latent_attention", init_pooling=True)
    with torch.no_grad():  # LoRA B starts at zero (then lora_A gets no gradient): perturb so both are exercised
        for name, p in enc.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    return enc.train()


def test_lora_gradient_checkpointing_and_freeze(llama_dir):
    runs = {}
    for checkpointing in (False, True):
        enc = _lora_encoder(llama_dir, checkpointing)
        trainable = [n for n, p in enc.named_parameters() if p.requires_grad]
        assert trainable and all("lora_" in n and "llm2clip" in n for n in trainable)
        layer = enc.model.get_base_model().layers[0]
        calls = []
        layer.self_attn.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        emb = enc(enc.tokenize(TEXTS[:2]))
        forward_calls = len(calls)
        emb.float().pow(2).sum().backward()
        # checkpointing really runs: the layer is recomputed during backward (non-reentrant, as configured)
        assert (forward_calls, len(calls)) == ((1, 2) if checkpointing else (1, 1))
        if checkpointing:
            assert layer._gradient_checkpointing_func.keywords == {"use_reentrant": False}
        runs[checkpointing] = {n: p.grad for n, p in enc.named_parameters() if p.requires_grad}
    grads = runs[True]
    assert all(g is not None for g in grads.values())
    assert all(grads[n].abs().sum() > 0 for n in grads if "lora_A" in n or "lora_B" in n)
    for name, g in grads.items():  # recomputation gives the same LoRA gradients as storing activations
        torch.testing.assert_close(g, runs[False][name], atol=1e-6, rtol=1e-5)


def test_latent_pooling_without_weights_is_an_error(llama_dir):
    with pytest.raises(ValueError, match="no pooling weights"):
        TextEncoder.from_pretrained(str(llama_dir), pooling="latent_attention")


def test_lm_head_for_mntp(llama_dir):
    enc = TextEncoder.from_pretrained(str(llama_dir), with_lm_head=True,
                                      lora=LoraSettings(r=2, alpha=4, dropout=0.0))
    feats = enc.tokenize(TEXTS[:2])
    logits = enc.lm_logits(feats)
    assert logits.shape == (*feats.input_ids.shape, enc.vocab_size)
    logits.sum().backward()  # LoRA layers injected in the shared backbone get grads through the LM path
    assert any(p.grad is not None for n, p in enc.named_parameters() if "lora_" in n)
    with pytest.raises(RuntimeError, match="with_lm_head"):
        TextEncoder.from_pretrained(str(llama_dir)).lm_logits(feats)


def test_bf16_weights(llama_dir):
    enc = TextEncoder.from_pretrained(str(llama_dir), torch_dtype="bfloat16")
    assert next(enc.model.parameters()).dtype == torch.bfloat16
    assert enc.encode(TEXTS[:2]).dtype == torch.float32


def test_bert_baseline_and_minilm_tokenizer(tmp_path):
    path = build_tiny_model("bert", tmp_path / "bert", tokenizer="minilm", layers=1)
    enc = TextEncoder.from_pretrained(str(path), pooling="cls")
    feats = enc.tokenize([("query", TEXTS[0])])
    assert feats.input_ids[0, 0] == enc.tokenizer.cls_token_id and feats.input_ids[0, -1] == enc.tokenizer.sep_token_id
    assert feats.embed_mask[0, 0] == 0 and feats.embed_mask[0, -1] == 0
    assert enc.encode(TEXTS).shape == (4, 64)


def test_real_qwen_tokenizer_no_bos(tmp_path):
    path = build_tiny_model("qwen2", tmp_path / "qwen", tokenizer="qwen", hidden_size=32, heads=4, kv_heads=2,
                            layers=1)
    enc = TextEncoder.from_pretrained(str(path))
    assert enc.tokenizer.pad_token == "<|endoftext|>" and enc.tokenizer.padding_side == "left"
    feats = enc.tokenize([("Classify the given report", TEXTS[2]), TEXTS[3]])  # row 1 is shorter: padded
    short = int(feats.attention_mask.sum(1).argmin())
    assert feats.input_ids[short, 0] == enc.tokenizer.pad_token_id and feats.attention_mask[short, 0] == 0
    # no BOS template: the first attended token of the plain row is its first text token
    assert feats.embed_mask[1].tolist() == feats.attention_mask[1].tolist()
    assert enc.encode(TEXTS).shape == (4, 32)


def test_settings_validate_and_resolve_without_loading(tmp_path) -> None:
    """TextEncoderSettings holds the defaults and checks: names or values, a bad dtype refused up front."""
    from cxr.models.text.export import ExportConfig
    from cxr.models.text.settings import TextEncoderSettings, resolve_model_path

    s = TextEncoderSettings(pooling="LATENT_ATTENTION", instruction_format="llm2vec", lora={"r": 2})
    assert s.pooling.value == "latent_attention" and s.instruction_format.value == "llm2vec" and s.lora.r == 2
    with pytest.raises(ValueError, match="torch_dtype"):
        TextEncoderSettings(torch_dtype="float64")
    saved = ExportConfig(pooling="cls", max_length=77, instruction="Find", skip_instruction=True,
                         bidirectional=False, pool_special_tokens=True)
    r = TextEncoderSettings(max_length=9).resolved(saved)
    assert (r.max_length, r.pooling.value, r.instruction, r.bidirectional, r.pool_special_tokens) == (
        9, "cls", "Find", False, True)
    d = TextEncoderSettings().resolved(None)
    assert (d.max_length, d.pooling.value, d.instruction_format.value, d.bidirectional) == (
        512, "mean", "cxr", True)
    # the one "hub id or local path" rule: an existing path or org/name passes, any other missing path fails
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    assert resolve_model_path("org/model") == "org/model"
    for missing in ("./org/model", "no/such/encoder", str(tmp_path / "absent"), "absent"):
        with pytest.raises(FileNotFoundError, match="text encoder not found"):
            resolve_model_path(missing)
