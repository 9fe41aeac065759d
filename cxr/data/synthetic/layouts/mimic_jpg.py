"""Layout ``mimic-cxr-jpg``: the MIMIC-CXR-JPG release tree (plus the MIMIC-CXR report ``.txt`` files).

Files (datasets.md §1)::

    files/p1X/p1XXXXXXX/s5XXXXXXX/<dicom_id>.jpg     8-bit JPEG, quality 95
    files/p1X/p1XXXXXXX/s5XXXXXXX.txt                report in the MIMIC text format
    mimic-cxr-2.0.0-metadata.csv.gz                  dicom_id,subject_id,study_id,...,ViewPosition,...
    mimic-cxr-2.0.0-split.csv.gz                     dicom_id,study_id,subject_id,split (train/validate/test)
    mimic-cxr-2.0.0-chexpert.csv.gz                  subject_id,study_id,<14 labels> (1.0/0.0/-1.0/blank)
    mimic-cxr-2.0.0-negbio.csv.gz                    same header as chexpert
    IMAGE_FILENAMES                                  one relative .jpg path per line

With ``gzip=False`` the CSVs are written as plain ``.csv``.
"""

from __future__ import annotations

from pathlib import Path

from cxr.data.synthetic.layouts.files import render_views, write_jpg
from cxr.data.synthetic.layouts.mimic_common import (
    metadata_view, study_dir, write_jpg_release_csvs, write_reports,
)
from cxr.data.synthetic.truth import TruthRecord, TruthView


def mimic_truth(study, views: list[TruthView], layout: str) -> TruthRecord:
    """Truth record of a MIMIC study (ids as written: subject_id / study_id strings)."""
    return TruthRecord(
        study_id=study.study_id, patient_id=study.patient_id, split=study.split.value, views=tuple(views),
        findings_text=study.findings_text, impression_text=study.impression_text,
        labels=tuple(int(v) for v in study.labels), layout=layout, world_study_id=study.study_id)


def write_mimic_jpg_layout(out_dir: Path, studies: list, image_size: int, gzip: bool = True) -> list[TruthRecord]:
    """Write the MIMIC-CXR-JPG tree; returns the truth records."""
    truth, listing = [], []
    for study in studies:
        views = []
        for i, (view, img) in enumerate(zip(study.views, render_views(study, image_size))):
            rel = f"{study_dir(study)}/{view.image_id}.jpg"
            write_jpg(out_dir / rel, img)
            listing.append(rel)
            views.append(TruthView(view.image_id, metadata_view(study, i).value, rel))
        truth.append(mimic_truth(study, views, "mimic-cxr-jpg"))
    write_reports(out_dir, studies)
    write_jpg_release_csvs(out_dir, studies, image_size, gzip)
    (out_dir / "IMAGE_FILENAMES").write_text("\n".join(listing) + "\n", encoding="ascii")
    return truth
