"""Feature accumulation (GradCache; Gao et al. 2021, open_clip ``--accum-freq``): a contrastive batch of any size
with the exact full-batch loss and gradient, in the memory of one micro-batch.

A contrastive loss couples every sample with every other, so ordinary gradient accumulation over k small batches
changes the objective (k small negative sets instead of one large one). Here a training batch is split into k
micro-batches and:

1. each micro-batch is embedded **without a graph**; the RNG state before each forward is recorded;
2. the loss is computed on the concatenated (cached) features — the full-batch loss, gathered across ranks as
   usual — and its gradient with respect to each cached feature (and to loss-only parameters such as the logit
   scale) is taken;
3. each micro-batch is embedded **again with a graph**, under the recorded RNG state (dropout, drop-path and LoRA
   dropout draw the same masks; GradCache's ``RandContext``), and ``sum(features * cached_gradient)`` is
   back-propagated. By the chain rule the parameter gradients add up to the full-batch gradient.

The last micro-batch's surrogate is *returned* instead of back-propagated, so Lightning's automatic optimisation
runs the final backward: gradient clipping, ``accumulate_grad_batches``, precision scaling and schedulers work
unchanged, and under DDP the final backward is the one that all-reduces. The earlier backwards run inside the DDP
forward (Lightning calls ``training_step`` through the DDP wrapper), where DDP's reducer ignores gradient hooks,
so their gradients accumulate locally and are reduced together with the last one (as under ``no_sync``). The
loss-only parameters enter the returned surrogate as ``p * dL/dp`` so they too are reduced by that backward.

Caveats: BatchNorm layers see micro-batch statistics (their running stats are updated only by the
gradient pass); FSDP and DeepSpeed run their own backward machinery and are refused; ``static_graph`` DDP is not
supported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch import nn

Chunk = TypeVar("Chunk")
Features = tuple[torch.Tensor, ...]


@dataclass
class RngState:
    """The CPU generator's state and, when the module runs on CUDA, that device's generator state."""

    cpu: torch.Tensor
    cuda: torch.Tensor | None
    device: torch.device

    @classmethod
    def capture(cls, device: torch.device) -> RngState:
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda, device)

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block with this RNG state, and leave the caller's RNG state as it was."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


@contextmanager
def batchnorm_stats_kept(module: nn.Module) -> Iterator[None]:
    """Undo the running-statistics updates BatchNorm layers make in the block (the no-graph pass must not count
    as an extra training forward)."""
    saved = [(m, {k: v.clone() for k, v in m.state_dict().items()}) for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, state in saved:
                for k, v in m.state_dict().items():
                    v.copy_(state[k])


def split_evenly(n: int, k: int) -> list[slice]:
    """``k`` contiguous slices covering ``range(n)``, sizes differing by at most one."""
    if not 1 <= k <= n:
        raise ValueError(f"cannot split a batch of {n} into {k} micro-batches")
    bounds = [i * n // k for i in range(k + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(k)]


@dataclass
class GradCacheOutput(Generic[Chunk]):
    """What :func:`grad_cache_step` returns.

    Attributes:
        surrogate: back-propagate this (Lightning does) to finish the full-batch gradient; its value equals the
            full-batch loss.
        extra: whatever ``loss_fn`` returned besides the loss (accuracies ...), computed on the cached features.
    """

    surrogate: torch.Tensor
    extra: Any


def _surrogate(features: Features, grads: Sequence[torch.Tensor | None]) -> torch.Tensor:
    total = features[0].new_zeros((), dtype=torch.float32)
    for f, g in zip(features, grads, strict=True):
        if g is not None:
            total = total + (f.float() * g.float()).sum()
    return total


def grad_cache_step(
    chunks: Sequence[Chunk],
    embed: Callable[[Chunk], Features],
    loss_fn: Callable[[Features], tuple[torch.Tensor, Any]],
    module: nn.Module,
    loss_params: Sequence[torch.Tensor] = (),
    scale: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> GradCacheOutput:
    """Full-batch contrastive loss over ``chunks`` with one micro-batch's activation memory (see module doc).

    Args:
        chunks: the micro-batches, in batch order (their features are concatenated in this order).
        embed: micro-batch -> tuple of ``(b_i, d)`` feature tensors (e.g. image and text embeddings).
        loss_fn: the concatenated features -> ``(loss, extra)``; may gather across ranks like any loss here.
        module: the module whose forward ``embed`` runs (for the device and its BatchNorm layers).
        loss_params: parameters the loss uses directly (logit scale / bias).
        scale: applied to every surrogate this function back-propagates itself (the precision plugin's loss
            scaler under fp16; ``None`` otherwise), so they match Lightning's scaled final backward.
    """
    device = next(module.parameters()).device
    states: list[RngState] = []
    cached: list[Features] = []
    with torch.no_grad(), batchnorm_stats_kept(module):
        for chunk in chunks:
            states.append(RngState.capture(device))
            cached.append(tuple(f.detach() for f in embed(chunk)))
    full = [torch.cat(parts).requires_grad_() for parts in zip(*cached, strict=True)]
    params = [p for p in loss_params if p.requires_grad]
    with torch.enable_grad():
        loss, extra = loss_fn(tuple(full))
        grads = torch.autograd.grad(loss, full + params, allow_unused=True)
    feature_grads, param_grads = grads[:len(full)], grads[len(full):]
    sizes = [c[0].shape[0] for c in cached]
    per_chunk = list(zip(*(g.split(sizes) if g is not None else [None] * len(sizes) for g in feature_grads),
                         strict=True))
    for i, chunk in enumerate(chunks):
        with states[i].replay():
            surrogate = _surrogate(embed(chunk), per_chunk[i])
        if i < len(chunks) - 1:
            (scale(surrogate) if scale is not None else surrogate).backward()
    for p, g in zip(params, param_grads, strict=True):
        if g is not None:
            surrogate = surrogate + (p.float() * g.float()).sum()
    return GradCacheOutput(surrogate=surrogate + (loss.detach().float() - surrogate.detach()), extra=extra)


def check_micro_batches(micro_batches: int) -> int:
    """Validate the ``micro_batches`` setting of a module (1 = off)."""
    if int(micro_batches) < 1:
        raise ValueError(f"micro_batches must be >= 1, got {micro_batches}")
    return int(micro_batches)


def trainer_loss_scale(trainer) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The fp16 loss scaler of Lightning's precision plugin (None for fp32/bf16), refusing strategies whose own
    backward machinery feature accumulation cannot drive (FSDP, DeepSpeed)."""
    from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

    strategy = trainer.strategy
    if isinstance(strategy, (FSDPStrategy, DeepSpeedStrategy)):
        raise ValueError(f"micro_batches > 1 (feature accumulation) supports single-device and DDP training, not "
                         f"{type(strategy).__name__}; use DDP or set micro_batches: 1")
    if (getattr(strategy, "_ddp_kwargs", None) or {}).get("static_graph", False):
        raise ValueError("micro_batches > 1 runs extra backwards per step, which DDP static_graph forbids")
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return scaler.scale if scaler is not None else None
