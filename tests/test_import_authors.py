"""Importers of the authors' released weights on state dicts with their exact key names (small dims).

The EVA-CLIP visual keys are written out from the authors' model definition (``eva_clip/eva_vit_model.py``,
EVA02-CLIP-L/14 config: qkv bias, sub-LN, naive SwiGLU, RoPE with ``intp_freq``, CLS token + final norm, ``head``)
with the RoPE tables computed by EVA-CLIP's formula; the text keys come from the authors' module structure
rebuilt with the same libraries (``LLM2VecWithProj``: ``core``/``model`` alias, peft-wrapped Llama with the
``default`` and ``llm2clip`` adapters, ``latent_attn``; ``projection`` = LayerNorm + Linear).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from cxr.models.importers.common import KeyFate, UnmappedKeysError
from cxr.models.importers.llm2clip4cxr import ImportOptions, import_llm2clip4cxr, save_imported, smoke_forward
from cxr.models.importers.llm2vec4cxr import import_llm2vec4cxr
from cxr.models.text.pooling import LatentAttentionPooling

WIDTH, DEPTH, HEADS, PATCH, IMAGE, EMBED = 64, 2, 2, 14, 56, 48
HIDDEN, LATENTS = 32, 8


def eva_rope(grid: int, head_dim: int, pt_seq_len: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """EVA-CLIP ``VisionRotaryEmbeddingFast(dim=head_dim // 2, pt_seq_len, ft_seq_len=grid)`` tables."""
    dim = head_dim // 2
    freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    t = torch.arange(grid) / grid * pt_seq_len
    f = torch.einsum("i,f->if", t, freqs).repeat_interleave(2, dim=-1)  # repeat '... n -> ... (n r)', r=2
    f = torch.cat([f[:, None, :].expand(grid, grid, dim), f[None, :, :].expand(grid, grid, dim)], dim=-1)
    f = f.reshape(-1, 2 * dim)
    return f.cos(), f.sin()


def eva_clip_visual(seed: int = 0) -> dict[str, torch.Tensor]:
    """``visual.*`` of the authors' EVAVisionTransformer for an EVA02-CLIP config at small dims."""
    g = torch.Generator().manual_seed(seed)
    hidden = int(WIDTH * 2.6667)  # mlp_ratio 2.6667 (EVA02-CLIP-L-14-336.json)
    grid = IMAGE // PATCH
    cos, sin = eva_rope(grid, WIDTH // HEADS)

    def rnd(*shape):
        return torch.randn(*shape, generator=g) * 0.05

    def norm(prefix):
        return {f"{prefix}.weight": 1 + rnd(WIDTH if "ffn" not in prefix else hidden), f"{prefix}.bias":
                rnd(WIDTH if "ffn" not in prefix else hidden)}

    sd = {"cls_token": rnd(1, 1, WIDTH), "pos_embed": rnd(1, grid * grid + 1, WIDTH),
          "patch_embed.proj.weight": rnd(WIDTH, 3, PATCH, PATCH), "patch_embed.proj.bias": rnd(WIDTH),
          "rope.freqs_cos": cos, "rope.freqs_sin": sin, **norm("norm"),
          "head.weight": rnd(EMBED, WIDTH), "head.bias": rnd(EMBED)}
    for i in range(DEPTH):
        b = f"blocks.{i}"
        sd.update({**norm(f"{b}.norm1"), **norm(f"{b}.norm2"),
                   f"{b}.attn.q_proj.weight": rnd(WIDTH, WIDTH), f"{b}.attn.q_proj.bias": rnd(WIDTH),
                   f"{b}.attn.k_proj.weight": rnd(WIDTH, WIDTH),  # k_proj has no bias in EVA-CLIP
                   f"{b}.attn.v_proj.weight": rnd(WIDTH, WIDTH), f"{b}.attn.v_proj.bias": rnd(WIDTH),
                   f"{b}.attn.inner_attn_ln.weight": 1 + rnd(WIDTH), f"{b}.attn.inner_attn_ln.bias": rnd(WIDTH),
                   f"{b}.attn.proj.weight": rnd(WIDTH, WIDTH), f"{b}.attn.proj.bias": rnd(WIDTH),
                   f"{b}.attn.rope.freqs_cos": cos, f"{b}.attn.rope.freqs_sin": sin,  # the shared rope module
                   f"{b}.mlp.w1.weight": rnd(hidden, WIDTH), f"{b}.mlp.w1.bias": rnd(hidden),
                   f"{b}.mlp.w2.weight": rnd(hidden, WIDTH), f"{b}.mlp.w2.bias": rnd(hidden),
                   f"{b}.mlp.ffn_ln.weight": 1 + rnd(hidden), f"{b}.mlp.ffn_ln.bias": rnd(hidden),
                   f"{b}.mlp.w3.weight": rnd(WIDTH, hidden), f"{b}.mlp.w3.bias": rnd(WIDTH)})
    return {"visual." + k: v for k, v in sd.items()}


class _LLM2Vec(nn.Module):
    """The attribute layout of the authors' ``LLM2Vec``: ``model`` (bidirectional Llama) and ``latent_attn``."""

    def __init__(self, model: nn.Module, latent: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.latent_attn = latent


class _LLM2VecWithProj(nn.Module):
    """``training/main.py::LLM2VecWithProj``: ``core``, ``projection`` and ``model`` (an alias of ``core``)."""

    def __init__(self, core: nn.Module, projection: nn.Module) -> None:
        super().__init__()
        self.core = core
        self.projection = projection
        self.model = core


@pytest.fixture(scope="module")
def authors(tmp_path_factory):
    """The HF llm2vec4cxr folder and the authors' CLIP state dict built on it."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModel

    from cxr.models.text.tiny import build_tiny_model

    tmp = tmp_path_factory.mktemp("authors")
    tiny = build_tiny_model("llama", tmp / "tiny", hidden_size=HIDDEN, layers=2, heads=4, kv_heads=2, seed=7)
    hf = tmp / "hf_llm2vec4cxr"  # LLM2Vec4CXRModel(LlamaBiModel): bare Llama keys + latent_attn.*
    hf.mkdir()
    for f in tiny.iterdir():
        if f.name not in ("model.safetensors", "config.json"):
            (hf / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((tiny / "config.json").read_text())
    cfg.pop("is_causal", None)
    cfg.update(architectures=["LLM2Vec4CXRModel"], auto_map={"AutoModel": "modeling_llm2vec4cxr.LLM2Vec4CXRModel"})
    (hf / "config.json").write_text(json.dumps(cfg))
    (hf / "llm2vec_config.json").write_text(json.dumps({"pooling_mode": "latent_attention", "max_length": 512}))
    llama = AutoModel.from_pretrained(str(tiny))
    torch.manual_seed(11)
    latent = LatentAttentionPooling(HIDDEN, num_latents=LATENTS, num_heads=8)
    tensors = {k: v.contiguous() for k, v in llama.state_dict().items()}
    tensors.update({f"latent_attn.{k}": v.contiguous() for k, v in latent.state_dict().items()})
    save_file(tensors, str(hf / "model.safetensors"))

    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      bias="none", task_type=TaskType.FEATURE_EXTRACTION)
    peft_model = get_peft_model(llama, lora)  # creates 'default' (as the authors' add_lora_adapters)
    peft_model.add_adapter("llm2clip", lora)
    peft_model.set_adapter("llm2clip")
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if ".lora_B.llm2clip." in name:
                p.normal_(0, 0.1)  # trained LoRA: B is no longer zero
    projection = nn.Sequential(nn.LayerNorm(HIDDEN), nn.Linear(HIDDEN, EMBED))
    with torch.no_grad():
        projection[0].weight.normal_(1, 0.1)
    text = _LLM2VecWithProj(_LLM2Vec(peft_model, latent), projection)
    sd = {**eva_clip_visual(), **{"text." + k: v for k, v in text.state_dict().items()},
          "logit_scale": torch.tensor(math.log(1 / 0.07))}
    return {"tmp": tmp, "hf": hf, "sd": sd, "latent": latent}


@pytest.fixture(scope="module")
def text_export(authors):
    out = authors["tmp"] / "llm2vec4cxr"
    report = import_llm2vec4cxr(authors["hf"], out)
    return out, report


def test_key_layout_is_the_authors(authors):
    sd = authors["sd"]
    assert "text.core.model.base_model.model.layers.0.self_attn.q_proj.lora_A.llm2clip.weight" in sd
    assert "text.model.model.base_model.model.layers.0.self_attn.q_proj.base_layer.weight" in sd  # the alias
    assert "text.core.model.base_model.model.layers.1.self_attn.o_proj.lora_B.default.weight" in sd
    assert "text.core.latent_attn.multihead_attn.in_proj_weight" in sd and "text.projection.1.weight" in sd
    assert "visual.blocks.1.attn.rope.freqs_cos" in sd and "visual.blocks.0.mlp.w3.weight" in sd


def test_llm2vec4cxr_import_maps_every_key(authors, text_export):
    from cxr.models.text import TextEncoder

    out, report = text_export
    source = load_file(str(authors["hf"] / "model.safetensors"))
    assert set(report.fates) == set(source) and set(report.fates.values()) == {KeyFate.LOADED}
    enc = TextEncoder.from_pretrained(str(out))
    assert enc.pooling.value == "latent_attention" and enc.bidirectional and enc.max_length == 512
    for k, v in authors["latent"].state_dict().items():
        torch.testing.assert_close(enc.latent_pooling.state_dict()[k], v)
    # the same as the HF folder loaded directly with latent pooling
    direct = TextEncoder.from_pretrained(str(authors["hf"]), pooling="latent_attention")
    texts = ["No acute process.", ("Retrieve the image", "Small left effusion.")]
    torch.testing.assert_close(enc.encode(texts), direct.encode(texts), atol=1e-5, rtol=1e-5)


def test_llm2vec4cxr_unknown_key_is_an_error(authors, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in authors["hf"].iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    tensors = load_file(str(bad / "model.safetensors"))
    tensors["pooler.dense.weight"] = torch.zeros(2, 2)
    save_file(tensors, str(bad / "model.safetensors"))
    with pytest.raises(UnmappedKeysError, match="pooler.dense.weight"):
        import_llm2vec4cxr(bad, tmp_path / "out")


def _import(authors, text_export, sd=None, path_name="llm2clip4cxr.bin", **options):
    path = authors["tmp"] / path_name
    torch.save(sd if sd is not None else authors["sd"], path)
    return import_llm2clip4cxr(path, ImportOptions(text_encoder=str(text_export[0]), torch_dtype="float32",
                                                   **options))


@pytest.fixture(scope="module")
def imported(authors, text_export):
    return _import(authors, text_export)


def test_every_key_of_llm2clip4cxr_is_mapped(authors, imported):
    module, hparams, report = imported
    sd = authors["sd"]
    assert set(report.fates) == set(sd)  # 100 % of the keys have a fate, none left over
    counts = report.counts()
    n_visual = sum(k.startswith("visual.") for k in sd)
    n_rope = sum("rope.freqs" in k for k in sd)
    lora = [k for k in sd if k.startswith("text.core.") and ".lora_" in k]
    assert counts["loaded"] == (n_visual - n_rope) + 4 + 1 + len([k for k in lora if ".llm2clip." in k])
    assert counts["alias"] == sum(k.startswith("text.model.") for k in sd)
    assert counts["inactive_adapter"] == len([k for k in lora if ".default." in k]) == 2 * 2 * 4
    assert counts["verified"] == n_rope + sum(k.startswith("text.core.") and ".lora_" not in k for k in sd)
    v = hparams["vision"]["init_args"]
    assert v["model_name"] == "eva02_large_patch14_clip_336" and v["image_size"] == IMAGE and v["in_chans"] == 3
    assert v["model_kwargs"] == {"embed_dim": WIDTH, "depth": DEPTH, "num_heads": HEADS}
    assert hparams["text"]["init_args"]["lora"] == {"r": 4, "alpha": 8, "dropout": 0.1, "adapter_name": "llm2clip",
                                                     "target_modules": ["k_proj", "o_proj", "q_proj", "v_proj"]}
    assert hparams["loss"] == {"normalize": False, "exp_scale": False}


def test_weights_land_where_the_authors_had_them(authors, imported):
    module, _, _ = imported
    sd, ours = authors["sd"], module.state_dict()
    pairs = {"vision.backbone.blocks.1.mlp.fc1_g.weight": "visual.blocks.1.mlp.w1.weight",
             "vision.backbone.blocks.1.mlp.fc1_x.bias": "visual.blocks.1.mlp.w2.bias",
             "vision.backbone.blocks.0.mlp.fc2.weight": "visual.blocks.0.mlp.w3.weight",
             "vision.backbone.blocks.0.mlp.norm.weight": "visual.blocks.0.mlp.ffn_ln.weight",
             "vision.backbone.blocks.0.attn.norm.bias": "visual.blocks.0.attn.inner_attn_ln.bias",
             "vision.backbone.blocks.0.attn.q_proj.bias": "visual.blocks.0.attn.q_proj.bias",
             "vision.backbone.pos_embed": "visual.pos_embed", "vision.backbone.norm.weight": "visual.norm.weight",
             "image_proj.weight": "visual.head.weight", "text_adapter.norm.weight": "text.projection.0.weight",
             "text_adapter.proj.bias": "text.projection.1.bias", "logit_scale": "logit_scale",
             "text.encoder.model.base_model.model.layers.1.self_attn.v_proj.lora_B.llm2clip.weight":
                 "text.core.model.base_model.model.layers.1.self_attn.v_proj.lora_B.llm2clip.weight",
             "text.encoder.latent_pooling.latents": "text.core.latent_attn.latents"}
    for mine, theirs in pairs.items():
        torch.testing.assert_close(ours[mine], sd[theirs].reshape(ours[mine].shape), msg=mine)
    image_shape, text_shape = smoke_forward(module)
    assert tuple(image_shape) == (1, EMBED) and tuple(text_shape) == (1, EMBED)


def test_lora_is_active_in_the_imported_text_tower(imported):
    module, _, _ = imported
    texts = ["[IMPRESSION] Small right pleural effusion."]
    with torch.no_grad():
        with_lora = module.encode_texts(texts)
        with module.text.encoder.model.disable_adapter():
            without = module.encode_texts(texts)
    assert (with_lora - without).abs().max() > 1e-4


def test_bad_checkpoints_fail_naming_the_keys(authors, text_export):
    sd = dict(authors["sd"])
    extra = {**sd, "visual.mask_token": torch.zeros(1, 1, WIDTH)}
    with pytest.raises(UnmappedKeysError, match="visual"):
        _import(authors, text_export, extra, "extra.bin")
    with pytest.raises(UnmappedKeysError, match="other.thing"):
        _import(authors, text_export, {**sd, "other.thing": torch.zeros(1)}, "other.bin")
    missing = {k: v for k, v in sd.items() if k != "visual.blocks.1.mlp.w3.bias"}
    with pytest.raises(UnmappedKeysError, match="blocks.1.mlp.fc2.bias"):
        _import(authors, text_export, missing, "missing.bin")
    tampered = dict(sd)
    key = "text.core.model.base_model.model.layers.0.mlp.up_proj.weight"
    tampered[key] = tampered[key] + 1
    tampered[key.replace("text.core.", "text.model.")] = tampered[key]
    with pytest.raises(ValueError, match="differ from the text encoder"):
        _import(authors, text_export, tampered, "tampered.bin")
    trained_default = dict(sd)
    key = "text.core.model.base_model.model.layers.0.self_attn.q_proj.lora_B.default.weight"
    trained_default[key] = torch.ones_like(sd[key])
    trained_default[key.replace("text.core.", "text.model.")] = trained_default[key]
    with pytest.raises(ValueError, match="adapter-name"):
        _import(authors, text_export, trained_default, "default.bin")
    wrong_rope = {**sd, "visual.rope.freqs_cos": sd["visual.rope.freqs_cos"] * 0.5}
    with pytest.raises(ValueError, match="rotary"):
        _import(authors, text_export, wrong_rope, "rope.bin")


def test_adapter_saved_as_default_is_taken(authors, text_export):
    sd = {k.replace(".default.", ".unused."): v for k, v in authors["sd"].items() if ".llm2clip." not in k}
    sd = {k.replace(".unused.", ".default."): v for k, v in sd.items()}
    module, hparams, report = _import(authors, text_export, sd, "only_default.bin")
    assert any("'default' loaded as 'llm2clip'" in n for n in report.notes) and set(report.fates) == set(sd)


@pytest.mark.slow
def test_eval_py_evaluates_the_imported_model(authors, imported, tmp_path):
    from test_eval_cli import _write_manifest

    from cxr.evaluation.cli import main
    from cxr.evaluation.model_loading import load_checkpoint_model, prepare_model

    module, hparams, report = imported
    ckpt = save_imported(module, hparams, tmp_path / "imported.ckpt")
    report.write(tmp_path / "imported.import.json")
    reloaded = prepare_model(load_checkpoint_model(ckpt))
    x = torch.randn(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.encode_images(x), module.encode_images(x))
        text = ["No acute process."]
        torch.testing.assert_close(reloaded.encode_texts(text), module.encode_texts(text))
    import cxr

    loaded = cxr.load(ckpt)  # the stored inference record carries the authors' preprocessing
    assert loaded.preprocess.config.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert loaded.normalize is False  # the authors' raw dot-product similarity
    assert loaded.preprocess.config.eval_resize.value == "crop" and loaded.preprocess.config.in_chans == 3
    csv_path = _write_manifest(tmp_path / "held", "h", 12, seed=3, split="test")
    spec = tmp_path / "held.yaml"
    spec.write_text(yaml.safe_dump({"class_path": "cxr.data.datamodule.CXRDataModule", "init_args": {
        "sources": [], "eval_sources": [{"class_path": "cxr.data.sources.CsvManifestSource",
                                         "init_args": {"name": "held", "csv_path": str(csv_path)}}],
        "image_size": IMAGE, "in_chans": 3, "batch_size": 4, "num_workers": 0,
        "transform": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                      "eval_resize": "CROP"}}}))
    out = tmp_path / "eval"
    assert main(["--checkpoint", str(ckpt), "--out", str(out), "--data", f"held={spec}", "--device", "cpu",
                 "--ks", "1,5", "--no-progress"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["datasets"]["held"]["i2t"]["num_queries"] == 12
    assert 0 <= data["datasets"]["held"]["i2t"]["R@5"] <= 1
