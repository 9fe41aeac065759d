"""The image–text DataModule: several sources, mixing weights, view policy, bad-input policy."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, SequentialSampler

from cxr.data.bucketing import LengthBucketedSampler, LengthBucketing
from cxr.data.dataset import ImageTextDataset, build_items, collate_samples
from cxr.data.image_cache import CachedImageLoader
from cxr.data.image_check import decode_all, default_cache_file
from cxr.data.resumable import ResumableDataLoader
from cxr.data.sampling import RankShard, SamplingUnit, SeededSampler, ViewPolicy, mixing_weights
from cxr.data.sources.base import DatasetSource
from cxr.data.sources.tables import TableError
from cxr.data.transforms import TransformConfig
from cxr.data.validation import (
    BadInputPolicy,
    DataValidationError,
    ImageCheck,
    Problem,
    ProblemLog,
    apply_policy,
    dedupe_problems,
    find_record_problems,
)
from cxr.records import Split, StudyRecord

log = logging.getLogger(__name__)


def _check_arguments(sources: list[DatasetSource], eval_sources: list[DatasetSource],
                     train_weights: list[float] | None, shuffle_prob: float) -> None:
    """Refuse no sources, repeated source names, bad train weights, a shuffle probability outside [0, 1]."""
    if not sources and not eval_sources:
        raise ValueError("CXRDataModule needs at least one source")
    names = [s.name for s in sources + eval_sources]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must be unique, got {names}")
    if train_weights is not None:
        if len(train_weights) != len(sources) or min(train_weights) < 0 or sum(train_weights) <= 0:
            raise ValueError(f"train_weights needs one non-negative weight per source ({len(sources)}),"
                             f" with a positive sum; got {train_weights}")
    if not 0.0 <= shuffle_prob <= 1.0:
        raise ValueError(f"shuffle_prob must be in [0, 1], got {shuffle_prob}")


def _check_source_files(sources: list[DatasetSource]) -> None:
    """Start-up check: files and headers only, every source at once, before anything heavy happens."""
    problems = ProblemLog()
    for source in sources:
        try:
            source.check(problems)
        except TableError as err:  # undecodable bytes or repeated columns in a header
            problems.extend([err.problem])
    problems.raise_fatal("data sources are misconfigured")


class CXRDataModule(LightningDataModule):
    """Image–report pairs from one or more :class:`~cxr.data.sources.base.DatasetSource`s.

    Training uses the TRAIN studies of ``sources`` (mixed by ``train_weights``); validation and test use
    the VAL / TEST studies of ``sources`` and of ``eval_sources`` (held-out sets that never train). Each
    loader yields :class:`~cxr.data.batch.ImageTextBatch`; ``batch.sources`` tells the sets apart.

    Sources are checked (files, CSV headers) when the module is built, so a bad config fails at start-up;
    tables and images are validated in :meth:`setup` under ``bad_input``: ``raise`` lists every problem in
    one :class:`~cxr.data.validation.DataValidationError`, ``skip`` drops the affected studies/images and
    logs counts and locations (never report text).

    Args:
        sources: training sources (their val/test studies are evaluated too).
        train_weights: one sampling weight per training source (probability mass per epoch);
            None samples every training item once per epoch.
        eval_sources: held-out sources used only for validation/test (by their split).
        image_size: side of the square model input.
        in_chans: image channels given to the vision tower (the grey image is repeated). With 3 channels and
            the same mean/std for every channel, the workers send grey images and the vision tower replicates
            them on the device (a third of the worker output, shared memory and host-to-device copy);
            per-channel statistics (CLIP's) make the channels differ, so those are built in the workers.
        transform: augmentation preset, normalisation mean/std, eval geometry and the (off by default)
            horizontal flip; its ``image_size``/``in_chans`` are replaced by the two arguments above.
            Default: :class:`~cxr.data.transforms.TransformConfig` defaults (medium, 0.5/0.25, pad).
        batch_size: training batch size (per device).
        eval_batch_size: validation/test/predict batch size; default ``batch_size``.
        num_workers: DataLoader workers.
        persistent_workers: keep the workers alive between epochs (no re-fork and dataset re-pickle per epoch);
            default: on whenever ``num_workers > 0``. Safe here: per-sample randomness comes from the sampler's
            draw seeds, which the main process hands to the workers.
        view_policy: ``frontal`` (no laterals; unknown views kept) or ``all``.
        sampling: training unit: ``study`` (a random eligible view per draw) or ``image``.
        eval_unit: validation/test/predict unit: ``study`` (one deterministic image per study) or ``image``
            (every eligible image; what the ``image`` and ``paper`` retrieval protocols score).
        keep_lateral_only: keep lateral-only studies (using a lateral) instead of skipping them.
        tagged_sections: ``[FINDINGS]``/``[IMPRESSION]`` tags in texts.
        shuffle_prob: probability of a section-aware sentence shuffle per training draw.
        bad_input: ``raise`` or ``skip``. Under ``skip`` an image that still fails while training (e.g. with a
            cheaper ``image_check``, or a file changed since) is replaced by the next loadable sample, counted
            in the ``data/skipped_images`` log of the epoch and named in a warning; never a blank image.
        image_check: set-up image check: ``none``, ``exists``, ``probe`` (header/decoder probe) or ``decode``
            (default: every image fully decoded once, in parallel, remembered by size+mtime).
        image_check_workers: processes of the ``decode`` check; default: every CPU.
        image_check_cache: file remembering ``decode`` verdicts; ``auto`` (default):
            ``$CXR_CACHE_DIR``/``~/.cache/cxr``/``image_check.json``; None: decode every run.
        samples_per_epoch: training draws per epoch; default the number of training items.
        seed: seed of the training sampler (order, view choice, text shuffle).
        pin_memory: DataLoader ``pin_memory``.
        image_cache_dir: a preprocessing cache written by ``python -m cxr.data.preprocess``; images found
            there are read from it (resized 8-bit) instead of decoding the originals.
        image_cache_src_root: where the originals' root is on this machine when it differs from the one
            recorded in the cache (lookups are by path relative to that root).
        image_cache_fallback: decode the original when an image is not in the cache; ``False`` makes a
            miss an error (runs that must never touch full-size DICOMs).
        length_bucketing: training batches of similar report length (:mod:`cxr.data.bucketing`): less padding
            on the online (LoRA) text path; pairing, draws and augmentation unchanged. None: off.
    """

    def __init__(
        self,
        sources: list[DatasetSource],
        train_weights: list[float] | None = None,
        eval_sources: list[DatasetSource] | None = None,
        image_size: int = 224,
        in_chans: int = 1,
        transform: TransformConfig | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        view_policy: ViewPolicy = ViewPolicy.FRONTAL,
        sampling: SamplingUnit = SamplingUnit.STUDY,
        eval_unit: SamplingUnit = SamplingUnit.STUDY,
        keep_lateral_only: bool = False,
        tagged_sections: bool = True,
        shuffle_prob: float = 0.0,
        bad_input: BadInputPolicy = BadInputPolicy.RAISE,
        image_check: ImageCheck = ImageCheck.DECODE,
        image_check_workers: int | None = None,
        image_check_cache: str | None = "auto",
        samples_per_epoch: int | None = None,
        seed: int = 0,
        pin_memory: bool = False,
        image_cache_dir: str | None = None,
        image_cache_src_root: str | None = None,
        image_cache_fallback: bool = True,
        persistent_workers: bool | None = None,
        length_bucketing: LengthBucketing | None = None,
    ) -> None:
        super().__init__()
        self.sources = list(sources)
        self.eval_sources = list(eval_sources or [])
        _check_arguments(self.sources, self.eval_sources, train_weights, shuffle_prob)
        self.train_weights = list(train_weights) if train_weights is not None else None
        self.image_size = image_size
        self.in_chans = in_chans
        # One source of truth for the geometry: the model config sets image_size/in_chans here.
        self.transform = replace(transform or TransformConfig(), image_size=image_size, in_chans=in_chans)
        self.transform.build(train=True)  # a bad preset/mean/std fails at start-up, not at setup()
        self._set_loader_settings(batch_size, eval_batch_size, num_workers, persistent_workers, pin_memory)
        self.length_bucketing = length_bucketing
        self.view_policy = ViewPolicy(view_policy)
        self.sampling = SamplingUnit(sampling)
        self.eval_unit = SamplingUnit(eval_unit)
        self.keep_lateral_only = keep_lateral_only
        self.tagged_sections = tagged_sections
        self.shuffle_prob = shuffle_prob
        self._set_bad_input_handling(bad_input, image_check, image_check_workers, image_check_cache)
        self.samples_per_epoch = samples_per_epoch
        self.seed = seed
        # Opened here so a missing or stale cache is a start-up error, before any data loading.
        self.image_loader = CachedImageLoader(image_cache_dir, src_root=image_cache_src_root,
                                              fallback=image_cache_fallback)
        _check_source_files(self.sources + self.eval_sources)
        self._records: dict[Split, list[StudyRecord]] | None = None
        self._datasets: dict[Split, ImageTextDataset] = {}

    def _set_loader_settings(self, batch_size: int, eval_batch_size: int | None, num_workers: int,
                             persistent_workers: bool | None, pin_memory: bool) -> None:
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.persistent_workers = num_workers > 0 if persistent_workers is None else bool(persistent_workers)
        if self.persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers=true needs num_workers > 0")
        self.pin_memory = pin_memory

    def _set_bad_input_handling(self, bad_input: BadInputPolicy, image_check: ImageCheck,
                                image_check_workers: int | None, image_check_cache: str | None) -> None:
        self.bad_input = BadInputPolicy(bad_input)
        self.image_check = ImageCheck(image_check)
        self.image_check_workers = image_check_workers
        self.image_check_cache = (default_cache_file() if image_check_cache == "auto"
                                  else Path(image_check_cache).expanduser() if image_check_cache else None)
        self.skipped_images: Counter[str] = Counter()  # files replaced under SKIP while loading (main process)

    # -- records -------------------------------------------------------------------------------------------
    def load_records(self) -> dict[Split, list[StudyRecord]]:
        """Load and validate every source once; returns the studies per split (after the bad-input policy)."""
        if self._records is not None:
            return self._records
        all_problems: list[Problem] = []
        kept: dict[str, list[StudyRecord]] = {}
        cached = self.image_loader.cache if self.image_loader.cache is not None else ()
        for source in self.sources + self.eval_sources:
            problems = ProblemLog()
            try:
                records = source.load(problems)
            except TableError as err:  # e.g. a byte past the header that is not valid in the encoding
                raise DataValidationError([err.problem], f"source {source.name!r}") from err
            problems.raise_fatal(f"source {source.name!r}")
            problems.extend(find_record_problems(records, f"source {source.name!r}", self.image_check, cached,
                                                 workers=self.image_check_workers,
                                                 check_cache=self.image_check_cache))
            found = dedupe_problems(problems.problems)
            all_problems.extend(found)
            if self.bad_input is BadInputPolicy.SKIP:
                kept[source.name] = apply_policy(records, found, self.bad_input, f"source {source.name!r}")
            else:
                kept[source.name] = records
        if all_problems and self.bad_input is BadInputPolicy.RAISE:
            raise DataValidationError(all_problems, "invalid input data (bad_input=raise)")
        eval_names = {s.name for s in self.eval_sources}
        by_split: dict[Split, list[StudyRecord]] = {split: [] for split in Split}
        for name, records in kept.items():
            for rec in records:
                if name in eval_names and rec.split is Split.TRAIN:
                    continue  # held-out sources never train
                by_split[rec.split].append(rec)
        self._records = by_split
        return by_split

    def _dataset(self, split: Split) -> ImageTextDataset:
        split = Split(split)
        if split not in self._datasets:
            records = self.load_records()[split]
            train = split is Split.TRAIN
            items, no_image = build_items(records, train, self.view_policy, self.sampling,
                                          self.keep_lateral_only, self.eval_unit)
            if no_image:
                log.info("%s: %d of %d studies have no image under view_policy=%s (left out)", split.value,
                         no_image, len(records), self.view_policy.value)
            transform = self.worker_transform().build(train)
            self._datasets[split] = ImageTextDataset(records, items, self.image_loader, transform,
                                                     tagged_sections=self.tagged_sections,
                                                     shuffle_prob=self.shuffle_prob if train else 0.0,
                                                     skip_bad_images=self.bad_input is BadInputPolicy.SKIP)
        return self._datasets[split]

    def worker_transform(self) -> TransformConfig:
        """What the loader workers produce: ``transform``, or its grey version when a 3-channel tower gets the
        same normalisation on every channel (the tower replicates the channel on the device)."""
        t = self.transform
        uniform = len(set(_as_tuple(t.mean))) == 1 and len(set(_as_tuple(t.std))) == 1
        if t.in_chans == 3 and uniform:
            return replace(t, in_chans=1, mean=_as_tuple(t.mean)[0], std=_as_tuple(t.std)[0])
        return t

    def records(self, split: Split | str) -> list[StudyRecord]:
        """The studies ``split`` yields samples from (in dataset order; studies without an eligible image
        under the view policy are left out)."""
        dataset = self._dataset(Split(split))
        used = sorted({it.record_index for it in dataset.items})
        return [dataset.records[i] for i in used]

    def texts(self, split: Split | str) -> list[str]:
        """Every distinct text ``split`` can yield with shuffling off, in first-seen order."""
        dataset = self._dataset(Split(split))
        seen: dict[str, None] = {}
        for it in dataset.items:
            seen.setdefault(dataset.texts[it.record_index], None)
        return list(seen)

    # -- Lightning hooks -----------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Fill the ``decode`` check's cache once per node (Lightning runs this on local rank 0 only), so the
        ranks' :meth:`setup` read verdicts instead of each decoding the whole dataset."""
        if self.image_check is not ImageCheck.DECODE or self.image_check_cache is None:
            return
        cached = self.image_loader.cache if self.image_loader.cache is not None else ()
        paths: list[str] = []
        for source in self.sources + self.eval_sources:
            try:
                records = source.load(ProblemLog())
            except Exception:  # noqa: BLE001 - setup() reports the source's problems properly
                continue
            paths.extend(im.path for rec in records for im in rec.images if im.path not in cached)
        decode_all(paths, workers=self.image_check_workers, cache_file=self.image_check_cache)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        skipped = getattr(batch, "skipped_images", None)
        if skipped:
            self.skipped_images.update(skipped)
        return batch

    def setup(self, stage: str | None = None) -> None:
        self.load_records()
        wanted = {"fit": (Split.TRAIN, Split.VAL), "validate": (Split.VAL,), "test": (Split.TEST,),
                  "predict": (Split.TEST,)}.get(stage or "", tuple(Split))
        for split in wanted:
            if self._records and self._records[split]:
                self._dataset(split)

    def _loader(self, dataset: ImageTextDataset, batch_size: int, sampler, drop_last: bool) -> DataLoader:
        # resumable: a checkpoint saved mid-epoch holds the position, so --ckpt_path resumes exactly
        return ResumableDataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                                   num_workers=self.num_workers, collate_fn=collate_samples,
                                   pin_memory=self.pin_memory, persistent_workers=self.persistent_workers)

    def train_dataloader(self) -> DataLoader:
        dataset = self._dataset(Split.TRAIN)
        if len(dataset) == 0:
            raise ValueError("no training samples: the sources have no usable TRAIN studies")
        weights = None
        if self.train_weights is not None:
            weights = mixing_weights(dataset.source_of_items(),
                                     {s.name: w for s, w in zip(self.sources, self.train_weights, strict=False)})
        sampler = SeededSampler(len(dataset), weights=weights, num_samples=self.samples_per_epoch, seed=self.seed)
        if len(sampler) < self.batch_size:
            raise ValueError(f"{len(sampler)} training samples per epoch is fewer than one batch "
                             f"({self.batch_size}); drop_last would leave nothing")
        trainer = getattr(self, "trainer", None)
        world = int(trainer.world_size) if trainer is not None else 1
        if self.length_bucketing is not None:
            sampler = self._bucketed(dataset, sampler, world)
        if trainer is not None:
            # this rank's draws of the shared seeded pass: global batches equal one process's batches (also for a
            # 1-process DDP strategy, where Lightning would otherwise still insert its re-shuffling wrapper)
            sampler = RankShard(sampler, trainer.world_size, trainer.global_rank)
        return self._loader(dataset, self.batch_size, sampler, drop_last=True)

    def _bucketed(self, dataset: ImageTextDataset, sampler: SeededSampler, world: int) -> LengthBucketedSampler:
        """The training draws reordered into similar-length global batches (``batch_size × world``)."""
        assert self.length_bucketing is not None
        per_record = self.length_bucketing.lengths(dataset.texts)
        lengths = [per_record[it.record_index] for it in dataset.items]
        return LengthBucketedSampler(sampler, lengths, self.batch_size * world,
                                     self.length_bucketing.window_batches, seed=self.seed)

    def _eval_loader(self, split: Split) -> DataLoader:
        dataset = self._dataset(split)
        return self._loader(dataset, self.eval_batch_size, SequentialSampler(dataset), drop_last=False)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(Split.VAL)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(Split.TEST)

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader(Split.TEST)


def _as_tuple(value: float | tuple[float, ...]) -> tuple[float, ...]:
    return (float(value),) if isinstance(value, (int, float)) else tuple(float(v) for v in value)


__all__ = ["CXRDataModule"]
