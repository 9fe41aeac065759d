"""``cxr.load``: the README example runs as written on a fresh ``train.py fit`` checkpoint, and its outputs are
the trained module's own (the stored preprocessing equals the DataModule's eval transform)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny_clip_run import train_tiny_clip
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ["No acute cardiopulmonary process.", "Large right pneumothorax."]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- api-example[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert match, "README has the cxr.load example"
    return match.group(1)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, synthetic_dataset):
    world = synthetic_dataset("csv", num_studies=40, seed=0, image_size=64)
    return train_tiny_clip(tmp_path_factory.mktemp("api"), world / "manifest.csv", max_steps=2)


@pytest.mark.slow
def test_readme_example_runs_on_a_fresh_checkpoint(tiny_run, tmp_path, monkeypatch, capsys):
    example = readme_example()
    assert len(example.strip().splitlines()) <= 6
    ckpt = tmp_path / "outputs" / "demo" / "run" / "checkpoints" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    shutil.copy(tiny_run.checkpoint, ckpt)
    rng = np.random.default_rng(0)
    for name in ("scan1.png", "scan2.png"):
        Image.fromarray((rng.random((80, 60)) * 255).astype(np.uint8)).save(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(example, "README.md", "exec"), scope)  # noqa: S102 - the documented example, verbatim
    assert scope["images"].shape == (2, 16) and scope["reports"].shape == (2, 16)
    assert "tensor" in capsys.readouterr().out
    _check_against_module(scope["model"], tiny_run, tmp_path)


def _check_against_module(model, run, folder: Path) -> None:
    """Same numbers as the trained LightningModule fed by the training DataModule's eval transform."""
    from cxr.data.images import load_image
    from cxr.evaluation.datasets import EvalDatasetSpec, build_eval_datamodule
    from cxr.evaluation.model_loading import load_checkpoint_model, prepare_model

    module = prepare_model(load_checkpoint_model(run.checkpoint))
    dm = build_eval_datamodule(EvalDatasetSpec("synth", run.train_config))
    expected_transform = dm.transform.build(train=False)
    assert model.preprocess.config == dm.transform
    pixels = load_image(folder / "scan1.png")
    torch.testing.assert_close(model.preprocess(folder / "scan1.png"), expected_transform(pixels), rtol=0, atol=0)
    with torch.no_grad():
        want_img = module.encode_images(expected_transform(pixels).unsqueeze(0))
        want_txt = module.encode_texts(REPORTS)
    # cxr.load runs on the GPU where present (TF32 convolutions there): compare to the CPU module to 1e-4 then
    tol = 1e-5 if model.device.type == "cpu" else 1e-4
    got_img = model.encode_image([str(folder / "scan1.png")])
    assert float((got_img - want_img).abs().max()) <= tol
    assert float((model.encode_text(REPORTS) - want_txt).abs().max()) <= tol
    sim = model.similarity(got_img, model.encode_text(REPORTS))
    expected = torch.nn.functional.normalize(want_img, dim=-1) @ torch.nn.functional.normalize(want_txt, dim=-1).T
    assert float((sim - expected).abs().max()) <= tol


def test_checkpoint_stores_preprocessing_and_text_settings(tiny_run):
    from cxr.models.inference_config import FROM_DATAMODULE, INFERENCE_KEY

    record = torch.load(tiny_run.checkpoint, map_location="cpu", weights_only=True)[INFERENCE_KEY]
    assert record["preprocess_source"] == FROM_DATAMODULE
    assert record["preprocess"]["image_size"] == 32 and record["preprocess"]["in_chans"] == 1
    assert record["preprocess"]["eval_resize"] == "pad" and record["preprocess"]["mean"] == 0.5
    assert record["text"]["instruction"] == "auto" and record["text"]["max_length"] == 64


def test_load_without_stored_preprocessing_asks_for_it(tiny_run, tmp_path):
    import cxr
    from cxr.data.transforms import TransformConfig
    from cxr.models.inference_config import INFERENCE_KEY

    old = torch.load(tiny_run.checkpoint, map_location="cpu", weights_only=True)
    del old[INFERENCE_KEY]
    path = tmp_path / "old.ckpt"
    torch.save(old, path)
    with pytest.raises(ValueError, match="no stored preprocessing"):
        cxr.load(path, device="cpu")
    given = TransformConfig(image_size=32, in_chans=1, mean=0.4, std=0.3)
    assert cxr.load(path, device="cpu", transform=given).preprocess.config == given


def test_load_rejects_unknown_paths(tmp_path):
    import cxr

    with pytest.raises(FileNotFoundError, match="does not exist"):
        cxr.load(tmp_path / "nope.ckpt")
    with pytest.raises(ValueError, match="neither a checkpoint"):
        cxr.load(tmp_path)


@pytest.mark.slow
def test_clip_export_loads_in_cxr_timm_and_sentence_transformers(tiny_run, tmp_path):
    """export_clip → cxr.load gives the checkpoint's embeddings; its vision/ folder is a strict timm model and
    its text_encoder/ folder a sentence-transformers model, both with cxr's features."""
    import timm

    import cxr
    from cxr.evaluation.model_loading import load_checkpoint_model, prepare_model
    from cxr.models.clip_export import export_clip

    module = prepare_model(load_checkpoint_model(tiny_run.checkpoint))
    out = export_clip(module, tmp_path / "export")
    from_ckpt = cxr.load(tiny_run.checkpoint, device="cpu")
    from_export = cxr.load(out, device="cpu")
    assert from_export.preprocess.config == from_ckpt.preprocess.config  # carried from the checkpoint
    assert json.loads((out / "clip_export.json").read_text())["inference"]["preprocess_source"] == "datamodule"
    images = torch.randn(3, 1, 32, 32)
    assert float((from_export.encode_image(images) - from_ckpt.encode_image(images)).abs().max()) <= 1e-6
    assert float((from_export.encode_text(REPORTS) - from_ckpt.encode_text(REPORTS)).abs().max()) <= 1e-5
    backbone = timm.create_model(f"local-dir:{out / 'vision'}", pretrained=True).eval()
    with torch.no_grad():
        assert float((backbone(images) - module.vision(images)).abs().max()) == 0.0
    st = pytest.importorskip("sentence_transformers").SentenceTransformer(str(out / "text_encoder"), device="cpu",
                                                                           trust_remote_code=True)
    with torch.no_grad():
        feats = module.text.encode_online(REPORTS)  # instruction "auto": the generic report instruction here
    assert float((st.encode(REPORTS, prompt_name="report", convert_to_tensor=True) - feats).abs().max()) <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_load_runs_on_the_gpu_by_default(tiny_run):
    """cxr.load's default device is the GPU when present; embeddings match the CPU's."""
    import cxr

    gpu, cpu = cxr.load(tiny_run.checkpoint), cxr.load(tiny_run.checkpoint, device="cpu")
    assert gpu.device.type == "cuda"
    images = torch.randn(4, 1, 32, 32)
    assert float((gpu.encode_image(images) - cpu.encode_image(images)).abs().max()) <= 1e-4
    assert float((gpu.encode_text(REPORTS) - cpu.encode_text(REPORTS)).abs().max()) <= 1e-4
