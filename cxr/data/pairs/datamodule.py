"""DataModule for LLM2VEC4CXR adaptation: pair CSVs (or a report manifest) → single-task contrastive batches."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Dataset

from cxr.data.pairs.pairs import (
    PairBuildOptions,
    PairRecord,
    build_pairs,
    read_pairs_csv,
    records_from_report_manifest,
)
from cxr.data.pairs.task_sampler import TaskBatchSampler
from cxr.data.pairs.tasks import TASK_SPECS, PairTask
from cxr.records import Split
from cxr.reports.shuffle import shuffle_sentences


@dataclass
class PairBatch:
    """One single-task batch. Texts are ``(instruction, text)`` pairs (instruction may be empty)."""

    queries: list[tuple[str, str]]
    positives: list[tuple[str, str]]
    negatives: list[tuple[str, str]] | None
    task: PairTask

    def __len__(self) -> int:
        return len(self.queries)


class PairDataset(Dataset):
    """Pairs with the training-time text handling of the authors' ``CXR.py`` (paper §A.5).

    Query side gets the task instruction; symmetric tasks swap query/positive at random; the positive is
    sentence-shuffled with probability ``shuffle_probability``; a row without a hard negative borrows the
    positive of a random other row of the same task (so a batch has negatives for all rows or none).
    Randomness is seeded by ``(seed, epoch, index)``.
    """

    def __init__(self, pairs: list[PairRecord], seed: int = 0, use_negatives: bool = True,
                 shuffle_probability: float = 0.0, augment: bool = True) -> None:
        self.pairs = pairs
        self.seed = seed
        self.use_negatives = use_negatives
        self.shuffle_probability = shuffle_probability
        self.augment = augment
        #: object with an ``epoch`` attribute (the batch sampler, updated by Lightning's ``set_epoch`` before the
        #: epoch's workers are forked, so worker copies see it too)
        self.epoch_source: object | None = None
        self._by_task: dict[PairTask, list[int]] = {}
        for i, p in enumerate(pairs):
            self._by_task.setdefault(p.task, []).append(i)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[PairTask, tuple[str, str], tuple[str, str], tuple[str, str] | None]:
        p = self.pairs[index]
        spec = TASK_SPECS[p.task]
        epoch = int(getattr(self.epoch_source, "epoch", 0))
        rng = random.Random(f"{self.seed}:{epoch}:{index}")
        query, positive = p.query, p.positive
        if self.augment:
            if spec.symmetric and rng.random() < 0.5:
                query, positive = positive, query
            if rng.random() < self.shuffle_probability:
                positive = shuffle_sentences(positive, rng)
        negative = None
        if self.use_negatives:
            negative = p.negative
            if negative is None:
                others = self._by_task[p.task]
                j = index
                while len(others) > 1 and j == index:
                    j = rng.choice(others)
                negative = self.pairs[j].positive
        return p.task, (spec.instruction, query), ("", positive), (("", negative) if negative else None)


def collate_pairs(items: list) -> PairBatch:
    """Stack dataset items into a :class:`PairBatch`; refuses mixed-task batches."""
    tasks = {it[0] for it in items}
    if len(tasks) != 1:
        raise ValueError(f"a contrastive batch must hold one task, got {sorted(t.value for t in tasks)}")
    negs = [it[3] for it in items]
    return PairBatch(queries=[it[1] for it in items], positives=[it[2] for it in items],
                     negatives=None if any(n is None for n in negs) else negs, task=items[0][0])


class PairDataModule(L.LightningDataModule):
    """Training pairs and a held-out findings→impression set for retrieval validation.

    Args:
        train_pairs: pairs CSV (see :mod:`cxr.data.pairs.pairs`); or None with ``manifest``.
        val_pairs: pairs CSV for validation; only its ``summarize`` rows are used (R@K findings→impression).
        manifest: report manifest CSV; its train split is turned into pairs (``build_pairs``) and its val
            split into findings→impression validation pairs, when the CSV paths are not given.
        batch_size: per-rank batch size; the global batch is ``batch_size * world_size`` and holds one task.
        val_batch_size: batch size for encoding the validation set.
        seed: sampler, augmentation and pair-building seed.
        use_negatives: feed hard negatives (or borrowed ones) to the loss.
        shuffle_probability: probability of sentence-shuffling a positive (authors: always).
        variants_per_report: variant pairs per study when building from a manifest.
        num_workers: DataLoader workers.
    """

    def __init__(self, train_pairs: str | None = None, val_pairs: str | None = None, manifest: str | None = None,
                 batch_size: int = 16, val_batch_size: int = 64, seed: int = 0, use_negatives: bool = True,
                 shuffle_probability: float = 0.3, variants_per_report: int = 2, num_workers: int = 0) -> None:
        super().__init__()
        if train_pairs is None and manifest is None:
            raise ValueError("PairDataModule needs train_pairs or manifest")
        self.train_pairs = train_pairs
        self.val_pairs = val_pairs
        self.manifest = manifest
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.seed = seed
        self.use_negatives = use_negatives
        self.shuffle_probability = shuffle_probability
        self.variants_per_report = variants_per_report
        self.num_workers = num_workers
        self.train_set: PairDataset | None = None
        self.val_set: PairDataset | None = None
        self._sampler: TaskBatchSampler | None = None

    def _manifest_pairs(self, split: Split, tasks: tuple[PairTask, ...]) -> list[PairRecord]:
        records = records_from_report_manifest(Path(self.manifest), split)
        options = PairBuildOptions(tasks=tasks, variants_per_report=self.variants_per_report,
                                   hard_negatives=self.use_negatives)
        return build_pairs(records, seed=self.seed, options=options)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            pairs = (read_pairs_csv(self.train_pairs) if self.train_pairs
                     else self._manifest_pairs(Split.TRAIN, PairBuildOptions().tasks))
            self.train_set = PairDataset(pairs, seed=self.seed, use_negatives=self.use_negatives,
                                         shuffle_probability=self.shuffle_probability)
        if self.val_set is None and (self.val_pairs or self.manifest):
            pairs = (read_pairs_csv(self.val_pairs) if self.val_pairs
                     else self._manifest_pairs(Split.VAL, (PairTask.SUMMARIZE,)))
            pairs = [p for p in pairs if p.task is PairTask.SUMMARIZE]
            if pairs:
                self.val_set = PairDataset(pairs, seed=self.seed, use_negatives=False, augment=False)

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        rank, world = self._rank_world()
        self._sampler = TaskBatchSampler([p.task.value for p in self.train_set.pairs], self.batch_size,
                                         rank=rank, world_size=world, seed=self.seed)
        if len(self._sampler) == 0:
            raise ValueError(f"no task has {self.batch_size * world} pairs: every global batch would be incomplete "
                             f"(task sizes: { {t.value: len(i) for t, i in self.train_set._by_task.items()} })")
        self.train_set.epoch_source = self._sampler
        return DataLoader(self.train_set, batch_sampler=self._sampler, collate_fn=collate_pairs,
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=self.val_batch_size, shuffle=False, collate_fn=collate_pairs,
                          num_workers=self.num_workers)
