"""Feature accumulation (GradCache): loss and gradients equal the full-batch computation (1 process and 2-process
DDP through the CLI), dropout masks replayed, BatchNorm statistics not double-counted."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from torch import nn

from cxr.losses.clip import clip_loss
from cxr.models.grad_cache import RngState, batchnorm_stats_kept, grad_cache_step, split_evenly

TOL = dict(atol=1e-5, rtol=1e-5)


def assert_grads_close(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
    """Every gradient within 1e-5 of the reference, relative to that tensor's largest entry (float32 sums of
    micro-batch and full-batch matmuls round differently; measured up to 2e-6 relative)."""
    assert set(got) == set(ref)
    for name, r in ref.items():
        err = (got[name] - r).abs().max().item()
        assert err <= 1e-5 * max(1.0, r.abs().max().item()), f"{name}: max |diff| {err:.2e}"


class TwoTowers(nn.Module):
    """Image and text MLPs with optional dropout / BatchNorm and a learnable logit scale."""

    def __init__(self, dropout: float = 0.0, batchnorm: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        norm = nn.BatchNorm1d(16) if batchnorm else nn.Identity()
        self.image = nn.Sequential(nn.Linear(12, 16), norm, nn.GELU(), nn.Dropout(dropout), nn.Linear(16, 8))
        self.text = nn.Sequential(nn.Linear(10, 16), nn.GELU(), nn.Dropout(dropout), nn.Linear(16, 8))
        self.logit_scale = nn.Parameter(torch.tensor([2.0]))

    def embed(self, chunk):
        return self.image(chunk[0]), self.text(chunk[1])

    def loss(self, features, study_ids):
        out = clip_loss(features[0], features[1], self.logit_scale, study_ids)
        return out.loss, out


def _data(n: int = 12):
    g = torch.Generator().manual_seed(1)
    ids = torch.arange(n)
    ids[3] = ids[2]  # two images of one study: the study-aware mask must see the whole batch
    return torch.randn(n, 12, generator=g), torch.randn(n, 10, generator=g), ids


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _full_batch(model: TwoTowers, images, texts, ids):
    model.zero_grad()
    loss, _ = model.loss(model.embed((images, texts)), ids)
    loss.backward()
    return loss.detach(), _grads(model)


def _accumulated(model: TwoTowers, images, texts, ids, k: int):
    model.zero_grad()
    chunks = [(images[sl], texts[sl]) for sl in split_evenly(len(ids), k)]
    out = grad_cache_step(chunks, model.embed, lambda f: model.loss(f, ids), model, [model.logit_scale])
    model.zero_grad()  # Lightning zeroes gradients between training_step and backward: nothing may be lost
    out.surrogate.backward()
    return out.surrogate.detach(), _grads(model)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_loss_and_gradients_equal_full_batch(k: int) -> None:
    model = TwoTowers()
    ref_loss, ref = _full_batch(model, *_data())
    loss, got = _accumulated(model, *_data(), k=k)
    torch.testing.assert_close(loss, ref_loss, **TOL)
    assert ref["logit_scale"].abs().item() > 0
    assert_grads_close(got, ref)


def _graph_reference(model: TwoTowers, images, texts, ids, k: int):
    """The same chunked forwards (same RNG stream) with the graph kept: what GradCache must reproduce."""
    model.zero_grad()
    feats = [model.embed((images[sl], texts[sl])) for sl in split_evenly(len(ids), k)]
    loss, _ = model.loss(tuple(torch.cat(parts) for parts in zip(*feats, strict=True)), ids)
    loss.backward()
    return loss.detach(), _grads(model)


def test_dropout_masks_are_replayed(monkeypatch) -> None:
    model = TwoTowers(dropout=0.3)
    torch.manual_seed(5)
    ref_loss, ref = _graph_reference(model, *_data(), k=3)
    torch.manual_seed(5)
    loss, got = _accumulated(model, *_data(), k=3)
    torch.testing.assert_close(loss, ref_loss, **TOL)
    assert_grads_close(got, ref)
    # without the replay the second forward draws new masks and the gradient is wrong (the test can fail)
    monkeypatch.setattr(RngState, "replay", lambda self: nullcontext())
    torch.manual_seed(5)
    _, unreplayed = _accumulated(model, *_data(), k=3)
    assert any(not torch.allclose(unreplayed[n], ref[n], **TOL) for n in ref)


def test_batchnorm_running_stats_count_only_the_gradient_pass() -> None:
    model = TwoTowers(batchnorm=True)
    reference = TwoTowers(batchnorm=True)
    images, texts, ids = _data()
    _accumulated(model, images, texts, ids, k=2)
    for sl in split_evenly(len(ids), 2):  # what the gradient pass alone does to the statistics
        reference.image(images[sl])
    bn, ref_bn = model.image[1], reference.image[1]
    assert int(bn.num_batches_tracked) == 2
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean)
    with batchnorm_stats_kept(model):
        model.image(images)
    assert int(bn.num_batches_tracked) == 2


def test_split_evenly() -> None:
    assert [s.stop - s.start for s in split_evenly(10, 4)] == [2, 3, 2, 3]
    with pytest.raises(ValueError, match="micro-batches"):
        split_evenly(3, 4)


# --------------------------------------------------------------------------------------- the two modules
@pytest.fixture(scope="module")
def tiny_llama(tiny_text_model) -> Path:
    return tiny_text_model("llama", hidden_size=32, layers=2, heads=2, kv_heads=1)


REPORTS = ["No acute process.", "Small left pleural effusion.", "Heart size is normal.",
           "Large right pneumothorax with mediastinal shift.", "Moderate cardiomegaly.",
           "Right lower lobe consolidation concerning for pneumonia.", "Endotracheal tube tip 4 cm above carina.",
           "Hyperinflated lungs consistent with emphysema."]


def _clip(llama: Path, micro_batches: int):
    from cxr.models.clip_module import CLIPAlignModule
    from cxr.models.text.lora import LoraSettings
    from cxr.models.text.tower import TextTower
    from cxr.models.vision import VisionTower

    torch.manual_seed(0)
    text = TextTower(str(llama), use_cache=False, lora=LoraSettings(r=4, alpha=8, dropout=0.0,
                                                                     target_modules=["q_proj", "v_proj"]),
                     max_length=32, instruction=None)
    module = CLIPAlignModule(vision=VisionTower("test_vit", in_chans=1, image_size=32), text=text, embed_dim=8,
                             micro_batches=micro_batches)
    module.configure_model()
    return module


def _clip_batch():
    from cxr.data.batch import ImageTextBatch

    g = torch.Generator().manual_seed(3)
    n = len(REPORTS)
    return ImageTextBatch(images=torch.randn(n, 1, 32, 32, generator=g), texts=list(REPORTS),
                          study_keys=[str(i) for i in range(n)], study_ids=torch.arange(n),
                          text_ids=torch.arange(n), sample_index=torch.arange(n),
                          labels=torch.zeros(n, 14, dtype=torch.int8), sources=["s"] * n)


def _step_grads(module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    module.train()
    loss = module.training_step(batch, 0)
    module.zero_grad(set_to_none=True)  # as Lightning's closure does between training_step and backward
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_clip_module_micro_batches_equal_full_batch(tiny_llama) -> None:
    ref_loss, ref = _step_grads(_clip(tiny_llama, 1), _clip_batch())
    loss, got = _step_grads(_clip(tiny_llama, 4), _clip_batch())
    torch.testing.assert_close(loss, ref_loss, **TOL)
    assert any("lora_" in n for n in ref)
    assert_grads_close(got, ref)  # vision, projection, adapter, LoRA (online text) and the logit scale


def _llm2vec(llama: Path, micro_batches: int):
    from cxr.models.llm2vec_module import LLM2VecModule

    torch.manual_seed(0)
    module = LLM2VecModule(str(llama), stage="supervised", max_length=32, micro_batches=micro_batches,
                           lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]})
    module.configure_model()
    return module


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_llm2vec_module_micro_batches_equal_full_batch(tiny_llama) -> None:
    from cxr.data.pairs.datamodule import PairBatch
    from cxr.data.pairs.tasks import PairTask

    batch = PairBatch(queries=[("Summarize the findings", t) for t in REPORTS[:6]],
                      positives=[("", t) for t in REPORTS[2:8]], negatives=[("", t) for t in REPORTS[1:7]],
                      task=PairTask.SUMMARIZE)
    ref_loss, ref = _step_grads(_llm2vec(tiny_llama, 1), batch)
    loss, got = _step_grads(_llm2vec(tiny_llama, 3), batch)
    torch.testing.assert_close(loss, ref_loss, **TOL)
    assert ref
    assert_grads_close(got, ref)
    with pytest.raises(ValueError, match="accumulate_grad_batches"):
        from cxr.models.llm2vec_module import LLM2VecModule

        LLM2VecModule(str(tiny_llama), stage="mntp", micro_batches=2)


class _FirstGrads:
    """Lightning callback: the gradients the optimiser sees at the first step."""

    def __new__(cls):
        from lightning.pytorch import Callback

        class Grab(Callback):
            grads: dict[str, torch.Tensor] = {}

            def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
                if trainer.global_step == 0:
                    self.grads = {n: p.grad.clone() for n, p in pl_module.named_parameters() if p.grad is not None}

        return Grab()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_lightning_fit_step_with_micro_batches_equals_full_batch(tiny_llama, tmp_path) -> None:
    """Through Trainer.fit: Lightning runs zero_grad between training_step and backward, clips, steps."""
    import lightning as L
    from torch.utils.data import DataLoader

    grads = {}
    for micro in (1, 4):
        grab = _FirstGrads()
        trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1e9,
                            default_root_dir=tmp_path, callbacks=[grab])
        trainer.fit(_clip(tiny_llama, micro), train_dataloaders=DataLoader([_clip_batch()], batch_size=None))
        grads[micro] = grab.grads
    assert any("lora_" in n for n in grads[1])
    assert_grads_close(grads[4], grads[1])


# ---------------------------------------------------------------------------- 2-process DDP through the CLI
@pytest.mark.slow
@pytest.mark.timeout(1800)  # two train.py runs (3 processes): minutes on a shared 2-core box
def test_ddp_two_processes_with_micro_batches_equal_one_process_full_batch(tmp_path, tiny_llama,
                                                                            synthetic_dataset) -> None:
    import yaml
    from _dist_helpers import ROOT, clip_config, run_train

    manifest = synthetic_dataset("csv", num_studies=40, image_size=64) / "manifest.csv"
    runs = {"single": (["--trainer.devices", "1", "--data.init_args.batch_size", "8"], 1),
            "ddp": (["--trainer.devices", "2", "--data.init_args.batch_size", "4"], 2)}
    for tag, (args, micro) in runs.items():
        (tmp_path / tag).mkdir()
        path = clip_config(tmp_path / tag, tiny_llama, manifest, max_steps=2, tag=tag,
                           model={"micro_batches": micro})
        cfg = yaml.safe_load(path.read_text())
        cfg["trainer"]["callbacks"].append({"class_path": "_dist_helpers.GradDump",
                                            "init_args": {"out": str(tmp_path / "dump"), "tag": tag}})
        path.write_text(yaml.safe_dump(cfg))
        run_train(["fit", "--config", str(path), "--trainer", str(ROOT / "configs/trainer/ddp.yaml"),
                   "--trainer.accelerator", "cpu", "--trainer.precision", "32-true", *args], cwd=tmp_path)
    single = torch.load(tmp_path / "dump" / "single_grads.pt", weights_only=True)
    ddp = torch.load(tmp_path / "dump" / "ddp_grads.pt", weights_only=True)
    # step 0: the same 8 samples (rank r takes draws r, r+2, ...), each rank embedding its 4 in 2 micro-batches
    assert any("lora_" in n for n in single["grads"])
    torch.testing.assert_close(ddp["loss"], single["loss"], **TOL)
    assert_grads_close(ddp["grads"], single["grads"])
    # and the whole 2-step fit: the same global batches (RankShard), the same LoRA init (seeded), equal weights
    end = {tag: torch.load(tmp_path / tag / "dump" / f"{tag}_end.pt", weights_only=True) for tag in runs}
    assert end["ddp"].keys() == end["single"].keys()
    worst = max((end["ddp"][k].double() - end["single"][k].double()).abs().max().item() for k in end["single"])
    assert worst < 1e-4, f"2-process weights differ from 1 process by {worst:.2e}"
