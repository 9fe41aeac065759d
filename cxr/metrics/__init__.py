"""Evaluation metrics: chunked retrieval ranks, the image–text retrieval metric, clinical label agreement."""

from cxr.metrics.ranking import RankResult, RankSummary, TieRule, retrieval_ranks, summarize_ranks
from cxr.metrics.retrieval import ImageTextRetrieval, RetrievalDetails, RetrievalProtocol

__all__ = [
    "ImageTextRetrieval",
    "RankResult",
    "RankSummary",
    "RetrievalDetails",
    "RetrievalProtocol",
    "TieRule",
    "retrieval_ranks",
    "summarize_ranks",
]
