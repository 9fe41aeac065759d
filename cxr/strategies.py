"""FSDP for cxr's towers, configurable from YAML by *names* (``configs/trainer/fsdp.yaml``).

Lightning's :class:`~lightning.pytorch.strategies.FSDPStrategy` takes module *classes* for its wrap and
checkpointing policies, which a YAML file cannot name for a model that is only built in ``configure_model``.
:class:`CXRFSDPStrategy` plans the FSDP units from the built model instead:

* every repeated block is a unit: the ``_no_split_modules`` of each Hugging Face model inside (``LlamaDecoderLayer``,
  ``BertLayer`` ...) and the children of timm's ``blocks``/``stages`` containers (ViT/EVA ``Block``), plus the
  names in ``wrap_layers``;
* each tower (``TextEncoder``, ``VisionTower``) that sits next to other weights is a unit of its own, so a frozen
  bf16 LLM never shares a flat parameter with the fp32 projection heads (FSDP needs one dtype per unit);
* inside a unit whose own parameters mix frozen and trainable ones (a frozen decoder layer with LoRA), every
  trainable leaf (``lora_A``/``lora_B`` Linear) becomes a unit of its own. With ``use_orig_params`` FSDP accepts
  mixed units, but then allocates gradients for the frozen weights too (pytorch#91167); split, the frozen
  units carry no gradient at all. Full fine-tuning (nothing frozen) keeps one unit per block.

Activation checkpointing (``activation_checkpointing: true``) wraps the same blocks, except those inside a model
that already checkpoints itself (``TextEncoder(gradient_checkpointing=true)``, ``VisionTower(grad_checkpointing=
true)``), so nothing is recomputed twice.

Checkpoints: ``state_dict_type: sharded`` writes one file per rank (``torch.distributed.checkpoint``) and resumes
from it. cxr's modules keep only trainable tensors in a checkpoint (``trainable_state_keys``); loading a sharded
checkpoint therefore reads the keys it holds, checks that every trainable tensor is there, and leaves the frozen
weights as loaded from the encoder's files.

On CPU (tests only) torch's FSDP needs ``device_id=cpu`` explicitly and Lightning refuses ``FSDPStrategy`` itself
on CPU; this subclass allows both, so the wrap plan, a 2-process gloo fit and the sharded save/resume run in CI.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn

#: Our tower classes: each one is an FSDP unit (keeps the frozen bf16 LLM apart from fp32 heads).
TOWER_CLASSES = ("TextEncoder", "VisionTower")
#: Attribute names under which timm keeps its repeated blocks.
_TIMM_BLOCK_CONTAINERS = ("blocks", "stages", "layers")


def block_class_names(model: nn.Module) -> set[str]:
    """Class names of the repeated blocks of every Hugging Face / timm model inside ``model``."""
    names: set[str] = set()
    for module in model.modules():
        no_split = getattr(module, "_no_split_modules", None)
        if isinstance(no_split, (list, tuple, set)):
            names.update(str(n) for n in no_split)
        if type(module).__module__.startswith("timm."):
            for attr in _TIMM_BLOCK_CONTAINERS:
                container = getattr(module, attr, None)
                if isinstance(container, (nn.Sequential, nn.ModuleList)):
                    names.update(type(child).__name__ for child in container)
    return names


def _own_parameters(unit: nn.Module, unit_ids: set[int]) -> list[nn.Parameter]:
    """Parameters of ``unit`` that are not inside a nested unit (what its flat parameter would hold)."""
    out: list[nn.Parameter] = list(unit.parameters(recurse=False))
    stack = list(unit.children())
    while stack:
        module = stack.pop()
        if id(module) in unit_ids:
            continue
        out.extend(module.parameters(recurse=False))
        stack.extend(module.children())
    return out


def _trainable_leaves(unit: nn.Module, unit_ids: set[int]) -> Iterable[nn.Module]:
    stack = list(unit.children())
    while stack:
        module = stack.pop()
        if id(module) in unit_ids:
            continue
        children = list(module.children())
        params = list(module.parameters(recurse=False))
        if not children and params and all(p.requires_grad for p in params):
            yield module
        stack.extend(children)


def plan_fsdp_units(model: nn.Module, extra_layers: Iterable[str] = ()) -> set[int]:
    """Ids of the submodules to wrap as FSDP units (the root is wrapped by FSDP itself); see the module doc."""
    names = block_class_names(model) | set(extra_layers)
    units = {id(m) for m in model.modules() if type(m).__name__ in names and m is not model}
    everything = {id(p) for p in model.parameters()}
    for tower in model.modules():
        # A tower is a unit only when it shares the root with other weights (CLIP's heads). The LLM2VEC module
        # is its encoder alone: there the encoder's embeddings stay in the root unit, which the training step
        # unshards, so methods that bypass ``TextEncoder.forward`` (MNTP's ``lm_logits``) still see full weights.
        if type(tower).__name__ in TOWER_CLASSES and everything - {id(p) for p in tower.parameters()}:
            units.add(id(tower))
    by_id = {id(m): m for m in model.modules()}
    for uid in list(units) + [id(model)]:
        own = _own_parameters(by_id[uid], units)
        if any(p.requires_grad for p in own) and not all(p.requires_grad for p in own):
            units.update(id(leaf) for leaf in _trainable_leaves(by_id[uid], units))
    return units


def _self_checkpointing(module: nn.Module) -> bool:
    """Whether a model already applies activation checkpointing itself (HF or timm flag)."""
    return bool(getattr(module, "is_gradient_checkpointing", False) or getattr(module, "grad_checkpointing", False))


def plan_checkpointed_blocks(model: nn.Module, extra_layers: Iterable[str] = ()) -> set[int]:
    """Ids of the blocks to wrap with activation checkpointing: blocks not inside a self-checkpointing model."""
    names = block_class_names(model) | set(extra_layers)
    skip: set[int] = set()
    for module in model.modules():
        if _self_checkpointing(module):
            skip.update(id(m) for m in module.modules())
    return {id(m) for m in model.modules() if type(m).__name__ in names and id(m) not in skip}


def _checkpoint_tensor_keys(path: Path) -> set[str]:
    """The model keys a sharded (``torch.distributed.checkpoint``) checkpoint holds, without the ``model.`` prefix."""
    from torch.distributed.checkpoint import FileSystemReader

    meta = FileSystemReader(str(path)).read_metadata()
    return {k[len("model."):] for k in meta.state_dict_metadata if k.startswith("model.")}


@contextmanager
def _quiet(logger_name: str):
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class CXRFSDPStrategy(FSDPStrategy):
    """Lightning's FSDP with a wrap plan computed from the built model (see the module doc).

    Args:
        wrap_layers: extra block class names to wrap (the Hugging Face / timm blocks are found automatically).
        activation_checkpointing: checkpoint every block not already checkpointed by its own model.
        sharding_strategy: ``FULL_SHARD`` (ZeRO-3 like), ``SHARD_GRAD_OP`` (ZeRO-2 like), ``NO_SHARD``,
            ``HYBRID_SHARD`` (shard within a node, replicate across nodes).
        state_dict_type: ``sharded`` (one file per rank; resumable; default) or ``full`` (gathered on rank 0).
        cpu_offload: offload parameters and gradients to CPU (slow; for encoders that do not fit otherwise).
        limit_all_gathers: rate-limit all-gathers (lower peak memory).
        forward_prefetch: prefetch the next unit's all-gather during the forward.
        sync_module_states: broadcast rank 0's weights at wrap time (all ranks then agree even if their
            random initialisation of fresh heads differed).
        process_group_backend: ``nccl`` on GPUs (default), ``gloo`` on CPU (default there).
        timeout_minutes: collective timeout.
    """

    def __init__(
        self,
        wrap_layers: list[str] | None = None,
        activation_checkpointing: bool = True,
        sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD"] = "FULL_SHARD",
        state_dict_type: Literal["full", "sharded"] = "sharded",
        cpu_offload: bool = False,
        limit_all_gathers: bool = True,
        forward_prefetch: bool = False,
        sync_module_states: bool = False,
        process_group_backend: str | None = None,
        timeout_minutes: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(sharding_strategy=sharding_strategy, state_dict_type=state_dict_type,
                         cpu_offload=cpu_offload, process_group_backend=process_group_backend,
                         timeout=timedelta(minutes=timeout_minutes), limit_all_gathers=limit_all_gathers,
                         forward_prefetch=forward_prefetch, sync_module_states=sync_module_states,
                         use_orig_params=True, **kwargs)
        self.wrap_layers = list(wrap_layers or [])
        self.activation_checkpointing_enabled = activation_checkpointing

    # ------------------------------------------------------------------------------------------ wrapping
    def _setup_model(self, model: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import CustomPolicy

        if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            return super()._setup_model(model)
        units = plan_fsdp_units(model, self.wrap_layers)
        self.kwargs["auto_wrap_policy"] = CustomPolicy(lambda module: id(module) in units)
        if self.activation_checkpointing_enabled:
            blocks = plan_checkpointed_blocks(model, self.wrap_layers)
            self._activation_checkpointing_kwargs = {"check_fn": lambda module: id(module) in blocks}
        if self.root_device.type != "cpu":
            return super()._setup_model(model)
        # CPU: Lightning passes device_id=None, with which torch's FSDP looks for an accelerator and fails.
        wrapped = FullyShardedDataParallel(module=model, cpu_offload=self.cpu_offload,
                                           mixed_precision=self.mixed_precision_config,
                                           sharding_strategy=self.sharding_strategy,
                                           device_id=torch.device("cpu"), **self.kwargs)
        policy = self.kwargs.pop("auto_wrap_policy")  # already applied; keeps Lightning from warning
        try:
            return super()._setup_model(wrapped)
        finally:
            self.kwargs["auto_wrap_policy"] = policy

    # --------------------------------------------------------------------------------------- checkpoints
    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        """Resume from a sharded checkpoint that holds only the module's trainable tensors (see module doc)."""
        path = Path(self.broadcast(checkpoint_path))
        module = self.lightning_module
        expected = getattr(module, "trainable_state_keys", None)
        if not (path.is_dir() and expected is not None):
            return super().load_checkpoint(path, weights_only=weights_only)
        return self._load_partial_sharded(path, set(expected()), weights_only)

    def _load_partial_sharded(self, path: Path, expected: set[str], weights_only: bool | None) -> dict[str, Any]:
        from lightning.fabric.strategies.fsdp import _METADATA_FILENAME, _get_sharded_state_dict_context
        from lightning.pytorch.trainer.states import TrainerFn
        from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader, load
        from torch.distributed.checkpoint.optimizer import load_sharded_optimizer_state_dict
        from torch.distributed.fsdp import FullyShardedDataParallel

        stored = _checkpoint_tensor_keys(path)
        missing = sorted(expected - stored)
        if missing:
            raise RuntimeError(f"checkpoint {path} lacks {len(missing)} trainable tensors (e.g. {missing[:5]}); "
                               f"was it written by another model configuration?")
        with _get_sharded_state_dict_context(self.model):
            full = self.model.state_dict()
            unknown = sorted(stored - set(full))
            if unknown:
                raise RuntimeError(f"checkpoint {path} holds {len(unknown)} tensors the model does not have "
                                   f"(e.g. {unknown[:5]})")
            model_state = {k: v for k, v in full.items() if k in stored}
            load({"model": model_state}, checkpoint_id=path, planner=DefaultLoadPlanner(allow_partial_load=False))
            with _quiet("torch.distributed.fsdp._state_dict_utils"):  # one warning per frozen tensor otherwise
                self.model.load_state_dict(model_state, strict=False)
            if self.lightning_module.trainer.state.fn == TrainerFn.FITTING and self.optimizers:
                reader = FileSystemReader(path=path)
                for idx, optim in enumerate(self.optimizers):
                    key = f"optimizer_{idx}"
                    state = load_sharded_optimizer_state_dict(model_state_dict=model_state, optimizer_key=key,
                                                              storage_reader=reader)
                    optim.load_state_dict(FullyShardedDataParallel.optim_state_dict_to_load(
                        optim_state_dict=state[key], model=self.model, optim=optim))
        return torch.load(path / _METADATA_FILENAME, weights_only=weights_only)
