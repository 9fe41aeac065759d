"""R2Gen-style report-generation folders: ``iu_xray`` (and ``mimic_cxr``) with ``annotation.json`` + ``images/``.

``annotation.json`` is ``{"train": [...], "val": [...], "test": [...]}``; each item has ``id``, ``report`` (one
string, sections not marked), ``image_path`` (a list of paths relative to ``images/``: ``CXR2384_IM-0942/0.png``
in the original R2Gen layout, bare file names in some copies) and often ``split``. The splits are the file's
(R2Gen's fixed 70/10/20 for IU X-ray): they are kept, never re-drawn. Items that carry ``study_id`` (the R2Gen
MIMIC-CXR file, one item per image) are grouped into one study per ``study_id`` with ``subject_id`` as patient;
otherwise the item is the study and its ``id`` the study and patient id.

The report goes to ``ReportSections.full_text`` (no FINDINGS/IMPRESSION split exists); there are no labels and no
views (images are ``UNKNOWN``).
"""

from __future__ import annotations

import json
from pathlib import Path

from cxr.data.sources.base import DatasetSource, clean_id, require_file
from cxr.data.validation import DataValidationError, Problem, ProblemKind, ProblemLog
from cxr.records import ImageRef, ReportSections, Split, StudyRecord, ViewPosition

ANNOTATION_NAME = "annotation.json"
IMAGES_DIR = "images"


def read_annotation(path: Path) -> dict[str, list]:
    """The split → items mapping of an ``annotation.json``; raises :class:`DataValidationError` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataValidationError([Problem(ProblemKind.MALFORMED_FILE, str(path), f"not valid JSON ({err})")],
                                  "unreadable annotation file") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise DataValidationError([Problem(ProblemKind.MALFORMED_FILE, str(path),
                                           'expected {"train": [...], "val": [...], "test": [...]}')],
                                  "unreadable annotation file")
    return data


class R2GenSource(DatasetSource):
    """Studies of an R2Gen-style folder (``annotation.json`` and ``images/``), with the file's own splits.

    Args:
        root: the folder (``iu_xray/`` or ``mimic_cxr/``).
        name: source name.
        annotation: the annotation file, relative to ``root`` or absolute.
        images_dir: the image folder the ``image_path`` entries are relative to.
    """

    def __init__(self, root: str, name: str = "iu_xray", annotation: str = ANNOTATION_NAME,
                 images_dir: str = IMAGES_DIR) -> None:
        super().__init__(name)
        self.root = Path(root).expanduser().absolute()
        ann, images = Path(annotation).expanduser(), Path(images_dir).expanduser()
        self.annotation = ann if ann.is_absolute() else self.root / ann
        self.images_dir = images if images.is_absolute() else self.root / images

    def check(self, problems: ProblemLog) -> None:
        require_file(self.annotation, problems, "annotation file")
        if not self.images_dir.is_dir():
            problems.add(ProblemKind.MISSING_FILE, str(self.images_dir), "image folder not found")

    def load(self, problems: ProblemLog) -> list[StudyRecord]:
        self.check(problems)
        problems.raise_fatal(f"source {self.name!r}")
        data = read_annotation(self.annotation)
        file = str(self.annotation)
        studies: dict[str, dict] = {}
        for split_name, items in data.items():
            try:
                split = Split.parse(split_name)
            except ValueError as err:
                problems.add(ProblemKind.BAD_SPLIT, file, str(err), field=split_name)
                continue
            for i, item in enumerate(items, start=1):
                self._add_item(item, split, f"{split_name}[{i}]", i, studies, problems)
        return [self._record(sid, st, problems) for sid, st in studies.items()]

    def _add_item(self, item: object, split: Split, where: str, row: int, studies: dict,
                  problems: ProblemLog) -> None:
        file = str(self.annotation)
        bad = self._item_defect(item)
        if bad:
            problems.add(ProblemKind.BAD_ROW, file, bad, row=row, field=where)
            return
        assert isinstance(item, dict)
        study = clean_id(item.get("study_id", item["id"]))
        patient = clean_id(item.get("subject_id", study)) or study
        key = f"{self.name}:{study}"
        st = studies.get(study)
        if st is None:
            st = studies[study] = {"split": split, "patient": patient, "report": item["report"], "images": [],
                                   "where": where}
        elif "study_id" not in item:
            problems.add(ProblemKind.DUPLICATE_ID, file, f"id {study} also at {st['where']}", row=row, field=where,
                         study_key=key)
            return
        elif st["split"] is not split:
            problems.add(ProblemKind.BAD_ROW, file, f"study {study} is in {st['split'].value} at {st['where']} "
                         f"and in {split.value} here", row=row, field=where, study_key=key)
            return
        for rel in item["image_path"]:
            path = self.images_dir / rel
            if not path.is_file():
                problems.add(ProblemKind.MISSING_IMAGE, file, f"image file not found: {path}", row=row,
                             field=f"{where}.image_path", study_key=key, image_path=str(path))
            st["images"].append(ImageRef(str(path), ViewPosition.UNKNOWN, Path(rel).as_posix()))

    @staticmethod
    def _item_defect(item: object) -> str | None:
        """Why an item cannot be read (None when it can): never quotes the report text."""
        if not isinstance(item, dict):
            return f"item is a {type(item).__name__}, not an object"
        missing = [k for k in ("id", "report", "image_path") if k not in item]
        if missing:
            return f"item lacks {missing}"
        if not clean_id(item["id"]):
            return "empty id"
        if not isinstance(item["report"], str):
            return "report is not a string"
        paths = item["image_path"]
        if not isinstance(paths, list) or not all(isinstance(p, str) and p.strip() for p in paths):
            return "image_path is not a list of non-empty paths"
        return None

    def _record(self, study: str, st: dict, problems: ProblemLog) -> StudyRecord:
        key = f"{self.name}:{study}"
        report = ReportSections(findings=None, impression=None, full_text=st["report"].strip())
        if report.is_empty:
            problems.add(ProblemKind.EMPTY_REPORT, str(self.annotation), "empty report", field=f"{st['where']}.report",
                         study_key=key)
        if not st["images"]:
            problems.add(ProblemKind.NO_USABLE_IMAGE, str(self.annotation), "empty image_path list",
                         field=f"{st['where']}.image_path", study_key=key)
        return StudyRecord(study_id=study, patient_id=st["patient"], split=st["split"], images=tuple(st["images"]),
                           report=report, source=self.name)
