"""Reading the CSV/JSONL tables of the sources: ids as strings, ``.csv`` or ``.csv.gz``, headers first."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cxr.data.validation import Problem, ProblemKind

#: Separators tried when sniffing a manifest (comma, tab, semicolon, pipe).
SNIFF_SEPARATORS = ",\t;|"


def find_table(directory: Path, stem: str) -> Path | None:
    """``<directory>/<stem>.csv`` or ``<stem>.csv.gz`` (users often gunzip the MIMIC tables), else None."""
    for suffix in (".csv", ".csv.gz"):
        candidate = directory / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


#: Default text encoding of tables: UTF-8, a leading byte-order mark (Excel's "CSV UTF-8") stripped.
DEFAULT_ENCODING = "utf-8-sig"
_HEAD_BYTES = 1 << 20  # what read_header/sniff_separator decode: far more than any header line


class TableError(ValueError):
    """A table that cannot be read at all (undecodable bytes, repeated header columns): always fatal.

    ``problem`` is the :class:`~cxr.data.validation.Problem` to report (file, line in the detail, the option to
    set in ``field``); the DataModule turns it into a ``DataValidationError`` at start-up.
    """

    def __init__(self, kind: ProblemKind, path: Path, detail: str, field: str | None = None) -> None:
        self.problem = Problem(kind, str(path), detail, field=field)
        super().__init__(str(self.problem))


def _read_bytes(path: Path, limit: int | None = None) -> bytes:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        return fh.read() if limit is None else fh.read(limit)


def _decode(path: Path, raw: bytes, encoding: str, option: str | None, final: bool = True) -> str:
    """``raw`` as text; undecodable bytes raise a :class:`TableError` with the line and the option to set."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
    except LookupError as err:
        raise ValueError(f"{path}: unknown encoding {encoding!r}" + (f" (option {option!r})" if option else "")) \
            from err
    try:
        return decoder.decode(raw, final=final)
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        bad = raw[err.start:err.end].hex(" ")
        hint = (f"set the source's {option!r} option to the file's encoding (e.g. {option}: cp1252 or latin-1 "
                "for most Windows/Excel exports)"
                if option else "the file should be UTF-8 (re-download it, or convert it with iconv)")
        raise TableError(ProblemKind.BAD_ENCODING, path, f"line {line}, byte {column}: bytes 0x{bad} are not "
                         f"valid {encoding}; {hint}", field=option) from err


def _head_text(path: Path, encoding: str, option: str | None) -> str:
    return _decode(path, _read_bytes(path, _HEAD_BYTES), encoding, option, final=False)


def _header_of(path: Path, text: str, sep: str) -> list[str]:
    """The stripped column names of the first CSV record of ``text``; repeated names are a TableError."""
    try:
        header = next(csv.reader(io.StringIO(text, newline=""), delimiter=sep))
    except StopIteration:
        return []
    header = [h.strip() for h in header]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        where = "; ".join(f"{h!r} at columns {[i + 1 for i, c in enumerate(header) if c == h]}" for h in repeated)
        raise TableError(ProblemKind.DUPLICATE_COLUMN, path, f"header repeats column names ({where}): which "
                         "one holds the data is ambiguous; rename or drop the extra column", field=repeated[0])
    return header


def sniff_separator(path: Path, encoding: str = DEFAULT_ENCODING, option: str | None = None) -> str:
    """Guess the separator from the first line; falls back to a comma."""
    sample = _head_text(path, encoding, option)
    try:
        return csv.Sniffer().sniff(sample.splitlines()[0] if sample else "", delimiters=SNIFF_SEPARATORS).delimiter
    except csv.Error:
        return ","


def read_header(path: Path, sep: str | None = ",", encoding: str = DEFAULT_ENCODING,
                option: str | None = None) -> list[str]:
    """The column names of a CSV (first record only: cheap enough for start-up validation).

    Raises :class:`TableError` for undecodable bytes in the first MiB (``option``: the config option that sets
    the encoding, named in the message) or a header that repeats a column name.
    """
    sep = sep or sniff_separator(path, encoding, option)
    return _header_of(path, _head_text(path, encoding, option), sep)


def read_table(path: Path, sep: str | None = ",", columns: Sequence[str] | None = None,
               encoding: str = DEFAULT_ENCODING, option: str | None = None) -> pd.DataFrame:
    """The whole table with every cell as a string (never floats: ids and times keep their digits).

    Blank cells become ``""``. ``sep=None`` sniffs the separator. The file is decoded here, not by pandas,
    so a byte that is not valid ``encoding`` is a :class:`TableError` naming the line (and ``option``).
    """
    sep = sep or sniff_separator(path, encoding, option)
    text = _decode(path, _read_bytes(path), encoding, option)
    _header_of(path, text, sep)  # repeated columns: pandas would silently rename the second to "name.1"
    frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, na_values=[],
                        usecols=list(columns) if columns is not None else None)
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def missing_columns(header: Sequence[str], required: Sequence[str]) -> list[str]:
    """Required columns absent from ``header``, in the order they were asked for."""
    present = set(header)
    return [c for c in required if c not in present]
