"""Masked next-token prediction (MNTP, LLM2Vec stage 1; paper §A.4): masking and loss, pure functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def mntp_mask(input_ids: torch.Tensor, candidates: torch.Tensor, attention_mask: torch.Tensor, mask_token_id: int,
              probability: float = 0.2, shifted: bool = True, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace ``probability`` of the candidate tokens by ``mask_token_id`` (100% replacement, as LLM2Vec).

    Args:
        input_ids: (B, L) token ids.
        candidates: (B, L) 0/1, the tokens that may be masked (text tokens: no specials, instruction or padding).
        attention_mask: (B, L) 0/1 padding mask.
        shifted: decoders predict token i from position i-1, so position 0 and tokens whose predecessor is padding
            are never masked.
    Returns ``(masked_ids, labels)``; labels hold the original id at masked positions and -100 elsewhere.
    Every row with a candidate gets at least one masked token.
    """
    cand = candidates.bool().clone()
    if shifted:
        cand[:, 0] = False
        cand[:, 1:] &= attention_mask[:, :-1].bool()
    draw = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    chosen = (draw < probability) & cand
    # at least one per row: the candidate with the smallest draw
    empty = ~chosen.any(dim=1) & cand.any(dim=1)
    if empty.any():
        first = draw.masked_fill(~cand, 2.0).argmin(dim=1)
        chosen[empty, first[empty]] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    masked = torch.where(chosen, torch.full_like(input_ids, mask_token_id), input_ids)
    return masked, labels


def mntp_loss(logits: torch.Tensor, labels: torch.Tensor, shifted: bool = True) -> torch.Tensor:
    """Cross-entropy on masked tokens; with ``shifted`` token i is predicted from the output at i-1 (decoders).

    Encoders with an MLM head (BERT) use ``shifted=False``: token i is predicted at position i.
    """
    if shifted:
        logits, labels = logits[:, :-1], labels[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX)
