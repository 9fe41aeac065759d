"""Empirical chance level of the retrieval metrics on a real split: random embeddings over its true ids.

Duplicate report texts count as correct and ties are pessimistic, so chance is not exactly 5/N; measure it.
"""

from __future__ import annotations

import statistics

import torch


def chance_levels(loader, draws: int = 50) -> dict[str, float]:
    """Mean ``i2t_R@5`` and ``i2t_mean_rank`` of random embeddings over ``loader``'s ids."""
    from cxr.metrics.retrieval import ImageTextRetrieval

    ids = [(b.study_ids, b.text_ids, b.sample_index) for b in loader]
    r5, mean_rank = [], []
    for d in range(draws):
        metric = ImageTextRetrieval(ks=(5,))
        g = torch.Generator().manual_seed(d)
        for study_ids, text_ids, sample_index in ids:
            n = len(study_ids)
            metric.update(torch.randn(n, 8, generator=g), torch.randn(n, 8, generator=g), study_ids, text_ids,
                          sample_index)
        out = metric.compute()
        r5.append(float(out["i2t_R@5"]))
        mean_rank.append(float(out["i2t_mean_rank"]))
    return {"R@5": statistics.mean(r5), "mean_rank": statistics.mean(mean_rank)}
