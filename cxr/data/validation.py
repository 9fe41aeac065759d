"""Bad-input handling: collect every problem with its location, then raise once or skip with a count.

Sources and the DataModule report problems into a :class:`ProblemLog` instead of failing on the first one, so
the user sees every defect of a dataset in one run. Messages carry file, row, field and study key, never report
text or pixels (medical data stays out of logs).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

from cxr.data.image_check import MISSING, ImageCheck, ImageVerdict, check_one, decode_all
from cxr.records import StudyRecord
from cxr.reports.compose import empty_report_reason

log = logging.getLogger(__name__)

#: How many problems of one kind are listed in full in an error message before the rest are counted.
MAX_LISTED_PER_KIND = 20


class BadInputPolicy(str, Enum):
    """What to do with defective studies/images: fail with every problem listed, or drop them with a count."""

    RAISE = "raise"
    SKIP = "skip"


class ProblemKind(str, Enum):
    """The closed set of input defects the loaders detect."""

    MISSING_FILE = "missing file"  # a table/report/root the config names does not exist
    MISSING_COLUMN = "missing column"
    MISSING_IMAGE = "missing image"
    UNREADABLE_IMAGE = "unreadable image"
    MISSING_REPORT = "missing report"
    EMPTY_REPORT = "empty report"
    BAD_LABEL = "bad label value"
    BAD_ID = "bad id"
    DUPLICATE_ID = "duplicate id"
    PATIENT_IN_TWO_SPLITS = "patient in two splits"
    BAD_SPLIT = "bad split value"
    UNKNOWN_VIEW = "unknown view value"
    EMPTY_PATH = "empty image path"
    BAD_ROW = "bad row"
    NO_USABLE_IMAGE = "no usable image"
    BAD_ENCODING = "bad encoding"  # a table with bytes that are not valid in its (configured) encoding
    DUPLICATE_COLUMN = "duplicate column"  # a header that names one column twice
    CONFLICTING_ROWS = "conflicting rows"  # rows of one study that disagree (report, labels)
    MALFORMED_FILE = "malformed file"  # one study's own file (e.g. an Open-I XML report) cannot be parsed


#: Problems that make the whole source unusable: never skippable, raised at start-up.
FATAL_KINDS = frozenset({ProblemKind.MISSING_FILE, ProblemKind.MISSING_COLUMN, ProblemKind.BAD_ENCODING,
                         ProblemKind.DUPLICATE_COLUMN})


@dataclass(frozen=True)
class Problem:
    """One defect and where it is. ``study_key``/``image_path`` say what ``skip`` drops (image first)."""

    kind: ProblemKind
    file: str
    detail: str
    row: int | None = None  # 1-based data row (header excluded) in ``file``; None for whole-file problems
    field: str | None = None
    study_key: str | None = None
    image_path: str | None = None

    def location(self) -> str:
        parts = [self.file]
        if self.row is not None:
            parts.append(f"row {self.row}")
        if self.field:
            parts.append(f"field {self.field!r}")
        if self.study_key:
            parts.append(f"study {self.study_key}")
        return ", ".join(parts)

    def __str__(self) -> str:
        return f"[{self.kind.value}] {self.location()}: {self.detail}"


class DataValidationError(ValueError):
    """Raised with every problem found, grouped by kind with counts. ``problems`` holds them all."""

    def __init__(self, problems: Sequence[Problem], header: str = "invalid input data") -> None:
        self.problems = list(problems)
        super().__init__(format_problems(self.problems, header))


def format_problems(problems: Sequence[Problem], header: str = "invalid input data") -> str:
    """A readable multi-line summary: total, then one group per kind with its count and locations."""
    by_kind: dict[ProblemKind, list[Problem]] = defaultdict(list)
    for p in problems:
        by_kind[p.kind].append(p)
    lines = [f"{header}: {len(problems)} problem(s)"]
    for kind, group in by_kind.items():
        lines.append(f"  {kind.value} ({len(group)}):")
        for p in group[:MAX_LISTED_PER_KIND]:
            lines.append(f"    - {p.location()}: {p.detail}")
        if len(group) > MAX_LISTED_PER_KIND:
            lines.append(f"    ... and {len(group) - MAX_LISTED_PER_KIND} more")
    return "\n".join(lines)


class ProblemLog:
    """Collects :class:`Problem`s during loading; sources call :meth:`add`, the DataModule applies the policy."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, kind: ProblemKind, file: str, detail: str, *, row: int | None = None,
            field: str | None = None, study_key: str | None = None, image_path: str | None = None) -> None:
        self.problems.append(Problem(kind, str(file), detail, row, field, study_key, image_path))

    def extend(self, problems: Iterable[Problem]) -> None:
        self.problems.extend(problems)

    def __len__(self) -> int:
        return len(self.problems)

    def raise_fatal(self, header: str) -> None:
        """Raise now if any problem makes the source unusable (missing table or column)."""
        fatal = [p for p in self.problems if p.kind in FATAL_KINDS]
        if fatal:
            raise DataValidationError(fatal, header)

    def counts(self) -> Counter:
        return Counter(p.kind for p in self.problems)


