"""WiSE-FT weight interpolation (cxr.models.text.interpolate) and its use at LLM2VecModule's fit end."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from torch import nn

from cxr.data.pairs.datamodule import PairDataModule
from cxr.models.llm2vec_module import AdaptStage, LLM2VecModule
from cxr.models.text.interpolate import interpolate_toward_start


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))


def test_full_fine_tuning_interpolates_every_trainable_weight():
    start = _mlp()
    trained = copy.deepcopy(start)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))
    trained[2].bias.requires_grad_(False)  # frozen: never touched
    start_state = {n: p.detach().clone() for n, p in start.named_parameters()}
    for alpha in (0.0, 0.3, 1.0):
        model = copy.deepcopy(trained)
        report = interpolate_toward_start(model, start_state, alpha)
        assert (report.interpolated, report.scaled, report.kept) == (3, 0, 0)
        for (name, p), (_, t) in zip(model.named_parameters(), trained.named_parameters(), strict=True):
            want = t if name == "2.bias" else start_state[name] + alpha * (t - start_state[name])
            torch.testing.assert_close(p, want, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="alpha"):
        interpolate_toward_start(trained, start_state, 1.5)
    with pytest.raises(ValueError, match="shape"):
        interpolate_toward_start(trained, {"0.weight": torch.zeros(2, 2)}, 0.5)


def test_lora_interpolation_is_exact_in_function_space():
    """With peft's LoRA on a linear layer the output becomes (1 - alpha) * start + alpha * trained exactly."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(nn.Sequential(nn.Linear(6, 5)), LoraConfig(r=2, lora_alpha=4, target_modules=["0"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.add_(torch.randn_like(p))
    x = torch.randn(4, 6)
    with torch.no_grad():
        with model.disable_adapter():
            y_start = model(x)
        y_trained = model(x)
        report = interpolate_toward_start(model, {}, 0.25)
        y = model(x)
    assert (report.scaled, report.kept, report.interpolated) == (1, 1, 0)  # B scaled, A kept, base frozen
    assert not torch.allclose(y_trained, y_start, atol=1e-3)
    torch.testing.assert_close(y, y_start + 0.25 * (y_trained - y_start), rtol=1e-5, atol=1e-6)


def _fit(tiny_llama, manifest, alpha: float) -> tuple[LLM2VecModule, dict[str, torch.Tensor]]:
    L.seed_everything(0)
    module = LLM2VecModule(str(tiny_llama), stage=AdaptStage.SUPERVISED, max_length=64, lr=1e-2,
                           wise_ft_alpha=alpha)
    module.configure_model()
    start = {n: p.detach().clone() for n, p in module.text_encoder.named_parameters()}
    dm = PairDataModule(manifest=str(manifest), batch_size=4, shuffle_prob=0.0)
    L.Trainer(accelerator="cpu", devices=1, max_steps=2, limit_val_batches=0, logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              use_distributed_sampler=False).fit(module, dm)
    return module, start


def test_llm2vec_module_applies_wise_ft_at_fit_end(tiny_text_model, synthetic_dataset):
    """Same seed, alpha 0.5 vs 1: every weight ends half-way between the start and the alpha-1 result."""
    tiny_llama = tiny_text_model("llama")
    manifest = synthetic_dataset("csv", num_studies=80) / "manifest.csv"
    full, start = _fit(tiny_llama, manifest, 1.0)
    half, start_again = _fit(tiny_llama, manifest, 0.5)
    moved = 0
    for (name, p), (_, q) in zip(half.text_encoder.named_parameters(), full.text_encoder.named_parameters(),
                                 strict=True):
        torch.testing.assert_close(start[name], start_again[name], rtol=0, atol=0)
        torch.testing.assert_close(p, start[name] + 0.5 * (q - start[name]), rtol=0, atol=1e-6)
        moved += int(not torch.equal(q, start[name]))
    assert moved > 5 and half._start_state is None  # applied once, the copy released
    with pytest.raises(ValueError, match="wise_ft_alpha"):
        LLM2VecModule(str(tiny_llama), wise_ft_alpha=-0.1)
