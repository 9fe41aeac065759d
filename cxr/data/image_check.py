"""The set-up image check: existence, header probe, or a full parallel decode with an on-disk result cache.

``ImageCheck.DECODE`` decodes every image exactly as training will (:func:`cxr.data.images.load_image`), so
what only a full decode shows (a JPEG cut off by a partial download, an all-black export, a truncated or
damaged JPEG 2000 DICOM, a wrong ``BitsStored``) is found before training instead of killing a DataLoader
worker hours in. Decoding runs in a process pool with a progress bar, and each result is cached by path, size
and modification time, so a dataset is decoded once; later runs decode only new or changed files.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

log = logging.getLogger(__name__)

#: Bump when the decode checks change, so cached verdicts of an older decoder are not trusted.
CHECK_VERSION = 1
#: The verdict of a file that does not exist (DecodeDefect.MISSING's value).
MISSING = "missing"
#: Below this many images, a process pool costs more to start than it saves: each spawned worker imports the
#: main script's modules (seconds with torch/Lightning), while a small image decodes in milliseconds.
MIN_POOL_IMAGES = 1000
#: From this many images on, a progress bar is shown.
MIN_PROGRESS_IMAGES = 64


class ImageCheck(str, Enum):
    """How deeply images are checked at set-up.

    ``NONE``: not at all. ``EXISTS``: the file exists. ``PROBE``: header and decoder availability (cheap; a
    truncated JPEG or compressed DICOM passes). ``DECODE``: a full decode of every image, parallel and cached
    (see :mod:`cxr.data.image_check`).
    """

    NONE = "none"
    EXISTS = "exists"
    PROBE = "probe"
    DECODE = "decode"


@dataclass(frozen=True)
class ImageVerdict:
    """The check's result for one file: ``defect`` is None when the image is usable."""

    path: str
    defect: str | None = None  # a DecodeDefect value (MISSING: the file does not exist)
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.defect is None


def default_cache_file() -> Path:
    """``$CXR_CACHE_DIR`` or ``$XDG_CACHE_HOME/cxr`` or ``~/.cache/cxr``, then ``image_check.json``."""
    root = os.environ.get("CXR_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "cxr")
    return Path(root) / "image_check.json"


def check_one(path: str, mode: ImageCheck) -> ImageVerdict:
    """Check one file (in this process). Never raises for a bad file: the verdict says what is wrong."""
    from cxr.data.decode_errors import DecodeDefect, ImageDecodeError
    from cxr.data.images import load_image, probe_image, require_image_file

    try:
        if mode is ImageCheck.DECODE:
            load_image(path)
        elif mode is ImageCheck.PROBE:
            probe_image(path)
        else:
            require_image_file(path)
    except ImageDecodeError as err:
        if err.defect is DecodeDefect.MISSING:
            return ImageVerdict(path, MISSING, "image file not found")
        return ImageVerdict(path, err.defect.value, err.reason)
    except Exception as err:  # a decoder library failing in its own way is still "cannot decode"
        return ImageVerdict(path, "undecodable", f"{type(err).__name__}: {err}")
    return ImageVerdict(path)


def _decode_one(path: str) -> ImageVerdict:
    return check_one(path, ImageCheck.DECODE)


class _VerdictCache:
    """``{path: [size, mtime_ns, defect, reason]}`` in one JSON file, written atomically."""

    def __init__(self, file: Path | None) -> None:
        self.file = file
        self.entries: dict[str, list] = {}
        if file is not None and file.is_file():
            try:
                data = json.loads(file.read_text())
                if data.get("version") == CHECK_VERSION:
                    self.entries = data.get("entries", {})
            except (OSError, ValueError) as err:  # a damaged cache is only a slower run
                log.warning("ignoring unreadable image-check cache %s (%s)", file, err)

    @staticmethod
    def _stamp(path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def get(self, path: str) -> ImageVerdict | None:
        entry, stamp = self.entries.get(path), self._stamp(path)
        if entry is None or stamp is None or tuple(entry[:2]) != stamp:
            return None
        return ImageVerdict(path, entry[2], entry[3])

    def put(self, verdict: ImageVerdict) -> None:
        stamp = self._stamp(verdict.path)
        if stamp is not None:
            self.entries[verdict.path] = [*stamp, verdict.defect, verdict.reason]

    def save(self) -> None:
        if self.file is None:
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"version": CHECK_VERSION, "entries": self.entries}))
            os.replace(tmp, self.file)  # atomic: a concurrent run sees the old or the new file, never half
        except OSError as err:  # read-only home, full disk: the check still ran, it is just not remembered
            log.warning("could not save the image-check cache %s (%s)", self.file, err)


def decode_all(paths: Sequence[str], workers: int | None = None, cache_file: Path | None = None,
               progress: bool = True) -> dict[str, ImageVerdict]:
    """Fully decode ``paths`` (parallel, cached by size+mtime); returns a verdict per path."""
    cache = _VerdictCache(cache_file)
    verdicts: dict[str, ImageVerdict] = {}
    todo: list[str] = []
    for path in dict.fromkeys(paths):
        hit = cache.get(path)
        if hit is not None:
            verdicts[path] = hit
        else:
            todo.append(path)
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    if todo:
        log.info("decoding %d image(s) to check them (%d known from %s) with %d process(es)", len(todo),
                 len(verdicts), cache_file or "no cache", workers if len(todo) >= MIN_POOL_IMAGES else 1)
    for verdict in _progress(_run(todo, workers), len(todo), progress):
        verdicts[verdict.path] = verdict
        cache.put(verdict)
    if todo:
        cache.save()
    return verdicts


def _run(paths: list[str], workers: int) -> Iterable[ImageVerdict]:
    if workers == 1 or len(paths) < MIN_POOL_IMAGES:
        yield from map(_decode_one, paths)
        return
    # spawn: safe with torch/OpenCV threads in the parent, identical on every OS.
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        yield from pool.map(_decode_one, paths, chunksize=max(1, min(64, len(paths) // (8 * workers))))


def _progress(results: Iterable[ImageVerdict], total: int, enabled: bool) -> Iterable[ImageVerdict]:
    if not enabled or total < MIN_PROGRESS_IMAGES:
        return results
    from tqdm.auto import tqdm

    return tqdm(results, total=total, desc="image check (decode)", unit="img", mininterval=1.0)
