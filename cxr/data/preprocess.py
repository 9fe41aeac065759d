"""Preprocessing cache: decode DICOM/large images once, store them small (8-bit, longest side S).

``python -m cxr.data.preprocess --src-root R --out DIR [--size 512] [--format png|npy-memmap]
[--workers N] [--manifest FILE | --glob PATTERN] [--on-error raise|skip]``

Resumable (up-to-date outputs are skipped: PNG newer than its source, or a memmap index entry with
the source's mtime and size), parallel (a process pool), and every failure is listed per file
(``errors.csv``) and counted by defect. Read the result with :mod:`cxr.data.image_cache`.
Note: the cache stores the *display-ready* 8-bit image (DICOM VOI/polarity already applied with
:func:`cxr.data.dicom.decode_dicom` defaults), so 12-bit contrast is quantised to 256 levels.
"""

from __future__ import annotations

import argparse
import csv
import errno
import logging
import multiprocessing as mp
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from cxr.data.decode_errors import DecodeDefect, ImageDecodeError
from cxr.data.image_cache import (
    ARRAY_NAME,
    INDEX_NAME,
    CacheConfig,
    CacheFormat,
    MemmapEntry,
    cached_relpath,
    load_memmap_index,
    save_memmap_index,
)
from cxr.data.images import DICOM_SUFFIXES, RASTER_SUFFIXES, is_dicom_file, load_image

log = logging.getLogger(__name__)
_INDEX_SAVE_EVERY = 256


class ErrorPolicy(str, Enum):
    """``RAISE``: stop at the first bad file. ``SKIP``: go on, count and list the bad files."""

    RAISE = "raise"
    SKIP = "skip"


@dataclass(frozen=True)
class FileError:
    """One file that could not be cached."""

    relpath: str
    defect: DecodeDefect
    reason: str


@dataclass
class PreprocessReport:
    """What a preprocessing run did."""

    converted: int = 0
    up_to_date: int = 0
    duplicates: int = 0  # manifest entries naming a file already listed (converted once)
    errors: list[FileError] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.errors)

    def by_defect(self) -> dict[str, int]:
        return dict(Counter(e.defect.value for e in self.errors))

    def summary(self) -> str:
        text = f"converted {self.converted}, up to date {self.up_to_date}, failed {self.failed}"
        text += f" {self.by_defect()}" if self.errors else ""
        return text + (f", {self.duplicates} duplicate manifest entries ignored" if self.duplicates else "")


class CacheWriteError(OSError):
    """Writing the cache failed (disk full, quota, read-only...). What was written before stays usable."""


@dataclass(frozen=True)
class _Task:
    src: str
    rel: str
    out: str | None  # PNG target; None for the memmap format (pixels go back to the parent)
    size: int


@dataclass(frozen=True)
class _Result:
    rel: str
    pixels: np.ndarray | None = None
    error: FileError | None = None


def resize_longest(image: np.ndarray, size: int) -> np.ndarray:
    """Shrink so the longest side is ``size`` (never enlarges), INTER_AREA; float in, uint8 out."""
    import cv2

    h, w = image.shape
    scale = size / max(h, w)
    if scale < 1.0:
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def collect_sources(src_root: Path, manifest: Path | None = None, pattern: str | None = None,
                    exclude: Path | None = None) -> list[Path]:
    """Source files: the manifest's paths (one per line, or a CSV ``path`` column), else ``pattern``
    matches (default: every file with an image suffix), sorted; ``exclude`` (the output) is skipped.
    A manifest may list a file more than once: see :func:`unique_sources`."""
    if manifest is not None:
        paths = [src_root / p if not Path(p).is_absolute() else Path(p) for p in _read_manifest(manifest)]
    else:
        matches = src_root.glob(pattern) if pattern else (
            p for p in src_root.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES + DICOM_SUFFIXES)
        paths = sorted(p for p in matches if p.is_file() and (pattern is None or _is_image_candidate(p)))
    if exclude is not None:
        exclude = exclude.resolve()
        paths = [p for p in paths if exclude not in p.resolve().parents]
    return paths


