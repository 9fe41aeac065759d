"""The synthetic CXR world: deterministic studies written in the exact on-disk layouts of the real datasets.

    python -m cxr.data.synthetic --layout csv --out DIR --num-studies N --seed S [--image-size 256]

Every layout also writes ``synthetic_truth.jsonl`` (:mod:`cxr.data.synthetic.truth`) so loaders can be checked
against what was generated.
"""

from __future__ import annotations

import importlib
from enum import Enum
from pathlib import Path
from typing import Any

from cxr.data.synthetic.truth import TRUTH_FILENAME, TruthRecord, load_synthetic_truth, write_truth
from cxr.data.synthetic.world import SplitFractions, SyntheticStudy, sample_world

__all__ = ["Layout", "SplitFractions", "SyntheticStudy", "TRUTH_FILENAME", "TruthRecord", "load_synthetic_truth",
           "sample_world", "write_synthetic_dataset"]


class Layout(str, Enum):
    """On-disk layouts the synthetic world can be written in."""

    CSV = "csv"
    MIMIC_CXR_JPG = "mimic-cxr-jpg"
    MIMIC_CXR_DICOM = "mimic-cxr-dicom"
    CHEXPERT_PLUS = "chexpert-plus"
    OPENI = "openi"


# layout -> (module under cxr.data.synthetic.layouts, writer function); imported lazily (DICOM needs pydicom).
_WRITERS: dict[Layout, tuple[str, str]] = {
    Layout.CSV: ("csv_manifest", "write_csv_layout"),
}


def write_synthetic_dataset(out_dir: str | Path, layout: Layout | str = Layout.CSV, num_studies: int = 100,
                            seed: int = 0, image_size: int = 256,
                            split_fractions: SplitFractions | None = None, hospital_fraction: float = 0.15,
                            **options: Any) -> list[SyntheticStudy]:
    """Sample ``num_studies`` studies and write them to ``out_dir`` in ``layout``; returns the studies.

    Deterministic: the same arguments give byte-identical files. ``options`` go to the layout writer.
    """
    layout = Layout(layout)
    if layout not in _WRITERS:
        raise ValueError(f"layout {layout.value!r} has no writer yet; available: {[k.value for k in _WRITERS]}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    studies = sample_world(num_studies, seed=seed, split_fractions=split_fractions,
                           hospital_fraction=hospital_fraction)
    module_name, func_name = _WRITERS[layout]
    writer = getattr(importlib.import_module(f"cxr.data.synthetic.layouts.{module_name}"), func_name)
    truth = writer(out, studies, image_size, **options)
    write_truth(out, truth)
    return studies
