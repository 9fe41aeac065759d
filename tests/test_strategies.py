"""FSDP wrap plan (unit) and 2-process CPU FSDP fits with sharded checkpoints that resume (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from cxr.distributed import clean_param_name
from cxr.strategies import block_class_names, plan_checkpointed_blocks, plan_fsdp_units


@pytest.fixture(scope="module")
def tiny_llama(tiny_text_model) -> Path:
    return tiny_text_model("llama", hidden_size=32, layers=2, heads=2, kv_heads=1)


def _clip_module(llama: Path, lora: bool, text_checkpointing: bool = False):
    from cxr.models.clip_module import CLIPAlignModule
    from cxr.models.text.lora import LoraSettings
    from cxr.models.text.tower import TextTower
    from cxr.models.vision import VisionTower

    settings = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]) if lora else None
    text = TextTower(str(llama), use_cache=False, cache_dir=None, lora=settings, max_length=32,
                     gradient_checkpointing=text_checkpointing, instruction=None)
    module = CLIPAlignModule(vision=VisionTower("test_vit", in_chans=1, image_size=32), text=text, embed_dim=8)
    module.configure_model()
    return module


def _own_requires_grad(module: nn.Module, units: set[int]) -> set[bool]:
    from cxr.strategies import _own_parameters

    return {p.requires_grad for p in _own_parameters(module, units)}


def test_lora_units_never_mix_frozen_and_trainable(tiny_llama) -> None:
    module = _clip_module(tiny_llama, lora=True)
    units = plan_fsdp_units(module)
    by_id = {id(m): m for m in module.modules()}
    names = {type(by_id[u]).__name__ for u in units}
    assert {"LlamaDecoderLayer", "Block", "TextEncoder", "VisionTower"} <= names
    lora_leaves = [m for n, m in module.named_modules() if ("lora_A." in n or "lora_B." in n)
                   and isinstance(m, nn.Linear)]
    assert lora_leaves and all(id(m) in units for m in lora_leaves)
    # the property FSDP's gradient memory depends on: no unit (root included) holds frozen AND trainable weights
    for uid in list(units) + [id(module)]:
        assert len(_own_requires_grad(by_id[uid], units)) <= 1, type(by_id[uid]).__name__
    # the all-trainable vision tower is not split into per-Linear units
    vision_linears = [m for m in module.vision.modules() if isinstance(m, nn.Linear)]
    assert vision_linears and not any(id(m) in units for m in vision_linears)


def test_full_finetune_keeps_one_unit_per_block(tiny_llama) -> None:
    from cxr.models.llm2vec_module import LLM2VecModule

    module = LLM2VecModule(str(tiny_llama), stage="mntp", lora=None, max_length=32)
    module.configure_model()
    units = plan_fsdp_units(module)
    kinds = sorted(type(m).__name__ for m in module.modules() if id(m) in units)
    # two decoder layers; no leaf units (nothing frozen); the encoder stays in the root with the LM head, so MNTP's
    # lm_logits (which bypasses TextEncoder.forward) sees unsharded embeddings
    assert kinds == ["LlamaDecoderLayer", "LlamaDecoderLayer"]


def test_checkpointing_skips_towers_that_checkpoint_themselves(tiny_llama) -> None:
    plain = _clip_module(tiny_llama, lora=True)
    blocks = {type(m).__name__ for m in plain.modules() if id(m) in plan_checkpointed_blocks(plain)}
    assert blocks == {"LlamaDecoderLayer", "Block"}
    self_ckpt = _clip_module(tiny_llama, lora=True, text_checkpointing=True)
    blocks = {type(m).__name__ for m in self_ckpt.modules() if id(m) in plan_checkpointed_blocks(self_ckpt)}
    assert blocks == {"Block"}  # the LLM already recomputes its layers: not twice


def test_block_names_and_clean_names(tiny_llama) -> None:
    module = _clip_module(tiny_llama, lora=False)
    assert {"LlamaDecoderLayer", "Block"} <= block_class_names(module)
    assert clean_param_name("vision._fsdp_wrapped_module.backbone.blocks.0._checkpoint_wrapped_module.x") == \
        "vision.backbone.blocks.0.x"
    assert module.logit_scale.shape == (1,)  # FSDP cannot shard 0-d parameters


def test_zero_dim_logit_scale_checkpoints_still_load(tiny_llama) -> None:
    module = _clip_module(tiny_llama, lora=False)
    state = {k: v.clone() for k, v in module.state_dict().items() if k in module.trainable_state_keys()}
    state["logit_scale"] = torch.tensor(2.5)  # as written before the scale became a 1-element vector
    module.load_state_dict(state)
    assert module.logit_scale.shape == (1,) and module.logit_scale.item() == pytest.approx(2.5)


# --------------------------------------------------------------------------------------------- 2-process fits
CPU_2 = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.precision", "32-true"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fsdp_lora_clip_fit_saves_sharded_and_resumes(tmp_path, tiny_llama, synthetic_dataset) -> None:
    from _dist_helpers import ROOT, clip_config, run_train

    manifest = synthetic_dataset("csv", num_studies=40, image_size=64) / "manifest.csv"
    fsdp = str(ROOT / "configs" / "trainer" / "fsdp.yaml")
    first = clip_config(tmp_path, tiny_llama, manifest, max_steps=2, tag="first")
    run_train(["fit", "--config", str(first), "--trainer", fsdp, *CPU_2], cwd=tmp_path)
    last = tmp_path / "ckpt" / "last.ckpt"
    assert last.is_dir() and sorted(p.name for p in last.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]

    second = clip_config(tmp_path, tiny_llama, manifest, max_steps=3, tag="second")
    run_train(["fit", "--config", str(second), "--trainer", fsdp, *CPU_2, "--ckpt_path", str(last)], cwd=tmp_path)
    end1 = torch.load(tmp_path / "dump" / "first_end.pt", weights_only=True)
    start1 = torch.load(tmp_path / "dump" / "first_start.pt", weights_only=True)
    start2 = torch.load(tmp_path / "dump" / "second_start.pt", weights_only=True)
    end2 = torch.load(tmp_path / "dump" / "second_end.pt", weights_only=True)
    assert any("lora_" in k for k in end1) and set(end1) == set(start2)
    for k in end1:  # the resumed run starts exactly where the first one stopped (LoRA, vision, heads, scale)
        assert torch.equal(end1[k], start2[k]), k
    assert any(not torch.equal(start1[k], end1[k]) for k in end1)  # the first run did train
    assert any(not torch.equal(start2[k], end2[k]) for k in end2)  # and the resumed one trained on


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fsdp_full_finetune_mntp_fit(tmp_path, tiny_llama, synthetic_dataset) -> None:
    from _dist_helpers import ROOT, llm2vec_config, run_train

    manifest = synthetic_dataset("csv", num_studies=40, image_size=64) / "manifest.csv"
    path = llm2vec_config(tmp_path, tiny_llama, manifest, max_steps=2, tag="mntp", stage="MNTP", lora=None)
    out = run_train(["fit", "--config", str(path), "--trainer", str(ROOT / "configs/trainer/fsdp.yaml"), *CPU_2],
                    cwd=tmp_path)
    assert "`Trainer.fit` stopped: `max_steps=2` reached." in out
