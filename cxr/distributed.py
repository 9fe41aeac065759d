"""Collectives used by the losses and metrics: the one home of gather-with-gradient."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` read at call time (the process group may not exist at construction)."""
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0, keeping gradients.

    The backward pass sums each rank's gradient contributions back to the rank that owns the rows, so a
    loss computed on local-vs-global features reproduces the single-process full-batch gradient once DDP
    averages parameter gradients. All ranks must pass the same shape. Identity without a process group.
    """
    if not is_distributed():
        return x
    import torch.distributed.nn.functional as dist_nn

    parts = dist_nn.all_gather(x.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0 (no gradient); sizes may differ between ranks."""
    if not is_distributed():
        return x
    world = dist.get_world_size()
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    max_n = int(max(s.item() for s in sizes))
    padded = x.new_zeros((max_n, *x.shape[1:]))
    padded[: x.shape[0]] = x
    out = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(out, padded.contiguous())
    return torch.cat([o[: int(s.item())] for o, s in zip(out, sizes, strict=False)], dim=0)


#: Name components FSDP and activation checkpointing insert into a wrapped module's parameter names.
_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def clean_param_name(name: str) -> str:
    """A parameter/buffer name without wrapper components (FSDP, checkpoint wrapper, ``torch.compile``), i.e. as
    the module's state dict and a checkpoint spell it."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name
