"""Typed batches produced by the DataModules and consumed by the LightningModules."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ImageTextBatch:
    """A batch of (image, report text) samples.

    Attributes:
        images: ``(B, C, H, W)`` float tensor.
        texts: the report text given to the text tower, one per sample.
        study_keys: source-qualified study keys (``StudyRecord.key``).
        study_ids: ``(B,)`` int64 :func:`~cxr.records.stable_id` of the study key; two images of one
            study share it, so losses and metrics can treat them as positives, never as negatives.
        text_ids: ``(B,)`` int64 stable id of the normalised text; identical reports share it.
        sample_index: ``(B,)`` int64 index of the sample in its dataset, used to drop the duplicates a
            ``DistributedSampler`` pads in during evaluation.
        labels: ``(B, 14)`` int8 four-state CheXpert labels.
        sources: source name per sample.
        skipped_images: under ``bad_input: SKIP``, the image files that failed to load while this batch was
            assembled (each replaced by the next loadable sample); empty otherwise.
    """

    images: torch.Tensor
    texts: list[str]
    study_keys: list[str]
    study_ids: torch.Tensor
    text_ids: torch.Tensor
    sample_index: torch.Tensor
    labels: torch.Tensor
    sources: list[str]
    skipped_images: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)
