"""Layout ``csv``: a private/hospital-style manifest plus PNG images.

Files::

    manifest.csv                      one row per image
    images/<study_id>/<image_id>.png  8-bit grayscale PNGs

``manifest.csv`` columns, in order:

- ``image_path``: path of the PNG relative to the CSV's directory (``images/<study_id>/<image_id>.png``)
- ``study_id``, ``patient_id``: 8-digit ids (studies '5…', patients '1…'); rows of one study repeat them
- ``split``: ``train`` / ``val`` / ``test`` (patient-level)
- ``view``: ``PA`` / ``AP`` / ``LATERAL``
- ``findings``: FINDINGS section text (blank for impression-only reports)
- ``impression``: IMPRESSION section text
- ``report``: the full report ("FINDINGS: …\\n\\nIMPRESSION: …", multi-line, quoted)
- the 14 CheXpert observations (``cxr.labels.CHEXPERT_OBSERVATIONS`` order): ``1`` / ``0`` / ``-1`` / blank
"""

from __future__ import annotations

from pathlib import Path

from cxr.data.synthetic.layouts.files import render_views, write_csv, write_png
from cxr.data.synthetic.truth import TruthRecord, TruthView
from cxr.labels import CHEXPERT_OBSERVATIONS, LabelState

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS: tuple[str, ...] = (
    "image_path", "study_id", "patient_id", "split", "view", "findings", "impression", "report",
    *CHEXPERT_OBSERVATIONS,
)


def write_csv_layout(out_dir: Path, studies: list, image_size: int) -> list[TruthRecord]:
    """Write ``manifest.csv`` and ``images/``; returns the truth records."""
    rows: list[list[object]] = []
    truth: list[TruthRecord] = []
    for study in studies:
        views = []
        labels = [None if int(v) == LabelState.NOT_MENTIONED else str(int(v)) for v in study.labels]
        for view, img in zip(study.views, render_views(study, image_size), strict=False):
            rel = f"images/{study.study_id}/{view.image_id}.png"
            write_png(out_dir / rel, img, bits=8)
            rows.append([rel, study.study_id, study.patient_id, study.split.value, view.view.value,
                         study.findings_text, study.impression_text, study.report_text, *labels])
            views.append(TruthView(view.image_id, view.view.value, rel))
        truth.append(TruthRecord(
            study_id=study.study_id, patient_id=study.patient_id, split=study.split.value, views=tuple(views),
            findings_text=study.findings_text, impression_text=study.impression_text,
            labels=tuple(int(v) for v in study.labels), layout="csv", world_study_id=study.study_id))
    write_csv(out_dir / MANIFEST_NAME, MANIFEST_COLUMNS, rows)
    return truth
