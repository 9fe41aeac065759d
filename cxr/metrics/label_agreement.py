"""Clinical label agreement of retrieved reports with the query study's CheXpert labels (pure functions).

Inputs are four-state int8 label vectors (:mod:`cxr.labels`); the uncertain policy is an explicit argument
(``zeros`` = U-zeros default, ``ones``, ``ignore`` = uncertain entries are left out of the comparison).

* **Precision@K, exact match**: a retrieved report is relevant iff its positive set equals the query's on all
  compared observations ("No Finding" included, so normal↔normal counts).
* **Precision@K, overlap**: relevant iff the positive sets share at least one observation ("No Finding" is a
  label so normals can match; ``exclude_support_devices`` drops Support Devices, which otherwise inflates it).
* **Top-1 F1** (retrieval as report generation, CXR-RePaiR/CheXbert style): the top-1 report's labels are the
  prediction, the query's the reference; micro and macro F1 over the 5 CheXpert competition observations and
  over all 14 (macro: per-observation F1 with 0 for observations that have no TP, FP or FN, as sklearn's
  ``zero_division=0``).

``no_finding_when_empty`` sets "No Finding" positive for a study with no positive observation other than
Support Devices and no uncertain one (the CheXpert labeler rule) so sources that leave the column blank still match normals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cxr.labels import CHEXPERT_OBSERVATIONS, OBSERVATION_INDEX, LabelState, UncertainPolicy, binarize

#: The 5 CheXpert competition observations (chexbert-5).
COMPETITION_OBSERVATIONS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion",
)
_NO_FINDING = OBSERVATION_INDEX["No Finding"]
_SUPPORT = OBSERVATION_INDEX["Support Devices"]


@dataclass(frozen=True)
class LabelAgreementOptions:
    """Options of the label comparison (stated next to every reported number)."""

    uncertain_policy: UncertainPolicy = UncertainPolicy.ZEROS
    exclude_support_devices: bool = False
    no_finding_when_empty: bool = True


def _binary(labels: torch.Tensor, options: LabelAgreementOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positive, valid)`` bool tensors with the No-Finding rule applied."""
    labels = torch.as_tensor(labels)
    positive, valid = binarize(labels, options.uncertain_policy)
    positive, valid = positive.clone(), valid.clone()
    if options.no_finding_when_empty:
        # CheXpert labeler rule: "No Finding" only when nothing but Support Devices is positive OR uncertain
        others = positive | (labels == LabelState.UNCERTAIN)
        others[..., _NO_FINDING] = False
        others[..., _SUPPORT] = False
        empty = ~others.any(dim=-1)
        positive[..., _NO_FINDING] |= empty
        valid[..., _NO_FINDING] |= empty
    return positive, valid


def _columns(options: LabelAgreementOptions) -> torch.Tensor:
    keep = torch.ones(len(CHEXPERT_OBSERVATIONS), dtype=torch.bool)
    if options.exclude_support_devices:
        keep[_SUPPORT] = False
    return keep


def label_precision_at_k(
    query_labels: torch.Tensor,
    retrieved_labels: torch.Tensor,
    ks: Sequence[int],
    options: LabelAgreementOptions = LabelAgreementOptions(),
) -> dict[str, float]:
    """Exact-match and overlap Precision@K (mean over queries) of the retrieved items' labels.

    Args:
        query_labels: ``(N, 14)`` four-state labels of the queries.
        retrieved_labels: ``(N, K, 14)`` labels of each query's top-K retrieved items, best first.
        ks: the K values (each ≤ ``retrieved_labels.shape[1]``).
    Returns:
        ``{"exact_P@k": ..., "overlap_P@k": ...}``.
    """
    if retrieved_labels.ndim != 3 or retrieved_labels.shape[0] != query_labels.shape[0]:
        raise ValueError(f"retrieved_labels must be (N, K, 14) with N={query_labels.shape[0]}, got "
                         f"{tuple(retrieved_labels.shape)}")
    cols = _columns(options)
    q_pos, q_valid = _binary(query_labels, options)
    r_pos, r_valid = _binary(retrieved_labels, options)
    q_pos, q_valid = q_pos[:, None, cols], q_valid[:, None, cols]
    r_pos, r_valid = r_pos[..., cols], r_valid[..., cols]
    both = q_valid & r_valid  # under `ignore`, uncertain entries of either side are not compared
    exact = ((q_pos == r_pos) | ~both).all(dim=-1)
    overlap = (q_pos & r_pos & both).any(dim=-1)
    out: dict[str, float] = {}
    for k in ks:
        if k > retrieved_labels.shape[1]:
            raise ValueError(f"K={k} exceeds the {retrieved_labels.shape[1]} retrieved items given")
        out[f"exact_P@{k}"] = float(exact[:, :k].float().mean(dim=1).mean())
        out[f"overlap_P@{k}"] = float(overlap[:, :k].float().mean(dim=1).mean())
    return out


def top1_label_f1(
    query_labels: torch.Tensor,
    top1_labels: torch.Tensor,
    observations: Sequence[str] = CHEXPERT_OBSERVATIONS,
    options: LabelAgreementOptions = LabelAgreementOptions(),
) -> dict[str, float]:
    """Micro and macro F1 of the top-1 retrieved report's labels against the query's (reference) labels.

    Returns ``{"micro_f1": ..., "macro_f1": ...}`` over ``observations``.
    """
    idx = torch.tensor([OBSERVATION_INDEX[o] for o in observations])
    ref, ref_valid = _binary(query_labels, options)
    pred, pred_valid = _binary(top1_labels, options)
    ref, pred, valid = ref[:, idx], pred[:, idx], (ref_valid & pred_valid)[:, idx]
    tp = (ref & pred & valid).sum(dim=0).double()
    fp = (~ref & pred & valid).sum(dim=0).double()
    fn = (ref & ~pred & valid).sum(dim=0).double()
    denom = 2 * tp + fp + fn
    per_obs = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))
    micro_denom = float(denom.sum())
    return {
        "micro_f1": float(2 * tp.sum() / micro_denom) if micro_denom > 0 else 0.0,
        "macro_f1": float(per_obs.mean()),
    }


def retrieval_label_agreement(
    query_labels: torch.Tensor,
    retrieved_labels: torch.Tensor,
    ks: Sequence[int],
    options: LabelAgreementOptions = LabelAgreementOptions(),
) -> dict[str, float]:
    """All label-agreement numbers: ``exact_P@k``, ``overlap_P@k``, ``top1_{micro,macro}_f1_{5,14}``."""
    out = label_precision_at_k(query_labels, retrieved_labels, ks, options)
    top1 = retrieved_labels[:, 0]
    for tag, obs in (("5", COMPETITION_OBSERVATIONS), ("14", CHEXPERT_OBSERVATIONS)):
        f1 = top1_label_f1(query_labels, top1, obs, options)
        out[f"top1_micro_f1_{tag}"] = f1["micro_f1"]
        out[f"top1_macro_f1_{tag}"] = f1["macro_f1"]
    return out
