"""BatchNorm statistics over the global batch under data parallelism (so DDP training equals one process).

Under DDP every rank normalises with the mean/variance of its *local* batch, so a 2-process fit with the same
global batch trains differently from one process (per-rank statistics, per-rank running estimates). Synchronised
BatchNorm computes them over all ranks' samples. ``torch.nn.SyncBatchNorm`` does this on GPUs but refuses CPU
tensors, so on CPU (gloo; the tests) :class:`GlobalBatchNorm` does the same with autograd-aware all-reduces.
:func:`sync_batchnorm` picks the implementation for the device.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (any dimensionality) whose training statistics span every rank of the default process group.

    Two passes like BatchNorm itself (mean, then centred sum of squares) for the same numerics. Gradients flow
    through the all-reduces (their backward sums over ranks), as in ``torch.nn.SyncBatchNorm``. Outside
    training, or with one process, it is plain BatchNorm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = all_reduce(input.new_tensor([input.numel() / input.shape[1]]))
        mean = all_reduce(input.sum(dims)) / count
        centred = input - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), float(count))
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: float) -> None:
        # BatchNorm's rule: running_var takes the unbiased variance; momentum None = cumulative average
        self.num_batches_tracked += 1
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (count / max(count - 1.0, 1.0))
        self.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)


_PLAIN_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _to_global(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        if type(module) not in _PLAIN_BN:
            raise TypeError(f"cannot synchronise {type(module).__name__} on CPU (only plain BatchNorm layers); "
                            "set sync_batchnorm: false")
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        for p_old, p_new in zip(module.parameters(), new.parameters(), strict=True):
            p_new.requires_grad_(p_old.requires_grad)
        return new
    for name, child in module.named_children():
        module.add_module(name, _to_global(child))
    return module


def count_batchnorm(module: nn.Module) -> int:
    """Number of BatchNorm layers in ``module``."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with every BatchNorm layer synchronised across ranks: ``torch.nn.SyncBatchNorm`` on accelerators
    (timm's converter, which also knows timm's BatchNorm+activation layers), :class:`GlobalBatchNorm` on CPU."""
    if device.type == "cpu":
        return _to_global(module)
    from timm.layers import convert_sync_batchnorm

    return convert_sync_batchnorm(module)
