"""Ground truth of a written synthetic dataset: ``<out>/synthetic_truth.jsonl``, one JSON object per study.

Ids, paths and texts are the ones the layout wrote on disk (its own id formats and section texts), so a loader
for that layout can be checked against this file record by record. ``world_study_id`` links back to the
:class:`~cxr.data.synthetic.world.SyntheticStudy`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cxr.labels import NUM_OBSERVATIONS

TRUTH_FILENAME = "synthetic_truth.jsonl"


@dataclass(frozen=True)
class TruthView:
    """One image: its id in the layout, its view (``ViewPosition`` value) and path relative to the out dir."""

    image_id: str
    view: str
    path: str


@dataclass(frozen=True)
class TruthRecord:
    """One study as written. ``labels``: 14 ints (LabelState values) in ``CHEXPERT_OBSERVATIONS`` order."""

    study_id: str
    patient_id: str
    split: str  # train / val / test
    views: tuple[TruthView, ...]
    findings_text: str | None
    impression_text: str | None
    labels: tuple[int, ...]
    layout: str
    world_study_id: str

    def __post_init__(self) -> None:
        if len(self.labels) != NUM_OBSERVATIONS:
            raise ValueError(f"study {self.study_id}: expected {NUM_OBSERVATIONS} labels, got {len(self.labels)}")

    @property
    def label_array(self) -> np.ndarray:
        return np.asarray(self.labels, dtype=np.int8)


def write_truth(out_dir: str | Path, records: list[TruthRecord]) -> Path:
    """Write ``synthetic_truth.jsonl`` (sorted keys, one study per line) and return its path."""
    path = Path(out_dir) / TRUTH_FILENAME
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for rec in records:
            fh.write(json.dumps(asdict(rec), sort_keys=True) + "\n")
    return path


def load_synthetic_truth(out_dir: str | Path) -> list[TruthRecord]:
    """Read ``<out_dir>/synthetic_truth.jsonl``; raises naming the file and line on malformed rows."""
    path = Path(out_dir) / TRUTH_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"no synthetic truth file at {path}")
    records = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                raw["views"] = tuple(TruthView(**v) for v in raw["views"])
                raw["labels"] = tuple(int(v) for v in raw["labels"])
                records.append(TruthRecord(**raw))
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{lineno}: malformed truth record ({err})") from err
    return records
