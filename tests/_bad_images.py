"""Image files with exactly one defect each: the image half of the bad-input corpus (tests/test_validation.py)
and of the SKIP training run (tests/test_skip_training.py).

Each entry writes one file at a given path (its suffix is part of the entry) and says which words the problem
message must contain and whether the cheap header probe (``image_check: PROBE``) already catches it; the ones
it lets through are exactly what used to crash training mid-epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from _data_writers import write_image
from PIL import Image

from cxr.data.dicom import write_dicom


@dataclass(frozen=True)
class BadImage:
    """One defective image file."""

    suffix: str
    write: Callable[[Path], None]
    words: tuple[str, ...]  # the decoder's defect name and detail, as they must appear in the message
    probe_catches: bool = True  # False: only a full decode finds it (image_check: DECODE, or at load time)
    missing: bool = False  # reported as "missing image" rather than "unreadable image"


def _cut(path: Path, keep: float) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


def _pixels12(shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    return (np.random.default_rng(0).integers(0, 4096, shape)).astype(np.uint16)


def _dicom(path: Path, edit: Callable[[pydicom.Dataset], None] | None = None, **kwargs) -> None:
    write_dicom(path, _pixels12(), bits_stored=12, **kwargs)
    if edit is not None:
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(path)


def _truncated_png(path: Path) -> None:
    write_image(path, seed=4)
    _cut(path, 0.3)


def _truncated_jpeg(path: Path) -> None:
    write_image(path, seed=5, size=64)
    _cut(path, 0.5)  # a partial download: header intact, entropy-coded data cut


def _constant(path: Path) -> None:
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(path)  # an all-black export


def _one_pixel(path: Path) -> None:
    Image.fromarray(np.full((1, 1), 128, dtype=np.uint8)).save(path)


def _no_pixels(ds: pydicom.Dataset) -> None:
    del ds.PixelData


def _mpeg2(ds: pydicom.Dataset) -> None:
    from pydicom.encaps import encapsulate

    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder here
    ds.PixelData = encapsulate([b"\x00" * 64])


def _native_cut(path: Path) -> None:
    _dicom(path)
    _cut(path, 0.6)


def _j2k_header_cut(path: Path) -> None:
    from pydicom.uid import JPEG2000Lossless

    _dicom(path, transfer_syntax=JPEG2000Lossless)
    raw = path.read_bytes()
    path.write_bytes(raw[: raw.find(b"\x28\x00\x10\x00")])  # cut just before Rows (0028,0010): header only


def _j2k_damaged(path: Path) -> None:
    from pydicom.uid import JPEG2000Lossless

    _dicom(path, transfer_syntax=JPEG2000Lossless)
    raw = bytearray(path.read_bytes())
    siz = raw.find(b"\xff\x4f\xff\x51")  # start of the codestream: SOC + SIZ marker
    raw[siz + 4: siz + 40] = b"\x00" * 36  # a zeroed image-size segment: complete file, undecodable data
    path.write_bytes(bytes(raw))


def _bits(value: int) -> Callable[[pydicom.Dataset], None]:
    def edit(ds: pydicom.Dataset) -> None:
        ds.BitsStored, ds.HighBit = value, min(value, 16) - 1
    return edit


def _colour(path: Path) -> None:
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    write_dicom(path, np.zeros((16, 16), dtype=np.uint8), bits_stored=8)
    ds = pydicom.dcmread(path)
    ds.set_pixel_data(rgb, photometric_interpretation="RGB", bits_stored=8)
    ds.save_as(path)


def _no_rows(ds: pydicom.Dataset) -> None:
    del ds.Rows


BAD_IMAGES: dict[str, BadImage] = {
    "missing image": BadImage(".png", lambda p: None, ("image file not found",), missing=True),
    "directory in place of an image": BadImage(".png", lambda p: p.mkdir(), ("not_a_file", "is a directory")),
    "empty (0-byte) image file": BadImage(".png", lambda p: p.write_bytes(b""), ("empty_file", "0 bytes")),
    "truncated png": BadImage(".png", _truncated_png, ("truncated",)),
    "not an image": BadImage(".png", lambda p: p.write_text("this is not a picture"), ("unsupported_format",)),
    "truncated jpeg (partial download)": BadImage(".jpg", _truncated_jpeg, ("truncated",), probe_catches=False),
    "constant (all-black) image": BadImage(".png", _constant, ("constant",), probe_catches=False),
    "1x1 image": BadImage(".png", _one_pixel, ("constant",), probe_catches=False),
    "dicom without pixels": BadImage(".dcm", lambda p: _dicom(p, _no_pixels), ("no_pixel_data",)),
    "dicom unsupported syntax": BadImage(".dcm", lambda p: _dicom(p, _mpeg2),
                                         ("unsupported_syntax", "1.2.840.10008.1.2.4.100")),
    "dicom truncated pixel data": BadImage(".dcm", _native_cut, ("truncated",)),
    "dicom (JPEG 2000) cut inside its header": BadImage(".dcm", _j2k_header_cut,
                                                        ("truncated", "ends before its pixel data")),
    "dicom damaged JPEG 2000 codestream": BadImage(".dcm", _j2k_damaged, ("undecodable", "JPEG 2000"),
                                                   probe_catches=False),
    "dicom BitsStored smaller than the data": BadImage(".dcm", lambda p: _dicom(p, _bits(3)),
                                                       ("bad_bits", "BitsStored=3", "8 grey levels"),
                                                       probe_catches=False),
    "dicom BitsStored above BitsAllocated": BadImage(".dcm", lambda p: _dicom(p, _bits(17)),
                                                     ("bad_bits", "BitsStored=17")),
    "dicom colour (RGB) secondary capture": BadImage(".dcm", _colour, ("color", "RGB")),
    "dicom without Rows": BadImage(".dcm", lambda p: _dicom(p, _no_rows), ("undecodable", "Rows is missing")),
}


def write_bad_image(path: Path, name: str) -> Path:
    """Write the defective file ``name`` of :data:`BAD_IMAGES` at ``path`` (with the entry's suffix)."""
    path = path.with_suffix(BAD_IMAGES[name].suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        path.unlink()
    BAD_IMAGES[name].write(path)
    return path
