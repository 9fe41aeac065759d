"""Zero-shot classification with present/absent prompt pairs per observation; AUROC per observation + mean.

Score of observation c for image i: ``softmax(scale · [cos(i, present_c), cos(i, absent_c)])[0]`` (the early
LLM2CLIP4CXR code: "pneumonia is present" / "there is no pneumonia", logits = 100·cos).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_auroc

from cxr.labels import CHEXPERT_OBSERVATIONS, OBSERVATION_INDEX, UncertainPolicy, binarize


#: Observations eval.py scores zero-shot ("No Finding" has no sensible "<finding> is present" prompt).
ZERO_SHOT_OBSERVATIONS: tuple[str, ...] = tuple(o for o in CHEXPERT_OBSERVATIONS if o != "No Finding")


@dataclass(frozen=True)
class PromptPair:
    """The two prompts of one observation."""

    observation: str
    present: str
    absent: str


def default_prompts(observations: Sequence[str]) -> list[PromptPair]:
    """``"<finding> is present"`` / ``"there is no <finding>"`` for each observation."""
    return [PromptPair(o, f"{o.lower()} is present", f"there is no {o.lower()}") for o in observations]


def zero_shot_scores(image_emb: torch.Tensor, present_emb: torch.Tensor, absent_emb: torch.Tensor,
                     scale: float = 100.0, normalize: bool = True) -> torch.Tensor:
    """``(N, C)`` probability of "present" for N images and C prompt pairs."""
    if normalize:
        image_emb, present_emb, absent_emb = (F.normalize(t.float(), dim=-1)
                                              for t in (image_emb, present_emb, absent_emb))
    logits = torch.stack([image_emb @ present_emb.T, image_emb @ absent_emb.T], dim=-1) * scale
    return logits.softmax(dim=-1)[..., 0]


def zero_shot_auroc(scores: torch.Tensor, labels: torch.Tensor, observations: Sequence[str],
                    policy: UncertainPolicy | str = UncertainPolicy.ZEROS) -> dict[str, float]:
    """AUROC per observation (NaN when the evaluated set lacks positives or negatives) and their mean.

    ``labels`` are ``(N, 14)`` four-state CheXpert labels; NOT_MENTIONED counts as negative and UNCERTAIN
    follows ``policy`` (``ignore`` leaves those images out for that observation).
    """
    positive, valid = binarize(torch.as_tensor(labels), policy)
    out: dict[str, float] = {}
    for c, obs in enumerate(observations):
        j = OBSERVATION_INDEX[obs]
        keep = valid[:, j]
        y, s = positive[keep, j], scores[keep, c]
        out[obs] = float(binary_auroc(s, y.long())) if 0 < int(y.sum()) < y.numel() else float("nan")
    finite = [v for v in out.values() if not math.isnan(v)]
    out["mean"] = sum(finite) / len(finite) if finite else float("nan")
    return out


@torch.no_grad()
def zero_shot_evaluate(encode_texts: Callable[[list[str]], torch.Tensor], image_emb: torch.Tensor,
                       labels: torch.Tensor, prompts: Sequence[PromptPair], scale: float = 100.0,
                       policy: UncertainPolicy | str = UncertainPolicy.ZEROS,
                       normalize: bool = True) -> dict[str, float]:
    """Embed the prompts with ``encode_texts`` (e.g. ``CLIPAlignModule.encode_texts``) and score ``image_emb``.

    ``normalize=False`` scores by raw dot product (models trained with ``loss.normalize: false``).
    """
    present = encode_texts([p.present for p in prompts]).float().cpu()
    absent = encode_texts([p.absent for p in prompts]).float().cpu()
    scores = zero_shot_scores(image_emb.float().cpu(), present, absent, scale, normalize)
    return zero_shot_auroc(scores, labels, [p.observation for p in prompts], policy)
