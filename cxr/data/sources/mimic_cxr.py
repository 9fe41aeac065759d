"""MIMIC-CXR (DICOM release) and MIMIC-CXR-JPG: official split, ViewPosition metadata, CheXpert/NegBio labels.

Paths are built from ids (``files/p{subject[:2]}/p{subject}/s{study}/{dicom_id}.{jpg|dcm}``, reports at
``files/p{subject[:2]}/p{subject}/s{study}.txt``): nothing is scanned. Ids stay strings throughout.
"""

from __future__ import annotations

import tarfile
import zipfile
from enum import Enum
from pathlib import Path

from cxr.data.sources.base import DatasetSource, clean_id, parse_labels, parse_split, parse_view
from cxr.data.sources.tables import find_table, missing_columns, read_header, read_table
from cxr.data.validation import DataValidationError, Problem, ProblemKind, ProblemLog
from cxr.labels import CHEXPERT_OBSERVATIONS, empty_labels
from cxr.records import ImageRef, StudyRecord, ViewPosition
from cxr.reports.compose import empty_report_reason
from cxr.reports.mimic_sections import mimic_report_sections

SPLIT_STEM = "mimic-cxr-2.0.0-split"
METADATA_STEM = "mimic-cxr-2.0.0-metadata"
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition")
#: The 2.1.0 radiologist test labels call Lung Opacity "Airspace Opacity".
LABEL_COLUMN_ALIASES = {"Airspace Opacity": "Lung Opacity"}


class MimicImageFormat(str, Enum):
    """Which release the images come from: MIMIC-CXR-JPG (``.jpg``) or MIMIC-CXR (``.dcm``)."""

    JPG = "jpg"
    DICOM = "dcm"


class MimicLabelSource(str, Enum):
    """Label table: the CheXpert-labeler CSV, the NegBio CSV, or none (all NOT_MENTIONED)."""

    CHEXPERT = "chexpert"
    NEGBIO = "negbio"
    NONE = "none"


def _strip_files(path: Path) -> Path:
    return path.parent if path.name == "files" else path


def _is_digits(value: str) -> bool:
    return value.isdigit()


