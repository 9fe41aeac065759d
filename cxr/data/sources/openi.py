"""Open-I (Indiana University chest X-ray collection): reports + projections CSVs, labels from MeSH terms.

A held-out evaluation set: every study is in one split (TEST by default). The Problems/MeSH terms are mapped to
CheXpert observations where a clear mapping exists (:data:`TERM_TO_OBSERVATION`, documented in docs/data.md);
a mapped term is POSITIVE, ``normal`` makes No Finding POSITIVE, everything else stays NOT_MENTIONED (the terms
carry no negations or uncertainty).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import numpy as np

from cxr.data.sources.base import DatasetSource, clean_id, require_file
from cxr.data.sources.tables import missing_columns, read_header, read_table
from cxr.data.validation import ProblemKind, ProblemLog
from cxr.labels import OBSERVATION_INDEX, LabelState, empty_labels
from cxr.records import ImageRef, ReportSections, Split, StudyRecord, ViewPosition
from cxr.reports.compose import empty_report_reason

REPORT_COLUMNS = ("uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression")
PROJECTION_COLUMNS = ("uid", "filename", "projection")

#: Main term (lower case, the part before the first ``/``) → CheXpert observation.
TERM_TO_OBSERVATION: dict[str, str] = {
    "normal": "No Finding",
    "cardiomegaly": "Cardiomegaly",
    "atelectasis": "Atelectasis",
    "pulmonary atelectasis": "Atelectasis",
    "consolidation": "Consolidation",
    "edema": "Edema",
    "pulmonary edema": "Edema",
    "pulmonary congestion": "Edema",
    "pleural effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "pneumonia": "Pneumonia",
    "fractures, bone": "Fracture",
    "fracture": "Fracture",
    "opacity": "Lung Opacity",
    "airspace disease": "Lung Opacity",
    "infiltrate": "Lung Opacity",
    "nodule": "Lung Lesion",
    "mass": "Lung Lesion",
    "lung lesion": "Lung Lesion",
    "pleural thickening": "Pleural Other",
    "catheters, indwelling": "Support Devices",
    "medical device": "Support Devices",
    "implanted medical device": "Support Devices",
    "tube, inserted": "Support Devices",
    "pacemaker, artificial": "Support Devices",
    # Added after measuring real Open-I terms (docs/data.md lists the reason for each, and what stays unmapped):
    "heart failure": "Edema",  # CheXpert's edema phrases include "heart failure" / "chf"
    "infection": "Pneumonia",  # CheXpert's pneumonia phrases include "infection"
    "lung diseases, interstitial": "Lung Opacity",  # interstitial opacities
    "density": "Lung Opacity",  # an area of increased density on a radiograph is an opacity
    "cicatrix": "Lung Opacity",  # MeSH for scarring; CheXpert counts "scar" as Lung Opacity
    "scarring": "Lung Opacity",
    "cardiac shadow": "Cardiomegaly",  # indexed when enlarged ("Cardiac Shadow/enlarged")
    "mediastinum": "Enlarged Cardiomediastinum",  # indexed when abnormal ("Mediastinum/widened")
    "hydropneumothorax": "Pneumothorax",  # air in the pleural space by definition
}
#: Terms left unmapped on purpose (no CheXpert observation, or no single defensible one); see docs/data.md.
UNMAPPED_ON_PURPOSE: frozenset[str] = frozenset({
    "calcified granuloma", "granuloma", "granulomatous disease", "calcinosis", "lung", "hypoinflation",
    "emphysema", "pulmonary disease, chronic obstructive", "hyperdistention", "thoracic vertebrae", "spine",
    "osteophyte", "spondylosis", "scoliosis", "kyphosis", "deformity", "arthritis", "bone diseases, metabolic",
    "aorta", "atherosclerosis", "diaphragm", "costophrenic angle", "markings", "lucency", "fibrosis",
    "pulmonary fibrosis", "technical quality of image unsatisfactory", "surgical instruments", "hernia, hiatal",
})


class OpenITermColumn(str, Enum):
    """Which column's terms give the labels: ``Problems`` (main terms), ``MeSH`` (with modifiers) or both."""

    PROBLEMS = "problems"
    MESH = "mesh"
    BOTH = "both"


def labels_from_terms(cells: list[str]) -> np.ndarray:
    """Four-state labels from ``;``-separated ``Term/modifier/...`` cells (positive where mapped)."""
    out = empty_labels()
    for cell in cells:
        for term in cell.split(";"):
            main = term.split("/")[0].strip().lower()
            obs = TERM_TO_OBSERVATION.get(main)
            if obs:
                out[OBSERVATION_INDEX[obs]] = LabelState.POSITIVE
    return out


