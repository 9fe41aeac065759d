"""Layout ``mimic-cxr-jpg``: MIMIC-CXR-JPG's tree and tables, plus the MIMIC-CXR report ``.txt`` files.

Files (datasets.md §1)::

    files/p1X/p1XXXXXXX/s5XXXXXXX/<dicom_id>.jpg      8-bit JPEG, quality 95
    files/p1X/p1XXXXXXX/s5XXXXXXX.txt                 report in the MIMIC text format
    mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv.gz   (``.csv`` with ``gzip=False``)

The real JPG release has no reports (they come from the DICOM release); they are written beside the study
folders here so one root holds a complete dataset, as ``MimicCxrSource(root)`` expects by default.
"""

from __future__ import annotations

from pathlib import Path

from cxr.data.synthetic.layouts.files import render_views, write_jpg
from cxr.data.synthetic.layouts.mimic_common import (
    mimic_truth,
    study_dir,
    write_jpg_release_csvs,
    write_reports,
)
from cxr.data.synthetic.truth import TruthRecord


def write_mimic_jpg_layout(out_dir: Path, studies: list, image_size: int, gzip: bool = True) -> list[TruthRecord]:
    """Write the MIMIC-CXR-JPG tree, its four tables and the report files; returns the truth records."""
    for study in studies:
        for view, img in zip(study.views, render_views(study, image_size), strict=False):
            write_jpg(out_dir / study_dir(study) / f"{view.image_id}.jpg", img)
    write_reports(out_dir, studies)
    write_jpg_release_csvs(out_dir, studies, image_size, compress=gzip)
    return [mimic_truth(study, "jpg", "mimic-cxr-jpg") for study in studies]