def find_record_problems(records: Sequence[StudyRecord], file: str, image_check: ImageCheck = ImageCheck.DECODE,
                         cached: Container[str] = (), *, workers: int | None = None,
                         check_cache: Path | None = None) -> list[Problem]:
    """Checks that apply to every source once records exist.

    Empty reports, duplicate study keys, patients in two splits, and (per ``image_check``) missing or
    undecodable images: see :func:`find_image_problems`. Images in ``cached`` (a preprocessing cache) are not
    checked: training reads the cached copy, not the original.
    """
    out: list[Problem] = []
    seen: dict[str, int] = {}
    patient_splits: dict[str, set] = defaultdict(set)
    # Keys per patient, gathered in the same pass: a manifest split per study (not per patient) can put
    # thousands of patients in two splits, and rescanning every record for each of them is quadratic.
    patient_keys: dict[str, list[str]] = defaultdict(list)
    for rec in records:
        empty = empty_report_reason(rec.report)
        if empty:  # no text, or none with content ('___', '.', 'IMPRESSION:' alone, zero-width spaces)
            out.append(Problem(ProblemKind.EMPTY_REPORT, file, empty, study_key=rec.key))
        seen[rec.key] = seen.get(rec.key, 0) + 1
        patient = f"{rec.source}:{rec.patient_id}"
        patient_splits[patient].add(rec.split.value)
        patient_keys[patient].append(rec.key)
    for key, n in seen.items():
        if n > 1:
            out.append(Problem(ProblemKind.DUPLICATE_ID, file, f"study id occurs in {n} records", study_key=key))
    for patient, splits in patient_splits.items():
        if len(splits) > 1:
            for key in sorted(patient_keys[patient]):
                out.append(Problem(ProblemKind.PATIENT_IN_TWO_SPLITS, file,
                                   f"patient {patient.split(':', 1)[1]} is in splits {sorted(splits)}",
                                   field="patient_id", study_key=key))
    if image_check is not ImageCheck.NONE:
        out.extend(find_image_problems(records, file, image_check, cached, workers=workers,
                                       check_cache=check_cache))
    return out


def find_image_problems(records: Sequence[StudyRecord], file: str, image_check: ImageCheck,
                        cached: Container[str] = (), *, workers: int | None = None,
                        check_cache: Path | None = None) -> list[Problem]:
    """Missing and (per ``image_check``) unreadable images of ``records`` not in ``cached``.

    ``EXISTS``: the file exists (a directory in its place is reported as such). ``PROBE``: header and decoder
    availability via :func:`cxr.data.images.probe_image`. ``DECODE``: a full decode of every image, parallel
    over ``workers`` processes and remembered in ``check_cache`` by path, size and mtime
    (:func:`cxr.data.image_check.decode_all`), so what only decoding shows is caught here, not mid-epoch.
    """
    image_check = ImageCheck(image_check)
    if image_check is ImageCheck.NONE:
        return []
    owners: dict[str, list[str]] = defaultdict(list)
    for rec in records:
        for im in rec.images:
            if im.path not in cached:  # written by cxr.data.preprocess, which already decoded the original
                owners[im.path].append(rec.key)
    if image_check is ImageCheck.DECODE:
        verdicts = decode_all(list(owners), workers=workers, cache_file=check_cache)
    else:
        verdicts = {path: check_one(path, image_check) for path in owners}
    out: list[Problem] = []
    for path, keys in owners.items():
        verdict = verdicts[path]
        if verdict.ok:
            continue
        for key in keys:
            out.append(_image_problem(file, verdict, key))
    return out


