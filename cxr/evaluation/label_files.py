"""Image classification label files (CSV) for zero-shot evaluation: RSNA/SIIM-style ``img_path,label`` tables.

Binary (multi-label) specs read one column per class (the class's ``label``); cells are 1 / 0 / -1 / blank as in
the CheXpert CSVs (blank = not mentioned = negative; -1 = uncertain, mapped by the uncertain policy). Multi-class
specs read one column (``label_column``) whose values are the classes' ``label``s. Every bad cell or missing
image is an error naming the file, row and column.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cxr.evaluation.zero_shot import ZeroShotMode, ZeroShotSpec
from cxr.labels import LabelValueError, UncertainPolicy, binarize, parse_label_value

IMAGE_COLUMNS = ("img_path", "image_path", "path", "filepath", "image", "dicom_path")


@dataclass
class LabelFile:
    """Image paths and targets read from a label CSV: binary ``targets``/``valid`` are ``(N, C)``, multi-class
    ``targets`` is ``(N,)`` class indices."""

    paths: list[Path]
    targets: torch.Tensor
    valid: torch.Tensor | None


def _image_column(header: list[str], wanted: str | None, path: Path) -> str:
    if wanted:
        if wanted not in header:
            raise ValueError(f"{path}: image column {wanted!r} not in the header {header}")
        return wanted
    for name in IMAGE_COLUMNS:
        if name in header:
            return name
    raise ValueError(f"{path}: no image column (tried {IMAGE_COLUMNS}); name it with --image-column")


def _class_index(spec: ZeroShotSpec) -> dict[str, int]:
    index = {c.label.strip(): i for i, c in enumerate(spec.classes)}
    for i, c in enumerate(spec.classes):  # numeric labels match "1" and "1.0" alike
        try:
            index.setdefault(repr(float(c.label)), i)
        except ValueError:
            pass
    return index


def _multiclass_target(value: str, index: dict[str, int], where: str) -> int:
    text = value.strip()
    if text in index:
        return index[text]
    try:
        return index[repr(float(text))]
    except (ValueError, KeyError):
        raise ValueError(f"{where}: value {value!r} is none of the classes' labels {sorted(index)}") from None


def read_label_file(path: str | Path, spec: ZeroShotSpec, image_root: str | Path | None = None,
                    image_column: str | None = None,
                    policy: UncertainPolicy | str = UncertainPolicy.ZEROS) -> LabelFile:
    """Read ``path`` for ``spec``; relative image paths resolve against ``image_root`` (default: the CSV's folder)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    root = Path(image_root) if image_root is not None else path.parent
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        img_col = _image_column(header, image_column, path)
        columns = [spec.label_column] if spec.mode is ZeroShotMode.MULTICLASS else [c.label for c in spec.classes]
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path}: label columns {missing} not in the header {header}")
        paths, rows = [], []
        index = _class_index(spec)
        for line, row in enumerate(reader, start=2):
            raw = (row.get(img_col) or "").strip()
            if not raw:
                raise ValueError(f"{path}:{line}: column {img_col!r} is empty")
            image = Path(raw) if Path(raw).is_absolute() else root / raw
            if not image.is_file():
                raise FileNotFoundError(f"{path}:{line}: column {img_col!r}: image not found: {image}")
            paths.append(image)
            if spec.mode is ZeroShotMode.MULTICLASS:
                where = f"{path}:{line}: column {spec.label_column!r}"
                rows.append(_multiclass_target(row.get(spec.label_column) or "", index, where))
                continue
            states = []
            for col in columns:
                try:
                    states.append(int(parse_label_value(row.get(col))))
                except LabelValueError as err:
                    raise ValueError(f"{path}:{line}: column {col!r}: {err}") from None
            rows.append(states)
    if not paths:
        raise ValueError(f"{path}: no rows")
    if spec.mode is ZeroShotMode.MULTICLASS:
        return LabelFile(paths, torch.tensor(rows, dtype=torch.long), None)
    positive, valid = binarize(torch.tensor(np.asarray(rows, dtype=np.int8)), policy)
    return LabelFile(paths, positive.long(), valid)


class ImageFileDataset(Dataset):
    """Decoded, eval-transformed images of a list of paths (``cxr.data.images.load_image`` + the transform)."""

    def __init__(self, paths: list[Path], transform) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from cxr.data.images import load_image

        return self.transform(load_image(self.paths[i]))
