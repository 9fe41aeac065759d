"""CLIP-style contrastive losses for image–text alignment (pure functions, no logging).

Features are gathered across ranks *with* gradients through :func:`cxr.distributed.gather_with_grad`
and each rank computes local-vs-global logits (labels offset by ``rank * B``), which reproduces the
full-batch loss and gradient once DDP averages parameter gradients (open_clip ``--local-loss
--gather-with-grad``).

Study-aware: two samples of the same study (equal ``study_ids``) or with identical report text (equal
``text_ids``) are never each other's negatives; such off-diagonal pairs are removed from the softmax
denominator (InfoNCE) or from the sum (SigLIP) while the diagonal stays the positive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F

from cxr.distributed import gather_no_grad, gather_with_grad, rank_and_world_size
from cxr.losses.siglip import sigmoid_loss

#: open_clip / EVA-CLIP init of the learnable (log) temperature, and its clamp.
CLIP_INIT_LOGIT_SCALE = math.log(1 / 0.07)
CLIP_MAX_LOGIT_SCALE = math.log(100)
#: SigLIP init (Zhai et al. 2023; open_clip ``init_logit_scale=log(10)``, ``init_logit_bias=-10``).
SIGLIP_INIT_LOGIT_SCALE = math.log(10)
SIGLIP_INIT_LOGIT_BIAS = -10.0


class ClipLossKind(str, Enum):
    """Which contrastive objective aligns the towers."""

    INFONCE = "infonce"
    SIGLIP = "siglip"


@dataclass(frozen=True)
class ClipLossConfig:
    """Contrastive-loss settings.

    Attributes:
        kind: symmetric InfoNCE (CLIP) or the sigmoid loss (SigLIP).
        normalize: L2-normalise features before the dot product. ``False`` (with ``exp_scale=False``)
            reproduces the authors' released training, which fed raw features and the raw scale (paper §C.5).
        exp_scale: use ``exp(logit_scale)`` as the multiplier (standard); ``False`` uses the raw parameter.
        study_aware: mask same-study / same-text pairs out of the negatives.
        label_smoothing: InfoNCE label smoothing (authors: 0).
        init_logit_scale: ``None`` picks the kind's default (ln(1/0.07) for InfoNCE, ln 10 for SigLIP).
        max_logit_scale: clamp applied after every optimiser step (ln 100).
        learn_logit_scale: whether the temperature is trained.
    """

    kind: ClipLossKind = ClipLossKind.INFONCE
    normalize: bool = True
    exp_scale: bool = True
    study_aware: bool = True
    label_smoothing: float = 0.0
    init_logit_scale: float | None = None
    max_logit_scale: float = CLIP_MAX_LOGIT_SCALE
    learn_logit_scale: bool = True

    def initial_scale(self) -> float:
        if self.init_logit_scale is not None:
            return float(self.init_logit_scale)
        return SIGLIP_INIT_LOGIT_SCALE if self.kind == ClipLossKind.SIGLIP else CLIP_INIT_LOGIT_SCALE


@dataclass
class ClipLossOutput:
    """Loss plus detached diagnostics (in-batch top-1 accuracy of the local rows)."""

    loss: torch.Tensor
    i2t_acc: torch.Tensor
    t2i_acc: torch.Tensor


def effective_scale(logit_scale: torch.Tensor, exp_scale: bool) -> torch.Tensor:
    """The multiplier applied to similarities: ``exp(s)`` (standard CLIP) or ``s`` (authors' quirk)."""
    return logit_scale.float().exp() if exp_scale else logit_scale.float()


def similarity(a: torch.Tensor, b: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """``a @ b.T`` in fp32 outside autocast (bf16 would cost ~0.4 logit units at scale 100)."""
    with torch.autocast(device_type=a.device.type, enabled=False):
        a32, b32 = a.float(), b.float()
        if normalize:
            a32, b32 = F.normalize(a32, dim=-1), F.normalize(b32, dim=-1)
        return a32 @ b32.T


def same_pair_mask(local_ids: list[torch.Tensor], global_ids: list[torch.Tensor]) -> torch.Tensor:
    """``(B, N)`` bool: True where any id vector matches between a local row and a global column."""
    mask = None
    for loc, glo in zip(local_ids, global_ids, strict=False):
        m = loc.view(-1, 1) == glo.view(1, -1)
        mask = m if mask is None else mask | m
    assert mask is not None
    return mask


def _positive_and_ignored(
    study_ids: torch.Tensor | None, text_ids: torch.Tensor | None, study_aware: bool,
    offset: int, b: int, n: int, device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``labels (B,)`` into the global columns and ``ignore (B, N)``: same study/text, off-diagonal."""
    labels = torch.arange(b, device=device) + offset
    ignore = torch.zeros(b, n, dtype=torch.bool, device=device)
    if study_aware:
        local, glob = [], []
        for ids in (study_ids, text_ids):
            if ids is not None:
                local.append(ids.to(device))
                glob.append(gather_no_grad(ids.to(device)))
        if local:
            ignore = same_pair_mask(local, glob)
            ignore[torch.arange(b, device=device), labels] = False
    return labels, ignore


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore: torch.Tensor,
                         label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy over the columns not in ``ignore`` (smoothing spread over the kept columns only)."""
    logp = torch.log_softmax(logits.masked_fill(ignore, float("-inf")), dim=1)
    rows = torch.arange(logits.shape[0], device=logits.device)
    nll = -logp[rows, labels]
    if label_smoothing > 0:
        kept = (~ignore).sum(1).clamp(min=1)
        smooth = -logp.masked_fill(ignore, 0.0).sum(1) / kept
        nll = (1 - label_smoothing) * nll + label_smoothing * smooth
    return nll.mean()


def clip_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    study_ids: torch.Tensor | None = None,
    text_ids: torch.Tensor | None = None,
    config: ClipLossConfig | None = None,
    logit_bias: torch.Tensor | None = None,
) -> ClipLossOutput:
    """Contrastive loss of local features against features gathered from every rank.

    Args:
        image_emb, text_emb: ``(B, D)`` local features (the i-th image's positive is the i-th text).
        logit_scale: the learnable log-temperature parameter (raw; see ``config.exp_scale``).
        study_ids, text_ids: ``(B,)`` int64 ids used by the study-aware mask.
        config: loss settings (defaults: symmetric InfoNCE, normalised, ``exp`` scale, study-aware).
        logit_bias: SigLIP's learnable bias (required for ``kind=siglip``).

    Returns:
        :class:`ClipLossOutput`; the loss is the mean over local rows, so averaging over ranks (as DDP does
        for gradients) gives the full-batch loss.
    """
    cfg = config or ClipLossConfig()
    if image_emb.shape != text_emb.shape:
        raise ValueError(f"image/text features differ in shape: {tuple(image_emb.shape)} vs {tuple(text_emb.shape)}")
    rank, _ = rank_and_world_size()
    b = image_emb.shape[0]
    all_image = gather_with_grad(image_emb)
    all_text = gather_with_grad(text_emb)
    n = all_text.shape[0]
    scale = effective_scale(logit_scale, cfg.exp_scale)
    logits_i2t = scale * similarity(image_emb, all_text, cfg.normalize)  # (B, N)
    logits_t2i = scale * similarity(text_emb, all_image, cfg.normalize)  # (B, N)
    labels, ignore = _positive_and_ignored(study_ids, text_ids, cfg.study_aware, rank * b, b, n,
                                           image_emb.device)
    if cfg.kind == ClipLossKind.SIGLIP:
        if logit_bias is None:
            raise ValueError("SigLIP loss needs a logit_bias")
        loss = sigmoid_loss(logits_i2t, logit_bias, labels, ignore)
    else:
        loss = 0.5 * (masked_cross_entropy(logits_i2t, labels, ignore, cfg.label_smoothing)
                      + masked_cross_entropy(logits_t2i, labels, ignore, cfg.label_smoothing))
    with torch.no_grad():
        i2t_acc = (logits_i2t.masked_fill(ignore, float("-inf")).argmax(1) == labels).float().mean()
        t2i_acc = (logits_t2i.masked_fill(ignore, float("-inf")).argmax(1) == labels).float().mean()
    return ClipLossOutput(loss=loss, i2t_acc=i2t_acc, t2i_acc=t2i_acc)


@torch.no_grad()
def clamp_logit_scale_(logit_scale: torch.Tensor, max_value: float = CLIP_MAX_LOGIT_SCALE) -> None:
    """In-place clamp to ``[0, max_value]`` (open_clip/EVA-CLIP do it after every optimiser step)."""
    logit_scale.clamp_(0.0, max_value)
