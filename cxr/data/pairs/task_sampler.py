"""Batch sampler that makes every GLOBAL batch hold one task only (LLM2Vec/E5 batching, paper §A.4)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class TaskBatchSampler(Sampler[list[int]]):
    """Group indices by task, cut each task into chunks of the global batch size, shuffle chunks.

    Per epoch (seeded by ``seed + epoch``): each task's indices are shuffled and cut into chunks of
    ``batch_size * world_size``; incomplete chunks are dropped; the chunks of all tasks are shuffled together.
    Rank ``r`` yields slice ``[r*B, (r+1)*B)`` of each chunk, so the ranks' local batches together form one
    single-task global batch and every rank sees the same number of equally sized batches (the gather in the
    loss needs equal shapes).

    Use with ``Trainer(use_distributed_sampler=False)``: Lightning must not replace this sampler.
    """

    def __init__(self, tasks: Sequence[str], batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"invalid batch_size={batch_size}, rank={rank}, world_size={world_size}")
        self.tasks = [str(t) for t in tasks]
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.drop_last = True  # documented behaviour; also lets Lightning introspect it
        self._offset = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle differently each epoch (Lightning calls this on samplers that have it)."""
        self.epoch = epoch

    def start_at(self, epoch: int, offset: int) -> None:
        """Make the next pass epoch ``epoch`` minus its first ``offset`` batches (mid-epoch resume)."""
        self.epoch, self._offset = int(epoch), int(offset)

    def global_batches(self) -> list[list[int]]:
        """This epoch's global batches (each ``batch_size * world_size`` indices of one task)."""
        rng = random.Random(self.seed + self.epoch)
        by_task: dict[str, list[int]] = {}
        for i, t in enumerate(self.tasks):
            by_task.setdefault(t, []).append(i)
        size = self.batch_size * self.world_size
        chunks: list[list[int]] = []
        for task in sorted(by_task):  # sorted: independent of dict/first-seen order
            idx = by_task[task]
            if self.shuffle:
                rng.shuffle(idx)
            chunks.extend(idx[s:s + size] for s in range(0, len(idx) - size + 1, size))
        if self.shuffle:
            rng.shuffle(chunks)
        return chunks

    def __iter__(self) -> Iterator[list[int]]:
        lo = self.rank * self.batch_size
        offset, self._offset = self._offset, 0
        for chunk in self.global_batches()[offset:]:
            yield chunk[lo:lo + self.batch_size]

    def __len__(self) -> int:
        size = self.batch_size * self.world_size
        counts: dict[str, int] = {}
        for t in self.tasks:
            counts[t] = counts.get(t, 0) + 1
        return sum(c // size for c in counts.values())