class MimicCxrSource(DatasetSource):
    """MIMIC-CXR studies with the official split.

    Args:
        name: source name.
        root: root of the image release (``mimic-cxr-jpg/2.x.x`` or ``mimic-cxr/2.x.x``; its ``files/`` is
            accepted too).
        tables_dir: directory of the ``mimic-cxr-2.0.0-{split,metadata,chexpert,negbio}.csv[.gz]`` tables
            (the JPG release root); default ``root``.
        reports_dir: where ``files/pXX/pNNN/sNNN.txt`` lives (the DICOM release root, or a folder where
            ``mimic-cxr-reports.zip`` was extracted); ``mimic-cxr-reports/files`` below it is found too;
            default ``root``.
        reports_zip: read reports from the archive ``mimic-cxr-reports.zip`` (or ``mimic-cxr-reports.tar.gz`` /
            ``.tgz`` / ``.tar``, told apart by the name) instead of a directory.
        image_format: ``jpg`` (MIMIC-CXR-JPG) or ``dcm`` (MIMIC-CXR DICOM).
        labels: ``chexpert``, ``negbio`` or ``none``.
        label_file: an explicit label CSV (e.g. ``mimic-cxr-2.1.0-test-set-labeled.csv``), overriding
            ``labels``; it needs ``study_id`` and the observation columns.
        strict_views: report ViewPosition values that are not a known position.
    """

    def __init__(
        self,
        root: str,
        name: str = "mimic",
        tables_dir: str | None = None,
        reports_dir: str | None = None,
        reports_zip: str | None = None,
        image_format: MimicImageFormat = MimicImageFormat.JPG,
        labels: MimicLabelSource = MimicLabelSource.CHEXPERT,
        label_file: str | None = None,
        strict_views: bool = False,
    ) -> None:
        super().__init__(name)
        self.root = _strip_files(Path(root).expanduser().absolute())
        self.tables_dir = _strip_files(Path(tables_dir).expanduser().absolute()) if tables_dir else self.root
        self.reports_dir = _strip_files(Path(reports_dir).expanduser().absolute()) if reports_dir else self.root
        self.reports_zip = Path(reports_zip).expanduser().absolute() if reports_zip else None
        self.image_format = MimicImageFormat(image_format)
        self.labels = MimicLabelSource(labels)
        self.label_file = Path(label_file).expanduser().absolute() if label_file else None
        self.strict_views = strict_views

    # -- files -------------------------------------------------------------------------------------------
    def _table(self, stem: str, problems: ProblemLog) -> Path | None:
        path = find_table(self.tables_dir, stem)
        if path is None:
            problems.add(ProblemKind.MISSING_FILE, str(self.tables_dir / f"{stem}.csv[.gz]"),
                         "table not found (.csv or .csv.gz)")
        return path

    def _label_path(self, problems: ProblemLog) -> Path | None:
        if self.label_file is not None:
            if not self.label_file.is_file():
                problems.add(ProblemKind.MISSING_FILE, str(self.label_file), "label file not found")
                return None
            return self.label_file
        if self.labels is MimicLabelSource.NONE:
            return None
        return self._table(f"mimic-cxr-2.0.0-{self.labels.value}", problems)

    def _reports_files_dir(self) -> Path:
        for candidate in (self.reports_dir / "files", self.reports_dir / "mimic-cxr-reports" / "files"):
            if candidate.is_dir():
                return candidate
        return self.reports_dir / "files"

    def _check_columns(self, path: Path, required: tuple[str, ...], problems: ProblemLog) -> None:
        header = read_header(path)
        for col in missing_columns(header, required):
            problems.add(ProblemKind.MISSING_COLUMN, str(path), f"column {col!r} not in header {header}", field=col)

    def check(self, problems: ProblemLog) -> None:
        if not (self.root / "files").is_dir():
            problems.add(ProblemKind.MISSING_FILE, str(self.root / "files"), "image folder files/ not found")
        if self.reports_zip is not None:
            if not self.reports_zip.is_file():
                problems.add(ProblemKind.MISSING_FILE, str(self.reports_zip), "reports archive not found")
        elif not self._reports_files_dir().is_dir():
            problems.add(ProblemKind.MISSING_FILE, str(self._reports_files_dir()),
                         "report folder not found (set reports_dir or reports_zip)")
        for stem, required in ((SPLIT_STEM, SPLIT_COLUMNS), (METADATA_STEM, METADATA_COLUMNS)):
            path = self._table(stem, problems)
            if path is not None:
                self._check_columns(path, required, problems)
        label_path = self._label_path(problems)
        if label_path is not None:
            header = [LABEL_COLUMN_ALIASES.get(h, h) for h in read_header(label_path)]
            for col in missing_columns(header, ("study_id",) + CHEXPERT_OBSERVATIONS):
                problems.add(ProblemKind.MISSING_COLUMN, str(label_path), f"column {col!r} not in header",
                             field=col)

    # -- loading -----------------------------------------------------------------------------------------
    def _image_path(self, subject: str, study: str, dicom_id: str) -> str:
        return str(self.root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
                   / f"{dicom_id}.{self.image_format.value}")

    @staticmethod
    def report_member(subject: str, study: str) -> str:
        """Relative report path (also the member name in ``mimic-cxr-reports.zip``)."""
        return f"files/p{subject[:2]}/p{subject}/s{study}.txt"

    def load(self, problems: ProblemLog) -> list[StudyRecord]:
        self.check(problems)
        problems.raise_fatal(f"source {self.name!r}")
        split_path = find_table(self.tables_dir, SPLIT_STEM)
        meta_path = find_table(self.tables_dir, METADATA_STEM)
        assert split_path is not None and meta_path is not None
        views = self._read_views(meta_path, problems)
        studies = self._read_split(split_path, views, problems)
        labels = self._read_labels(problems)
        records = []
        wanted = {self.report_member(subject, study) for subject, study in studies}
        try:
            reader = _ReportReader(self._reports_files_dir().parent, self.reports_zip, wanted)
        except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile) as err:
            bad = Problem(ProblemKind.MALFORMED_FILE, str(self.reports_zip), f"unreadable report archive ({err})")
            raise DataValidationError([bad], f"source {self.name!r}") from None
        try:
            for (subject, study), st in studies.items():
                key = f"{self.name}:{study}"
                member = self.report_member(subject, study)
                text = reader.read(member)
                if text is None:
                    problems.add(ProblemKind.MISSING_REPORT, reader.where(member), "report file not found",
                                 study_key=key)
                    continue
                report = mimic_report_sections(text)
                empty = "report file is empty" if not text.strip() else empty_report_reason(report)
                if empty:
                    problems.add(ProblemKind.EMPTY_REPORT, reader.where(member), empty, study_key=key)
                records.append(StudyRecord(study_id=study, patient_id=subject, split=st["split"],
                                           images=tuple(st["images"]), report=report,
                                           labels=labels.get(study, empty_labels()), source=self.name))
        finally:
            reader.close()
        return records

    def _read_views(self, path: Path, problems: ProblemLog) -> dict[str, ViewPosition]:
        frame = read_table(path, columns=list(METADATA_COLUMNS))
        views: dict[str, ViewPosition] = {}
        for i, (dicom_id, study, raw) in enumerate(zip(frame["dicom_id"], frame["study_id"],
                                                       frame["ViewPosition"], strict=False), start=1):
            views[dicom_id.strip()] = parse_view(raw, problems, str(path), i, "ViewPosition",
                                                 f"{self.name}:{clean_id(study)}", self.strict_views)
        return views

    def _read_split(self, path: Path, views: dict[str, ViewPosition], problems: ProblemLog) -> dict:
        frame = read_table(path, columns=list(SPLIT_COLUMNS))
        file = str(path)
        studies: dict[tuple[str, str], dict] = {}
        seen_dicoms: dict[str, int] = {}
        for i, row in enumerate(frame.to_dict("records"), start=1):
            subject, study, dicom_id = clean_id(row["subject_id"]), clean_id(row["study_id"]), row["dicom_id"].strip()
            key = f"{self.name}:{study}" if study else None
            bad = [(f, v) for f, v in (("subject_id", subject), ("study_id", study)) if not _is_digits(v)]
            if not dicom_id:
                bad.append(("dicom_id", dicom_id))
            for field, value in bad:
                problems.add(ProblemKind.BAD_ID, file, f"id {value!r} is not a valid {field}", row=i, field=field,
                             study_key=key if field != "study_id" else None)
            if bad:
                continue
            if dicom_id in seen_dicoms:
                problems.add(ProblemKind.DUPLICATE_ID, file, f"dicom_id {dicom_id} also on row {seen_dicoms[dicom_id]}",
                             row=i, field="dicom_id", study_key=key)
                continue
            seen_dicoms[dicom_id] = i
            split = parse_split(row["split"], problems, file, i, "split", key)
            st = studies.setdefault((subject, study), {"split": split, "images": [], "row": i})
            if split is not None and st["split"] is not None and split is not st["split"]:
                problems.add(ProblemKind.BAD_ROW, file, f"images of one study in splits {st['split'].value} and "
                             f"{split.value} (first on row {st['row']})", row=i, field="split", study_key=key)
            if st["split"] is None:
                st["split"] = split
            st["images"].append(ImageRef(path=self._image_path(subject, study, dicom_id),
                                         view=views.get(dicom_id, ViewPosition.UNKNOWN), image_id=dicom_id))
        # A study whose every split cell was bad has no split: it was reported; leave it out.
        return {k: v for k, v in studies.items() if v["split"] is not None}

    def _read_labels(self, problems: ProblemLog) -> dict[str, object]:
        path = self._label_path(problems)
        if path is None:
            return {}
        frame = read_table(path)
        frame.columns = [LABEL_COLUMN_ALIASES.get(c, c) for c in frame.columns]
        file = str(path)
        out: dict[str, object] = {}
        first_row: dict[str, int] = {}
        for i, row in enumerate(frame.to_dict("records"), start=1):
            study = clean_id(row["study_id"])
            if not _is_digits(study):
                problems.add(ProblemKind.BAD_ID, file, f"id {study!r} is not a valid study_id", row=i, field="study_id")
                continue
            key = f"{self.name}:{study}"
            if study in first_row:
                problems.add(ProblemKind.DUPLICATE_ID, file, f"second label row (first on row {first_row[study]})",
                             row=i, field="study_id", study_key=key)
                continue
            first_row[study] = i
            out[study] = parse_labels({obs: row[obs] for obs in CHEXPERT_OBSERVATIONS}, problems, file, i, key)
        return out


