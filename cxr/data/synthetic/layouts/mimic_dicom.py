"""Layout ``mimic-cxr-dicom``: the MIMIC-CXR DICOM release tree, record/study lists, reports, JPG-release tables.

Files (datasets.md §1)::

    files/p1X/p1XXXXXXX/s5XXXXXXX/<dicom_id>.dcm      CR/DX, see :mod:`.dicom_files` for the encoding mix
    files/p1X/p1XXXXXXX/s5XXXXXXX.txt                 report in the MIMIC text format
    cxr-record-list.csv.gz   subject_id,study_id,dicom_id,path    (path = files/.../<dicom_id>.dcm)
    cxr-study-list.csv.gz    subject_id,study_id,path             (path = files/.../s<study>.txt)
    mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv.gz

The DICOM release has no view/split/label tables; the JPG release's are written at the same root so
``MimicCxrSource(root, image_format="dcm")`` finds them (its ``tables_dir`` defaults to ``root``).
"""

from __future__ import annotations

from pathlib import Path

from cxr.data.synthetic.layouts.dicom_files import sample_encoding, write_radiograph
from cxr.data.synthetic.layouts.files import layout_rng, render_views, write_csv
from cxr.data.synthetic.layouts.mimic_common import (
    metadata_view,
    mimic_truth,
    study_datetime,
    study_dir,
    write_jpg_release_csvs,
    write_reports,
)
from cxr.data.synthetic.truth import TruthRecord

RECORD_LIST_COLUMNS = ("subject_id", "study_id", "dicom_id", "path")
STUDY_LIST_COLUMNS = ("subject_id", "study_id", "path")


def write_mimic_dicom_layout(out_dir: Path, studies: list, image_size: int, gzip: bool = True) -> list[TruthRecord]:
    """Write the DICOM tree, the record/study lists, the JPG-release tables and the reports."""
    ext = ".csv.gz" if gzip else ".csv"
    records, study_rows = [], []
    for study in studies:
        date, time = study_datetime(study)
        for i, (view, img) in enumerate(zip(study.views, render_views(study, image_size), strict=False)):
            rel = f"{study_dir(study)}/{view.image_id}.dcm"
            enc = sample_encoding(layout_rng(study, 100 + i))
            write_radiograph(out_dir / rel, img, enc, sop_key=view.image_id, study_key=f"study:{study.study_id}",
                             series_key=f"series:{study.study_id}:{i}",
                             tags={"PatientID": study.patient_id, "StudyID": study.study_id[-6:],
                                   "AccessionNumber": "", "StudyDate": date, "StudyTime": time,
                                   "ViewPosition": metadata_view(study, i).value, "InstanceNumber": i + 1})
            records.append([study.patient_id, study.study_id, view.image_id, rel])
        study_rows.append([study.patient_id, study.study_id, f"{study_dir(study)}.txt"])
    write_csv(out_dir / f"cxr-record-list{ext}", RECORD_LIST_COLUMNS, records, compress=gzip)
    write_csv(out_dir / f"cxr-study-list{ext}", STUDY_LIST_COLUMNS, study_rows, compress=gzip)
    write_reports(out_dir, studies)
    write_jpg_release_csvs(out_dir, studies, image_size, compress=gzip)
    return [mimic_truth(study, "dcm", "mimic-cxr-dicom") for study in studies]
