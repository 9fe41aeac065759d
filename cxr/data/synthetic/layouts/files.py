"""Byte-deterministic file writers shared by the layouts: CSV (plain or gzip), PNG/JPEG quantisation, images."""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import cv2
import numpy as np

from cxr.data.synthetic.phantom import render_phantom, spec_for_study
from cxr.labels import LabelState


def write_csv(path: Path, header: list[str] | tuple[str, ...], rows: list[list[object]], compress: bool = False) -> Path:
    """Write a CSV with ``header``; ``None`` cells are blank. With ``compress`` the gzip has mtime 0 (stable bytes)."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"{path.name}: row has {len(row)} cells, header has {len(header)}")
        writer.writerow(["" if v is None else v for v in row])
    data = buf.getvalue().encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(data)
    else:
        path.write_bytes(data)
    return path


def label_cell(state: int) -> str | None:
    """MIMIC/CheXpert CSV spelling: 1.0 / 0.0 / -1.0, blank for NOT_MENTIONED."""
    return None if state == LabelState.NOT_MENTIONED else f"{float(state):.1f}"


def label_json(state: int) -> float | None:
    """CheXbert JSONL spelling: 1.0 / 0.0 / -1.0 / null."""
    return None if state == LabelState.NOT_MENTIONED else float(state)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def to_uint16(img: np.ndarray, bits: int = 16) -> np.ndarray:
    return np.round(np.clip(img, 0.0, 1.0) * float(2**bits - 1)).astype(np.uint16)


def write_png(path: Path, img: np.ndarray, bits: int = 8) -> None:
    """Write a grayscale PNG, 8-bit or 16-bit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = to_uint8(img) if bits == 8 else to_uint16(img, 16)
    if not cv2.imwrite(str(path), arr, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"could not write {path}")


def write_jpg(path: Path, img: np.ndarray, quality: int = 95) -> None:
    """Write an 8-bit grayscale JPEG (MIMIC-CXR-JPG used quality 95)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), to_uint8(img), [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise OSError(f"could not write {path}")


def render_views(study, image_size: int) -> list[np.ndarray]:
    """Render every view of a study (float32 in [0, 1])."""
    return [render_phantom(spec_for_study(study, i), image_size) for i in range(len(study.views))]


def layout_rng(study, salt: int) -> np.random.Generator:
    """A per-study, per-layout generator (formatting choices never disturb the world's random stream)."""
    return np.random.default_rng([study.render_seed, salt])
