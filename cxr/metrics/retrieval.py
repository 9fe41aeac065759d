"""Image↔report retrieval metric (Recall@K hit rate, mean/median rank) that stores embeddings, not scores.

Protocols (see ``docs/evaluation.md``):

* ``study``: one query image per study (the sample with the lowest ``sample_index``; DataModules order a
  study's images so the preferred frontal view comes first) against one report per study; text→image
  queries are the study reports against those images.
* ``image``: every image is an image→text query against the unique study reports; text→image queries are the
  study reports against every image (a hit if ANY image of the study is in the top K).

A candidate is correct if it belongs to the query's study or, with ``duplicate_texts_correct``, if its report
text id equals the query's (identical template reports are indistinguishable, CXR-CLIP convention).
Ties follow :class:`~cxr.metrics.ranking.TieRule` (pessimistic by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from cxr.labels import LabelState, UncertainPolicy
from cxr.metrics.label_agreement import LabelAgreementOptions, retrieval_label_agreement
from cxr.metrics.ranking import (
    RankResult,
    TieRule,
    positives_from_ids,
    retrieval_ranks,
    summarize_ranks,
)

__all__ = ["ImageTextRetrieval", "RetrievalDetails", "RetrievalProtocol", "DirectionResult", "retrieval_ranks"]


class RetrievalProtocol(str, Enum):
    """Which images are queries/candidates (study-level 1:1, or every image)."""

    STUDY = "study"
    IMAGE = "image"


@dataclass
class DirectionResult:
    """One retrieval direction. Row numbers index the de-duplicated sample arrays of :class:`RetrievalDetails`.

    Attributes:
        query_rows: ``(Nq,)`` sample row of each query (for text queries: the row whose text represents the study).
        candidate_rows: ``(Nc,)`` sample row of each candidate.
        ranks: :class:`RankResult` (``topk_indices`` index ``candidate_rows``).
    """

    query_rows: torch.Tensor
    candidate_rows: torch.Tensor
    ranks: RankResult


@dataclass
class RetrievalDetails:
    """Everything :meth:`ImageTextRetrieval.compute` summarises, for dumps and label agreement.

    The sample arrays are de-duplicated by ``sample_index`` (DDP padding removed) and sorted by it.
    """

    sample_index: torch.Tensor
    study_ids: torch.Tensor
    text_ids: torch.Tensor
    labels: torch.Tensor | None
    i2t: DirectionResult
    t2i: DirectionResult


class ImageTextRetrieval(Metric):
    """Image→text and text→image Recall@K (hit rate), mean and median rank, chunked, DDP-safe.

    States are the embeddings and ids (list states, ``dist_reduce_fx="cat"``), so under DDP every rank
    gathers the whole evaluation set at ``compute`` and drops the duplicates a ``DistributedSampler`` pads in
    (same ``sample_index``). Scores are dot products of L2-normalised embeddings (cosine) in fp32, computed
    ``chunk_size`` query rows at a time, so 100k × 100k never materialises the full matrix.

    Args:
        ks: the K of Recall@K.
        protocol: ``study`` or ``image`` (see the module docstring).
        duplicate_texts_correct: a candidate whose text id equals the query's counts as correct.
        chunk_size: query rows scored at once.
        tie_rule: ``pessimistic`` (ties count against the model) or ``optimistic``.
        normalize: L2-normalise embeddings before scoring (cosine similarity).
        uncertain_policy: how UNCERTAIN labels count in the label agreement (only when labels are given).
        exclude_support_devices: leave Support Devices out of the label agreement.

    When labels are passed to :meth:`update` (and are not all NOT_MENTIONED), ``compute`` also returns the
    image→text clinical label agreement of the retrieved reports (:mod:`cxr.metrics.label_agreement`):
    ``i2t_exact_P@k``, ``i2t_overlap_P@k``, ``i2t_top1_{micro,macro}_f1_{5,14}``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        ks: Sequence[int] = (1, 5, 10),
        protocol: RetrievalProtocol | str = RetrievalProtocol.STUDY,
        duplicate_texts_correct: bool = True,
        chunk_size: int = 4096,
        tie_rule: TieRule | str = TieRule.PESSIMISTIC,
        normalize: bool = True,
        uncertain_policy: UncertainPolicy | str = UncertainPolicy.ZEROS,
        exclude_support_devices: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not ks or any(int(k) < 1 for k in ks):
            raise ValueError(f"ks must be positive integers, got {ks!r}")
        self.ks = tuple(sorted({int(k) for k in ks}))
        self.protocol = RetrievalProtocol(protocol)
        self.duplicate_texts_correct = bool(duplicate_texts_correct)
        self.chunk_size = int(chunk_size)
        self.tie_rule = TieRule(tie_rule)
        self.normalize = bool(normalize)
        self.label_options = LabelAgreementOptions(uncertain_policy=UncertainPolicy(uncertain_policy),
                                                   exclude_support_devices=bool(exclude_support_devices))
        for name in ("image_emb", "text_emb", "study_ids", "text_ids", "sample_index", "labels"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        study_ids: torch.Tensor,
        text_ids: torch.Tensor,
        sample_index: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> None:
        """Store one batch: ``(B, D)`` embeddings and ``(B,)`` int64 ids (from :class:`ImageTextBatch`)."""
        b = image_emb.shape[0]
        if image_emb.ndim != 2 or text_emb.shape != image_emb.shape:
            raise ValueError(f"image_emb and text_emb must both be (B, D); got {tuple(image_emb.shape)} and "
                             f"{tuple(text_emb.shape)}")
        for name, t in (("study_ids", study_ids), ("text_ids", text_ids), ("sample_index", sample_index)):
            if t.shape != (b,):
                raise ValueError(f"{name} must have shape ({b},), got {tuple(t.shape)}")
        has_labels = labels is not None
        if self.sample_index and (len(self.labels) > 0) != has_labels:
            raise ValueError("labels must be given in every update or in none")
        if has_labels and (labels.ndim != 2 or labels.shape[0] != b):
            raise ValueError(f"labels must be (B, 14), got {tuple(labels.shape)}")
        self.image_emb.append(image_emb.detach().float())
        self.text_emb.append(text_emb.detach().float())
        self.study_ids.append(study_ids.detach().to(torch.long))
        self.text_ids.append(text_ids.detach().to(torch.long))
        self.sample_index.append(sample_index.detach().to(torch.long))
        if has_labels:
            self.labels.append(labels.detach().to(torch.int8))

    # ------------------------------------------------------------------ compute
    def _cat(self, name: str) -> torch.Tensor | None:
        value = getattr(self, name)
        if isinstance(value, torch.Tensor):  # already concatenated by a DDP sync
            return value if value.numel() else None  # torchmetrics syncs an empty list as tensor([])
        if not value:
            return None
        return torch.cat(value, dim=0)

    def compute_details(self, topk: int | None = None) -> RetrievalDetails:
        """Ranks and top-``topk`` candidates (default ``max(ks)``) of both directions."""
        sample_index = self._cat("sample_index")
        if sample_index is None or sample_index.numel() == 0:
            raise RuntimeError("ImageTextRetrieval.compute() called before any update()")
        image_emb, text_emb = self._cat("image_emb"), self._cat("text_emb")
        study_ids, text_ids, labels = self._cat("study_ids"), self._cat("text_ids"), self._cat("labels")

        # Drop DistributedSampler padding: keep the first occurrence of each sample_index, sorted by it.
        order = torch.argsort(sample_index, stable=True)
        sorted_idx = sample_index[order]
        first = torch.ones_like(sorted_idx, dtype=torch.bool)
        first[1:] = sorted_idx[1:] != sorted_idx[:-1]
        keep = order[first]
        sample_index, study_ids, text_ids = sample_index[keep], study_ids[keep], text_ids[keep]
        image_emb, text_emb = image_emb[keep], text_emb[keep]
        labels = labels[keep] if labels is not None else None
        if self.normalize:
            image_emb, text_emb = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)

        # One representative row per study: the lowest sample_index (rows are sorted by it).
        rows = torch.arange(sample_index.numel(), device=sample_index.device)
        uniq, inverse = torch.unique(study_ids, return_inverse=True)
        study_rows = torch.full((uniq.numel(),), rows.numel(), dtype=torch.long, device=rows.device)
        study_rows = study_rows.scatter_reduce(0, inverse, rows, reduce="amin")
        study_rows = torch.sort(study_rows).values
        image_rows = study_rows if self.protocol is RetrievalProtocol.STUDY else rows
        text_rows = study_rows

        k = max(self.ks) if topk is None else int(topk)
        i2t = self._direction(image_emb, text_emb, image_rows, text_rows, study_ids, text_ids, k)
        t2i = self._direction(text_emb, image_emb, text_rows, image_rows, study_ids, text_ids, k)
        return RetrievalDetails(sample_index=sample_index, study_ids=study_ids, text_ids=text_ids,
                                labels=labels, i2t=i2t, t2i=t2i)

    def _direction(self, q_emb: torch.Tensor, c_emb: torch.Tensor, q_rows: torch.Tensor, c_rows: torch.Tensor,
                   study_ids: torch.Tensor, text_ids: torch.Tensor, k: int) -> DirectionResult:
        pairs = [(study_ids[q_rows], study_ids[c_rows])]
        if self.duplicate_texts_correct:
            pairs.append((text_ids[q_rows], text_ids[c_rows]))
        ranks = retrieval_ranks(q_emb[q_rows], c_emb[c_rows], positives_from_ids(*pairs),
                                chunk_size=self.chunk_size, tie_rule=self.tie_rule, topk=k)
        return DirectionResult(query_rows=q_rows, candidate_rows=c_rows, ranks=ranks)

    def summarize(self, details: RetrievalDetails) -> dict[str, torch.Tensor]:
        """The metric dictionary of :meth:`compute` from precomputed details."""
        out: dict[str, torch.Tensor] = {}
        for name, direction in (("i2t", details.i2t), ("t2i", details.t2i)):
            s = summarize_ranks(direction.ranks.ranks, self.ks)
            for k_, v in s.recall_at_k.items():
                out[f"{name}_R@{k_}"] = torch.tensor(v)
            out[f"{name}_mean_rank"] = torch.tensor(s.mean_rank)
            out[f"{name}_median_rank"] = torch.tensor(s.median_rank)
            out[f"{name}_num_queries"] = torch.tensor(s.num_queries)
            out[f"{name}_num_candidates"] = torch.tensor(int(direction.candidate_rows.numel()))
        labels = details.labels
        if labels is not None and bool((labels != LabelState.NOT_MENTIONED).any()):
            i2t = details.i2t
            top = i2t.ranks.topk_indices
            ks = [k for k in self.ks if k <= top.shape[1]]
            retrieved = labels[i2t.candidate_rows[top]]  # (Nq, K, 14)
            agreement = retrieval_label_agreement(labels[i2t.query_rows], retrieved, ks, self.label_options)
            out.update({f"i2t_{k}": torch.tensor(v) for k, v in agreement.items()})
        return out

    def compute(self) -> dict[str, torch.Tensor]:
        """``{i2t,t2i}_R@{k}``, ``{i2t,t2i}_{mean,median}_rank`` (1-based) and query/candidate counts."""
        return self.summarize(self.compute_details())