def is_tar_archive(path: Path) -> bool:
    """True for ``.tar``, ``.tar.gz`` and ``.tgz`` names (``mimic-cxr-reports.tar.gz``); zip otherwise."""
    name = path.name.lower()
    return name.endswith((".tar", ".tar.gz", ".tgz"))


def _files_tail(name: str) -> str | None:
    """``files/p10/...`` from a member name, tolerating an extra leading folder (``mimic-cxr-reports/files/...``)."""
    idx = name.find("files/")
    return name[idx:] if idx != -1 else None


class _ReportReader:
    """Reads ``files/pXX/pNNN/sNNN.txt`` from a directory, ``mimic-cxr-reports.zip`` or ``mimic-cxr-reports.tar.gz``.

    A gzipped tar cannot be read member by member without decompressing from the start each time, so it is
    streamed once and only the ``wanted`` members are kept in memory.
    """

    def __init__(self, directory: Path, archive: Path | None, wanted: set[str] | None = None) -> None:
        self.directory = directory
        self.zip_path = archive
        self._zip = None
        self._names: dict[str, str] = {}
        self._tar_texts: dict[str, bytes] | None = None
        if archive is not None and is_tar_archive(archive):
            self._tar_texts = self._read_tar(archive, wanted)
        elif archive is not None:
            self._zip = zipfile.ZipFile(archive)
            for name in self._zip.namelist():
                tail = _files_tail(name)
                if tail is not None:
                    self._names[tail] = name

    @staticmethod
    def _read_tar(archive: Path, wanted: set[str] | None) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:  # sequential: one pass over the compressed stream
                tail = _files_tail(member.name)
                if member.isfile() and tail is not None and (wanted is None or tail in wanted):
                    fh = tar.extractfile(member)
                    if fh is not None:
                        out[tail] = fh.read()
        return out

    def where(self, member: str) -> str:
        return f"{self.zip_path}:{member}" if self.zip_path is not None else str(self.directory / member)

    def read(self, member: str) -> str | None:
        if self._tar_texts is not None:
            data = self._tar_texts.get(member)
            return None if data is None else data.decode("utf-8", errors="replace")
        if self._zip is not None:
            name = self._names.get(member)
            return None if name is None else self._zip.read(name).decode("utf-8", errors="replace")
        path = self.directory / member
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
