"""Private (hospital-style) CSV manifests: image path(s) + report text, everything else optional.

The contract is documented in ``docs/data.md``; in short: one row per image or per study, an image column
(one path, or several separated by ``;``/``|`` or as a JSON/Python list) and a report column (or separate
findings/impression columns); optional study id, patient id, split, view and the 14 CheXpert label columns.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxr.data.records import ImageRef, ReportSections, Split, StudyRecord, ViewPosition
from cxr.data.sources.base import (DatasetSource, clean_id, parse_labels, parse_split, parse_view,
                                   require_file)
from cxr.data.sources.tables import read_header, read_table, sniff_separator
from cxr.data.validation import ProblemKind, ProblemLog
from cxr.labels import CHEXPERT_OBSERVATIONS

#: Default column names, tried in order when the config does not name a column (datasets.md §6).
IMAGE_ALIASES = ("image_path", "path", "filepath", "img_path", "imgpath", "Path", "path_to_image", "image")
TEXT_ALIASES = ("report", "text", "caption", "title")
FINDINGS_ALIASES = ("findings", "section_findings")
IMPRESSION_ALIASES = ("impression", "section_impression")
STUDY_ALIASES = ("study_id", "study", "StudyInstanceUID")
PATIENT_ALIASES = ("patient_id", "subject_id", "patient", "PatientID")
SPLIT_ALIASES = ("split",)
VIEW_ALIASES = ("view", "ViewPosition", "view_position")


@dataclass(frozen=True)
class ManifestColumns:
    """The column each role resolved to (None: absent)."""

    image: str
    text: str | None
    findings: str | None
    impression: str | None
    study_id: str | None
    patient_id: str | None
    split: str | None
    view: str | None
    labels: dict[str, str] = field(default_factory=dict)  # observation -> column


def split_list_cell(cell: str) -> list[str]:
    """One cell holding one or several values: ``a;b``, ``a|b``, ``["a", "b"]`` or ``['a', 'b']``."""
    text = cell.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            values = ast.literal_eval(text)  # cxr-clip writes Python list literals
        if not isinstance(values, list):
            raise ValueError(f"list cell {text[:40]!r} is not a list")
        return [str(v).strip() for v in values if str(v).strip()]
    for sep in (";", "|"):
        if sep in text:
            return [p.strip() for p in text.split(sep) if p.strip()]
    return [text]


def patient_split(patient_id: str, fractions: tuple[float, float, float], seed: int) -> Split:
    """Deterministic patient-level split: a seeded hash of the patient id placed into train/val/test bins."""
    digest = hashlib.blake2b(f"{seed}:{patient_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "little") / 2**64
    train, val, _ = fractions
    if u < train:
        return Split.TRAIN
    return Split.VAL if u < train + val else Split.TEST


class CsvManifestSource(DatasetSource):
    """Image–report pairs from a CSV/TSV manifest.

    Args:
        name: source name (prefix of study keys).
        csv_path: the manifest (``.csv``, ``.tsv``, ``.csv.gz``); UTF-8 with or without BOM.
        image_root: directory relative image paths are resolved against; default: the manifest's directory.
        separator: column separator; None sniffs it from the header line (``,`` ``\\t`` ``;`` ``|``).
        image_column / text_column / findings_column / impression_column / study_id_column /
            patient_id_column / split_column / view_column: column names; None tries the documented aliases.
            A name given explicitly must exist.
        label_columns: ``{observation: column}``; None uses every column named exactly like a CheXpert
            observation.
        split: put every study in this split (e.g. ``test`` for a held-out manifest); overrides the column.
        split_fractions: train/val/test fractions of the seeded patient-level split used when neither
            ``split`` nor a split column is given.
        split_seed: seed of that split.
        strict_views: report view values that are not a known position as problems.
    """

    def __init__(
        self,
        name: str,
        csv_path: str,
        image_root: str | None = None,
        separator: str | None = None,
        image_column: str | None = None,
        text_column: str | None = None,
        findings_column: str | None = None,
        impression_column: str | None = None,
        study_id_column: str | None = None,
        patient_id_column: str | None = None,
        split_column: str | None = None,
        view_column: str | None = None,
        label_columns: dict[str, str] | None = None,
        split: Split | None = None,
        split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        strict_views: bool = False,
    ) -> None:
        super().__init__(name)
        self.csv_path = Path(csv_path).expanduser().absolute()
        self.image_root = Path(image_root).expanduser().absolute() if image_root else self.csv_path.parent
        self.separator = separator
        self._explicit = {"image": image_column, "text": text_column, "findings": findings_column,
                          "impression": impression_column, "study_id": study_id_column,
                          "patient_id": patient_id_column, "split": split_column, "view": view_column}
        if label_columns is not None:
            unknown = sorted(set(label_columns) - set(CHEXPERT_OBSERVATIONS))
            if unknown:
                raise ValueError(f"label_columns names unknown observations {unknown}")
        self.label_columns = dict(label_columns) if label_columns is not None else None
        self.split = Split(split) if split is not None else None
        fractions = tuple(float(f) for f in split_fractions)
        if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
            raise ValueError(f"split_fractions must be three non-negative numbers summing to 1, got {fractions}")
        self.split_fractions: tuple[float, float, float] = fractions  # type: ignore[assignment]
        self.split_seed = split_seed
        self.strict_views = strict_views
        self._columns: ManifestColumns | None = None

    # -- columns ---------------------------------------------------------------------------------------
    def _resolve_columns(self, header: list[str], problems: ProblemLog) -> ManifestColumns | None:
        file = str(self.csv_path)
        present = set(header)

        def pick(role: str, aliases: tuple[str, ...]) -> str | None:
            explicit = self._explicit[role]
            if explicit is not None:
                if explicit not in present:
                    problems.add(ProblemKind.MISSING_COLUMN, file,
                                 f"configured {role} column {explicit!r} not in header {header}", field=explicit)
                return explicit
            return next((a for a in aliases if a in present), None)

        cols = {role: pick(role, aliases) for role, aliases in (
            ("image", IMAGE_ALIASES), ("text", TEXT_ALIASES), ("findings", FINDINGS_ALIASES),
            ("impression", IMPRESSION_ALIASES), ("study_id", STUDY_ALIASES), ("patient_id", PATIENT_ALIASES),
            ("split", SPLIT_ALIASES), ("view", VIEW_ALIASES))}
        if cols["image"] is None:
            problems.add(ProblemKind.MISSING_COLUMN, file,
                         f"no image column (tried {list(IMAGE_ALIASES)}; set image_column)", field="image_path")
        if cols["text"] is None and cols["findings"] is None and cols["impression"] is None:
            problems.add(ProblemKind.MISSING_COLUMN, file,
                         f"no report column (tried {list(TEXT_ALIASES + FINDINGS_ALIASES + IMPRESSION_ALIASES)};"
                         " set text_column)", field="report")
        if self.label_columns is None:
            labels = {name: name for name in CHEXPERT_OBSERVATIONS if name in present}
        else:
            labels = dict(self.label_columns)
            for obs, col in labels.items():
                if col not in present:
                    problems.add(ProblemKind.MISSING_COLUMN, file, f"label column {col!r} ({obs}) not in header",
                                 field=col)
        if any(p.kind is ProblemKind.MISSING_COLUMN for p in problems.problems if p.file == file):
            return None
        return ManifestColumns(labels=labels, **cols)  # type: ignore[arg-type]

    def check(self, problems: ProblemLog) -> None:
        if not require_file(self.csv_path, problems, "manifest CSV"):
            return
        if not self.image_root.is_dir():
            problems.add(ProblemKind.MISSING_FILE, str(self.image_root), "image_root is not a directory")
        sep = self.separator or sniff_separator(self.csv_path)
        self._columns = self._resolve_columns(read_header(self.csv_path, sep), problems)

    # -- rows ------------------------------------------------------------------------------------------
    def _resolve_path(self, raw: str) -> str:
        path = Path(raw).expanduser()
        return str(path if path.is_absolute() else self.image_root / path)

    def load(self, problems: ProblemLog) -> list[StudyRecord]:
        if self._columns is None:
            self.check(problems)
            problems.raise_fatal(f"source {self.name!r}")
        cols = self._columns
        assert cols is not None
        file = str(self.csv_path)
        sep = self.separator or sniff_separator(self.csv_path)
        frame = read_table(self.csv_path, sep)
        studies: dict[str, dict] = {}
        for i, row in enumerate(frame.to_dict("records"), start=1):
            self._add_row(row, i, cols, file, studies, problems)
        records = []
        for sid, st in studies.items():
            split = st["split"]
            if split is None:
                split = patient_split(st["patient_id"], self.split_fractions, self.split_seed)
            records.append(StudyRecord(study_id=sid, patient_id=st["patient_id"], split=split,
                                       images=tuple(st["images"]), report=st["report"], labels=st["labels"],
                                       source=self.name))
        return records

    def _add_row(self, row: dict, i: int, cols: ManifestColumns, file: str, studies: dict,
                 problems: ProblemLog) -> None:
        try:
            paths = split_list_cell(row[cols.image])
        except (ValueError, SyntaxError) as err:
            problems.add(ProblemKind.BAD_ROW, file, f"cannot parse image list: {err}", row=i, field=cols.image)
            return
        sid = clean_id(row[cols.study_id]) if cols.study_id else (paths[0] if paths else "")
        key = f"{self.name}:{sid}" if sid else None
        if cols.study_id and not sid:
            problems.add(ProblemKind.BAD_ID, file, "empty study id", row=i, field=cols.study_id)
            return
        if not paths:
            problems.add(ProblemKind.EMPTY_PATH, file, "empty image path", row=i, field=cols.image, study_key=key)
            return
        views = [ViewPosition.UNKNOWN] * len(paths)
        if cols.view and row[cols.view].strip():
            raw_views = split_list_cell(row[cols.view])
            if len(raw_views) == 1:
                raw_views = raw_views * len(paths)
            if len(raw_views) != len(paths):
                problems.add(ProblemKind.BAD_ROW, file, f"{len(raw_views)} view values for {len(paths)} images",
                             row=i, field=cols.view, study_key=key)
            else:
                views = [parse_view(v, problems, file, i, cols.view, key, self.strict_views) for v in raw_views]
        images = [ImageRef(path=self._resolve_path(p), view=v, image_id=Path(p).stem) for p, v in zip(paths, views)]
        patient = clean_id(row[cols.patient_id]) if cols.patient_id else ""
        if cols.patient_id and not patient:
            problems.add(ProblemKind.BAD_ID, file, "empty patient id", row=i, field=cols.patient_id, study_key=key)
        patient = patient or sid  # without patients, the seeded split is per study
        split = self.split
        if split is None and cols.split:
            split = parse_split(row[cols.split], problems, file, i, cols.split, key)
        if sid in studies:
            st = studies[sid]
            if not cols.study_id:
                problems.add(ProblemKind.DUPLICATE_ID, file, f"image path {paths[0]!r} also on row {st['row']}",
                             row=i, field=cols.image, study_key=key)
                return
            if st["patient_id"] != patient or (split is not None and st["split"] not in (None, split)):
                problems.add(ProblemKind.BAD_ROW, file, f"patient/split differ from row {st['row']} of this study",
                             row=i, field=cols.patient_id or cols.split, study_key=key)
            st["images"].extend(images)
            return
        text = (row[cols.text] if cols.text else "").replace("\r", "")
        findings = row[cols.findings].replace("\r", "").strip() if cols.findings else ""
        impression = row[cols.impression].replace("\r", "").strip() if cols.impression else ""
        report = ReportSections(findings=findings or None, impression=impression or None, full_text=text)
        if report.is_empty:
            problems.add(ProblemKind.EMPTY_REPORT, file, "report text is empty", row=i,
                         field=cols.text or cols.findings or cols.impression, study_key=key)
        labels = parse_labels({obs: row[col] for obs, col in cols.labels.items()}, problems, file, i, key)
        studies[sid] = {"row": i, "patient_id": patient, "split": split, "images": images, "report": report,
                        "labels": np.asarray(labels, dtype=np.int8)}