class OpenISource(DatasetSource):
    """Open-I studies with their frontal/lateral images and findings/impression.

    Args:
        root: folder with ``indiana_reports.csv`` and ``indiana_projections.csv``.
        name: source name.
        images_dir: image folder, relative to ``root`` or absolute; default ``images/images_normalized``.
        split: the split every study goes to (held-out: ``test`` by default).
        label_terms: terms used for labels: ``problems``, ``mesh`` or ``both``.
    """

    def __init__(self, root: str, name: str = "openi", images_dir: str = "images/images_normalized",
                 split: Split = Split.TEST, label_terms: OpenITermColumn = OpenITermColumn.PROBLEMS) -> None:
        super().__init__(name)
        self.root = Path(root).expanduser().absolute()
        images = Path(images_dir).expanduser()
        self.images_dir = images if images.is_absolute() else self.root / images
        self.split = Split(split)
        self.label_terms = OpenITermColumn(label_terms)
        self.reports_csv = self.root / "indiana_reports.csv"
        self.projections_csv = self.root / "indiana_projections.csv"

    def check(self, problems: ProblemLog) -> None:
        for path, required in ((self.reports_csv, REPORT_COLUMNS), (self.projections_csv, PROJECTION_COLUMNS)):
            if require_file(path, problems, "Open-I table"):
                for col in missing_columns(read_header(path), required):
                    problems.add(ProblemKind.MISSING_COLUMN, str(path), f"column {col!r} not in header", field=col)
        if not self.images_dir.is_dir():
            problems.add(ProblemKind.MISSING_FILE, str(self.images_dir), "images_dir is not a directory")

    def load(self, problems: ProblemLog) -> list[StudyRecord]:
        self.check(problems)
        problems.raise_fatal(f"source {self.name!r}")
        images: dict[str, list[ImageRef]] = {}
        first_row: dict[str, int] = {}  # uid -> its first projection row, to locate orphans
        proj_file = str(self.projections_csv)
        for i, row in enumerate(read_table(self.projections_csv).to_dict("records"), start=1):
            uid, filename = clean_id(row["uid"]), row["filename"].strip()
            if not uid:
                problems.add(ProblemKind.BAD_ID, proj_file, "empty uid", row=i, field="uid")
                continue
            if not filename:
                problems.add(ProblemKind.EMPTY_PATH, proj_file, "empty filename", row=i, field="filename",
                             study_key=f"{self.name}:{uid}")
                continue
            view = ViewPosition.LATERAL if row["projection"].strip().lower() == "lateral" else ViewPosition.UNKNOWN
            images.setdefault(uid, []).append(ImageRef(str(self.images_dir / filename), view, Path(filename).stem))
            first_row.setdefault(uid, i)
        rep_file = str(self.reports_csv)
        records: list[StudyRecord] = []
        seen: dict[str, int] = {}
        for i, row in enumerate(read_table(self.reports_csv).to_dict("records"), start=1):
            uid = clean_id(row["uid"])
            if not uid:
                problems.add(ProblemKind.BAD_ID, rep_file, "empty uid", row=i, field="uid")
                continue
            key = f"{self.name}:{uid}"
            if uid in seen:
                problems.add(ProblemKind.DUPLICATE_ID, rep_file, f"uid also on row {seen[uid]}", row=i, field="uid",
                             study_key=key)
                continue
            seen[uid] = i
            report = ReportSections(findings=row["findings"].strip() or None,
                                    impression=row["impression"].strip() or None,
                                    full_text="")
            empty = "no findings or impression" if report.is_empty else empty_report_reason(report)
            if empty:
                problems.add(ProblemKind.EMPTY_REPORT, rep_file, empty, row=i, field="findings/impression",
                             study_key=key)
            if uid not in images:
                problems.add(ProblemKind.NO_USABLE_IMAGE, proj_file, "study has no projection rows", field="uid",
                             study_key=key)
                continue
            cells = {OpenITermColumn.PROBLEMS: [row["Problems"]], OpenITermColumn.MESH: [row["MeSH"]],
                     OpenITermColumn.BOTH: [row["Problems"], row["MeSH"]]}[self.label_terms]
            records.append(StudyRecord(study_id=uid, patient_id=uid, split=self.split, images=tuple(images[uid]),
                                       report=report, labels=labels_from_terms(cells), source=self.name))
        for uid in sorted(set(images) - set(seen), key=lambda u: (len(u), u)):
            problems.add(ProblemKind.BAD_ROW, proj_file, f"uid {uid} has images but no report row",
                         row=first_row[uid], field="uid")
        return records
