"""Supervised contrastive loss with hard negatives (LLM2Vec ``HardNegativeNLLLoss``, paper §A.4). Pure functions.

Each local query's target is its own positive among ALL positives gathered from every rank, followed by
ALL gathered hard negatives: 1 positive and ``2·N_global − 1`` negatives per query. Features are gathered with
gradients through :func:`cxr.distributed.gather_with_grad`; every rank scores only its local queries (labels
offset by ``rank · B``), which reproduces the single-process full-batch loss and gradient once DDP averages
the per-rank losses' parameter gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cxr.distributed import gather_with_grad, rank_and_world_size

#: The authors' CXR scale (temperature 0.02; ``run_supervised.py``).
DEFAULT_SCALE = 50.0


@dataclass(frozen=True)
class ContrastiveLogits:
    """Scaled cosine logits ``(B_local, N_pos_global + N_neg_global)`` and each row's target column."""

    logits: torch.Tensor
    targets: torch.Tensor


def hard_negative_logits(q: torch.Tensor, d_pos: torch.Tensor, d_neg: torch.Tensor | None = None,
                         scale: float = DEFAULT_SCALE) -> ContrastiveLogits:
    """Local queries against gathered positives (+ gathered hard negatives), in fp32.

    All ranks must pass equal shapes (use ``drop_last``); ``d_neg`` must be given on all ranks or none.
    """
    if q.shape != d_pos.shape:
        raise ValueError(f"q {tuple(q.shape)} and d_pos {tuple(d_pos.shape)} must have the same shape")
    if d_neg is not None and d_neg.shape[1:] != q.shape[1:]:
        raise ValueError(f"d_neg {tuple(d_neg.shape)} must have embedding dim {q.shape[1]}")
    rank, _ = rank_and_world_size()
    # Cosine in fp32 even under bf16 autocast: at scale 50 bf16 rounding would shift logits by ~0.2.
    with torch.autocast(device_type=q.device.type, enabled=False):
        qn = F.normalize(q.float(), dim=-1)
        docs = [gather_with_grad(F.normalize(d_pos.float(), dim=-1))]
        if d_neg is not None:
            docs.append(gather_with_grad(F.normalize(d_neg.float(), dim=-1)))
        logits = scale * qn @ torch.cat(docs, dim=0).T
    targets = torch.arange(q.shape[0], device=q.device) + rank * q.shape[0]
    return ContrastiveLogits(logits, targets)


def hard_negative_info_nce(q: torch.Tensor, d_pos: torch.Tensor, d_neg: torch.Tensor | None = None,
                           scale: float = DEFAULT_SCALE) -> torch.Tensor:
    """Mean cross-entropy of each local query picking its own positive (see module doc)."""
    out = hard_negative_logits(q, d_pos, d_neg, scale)
    return F.cross_entropy(out.logits, out.targets)


def in_batch_accuracy(out: ContrastiveLogits) -> torch.Tensor:
    """Fraction of local queries whose highest-scoring document is their positive."""
    return (out.logits.argmax(dim=1) == out.targets).float().mean()
