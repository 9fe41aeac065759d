"""CheXpert-Plus: the main CSV, ``.jpg`` names resolved to the PNG/JPG/DICOM files, CheXbert JSONL labels."""

from __future__ import annotations

import json
import logging
import re
from enum import Enum
from pathlib import Path

from cxr.data.sources.base import DatasetSource, clean_id, parse_labels, parse_split, require_file
from cxr.data.sources.tables import missing_columns, read_header, read_table
from cxr.data.validation import ProblemKind, ProblemLog
from cxr.labels import CHEXPERT_OBSERVATIONS, empty_labels
from cxr.records import ImageRef, ReportSections, StudyRecord, ViewPosition
from cxr.reports.compose import empty_report_reason

log = logging.getLogger(__name__)

MAIN_CSV = "df_chexpert_plus_240401.csv"
REQUIRED_COLUMNS = ("path_to_image", "frontal_lateral", "ap_pa", "deid_patient_id", "section_findings",
                    "section_impression", "report", "split")
IMAGE_KEY = re.compile(r"(?:train|valid|test)/patient\d+/study\d+/view\d+_(?:frontal|lateral)", re.IGNORECASE)
STUDY_KEY = re.compile(r"patient\d+/study\d+", re.IGNORECASE)
#: Folders the images are found under, relative to ``root`` (datasets.md §2.3), in the order tried.
IMAGE_PREFIXES = ("PNG", "PNG/PNG", "", "CheXpert-v1.0", "CheXpert-v1.0-small")
DICOM_PREFIXES = ("DICOM", "DICOM/DICOM", "")
#: The anonymisation note that ends every ``report`` cell (dropped when the full report is the fallback).
ANONYMISATION_NOTE = re.compile(r"\s*This report has been anonymized\..*\Z", re.DOTALL | re.IGNORECASE)


class ChexpertPlusImageFormat(str, Enum):
    """Which image files to use: the PNG release (or original CheXpert JPGs) or the DICOMs."""

    PNG = "png"
    JPG = "jpg"
    DICOM = "dcm"


class ChexbertLabelFile(str, Enum):
    """Which CheXbert label file: labels of the whole report, of the findings, or of the impression."""

    REPORT = "report_fixed"
    FINDINGS = "findings_fixed"
    IMPRESSION = "impression_fixed"
    NONE = "none"


def _dicom_path(row: dict, problems: ProblemLog, file: str, i: int, key: str) -> str | None:
    """The row's ``path_to_dcm``, or None after logging a problem (checked like ``path_to_image``: an empty or
    odd cell must not turn into a made-up path)."""
    source_path = row["path_to_dcm"].strip()
    if not source_path:
        problems.add(ProblemKind.EMPTY_PATH, file, "empty path_to_dcm", row=i, field="path_to_dcm",
                     study_key=key)
        return None
    if IMAGE_KEY.search(source_path.replace("\\", "/")) is None:
        problems.add(ProblemKind.BAD_ID, file,
                     f"path_to_dcm {source_path!r} has no patientN/studyN/viewN part", row=i,
                     field="path_to_dcm", study_key=key)
        return None
    return source_path


def _report(row: dict, problems: ProblemLog, file: str, i: int, key: str) -> ReportSections:
    """The study's report sections (the anonymisation note stripped); an empty report is logged."""
    findings = row["section_findings"].strip() or None
    impression = row["section_impression"].strip() or None
    full = ANONYMISATION_NOTE.sub("", row["report"]).strip()
    report = ReportSections(findings=findings, impression=impression, full_text=full)
    empty = empty_report_reason(report)
    if empty:
        problems.add(ProblemKind.EMPTY_REPORT, file, empty, row=i, field="report", study_key=key)
    return report


