"""Pure, chunked retrieval ranking: the rank of the best correct candidate of every query.

The score matrix is never materialised: queries are processed in row chunks of ``chunk_size``, so memory is
``O(N·D + chunk_size·M)`` for N queries and M candidates. Shared by the image–text metric and the text-only
benchmarks.

Rank convention (0-based; ``rank < K`` means a hit at Recall@K):

* ``TieRule.PESSIMISTIC`` (default): rank = number of *incorrect* candidates whose score is **greater than or
  equal to** the best correct candidate's score. Ties are counted against the model, so a collapsed encoder
  (every score equal) gets Recall@K = K-incorrect-fraction ≈ 0, never a perfect score.
* ``TieRule.OPTIMISTIC``: rank = number of incorrect candidates with a **strictly greater** score (open_clip-
  style ``argsort`` results fall between the two).

Other correct candidates never push a query's rank down: Recall@K is the hit rate "at least one correct
candidate in the top K" (torchmetrics ``RetrievalHitRate``), not the fraction of all positives retrieved.
A query without any correct candidate gets rank ``-1`` (reported, not silently counted as a miss).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

import torch

#: ``positives_fn(start, end) -> (end-start, M)`` bool mask of the correct candidates of queries ``start:end``.
PositivesFn = Callable[[int, int], torch.Tensor]


class TieRule(str, Enum):
    """How candidates whose score equals the best correct candidate's score are ranked."""

    PESSIMISTIC = "pessimistic"
    OPTIMISTIC = "optimistic"


@dataclass
class RankResult:
    """Output of :func:`retrieval_ranks`.

    Attributes:
        ranks: ``(N,)`` int64 0-based rank of each query's best correct candidate; ``-1`` if it has none.
        topk_indices: ``(N, k)`` int64 candidate indices of the ``k`` highest scores (ties: lower index
            first is *not* guaranteed; ``torch.topk`` order), or ``None`` when ``topk == 0``.
        topk_scores: ``(N, k)`` float scores matching ``topk_indices`` (or ``None``).
    """

    ranks: torch.Tensor
    topk_indices: torch.Tensor | None = None
    topk_scores: torch.Tensor | None = None


def positives_from_ids(*pairs: tuple[torch.Tensor, torch.Tensor]) -> PositivesFn:
    """Build a :data:`PositivesFn`: candidate j is correct for query i if ANY ``(query_ids, cand_ids)`` pair
    matches (``query_ids[i] == cand_ids[j]``), e.g. same study id, or (duplicate reports) same text id."""
    if not pairs:
        raise ValueError("positives_from_ids needs at least one (query_ids, candidate_ids) pair")

    def fn(start: int, end: int) -> torch.Tensor:
        mask = None
        for q_ids, c_ids in pairs:
            m = q_ids[start:end, None] == c_ids[None, :]
            mask = m if mask is None else mask | m
        return mask

    return fn


def positives_from_index(correct_index: torch.Tensor, num_candidates: int) -> PositivesFn:
    """A :data:`PositivesFn` for exactly one correct candidate per query, ``correct_index[i]``."""

    def fn(start: int, end: int) -> torch.Tensor:
        idx = correct_index[start:end].to(torch.long)
        mask = torch.zeros(end - start, num_candidates, dtype=torch.bool, device=idx.device)
        mask[torch.arange(end - start, device=idx.device), idx] = True
        return mask

    return fn


@torch.no_grad()
def retrieval_ranks(
    query: torch.Tensor,
    candidates: torch.Tensor,
    positives_fn: PositivesFn,
    chunk_size: int = 4096,
    tie_rule: TieRule | str = TieRule.PESSIMISTIC,
    topk: int = 0,
) -> RankResult:
    """Rank of the best correct candidate for every query, by dot-product score, in query chunks.

    Args:
        query: ``(N, D)`` query embeddings (normalise beforehand for cosine scores).
        candidates: ``(M, D)`` candidate embeddings.
        positives_fn: correct-candidate mask per query chunk (see :func:`positives_from_ids`).
        chunk_size: query rows scored at once; peak extra memory is about ``chunk_size·M·(4+1+1)`` bytes.
        tie_rule: see the module docstring.
        topk: also return the indices/scores of the ``topk`` best candidates (for dumps, label agreement).
    """
    if query.ndim != 2 or candidates.ndim != 2 or query.shape[1] != candidates.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D) embeddings, got {tuple(query.shape)} and "
                         f"{tuple(candidates.shape)}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    tie_rule = TieRule(tie_rule)
    n, m = query.shape[0], candidates.shape[0]
    k = min(int(topk), m)
    cand_t = candidates.float().t().contiguous()
    ranks = torch.empty(n, dtype=torch.long, device=query.device)
    top_idx = torch.empty(n, k, dtype=torch.long, device=query.device) if k else None
    top_val = torch.empty(n, k, dtype=torch.float32, device=query.device) if k else None
    for start in range(0, n, chunk_size):
        end = min(start + chunk_size, n)
        scores = query[start:end].float() @ cand_t  # (c, M) fp32: bf16 ties would distort ranks
        pos = positives_fn(start, end)
        if pos.shape != scores.shape:
            raise ValueError(f"positives_fn returned shape {tuple(pos.shape)}, expected {tuple(scores.shape)}")
        best_pos = scores.masked_fill(~pos, float("-inf")).amax(dim=1, keepdim=True)
        beats = scores >= best_pos if tie_rule is TieRule.PESSIMISTIC else scores > best_pos
        chunk_ranks = (beats & ~pos).sum(dim=1)
        chunk_ranks[~pos.any(dim=1)] = -1
        ranks[start:end] = chunk_ranks
        if k:
            val, idx = scores.topk(k, dim=1)
            top_idx[start:end] = idx
            top_val[start:end] = val
        del scores, pos, beats
    return RankResult(ranks=ranks, topk_indices=top_idx, topk_scores=top_val)


@dataclass
class RankSummary:
    """Recall@K and rank statistics of a set of ranks (1-based mean/median ranks)."""

    recall_at_k: dict[int, float]
    mean_rank: float
    median_rank: float
    num_queries: int
    num_without_positive: int


def summarize_ranks(ranks: torch.Tensor, ks: Sequence[int]) -> RankSummary:
    """Hit-rate Recall@K and 1-based mean/median rank over the queries that have a correct candidate.

    Queries without any correct candidate (rank ``-1``) count as misses in Recall@K and are left out of the
    mean/median rank; their number is reported.
    """
    ranks = ranks.detach().to("cpu", torch.float64)
    valid = ranks >= 0
    n = int(ranks.numel())
    recall = {int(k): (float(((ranks >= 0) & (ranks < k)).sum()) / n if n else float("nan")) for k in ks}
    vr = ranks[valid] + 1.0
    mean_rank = float(vr.mean()) if vr.numel() else float("nan")
    median_rank = float(torch.quantile(vr, 0.5)) if vr.numel() else float("nan")
    return RankSummary(recall_at_k=recall, mean_rank=mean_rank, median_rank=median_rank,
                       num_queries=n, num_without_positive=int((~valid).sum()))