def unique_sources(paths: Sequence[Path]) -> tuple[list[Path], int]:
    """``paths`` without repeats (first occurrence kept, order kept) and how many repeats were dropped.

    Spellings of one file (``a/./b.dcm``, ``a/x/../b.dcm``) count as the same file: converting it twice would
    only collide in the PNG tree or waste a memmap row.
    """
    seen: set[str] = set()
    out: list[Path] = []
    for path in paths:
        key = os.path.normpath(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out, len(paths) - len(out)


def _is_image_candidate(path: Path) -> bool:
    return path.suffix.lower() in RASTER_SUFFIXES + DICOM_SUFFIXES or is_dicom_file(path)


def _read_manifest(manifest: Path) -> list[str]:
    if manifest.suffix.lower() == ".csv":
        with open(manifest, newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise ValueError(f"{manifest}: a CSV manifest needs a 'path' column (has {reader.fieldnames})")
            return [row["path"].strip() for row in reader if row["path"].strip()]
    return [line.strip() for line in manifest.read_text().splitlines() if line.strip() and not line.startswith("#")]


def _work(task: _Task) -> _Result:
    try:
        pixels = resize_longest(load_image(task.src), task.size)
    except ImageDecodeError as exc:
        return _Result(task.rel, error=FileError(task.rel, exc.defect, exc.reason))
    if task.out is None:
        return _Result(task.rel, pixels=pixels)
    import cv2

    out = Path(task.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.png")
    if not cv2.imwrite(str(tmp), pixels):  # OpenCV returns False on ENOSPC/EACCES without saying which
        tmp.unlink(missing_ok=True)
        raise CacheWriteError(errno.EIO, f"could not write {out} (disk full or directory not writable?); "
                              "the files written before are complete (re-run to resume)")
    os.replace(tmp, out)  # atomic: an interrupted run never leaves a half-written PNG
    return _Result(task.rel)


def _results(tasks: Sequence[_Task], workers: int) -> Iterator[_Result]:
    if workers <= 1 or len(tasks) <= 1:
        yield from map(_work, tasks)
        return
    # spawn: safe with threads (torch/OpenCV) in the parent and identical on every OS.
    with mp.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap_unordered(_work, tasks, chunksize=max(1, min(16, len(tasks) // (4 * workers))))


def preprocess(
    src_root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    size: int = 512,
    fmt: CacheFormat = CacheFormat.PNG,
    workers: int = 1,
    manifest: str | os.PathLike[str] | None = None,
    pattern: str | None = None,
    on_error: ErrorPolicy = ErrorPolicy.RAISE,
) -> PreprocessReport:
    """Build or update the cache in ``out`` from ``src_root``; see the module docstring."""
    src_root, out, fmt, on_error = Path(src_root).resolve(), Path(out), CacheFormat(fmt), ErrorPolicy(on_error)
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    out.mkdir(parents=True, exist_ok=True)
    config = CacheConfig(src_root=str(src_root), size=size, format=fmt)
    if (out / "cache.json").is_file():
        existing = CacheConfig.load(out)
        if existing != config:
            raise ValueError(f"{out} already holds a cache built with {existing}; requested {config}. "
                             "Use another --out directory.")
    config.save(out)
    sources, duplicates = unique_sources(collect_sources(src_root, Path(manifest) if manifest else None,
                                                         pattern, exclude=out))
    report = PreprocessReport(duplicates=duplicates)
    if duplicates:
        log.warning("%d manifest entries name a file listed before; each file is converted once", duplicates)
    index = load_memmap_index(out) if fmt is CacheFormat.NPY_MEMMAP else {}
    tasks: list[_Task] = []
    for src in sources:
        src = Path(os.path.normpath(src))
        rel = src.relative_to(src_root).as_posix() if src.is_relative_to(src_root) else None
        if rel is None:
            raise ValueError(f"{src} is not under --src-root {src_root}")
        if not src.is_file():
            _record(report, FileError(rel, DecodeDefect.MISSING, "file does not exist"), on_error, src)
            continue
        if fmt is CacheFormat.PNG:
            target = out / cached_relpath(rel)
            if target.is_file() and target.stat().st_mtime_ns >= src.stat().st_mtime_ns:
                report.up_to_date += 1
                continue
            tasks.append(_Task(str(src), rel, str(target), size))
        else:
            entry, stat = index.get(rel), src.stat()
            if entry is not None and (entry.src_mtime_ns, entry.src_size) == (stat.st_mtime_ns, stat.st_size):
                report.up_to_date += 1
                continue
            tasks.append(_Task(str(src), rel, None, size))
    _check_png_collisions(tasks)
    if fmt is CacheFormat.PNG:
        for result in _results(tasks, workers):
            _count(report, result, on_error, src_root)
    else:
        _fill_memmap(out, size, tasks, index, workers, report, on_error, src_root)
    _write_errors(out, report)
    return report


def _fill_memmap(out: Path, size: int, tasks: list[_Task], index: dict[str, MemmapEntry], workers: int,
                 report: PreprocessReport, on_error: ErrorPolicy, src_root: Path) -> None:
    """Append the converted images to ``images.u8`` row by row with ordinary writes.

    Rows are written with ``pwrite``, not through a memory map: a full disk then raises ``ENOSPC`` (a
    :class:`CacheWriteError` naming the file) instead of killing the process with SIGBUS. The index is saved
    every few hundred rows and, whatever happens, at the end with exactly the rows written; the file is cut
    back to those rows, so an interrupted or failed run leaves a consistent cache that the next run resumes.
    """
    path = out / ARRAY_NAME
    frame = size * size
    if not tasks:
        return
    used = max((e.row for e in index.values()), default=-1) + 1
    _check_free_space(path, len(tasks) * frame, len(tasks), size)
    next_row, written = used, 0
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for n, result in enumerate(_results(tasks, workers), start=1):
            if not _count(report, result, on_error, src_root):
                continue
            h, w = result.pixels.shape
            row = np.zeros((size, size), dtype=np.uint8)
            row[:h, :w] = result.pixels
            try:
                _pwrite_all(fd, row.tobytes(), next_row * frame)
            except OSError as exc:
                report.converted -= 1  # counted by _count, but not stored
                raise CacheWriteError(exc.errno, f"writing {path} failed at image {next_row - used + 1} of "
                                      f"{len(tasks)} ({result.rel}): {exc.strerror or exc}; the {written} images "
                                      f"written before are kept and indexed (re-run to resume once there is "
                                      f"space)") from exc
            stat = (src_root / result.rel).stat()
            index[result.rel] = MemmapEntry(next_row, h, w, stat.st_mtime_ns, stat.st_size)
            next_row, written = next_row + 1, written + 1
            if n % _INDEX_SAVE_EVERY == 0:
                os.fsync(fd)  # rows reach the disk before an index that points at them
                save_memmap_index(out, index)
    finally:
        _close_memmap(fd, out, index, next_row * frame)


def _close_memmap(fd: int, out: Path, index: dict[str, MemmapEntry], length: int) -> None:
    """Cut the file to the rows written and save the index; a failure here keeps the previous index."""
    try:
        os.ftruncate(fd, length)  # drops a partly written row; never grows the file
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        save_memmap_index(out, index)
    except OSError as exc:  # e.g. still no space for index.json: the old index only names older rows
        log.error("could not save %s (%s); the previous index stays valid", out / INDEX_NAME, exc)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view, offset = view[n:], offset + n


def _check_free_space(path: Path, needed: int, n_images: int, size: int) -> None:
    """Fail before converting anything when the disk cannot hold the worst case (every image converted)."""
    free = shutil.disk_usage(path.parent).free
    if needed > free:
        raise CacheWriteError(errno.ENOSPC, f"not enough free space for {path}: {n_images} images at "
                              f"{size}x{size} need {needed / 2**20:.1f} MiB, {free / 2**20:.1f} MiB free "
                              f"on that disk (free some space, use a smaller --size or another --out)")


def _count(report: PreprocessReport, result: _Result, on_error: ErrorPolicy, src_root: Path) -> bool:
    if result.error is not None:
        _record(report, result.error, on_error, src_root / result.rel)
        return False
    report.converted += 1
    return True


def _record(report: PreprocessReport, error: FileError, on_error: ErrorPolicy, src: Path) -> None:
    if on_error is ErrorPolicy.RAISE:
        raise ImageDecodeError(src, error.defect, error.reason)
    log.warning("skipping %s: %s: %s", error.relpath, error.defect.value, error.reason)
    report.errors.append(error)


def _check_png_collisions(tasks: list[_Task]) -> None:
    seen: dict[str, str] = {}
    for task in tasks:
        if task.out is None:
            continue
        if task.out in seen:
            raise ValueError(f"{seen[task.out]} and {task.rel} would both be cached as {task.out}")
        seen[task.out] = task.rel


def _write_errors(out: Path, report: PreprocessReport) -> None:
    path = out / "errors.csv"
    if not report.errors:
        path.unlink(missing_ok=True)
        return
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["relpath", "defect", "reason"])
        writer.writerows((e.relpath, e.defect.value, e.reason) for e in report.errors)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cxr.data.preprocess", description=__doc__.split("\n\n")[0])
    parser.add_argument("--src-root", required=True, type=Path, help="root of the original images")
    parser.add_argument("--out", required=True, type=Path, help="cache directory")
    parser.add_argument("--size", type=int, default=512, help="longest side in pixels (default 512)")
    parser.add_argument("--format", choices=[f.value for f in CacheFormat], default=CacheFormat.PNG.value)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1) - 1))
    parser.add_argument("--on-error", choices=[p.value for p in ErrorPolicy], default=ErrorPolicy.RAISE.value)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--manifest", type=Path, help="text file of paths (one per line) or CSV with a 'path' column")
    which.add_argument("--glob", dest="pattern", help="glob under --src-root, e.g. 'files/**/*.dcm'")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        report = preprocess(args.src_root, args.out, size=args.size, fmt=CacheFormat(args.format),
                            workers=args.workers, manifest=args.manifest, pattern=args.pattern,
                            on_error=ErrorPolicy(args.on_error))
    except (ImageDecodeError, ValueError, OSError) as exc:  # OSError: FileNotFoundError, CacheWriteError, ...
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    if report.errors:
        print(f"failed files listed in {args.out / 'errors.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
