"""Image↔report retrieval metric (Recall@K hit rate, mean/median rank) that stores embeddings, not scores.

Protocols (see ``docs/evaluation.md``):

* ``study``: one query image per study (the sample with the lowest ``sample_index``; DataModules order a
  study's images so the preferred frontal view comes first) against one report per study; text→image
  queries are the study reports against those images.
* ``image``: every image is an image→text query against the unique study reports; text→image queries are the
  study reports against every image (a hit if ANY image of the study is in the top K).
* ``paper``: the paper's protocol (the authors' ``retrieval.py``): every image row against the report of
  every row (a multi-view study's report appears once per image), and only the row's own report is correct
  (for text→image, only the row's own image): the diagonal of one N × N matrix. Identical reports of other
  rows, even of the same study, count as misses (``duplicate_texts_correct`` does not apply).

In ``study`` and ``image``, a candidate is correct if it belongs to the query's study or, with
``duplicate_texts_correct``, if its report text id equals the query's (identical template reports are
indistinguishable, CXR-CLIP convention). Ties follow :class:`~cxr.metrics.ranking.TieRule` (pessimistic by
default). Both directions come from one tiled pass over one score matrix
(:func:`~cxr.metrics.ranking.bidirectional_ranks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import torch
from torchmetrics import Metric

from cxr.labels import LabelState, UncertainPolicy
from cxr.metrics.label_agreement import LabelAgreementOptions, retrieval_label_agreement
from cxr.metrics.ranking import (
    RankResult,
    TieRule,
    bidirectional_ranks,
    positives_from_ids,
    retrieval_ranks,
    summarize_ranks,
)

__all__ = ["DirectionResult", "ImageTextRetrieval", "RetrievalDetails", "RetrievalProtocol",
           "retrieval_ranks"]


class RetrievalProtocol(str, Enum):
    """Which images and reports are queries/candidates and which count as correct (module docstring)."""

    STUDY = "study"
    IMAGE = "image"
    PAPER = "paper"


@dataclass
class DirectionResult:
    """One retrieval direction. Row numbers index the de-duplicated sample arrays of
    :class:`RetrievalDetails`.

    Attributes:
        query_rows: ``(Nq,)`` sample row of each query (text queries: the row whose text stands for the
            study; in ``paper``, every row).
        candidate_rows: ``(Nc,)`` sample row of each candidate.
        ranks: :class:`RankResult` (``topk_indices`` index ``candidate_rows``; image→text only, text→image
            has none).
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
    (same ``sample_index``). Scores are dot products of L2-normalised embeddings (cosine) in fp32, read in
    ``chunk_size × chunk_size`` tiles, both directions from the same tile, so 100k × 100k never materialises
    the full matrix and the scoring's extra memory does not grow with N (a few tiles plus ``O(N)`` integers).

    Args:
        ks: the K of Recall@K.
        protocol: ``study``, ``image`` or ``paper`` (see the module docstring).
        duplicate_texts_correct: a candidate whose text id equals the query's counts as correct (not in
            ``paper``).
        chunk_size: edge of the score tiles (default: 1024 on CPU, 8192 on CUDA).
        tie_rule: ``pessimistic`` (ties count against the model) or ``optimistic``.
        normalize: score cosine similarities (the tiles divide each gathered block by its rows' L2 norms, so no
            normalised copy of the embeddings is made; scores equal those of `F.normalize`-d embeddings).
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
        chunk_size: int | None = None,
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
        self.chunk_size = int(chunk_size) if chunk_size else None
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
        return value[0] if len(value) == 1 else torch.cat(value, dim=0)  # one batch: no copy

    def compute_details(self, topk: int | None = None) -> RetrievalDetails:
        """Ranks of both directions and the image→text top-``topk`` candidates (default: ``max(ks)`` when
        labels were given, for the label agreement, else 1, for the top-1 dumps)."""
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
        if not torch.equal(keep, torch.arange(sample_index.numel(), device=keep.device)):
            sample_index, study_ids, text_ids = sample_index[keep], study_ids[keep], text_ids[keep]
            image_emb, text_emb = image_emb[keep], text_emb[keep]
            labels = labels[keep] if labels is not None else None

        image_rows, text_rows, pairs = self._protocol(study_ids, text_ids)
        k = (max(self.ks) if self._informative(labels) else 1) if topk is None else int(topk)
        # One pass: rows are image→text, columns text→image; the embeddings are gathered tile by tile.
        ranks = bidirectional_ranks(image_emb, text_emb, positives_from_ids(*pairs), query_rows=image_rows,
                                    candidate_rows=text_rows, tile_size=self.chunk_size,
                                    tie_rule=self.tie_rule, topk=k, normalize=self.normalize)
        i2t = DirectionResult(query_rows=image_rows, candidate_rows=text_rows, ranks=ranks.rows)
        t2i = DirectionResult(query_rows=text_rows, candidate_rows=image_rows, ranks=ranks.cols)
        return RetrievalDetails(sample_index=sample_index, study_ids=study_ids, text_ids=text_ids,
                                labels=labels, i2t=i2t, t2i=t2i)

    def _protocol(self, study_ids: torch.Tensor, text_ids: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Image rows, report rows and the id pairs that define correct candidates, for the protocol."""
        rows = torch.arange(study_ids.numel(), device=study_ids.device)
        if self.protocol is RetrievalProtocol.PAPER:  # the diagonal of the all-rows matrix
            return rows, rows, [(rows, rows)]
        # One representative row per study: the lowest sample_index (rows are sorted by it).
        uniq, inverse = torch.unique(study_ids, return_inverse=True)
        study_rows = torch.full((uniq.numel(),), rows.numel(), dtype=torch.long, device=rows.device)
        study_rows = torch.sort(study_rows.scatter_reduce(0, inverse, rows, reduce="amin")).values
        image_rows = study_rows if self.protocol is RetrievalProtocol.STUDY else rows
        pairs = [(study_ids[image_rows], study_ids[study_rows])]
        if self.duplicate_texts_correct:
            pairs.append((text_ids[image_rows], text_ids[study_rows]))
        return image_rows, study_rows, pairs

    @staticmethod
    def _informative(labels: torch.Tensor | None) -> bool:
        return labels is not None and bool((labels != LabelState.NOT_MENTIONED).any())

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
        if self._informative(labels):
            i2t = details.i2t
            top = i2t.ranks.topk_indices
            ks = [k for k in self.ks if k <= top.shape[1]]
            retrieved = labels[i2t.candidate_rows[top]]  # (Nq, K, 14)
            agreement = retrieval_label_agreement(labels[i2t.query_rows], retrieved, ks, self.label_options)
            out.update({f"i2t_{k}": torch.tensor(v) for k, v in agreement.items()})
        return out

    def compute(self) -> dict[str, torch.Tensor]:
        """``{i2t,t2i}_R@{k}``, ``{i2t,t2i}_{mean,median}_rank`` (1-based) and query/candidate counts (and the
        label agreement when labels were given). No top-k is kept that nothing reads: top-``max(ks)`` only
        for the label agreement."""
        labels = self._cat("labels")
        return self.summarize(self.compute_details(topk=max(self.ks) if self._informative(labels) else 0))
