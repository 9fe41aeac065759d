"""Pieces shared by the two MIMIC-CXR layouts: id paths, report ``.txt`` files and the JPG-release CSVs.

Follows datasets.md §1: ``files/p{sid[:2]}/p{sid}/s{study}/{dicom_id}.{jpg|dcm}``, reports at
``files/p{sid[:2]}/p{sid}/s{study}.txt`` in the MIMIC text format (every line starts with one space, lines
≤ 79 characters, ``FINAL REPORT`` banner, ``\\n HEADER:`` section headers, ``___`` de-identification), and the
``mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv(.gz)`` files with their exact headers.
"""

from __future__ import annotations

import datetime as dt
import re
import textwrap
from pathlib import Path

import numpy as np

from cxr.data.synthetic.findings import ReportStyle
from cxr.data.synthetic.layouts.files import label_cell, layout_rng, write_csv
from cxr.data.synthetic.truth import TruthRecord, TruthView
from cxr.labels import CHEXPERT_OBSERVATIONS
from cxr.records import Split, ViewPosition

METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
                    "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                    "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning")
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
LABEL_COLUMNS = ("subject_id", "study_id", *CHEXPERT_OBSERVATIONS)
MIMIC_SPLIT = {Split.TRAIN: "train", Split.VAL: "validate", Split.TEST: "test"}


def study_dir(study) -> str:
    """``files/p1X/p1XXXXXXX/s5XXXXXXX`` (relative)."""
    sid = study.patient_id
    return f"files/p{sid[:2]}/p{sid}/s{study.study_id}"


def examination(study) -> str:
    views = {v.view for v in study.views}
    if ViewPosition.LATERAL in views and ViewPosition.PA in views:
        return "CHEST (PA AND LAT)"
    if study.portable:
        return "CHEST (PORTABLE AP)"
    return "CHEST (SINGLE VIEW)" if len(views) == 1 else "CHEST (PA AND LAT)"


def study_datetime(study) -> tuple[str, str]:
    """Shifted StudyDate (21xx, chronological within a patient) and StudyTime ``HHMMSS.fff``."""
    prng = np.random.default_rng(int(study.patient_id))
    start = dt.date(int(prng.integers(2110, 2190)), 1, 1) + dt.timedelta(days=int(prng.integers(0, 365)))
    date = start + dt.timedelta(days=60 * study.study_order + int(study.render_seed % 40))
    seconds = int(study.render_seed % 86400)
    millis = int(study.render_seed // 86400 % 1000)
    time = f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}.{millis:03d}"
    return date.strftime("%Y%m%d"), time


def _wrap(text: str) -> list[str]:
    return [" " + line for line in textwrap.wrap(text, width=78, break_long_words=False, break_on_hyphens=False)]


_ORGAN_HEADER = re.compile(r" (?=[A-Z][A-Z/]+: )")


def _wrap_organ_headers(first: str, text: str) -> list[str]:
    """Wrap findings written under ALL-CAPS organ headers ("LUNGS: ...") so no organ header starts a line.

    A line-initial ``LUNGS:`` would be a section header to the official MIMIC section parser and the findings
    would be lost; the body therefore starts on the FINDINGS line and each organ header is glued to the word
    before it while wrapping.
    """
    glued = _ORGAN_HEADER.sub("\0", text)
    lines = textwrap.wrap(f"{first}  {glued}", width=78, break_long_words=False, break_on_hyphens=False)
    return [" " + line.replace("\0", " ") for line in lines]


_INDICATIONS = ("___ year old man with shortness of breath  // eval for acute process",
                "___ year old woman with cough and fever  // ?acute process",
                "___M with chest pain  // eval", "___F s/p line placement  // position",
                "History: ___ with dyspnea")