class ChexpertPlusSource(DatasetSource):
    """CheXpert-Plus studies (train/valid; there is no test split).

    Args:
        root: dataset root holding the main CSV and the image folders (``PNG/``, ``CheXpert-v1.0/``, ...).
        name: source name.
        csv_path: the main CSV; default ``<root>/df_chexpert_plus_240401.csv``.
        image_root: where image folders are searched; default ``root``.
        image_format: preferred files: ``png`` (tries .png, then .jpg), ``jpg`` (.jpg, then .png) or ``dcm``.
        labels: CheXbert file under ``<root>/chexbert_labels/``: ``report_fixed``, ``findings_fixed``,
            ``impression_fixed`` or ``none``.
        label_file: explicit CheXbert JSONL path (overrides ``labels``).
    """

    def __init__(
        self,
        root: str,
        name: str = "chexpert_plus",
        csv_path: str | None = None,
        image_root: str | None = None,
        image_format: ChexpertPlusImageFormat = ChexpertPlusImageFormat.PNG,
        labels: ChexbertLabelFile = ChexbertLabelFile.REPORT,
        label_file: str | None = None,
    ) -> None:
        super().__init__(name)
        self.root = Path(root).expanduser().absolute()
        self.csv_path = Path(csv_path).expanduser().absolute() if csv_path else self.root / MAIN_CSV
        self.image_root = Path(image_root).expanduser().absolute() if image_root else self.root
        self.image_format = ChexpertPlusImageFormat(image_format)
        self.labels = ChexbertLabelFile(labels)
        if label_file:
            self.label_path: Path | None = Path(label_file).expanduser().absolute()
        elif self.labels is ChexbertLabelFile.NONE:
            self.label_path = None
        else:
            self.label_path = self.root / "chexbert_labels" / f"{self.labels.value}.json"
        self._last_hit: tuple[str, str] | None = None

    def check(self, problems: ProblemLog) -> None:
        if require_file(self.csv_path, problems, "CheXpert-Plus CSV"):
            header = read_header(self.csv_path)
            required = REQUIRED_COLUMNS + (("path_to_dcm",) if self.image_format is ChexpertPlusImageFormat.DICOM
                                           else ())
            for col in missing_columns(header, required):
                problems.add(ProblemKind.MISSING_COLUMN, str(self.csv_path), f"column {col!r} not in header",
                             field=col)
        if not self.image_root.is_dir():
            problems.add(ProblemKind.MISSING_FILE, str(self.image_root), "image root is not a directory")
        if self.label_path is not None:
            require_file(self.label_path, problems, "CheXbert label file")

    # -- image paths ---------------------------------------------------------------------------------------
    def _candidates(self, image_key: str) -> list[tuple[str, str]]:
        if self.image_format is ChexpertPlusImageFormat.DICOM:
            combos = [(p, ".dcm") for p in DICOM_PREFIXES]
        else:
            exts = (".png", ".jpg") if self.image_format is ChexpertPlusImageFormat.PNG else (".jpg", ".png")
            combos = [(p, e) for p in IMAGE_PREFIXES for e in exts]
        if self._last_hit in combos:  # the layout is uniform: try the folder that worked last first
            combos.remove(self._last_hit)
            combos.insert(0, self._last_hit)
        return combos

    def resolve_image(self, path_to_image: str) -> str | None:
        """The file for a ``path_to_image`` value (``train/patientX/studyY/viewK_frontal.jpg``), or None."""
        match = IMAGE_KEY.search(path_to_image.replace("\\", "/"))
        if match is None:
            return None
        for prefix, ext in self._candidates(match.group(0)):
            candidate = (self.image_root / prefix / match.group(0)).with_suffix(ext)
            if candidate.is_file():
                self._last_hit = (prefix, ext)
                return str(candidate)
        return None

    def _default_path(self, path_to_image: str) -> str:
        match = IMAGE_KEY.search(path_to_image.replace("\\", "/"))
        rel = match.group(0) if match else path_to_image
        prefix, ext = self._candidates(rel)[0]
        return str((self.image_root / prefix / rel).with_suffix(ext))

    # -- loading -------------------------------------------------------------------------------------------
    def load(self, problems: ProblemLog) -> list[StudyRecord]:
        self.check(problems)
        problems.raise_fatal(f"source {self.name!r}")
        file = str(self.csv_path)
        frame = read_table(self.csv_path)
        labels = self._read_labels(problems)
        studies: dict[str, dict] = {}
        seen_paths: set[str] = set()
        duplicates = 0
        for i, row in enumerate(frame.to_dict("records"), start=1):
            raw_path = row["path_to_image"].strip()
            if raw_path in seen_paths:
                duplicates += 1  # the release repeats some rows; keep the first
                continue
            seen_paths.add(raw_path)
            if not raw_path:
                problems.add(ProblemKind.EMPTY_PATH, file, "empty path_to_image", row=i, field="path_to_image")
                continue
            study_match = STUDY_KEY.search(raw_path)
            if study_match is None or IMAGE_KEY.search(raw_path) is None:
                problems.add(ProblemKind.BAD_ID, file, f"path_to_image {raw_path!r} has no patientN/studyN/viewN part",
                             row=i, field="path_to_image")
                continue
            sid = study_match.group(0)
            key = f"{self.name}:{sid}"
            split = parse_split(row["split"], problems, file, i, "split", key)
            if split is None:
                continue
            source_path = raw_path
            if self.image_format is ChexpertPlusImageFormat.DICOM:
                source_path = _dicom_path(row, problems, file, i, key)
                if source_path is None:
                    continue
            path = self.resolve_image(source_path) or self._default_path(source_path)
            view = (ViewPosition.LATERAL if row["frontal_lateral"].strip().lower() == "lateral"
                    else ViewPosition.parse(row["ap_pa"]))
            image = ImageRef(path=path, view=view, image_id=IMAGE_KEY.search(raw_path).group(0))
            if sid in studies:
                studies[sid]["images"].append(image)
                continue
            studies[sid] = {"patient": clean_id(row["deid_patient_id"]) or sid.split("/")[0], "split": split,
                            "images": [image], "report": _report(row, problems, file, i, key),
                            "labels": labels.get(raw_path, empty_labels())}
        if duplicates:
            log.info("%s: %d duplicated path_to_image rows ignored", self.name, duplicates)
        return [StudyRecord(study_id=sid, patient_id=st["patient"], split=st["split"], images=tuple(st["images"]),
                            report=st["report"], labels=st["labels"], source=self.name)
                for sid, st in studies.items()]

    def _read_labels(self, problems: ProblemLog) -> dict:
        """CheXbert JSON Lines (one object per line) keyed by ``path_to_image``."""
        if self.label_path is None:
            return {}
        file = str(self.label_path)
        out: dict = {}
        with open(self.label_path, encoding="utf-8-sig") as fh:
            for i, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    problems.add(ProblemKind.BAD_ROW, file, f"not a JSON object: {err.msg}", row=i)
                    continue
                path = str(obj.get("path_to_image", "")).strip()
                if not path:
                    problems.add(ProblemKind.BAD_ROW, file, "no path_to_image", row=i, field="path_to_image")
                    continue
                study = STUDY_KEY.search(path)
                key = f"{self.name}:{study.group(0)}" if study else None
                out.setdefault(path, parse_labels({o: obj.get(o) for o in CHEXPERT_OBSERVATIONS}, problems, file, i,
                                                  key))
        return out
