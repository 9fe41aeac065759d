"""The image–text dataset over :class:`StudyRecord`s and its collate function."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from cxr.data.batch import ImageTextBatch
from cxr.data.sampling import (
    SampleKey,
    SamplingUnit,
    ViewPolicy,
    eligible_images,
    eval_image,
    eval_images_in_order,
)
from cxr.records import ImageRef, StudyRecord, stable_id
from cxr.reports.compose import compose_report_text, text_id
from cxr.reports.shuffle import shuffle_sentences

log = logging.getLogger(__name__)

ImageLoader = Callable[[str], np.ndarray]
Transform = Callable[..., torch.Tensor]  # (pixels, seed=None) -> tensor, e.g. ImageTransform


@dataclass(frozen=True)
class DatasetItem:
    """One sample slot: a study and the images it may draw from (one fixed image in eval/image mode)."""

    record_index: int
    images: tuple[ImageRef, ...]


@dataclass
class Sample:
    """One loaded sample, before collation."""

    image: torch.Tensor
    text: str
    study_key: str
    text_id: int
    sample_index: int
    labels: np.ndarray
    source: str
    skipped_images: tuple[str, ...] = ()  # images that failed to load and were replaced by this sample


def build_items(records: Sequence[StudyRecord], train: bool, view_policy: ViewPolicy, sampling: SamplingUnit,
                keep_lateral_only: bool, eval_unit: SamplingUnit = SamplingUnit.STUDY,
                ) -> tuple[list[DatasetItem], int]:
    """Items for ``records`` and the number of studies left out for lack of an eligible image.

    Evaluation uses one deterministic image per study (:func:`eval_image`), or with ``eval_unit=image`` one
    item per eligible image (that image first); training uses one item per study (random eligible view per
    draw) or one per eligible image.
    """
    items: list[DatasetItem] = []
    no_image = 0
    for i, rec in enumerate(records):
        images = eligible_images(rec, view_policy, keep_lateral_only)
        if not images:
            no_image += 1
            continue
        if not train and SamplingUnit(eval_unit) is SamplingUnit.IMAGE:
            items.extend(DatasetItem(i, (im,)) for im in eval_images_in_order(images))
        elif not train:
            items.append(DatasetItem(i, (eval_image(images),)))
        elif SamplingUnit(sampling) is SamplingUnit.IMAGE:
            items.extend(DatasetItem(i, (im,)) for im in images)
        else:
            items.append(DatasetItem(i, images))
    return items, no_image


class ImageTextDataset(Dataset):
    """(image, report text) samples over study records.

    Indexable by ``int`` (deterministic: first image, no shuffle) or by a :class:`SampleKey` from
    :class:`~cxr.data.sampling.SeededSampler` (its seed picks the view and decides the sentence shuffle).

    Args:
        records: the studies.
        items: from :func:`build_items`.
        load_image: path -> float32 (H, W) in [0, 1].
        transform: image array -> (C, H, W) tensor.
        tagged_sections: ``[FINDINGS]``/``[IMPRESSION]`` tags in the text.
        shuffle_prob: probability of a section-aware sentence shuffle per keyed draw (training only).
        skip_bad_images: ``bad_input: SKIP``: an image that fails to load is logged (file, study, defect),
            remembered, and the sample is replaced by the next loadable one of this dataset (index + 1, + 2, ...,
            same draw seed): deterministic, never a blank image. The batch lists the skipped files
            (``ImageTextBatch.skipped_images``). Off: the failure raises, naming the file and the study.
    """

    def __init__(self, records: Sequence[StudyRecord], items: Sequence[DatasetItem], load_image: ImageLoader,
                 transform: Transform, tagged_sections: bool = True, shuffle_prob: float = 0.0,
                 skip_bad_images: bool = False) -> None:
        self.records = list(records)
        self.items = list(items)
        self.load_image = load_image
        self.transform = transform
        self.tagged_sections = tagged_sections
        self.shuffle_prob = shuffle_prob
        # Composed once: a record without text fails here (at set-up), not in a worker mid-epoch.
        self.texts = [compose_report_text(r.report, tagged=tagged_sections) for r in self.records]
        self.text_ids = [text_id(t) for t in self.texts]
        self.study_ids = [stable_id(r.key) for r in self.records]
        self.skip_bad_images = skip_bad_images
        self.bad_images: dict[str, str] = {}  # path -> reason, per process (each DataLoader worker learns its own)

    def __len__(self) -> int:
        return len(self.items)

    def source_of_items(self) -> list[str]:
        return [self.records[it.record_index].source for it in self.items]

    def __getitem__(self, key: int | SampleKey) -> Sample:
        index = key.index if isinstance(key, SampleKey) else int(key)
        if not self.skip_bad_images:
            return self._load(index, key.seed if isinstance(key, SampleKey) else None)
        skipped: list[str] = []
        for step in range(len(self.items)):
            candidate = (index + step) % len(self.items)
            try:
                sample = self._load(candidate, key.seed if isinstance(key, SampleKey) else None)
            except _BadImage as bad:
                skipped.append(bad.path)
                continue
            if skipped:
                sample.skipped_images = tuple(skipped)
            return sample
        raise RuntimeError(f"no image of this split can be loaded ({len(self.bad_images)} failed, e.g. "
                           f"{next(iter(self.bad_images), '?')}); see the warnings above")

    def _load(self, index: int, seed: int | None) -> Sample:
        rng = random.Random(seed) if seed is not None else None
        item = self.items[index]
        record = self.records[item.record_index]
        image_ref = item.images[rng.randrange(len(item.images))] if rng and len(item.images) > 1 else item.images[0]
        pixels = self._pixels(image_ref.path, record.key)
        text = self.texts[item.record_index]
        if rng is not None and self.shuffle_prob > 0 and rng.random() < self.shuffle_prob:
            text = shuffle_sentences(text, rng, sectioned=self.tagged_sections)
        # Drawn last so the view choice and text shuffle of a given seed stay as they were.
        aug_seed = rng.getrandbits(32) if rng is not None else None
        return Sample(image=self.transform(pixels, seed=aug_seed), text=text, study_key=record.key,
                      text_id=self.text_ids[item.record_index], sample_index=index, labels=record.labels,
                      source=record.source)

    def _pixels(self, path: str, study_key: str) -> np.ndarray:
        if path in self.bad_images:
            raise _BadImage(path)
        try:
            return self.load_image(path)
        except Exception as err:  # name the file and study; the decoder's own message follows
            if not self.skip_bad_images:
                raise RuntimeError(f"cannot load image {path} of study {study_key}: {err}") from err
            self.bad_images[path] = str(err)
            log.warning("bad_input=skip: image %s of study %s cannot be loaded (%s); the next loadable sample "
                        "is used instead", path, study_key, err)
            raise _BadImage(path) from err


class _BadImage(Exception):
    """Internal: this sample's image failed (already logged); try the next sample."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def collate_samples(samples: Sequence[Sample]) -> ImageTextBatch:
    """Stack samples into an :class:`ImageTextBatch` (ids as int64, labels as int8)."""
    return ImageTextBatch(
        images=torch.stack([s.image for s in samples]),
        texts=[s.text for s in samples],
        study_keys=[s.study_key for s in samples],
        study_ids=torch.tensor([stable_id(s.study_key) for s in samples], dtype=torch.int64),
        text_ids=torch.tensor([s.text_id for s in samples], dtype=torch.int64),
        sample_index=torch.tensor([s.sample_index for s in samples], dtype=torch.int64),
        labels=torch.from_numpy(np.stack([s.labels for s in samples]).astype(np.int8)),
        sources=[s.source for s in samples],
        skipped_images=[path for s in samples for path in s.skipped_images],
    )