def _image_problem(file: str, verdict: ImageVerdict, study_key: str) -> Problem:
    if verdict.defect == MISSING:
        return Problem(ProblemKind.MISSING_IMAGE, file, f"image file not found: {verdict.path}",
                       study_key=study_key, image_path=verdict.path)
    return Problem(ProblemKind.UNREADABLE_IMAGE, file, f"{verdict.path}: {verdict.defect}: {verdict.reason}",
                   study_key=study_key, image_path=verdict.path)


def dedupe_problems(problems: Sequence[Problem]) -> list[Problem]:
    """Drop repeats of one defect (same kind, study and image), keeping the first, most precise report."""
    seen: set = set()
    out = []
    for p in problems:
        key = (p.kind, p.study_key, p.image_path, p.file, p.row, p.field) if p.study_key is None else \
            (p.kind, p.study_key, p.image_path, p.field if p.kind is ProblemKind.BAD_LABEL else None)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def apply_policy(records: list[StudyRecord], problems: Sequence[Problem], policy: BadInputPolicy,
                 header: str) -> list[StudyRecord]:
    """Raise one :class:`DataValidationError` (``raise``) or drop what the problems point at (``skip``).

    Under ``skip``, a problem naming an image drops that image (and the study if none is left); one naming
    a study drops the study. The source already left out what it could not turn into a record (a study whose
    rows were all bad, a row without a usable id): those studies are counted here too, and rows that name
    no study are counted as table rows. A counted summary is logged: kinds, counts and locations, never
    report text. Fatal problems (missing tables/columns) always raise.
    """
    policy = BadInputPolicy(policy)
    if not problems:
        return records
    fatal = [p for p in problems if p.kind in FATAL_KINDS]
    if policy is BadInputPolicy.RAISE or fatal:
        raise DataValidationError(fatal or list(problems), header)
    bad_images = {p.image_path for p in problems if p.image_path}
    bad_studies = {p.study_key for p in problems if p.study_key and not p.image_path}
    kept: list[StudyRecord] = []
    dropped_images = 0
    for rec in records:
        if rec.key in bad_studies:
            continue
        images = tuple(im for im in rec.images if im.path not in bad_images)
        dropped_images += len(rec.images) - len(images)
        if not images:
            continue
        kept.append(rec if len(images) == len(rec.images) else replace_images(rec, images))
    loaded = {rec.key for rec in records}
    at_source = {p.study_key for p in problems if p.study_key and p.study_key not in loaded}
    rows = {(p.file, p.row) for p in problems if not p.study_key and p.row is not None}
    counts = Counter(p.kind.value for p in problems)
    summary = ", ".join(f"{kind}: {n}" for kind, n in sorted(counts.items()))
    log.warning("%s: skipped %d of %d studies (%d of them while reading the tables), %d image(s) and %d table "
                "row(s) naming no study, because of %d problem(s) (%s)", header,
                len(records) - len(kept) + len(at_source), len(records) + len(at_source), len(at_source),
                dropped_images, len(rows), len(problems), summary)
    for p in problems[:MAX_LISTED_PER_KIND]:
        log.info("skipped: %s", p)
    return kept


def replace_images(record: StudyRecord, images: tuple) -> StudyRecord:
    """A copy of ``record`` with another image tuple (StudyRecord is a plain dataclass)."""
    return replace(record, images=images)
