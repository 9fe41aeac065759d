"""Private (hospital-style) CSV manifests: image path(s) + report text, everything else optional.

The contract is documented in ``docs/data.md``; in short: one row per image or per study, an image column
(one path, or several separated by ``;``/``|`` or as a JSON/Python list) and a report column (or separate
findings/impression columns); optional study id, patient id, split, view and the 14 CheXpert label columns.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxr.data.sources.base import DatasetSource, clean_id, parse_labels, parse_split, parse_view, require_file
from cxr.data.sources.tables import DEFAULT_ENCODING, read_header, read_table, sniff_separator
from cxr.data.validation import ProblemKind, ProblemLog
from cxr.labels import CHEXPERT_OBSERVATIONS, LabelState
from cxr.records import ImageRef, ReportSections, Split, StudyRecord, ViewPosition
from cxr.reports.compose import empty_report_reason

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


#: Longest list cell parsed as JSON/Python (a path list is short; this bounds parser work on garbage).
MAX_LIST_CELL_CHARS = 100_000


def split_list_cell(cell: str, is_one_path: Callable[[str], bool] | None = None) -> list[str]:
    """One cell holding one or several values: ``a;b``, ``a|b``, ``["a", "b"]`` or ``['a', 'b']``.

    ``is_one_path`` (e.g. "this names an existing file") keeps a cell whole when it is a single value that
    contains ``;`` or ``|`` (``scan;2.png`` is one file, not two). A bracketed list must be flat (strings or
    numbers); anything else, including a list nested too deeply to parse, raises ``ValueError``.
    """
    text = cell.strip()
    if not text:
        return []
    if text.startswith("["):
        return _parse_list_literal(text)
    if is_one_path is not None and (";" in text or "|" in text) and is_one_path(text):
        return [text]
    for sep in (";", "|"):
        if sep in text:
            return [p.strip() for p in text.split(sep) if p.strip()]
    return [text]


def _parse_list_literal(text: str) -> list[str]:
    if len(text) > MAX_LIST_CELL_CHARS:
        raise ValueError(f"list cell of {len(text)} characters (more than {MAX_LIST_CELL_CHARS})")
    try:
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            values = ast.literal_eval(text)  # cxr-clip writes Python list literals
    except (RecursionError, MemoryError) as err:  # e.g. "[[[[...]]]]": the parsers recurse per bracket
        raise ValueError(f"list cell is nested too deeply to parse ({type(err).__name__}); expected a flat "
                         "list of paths") from None
    if not isinstance(values, list):
        raise ValueError(f"list cell {text[:40]!r} is not a list")
    for k, v in enumerate(values):
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise ValueError(f"list cell must be a flat list of paths; element {k + 1} is a "
                             f"{type(v).__name__}")
    return [str(v).strip() for v in values if str(v).strip()]


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
        encoding: the manifest's text encoding; default UTF-8 with or without a byte-order mark. Hospital
            exports are often ``cp1252`` or ``latin-1``: a byte that is not valid in the encoding is an error
            naming the file, line and this option.
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
        encoding: str = DEFAULT_ENCODING,
    ) -> None:
        super().__init__(name)
        self.encoding = encoding
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
        header = read_header(self.csv_path, self._separator(), self.encoding, option="encoding")
        self._columns = self._resolve_columns(header, problems)

    def _separator(self) -> str:
        return self.separator or sniff_separator(self.csv_path, self.encoding, option="encoding")

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
        frame = read_table(self.csv_path, self._separator(), encoding=self.encoding, option="encoding")
        studies: dict[str, dict] = {}
        for i, row in enumerate(frame.to_dict("records"), start=1):
            self._add_row(row, i, cols, file, studies, problems)
        records = []
        for sid, st in studies.items():
            empty = empty_report_reason(st["report"])  # only now: a later row may have held the report
            if empty:
                problems.add(ProblemKind.EMPTY_REPORT, file, "report text is empty" if st["report"].is_empty
                             else empty, row=st["row"], field=cols.text or cols.findings or cols.impression,
                             study_key=f"{self.name}:{sid}")
            split = st["split"]
            if split is None:
                split = patient_split(st["patient_id"], self.split_fractions, self.split_seed)
            records.append(StudyRecord(study_id=sid, patient_id=st["patient_id"], split=split,
                                       images=tuple(st["images"]), report=st["report"], labels=st["labels"],
                                       source=self.name))
        return records

    def _is_one_path(self, text: str) -> bool:
        return Path(self._resolve_path(text)).is_file()

    def _row_images(self, row: dict, i: int, cols: ManifestColumns, file: str, key: str | None,
                    paths: list[str], problems: ProblemLog) -> list[ImageRef]:
        views = [ViewPosition.UNKNOWN] * len(paths)
        if cols.view and row[cols.view].strip():
            try:
                raw_views = split_list_cell(row[cols.view])
            except (ValueError, SyntaxError) as err:
                problems.add(ProblemKind.BAD_ROW, file, f"cannot parse view list: {err}", row=i, field=cols.view,
                             study_key=key)
                raw_views = []
            if len(raw_views) == 1:
                raw_views = raw_views * len(paths)
            if raw_views and len(raw_views) != len(paths):
                problems.add(ProblemKind.BAD_ROW, file, f"{len(raw_views)} view values for {len(paths)} images",
                             row=i, field=cols.view, study_key=key)
            elif raw_views:
                views = [parse_view(v, problems, file, i, cols.view, key, self.strict_views) for v in raw_views]
        return [ImageRef(path=self._resolve_path(p), view=v, image_id=Path(p).stem) for p, v in zip(paths, views, strict=True)]

    def _add_row(self, row: dict, i: int, cols: ManifestColumns, file: str, studies: dict,
                 problems: ProblemLog) -> None:
        try:
            paths = split_list_cell(row[cols.image], self._is_one_path)
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
        images = self._row_images(row, i, cols, file, key, paths, problems)
        patient = clean_id(row[cols.patient_id]) if cols.patient_id else ""
        if cols.patient_id and not patient:
            problems.add(ProblemKind.BAD_ID, file, "empty patient id", row=i, field=cols.patient_id, study_key=key)
        patient = patient or sid  # without patients, the seeded split is per study
        split = self.split
        if split is None and cols.split:
            split = parse_split(row[cols.split], problems, file, i, cols.split, key)
        report = self._row_report(row, cols)
        labels = np.asarray(parse_labels({obs: row[col] for obs, col in cols.labels.items()}, problems, file, i, key),
                            dtype=np.int8)
        if sid not in studies:
            studies[sid] = {"row": i, "patient_id": patient, "split": split, "images": images, "report": report,
                            "labels": labels}
            return
        if not cols.study_id:
            problems.add(ProblemKind.DUPLICATE_ID, file, f"image path {paths[0]!r} also on row {studies[sid]['row']}",
                         row=i, field=cols.image, study_key=key)
            return
        st = studies[sid]
        if st["patient_id"] != patient:
            problems.add(ProblemKind.CONFLICTING_ROWS, file, f"patient id differs from row {st['row']} of this "
                         "study", row=i, field=cols.patient_id, study_key=key)
        if split is not None and st["split"] not in (None, split):
            problems.add(ProblemKind.CONFLICTING_ROWS, file, f"split {split.value} differs from "
                         f"{st['split'].value} on row {st['row']} of this study", row=i, field=cols.split,
                         study_key=key)
        st["images"].extend(images)
        st["report"] = self._merge_report(st, report, i, cols, file, key, problems)
        st["labels"] = _merge_labels(st, labels, i, cols, file, key, problems)

    def _row_report(self, row: dict, cols: ManifestColumns) -> ReportSections:
        text = (row[cols.text] if cols.text else "").replace("\r", "")
        findings = row[cols.findings].replace("\r", "").strip() if cols.findings else ""
        impression = row[cols.impression].replace("\r", "").strip() if cols.impression else ""
        return ReportSections(findings=findings or None, impression=impression or None, full_text=text)

    @staticmethod
    def _merge_report(st: dict, new: ReportSections, i: int, cols: ManifestColumns, file: str, key: str | None,
                      problems: ProblemLog) -> ReportSections:
        """One study's report over several rows: a blank cell adds nothing, equal text merges, different
        non-blank text is a CONFLICTING_ROWS problem (the first row's text is kept for the record)."""
        old = st["report"]
        merged = {}
        for part, column in (("findings", cols.findings), ("impression", cols.impression),
                             ("full_text", cols.text)):
            a, b = getattr(old, part), getattr(new, part)
            if not (a or "").strip():
                merged[part] = b
            else:
                merged[part] = a
                if (b or "").strip() and " ".join(a.split()) != " ".join(b.split()):
                    problems.add(ProblemKind.CONFLICTING_ROWS, file, f"report text differs from row {st['row']} "
                                 "of this study", row=i, field=column, study_key=key)
        return ReportSections(findings=merged["findings"], impression=merged["impression"],
                              full_text=merged["full_text"] or "")


def _merge_labels(st: dict, new: np.ndarray, i: int, cols: ManifestColumns, file: str, key: str | None,
                  problems: ProblemLog) -> np.ndarray:
    """Labels over several rows: a blank (NOT_MENTIONED) cell adds nothing, different values conflict."""
    old = st["labels"]
    merged = old.copy()
    for j, obs in enumerate(CHEXPERT_OBSERVATIONS):
        a, b = int(old[j]), int(new[j])
        if a == LabelState.NOT_MENTIONED:
            merged[j] = b
        elif b != LabelState.NOT_MENTIONED and a != b:
            problems.add(ProblemKind.CONFLICTING_ROWS, file, f"label {b} differs from {a} on row {st['row']} of "
                         "this study", row=i, field=cols.labels.get(obs, obs), study_key=key)
    return merged
