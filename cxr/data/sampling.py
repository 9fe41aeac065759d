"""Which image of a study a sample uses, and how training samples are drawn (mixing, seeding)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler

from cxr.records import ImageRef, StudyRecord, ViewPosition


class ViewPolicy(str, Enum):
    """Images a study offers: ``frontal`` (PA/AP and unknown/other positions, never laterals) or ``all``."""

    FRONTAL = "frontal"
    ALL = "all"


class SamplingUnit(str, Enum):
    """Training unit: ``study`` (one sample per study, a random eligible view each epoch) or ``image``.

    As the evaluation unit: ``study`` (one deterministic image per study) or ``image`` (every eligible image,
    the study's deterministic one first), which the ``image`` and ``paper`` retrieval protocols need."""

    STUDY = "study"
    IMAGE = "image"


#: Evaluation preference: PA > AP > unknown/other positions > laterals (laterals only when allowed).
_EVAL_RANK = {ViewPosition.PA: 0, ViewPosition.AP: 1, ViewPosition.UNKNOWN: 2, ViewPosition.OTHER: 3,
              ViewPosition.LATERAL: 4, ViewPosition.LL: 5}


def eligible_images(record: StudyRecord, policy: ViewPolicy, keep_lateral_only: bool) -> tuple[ImageRef, ...]:
    """The images of ``record`` a sample may use; empty when the study has none under the policy.

    Under ``frontal``, a view that is unknown (a manifest without a view column) is kept; a lateral-only
    study falls back to its laterals when ``keep_lateral_only``.
    """
    if ViewPolicy(policy) is ViewPolicy.ALL:
        return record.images
    frontal = tuple(im for im in record.images if not im.view.is_lateral)
    if frontal:
        return frontal
    return record.images if keep_lateral_only else ()


def _eval_key(im: ImageRef) -> tuple:
    return _EVAL_RANK[im.view], im.image_id, im.path


def eval_image(images: Sequence[ImageRef]) -> ImageRef:
    """The deterministic evaluation image: best view rank, ties broken by image id then path."""
    return min(images, key=_eval_key)


def eval_images_in_order(images: Sequence[ImageRef]) -> tuple[ImageRef, ...]:
    """Every image of a study in evaluation order (:func:`eval_image` first)."""
    return tuple(sorted(images, key=_eval_key))


@dataclass(frozen=True)
class SampleKey:
    """What a sampler yields: the dataset index and a seed for that draw's randomness (view, shuffle,
    augmentation)."""

    index: int
    seed: int


class SeededSampler(Sampler[SampleKey]):
    """Seeded training sampler: a shuffled pass, or weighted draws with replacement (source mixing).

    Each draw carries its own random seed, so the view choice and the text shuffle of a sample do not
    depend on the number of workers. The epoch advances on every pass (and follows ``set_epoch`` when
    Lightning calls it), so every rank of a DDP job draws the same sequence before it is split.

    Args:
        num_items: dataset length.
        weights: per-item sampling weight; None gives a plain shuffled pass without replacement.
        num_samples: draws per epoch (default: ``num_items``).
        seed: base seed.
    """

    def __init__(self, num_items: int, weights: Sequence[float] | None = None, num_samples: int | None = None,
                 seed: int = 0) -> None:
        if num_items <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.num_items = num_items
        self.weights = None if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if self.weights is not None and (len(self.weights) != num_items or float(self.weights.sum()) <= 0):
            raise ValueError("weights must have one non-negative entry per item and a positive sum")
        self.num_samples = num_samples or num_items
        self.seed = seed
        self.epoch = 0
        self._offset = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def start_at(self, epoch: int, offset: int) -> None:
        """Make the next pass epoch ``epoch`` minus its first ``offset`` draws (mid-epoch resume)."""
        self.epoch, self._offset = int(epoch), int(offset)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[SampleKey]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        if self.weights is None:
            order = torch.cat([torch.randperm(self.num_items, generator=gen)
                               for _ in range(-(-self.num_samples // self.num_items))])[: self.num_samples]
        else:
            order = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=gen)
        seeds = torch.randint(0, 2**62, (self.num_samples,), generator=gen)
        offset, self._offset = self._offset, 0  # the whole pass is drawn first, so a skip changes no draw
        for idx, s in zip(order[offset:].tolist(), seeds[offset:].tolist(), strict=False):
            yield SampleKey(idx, s)


def mixing_weights(source_of_item: Sequence[str], source_weights: dict[str, float]) -> np.ndarray:
    """Per-item weights so that each source is drawn with probability proportional to its weight."""
    names = np.asarray(source_of_item)
    out = np.zeros(len(names), dtype=np.float64)
    for name, w in source_weights.items():
        mask = names == name
        if mask.any():
            out[mask] = w / mask.sum()
    return out


class RankShard(DistributedSampler):
    """One rank's share of a seeded training sampler under DDP: draws ``rank, rank + world, ...`` of every pass.

    Every rank iterates the same seeded draws (``base``), so global batch ``k`` (``batch_size × world`` consecutive
    draws) holds exactly the samples of batch ``k`` of one process with a ``world``-times larger batch: a
    multi-process run trains on the batches a single process would, and length bucketing's global batches stay
    whole. Lightning would otherwise wrap the sampler in its ``DistributedSamplerWrapper``, which always
    re-shuffles the draws for training (with its own seed), mixing global batches and buckets. Being a
    ``DistributedSampler``, this shard is left in place by Lightning whatever ``use_distributed_sampler`` says.

    The pass is cut to a multiple of ``world`` (every rank gets the same number of draws, as ``drop_last``).
    ``set_epoch`` and mid-epoch ``start_at`` (offset in this rank's draws) are forwarded to ``base``.
    """

    def __init__(self, base: Sampler[SampleKey], num_replicas: int, rank: int) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        # no super().__init__: it would query the process group; these are the attributes it would set
        self.base = base
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.shuffle = False
        self.drop_last = True
        self.num_samples = len(base) // self.num_replicas
        self.total_size = self.num_samples * self.num_replicas
        self.seed = int(getattr(base, "seed", 0))
        self._skipped = 0

    @property
    def epoch(self) -> int:  # the epoch of the next pass, as the base sampler counts it
        return int(getattr(self.base, "epoch", 0))

    @epoch.setter
    def epoch(self, value: int) -> None:  # DistributedSampler API; the base owns the epoch
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(value)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def start_at(self, epoch: int, offset: int) -> None:
        """Start the next pass at ``epoch`` after this rank's first ``offset`` draws (mid-epoch resume)."""
        self.base.start_at(epoch, offset * self.num_replicas)
        self._skipped = int(offset)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[SampleKey]:
        skipped, self._skipped = self._skipped, 0
        remaining = self.num_samples - skipped
        yield from itertools.islice(self.base, self.rank, remaining * self.num_replicas, self.num_replicas)
