"""Typed records shared by every dataset source: one :class:`StudyRecord` per imaging study."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from cxr.labels import NUM_OBSERVATIONS, empty_labels


class Split(str, Enum):
    """Dataset split. Source spellings (``validate``, ``valid``, ``val``, ``dev``) normalise to VAL."""

    TRAIN = "train"
    VAL = "val"
    TEST = "test"

    @classmethod
    def parse(cls, value: str) -> Split:
        key = str(value).strip().lower()
        aliases = {"train": cls.TRAIN, "training": cls.TRAIN, "val": cls.VAL, "valid": cls.VAL,
                   "validate": cls.VAL, "validation": cls.VAL, "dev": cls.VAL, "test": cls.TEST,
                   "testing": cls.TEST}
        if key not in aliases:
            raise ValueError(f"unknown split {value!r} (expected train/val/valid/validate/test)")
        return aliases[key]


class ViewPosition(str, Enum):
    """Radiographic view. ``OTHER`` keeps rare positions (LAO, SWIMMERS, ...); ``UNKNOWN`` is a blank."""

    PA = "PA"
    AP = "AP"
    LATERAL = "LATERAL"
    LL = "LL"
    OTHER = "OTHER"
    UNKNOWN = "UNKNOWN"

    @property
    def is_frontal(self) -> bool:
        return self in (ViewPosition.PA, ViewPosition.AP)

    @property
    def is_lateral(self) -> bool:
        return self in (ViewPosition.LATERAL, ViewPosition.LL)

    @classmethod
    def parse(cls, value: object) -> ViewPosition:
        if value is None or (isinstance(value, float) and value != value):
            return cls.UNKNOWN
        key = str(value).strip().upper()
        if key == "" or key == "NAN":
            return cls.UNKNOWN
        mapping = {"PA": cls.PA, "POSTERO-ANTERIOR": cls.PA, "AP": cls.AP, "ANTERO-POSTERIOR": cls.AP,
                   "LATERAL": cls.LATERAL, "LAT": cls.LATERAL, "L": cls.LATERAL, "LL": cls.LL,
                   "LEFT LATERAL": cls.LL, "XTABLE LATERAL": cls.LATERAL, "FRONTAL": cls.UNKNOWN}
        return mapping.get(key, cls.OTHER)


@dataclass(frozen=True)
class ImageRef:
    """One image file of a study. ``path`` is absolute (sources resolve it against their root)."""

    path: str
    view: ViewPosition = ViewPosition.UNKNOWN
    image_id: str = ""


@dataclass(frozen=True)
class ReportSections:
    """Report text: parsed FINDINGS / IMPRESSION (None when absent) and the full text as found on disk."""

    findings: str | None = None
    impression: str | None = None
    full_text: str = ""

    @property
    def is_empty(self) -> bool:
        return not (self.findings or self.impression or self.full_text.strip())


@dataclass
class StudyRecord:
    """One imaging study: the unit every source yields, whatever its on-disk layout.

    ``labels`` is an int8 vector over :data:`cxr.labels.CHEXPERT_OBSERVATIONS` holding
    :class:`cxr.labels.LabelState` values (all NOT_MENTIONED when the source has no labels).
    """

    study_id: str
    patient_id: str
    split: Split
    images: tuple[ImageRef, ...]
    report: ReportSections
    labels: np.ndarray = field(default_factory=empty_labels)
    source: str = ""

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int8)
        if self.labels.shape != (NUM_OBSERVATIONS,):
            raise ValueError(f"study {self.study_id}: labels must have shape ({NUM_OBSERVATIONS},)")

    @property
    def key(self) -> str:
        """Globally unique study key (source-qualified), stable across processes."""
        return f"{self.source}:{self.study_id}"

    def frontal_images(self) -> tuple[ImageRef, ...]:
        return tuple(im for im in self.images if im.view.is_frontal)


def stable_id(text: str) -> int:
    """A 63-bit integer hash of ``text`` that is identical in every process (unlike ``hash``)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF
