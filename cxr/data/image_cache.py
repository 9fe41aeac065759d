"""Read side of the preprocessing cache written by :mod:`cxr.data.preprocess`.

A cache directory holds ``cache.json`` (:class:`CacheConfig`) plus either a PNG tree mirroring the
source tree (``a/b/c.dcm`` → ``a/b/c.png``) or one ``images.u8`` memory-mapped ``(N, S, S)`` uint8
array with ``index.json`` (row and valid height/width per relative path).

How a loader switches to it: replace ``load_image(path)`` with a :class:`CachedImageLoader`
(``loader = CachedImageLoader(cache_dir)``, then ``loader(path)``). Lookups are by the path
relative to the cache's source root, so the originals need not exist on the training machine; pass
``src_root=`` when the sources live under a different root there. For the PNG format a source can
also point its root at the cache directly, using :func:`cached_relpath` names.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from cxr.data.decode_errors import DecodeDefect, ImageDecodeError
from cxr.data.images import DICOM_SUFFIXES, RASTER_SUFFIXES, load_image

CONFIG_NAME = "cache.json"
INDEX_NAME = "index.json"
ARRAY_NAME = "images.u8"
CACHE_VERSION = 1


class CacheFormat(str, Enum):
    """On-disk cache layout."""

    PNG = "png"
    NPY_MEMMAP = "npy-memmap"


@dataclass(frozen=True)
class CacheConfig:
    """What a cache directory holds: its source root, longest-side size and format."""

    src_root: str
    size: int
    format: CacheFormat
    version: int = CACHE_VERSION

    def save(self, cache_dir: Path) -> None:
        data = asdict(self) | {"format": self.format.value}
        (cache_dir / CONFIG_NAME).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, cache_dir: Path) -> CacheConfig:
        path = cache_dir / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{cache_dir} is not an image cache: {CONFIG_NAME} missing "
                                    "(run python -m cxr.data.preprocess first)")
        data = json.loads(path.read_text())
        if data.get("version") != CACHE_VERSION:
            raise ValueError(f"{path}: cache version {data.get('version')} != {CACHE_VERSION}; rebuild the cache")
        return cls(src_root=data["src_root"], size=int(data["size"]), format=CacheFormat(data["format"]))


@dataclass(frozen=True)
class MemmapEntry:
    """Where one image lives in the memmap: its row and the valid (unpadded) height/width."""

    row: int
    height: int
    width: int
    src_mtime_ns: int
    src_size: int


def cached_relpath(relpath: str | os.PathLike[str]) -> Path:
    """The PNG cache name of a source-relative path: known image suffix → ``.png``, else append it
    (extensionless DICOM ``1.2.3`` must not become ``1.2.png``)."""
    rel = Path(relpath)
    if rel.suffix.lower() in RASTER_SUFFIXES + DICOM_SUFFIXES:
        return rel.with_suffix(".png")
    return rel.with_name(rel.name + ".png")


def load_memmap_index(cache_dir: Path) -> dict[str, MemmapEntry]:
    path = cache_dir / INDEX_NAME
    if not path.is_file():
        return {}
    return {rel: MemmapEntry(**entry) for rel, entry in json.loads(path.read_text()).items()}


def save_memmap_index(cache_dir: Path, index: dict[str, MemmapEntry]) -> None:
    tmp = cache_dir / (INDEX_NAME + ".tmp")
    try:
        tmp.write_text(json.dumps({rel: asdict(e) for rel, e in sorted(index.items())}))
    except OSError:
        tmp.unlink(missing_ok=True)  # e.g. disk full: no half-written file left behind
        raise
    os.replace(tmp, cache_dir / INDEX_NAME)  # atomic: an interrupted run keeps the old index


class ImageCache:
    """Lookup into a preprocessing cache directory (either format)."""

    def __init__(self, cache_dir: str | os.PathLike[str], src_root: str | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.config = CacheConfig.load(self.cache_dir)
        self.src_root = Path(src_root if src_root is not None else self.config.src_root)
        self._index: dict[str, MemmapEntry] = {}
        self._array: np.memmap | None = None
        if self.config.format is CacheFormat.NPY_MEMMAP:
            self._index = load_memmap_index(self.cache_dir)

    def relpath(self, original: str | os.PathLike[str]) -> str:
        """``original`` relative to the source root (relative inputs are taken as already relative)."""
        path = Path(original)
        if not path.is_absolute():
            return path.as_posix()
        try:
            return path.relative_to(self.src_root).as_posix()
        except ValueError:
            pass
        try:  # the manifest may name the root through a symlink (preprocess records the resolved root)
            return path.resolve().relative_to(self.src_root.resolve()).as_posix()
        except ValueError as exc:
            raise KeyError(f"{original} is not under the cache's source root {self.src_root}") from exc

    def resolve_cached(self, original: str | os.PathLike[str]) -> Path | None:
        """PNG format: the cached file for ``original`` if present, else None."""
        if self.config.format is not CacheFormat.PNG:
            raise TypeError("resolve_cached is for the png format; use load() for npy-memmap caches")
        cached = self.cache_dir / cached_relpath(self.relpath(original))
        return cached if cached.is_file() else None

    def __contains__(self, original: object) -> bool:
        try:
            if self.config.format is CacheFormat.PNG:
                return self.resolve_cached(original) is not None  # type: ignore[arg-type]
            return self.relpath(original) in self._index  # type: ignore[arg-type]
        except KeyError:
            return False

    def load(self, original: str | os.PathLike[str]) -> np.ndarray:
        """The cached image of ``original`` as float32 ``(h, w)`` in ``[0, 1]``; KeyError if absent."""
        if self.config.format is CacheFormat.PNG:
            cached = self.resolve_cached(original)
            if cached is None:
                raise KeyError(f"{original} is not in the image cache {self.cache_dir}")
            return load_image(cached)
        rel = self.relpath(original)
        entry = self._index.get(rel)
        if entry is None:
            raise KeyError(f"{original} is not in the image cache {self.cache_dir}")
        if self._array is None:  # opened lazily so each DataLoader worker maps it itself
            path = self.cache_dir / ARRAY_NAME
            rows = path.stat().st_size // (self.config.size**2)
            self._array = np.memmap(path, dtype=np.uint8, mode="r", shape=(rows, self.config.size, self.config.size))
        pixels = np.asarray(self._array[entry.row, : entry.height, : entry.width], dtype=np.float32) / 255.0
        if pixels.max() == pixels.min():
            raise ImageDecodeError(self.cache_dir / ARRAY_NAME, DecodeDefect.CONSTANT,
                                   f"cached row {entry.row} for {rel} is constant (cache damaged?)")
        return pixels

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_array"] = None  # never pickle a memmap into worker processes
        return state


class CachedImageLoader:
    """``path → float32 (H, W) in [0, 1]``: from the cache when it has the image, else decoded.

    ``fallback=False`` makes a cache miss an error (for runs that must not touch the originals).
    With ``cache_dir=None`` it is plain :func:`cxr.data.images.load_image`.
    """

    def __init__(self, cache_dir: str | None = None, src_root: str | None = None, fallback: bool = True) -> None:
        self.cache = ImageCache(cache_dir, src_root=src_root) if cache_dir is not None else None
        self.fallback = fallback

    def __call__(self, path: str | os.PathLike[str]) -> np.ndarray:
        if self.cache is not None:
            if path in self.cache:
                return self.cache.load(path)
            if not self.fallback:
                raise ImageDecodeError(path, DecodeDefect.MISSING,
                                       f"not in the image cache {self.cache.cache_dir} (fallback disabled)")
        return load_image(path)
