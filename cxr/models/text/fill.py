"""Filling the text-embedding cache at scale (1.6M reports through an LLM): tokenisation in DataLoader workers
overlapped with the forward, length-sorted batches, shards committed every ``commit_every`` texts so a killed
fill resumes where it stopped, and a progress bar with texts/s and tokens/s.

The work split across DDP ranks and the preflight checks live in ``TextTower.fill_cache``; this module embeds one
rank's share.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from cxr.models.text.cache import TextEmbeddingCache
from cxr.models.text.encoder import TextEncoder, TokenizedText


@dataclass(frozen=True)
class FillSettings:
    """How a rank embeds its share of the missing texts.

    Attributes:
        batch_size: texts per forward.
        num_workers: DataLoader workers tokenising the next batches while the encoder runs (0: in-process).
        commit_every: texts per committed shard; a kill loses at most this many embeddings per rank.
        show_progress: draw the progress bar (rank 0).
    """

    batch_size: int = 32
    num_workers: int = 2
    commit_every: int = 8192
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.commit_every < 1 or self.num_workers < 0:
            raise ValueError(f"invalid fill settings {self}")


class TokenizeBatch:
    """DataLoader collate function: a list of input indices -> ``(indices, TokenizedText)``.

    Runs in the workers. They are forked where the platform allows it, so the encoder (whose ``tokenize`` this
    calls) is shared copy-on-write instead of pickled.
    """

    def __init__(self, encoder: TextEncoder, inputs: Sequence) -> None:
        self.encoder = encoder
        self.inputs = inputs

    def __call__(self, indices: list[int]) -> tuple[list[int], TokenizedText]:
        return indices, self.encoder.tokenize([self.inputs[i] for i in indices])


def length_sorted_batches(inputs: Sequence, batch_size: int) -> list[list[int]]:
    """Index batches, longest texts first: little padding, and an out-of-memory batch fails at once."""
    def length(item) -> int:
        return sum(len(part) for part in item) if isinstance(item, tuple) else len(item)

    order = sorted(range(len(inputs)), key=lambda i: -length(inputs[i]))
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def tokenized_batches(encoder: TextEncoder, inputs: Sequence, settings: FillSettings) -> DataLoader:
    """A loader of ``(indices, TokenizedText)`` over ``inputs`` (see :class:`TokenizeBatch`)."""
    workers = settings.num_workers
    context = "fork" if workers and "fork" in multiprocessing.get_all_start_methods() else None
    return DataLoader(length_sorted_batches(inputs, settings.batch_size), batch_size=None, shuffle=False,
                      collate_fn=TokenizeBatch(encoder, inputs), num_workers=workers,
                      multiprocessing_context=context, prefetch_factor=4 if workers else None)


class _Progress:
    """tqdm over texts with a tokens/s figure (the number that compares across encoders and lengths)."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, disable=not enabled, unit="text", desc="text cache", dynamic_ncols=True)
        self.tokens = 0
        self.start = time.perf_counter()

    def update(self, texts: int, tokens: int) -> None:
        self.tokens += tokens
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix(tok_s=f"{self.tokens / elapsed:,.0f}", refresh=False)
        self.bar.update(texts)

    def close(self) -> float:
        self.bar.close()
        return self.tokens / max(time.perf_counter() - self.start, 1e-9)


def embed_into_cache(encoder: TextEncoder | nn.Module, cache: TextEmbeddingCache, keys: Sequence[str],
                     inputs: Sequence, device: torch.device | str, settings: FillSettings) -> float:
    """Embed ``inputs[i]`` under ``keys[i]`` into ``cache``, committing a shard every ``commit_every`` texts.

    Returns the tokens per second (padding excluded). The cache handle is not reloaded (the caller does it
    once at the end).
    """
    pending_keys: list[str] = []
    pending: list[torch.Tensor] = []

    def flush() -> None:
        if pending_keys:
            cache.add(list(pending_keys), torch.cat(pending), reload=False)
            pending_keys.clear()
            pending.clear()

    was_training = encoder.training
    encoder.eval()
    progress = _Progress(len(keys), settings.show_progress)
    try:
        for indices, feats in tokenized_batches(encoder, inputs, settings):
            with torch.no_grad():
                pending.append(encoder(feats.to(device)).float().cpu())
            pending_keys.extend(keys[i] for i in indices)
            progress.update(len(indices), int(feats.attention_mask.sum()))
            if len(pending_keys) >= settings.commit_every:
                flush()
        flush()
    finally:
        encoder.train(was_training)
        rate = progress.close()
    return rate
