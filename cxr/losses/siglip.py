"""SigLIP's pairwise sigmoid loss (Zhai et al. 2023), on local rows against gathered columns."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_loss(logits: torch.Tensor, logit_bias: torch.Tensor, labels: torch.Tensor,
                 ignore: torch.Tensor) -> torch.Tensor:
    """``-Σ log σ(±(z + bias)) / B`` over local images × all texts.

    Args:
        logits: ``(B, N)`` scaled similarities of local images to every gathered text.
        logit_bias: the learnable scalar bias (init −10).
        labels: ``(B,)`` global column of each row's positive.
        ignore: ``(B, N)`` pairs left out of the sum (same study / same text, off-diagonal).

    Each rank's sum divided by its local ``B`` and averaged over ranks equals the full-batch ``Σ/N``; the
    full matrix is symmetric, so one direction covers both.
    """
    z = logits + logit_bias.float()
    sign = -torch.ones_like(z)
    sign[torch.arange(z.shape[0], device=z.device), labels] = 1.0
    terms = -F.logsigmoid(sign * z).masked_fill(ignore, 0.0)
    return terms.sum() / z.shape[0]
