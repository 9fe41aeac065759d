"""Reading the CSV/JSONL tables of the sources: ids as strings, ``.csv`` or ``.csv.gz``, headers first."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

#: Separators tried when sniffing a manifest (comma, tab, semicolon, pipe).
SNIFF_SEPARATORS = ",\t;|"


def find_table(directory: Path, stem: str) -> Path | None:
    """``<directory>/<stem>.csv`` or ``<stem>.csv.gz`` (users often gunzip the MIMIC tables), else None."""
    for suffix in (".csv", ".csv.gz"):
        candidate = directory / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _open_text(path: Path) -> io.TextIOBase:
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def sniff_separator(path: Path) -> str:
    """Guess the separator from the first lines; falls back to a comma."""
    with _open_text(path) as fh:
        sample = fh.read(64 * 1024)
    try:
        return csv.Sniffer().sniff(sample.splitlines()[0] if sample else "", delimiters=SNIFF_SEPARATORS).delimiter
    except csv.Error:
        return ","


def read_header(path: Path, sep: str | None = ",") -> list[str]:
    """The column names of a CSV (first line only: cheap enough for start-up validation)."""
    sep = sep or sniff_separator(path)
    with _open_text(path) as fh:
        reader = csv.reader(fh, delimiter=sep)
        try:
            header = next(reader)
        except StopIteration:
            return []
    return [h.strip() for h in header]


def read_table(path: Path, sep: str | None = ",", columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The whole table with every cell as a string (never floats: ids and times keep their digits).

    Blank cells become ``""``. ``sep=None`` sniffs the separator. UTF-8 with or without a BOM.
    """
    sep = sep or sniff_separator(path)
    frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[], encoding="utf-8-sig",
                        usecols=list(columns) if columns is not None else None)
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def missing_columns(header: Sequence[str], required: Sequence[str]) -> list[str]:
    """Required columns absent from ``header``, in the order they were asked for."""
    present = set(header)
    return [c for c in required if c not in present]
