"""The interface every dataset source implements, plus the row-parsing helpers they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cxr.data.validation import ProblemKind, ProblemLog
from cxr.labels import OBSERVATION_INDEX, LabelValueError, empty_labels, parse_label_value
from cxr.records import Split, StudyRecord, ViewPosition


class DatasetSource(ABC):
    """A dataset on disk that yields :class:`~cxr.records.StudyRecord`s.

    Two steps, so a bad config fails at start-up before any image is read:

    * :meth:`check` is cheap (file existence, CSV headers) and runs when the DataModule is built;
    * :meth:`load` parses the tables into records and reports every per-row defect into ``problems``
      instead of stopping at the first (the DataModule then raises or skips per its policy).

    Args:
        name: short name of the source; it prefixes study keys (``name:study_id``) and tags batches.
    """

    def __init__(self, name: str) -> None:
        if not name or ":" in name:
            raise ValueError(f"source name {name!r} must be non-empty and contain no ':'")
        self.name = name

    @abstractmethod
    def check(self, problems: ProblemLog) -> None:
        """Report missing files/columns (fatal problems) without reading images or whole tables."""

    @abstractmethod
    def load(self, problems: ProblemLog) -> list[StudyRecord]:
        """Parse the source into records; defects go into ``problems`` with file/row/field."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def require_file(path: Path, problems: ProblemLog, what: str) -> bool:
    """Record a MISSING_FILE problem unless ``path`` is an existing file (or directory when it ends in /)."""
    if path.exists():
        return True
    problems.add(ProblemKind.MISSING_FILE, str(path), f"{what} not found")
    return False


def parse_labels(cells: Mapping[str, object], problems: ProblemLog, file: str, row: int,
                 study_key: str | None) -> np.ndarray:
    """Four-state label vector from ``{observation: raw cell}``; bad values are reported, not guessed.

    A bad cell is reported as BAD_LABEL and left NOT_MENTIONED in the returned vector (the policy decides
    whether the study is dropped or the run fails).
    """
    out = empty_labels()
    for name, raw in cells.items():
        try:
            out[OBSERVATION_INDEX[name]] = parse_label_value(raw)
        except LabelValueError:
            problems.add(ProblemKind.BAD_LABEL, file, f"label value {raw!r} is not one of 1, 0, -1 or blank",
                         row=row, field=name, study_key=study_key)
    return out


def parse_split(raw: object, problems: ProblemLog, file: str, row: int, field: str,
                study_key: str | None) -> Split | None:
    """A :class:`Split` from a cell, or None after reporting BAD_SPLIT."""
    try:
        return Split.parse(str(raw))
    except ValueError as err:
        problems.add(ProblemKind.BAD_SPLIT, file, str(err), row=row, field=field, study_key=study_key)
        return None


def parse_view(raw: object, problems: ProblemLog, file: str, row: int, field: str, study_key: str | None,
               strict: bool) -> ViewPosition:
    """A :class:`ViewPosition`; with ``strict`` a value that maps to OTHER is reported as UNKNOWN_VIEW."""
    view = ViewPosition.parse(raw)
    if strict and view is ViewPosition.OTHER:
        problems.add(ProblemKind.UNKNOWN_VIEW, file, f"view value {str(raw)!r} is not a known position",
                     row=row, field=field, study_key=study_key)
    return view


def clean_id(raw: object) -> str:
    """An id cell as a string: stripped, with a float artefact (``"10000032.0"``) turned back into digits."""
    text = str(raw).strip()
    if text.endswith(".0") and text[:-2].isdigit():
        text = text[:-2]
    return text
