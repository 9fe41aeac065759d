"""Feature accumulation (GradCache; Gao et al. 2021, open_clip ``--accum-freq``): a contrastive batch of any size
with the exact full-batch loss and gradient, in the memory of one micro-batch.

A contrastive loss couples every sample with every other, so ordinary gradient accumulation over k small batches
changes the objective (k small negative sets instead of one large one). Here a training batch is split into k
micro-batches and:

1. (in ``training_step``) each micro-batch is embedded **without a graph**; the RNG state before each forward is
   recorded; the loss is computed on the concatenated (cached) features — the full-batch loss, gathered across
   ranks as usual — and its gradient with respect to each cached feature and to the loss-only parameters (logit
   scale/bias) is taken;
2. (in the backward of the returned loss) each micro-batch is embedded **again with a graph**, under its recorded
   RNG state (dropout, drop-path and LoRA dropout draw the same masks; GradCache's ``RandContext``), and the
   gradient of ``sum(features * cached_gradient)`` with respect to the parameters is added up. By the chain rule
   the sum is the full-batch gradient.

The returned loss is the output of an autograd function whose inputs are the module's trainable parameters and
whose backward runs step 2 and hands the summed gradients to autograd. So one ordinary ``backward()`` delivers
them, after Lightning's ``zero_grad`` (which runs between ``training_step`` and the backward), once per parameter:
DDP all-reduces them like any gradient, and clipping, ``accumulate_grad_batches``, fp16 loss scaling (the
incoming gradient) and schedulers are unchanged. Step 2 is a backward inside a backward, as reentrant activation
checkpointing does.

Caveats: BatchNorm layers see micro-batch statistics (their running stats are updated only by the gradient
pass); FSDP and DeepSpeed run their own backward machinery and are refused; the summed gradients need one
parameter-sized buffer.
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
        surrogate: the full-batch loss value; back-propagating it (Lightning does) re-embeds the micro-batches and
            delivers the full-batch gradient to every trainable parameter.
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


class _ReplayGradients(torch.autograd.Function):
    """Output: the cached full-batch loss value. Backward: ``replay(grad_output)`` -> one gradient per parameter."""

    @staticmethod
    def forward(ctx, value: torch.Tensor, replay: Callable, *params: torch.Tensor) -> torch.Tensor:
        ctx.replay = replay
        return value.detach().clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return (None, None, *ctx.replay(grad_output))


def grad_cache_step(
    chunks: Sequence[Chunk],
    embed: Callable[[Chunk], Features],
    loss_fn: Callable[[Features], tuple[torch.Tensor, Any]],
    module: nn.Module,
    loss_params: Sequence[torch.Tensor] = (),
) -> GradCacheOutput:
    """Full-batch contrastive loss over ``chunks`` with one micro-batch's activation memory (see module doc).

    Args:
        chunks: the micro-batches, in batch order (their features are concatenated in this order).
        embed: micro-batch -> tuple of ``(b_i, d)`` feature tensors (e.g. image and text embeddings).
        loss_fn: the concatenated features -> ``(loss, extra)``; may gather across ranks like any loss here.
        module: the module whose trainable parameters ``embed`` and ``loss_fn`` use (device, BatchNorm layers,
            and the parameters that receive gradients).
        loss_params: parameters the loss uses directly (logit scale / bias); they must belong to ``module``.
    """
    device = next(module.parameters()).device
    states: list[RngState] = []
    cached: list[Features] = []
    with torch.no_grad(), batchnorm_stats_kept(module):
        for chunk in chunks:
            states.append(RngState.capture(device))
            cached.append(tuple(f.detach() for f in embed(chunk)))
    full = [torch.cat(parts).requires_grad_() for parts in zip(*cached, strict=True)]
    direct = [p for p in loss_params if p.requires_grad]
    with torch.enable_grad():
        loss, extra = loss_fn(tuple(full))
        grads = torch.autograd.grad(loss, full + direct, allow_unused=True)
    sizes = [c[0].shape[0] for c in cached]
    per_chunk = list(zip(*(g.split(sizes) if g is not None else [None] * len(sizes)
                           for g in grads[:len(full)]), strict=True))
    direct_grads = {id(p): g for p, g in zip(direct, grads[len(full):], strict=True)}
    params = [p for p in module.parameters() if p.requires_grad]

    def replay(grad_output: torch.Tensor) -> list[torch.Tensor | None]:
        totals: list[torch.Tensor | None] = [direct_grads.get(id(p)) for p in params]
        for state, chunk, chunk_grads in zip(states, chunks, per_chunk, strict=True):
            with state.replay(), torch.enable_grad():
                surrogate = _surrogate(embed(chunk), chunk_grads)
                found = torch.autograd.grad(surrogate, params, allow_unused=True)
            totals = [t if g is None else (g if t is None else t + g) for t, g in zip(totals, found, strict=True)]
        return [None if t is None else (t * grad_output).to(p.dtype) for t, p in zip(totals, params, strict=True)]

    value = _ReplayGradients.apply(loss.detach().float(), replay, *params)
    return GradCacheOutput(surrogate=value, extra=extra)


def check_micro_batches(micro_batches: int) -> int:
    """Validate the ``micro_batches`` setting of a module (1 = off)."""
    if int(micro_batches) < 1:
        raise ValueError(f"micro_batches must be >= 1, got {micro_batches}")
    return int(micro_batches)


def check_strategy(trainer) -> None:
    """Refuse strategies whose own backward machinery feature accumulation cannot drive (FSDP, DeepSpeed)."""
    from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

    strategy = trainer.strategy
    if isinstance(strategy, (FSDPStrategy, DeepSpeedStrategy)):
        raise ValueError(f"micro_batches > 1 (feature accumulation) supports single-device and DDP training, not "
                         f"{type(strategy).__name__}; use DDP or set micro_batches: 1")