def report_txt(study) -> str:
    """The study's report in the MIMIC-CXR ``.txt`` format (some impression-only, some with other headers)."""
    rng = layout_rng(study, 11)
    lines = ["                                 FINAL REPORT"]
    lines.append(f" EXAMINATION:  {examination(study)}")
    lines.append(" ")
    indication = _INDICATIONS[int(rng.integers(len(_INDICATIONS)))]
    header = "HISTORY" if rng.random() < 0.2 else "INDICATION"
    lines.extend(_wrap(f"{header}:  {indication}"))
    lines.append(" ")
    if study.style is not ReportStyle.HOSPITAL:
        technique = "Chest PA and lateral" if "LAT" in examination(study) else "Portable AP chest radiograph"
        lines.append(f" TECHNIQUE:  {technique}")
        lines.append(" ")
        lines.append(" COMPARISON:  " + ("___" if study.study_order > 0 else "None."))
        lines.append(" ")
    if study.findings_text and _ORGAN_HEADER.match(" " + study.findings_text):
        lines.extend(_wrap_organ_headers("FINDINGS:", study.findings_text))
        lines.append(" ")
    elif study.findings_text:
        lines.append(" FINDINGS:")
        lines.append(" ")
        lines.extend(_wrap(study.findings_text))
        lines.append(" ")
    impression_header = "CONCLUSION" if rng.random() < 0.05 else "IMPRESSION"
    if study.impression_text is not None:  # findings-only reports (realistic styles) have no impression
        lines.append(f" {impression_header}:")
        lines.append(" ")
        lines.extend(_wrap(study.impression_text))
    if rng.random() < 0.1:
        lines.append(" ")
        lines.extend(_wrap("NOTIFICATION:  The findings were discussed with ___, M.D. by ___ on the telephone "
                           "on ___ at 10:05 AM."))
    return "\n".join(lines) + "\n"


def write_reports(out_dir: Path, studies: list) -> None:
    for study in studies:
        path = out_dir / f"{study_dir(study)}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(report_txt(study).encode("ascii"))


_VIEW_CODE = {ViewPosition.PA: "postero-anterior", ViewPosition.AP: "antero-posterior",
              ViewPosition.LATERAL: "lateral", ViewPosition.LL: "left lateral"}


def metadata_view(study, view_index: int) -> ViewPosition:
    """The ViewPosition written for an image (a few laterals are spelled LL, as in MIMIC)."""
    view = study.views[view_index].view
    if view is ViewPosition.LATERAL and layout_rng(study, 13 + view_index).random() < 0.15:
        return ViewPosition.LL
    return view


def write_jpg_release_csvs(out_dir: Path, studies: list, image_size: int, compress: bool) -> None:
    """``mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv[.gz]`` with the exact MIMIC headers."""
    ext = ".csv.gz" if compress else ".csv"
    meta, split, labels = [], [], []
    for study in studies:
        date, time = study_datetime(study)
        exam = examination(study)
        orientation = "Recumbent" if study.portable else "Erect"
        for i, view in enumerate(study.views):
            vp = metadata_view(study, i)
            meta.append([view.image_id, study.patient_id, study.study_id, exam, vp.value, image_size, image_size,
                         date, time, exam, _VIEW_CODE[vp], orientation if i == 0 or vp.is_frontal else None])
            split.append([view.image_id, study.study_id, study.patient_id, MIMIC_SPLIT[study.split]])
        labels.append([study.patient_id, study.study_id, *[label_cell(int(v)) for v in study.labels]])
    write_csv(out_dir / f"mimic-cxr-2.0.0-metadata{ext}", METADATA_COLUMNS, meta, compress)
    write_csv(out_dir / f"mimic-cxr-2.0.0-split{ext}", SPLIT_COLUMNS, split, compress)
    write_csv(out_dir / f"mimic-cxr-2.0.0-chexpert{ext}", LABEL_COLUMNS, labels, compress)
    write_csv(out_dir / f"mimic-cxr-2.0.0-negbio{ext}", LABEL_COLUMNS, labels, compress)


def mimic_truth(study, ext: str, layout: str) -> TruthRecord:
    """The truth record of a MIMIC study: ids as on disk, views as in the metadata CSV (LL kept)."""
    views = tuple(TruthView(v.image_id, metadata_view(study, i).value, f"{study_dir(study)}/{v.image_id}.{ext}")
                  for i, v in enumerate(study.views))
    return TruthRecord(study_id=study.study_id, patient_id=study.patient_id, split=study.split.value, views=views,
                       findings_text=study.findings_text, impression_text=study.impression_text,
                       labels=tuple(int(v) for v in study.labels), layout=layout, world_study_id=study.study_id)
