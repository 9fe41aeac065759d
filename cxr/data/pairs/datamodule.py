"""DataModule for LLM2VEC4CXR adaptation: pair CSVs, a report manifest or dataset sources → single-task batches.

With ``sources`` it takes the same :class:`~cxr.data.sources.base.DatasetSource`s as
:class:`~cxr.data.datamodule.CXRDataModule` (MIMIC-CXR, CheXpert-Plus, Open-I, R2Gen folders, CSV manifests) and
builds the pairs itself (:func:`load_report_records` + ``build_pairs``), so no pair CSV is prepared by hand.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence
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
from cxr.data.pairs.tasks import TASK_SPECS, InstructionSet, PairTask, task_instruction
from cxr.data.resumable import ResumableDataLoader
from cxr.data.sources.base import DatasetSource
from cxr.data.validation import (
    BadInputPolicy,
    DataValidationError,
    ImageCheck,
    Problem,
    ProblemKind,
    ProblemLog,
    dedupe_problems,
    find_record_problems,
)
from cxr.records import Split, StudyRecord
from cxr.reports.shuffle import shuffle_sentences

log = logging.getLogger(__name__)

#: Problems about images only: irrelevant when only the reports are used.
IMAGE_PROBLEM_KINDS = frozenset({ProblemKind.MISSING_IMAGE, ProblemKind.UNREADABLE_IMAGE,
                                 ProblemKind.NO_USABLE_IMAGE, ProblemKind.EMPTY_PATH})


def _report_problems(source: DatasetSource) -> tuple[list[StudyRecord], list[Problem]]:
    problems = ProblemLog()
    records = source.load(problems)
    problems.raise_fatal(f"source {source.name!r}")
    problems.extend(find_record_problems(records, f"source {source.name!r}", ImageCheck.NONE))
    return records, [p for p in dedupe_problems(problems.problems) if p.kind not in IMAGE_PROBLEM_KINDS]


def load_report_records(sources: Sequence[DatasetSource],
                        bad_input: BadInputPolicy = BadInputPolicy.RAISE) -> dict[Split, list[StudyRecord]]:
    """Studies per split from ``sources`` for report-only use (pair building).

    Images are neither opened nor checked, and image defects (missing, unreadable, none listed) are ignored: a
    study with a report and no usable image still gives pairs. Report defects follow ``bad_input`` as in
    ``CXRDataModule``: ``RAISE`` lists every problem with file, row and field; ``SKIP`` drops the studies they
    name and logs a counted summary (never report text). Missing tables/columns always raise.
    """
    policy = BadInputPolicy(bad_input)
    names = [s.name for s in sources]
    if not sources or len(set(names)) != len(names):
        raise ValueError(f"need at least one source, with unique names; got {names}")
    fatal = ProblemLog()
    for source in sources:
        source.check(fatal)
    fatal.raise_fatal("data sources are misconfigured")
    by_split: dict[Split, list[StudyRecord]] = {split: [] for split in Split}
    all_problems: list[Problem] = []
    for source in sources:
        records, problems = _report_problems(source)
        all_problems.extend(problems)
        bad = {p.study_key for p in problems if p.study_key}
        kept = [r for r in records if r.key not in bad]
        if problems and policy is BadInputPolicy.SKIP:
            counts = ", ".join(f"{k}: {n}" for k, n in sorted(Counter(p.kind.value for p in problems).items()))
            log.warning("source %r: skipped %d of %d studies for pair building because of %d problem(s) (%s)",
                        source.name, len(records) - len(kept), len(records), len(problems), counts)
        for rec in kept:
            by_split[rec.split].append(rec)
    if all_problems and policy is BadInputPolicy.RAISE:
        raise DataValidationError(all_problems, "invalid report data (bad_input=raise)")
    return by_split


@dataclass
class PairBatch:
    """One single-task batch. Texts are ``(instruction, text)`` pairs (instruction may be empty)."""

    queries: list[tuple[str, str]]
    positives: list[tuple[str, str]]
    negatives: list[tuple[str, str]] | None
    task: PairTask

    def __len__(self) -> int:
        return len(self.queries)


def reversible_tasks(tasks: Sequence[PairTask | str] | None) -> frozenset[PairTask]:
    """The tasks ``reverse_prob`` applies to: ``tasks`` (each needs a reverse instruction), or all that have one."""
    have = {t for t, spec in TASK_SPECS.items() if spec.reverse_instruction is not None}
    if tasks is None:
        return frozenset(have)
    chosen = frozenset(t if isinstance(t, PairTask) else PairTask.parse(t) for t in tasks)
    if chosen - have:
        raise ValueError(f"no reverse instruction for task(s) {sorted(t.value for t in chosen - have)} "
                         f"(reversible: {sorted(t.value for t in have)})")
    return chosen


class PairDataset(Dataset):
    """Pairs with the training-time text handling of the authors' ``CXR.py`` (paper §A.5).

    Query side gets the task instruction; symmetric tasks swap query/positive at random; the positive is
    sentence-shuffled with probability ``shuffle_prob``; a row without a hard negative borrows the
    positive of a random other row of the same task (so a batch has negatives for all rows or none).
    With probability ``reverse_prob`` an asymmetric task with a reverse instruction (``TaskSpec``) is served the
    other way round: positive as query under the reverse instruction, the query as positive, and a borrowed
    negative of the query's side (the hard negative corrupts the other side). Project instructions only: the
    authors' set has no reverse instructions. Randomness is seeded by ``(seed, epoch, index)``.
    """

    def __init__(self, pairs: list[PairRecord], seed: int = 0, use_negatives: bool = True,
                 shuffle_prob: float = 0.0, augment: bool = True,
                 instruction_set: InstructionSet = InstructionSet.PROJECT, reverse_prob: float = 0.0,
                 reverse_tasks: Sequence[PairTask] | None = None) -> None:
        if not 0.0 <= reverse_prob <= 1.0:
            raise ValueError(f"reverse_prob must be in [0, 1], got {reverse_prob}")
        self.reverse_tasks = reversible_tasks(reverse_tasks)
        self.pairs = pairs
        self.reverse_prob = reverse_prob
        self.instruction_set = InstructionSet(instruction_set)
        self.seed = seed
        self.use_negatives = use_negatives
        self.shuffle_prob = shuffle_prob
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
        instruction = task_instruction(p.task, self.instruction_set)
        reverse = False
        if self.augment:
            if spec.symmetric and rng.random() < 0.5:
                query, positive = positive, query
            elif (self.reverse_prob > 0 and p.task in self.reverse_tasks
                  and self.instruction_set is InstructionSet.PROJECT and rng.random() < self.reverse_prob):
                query, positive, instruction, reverse = positive, query, spec.reverse_instruction, True
            if rng.random() < self.shuffle_prob:
                positive = shuffle_sentences(positive, rng)
        negative = None
        if self.use_negatives:
            negative = None if reverse else p.negative
            if negative is None:
                others = self._by_task[p.task]
                j = index
                while len(others) > 1 and j == index:
                    j = rng.choice(others)
                negative = self.pairs[j].query if reverse else self.pairs[j].positive
        return p.task, (instruction, query), ("", positive), (("", negative) if negative else None)


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
        train_pairs: pairs CSV (see :mod:`cxr.data.pairs.pairs`); or None with ``manifest`` or ``sources``.
        val_pairs: pairs CSV for validation; only its ``summarize`` rows are used (R@K findings→impression).
        manifest: report manifest CSV; its train split is turned into pairs (``build_pairs``) and its val
            split into findings→impression validation pairs, when the CSV paths are not given.
        batch_size: per-rank batch size; the global batch is ``batch_size * world_size`` and holds one task.
        eval_batch_size: batch size for encoding the validation set.
        seed: sampler, augmentation and pair-building seed.
        use_negatives: feed hard negatives (or borrowed ones) to the loss.
        shuffle_prob: probability of sentence-shuffling a positive (authors: always).
        variants_per_report: variant pairs per study when building from a manifest or sources.
        rewrite_first: make one of them an abbreviation rewrite whenever one applies (the authors' main ``cxr``
            pair; see :func:`~cxr.data.pairs.pairs.pick_variants`); False draws every variant kind alike.
        num_workers: DataLoader workers.
        sources: dataset sources (as in ``CXRDataModule``): their train split is turned into pairs and their val
            split into findings→impression validation pairs (unless ``val_pairs``); exclusive with ``manifest``.
        bad_input: ``RAISE`` or ``SKIP`` for report defects of ``sources`` (see :func:`load_report_records`).
        instruction_set: ``PROJECT`` (the project's full task instructions) or ``AUTHORS`` (the authors' strings).
        reverse_prob: probability of training a pair of ``reverse_tasks`` the other way round (statement →
            report, impression → findings) under the task's reverse instruction; 0 trains one direction, as the
            authors did. Ignored with the authors' instructions (they have no reverse sentences).
        reverse_tasks: the tasks ``reverse_prob`` applies to. Default ``classify`` only: trained one way, label →
            report retrieval could end below the unadapted encoder; reversing ``summarize`` too cost
            findings → impression R@1 (both measured in docs/llm2vec4cxr.md).
    """

    def __init__(self, train_pairs: str | None = None, val_pairs: str | None = None, manifest: str | None = None,
                 batch_size: int = 16, eval_batch_size: int = 64, seed: int = 0, use_negatives: bool = True,
                 shuffle_prob: float = 0.3, variants_per_report: int = 2, num_workers: int = 0,
                 sources: list[DatasetSource] | None = None, bad_input: BadInputPolicy = BadInputPolicy.RAISE,
                 instruction_set: InstructionSet = InstructionSet.PROJECT, reverse_prob: float = 0.5,
                 reverse_tasks: tuple[PairTask, ...] = (PairTask.CLASSIFY,), rewrite_first: bool = True) -> None:
        super().__init__()
        if train_pairs is None and manifest is None and not sources:
            raise ValueError("PairDataModule needs one of train_pairs, manifest or sources")
        if manifest is not None and sources:
            raise ValueError("PairDataModule takes one of manifest or sources, not both")
        self.train_pairs = train_pairs
        self.val_pairs = val_pairs
        self.manifest = manifest
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.use_negatives = use_negatives
        self.shuffle_prob = shuffle_prob
        self.variants_per_report = variants_per_report
        self.num_workers = num_workers
        self.sources = list(sources or [])
        self.bad_input = BadInputPolicy(bad_input)
        self.instruction_set = InstructionSet(instruction_set)
        self.reverse_prob = reverse_prob
        self.reverse_tasks = sorted(reversible_tasks(reverse_tasks))
        self.rewrite_first = rewrite_first
        self._source_records: dict[Split, list[StudyRecord]] | None = None
        self.train_set: PairDataset | None = None
        self.val_set: PairDataset | None = None
        self._sampler: TaskBatchSampler | None = None

    def _manifest_pairs(self, split: Split, tasks: tuple[PairTask, ...]) -> list[PairRecord]:
        if self.sources:
            if self._source_records is None:
                self._source_records = load_report_records(self.sources, self.bad_input)
            records = self._source_records[split]
        else:
            records = records_from_report_manifest(Path(self.manifest), split)
        options = PairBuildOptions(tasks=tasks, variants_per_report=self.variants_per_report,
                                   hard_negatives=self.use_negatives, rewrite_first=self.rewrite_first)
        return build_pairs(records, seed=self.seed, options=options)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            pairs = (read_pairs_csv(self.train_pairs) if self.train_pairs
                     else self._manifest_pairs(Split.TRAIN, PairBuildOptions().tasks))
            self.train_set = PairDataset(pairs, seed=self.seed, use_negatives=self.use_negatives,
                                         shuffle_prob=self.shuffle_prob,
                                         instruction_set=self.instruction_set, reverse_prob=self.reverse_prob,
                                         reverse_tasks=self.reverse_tasks)
        if self.val_set is None and (self.val_pairs or self.manifest or self.sources):
            pairs = (read_pairs_csv(self.val_pairs) if self.val_pairs
                     else self._manifest_pairs(Split.VAL, (PairTask.SUMMARIZE,)))
            pairs = [p for p in pairs if p.task is PairTask.SUMMARIZE]
            if pairs:
                self.val_set = PairDataset(pairs, seed=self.seed, use_negatives=False, augment=False,
                                           instruction_set=self.instruction_set)

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
        # resumable: a checkpoint saved mid-epoch holds the position, so --ckpt_path resumes exactly
        return ResumableDataLoader(self.train_set, batch_sampler=self._sampler, collate_fn=collate_pairs,
                                   num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=self.eval_batch_size, shuffle=False, collate_fn=collate_pairs,
                                   num_workers=self.num_workers)
