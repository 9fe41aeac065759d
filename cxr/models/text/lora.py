"""LoRA settings for the text encoder (applied with peft) and training switches."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


def _default_targets() -> list[str]:
    return ["q_proj", "k_proj", "v_proj", "o_proj"]


@dataclass
class LoraSettings:
    """LoRA on the text backbone. Defaults are LLM2CLIP4CXR's (r=16, alpha=32, dropout 0.1 on q,k,v,o, adapter
    ``llm2clip``; paper §C.2). For BERT-style encoders use e.g. ``["query", "key", "value"]``."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=_default_targets)
    adapter_name: str = "llm2clip"
    #: seed of the adapter's random initialisation (peft's Kaiming-uniform A matrices; B starts at zero). A fixed
    #: seed makes the initial adapter independent of whatever drew random numbers before it was built (the DDP
    #: set-up, data loading), so 1 and N processes, and a run and its rerun, start from the same adapter.
    init_seed: int = 0

    def to_peft_config(self):
        """The equivalent ``peft.LoraConfig``."""
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), bias="none")


def apply_lora(model: nn.Module, settings: LoraSettings) -> nn.Module:
    """Wrap ``model`` with a fresh LoRA adapter (peft); base weights become frozen, the adapter is active."""
    from peft import get_peft_model

    # Only the generators the init can draw from (the CPU's and the model's GPUs'): forking or seeding every
    # visible GPU would create a CUDA context on each of them in every DDP rank.
    cuda = sorted({p.device.index for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):  # the caller's RNG streams continue as if nothing was drawn
        torch.default_generator.manual_seed(settings.init_seed)
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(settings.init_seed)
        return get_peft_model(model, settings.to_peft_config(), adapter_name=settings.adapter_name)


def is_peft_model(model: nn.Module) -> bool:
    """True if ``model`` is peft-wrapped."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a hard dependency
        return False
    return isinstance(model, PeftModel)


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Non-reentrant gradient checkpointing that still gives LoRA grads (paper §F pitfall 10)."""
    base = model.get_base_model() if is_peft_model(model) else model
    base.config.use_cache = False
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):
        # transformers >= 5.x: gradient_checkpointing_enable is a deprecated alias (FutureWarning, removed in v6)
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    # harmless with non-reentrant checkpointing, required if someone switches to reentrant with frozen embeddings
    base.enable_input_require_grads()
