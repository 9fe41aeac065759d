"""Zero-shot from a user YAML: spec parsing, open_clip template ensembling, binary/multi-class metrics against sklearn,
label CSVs (RSNA/SIIM-style), and prompts embedded outside the text cache without warnings."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

from cxr.evaluation.label_files import read_label_file
from cxr.evaluation.zero_shot import (
    ZeroShotMode,
    encode_prompts,
    ensemble_embeddings,
    evaluate_spec,
    load_zero_shot_spec,
    parse_zero_shot_spec,
    spec_metrics,
)

BINARY_YAML = {
    "mode": "binary",
    "templates": {"positive": ["{} is present", "findings of {}"], "negative": ["there is no {}", "no {}"]},
    "classes": {
        "Pneumonia": None,
        "Effusion": {"label": "Pleural Effusion", "names": ["pleural effusion", "Effusion"],
                     "negative": ["the costophrenic angles are sharp"]},
        "Pneumothorax": {"positive": ["a pneumothorax"]},
    },
}


def _spec(tmp_path, cfg, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return load_zero_shot_spec(path)


def test_binary_spec_fills_templates_and_keeps_own_prompts(tmp_path):
    spec = _spec(tmp_path, BINARY_YAML)
    assert spec.mode is ZeroShotMode.BINARY and spec.scale == 100.0
    pneu, eff, ptx = spec.classes
    assert pneu.label == "Pneumonia" and pneu.positive == ("pneumonia is present", "findings of pneumonia")
    assert pneu.negative == ("there is no pneumonia", "no pneumonia")
    assert eff.label == "Pleural Effusion" and eff.negative == ("the costophrenic angles are sharp",)
    assert eff.positive == ("pleural effusion is present", "effusion is present", "findings of pleural effusion",
                            "findings of effusion")
    assert ptx.positive == ("a pneumothorax",) and ptx.negative == ("there is no pneumothorax", "no pneumothorax")


def test_multiclass_spec() -> None:
    spec = parse_zero_shot_spec({"mode": "multiclass", "templates": ["a chest x-ray showing {}"],
                                 "classes": ["pneumonia", "normal lungs"], "label_column": "Target"}, "mc.yaml")
    assert spec.mode is ZeroShotMode.MULTICLASS and spec.label_column == "Target"
    assert [c.positive for c in spec.classes] == [("a chest x-ray showing pneumonia",),
                                                  ("a chest x-ray showing normal lungs",)]


BAD_SPECS = [({"classes": {"A": None}}, "no positive prompts"),
             ({"templates": {"positive": ["{} seen"]}, "classes": {"A": None}}, "no negative prompts"),
             ({"templates": ["no placeholder"], "mode": "multiclass", "classes": ["a", "b"]}, "exactly one"),
             ({"mode": "ternary", "classes": ["a"]}, "mode must be"),
             ({"templates": ["{}"], "mode": "multiclass", "classes": ["a"]}, "at least two"),
             ({"templates": ["{}"], "classes": {"A": {"colour": 1}}}, "unknown fields"),
             ({"templates": {"positive": ["{}"], "negative": ["no {}"]},
               "classes": {"A": {"label": "x"}, "B": {"label": "x"}}}, "unique"),
             ({"clases": {}}, "unknown fields"),
             ({"templates": ["{}"], "mode": "multiclass", "classes": {"a": {"prompts": []}, "b": None}}, "non-empty")]


@pytest.mark.parametrize(("cfg", "message"), BAD_SPECS, ids=[m for _, m in BAD_SPECS])
def test_spec_errors_name_file_and_field(cfg: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        parse_zero_shot_spec(cfg, "user.yaml")
    assert "user.yaml" in str(err.value)


def test_missing_spec_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        load_zero_shot_spec(tmp_path / "missing.yaml")


def test_ensembling_is_open_clips():
    emb = torch.randn(5, 8, generator=torch.Generator().manual_seed(0)) * torch.tensor([[1.0], [9], [0.1], [3], [2]])
    out = ensemble_embeddings(emb, [3, 2])
    for k, rows in enumerate((emb[:3], emb[3:])):
        expected = F.normalize(F.normalize(rows, dim=-1).mean(0), dim=-1)  # each prompt counts equally
        torch.testing.assert_close(out[k], expected)
    raw = ensemble_embeddings(emb, [3, 2], normalize=False)
    torch.testing.assert_close(raw[1], emb[3:].mean(0))
    with pytest.raises(ValueError):
        ensemble_embeddings(emb, [2, 2])


def test_binary_metrics_match_sklearn():
    spec = parse_zero_shot_spec(BINARY_YAML)
    g = torch.Generator().manual_seed(1)
    probs = torch.rand(60, 3, generator=g)
    targets = (torch.rand(60, 3, generator=g) > 0.6).long()
    targets[:, 2] = 0  # one class without positives: AUROC/AUPRC undefined, accuracy still defined
    valid = torch.rand(60, 3, generator=g) > 0.1
    out = spec_metrics(probs.log(), targets, spec, valid)
    for c, cls in enumerate(spec.classes):
        keep = valid[:, c].numpy()
        y, p = targets[:, c].numpy()[keep], probs[:, c].numpy()[keep]
        got = out[cls.name]
        assert got["accuracy"] == pytest.approx(accuracy_score(y, p >= 0.5), abs=1e-6)
        assert got["f1"] == pytest.approx(f1_score(y, p >= 0.5, zero_division=0), abs=1e-6)
        assert got["positives"] + got["negatives"] == keep.sum()
        if c < 2:
            assert got["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-6)
            assert got["auprc"] == pytest.approx(average_precision_score(y, p), abs=1e-6)
        else:
            assert math.isnan(got["auroc"]) and math.isnan(got["auprc"])
    names = [c.name for c in spec.classes]
    assert out["mean"]["auroc"] == pytest.approx(np.mean([out[n]["auroc"] for n in names[:2]]))
    assert out["mean"]["f1"] == pytest.approx(np.mean([out[n]["f1"] for n in names]))


def test_multiclass_metrics_match_sklearn():
    spec = parse_zero_shot_spec({"mode": "multiclass", "templates": ["{}"], "classes": ["a", "b", "c"]})
    g = torch.Generator().manual_seed(2)
    probs = torch.rand(50, 3, generator=g).softmax(-1)
    targets = torch.randint(0, 3, (50,), generator=g)
    out = spec_metrics(probs.log(), targets, spec)
    pred = probs.argmax(-1).numpy()
    for c, name in enumerate("abc"):
        y = (targets == c).numpy()
        assert out[name]["auroc"] == pytest.approx(roc_auc_score(y, probs[:, c].numpy()), abs=1e-6)
        assert out[name]["auprc"] == pytest.approx(average_precision_score(y, probs[:, c].numpy()), abs=1e-6)
        assert out[name]["f1"] == pytest.approx(f1_score(y, pred == c), abs=1e-6)
        assert out[name]["accuracy"] == pytest.approx(accuracy_score(y, pred == c), abs=1e-6)
    assert out["mean"]["top1_accuracy"] == pytest.approx(accuracy_score(targets.numpy(), pred))
    assert out["mean"]["f1"] == pytest.approx(f1_score(targets.numpy(), pred, average="macro"), abs=1e-6)


def test_saturating_scores_keep_their_order():
    """100·cos differences of a few units saturate a float32 softmax to 1.0; the log-probabilities keep the order."""
    from cxr.evaluation.zero_shot import spec_scores

    spec = parse_zero_shot_spec({"templates": {"positive": ["{}"], "negative": ["no {}"]}, "classes": ["a"]})
    pos, neg = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    angles = torch.linspace(0.0, 0.6, 20)  # all strongly "positive", increasingly so towards 0
    images = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    targets = (angles < 0.3).long().unsqueeze(1)
    assert torch.softmax(100 * torch.stack([images @ pos.T, images @ neg.T], -1), -1)[..., 0].unique().numel() < 20
    log_p = spec_scores(images, pos, neg, spec)
    assert spec_metrics(log_p, targets, spec)["a"]["auroc"] == 1.0


def test_evaluate_spec_separates_an_aligned_space():
    """Prompts embed to +e_c / -e_c (each template a noisy copy); images carry +e_c when positive."""
    spec = parse_zero_shot_spec(BINARY_YAML)
    g = torch.Generator().manual_seed(3)
    table = {}
    for c, cls in enumerate(spec.classes):
        for p in cls.positive:
            table[p] = torch.eye(6)[c] + 0.05 * torch.randn(6, generator=g)
        for p in cls.negative:
            table[p] = -torch.eye(6)[c] + 0.05 * torch.randn(6, generator=g)
    targets = (torch.rand(40, 3, generator=g) > 0.5).long()
    images = torch.cat([targets.float() * 2 - 1, 0.1 * torch.randn(40, 3, generator=g)], dim=1)
    out = evaluate_spec(lambda texts: torch.stack([table[t] for t in texts]), images, targets, spec)
    assert all(out[c.name]["auroc"] == 1.0 and out[c.name]["accuracy"] == 1.0 for c in spec.classes)


def _png(path, value=128):
    Image.fromarray(np.full((16, 16), value, dtype=np.uint8) + np.eye(16, dtype=np.uint8)).save(path)


def test_label_files_binary_columns_rsna_style_and_multiclass(tmp_path):
    (tmp_path / "img").mkdir()
    for i in range(4):
        _png(tmp_path / "img" / f"{i}.png")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("img_path,Pneumonia,Pleural Effusion,Pneumothorax\n"
                        "img/0.png,1,0,\nimg/1.png,0,-1,1.0\nimg/2.png,,1,0\nimg/3.png,1.0,,0\n")
    lf = read_label_file(csv_path, parse_zero_shot_spec(BINARY_YAML))
    assert [p.name for p in lf.paths] == ["0.png", "1.png", "2.png", "3.png"]
    assert lf.targets.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]]  # blank = negative, -1 -> zeros
    ignore = read_label_file(csv_path, parse_zero_shot_spec(BINARY_YAML), policy="ignore")
    assert ignore.valid[1].tolist() == [True, False, True]
    # RSNA-style: one binary column for one class
    rsna = tmp_path / "rsna.csv"
    rsna.write_text("patientId,path,Target\na,0.png,1\nb,1.png,0\n")
    spec = parse_zero_shot_spec({"templates": {"positive": ["{}"], "negative": ["no {}"]},
                                 "classes": {"pneumonia": {"label": "Target"}}})
    got = read_label_file(rsna, spec, image_root=tmp_path / "img")
    assert got.targets.tolist() == [[1], [0]]
    # multi-class: one label column with class values (strings or numbers)
    mc = tmp_path / "mc.csv"
    mc.write_text("image,label\nimg/0.png,normal\nimg/1.png,1\nimg/2.png,1.0\n")
    mc_spec = parse_zero_shot_spec({"mode": "multiclass", "templates": ["{}"],
                                    "classes": {"normal": None, "pneumothorax": {"label": "1"}}})
    assert read_label_file(mc, mc_spec).targets.tolist() == [0, 1, 1]


def test_label_file_errors_name_row_and_column(tmp_path):
    spec = parse_zero_shot_spec(BINARY_YAML)
    _png(tmp_path / "a.png")
    cases = [("img_path,Pneumonia,Pleural Effusion,Pneumothorax\na.png,yes,0,0\n", r"labels.csv:2: column 'Pneumonia'"),
             ("img_path,Pneumonia,Pleural Effusion,Pneumothorax\nmissing.png,1,0,0\n", "labels.csv:2.*not found"),
             ("img_path,Pneumonia\na.png,1\n", r"label columns \['Pleural Effusion', 'Pneumothorax'\]"),
             ("file,Pneumonia,Pleural Effusion,Pneumothorax\na.png,1,0,0\n", "no image column")]
    for text, message in cases:
        (tmp_path / "labels.csv").write_text(text)
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            read_label_file(tmp_path / "labels.csv", spec)
    (tmp_path / "mc.csv").write_text("img_path,label\na.png,cat\n")
    mc_spec = parse_zero_shot_spec({"mode": "multiclass", "templates": ["{}"], "classes": ["a", "b"]})
    with pytest.raises(ValueError, match=r"mc.csv:2: column 'label': value 'cat'"):
        read_label_file(tmp_path / "mc.csv", mc_spec)


def test_prompts_bypass_the_text_cache_without_warnings(tmp_path, caplog):
    from cxr.models.clip_module import CLIPAlignModule
    from cxr.models.text.tiny import build_tiny_model
    from cxr.models.text.tower import TextTower
    from cxr.models.vision import VisionTower

    enc = build_tiny_model("llama", tmp_path / "llama", hidden_size=32, layers=1, heads=2, kv_heads=1)
    text = TextTower(str(enc), use_cache=True, cache_dir=str(tmp_path / "cache"), max_length=32)
    model = CLIPAlignModule(VisionTower("test_resnet", in_chans=1, image_size=32), text, embed_dim=8).eval()
    text.fill_cache(["No acute process.", "Small left effusion."])
    cached = len(text.cache)
    prompts = ["pneumonia is present", "there is no pneumonia"]
    caplog.set_level(logging.WARNING)
    got = encode_prompts(model, prompts)
    ours = [r for r in caplog.records if r.name.startswith("cxr")]
    assert ours == [] and text.encoder is None and len(text.cache) == cached  # no warning, no writes
    with torch.no_grad():
        expected = model.text_adapter(text.build_encoder().encode(text._inputs(prompts)))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    text.release_encoder()
    model.encode_texts(prompts)  # the cached path would have warned: the check above can fail
    assert any("not in the text cache" in r.getMessage() for r in caplog.records)


def test_exact_log_softmax_equals_log_softmax_and_keeps_confident_order():
    from cxr.evaluation.zero_shot import exact_log_softmax

    logits = torch.randn(7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 3
    torch.testing.assert_close(exact_log_softmax(logits), logits.log_softmax(-1))
    confident = torch.tensor([[60.0, 0.0], [70.0, 0.0], [80.0, 0.0]], dtype=torch.float64)
    assert confident.log_softmax(-1)[:, 0].unique().numel() == 1  # plain log_softmax ties them
    assert exact_log_softmax(confident)[:, 0].unique().numel() == 3
